"""The Sybil evaluator of conformance items, and the page state it keeps.

Sybil gives every page one namespace (``Document.namespace``), shared by its examples in page
order; :class:`PageState`, kept in it, makes each item independent of which items ran before it
in this process (``-k``, ``-n 2``): before an item runs, the sessions above it are replayed,
quietly and with each family's reference implementation bound, unless the namespace already
holds exactly them. The torch state a session may change (the RNG, the default dtype, grad mode,
print options) is part of the page's state and is restored for the caller after every item.

:func:`evaluate` returns ``None`` when the item agrees with the page, else the message Sybil
reports (it names the page and line).

Example:
    >>> from sybil import Document
    >>> from torchkit.conformance.pages import ConformanceParser
    >>> from torchkit.conformance.registry import builtin_registry
    >>> text = "<!-- conformance: session id=add -->\\n```python\\n"
    >>> text += ">>> torch.tensor([1.0, 2.0]) + 1\\ntensor([2., 4.])\\n```\\n"
    >>> document = Document(text, "page.md")
    >>> parser = ConformanceParser(Path("."), builtin_registry(), evaluate)
    >>> for region in parser(document):
    ...     document.add(region)
    >>> setup_page(document.namespace)
    >>> (example,) = document.examples()
    >>> print(evaluate(example).splitlines()[0])
    page.md:3: output differs
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

import sybil
import torch
from torch import nn

from torchkit.conformance.pages import (
    Block,
    Case,
    Directive,
    Page,
    PageError,
    cases,
    load_page,
    milestone_columns,
    page_files,
    parse_shapes,
    strip_code,
)
from torchkit.conformance.registry import Implementation, ImplementationUnavailable, Registry
from torchkit.conformance.values import compare_number, compare_outputs, parse_number, parse_output

STATE_KEY = "__conformance__"
_FULL_PRECISION = 16  # digits the actual output is printed with: its rounding adds nothing
_TEST_ID = re.compile(r"[\w./-]+\.md::[\w.-]+(?:\[[^\]\s`]*\])?")


def fresh_namespace() -> dict[str, object]:
    """The names every page's namespace starts with."""
    import torchkit

    return {
        "__name__": "__conformance__",
        **{"torch": torch, "nn": nn, "F": torch.nn.functional, "optim": torch.optim},
        **{"lr_scheduler": torch.optim.lr_scheduler, "math": math, "torchkit": torchkit},
    }


@dataclass
class _TorchState:
    """The process-wide torch state a session may change and later sessions see."""

    rng: torch.Tensor
    default_dtype: torch.dtype
    grad_enabled: bool

    @classmethod
    def capture(cls) -> _TorchState:
        return cls(torch.get_rng_state(), torch.get_default_dtype(), torch.is_grad_enabled())

    def apply(self) -> None:
        torch.set_rng_state(self.rng)
        torch.set_default_dtype(self.default_dtype)
        torch.set_grad_enabled(self.grad_enabled)


@contextlib.contextmanager
def _isolated() -> Iterator[None]:
    """Give the caller back its torch state and print options; no log records below WARNING."""
    state, options = _TorchState.capture(), torch._tensor_str.PRINT_OPTS
    keys = ("precision", "threshold", "edgeitems", "linewidth", "sci_mode")
    printing = {key: getattr(options, key) for key in keys}
    quiet = logging.root.manager.disable
    logging.disable(logging.INFO)  # c10d logs a page of DEBUG records per `dcp` call
    try:
        yield
    finally:
        state.apply()
        torch.set_printoptions(**printing)
        logging.disable(quiet)


@contextlib.contextmanager
def _output(*, shown: bool) -> Iterator[io.StringIO]:
    """Capture stdout and expression values: printed at full precision, or dropped."""
    buffer, previous = io.StringIO(), sys.displayhook

    def display(value: object) -> None:
        if shown and value is not None:
            print(repr(value))

    if shown:
        torch.set_printoptions(precision=_FULL_PRECISION, threshold=sys.maxsize, linewidth=200)
    sys.displayhook = display
    try:
        with contextlib.redirect_stdout(buffer):
            yield buffer
    finally:
        sys.displayhook = previous


def _compile(source: str, page: Page, line: int, mode: str) -> object:
    tree = ast.parse(source, filename=str(page.path), mode=mode)
    ast.increment_lineno(tree, line - 1)
    return compile(tree, str(page.path), mode)


