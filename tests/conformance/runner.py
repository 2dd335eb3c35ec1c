"""Run one conformance item: a session, a shape-table row, a milestone-table row.

Sessions of a page share one namespace, in page order. :class:`PageRuntime` keeps that
namespace per page and process and makes every item independent of which items ran before
it in this process (``-k``, ``-n 2`` without ``--dist loadfile``): before an example runs,
the sessions above it are replayed, quietly and with each family's reference implementation
bound, unless the namespace already holds exactly them. The torch state a session may change
(the RNG, the default dtype, grad mode) is part of the page's state, restored around every
item, so one page cannot disturb another.

Example:
    >>> from conformance.pages import parse_page
    >>> from conformance.registry import builtin_registry
    >>> page = parse_page("demo.md", '''
    ... <!-- conformance: session id=add -->
    ... ```python
    ... >>> torch.tensor([1.0, 2.0]) + 1
    ... tensor([2., 3.])
    ... ```
    ... ''')
    >>> runtime = PageRuntime(page, builtin_registry())
    >>> runtime.run_session(page.examples[0], None)
"""

from __future__ import annotations

import ast
import contextlib
import io
import math
import re
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from conformance.pages import Block, Example, Page, Statement
from conformance.registry import Implementation, Registry
from conformance.values import compare_number, compare_outputs, parse_number, parse_output

__all__ = [
    "ConformanceFailure",
    "PageRuntime",
    "check_requirements",
    "fresh_namespace",
    "milestone_columns",
    "parse_shapes",
    "strip_code",
]

# The actual output is printed at this many digits so rounding it adds nothing measurable.
_FULL_PRECISION = 16
_IGNORED_COLUMNS = ("note", "notes", "comment")
_COLUMN_RE = re.compile(r"(?P<key>[A-Za-z_]\w*)(?:\[(?P<group>\d+)\])?")
_REQUIREMENT_RE = re.compile(
    r"(?P<name>[A-Za-z_][\w.-]*)\s*(?:(?P<op>>=|<=|==|!=|>|<)\s*(?P<version>[\w.]+))?"
)


class ConformanceFailure(AssertionError):
    """An example disagrees with the page; the message says where and how."""


def fresh_namespace() -> dict[str, object]:
    """The names every page's namespace starts with."""
    import torchkit

    return {
        "__name__": "__conformance__",
        "torch": torch,
        "nn": nn,
        "F": torch.nn.functional,
        "optim": torch.optim,
        "lr_scheduler": torch.optim.lr_scheduler,
        "math": math,
        "torchkit": torchkit,
    }


