"""Read the conformance examples out of Markdown pages, as Sybil regions.

Sybil's Markdown lexers find the ``<!-- conformance: ... -->`` directives and the fenced code
blocks, and its doctest parser splits a ``>>>`` session into statements; :class:`TableLexer`
adds pipe tables. :func:`parse_page` binds each directive to what it governs (a
:class:`Directive`); :class:`ConformanceParser`, the Sybil parser, expands each directive into its
pytest items (:class:`Case`: one per table row, milestone block and implementation) and yields one
region per item, evaluated by :func:`torchkit.conformance.evaluate.evaluate`.

Regions are zero-width markers placed at the line each item checks (a row, a session's block):
Sybil forbids overlapping regions, and the items of one row differ only in their block or
implementation. A marker that would land on an earlier one moves one character on.

Example:
    >>> page = parse_page("demo.md", '''
    ... <!-- conformance: session id=relu -->
    ... ```python
    ... >>> torch.relu(torch.tensor([-1.0, 2.0]))
    ... tensor([0., 2.])
    ... ```
    ... ''')
    >>> [(d.kind, d.slug, d.line) for d in page.directives]
    [('session', 'relu', 2)]
"""

from __future__ import annotations

import ast
import doctest
import functools
import importlib.metadata
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from sybil import Document, Region
from sybil.parsers.abstract.doctest import DocTestStringParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, RawFencedCodeBlockLexer

from torchkit.conformance.registry import Implementation, Registry

KINDS = ("session", "shapes", "milestones", "errata")
_OPTIONS = ("id", "family", "erratum", "requires")
_SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PYTHON = ("python", "py", "pycon", "python3")
_IMPLEMENTATION_RE = re.compile(r"#\s*implementation:\s*(?P<name>\S+)\s*$")
_COLUMN_RE = re.compile(r"(?P<key>[A-Za-z_]\w*)(?:\[(?P<group>\d+)\])?")
_IGNORED_COLUMNS = ("note", "notes", "comment")


class PageError(pytest.Collector.CollectError):
    """A page breaks the format of ``docs/conformance.md``; the message names page and line."""

    def __init__(self, page: str, line: int, message: str) -> None:
        super().__init__(f"{page}:{line}: {message}")


@dataclass(frozen=True)
class Block:
    """A fenced Python block: a session's statements, or a milestone table's setup code."""

    source: str
    line: int  # of the block's first source line in the page
    name: str | None = None  # ``# implementation: NAME`` of a milestone block
    # doctest's examples, ``lineno`` counted in the page; none for a script (no ``>>>``)
    statements: tuple[doctest.Example, ...] = ()


@dataclass(frozen=True)
class Table:
    """A pipe table: header cells and ``(line, cells)`` per body row, cells stripped."""

    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]
    line: int


@dataclass(frozen=True)
class Directive:
    """One ``<!-- conformance: ... -->`` and what it governs."""

    page: str  # relative to the docs root, "/"-separated
    label: str  # the page as messages show it
    kind: str
    slug: str
    line: int
    index: int  # position among the page's directives
    family: str | None = None
    errata: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    blocks: tuple[Block, ...] = ()
    tables: tuple[Table, ...] = ()

    @property
    def id(self) -> str:
        """The conformance id, ``PAGE::SLUG``."""
        return f"{self.page}::{self.slug}"

    @property
    def family_block(self) -> int | None:
        """The milestone block run per implementation: the unnamed one of a ``family`` table."""
        names = [b.name for b in self.blocks]
        return names.index(None) if self.family and None in names else None


@dataclass(frozen=True)
class Page:
    """A parsed page: its directives in page order."""

    name: str
    label: str
    path: Path
    directives: tuple[Directive, ...]


@dataclass(frozen=True)
class Case:
    """One pytest item: a directive, the row and block it checks, the implementation bound."""

    page: Page
    directive: Directive
    name: str  # ``SLUG[...]``
    line: int  # the line the item checks
    row: int = 0
    block: int = 0
    implementation: Implementation | None = None
    skip: str | None = None  # why it cannot run in this registry (an unknown family)

    @property
    def id(self) -> str:
        """The conformance id used by errata, expectations and the summary."""
        return f"{self.page.name}::{self.name}"