def _trace(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


@dataclass
class _Trajectory:
    """Param-group values at a milestone table's steps, for one block and implementation."""

    values: dict[int, dict[tuple[str, int], float | str]] = field(default_factory=dict)
    error: BaseException | None = None
    failed_at: int = 0


class PageState:
    """A page's progress in one process: which sessions its namespace holds, and its torch state.

    Args:
        registry: where family bindings come from.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.done: list[int] | None = None  # directive indices the namespace holds; None: rebuild
        self.torch = _TorchState.capture()
        self.trajectories: dict[tuple[str, int, str | None], _Trajectory] = {}

    def binding(self, directive: Directive, implementation: Implementation | None) -> dict:
        """``{family binding: implementation}`` (the reference when ``implementation`` is None)."""
        family = self.registry.families.get(directive.family or "")
        if family is None or not self.registry.implementations(family.name):
            return {}
        chosen = implementation or self.registry.reference(family.name)
        return {family.binding: chosen.load()}

    def prepare(self, page: Page, index: int, namespace: dict) -> dict:
        """Bring ``namespace`` to the state after the sessions above directive ``index``."""
        needed = [d.index for d in page.directives[:index] if d.kind == "session"]
        if self.done is None or self.done != needed[: len(self.done)]:
            namespace.clear()
            namespace.update(fresh_namespace(), **{STATE_KEY: self})
            torch.manual_seed(0)
            self.torch, self.done = _TorchState(torch.get_rng_state(), torch.float32, True), []
        self.torch.apply()
        for i in needed[len(self.done) :]:
            directive = page.directives[i]
            with contextlib.suppress(Exception):  # the session's own item reports its failures
                namespace.update(self.binding(directive, None))
            block = directive.blocks[0]
            parts = [(s.source, s.lineno, "single") for s in block.statements if not _skipped(s)]
            with _output(shown=False):
                for source, line, mode in parts or [(block.source, block.line, "exec")]:
                    with contextlib.suppress(Exception):
                        exec(_compile(source, page, line, mode), namespace)
            self.done.append(i)
        self.torch = _TorchState.capture()
        return namespace


def setup_page(namespace: dict, registry: Registry | None = None) -> None:
    """Sybil's ``setup`` for a page: start its state (the built-in registry unless given)."""
    from torchkit.conformance.registry import builtin_registry

    namespace[STATE_KEY] = PageState(registry or builtin_registry())


def evaluate(example: sybil.Example) -> str | None:
    """Check one item (``example.parsed`` is its :class:`~torchkit.conformance.pages.Case`)."""
    case: Case = example.parsed
    state: PageState = example.namespace[STATE_KEY]
    check = {"session": _session, "shapes": _shape_row, "milestones": _milestone_row}
    try:
        with _isolated():
            if case.directive.kind == "errata":
                return _errata(case, state.registry)
            return check[case.directive.kind](case, state, example.namespace)
    except ImplementationUnavailable as error:
        return str(error)


# --------------------------------------------------------------------------- sessions


def _session(case: Case, state: PageState, namespace: dict) -> str | None:
    directive = case.directive
    reference = case.implementation is None or (
        case.implementation == state.registry.reference(directive.family)
    )
    state.prepare(case.page, directive.index, namespace)
    state.done.append(directive.index)  # from here on the namespace includes this session
    problem: str | None = "not run"
    try:
        namespace.update(state.binding(directive, case.implementation))
        problem = _check_block(case, directive.blocks[0], namespace, grad_fn_names=reference)
    finally:
        if problem is None and reference:
            state.torch = _TorchState.capture()
        else:  # partly run, or run with another binding: rebuild before the next item
            state.done = None
    return problem


def _check_block(case: Case, block: Block, namespace: dict, *, grad_fn_names: bool) -> str | None:
    page = case.page
    if not block.statements:
        with _output(shown=False):
            try:
                exec(_compile(block.source, page, block.line, "exec"), namespace)
            except Exception as error:
                return f"{page.label}:{block.line}: {case.directive.slug} raised\n{_trace(error)}"
        return None
    for statement in block.statements:
        if not _skipped(statement) and (
            problem := _check_statement(page, statement, namespace, grad_fn_names)
        ):
            return problem
    return None


def _skipped(statement: doctest.Example) -> bool:
    return bool(statement.options.get(doctest.SKIP))


def _check_statement(
    page: Page, statement: doctest.Example, namespace: dict, grad_fn_names: bool
) -> str | None:
    where = f"{page.label}:{statement.lineno}"
    shown = "\n".join(
        (">>> " if i == 0 else "... ") + line
        for i, line in enumerate(statement.source.rstrip("\n").split("\n"))
    )
    error = None
    with _output(shown=True) as buffer:
        try:
            exec(_compile(statement.source, page, statement.lineno, "single"), namespace)
        except Exception as raised:
            error = raised
    if statement.exc_msg is not None:
        if error is None:
            return f"{where}: expected {statement.exc_msg.strip()!r}, nothing was raised\n{shown}"
        problem = _exception_problem(error, statement.exc_msg)
        return f"{where}: {problem}\n{shown}" if problem else None
    if error is not None:
        return f"{where}: unexpected exception\n{shown}\n{_trace(error)}"
    got = buffer.getvalue()
    problems = compare_outputs(
        parse_output(statement.want), parse_output(got), grad_fn_names=grad_fn_names
    )
    if not problems:
        return None
    hint = "\n(the expected output is summarised with '...': print fewer elements)"
    return (
        f"{where}: output differs\n{shown}\nexpected:\n{_indent(statement.want)}\n"
        f"got (full precision):\n{_indent(got)}\n"
        + "\n".join(f"  - {p}" for p in problems)
        + (hint if "..." in statement.want else "")
    )


def _exception_problem(error: BaseException, exc_msg: str) -> str | None:
    """Doctest's ``Traceback`` form: the type must match (any qualified name), the message by
    prefix, whitespace normalised."""
    head, _, message = exc_msg.strip().partition(":")
    kind, expected_type = type(error), head.strip()
    if expected_type not in {
        kind.__name__,
        kind.__qualname__,
        f"{kind.__module__}.{kind.__qualname__}",
    }:
        return f"expected {expected_type}, got {kind.__name__}: {error}"
    expected, actual = " ".join(message.split()), " ".join(str(error).split())
    if not actual.startswith(expected):
        return f"{expected_type} message: expected {expected!r}..., got {actual!r}"
    return None


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip("\n").split("\n"))