# --------------------------------------------------------------------------- torch state


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
def _preserved_process_state() -> Iterator[None]:
    """Restore the caller's torch state and print options afterwards."""
    state = _TorchState.capture()
    opts = torch._tensor_str.PRINT_OPTS
    printing = {
        "precision": opts.precision,
        "threshold": opts.threshold,
        "edgeitems": opts.edgeitems,
        "linewidth": opts.linewidth,
        "sci_mode": opts.sci_mode,
    }
    try:
        yield
    finally:
        state.apply()
        torch.set_printoptions(**printing)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Discard stdout and expression values (a replay's output is checked by its own item)."""
    previous_hook = sys.displayhook
    sys.displayhook = lambda value: None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.displayhook = previous_hook


@contextlib.contextmanager
def _full_precision_output() -> Iterator[io.StringIO]:
    """Capture stdout (and ``sys.displayhook``) with tensors printed at full precision."""
    buffer = io.StringIO()
    previous_hook = sys.displayhook

    def displayhook(value: object) -> None:
        if value is not None:
            print(repr(value))

    torch.set_printoptions(precision=_FULL_PRECISION, threshold=sys.maxsize, linewidth=200)
    sys.displayhook = displayhook
    try:
        with contextlib.redirect_stdout(buffer):
            yield buffer
    finally:
        sys.displayhook = previous_hook


# --------------------------------------------------------------------------- requirements


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in re.split(r"[.+]", text):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def check_requirements(requires: tuple[str, ...]) -> str | None:
    """Return why an example cannot run here (``None`` if it can).

    Args:
        requires: entries like ``torch>=2.6``, ``triton``, ``cuda``.

    Example:
        >>> check_requirements(("torch>=1.0",)) is None
        True
        >>> check_requirements(("torch<1.0",)).startswith("needs torch<1.0")
        True
    """
    import importlib.metadata

    for requirement in requires:
        match = _REQUIREMENT_RE.fullmatch(requirement.strip())
        if not match:
            return f"unreadable requirement {requirement!r}"
        name, op, wanted = match.group("name", "op", "version")
        if name == "cuda":
            if not torch.cuda.is_available():
                return "needs CUDA, which this machine does not have"
            continue
        if name == "torch":
            have = torch.__version__
        else:
            try:
                have = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                return f"needs {requirement}, which is not installed"
        if op is None:
            continue
        have_t, want_t = _version_tuple(have), _version_tuple(wanted)
        width = max(len(have_t), len(want_t))
        have_t += (0,) * (width - len(have_t))
        want_t += (0,) * (width - len(want_t))
        ok = {
            ">=": have_t >= want_t,
            "<=": have_t <= want_t,
            ">": have_t > want_t,
            "<": have_t < want_t,
            "==": have_t == want_t,
            "!=": have_t != want_t,
        }[op]
        if not ok:
            return f"needs {requirement}, this is {name} {have}"
    return None


# --------------------------------------------------------------------------- shapes


def strip_code(cell: str) -> str:
    """A table cell without surrounding whitespace and code-span backticks."""
    cell = cell.strip()
    if len(cell) >= 2 and cell.startswith("`") and cell.endswith("`"):
        return cell.strip("`").strip()
    return cell


def _parse_shape(text: str) -> object:
    text = re.sub(r"torch\.Size\(\s*\[(.*?)\]\s*\)", r"(\1,)", text.strip())
    value = ast.literal_eval(text)
    if isinstance(value, int):
        return (value,)
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return value
    if isinstance(value, tuple) and all(isinstance(v, (tuple, list)) for v in value):
        return tuple(_parse_shape(repr(tuple(v))) for v in value)
    raise ValueError(f"not a shape: {text!r}")


def parse_shapes(cell: str) -> list[object]:
    """Parse a shape-table cell: shapes separated by ``;``.

    A shape is ``(2, 3)`` (or ``torch.Size([2, 3])``); a tuple of shapes such as
    ``((1, 3, 20), (1, 3, 20))`` stands for a tuple of tensors (LSTM's ``(h_0, c_0)``).

    Example:
        >>> parse_shapes("`(5, 3, 10); ((2, 3, 20), (2, 3, 20))`")
        [(5, 3, 10), ((2, 3, 20), (2, 3, 20))]
    """
    text = strip_code(cell)
    return [_parse_shape(strip_code(part)) for part in text.split(";") if part.strip()]


def _flatten(value: object) -> list[object]:
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _flatten(item)]
    return [value]


def _make_input(shape: object, high: int | None) -> object:
    if shape and isinstance(shape[0], tuple):
        return tuple(_make_input(s, high) for s in shape)
    if high is not None:
        return torch.randint(0, high, shape)
    return torch.randn(shape)


# --------------------------------------------------------------------------- milestones


def milestone_columns(header: tuple[str, ...]) -> list[tuple[int, str, int] | None]:
    """Map milestone-table columns (after ``step``) to ``(column, key, group)``; ``None`` = ignored.

    Example:
        >>> milestone_columns(("step", "lr", "lr[1]", "note"))
        [(1, 'lr', 0), (2, 'lr', 1), None]
    """
    columns: list[tuple[int, str, int] | None] = []
    for index, cell in enumerate(header[1:], start=1):
        name = strip_code(cell)
        if name.lower() in _IGNORED_COLUMNS:
            columns.append(None)
            continue
        match = _COLUMN_RE.fullmatch(name)
        if not match:
            raise ValueError(f"milestone column {cell!r} is not NAME or NAME[GROUP]")
        columns.append((index, match.group("key"), int(match.group("group") or 0)))
    return columns