# --------------------------------------------------------------------------- cells


def strip_code(cell: str) -> str:
    """A table cell without surrounding whitespace and code-span backticks."""
    cell = cell.strip()
    return cell.strip("`").strip() if len(cell) > 1 and cell[0] == cell[-1] == "`" else cell


def split_cells(row: str) -> list[str]:
    """Split a table row into stripped cells (``|`` inside backticks and ``\\|`` do not split).

    Example:
        >>> split_cells(r"| `a | b` | c \\| d |")
        ['`a | b`', 'c | d']
    """
    row = row.strip().removeprefix("|")
    row = row if row.endswith("\\|") else row.removesuffix("|")
    cells = re.split(r"(?<!\\)\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", row)
    return [cell.replace("\\|", "|").strip() for cell in cells]


def _shape(text: str) -> tuple:
    value = ast.literal_eval(re.sub(r"torch\.Size\(\s*\[(.*?)\]\s*\)", r"(\1,)", text.strip()))
    value = (value,) if isinstance(value, int) else tuple(value)
    if all(isinstance(v, int) for v in value):
        return value
    if all(isinstance(v, (tuple, list)) for v in value):
        return tuple(_shape(repr(tuple(v))) for v in value)
    raise ValueError(f"not a shape: {text!r}")


def parse_shapes(cell: str) -> list[tuple]:
    """Parse a shape-table cell: shapes ``(2, 3)`` or ``torch.Size([2, 3])`` separated by ``;``.

    A tuple of shapes such as ``((1, 3, 20), (1, 3, 20))`` stands for a tuple of tensors.

    Example:
        >>> parse_shapes("`(5, 3, 10); ((2, 3, 20), (2, 3, 20))`")
        [(5, 3, 10), ((2, 3, 20), (2, 3, 20))]
    """
    return [_shape(strip_code(part)) for part in strip_code(cell).split(";") if part.strip()]


def milestone_columns(header: tuple[str, ...]) -> list[tuple[int, str, int]]:
    """The checked columns of a milestone table (after ``step``) as ``(column, key, group)``.

    Example:
        >>> milestone_columns(("step", "lr", "lr[1]", "note"))
        [(1, 'lr', 0), (2, 'lr', 1)]
    """
    columns = []
    for index, cell in enumerate(header[1:], start=1):
        name = strip_code(cell)
        if name.lower() in _IGNORED_COLUMNS:
            continue
        match = _COLUMN_RE.fullmatch(name)
        if not match:
            raise ValueError(f"milestone column {cell!r} is not NAME or NAME[GROUP]")
        columns.append((index, match["key"], int(match["group"] or 0)))
    return columns


# --------------------------------------------------------------------------- lexing


_TABLE_ROW = re.compile(r"[ \t]*\|.*\|[ \t]*")
_TABLE_DELIMITER = re.compile(r"[ \t]*\|?(?:[ \t]*:?-+:?[ \t]*\|)+(?:[ \t]*:?-+:?[ \t]*)?")


class TableLexer:
    """A Sybil lexer for pipe tables: one region per table, with the lexemes ``header`` (cells)
    and ``rows`` (``(line, cells)`` per body row)."""

    def __call__(self, document: Document) -> Iterator[Region]:
        lines = document.text.split("\n")
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line) + 1)
        index = 0
        while index + 1 < len(lines):
            if not (
                _TABLE_ROW.fullmatch(lines[index]) and _TABLE_DELIMITER.fullmatch(lines[index + 1])
            ):
                index += 1
                continue
            end = index + 2
            while end < len(lines) and _TABLE_ROW.fullmatch(lines[end]):
                end += 1
            rows = tuple((n + 1, tuple(split_cells(lines[n]))) for n in range(index + 2, end))
            lexemes = {"header": tuple(split_cells(lines[index])), "rows": rows, "line": index + 1}
            yield Region(offsets[index], offsets[end] - 1, lexemes=lexemes)
            index = end


