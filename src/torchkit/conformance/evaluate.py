"""The Sybil evaluator of conformance items, and the page state it keeps.

Sybil gives each page one namespace (``Document.namespace``), shared by its examples in page order.
The :class:`PageState` kept in it makes an item independent of which items ran before it in this
process (``-k``, ``-n 2``): the sessions above the item are replayed first, quietly and with each
family's reference bound, unless the namespace already holds exactly them. The RNG, default dtype
and grad mode a session leaves belong to the page; the caller gets its own back after each item,
and its print options.

Private torch API: ``torch._tensor_str.printoptions`` (tested with torch 2.13), which restores
every print option on exit; the public ``torch.set_printoptions`` cannot read them back.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import io
import logging
import math
import re
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType

import sybil
import torch
from torch import nn

import torchkit
from torchkit.conformance import pages
from torchkit.conformance.pages import Case, Directive, Page, strip_code
from torchkit.conformance.registry import Implementation, ImplementationUnavailable, Registry
from torchkit.conformance.values import compare_figure, compare_outputs, parse_figure, parse_output

STATE_KEY = "__conformance__"
_NAMESPACE = {  # the names every page's namespace starts with
    "__name__": "__conformance__",
    **{"torch": torch, "nn": nn, "F": torch.nn.functional, "optim": torch.optim},
    **{"lr_scheduler": torch.optim.lr_scheduler, "math": math, "torchkit": torchkit},
}
_TEST_ID = re.compile(r"[\w./-]+\.md::[\w.-]+(?:\[[^\]\s`]*\])?")


def _torch_state() -> tuple[torch.Tensor, torch.dtype, bool]:
    return torch.get_rng_state(), torch.get_default_dtype(), torch.is_grad_enabled()


def _set_torch_state(state: tuple[torch.Tensor, torch.dtype, bool]) -> None:
    torch.set_rng_state(state[0])
    torch.set_default_dtype(state[1])
    torch.set_grad_enabled(state[2])


@contextlib.contextmanager
def _isolated() -> Iterator[None]:
    """Give the caller back its torch state and print options; no log records below WARNING."""
    state, quiet = _torch_state(), logging.root.manager.disable
    logging.disable(logging.INFO)  # c10d logs a page of DEBUG records per `dcp` call
    try:
        with torch._tensor_str.printoptions():
            yield
    finally:
        _set_torch_state(state)
        logging.disable(quiet)


@contextlib.contextmanager
def _output(*, shown: bool) -> Iterator[io.StringIO]:
    """Capture stdout and expression values: printed at full precision (16 digits), or dropped."""
    buffer, previous = io.StringIO(), sys.displayhook
    if shown:
        torch.set_printoptions(precision=16, threshold=sys.maxsize, linewidth=200)
    sys.displayhook = lambda value: None if not shown or value is None else print(repr(value))
    try:
        with contextlib.redirect_stdout(buffer):
            yield buffer
    finally:
        sys.displayhook = previous


def _compile(source: str, page: Page, line: int, mode: str) -> CodeType:
    """Compile ``source`` (a ``mode`` for :func:`compile`) with its page's file name and lines."""
    tree = ast.parse(source, filename=str(page.path), mode=mode)
    ast.increment_lineno(tree, line - 1)
    return compile(tree, str(page.path), mode)