def _group_value(optimizer: torch.optim.Optimizer, key: str, group: int) -> float:
    groups = optimizer.param_groups
    if group >= len(groups):
        raise ConformanceFailure(f"the optimizer has {len(groups)} param groups, no group {group}")
    entry = groups[group]
    if key in entry:
        value = entry[key]
    elif key == "momentum" and "betas" in entry:
        value = entry["betas"][0]
    else:
        raise ConformanceFailure(f"param group {group} has no {key!r} (keys: {sorted(entry)})")
    if isinstance(value, torch.Tensor):
        value = value.item()
    return float(value)


@dataclass
class _Trajectory:
    """Param-group values at the table's steps for one block and implementation."""

    values: dict[int, dict[tuple[str, int], float]] = field(default_factory=dict)
    error: BaseException | None = None
    failed_at: int | None = None


# --------------------------------------------------------------------------- runtime


def _compile(source: str, page: Page, line: int, mode: str) -> object:
    tree = ast.parse(source, filename=str(page.path), mode=mode)
    ast.increment_lineno(tree, line - 1)
    return compile(tree, str(page.path), mode)


def _exception_matches(error: BaseException, exc_msg: str) -> str | None:
    """Doctest's ``Traceback`` form: the type must match, the message by prefix."""
    head, _, message = exc_msg.strip().partition(":")
    expected_type = head.strip()
    actual = type(error)
    names = {actual.__name__, actual.__qualname__, f"{actual.__module__}.{actual.__qualname__}"}
    if expected_type not in names:
        return f"expected {expected_type}, got {actual.__name__}: {error}"
    expected_message = " ".join(message.split())
    actual_message = " ".join(str(error).split())
    if not actual_message.startswith(expected_message):
        return f"{expected_type} message: expected {expected_message!r}..., got {actual_message!r}"
    return None