_DIRECTIVES = DirectiveInHTMLCommentLexer(directive="conformance", arguments=".*?")
_FENCES = RawFencedCodeBlockLexer(
    info_pattern=re.compile(r"(?P<language>[^\n]*?)[ \t]*$\n", re.MULTILINE),
    mapping={"language": "language", "source": "source"},
)
_DOCTESTS = DocTestStringParser()


def parse_page(name: str, text: str, label: str | None = None, path: Path | None = None) -> Page:
    """Parse one page's text.

    Args:
        name: the page relative to the docs root (``reference/losses.md``).
        text: the Markdown source.
        label: how messages name the page (default: ``name``).
        path: where the page lives (default: ``name``).

    Raises:
        PageError: for an unknown kind or option, a missing or duplicate id, a directive not
            followed by what its kind needs, or a malformed table.
    """
    label = label or name
    document = Document(text, str(path or name))

    def line_of(position: int) -> int:
        return text.count("\n", 0, position) + 1

    fences = list(_FENCES(document))

    def outside(region: Region) -> bool:
        return not any(f.start < region.start < f.end for f in fences)

    directives = [d for d in _DIRECTIVES(document) if outside(d)]
    tables = [t for t in TableLexer()(document) if outside(t)]
    parsed: list[Directive] = []
    for number, region in enumerate(directives):
        limit = directives[number + 1].start if number + 1 < len(directives) else len(text)
        own_fences = [f for f in fences if region.end <= f.start < limit]
        own_tables = [t for t in tables if region.end <= t.start < limit]
        line = line_of(region.start)

        def fail(message: str, at: int = line) -> PageError:
            return PageError(label, at, message)

        words = f"{region.lexemes['arguments']} {region.lexemes['source']}".split()
        if not words:
            raise fail("conformance directive without a kind")
        kind, options = words[0], {}
        if kind not in KINDS:
            raise fail(f"unknown directive kind {kind!r}; expected one of {KINDS}")
        for word in words[1:]:
            key, equals, value = word.partition("=")
            if not equals or not value:
                raise fail(f"expected KEY=VALUE in the directive, got {word!r}")
            if key not in _OPTIONS:
                raise fail(f"unknown directive option {key!r}; expected one of {_OPTIONS}")
            if key in options:
                raise fail(f"directive option {key!r} given twice")
            options[key] = value
        slug = options.get("id", "consistency" if kind == "errata" else None)
        if slug is None:
            raise fail(f"{kind} directive without id=")
        if not _SLUG_RE.fullmatch(slug):
            raise fail(f"id {slug!r} must be letters, digits, '-', '_' or '.'")
        if clash := next((d for d in parsed if d.slug == slug), None):
            raise fail(f"duplicate id {slug!r} (first used on line {clash.line})")
        blocks, found_tables = _governed(kind, own_fences, own_tables, fail, line_of, label)
        directive = Directive(
            page=name,
            label=label,
            kind=kind,
            slug=slug,
            line=line,
            index=number,
            family=options.get("family"),
            errata=tuple(e for e in options.get("erratum", "").split(",") if e),
            requires=tuple(r for r in options.get("requires", "").split(",") if r),
            blocks=blocks,
            tables=found_tables,
        )
        _check_table(directive, fail)
        parsed.append(directive)
    return Page(name, label, Path(path or name), tuple(parsed))