def _trace(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def _statements(block: pages.Block) -> list[doctest.Example]:
    return [s for s in block.statements if not s.options.get(doctest.SKIP)]


@dataclass
class _Trajectory:
    """Param-group values at a milestone table's steps; the error that stopped the schedule."""

    values: dict[int, dict[tuple[str, int], float | str]] = field(default_factory=dict)
    error: BaseException | None = None
    reached: int = 0


class PageState:
    """A page's namespace and progress in one process: the sessions it holds, its torch state."""

    def __init__(self, namespace: dict, registry: Registry) -> None:
        self.namespace, self.registry = namespace, registry
        self.done: list[int] | None = None  # directive indices the namespace holds; None: rebuild
        self.torch = _torch_state()
        self.trajectories: dict[tuple[str, int, str | None], _Trajectory] = {}

    def binding(self, directive: Directive, implementation: Implementation | None = None) -> dict:
        """``{family binding: implementation}`` (the reference when ``implementation`` is None)."""
        family = self.registry.implementations(directive.family or "")
        chosen = implementation or (family[0] if family else None)
        return {self.registry.families[directive.family]: chosen.load()} if chosen else {}

    def prepare(self, page: Page, index: int) -> dict:
        """Bring the namespace to the state after the sessions above directive ``index``."""
        namespace = self.namespace
        needed = [d.index for d in page.directives[:index] if d.kind == "session"]
        if self.done is None or self.done != needed[: len(self.done)]:
            namespace.clear()
            namespace.update(_NAMESPACE, **{STATE_KEY: self})
            torch.manual_seed(0)
            self.torch, self.done = (torch.get_rng_state(), torch.float32, True), []
        _set_torch_state(self.torch)
        for i in needed[len(self.done) :]:
            directive = page.directives[i]
            block = directive.blocks[0]
            with contextlib.suppress(Exception):  # the session's own item reports its failures
                namespace.update(self.binding(directive))
            parts = [(s.source, s.lineno, "single") for s in _statements(block)]
            with _output(shown=False):
                for source, line, mode in parts or [(block.source, block.line, "exec")]:
                    with contextlib.suppress(Exception):
                        exec(_compile(source, page, line, mode), namespace)
            self.done.append(i)
        self.torch = _torch_state()
        return namespace


def setup_page(namespace: dict, registry: Registry) -> None:
    """Sybil's ``setup`` for a page: start its state."""
    namespace[STATE_KEY] = PageState(namespace, registry)


def evaluate(example: sybil.Example) -> str | None:
    """Check one item (``example.parsed`` is its :class:`~torchkit.conformance.pages.Case`):
    ``None`` when it agrees with the page, else the message Sybil reports."""
    case: Case = example.parsed
    state: PageState = example.namespace[STATE_KEY]
    check = {"session": _session, "shapes": _shape_row, "milestones": _milestone_row}
    try:
        with _isolated():
            if case.directive.kind == "errata":
                return _errata(case, state.registry)
            return check[case.directive.kind](case, state)
    except ImplementationUnavailable as error:
        return str(error)


def _session(case: Case, state: PageState) -> str | None:
    directive = case.directive
    family = state.registry.implementations(directive.family or "")
    reference = case.implementation is None or case.implementation == family[0]
    namespace = state.prepare(case.page, directive.index)
    state.done.append(directive.index)  # from here on the namespace includes this session
    problem: str | None = "not run"
    try:
        namespace.update(state.binding(directive, case.implementation))
        problem = _check_block(case, namespace, grad_fn_names=reference)
    finally:
        if problem is None and reference:
            state.torch = _torch_state()
        else:  # partly run, or run with another binding: rebuild before the next item
            state.done = None
    return problem


def _check_block(case: Case, namespace: dict, *, grad_fn_names: bool) -> str | None:
    page, block = case.page, case.directive.blocks[0]
    if not block.statements:
        with _output(shown=False):
            try:
                exec(_compile(block.source, page, block.line, "exec"), namespace)
            except Exception as error:
                return f"{page.label}:{block.line}: {case.directive.slug} raised\n{_trace(error)}"
    for statement in _statements(block):
        if problem := _check_statement(page, statement, namespace, grad_fn_names):
            return problem
    return None


def _check_statement(
    page: Page, statement: doctest.Example, namespace: dict, grad_fn_names: bool
) -> str | None:
    """Run one ``>>>`` statement; what differs from the page, if anything."""
    where, error = f"{page.label}:{statement.lineno}", None
    lines = statement.source.rstrip("\n").split("\n")
    shown = "\n".join((">>> " if i == 0 else "... ") + line for i, line in enumerate(lines))
    with _output(shown=True) as buffer:
        try:
            exec(_compile(statement.source, page, statement.lineno, "single"), namespace)
        except Exception as raised:
            error = raised
    if statement.exc_msg is not None:
        if error is None:
            return f"{where}: expected {statement.exc_msg.strip()!r}, nothing was raised\n{shown}"
        # doctest's form: the type must match (any qualified name), the message by prefix
        head, _, message = statement.exc_msg.strip().partition(":")
        kind, expected_type = type(error), head.strip()
        names = {kind.__name__, kind.__qualname__, f"{kind.__module__}.{kind.__qualname__}"}
        if expected_type not in names:
            return f"{where}: expected {expected_type}, got {kind.__name__}: {error}\n{shown}"
        expected, actual = " ".join(message.split()), " ".join(str(error).split())
        if not actual.startswith(expected):
            problem = f"{expected_type} message: expected {expected!r}..., got {actual!r}"
            return f"{where}: {problem}\n{shown}"
        return None
    if error is not None:
        return f"{where}: unexpected exception\n{shown}\n{_trace(error)}"
    got = buffer.getvalue()
    want = parse_output(statement.want)
    if not (problems := compare_outputs(want, parse_output(got), grad_fn_names=grad_fn_names)):
        return None
    hint = "\n(the expected output is summarised with '...': print fewer elements)"
    return (
        f"{where}: output differs\n{shown}\nexpected:\n{_indent(statement.want)}\n"
        f"got (full precision):\n{_indent(got)}\n"
        + "\n".join(f"  - {p}" for p in problems)
        + (hint if "..." in statement.want else "")
    )


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip("\n").split("\n"))


