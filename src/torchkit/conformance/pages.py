"""The conformance examples of Markdown pages, as Sybil regions.

Sybil's Markdown lexers find the ``<!-- conformance: ... -->`` directives and the fenced code
blocks, and its doctest parser splits a ``>>>`` session into statements; pipe tables are read
here. :func:`parse_page` binds each directive to what it governs (a :class:`Directive`), and
:class:`ConformanceParser` yields one zero-width region per pytest item (a :class:`Case`: a table
row, milestone block and implementation) at the start of the line the item checks, items of
one line in page order; :class:`PageDocument` reports each at that line, column 1.
"""

from __future__ import annotations

import ast
import doctest
import functools
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sybil import Document, Example, Region
from sybil.parsers.abstract.doctest import DocTestStringParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

from torchkit.conformance.registry import KINDS, Implementation, Registry
from torchkit.conformance.values import parse_figure

DIRECTIVE_KINDS = (*KINDS, "errata")
_OPTIONS = ("id", "family", "erratum", "requires")
_SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_IMPLEMENTATION_RE = re.compile(r"#\s*implementation:\s*(?P<name>\S+)\s*$")
_COLUMN_RE = re.compile(r"(?P<key>[A-Za-z_]\w*)(?:\[(?P<group>\d+)\])?")
_ROW = r"[ \t]*\|.*\|[ \t]*(?:\n|$)"
_TABLE_RE = re.compile(
    rf"^{_ROW}[ \t]*\|?(?:[ \t]*:?-+:?[ \t]*\|)+(?:[ \t]*:?-+:?[ \t]*)?(?:\n|$)(?:{_ROW})*", re.M
)
_DIRECTIVES = DirectiveInHTMLCommentLexer(directive="conformance")
_FENCES = FencedCodeBlockLexer(language=r"[^\n]*?")
_DOCTESTS = DocTestStringParser()
UNCHECKED = ("", "-", "—")  # milestone cells that check nothing


class PageError(pytest.Collector.CollectError):
    """A page breaks the format of ``docs/conformance.md``; the message names page and line."""

    def __init__(self, page: str, line: int, message: str) -> None:
        super().__init__(f"{page}:{line}: {message}")


@dataclass(frozen=True)
class Block:
    """A fenced Python block; ``statements`` (numbered in the page) are none for a script."""

    source: str
    line: int  # of its first source line
    name: str | None = None  # ``# implementation: NAME`` of a milestone block
    statements: tuple[doctest.Example, ...] = ()


@dataclass(frozen=True)
class Table:
    """A pipe table: header cells, ``(line, cells)`` per body row, and its first line."""

    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]
    line: int

    @property
    def columns(self) -> list[str]:
        """The header's names, lower case."""
        return [strip_code(cell).lower() for cell in self.header]


@dataclass(frozen=True)
class Directive:
    """One ``<!-- conformance: ... -->`` and what it governs."""

    kind: str
    slug: str
    line: int
    index: int  # among the page's directives
    family: str | None = None
    errata: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    blocks: tuple[Block, ...] = ()
    tables: tuple[Table, ...] = ()

    @property
    def family_block(self) -> int | None:
        """The milestone block run per implementation: the unnamed one of a ``family`` table."""
        names = [b.name for b in self.blocks]
        return names.index(None) if self.family and None in names else None


@dataclass(frozen=True)
class Page:
    """A parsed page: its name below the docs root, how messages name it, where it lives."""

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
    skip: str | None = None  # why it cannot run with this registry (an unknown family)

    @property
    def id(self) -> str:
        """The conformance id of errata, expectations and the summary."""
        return f"{self.page.name}::{self.name}"

    @property
    def implementation_name(self) -> str:
        """What the item holds to the page: the implementation bound, else the milestone block's
        ``# implementation: NAME`` (``""`` for neither)."""
        if self.implementation is not None:
            return self.implementation.name
        blocks = self.directive.blocks if self.directive.kind == "milestones" else ()
        return (blocks[self.block].name or "") if blocks else ""


def strip_code(cell: str) -> str:
    """A table cell without surrounding whitespace and code-span backticks."""
    cell = cell.strip()
    return cell.strip("`").strip() if len(cell) > 1 and cell[0] == cell[-1] == "`" else cell


def split_cells(row: str) -> list[str]:
    """A table row's stripped cells (``|`` inside backticks and ``\\|`` do not split)."""
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
    """A shape-table cell's shapes (``(2, 3)``, ``torch.Size([2, 3])``, separated by ``;``); a
    tuple of shapes such as ``((1, 3, 20), (1, 3, 20))`` stands for a tuple of tensors."""
    return [_shape(strip_code(part)) for part in strip_code(cell).split(";") if part.strip()]


def milestone_columns(header: tuple[str, ...]) -> list[tuple[int, str, int]]:
    """The checked columns of a milestone table (after ``step``) as ``(column, key, group)``."""
    columns = []
    for index, cell in enumerate(header[1:], start=1):
        name = strip_code(cell)
        if name.lower() in ("note", "notes", "comment"):
            continue
        if not (match := _COLUMN_RE.fullmatch(name)):
            raise ValueError(f"milestone column {cell!r} is not NAME or NAME[GROUP]")
        columns.append((index, match["key"], int(match["group"] or 0)))
    return columns