def _governed(
    kind: str,
    fences: list[Region],
    tables: list[Region],
    fail: Callable[..., PageError],
    line_of: Callable[[int], int],
    label: str,
) -> tuple[tuple[Block, ...], tuple[Table, ...]]:
    """The blocks and tables a directive of ``kind`` takes from what follows it."""

    def table(region: Region) -> Table:
        return Table(region.lexemes["header"], region.lexemes["rows"], region.lexemes["line"])

    def block(fence: Region) -> Block:
        source = fence.lexemes["source"]
        line = line_of(fence.start + source.offset)
        language = str(fence.lexemes["language"]).strip().split(" ")[0]
        if language not in _PYTHON:
            raise fail(f"expected a python code block, found {language or 'no'!r}", line - 1)
        text = str(source)
        if kind == "milestones":
            match = _IMPLEMENTATION_RE.match(text.lstrip("\n").split("\n", 1)[0])
            return Block(text, line, name=match["name"] if match else None)
        if not text.lstrip().startswith(">>>"):
            return Block(text, line)
        statements = tuple(r.parsed for r in _DOCTESTS(text, f"{label}:{line}"))
        for statement in statements:
            statement.lineno += line
        return Block(text, line, statements=statements)

    if kind == "session":
        if not fences or (tables and tables[0].start < fences[0].start):
            raise fail("session directive not followed by a code block")
        return (block(fences[0]),), ()
    if not tables:
        raise fail(f"{kind} directive not followed by a table")
    if kind == "errata":
        return (), tuple(table(t) for t in tables)
    if kind == "shapes":
        return (), (table(tables[0]),)
    blocks = tuple(block(f) for f in fences if f.start < tables[0].start)
    if not blocks:
        raise fail("milestones directive needs a python block before its table")
    return blocks, (table(tables[0]),)


def _check_table(directive: Directive, fail: Callable[..., PageError]) -> None:
    """Reject a malformed shapes or milestones table when the page is read."""
    if directive.kind not in ("shapes", "milestones"):
        return
    table = directive.tables[0]
    header = [strip_code(h).lower() for h in table.header]
    if not table.rows:
        raise fail("the table has no rows", table.line)
    if directive.kind == "shapes":
        if missing := [c for c in ("module", "input", "output") if c not in header]:
            raise fail(f"shape table header lacks {missing}; got {list(table.header)}", table.line)
        for line, cells in table.rows:
            values = dict(zip(header, cells, strict=False))
            try:
                parse_shapes(values.get("input", "")), parse_shapes(values.get("output", ""))
            except (ValueError, SyntaxError) as error:
                raise fail(f"unreadable shape: {error}", line) from None
        return
    if header[0] != "step":
        raise fail(f"the first column of a milestone table must be 'step', got {table.header[0]!r}")
    try:
        milestone_columns(table.header)
    except ValueError as error:
        raise fail(str(error), table.line) from None
    names = [b.name for b in directive.blocks]
    if directive.family and names.count(None) != 1:
        raise fail("a family table needs exactly one block without '# implementation: NAME'")
    if not directive.family and len(names) > 1 and (None in names or len(set(names)) < len(names)):
        raise fail("several milestone blocks need distinct '# implementation: NAME' first lines")
    previous = -1
    for line, cells in table.rows:
        try:
            step = int(strip_code(cells[0]))
        except ValueError:
            raise fail(f"step {cells[0]!r} is not an integer", line) from None
        if step <= previous:
            raise fail(f"steps must increase: {step} after {previous}", line)
        previous = step


@functools.lru_cache(maxsize=256)
def _parse_cached(name: str, text: str, label: str, path: str) -> Page:
    return parse_page(name, text, label, Path(path))


def load_page(path: Path, root: Path, text: str | None = None) -> Page:
    """Parse the page at ``path`` (cached on its text: each page is parsed once per process).

    Args:
        path: the page file.
        root: the docs root; the page's name is ``path`` relative to it.
        text: the page's text, if already read.
    """
    try:
        label = path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        label = str(path.resolve())
    text = path.read_text(encoding="utf-8") if text is None else text
    return _parse_cached(path.relative_to(root).as_posix(), text, label, str(path))


def page_files(root: Path, selected: frozenset[str] = frozenset()) -> list[Path]:
    """The Markdown pages under ``root`` (those named in ``selected``, if given), sorted."""
    pages = sorted(root.rglob("*.md"), key=lambda p: p.relative_to(root).as_posix())
    return [p for p in pages if not selected or p.relative_to(root).as_posix() in selected]


# --------------------------------------------------------------------------- items