def _shape_row(case: Case, state: PageState) -> str | None:
    table = case.directive.tables[0]
    line, cells = table.rows[case.row]
    values = dict(zip(table.columns, cells, strict=False))
    where, expression = f"{case.page.label}:{line}", strip_code(values["module"])
    scope = dict(state.prepare(case.page, case.directive.index))
    scope.update(state.binding(case.directive, case.implementation))
    try:
        module = eval(_compile(expression, case.page, line, "eval"), scope)
        modules = module.modules() if isinstance(module, nn.Module) else ()
        sizes = [
            m.num_embeddings for m in modules if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
        ]

        def make(shape: tuple) -> object:
            if shape and isinstance(shape[0], tuple):
                return tuple(make(s) for s in shape)
            return torch.randint(0, min(10, *sizes), shape) if sizes else torch.randn(shape)

        with torch.no_grad():
            output = module(*[make(s) for s in pages.parse_shapes(values["input"])])
    except Exception as error:
        return f"{where}: `{expression}` raised\n{_trace(error)}"
    got = [tuple(t.shape) if isinstance(t, torch.Tensor) else t for t in _flatten(output)]
    wanted = _flatten(pages.parse_shapes(values["output"]), shapes=True)
    if got == wanted:
        return None

    def text(shapes: list) -> str:
        return "; ".join(str(s) if isinstance(s, tuple) else repr(s) for s in shapes)

    return (
        f"{where}: `{expression}` on input {values['input']}: "
        f"expected output shape(s) {text(wanted)}, got {text(got)}"
    )


def _flatten(value: object, shapes: bool = False) -> list:
    """The leaves of nested tuples and lists (``shapes``: a shape, a tuple of ints, is a leaf)."""
    is_shape = shapes and isinstance(value, tuple) and all(isinstance(v, int) for v in value)
    leaf = is_shape or not isinstance(value, (tuple, list))
    return [value] if leaf else [x for item in value for x in _flatten(item, shapes)]


def _milestone_row(case: Case, state: PageState) -> str | None:
    table = case.directive.tables[0]
    line, cells = table.rows[case.row]
    where, step = f"{case.page.label}:{line}", int(strip_code(cells[0]))
    trajectory = _trajectory(case, state)
    if step not in trajectory.values:
        error = trajectory.error
        return (
            f"{where}: the schedule failed before step {step} (at step {trajectory.reached}): "
            f"{type(error).__name__}: {error}\n{_trace(error)}"
        )
    problems = []
    for index, key, group in pages.milestone_columns(table.header):
        cell = strip_code(cells[index]) if index < len(cells) else ""
        if cell in pages.UNCHECKED:
            continue
        name, actual = table.header[index], trajectory.values[step][(key, group)]
        if isinstance(actual, str):
            problems.append(f"{name}: {actual}")
            continue
        expected = parse_figure(cell)  # the page's reader checked it
        problem = compare_figure(expected, actual, f"{name} at step {step}", (1e-7, 1e-12))
        problems += [problem] if problem else []
    return f"{where}: " + "; ".join(problems) if problems else None


def _group_value(optimizer: torch.optim.Optimizer, key: str, group: int) -> float | str:
    """A param-group value, or why there is none (``momentum`` is ``betas[0]`` for Adam)."""
    groups = optimizer.param_groups
    if group >= len(groups):
        return f"the optimizer has {len(groups)} param groups, no group {group}"
    entry = groups[group]
    if key == "momentum" and key not in entry and "betas" in entry:
        key, entry = 0, entry["betas"]
    elif key not in entry:
        return f"param group {group} has no {key!r} (keys: {sorted(entry)})"
    value = entry[key]
    return float(value.item() if isinstance(value, torch.Tensor) else value)