# --------------------------------------------------------------------------- shapes


def _flatten(value: object) -> list[object]:
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def _shape_row(case: Case, state: PageState, namespace: dict) -> str | None:
    table = case.directive.tables[0]
    line, cells = table.rows[case.row]
    values = dict(zip([strip_code(h).lower() for h in table.header], cells, strict=False))
    where, expression = f"{case.page.label}:{line}", strip_code(values["module"])
    scope = dict(state.prepare(case.page, case.directive.index, namespace))
    scope.update(state.binding(case.directive, case.implementation))
    try:
        module = eval(_compile(expression, case.page, line, "eval"), scope)
        sizes = [
            m.num_embeddings
            for m in (module.modules() if isinstance(module, nn.Module) else ())
            if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
        ]

        def make(shape: tuple) -> object:
            if shape and isinstance(shape[0], tuple):
                return tuple(make(s) for s in shape)
            return torch.randint(0, min(10, *sizes), shape) if sizes else torch.randn(shape)

        with torch.no_grad():
            output = module(*[make(s) for s in parse_shapes(values["input"])])
    except Exception as error:
        return f"{where}: `{expression}` raised\n{_trace(error)}"
    got = [tuple(t.shape) if isinstance(t, torch.Tensor) else t for t in _flatten(output)]
    wanted = [
        s
        for shape in parse_shapes(values["output"])
        for s in (shape if shape and isinstance(shape[0], tuple) else [shape])
    ]
    if got == wanted:
        return None
    text = lambda shapes: "; ".join(str(s) if isinstance(s, tuple) else repr(s) for s in shapes)  # noqa: E731
    return (
        f"{where}: `{expression}` on input {values['input']}: "
        f"expected output shape(s) {text(wanted)}, got {text(got)}"
    )


# --------------------------------------------------------------------------- milestones


def _milestone_row(case: Case, state: PageState, namespace: dict) -> str | None:
    table = case.directive.tables[0]
    line, cells = table.rows[case.row]
    where, step = f"{case.page.label}:{line}", int(strip_code(cells[0]))
    trajectory = _trajectory(case, state, namespace)
    if step not in trajectory.values:
        error = trajectory.error
        return (
            f"{where}: the schedule failed before step {step} (at step {trajectory.failed_at}): "
            f"{type(error).__name__}: {error}\n{_trace(error)}"
        )
    problems = []
    for index, key, group in milestone_columns(table.header):
        cell = strip_code(cells[index]) if index < len(cells) else ""
        if cell in ("", "-", "—"):
            continue
        name, actual = table.header[index], trajectory.values[step][(key, group)]
        if isinstance(actual, str):
            problems.append(f"{name}: {actual}")
            continue
        try:
            expected = parse_number(cell)
        except ValueError:
            return f"{where}: {cell!r} is not a number"
        problem = compare_number(
            expected,
            parse_number(repr(actual)),
            tolerance=(1e-7, 1e-12),
            where=f"{name} at step {step}",
        )
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