def cases(page: Page, directive: Directive, registry: Registry, strict: bool) -> list[Case]:
    """The items a directive expands to, in page order.

    A ``family`` directive runs once per implementation of the family taking part in its kind
    (a milestone table: its unnamed block does, its named blocks run once each). A family with
    no such implementation here gives items that skip, or, when ``strict``, a collection error.
    """

    def suffix(*parts: str | None) -> str:
        kept = [p for p in parts if p]
        return f"[{'-'.join(kept)}]" if kept else ""

    implementations: list[Implementation | None] = [None]
    skip = None
    if directive.family is not None:
        implementations = list(registry.implementations(directive.family, directive.kind))
        if not implementations:
            known = directive.family in registry.families
            skip = (
                f"family {directive.family!r} has no implementation for {directive.kind} here"
                if known
                else f"family {directive.family!r} is not registered here (known: "
                f"{', '.join(sorted(registry.families))}); load its plugin with --conformance-impl"
            )
            if strict:
                raise PageError(directive.label, directive.line, skip)
            implementations = [None]

    def case(name: str, line: int, **kwargs: object) -> Case:
        return Case(page, directive, directive.slug + name, line, skip=skip, **kwargs)

    if directive.kind == "errata":
        return [case("", directive.line)]
    if directive.kind == "session":
        line = directive.blocks[0].line
        return [case(suffix(i and i.name), line, implementation=i) for i in implementations]
    out = []
    for row, (line, cells) in enumerate(directive.tables[0].rows):
        if directive.kind == "shapes":
            out += [
                case(suffix(f"row={row + 1}", i and i.name), line, row=row, implementation=i)
                for i in implementations
            ]
            continue
        step = f"step={strip_code(cells[0])}"
        for index, block in enumerate(directive.blocks):
            if index == directive.family_block:
                out += [
                    case(suffix(step, i and i.name), line, row=row, block=index, implementation=i)
                    for i in implementations
                ]
            else:
                shown = block.name if len(directive.blocks) > 1 else None
                out.append(case(suffix(step, shown), line, row=row, block=index))
    return out


class ConformanceParser:
    """The Sybil parser: one zero-width region per item of every directive of a page.

    Args:
        root: the docs root (page names are relative to it).
        registry: the families and implementations items expand over.
        evaluator: the Sybil evaluator of every region.
        strict: an unknown family is a collection error instead of skipped items.
    """

    def __init__(
        self, root: Path, registry: Registry, evaluator: Callable, *, strict: bool = False
    ) -> None:
        self.root, self.registry, self.evaluator, self.strict = root, registry, evaluator, strict

    def __call__(self, document: Document) -> Iterator[Region]:
        page = load_page(Path(document.path), self.root, document.text)
        starts = [0]
        for line in document.text.split("\n"):
            starts.append(starts[-1] + len(line) + 1)
        last = -1
        for directive in page.directives:
            for case in cases(page, directive, self.registry, self.strict):
                last = max(starts[case.line - 1], last + 1)
                yield Region(last, last, parsed=case, evaluator=self.evaluator)


def requirement_problem(requires: tuple[str, ...]) -> str | None:
    """Why an example cannot run here (``None`` if it can), from ``requires=`` entries.

    An entry is ``cuda``, ``triton-interpreter`` (Triton installed and ``TRITON_INTERPRET=1``),
    or a requirement such as ``torch>=2.6`` or ``triton``, read by ``packaging`` and checked
    against the installed distribution (pre-releases count).

    Example:
        >>> requirement_problem(("torch>=1.0",)) is None
        True
        >>> requirement_problem(("torch<1.0",)).startswith("needs torch<1.0, this is torch")
        True
    """
    for text in requires:
        if text.strip() == "cuda":
            import torch

            if not torch.cuda.is_available():
                return "needs CUDA, which this machine does not have"
            continue
        if text.strip() == "triton-interpreter":
            from torchkit.backend import interpreter_enabled, triton_available

            if not (triton_available() and interpreter_enabled()):
                return "needs Triton's interpreter: triton installed and TRITON_INTERPRET=1"
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            return f"unreadable requirement {text!r}"
        try:
            have = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            return f"needs {text}, which is not installed"
        if not requirement.specifier.contains(have, prereleases=True):
            return f"needs {text}, this is {requirement.name} {have}"
    return None