def _trajectory(case: Case, state: PageState) -> _Trajectory:
    """Run the block once per process and implementation, recording every step of the table."""
    directive, page = case.directive, case.page
    key = (directive.slug, case.block, case.implementation and case.implementation.name)
    if key in state.trajectories:
        return state.trajectories[key]
    table, block = directive.tables[0], directive.blocks[case.block]
    trajectory = state.trajectories[key] = _Trajectory()
    scope = dict(state.prepare(page, directive.index))
    try:
        if case.block == directive.family_block:
            scope.update(state.binding(directive, case.implementation))
        with _output(shown=False):
            exec(_compile(block.source, page, block.line, "exec"), scope)
        optimizer, scheduler, metrics = (
            scope.get(n) for n in ("optimizer", "scheduler", "metrics")
        )
        if optimizer is None or scheduler is None:
            raise ValueError(
                f"{page.label}:{block.line}: the block must define `optimizer` and `scheduler`"
            )
        for step in sorted(int(strip_code(cells[0])) for _, cells in table.rows):
            while trajectory.reached < step:
                optimizer.step()
                scheduler.step(*([] if metrics is None else [metrics[trajectory.reached]]))
                trajectory.reached += 1
            trajectory.values[step] = {
                (name, group): _group_value(optimizer, name, group)
                for _, name, group in pages.milestone_columns(table.header)
            }
    except Exception as error:
        trajectory.error = error
    return trajectory


def _errata(case: Case, registry: Registry) -> str | None:
    """The errata tables agree with the pages: erratum ids are unique, every row names tests
    that exist, and every ``erratum=ID`` used by an example is in a table."""
    root = Path(case.page.path).parents[case.page.name.count("/")]
    ids: set[str] = set()  # of every directive and item
    tagged: list[tuple[str, Directive, str]] = []  # (page label, directive, erratum)
    rows: dict[str, tuple[str, int, list[str]]] = {}  # erratum: (directive id, line, tests)
    problems: list[str] = []
    for path in pages.page_files(root):
        with contextlib.suppress(pages.PageError):  # reported as that page's collection error
            page = pages.load_page(path, root)
            for directive in page.directives:
                ids.add(f"{page.name}::{directive.slug}")
                ids.update(c.id for c in pages.cases(page, directive, registry, strict=False))
                tagged += [(page.label, directive, erratum) for erratum in directive.errata]
                for erratum, line, tests in _errata_rows(page, directive, problems):
                    if erratum in rows:
                        problems.append(
                            f"{page.label}:{line}: erratum {erratum!r} is listed twice "
                            f"(also on line {rows[erratum][1]})"
                        )
                    rows[erratum] = (f"{page.name}::{directive.slug}", line, tests)
    for erratum, (directive_id, line, tests) in rows.items():
        if directive_id == f"{case.page.name}::{case.directive.slug}":
            where = f"{case.page.label}:{line}: erratum {erratum!r}"
            problems += [f"{where} names no test"] if not tests else []
            problems += [
                f"{where} names test {t!r}, which no page defines" for t in tests if t not in ids
            ]
    problems += [
        f"{label}:{d.line}: {d.slug} is tagged erratum={e}, which no errata table lists"
        for label, d, e in tagged
        if e not in rows
    ]
    if problems:
        return "errata are inconsistent:\n" + "\n".join(f"  - {p}" for p in problems)
    return None


def _errata_rows(
    page: Page, directive: Directive, problems: list[str]
) -> list[tuple[str, int, list[str]]]:
    """``(erratum, line, tests)`` per row of an errata directive's tables."""
    out = []
    for table in directive.tables if directive.kind == "errata" else ():
        if "id" not in table.columns or "test" not in table.columns:
            problems.append(
                f"{page.label}:{table.line}: errata table needs 'id' and 'test' columns, "
                f"got {list(table.header)}"
            )
            continue
        for line, cells in table.rows:
            cells = (*cells, "", "")
            erratum = strip_code(cells[table.columns.index("id")])
            if not re.fullmatch(r"[\w.-]+", erratum):
                problems.append(f"{page.label}:{line}: malformed erratum id {erratum!r}")
                continue
            tests = _TEST_ID.findall(cells[table.columns.index("test")])
            out.append((erratum, line, [t.removeprefix("docs/") for t in tests]))
    return out