def _tables(text: str) -> Iterator[Region]:
    """The pipe tables of a page, as regions whose ``parsed`` is a :class:`Table`."""
    for match in _TABLE_RE.finditer(text):
        first = text.count("\n", 0, match.start()) + 1
        lines = match.group().rstrip("\n").split("\n")
        rows = tuple((first + n, tuple(split_cells(lines[n]))) for n in range(2, len(lines)))
        table = Table(tuple(split_cells(lines[0])), rows, first)
        yield Region(match.start(), match.end(), parsed=table)


def parse_page(name: str, text: str, label: str | None = None, path: Path | None = None) -> Page:
    """Parse one page: ``name`` relative to the docs root, ``label`` as messages name it (default:
    ``name``), found at ``path``; ``PageError`` for a page that breaks the format."""
    label, document = label or name, Document(text, str(path or name))
    fences = list(_FENCES(document))

    def outside(region: Region) -> bool:
        return not any(f.start < region.start < f.end for f in fences)

    regions = [d for d in _DIRECTIVES(document) if outside(d)]
    tables = [t for t in _tables(text) if outside(t)]
    directives: list[Directive] = []
    for index, region in enumerate(regions):
        end = regions[index + 1].start if index + 1 < len(regions) else len(text)
        governed = sorted(
            (r for r in fences + tables if region.end <= r.start < end), key=lambda r: r.start
        )
        directives.append(_directive(label, text, region, governed, directives))
    return Page(name, label, Path(path or name), tuple(directives))


def _directive(
    label: str, text: str, region: Region, governed: list[Region], before: list[Directive]
) -> Directive:
    """The directive at ``region``, with the fences and tables up to the next one."""
    line = text.count("\n", 0, region.start) + 1

    def fail(message: str, at: int = line) -> PageError:
        return PageError(label, at, message)

    words = f"{region.lexemes['arguments']} {region.lexemes['source']}".split()
    if not words:
        raise fail("conformance directive without a kind")
    kind, options = words[0], {}
    if kind not in DIRECTIVE_KINDS:
        raise fail(f"unknown directive kind {kind!r}; expected one of {DIRECTIVE_KINDS}")
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
    if clash := next((d for d in before if d.slug == slug), None):
        raise fail(f"duplicate id {slug!r} (first used on line {clash.line})")
    tables = tuple(r.parsed for r in governed if isinstance(r.parsed, Table))
    fences = list(itertools.takewhile(lambda r: not isinstance(r.parsed, Table), governed))
    blocks: tuple[Block, ...] = ()
    if kind == "session":
        if not fences:  # nothing, or a table, before the first code block
            raise fail("session directive not followed by a code block")
        blocks, tables = (_block(fences[0], text, label),), ()
    elif not tables:
        raise fail(f"{kind} directive not followed by a table")
    elif kind == "milestones":
        blocks = tuple(_block(f, text, label) for f in fences)
        if not blocks:
            raise fail("milestones directive needs a python block before its table")
    tables, family = tables if kind == "errata" else tables[:1], options.get("family")
    errata, requires = (
        tuple(v for v in options.get(k, "").split(",") if v) for k in ("erratum", "requires")
    )
    directive = Directive(kind, slug, line, len(before), family, errata, requires, blocks, tables)
    if kind in ("shapes", "milestones"):
        _check_table(directive, fail)
    return directive


def _block(fence: Region, text: str, label: str) -> Block:
    source = fence.lexemes["source"]
    line = text.count("\n", 0, fence.start + source.offset) + 1
    language = str(fence.lexemes["language"]).strip().split(" ")[0]
    if language not in ("python", "py", "pycon", "python3"):
        message = f"expected a python code block, found {language or 'no'!r}"
        raise PageError(label, line - 1, message)
    source, statements = str(source), ()
    named = _IMPLEMENTATION_RE.match(source.lstrip("\n").split("\n", 1)[0])
    if source.lstrip().startswith(">>>"):
        statements = tuple(r.parsed for r in _DOCTESTS(source, f"{label}:{line}"))
        for statement in statements:
            statement.lineno += line
    return Block(source, line, named["name"] if named else None, statements)