def _trajectory(case: Case, state: PageState, namespace: dict) -> _Trajectory:
    """Run the block once per process and implementation, recording every step of the table."""
    implementation = case.implementation.name if case.implementation else None
    key = (case.directive.slug, case.block, implementation)
    if key in state.trajectories:
        return state.trajectories[key]
    directive, page = case.directive, case.page
    table, block = directive.tables[0], directive.blocks[case.block]
    trajectory = state.trajectories[key] = _Trajectory()
    scope = dict(state.prepare(page, directive.index, namespace))
    try:
        if case.block == directive.family_block:
            scope.update(state.binding(directive, case.implementation))
        with _output(shown=False):
            exec(_compile(block.source, page, block.line, "exec"), scope)
        optimizer, scheduler = scope.get("optimizer"), scope.get("scheduler")
        if optimizer is None or scheduler is None:
            raise ValueError(
                f"{page.label}:{block.line}: the block must define `optimizer` and `scheduler`"
            )
        metrics = scope.get("metrics")
        for step in sorted(int(strip_code(cells[0])) for _, cells in table.rows):
            while trajectory.failed_at < step:
                optimizer.step()
                scheduler.step(*([] if metrics is None else [metrics[trajectory.failed_at]]))
                trajectory.failed_at += 1
            trajectory.values[step] = {
                (name, group): _group_value(optimizer, name, group)
                for _, name, group in milestone_columns(table.header)
            }
    except Exception as error:
        trajectory.error = error
    return trajectory


# --------------------------------------------------------------------------- errata


def _errata(case: Case, registry: Registry) -> str | None:
    """The errata tables agree with the pages: erratum ids are unique, every row names tests
    that exist, and every ``erratum=ID`` used by an example is in a table."""
    root = Path(case.page.path).parents[case.page.name.count("/")]
    directives: list[Directive] = []
    item_ids: set[str] = set()
    rows: dict[str, tuple[Directive, int, list[str]]] = {}
    problems: list[str] = []
    for path in page_files(root):
        with contextlib.suppress(PageError):  # reported as that page's collection error
            page = load_page(path, root)
            for directive in page.directives:
                directives.append(directive)
                item_ids.update(c.id for c in cases(page, directive, registry, strict=False))
                for erratum, line, tests in _errata_rows(directive, problems):
                    if erratum in rows:
                        problems.append(
                            f"{directive.label}:{line}: erratum {erratum!r} is listed twice "
                            f"(also on line {rows[erratum][1]})"
                        )
                    rows[erratum] = (directive, line, tests)
    known = {d.id for d in directives}
    for erratum, (directive, line, tests) in rows.items():
        if directive.id != case.directive.id:
            continue
        if not tests:
            problems.append(f"{directive.label}:{line}: erratum {erratum!r} names no test")
        for test in tests:
            if test not in (item_ids if "[" in test else known):
                problems.append(
                    f"{directive.label}:{line}: erratum {erratum!r} names test {test!r}, "
                    "which no page defines"
                )
    for directive in directives:
        for erratum in directive.errata:
            if erratum not in rows:
                problems.append(
                    f"{directive.label}:{directive.line}: {directive.slug} is tagged "
                    f"erratum={erratum}, which no errata table lists"
                )
    if problems:
        return "errata are inconsistent:\n" + "\n".join(f"  - {p}" for p in problems)
    return None


def _errata_rows(directive: Directive, problems: list[str]) -> list[tuple[str, int, list[str]]]:
    """``(erratum, line, tests)`` per row of an errata directive's tables."""
    out = []
    for table in directive.tables if directive.kind == "errata" else ():
        header = [strip_code(h).lower() for h in table.header]
        if "id" not in header or "test" not in header:
            problems.append(
                f"{directive.label}:{table.line}: errata table needs 'id' and 'test' columns, "
                f"got {list(table.header)}"
            )
            continue
        for line, cells in table.rows:
            cells = (*cells, "", "")
            erratum = strip_code(cells[header.index("id")])
            if not re.fullmatch(r"[\w.-]+", erratum):
                problems.append(f"{directive.label}:{line}: malformed erratum id {erratum!r}")
                continue
            tests = re.findall(_TEST_ID, cells[header.index("test")])
            out.append((erratum, line, [t.removeprefix("docs/") for t in tests]))
    return out