class PageRuntime:
    """The shared namespace of one page's sessions, in one process.

    Args:
        page: the parsed page.
        registry: where family bindings come from.
    """

    def __init__(self, page: Page, registry: Registry) -> None:
        self.page = page
        self.registry = registry
        self.sessions = [i for i, e in enumerate(page.examples) if e.kind == "session"]
        self._namespace: dict[str, object] | None = None
        self._state = _TorchState.capture()
        self._done: list[int] = []
        self._trajectories: dict[tuple[str, int, str | None], _Trajectory] = {}

    # -- state ----------------------------------------------------------------

    def _reset(self) -> None:
        self._namespace = fresh_namespace()
        torch.manual_seed(0)
        self._state = _TorchState(torch.get_rng_state(), torch.float32, True)
        self._done = []

    def _prepare(self, index: int) -> dict[str, object]:
        """The namespace as it is after the sessions above example ``index``."""
        needed = [i for i in self.sessions if i < index]
        if self._namespace is None or self._done != needed[: len(self._done)]:
            self._reset()
        self._state.apply()
        for i in needed[len(self._done) :]:
            self._replay(self.page.examples[i])
            self._done.append(i)
        self._state = _TorchState.capture()
        return self._namespace

    def _bind(self, example: Example, implementation: Implementation | None) -> dict[str, object]:
        if example.family is None:
            return {}
        family = self.registry.families[example.family]
        chosen = implementation or self.registry.reference(example.family)
        return {family.binding: chosen.load()}

    def _replay(self, example: Example) -> None:
        """Run a session above the item quietly: its own item reports its failures."""
        if self._namespace is None:
            self._reset()
        self._namespace.update(self._bind(example, None))
        block = example.blocks[0]
        with _quiet():
            if not block.statements:
                with contextlib.suppress(Exception):
                    exec(_compile(block.source, self.page, block.line, "exec"), self._namespace)
                return
            for statement in block.statements:
                if statement.skip:
                    continue
                with contextlib.suppress(Exception):
                    code = _compile(statement.source, self.page, statement.line, "single")
                    exec(code, self._namespace)

    # -- sessions --------------------------------------------------------------

    def run_session(self, example: Example, implementation: Implementation | None) -> None:
        """Run a session, checking each statement's output; raise ConformanceFailure if not."""
        index = self.page.examples.index(example)
        reference = implementation is None or (
            example.family is not None
            and implementation.name == self.registry.reference(example.family).name
        )
        with _preserved_process_state():
            namespace = self._prepare(index)
            self._done.append(index)  # from here on the namespace includes this session
            clean = False
            try:
                namespace.update(self._bind(example, implementation))
                self._check_block(example, example.blocks[0], namespace, grad_fn_names=reference)
                clean = reference
            finally:
                if clean:
                    self._state = _TorchState.capture()
                else:
                    self._namespace = None  # partly run or run with another binding: rebuild

    def _check_block(
        self, example: Example, block: Block, namespace: dict[str, object], *, grad_fn_names: bool
    ) -> None:
        if not block.statements:
            code = _compile(block.source, self.page, block.line, "exec")
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    exec(code, namespace)
                except Exception as error:
                    raise ConformanceFailure(
                        f"{self.page.label}:{block.line}: {example.slug} raised\n"
                        + "".join(traceback.format_exception(error))
                    ) from None
            return
        for statement in block.statements:
            if statement.skip:
                continue
            self._check_statement(example, statement, namespace, grad_fn_names)

    def _check_statement(
        self,
        example: Example,
        statement: Statement,
        namespace: dict[str, object],
        grad_fn_names: bool,
    ) -> None:
        where = f"{self.page.label}:{statement.line}"
        shown = "\n".join(
            (">>> " if i == 0 else "... ") + line
            for i, line in enumerate(statement.source.rstrip("\n").split("\n"))
        )
        code = _compile(statement.source, self.page, statement.line, "single")
        error: BaseException | None = None
        with _full_precision_output() as buffer:
            try:
                exec(code, namespace)
            except Exception as raised:
                error = raised
        got = buffer.getvalue()
        if statement.exc_msg is not None:
            if error is None:
                raise ConformanceFailure(
                    f"{where}: expected {statement.exc_msg.strip()!r}, nothing was raised\n{shown}"
                )
            problem = _exception_matches(error, statement.exc_msg)
            if problem:
                raise ConformanceFailure(f"{where}: {problem}\n{shown}")
            return
        if error is not None:
            trace = "".join(traceback.format_exception(error))
            raise ConformanceFailure(f"{where}: unexpected exception\n{shown}\n{trace}")
        problems = compare_outputs(
            parse_output(statement.want), parse_output(got), grad_fn_names=grad_fn_names
        )
        if problems:
            hint = ""
            if "..." in statement.want:
                hint = "\n(the expected output is summarised with '...': print fewer elements)"
            raise ConformanceFailure(
                f"{where}: output differs\n{shown}\n"
                f"expected:\n{_indent(statement.want)}\n"
                f"got (full precision):\n{_indent(got)}\n"
                + "\n".join(f"  - {p}" for p in problems)
                + hint
            )

    # -- shapes ----------------------------------------------------------------

    def run_shape_row(
        self, example: Example, row: int, implementation: Implementation | None
    ) -> None:
        """Build the row's module, feed it inputs of the given shapes, check output shapes."""
        line, cells = example.tables[0].rows[row]
        header = [strip_code(h).lower() for h in example.tables[0].header]
        values = dict(zip(header, cells, strict=False))
        where = f"{self.page.label}:{line}"
        index = self.page.examples.index(example)
        with _preserved_process_state():
            scope = dict(self._prepare(index))
            scope.update(self._bind(example, implementation))
            expression = strip_code(values["module"])
            try:
                inputs_spec = parse_shapes(values["input"])
                expected = parse_shapes(values["output"])
            except (ValueError, SyntaxError) as error:
                raise ConformanceFailure(f"{where}: unreadable shape cell: {error}") from None
            try:
                module = eval(_compile(expression, self.page, line, "eval"), scope)
                embeddings = [
                    m.num_embeddings
                    for m in (module.modules() if isinstance(module, nn.Module) else ())
                    if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
                ]
                high = min([10, *embeddings]) if embeddings else None
                inputs = [_make_input(shape, high) for shape in inputs_spec]
                with torch.no_grad():
                    output = module(*inputs)
            except Exception as error:
                trace = "".join(traceback.format_exception(error))
                raise ConformanceFailure(f"{where}: `{expression}` raised\n{trace}") from None
            got = [tuple(t.shape) if isinstance(t, torch.Tensor) else t for t in _flatten(output)]
            wanted = [tuple(s) for s in _flatten_shapes(expected)]
            if got != wanted:
                raise ConformanceFailure(
                    f"{where}: `{expression}` on input {values['input']}: "
                    f"expected output shape(s) {_shapes_text(wanted)}, got {_shapes_text(got)}"
                )

    # -- milestones --------------------------------------------------------------

    def run_milestone_row(
        self,
        example: Example,
        row: int,
        block_index: int,
        implementation: Implementation | None,
    ) -> None:
        """Check one milestone row against one block (and implementation)."""
        table = example.tables[0]
        line, cells = table.rows[row]
        where = f"{self.page.label}:{line}"
        columns = milestone_columns(table.header)
        step = int(strip_code(cells[0]))
        trajectory = self._trajectory(example, block_index, implementation)
        if step not in trajectory.values:
            error = trajectory.error
            trace = "".join(traceback.format_exception(error)) if error else ""
            raise ConformanceFailure(
                f"{where}: the schedule failed before step {step} "
                f"(at step {trajectory.failed_at}):\n{trace}"
            )
        recorded = trajectory.values[step]
        problems = []
        for column in columns:
            if column is None:
                continue
            index, key, group = column
            cell = strip_code(cells[index]) if index < len(cells) else ""
            if cell in ("", "-", "—"):
                continue
            name = table.header[index]
            actual = recorded.get((key, group))
            if isinstance(actual, BaseException):
                problems.append(f"{name}: {actual}")
                continue
            expected = _milestone_number(cell, where)
            problem = compare_number(
                expected,
                parse_number(repr(float(actual))),
                tolerance=(1e-7, 1e-12),
                where=f"{name} at step {step}",
            )
            if problem:
                problems.append(problem)
        if problems:
            raise ConformanceFailure(f"{where}: " + "; ".join(problems))

    def _trajectory(
        self, example: Example, block_index: int, implementation: Implementation | None
    ) -> _Trajectory:
        key = (example.slug, block_index, implementation.name if implementation else None)
        if key in self._trajectories:
            return self._trajectories[key]
        table = example.tables[0]
        block = example.blocks[block_index]
        steps = sorted({int(strip_code(cells[0])) for _, cells in table.rows})
        columns = [c for c in milestone_columns(table.header) if c is not None]
        trajectory = _Trajectory()
        index = self.page.examples.index(example)
        with _preserved_process_state():
            scope = dict(self._prepare(index))
            taken = 0
            try:
                scope.update(self._bind(example, implementation))
                with contextlib.redirect_stdout(io.StringIO()):
                    exec(_compile(block.source, self.page, block.line, "exec"), scope)
                optimizer, scheduler = scope.get("optimizer"), scope.get("scheduler")
                if optimizer is None or scheduler is None:
                    raise ConformanceFailure(
                        f"{self.page.label}:{block.line}: the block must define "
                        "`optimizer` and `scheduler`"
                    )
                metrics = scope.get("metrics")
                for step in steps:
                    while taken < step:
                        optimizer.step()
                        if metrics is not None:
                            scheduler.step(metrics[taken])
                        else:
                            scheduler.step()
                        taken += 1
                    values: dict[tuple[str, int], float] = {}
                    for _, name, group in columns:
                        try:
                            values[(name, group)] = _group_value(optimizer, name, group)
                        except ConformanceFailure as problem:
                            values[(name, group)] = problem  # reported by the row
                    trajectory.values[step] = values
            except Exception as error:
                trajectory.error = error
                trajectory.failed_at = taken
        self._trajectories[key] = trajectory
        return trajectory


def _milestone_number(cell: str, where: str):
    try:
        return parse_number(cell)
    except ValueError:
        raise ConformanceFailure(f"{where}: {cell!r} is not a number") from None


def _flatten_shapes(shapes: list[object]) -> list[tuple[int, ...]]:
    out = []
    for shape in shapes:
        if shape and isinstance(shape[0], tuple):
            out += list(shape)
        else:
            out.append(shape)
    return out


def _shapes_text(shapes: list[object]) -> str:
    return "; ".join(str(tuple(s)) if isinstance(s, tuple) else repr(s) for s in shapes)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip("\n").split("\n"))