def _check_table(directive: Directive, fail: Callable[..., PageError]) -> None:
    """Reject a malformed shapes or milestones table when the page is read."""
    table = directive.tables[0]
    if not table.rows:
        raise fail("the table has no rows", table.line)
    if directive.kind == "shapes":
        if missing := [c for c in ("module", "input", "output") if c not in table.columns]:
            raise fail(f"shape table header lacks {missing}; got {list(table.header)}", table.line)
        for line, cells in table.rows:
            values = dict(zip(table.columns, cells, strict=False))
            try:
                parse_shapes(values.get("input", "")), parse_shapes(values.get("output", ""))
            except (ValueError, SyntaxError) as error:
                raise fail(f"unreadable shape: {error}", line) from None
        return
    if table.columns[0] != "step":
        raise fail(f"the first column of a milestone table must be 'step', got {table.header[0]!r}")
    try:
        columns = milestone_columns(table.header)
    except ValueError as error:
        raise fail(str(error), table.line) from None
    names = [b.name for b in directive.blocks]
    if dotted := next((n for n in names if n and "." in n), None):
        raise fail(f"block name {dotted!r} has a dot: dotted names are registered implementations'")
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
        for index, _, _ in columns:
            cell = strip_code(cells[index]) if index < len(cells) else ""
            if cell in UNCHECKED:
                continue
            try:
                parse_figure(cell)
            except ValueError:
                raise fail(f"{table.header[index]} {cell!r} is not a number", line) from None


@functools.lru_cache(maxsize=256)
def _parse_cached(name: str, text: str, label: str, path: str) -> Page:
    return parse_page(name, text, label, Path(path))


def load_page(path: Path, root: Path, text: str | None = None) -> Page:
    """The page at ``path`` below ``root``, parsed once per process and text."""
    try:
        label = path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        label = str(path.resolve())
    text = path.read_text(encoding="utf-8") if text is None else text
    return _parse_cached(path.relative_to(root).as_posix(), text, label, str(path))


def page_files(root: Path) -> list[Path]:
    """The Markdown pages under ``root``, sorted by their name."""
    return sorted(root.rglob("*.md"), key=lambda p: p.relative_to(root).as_posix())


def cases(page: Page, directive: Directive, registry: Registry, strict: bool) -> list[Case]:
    """A directive's items in page order: one per table row, milestone block and implementation
    of its family. A family with no implementation here skips the items that need one (a
    table's named blocks run) or, when ``strict``, is a collection error."""
    implementations: list[Implementation | None] = [None]
    skip = None
    if directive.family is not None:
        implementations = [*registry.implementations(directive.family, directive.kind)]
        if not implementations:
            skip = (
                f"family {directive.family!r} has no implementation for {directive.kind} here"
                if directive.family in registry.families
                else f"family {directive.family!r} is not registered here (known: "
                f"{', '.join(sorted(registry.families))}); load its plugin with --conformance-impl"
            )
            if strict:
                raise PageError(page.label, directive.line, skip)
            implementations = [None]

    def case(line: int, *parts: str | None, block: int = 0, **fields: object) -> Case:
        suffix = "-".join(p for p in parts if p)
        name = f"{directive.slug}[{suffix}]" if suffix else directive.slug
        named = directive.kind == "milestones" and block != directive.family_block
        return Case(
            page, directive, name, line, block=block, skip=None if named else skip, **fields
        )

    if directive.kind == "errata":
        return [case(directive.line)]
    if directive.kind == "session":
        line = directive.blocks[0].line
        return [case(line, i and i.name, implementation=i) for i in implementations]
    out = []
    for row, (line, cells) in enumerate(directive.tables[0].rows):
        if directive.kind == "shapes":
            out += [
                case(line, f"row={row + 1}", i and i.name, row=row, implementation=i)
                for i in implementations
            ]
            continue
        step = f"step={strip_code(cells[0])}"
        for index, block in enumerate(directive.blocks):
            bound = implementations if index == directive.family_block else [None]
            shown = block.name if len(directive.blocks) > 1 else None
            for i in bound:
                out.append(
                    case(line, step, shown, i and i.name, row=row, block=index, implementation=i)
                )
    return out


class _ItemRegion(Region):
    """A zero-width region; regions at one position (the items of a line) keep page order."""

    def __init__(self, start: int, order: int, case: Case, evaluator: Callable) -> None:
        super().__init__(start, start, parsed=case, evaluator=evaluator)
        self.order = order

    def __lt__(self, other: _ItemRegion) -> bool:
        return self.order < other.order


class PageDocument(Document):
    """Sybil's document of a page, with each example at the line and column of its region
    (Sybil's own count is off for the second region of a line)."""

    def examples(self) -> Iterator[Example]:
        line, place = 1, 0
        for _, region in self.regions:
            line += self.text.count("\n", place, region.start)
            place, column = region.start, region.start - self.text.rfind("\n", 0, region.start)
            yield Example(self, line, column, region, self.namespace)


class ConformanceParser:
    """The Sybil parser: a region per item of the pages below ``root``, expanded over the
    ``registry``'s implementations and checked by ``evaluator``; with ``strict``, a family with no
    implementation is a collection error."""

    def __init__(
        self, root: Path, registry: Registry, evaluator: Callable, *, strict: bool = False
    ) -> None:
        self.root, self.registry, self.evaluator, self.strict = root, registry, evaluator, strict

    def __call__(self, document: Document) -> Iterator[Region]:
        page = load_page(Path(document.path), self.root, document.text)
        starts = [0] + [m.end() for m in re.finditer("\n", document.text)]  # of each line
        found = (c for d in page.directives for c in cases(page, d, self.registry, self.strict))
        for order, case in enumerate(found):
            yield _ItemRegion(starts[case.line - 1], order, case, self.evaluator)
