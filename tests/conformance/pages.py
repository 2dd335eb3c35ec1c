"""Read the testable examples out of the Markdown pages under ``docs/``.

Sybil does the Markdown work: :class:`sybil.Document` holds a page, Sybil's Markdown lexers
find the ``<!-- conformance: ... -->`` directives (``DirectiveInHTMLCommentLexer``) and the
fenced code blocks (``RawFencedCodeBlockLexer``), and Sybil's doctest parser splits a ``>>>``
session into statements. This module adds a lexer for pipe tables and the
:class:`ConformanceParser`, which binds each directive to the block(s) or table that follow
it and turns it into one :class:`Example` (a Sybil region whose ``parsed`` is the example).

Pages are parsed once per process (:func:`load_page` caches on the page's text). A malformed
directive raises :class:`PageError`, which names the page and line.

Example:
    >>> page = parse_page("demo.md", '''
    ... <!-- conformance: session id=relu -->
    ... ```python
    ... >>> torch.relu(torch.tensor([-1.0, 2.0]))
    ... tensor([0., 2.])
    ... ```
    ... ''')
    >>> [(e.kind, e.slug, e.line) for e in page.examples]
    [('session', 'relu', 2)]
"""

from __future__ import annotations

import doctest
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sybil import Document, Region
from sybil.parsers.abstract.doctest import DocTestStringParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, RawFencedCodeBlockLexer

__all__ = [
    "KINDS",
    "Block",
    "ConformanceParser",
    "Example",
    "Page",
    "PageError",
    "Statement",
    "Table",
    "TableLexer",
    "display_path",
    "load_page",
    "page_files",
    "parse_page",
]

KINDS = ("session", "shapes", "milestones", "errata")
_OPTIONS = ("id", "family", "erratum", "requires")
_SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_PYTHON_LANGUAGES = ("python", "py", "pycon", "python3")
_IMPLEMENTATION_RE = re.compile(r"#\s*implementation:\s*(?P<name>\S+)\s*$")


class PageError(Exception):
    """A page breaks the conformance format; the message names the page and line."""

    def __init__(self, page: str, line: int, message: str) -> None:
        super().__init__(f"{page}:{line}: {message}")
        self.page = page
        self.line = line


# --------------------------------------------------------------------------- parsed forms


@dataclass(frozen=True)
class Statement:
    """One ``>>>`` statement of a session, with its expected output or exception."""

    source: str
    want: str
    exc_msg: str | None
    line: int  # 1-based line of the ``>>>`` in the page
    skip: bool = False


@dataclass(frozen=True)
class Block:
    """A fenced Python block: a session's statements, or a milestone table's setup code."""

    source: str
    line: int  # 1-based line of the block's first source line in the page
    name: str | None = None  # ``# implementation: NAME`` of a milestone block
    statements: tuple[Statement, ...] = ()  # empty for a script (no ``>>>`` prompts)


@dataclass(frozen=True)
class Table:
    """A pipe table: header cells and ``(line, cells)`` per body row, cells stripped."""

    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]
    line: int


@dataclass(frozen=True)
class Example:
    """One directive and what it governs; the items of a page are generated from these."""

    page: str  # path relative to the docs root, with "/" separators
    kind: str
    label: str  # the page as messages show it (relative to the working directory)
    slug: str
    line: int
    family: str | None = None
    errata: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    blocks: tuple[Block, ...] = ()
    tables: tuple[Table, ...] = ()

    @property
    def id(self) -> str:
        """The stable conformance id, ``PAGE::SLUG``."""
        return f"{self.page}::{self.slug}"


@dataclass(frozen=True)
class Page:
    """A parsed page: its examples in page order."""

    path: Path
    name: str  # relative to the docs root, with "/" separators
    label: str  # as messages show it: relative to the working directory where possible
    examples: tuple[Example, ...] = field(default=())


# --------------------------------------------------------------------------- lexers

_TABLE_ROW = re.compile(r"^[ \t]*\|.*\|[ \t]*$", re.MULTILINE)
_TABLE_DELIMITER = re.compile(r"^[ \t]*\|?(?:[ \t]*:?-+:?[ \t]*\|)+(?:[ \t]*:?-+:?[ \t]*)?$")


class TableLexer:
    """A Sybil lexer for GitHub-style pipe tables (header row, delimiter row, body rows).

    Yields one :class:`sybil.Region` per table with the lexemes ``header`` (a tuple of cell
    texts) and ``rows`` (a tuple of ``(line, cells)``). Cells are split on ``|`` outside code
    spans; ``\\|`` is a literal bar.
    """

    def __call__(self, document: Document) -> Iterator[Region]:
        text = document.text
        lines = text.splitlines(keepends=True)
        offsets = [0]
        for line in lines:
            offsets.append(offsets[-1] + len(line))
        index = 0
        while index + 1 < len(lines):
            header, delimiter = lines[index].rstrip("\n"), lines[index + 1].rstrip("\n")
            if not (_TABLE_ROW.match(header) and _TABLE_DELIMITER.match(delimiter)):
                index += 1
                continue
            end = index + 2
            rows = []
            while end < len(lines) and _TABLE_ROW.match(lines[end].rstrip("\n")):
                rows.append((end + 1, tuple(split_cells(lines[end]))))
                end += 1
            yield Region(
                offsets[index],
                offsets[end] - (1 if lines[end - 1].endswith("\n") else 0),
                lexemes={"header": tuple(split_cells(header)), "rows": tuple(rows)},
            )
            index = end


def split_cells(row: str) -> list[str]:
    """Split a table row into stripped cells (``|`` inside backticks does not split).

    Example:
        >>> split_cells("| `a | b` | c |")
        ['`a | b`', 'c']
    """
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    cells, current, in_code, i = [], [], False, 0
    while i < len(row):
        char = row[i]
        if char == "\\" and i + 1 < len(row) and row[i + 1] == "|":
            current.append("|")
            i += 2
            continue
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    cells.append("".join(current).strip())
    return cells


# --------------------------------------------------------------------------- the parser


class ConformanceParser:
    """A Sybil parser yielding one region per ``<!-- conformance: ... -->`` directive.

    Directives, fences and tables inside another fenced block are ignored (pages may show the
    format itself). A directive governs what follows it up to the next directive: ``session``
    takes the first fenced block, ``shapes`` the first table, ``milestones`` the fenced blocks
    before the first table and that table, ``errata`` every table.

    Args:
        name: the page's name relative to the docs root, used in ids.
        label: the page as messages show it (default: ``name``).
    """

    def __init__(self, name: str, label: str | None = None) -> None:
        self.name = name
        self.label = label or name
        self.directives = DirectiveInHTMLCommentLexer(directive="conformance", arguments=".*?")
        self.fences = RawFencedCodeBlockLexer(
            info_pattern=re.compile(r"(?P<language>[^\n]*?)[ \t]*$\n", re.MULTILINE),
            mapping={"language": "language", "source": "source"},
        )
        self.tables = TableLexer()
        self.doctests = DocTestStringParser()

    def __call__(self, document: Document) -> Iterable[Region]:
        fences = sorted(self.fences(document), key=lambda r: r.start)

        def outside_fences(region: Region) -> bool:
            return not any(f.start < region.start < f.end for f in fences)

        directives = [d for d in self.directives(document) if outside_fences(d)]
        tables = [t for t in self.tables(document) if outside_fences(t)]
        seen: dict[str, int] = {}
        for number, directive in enumerate(directives):
            limit = (
                directives[number + 1].start if number + 1 < len(directives) else len(document.text)
            )
            own_fences = [f for f in fences if directive.end <= f.start < limit]
            own_tables = [t for t in tables if directive.end <= t.start < limit]
            example, end = self.example(document, directive, own_fences, own_tables)
            if example.slug in seen:
                raise PageError(
                    self.label,
                    example.line,
                    f"duplicate id {example.slug!r} (first used on line {seen[example.slug]})",
                )
            seen[example.slug] = example.line
            yield Region(directive.start, end, parsed=example)

    def line(self, document: Document, position: int) -> int:
        return document.text.count("\n", 0, position) + 1

    def example(
        self, document: Document, directive: Region, fences: list[Region], tables: list[Region]
    ) -> tuple[Example, int]:
        line = self.line(document, directive.start)
        words = (
            str(directive.lexemes["arguments"]) + " " + str(directive.lexemes["source"])
        ).split()
        if not words:
            raise PageError(self.label, line, "conformance directive without a kind")
        kind, options = words[0], {}
        if kind not in KINDS:
            raise PageError(
                self.label, line, f"unknown directive kind {kind!r}; expected one of {KINDS}"
            )
        for word in words[1:]:
            key, equals, value = word.partition("=")
            if not equals or not value:
                raise PageError(
                    self.label, line, f"expected KEY=VALUE in the directive, got {word!r}"
                )
            if key not in _OPTIONS:
                raise PageError(
                    self.label,
                    line,
                    f"unknown directive option {key!r}; expected one of {_OPTIONS}",
                )
            if key in options:
                raise PageError(self.label, line, f"directive option {key!r} given twice")
            options[key] = value
        slug = options.get("id", "consistency" if kind == "errata" else None)
        if slug is None:
            raise PageError(self.label, line, f"{kind} directive without id=")
        if not _SLUG_RE.fullmatch(slug):
            raise PageError(
                self.label, line, f"id {slug!r} must be letters, digits, '-', '_' or '.'"
            )
        common = {
            "page": self.name,
            "label": self.label,
            "kind": kind,
            "slug": slug,
            "line": line,
            "family": options.get("family"),
            "errata": tuple(e for e in options.get("erratum", "").split(",") if e),
            "requires": tuple(r for r in options.get("requires", "").split(",") if r),
        }
        if kind == "session":
            if not fences:
                raise PageError(self.label, line, "session directive not followed by a code block")
            fence = fences[0]
            if tables and tables[0].start < fence.start:
                raise PageError(self.label, line, "session directive followed by a table")
            return Example(**common, blocks=(self.block(document, fence, session=True),)), fence.end
        if kind == "errata":
            if not tables:
                raise PageError(self.label, line, "errata directive not followed by a table")
            return Example(**common, tables=tuple(self.table(t) for t in tables)), tables[-1].end
        if not tables:
            raise PageError(self.label, line, f"{kind} directive not followed by a table")
        table = tables[0]
        if kind == "shapes":
            return Example(**common, tables=(self.table(table),)), table.end
        blocks = tuple(
            self.block(document, f, session=False) for f in fences if f.start < table.start
        )
        if not blocks:
            raise PageError(
                self.label, line, "milestones directive needs a python block before its table"
            )
        return Example(**common, blocks=blocks, tables=(self.table(table),)), table.end

    def block(self, document: Document, fence: Region, *, session: bool) -> Block:
        language = str(fence.lexemes["language"]).strip().split(" ")[0]
        source = fence.lexemes["source"]
        start = fence.start + source.offset
        line = self.line(document, start)
        if language not in _PYTHON_LANGUAGES:
            raise PageError(
                self.label, line - 1, f"expected a python code block, found {language or 'no'!r}"
            )
        text = str(source)
        if not session:
            first = text.lstrip("\n").split("\n", 1)[0]
            match = _IMPLEMENTATION_RE.match(first)
            return Block(text, line, name=match.group("name") if match else None)
        if not text.lstrip().startswith(">>>"):
            return Block(text, line)
        statements = []
        for region in self.doctests(text, f"{self.label}:{line}"):
            parsed: doctest.Example = region.parsed
            statements.append(
                Statement(
                    source=parsed.source,
                    want=parsed.want,
                    exc_msg=parsed.exc_msg,
                    line=line + parsed.lineno,
                    skip=bool(parsed.options.get(doctest.SKIP)),
                )
            )
        return Block(text, line, statements=tuple(statements))

    def table(self, region: Region) -> Table:
        header = region.lexemes["header"]
        rows = region.lexemes["rows"]
        return Table(tuple(header), tuple(rows), rows[0][0] - 2 if rows else 0)


# --------------------------------------------------------------------------- loading


def parse_page(name: str, text: str, path: Path | None = None, label: str | None = None) -> Page:
    """Parse one page's text into a :class:`Page`.

    Args:
        name: the page's name relative to the docs root (``reference/losses.md``).
        text: the Markdown source.
        path: where the page lives (defaults to ``name``).
        label: how messages name the page (defaults to ``name``).

    Returns:
        The page with its examples in page order.

    Raises:
        PageError: for an unknown directive kind or option, a duplicate id, or a directive
            not followed by what its kind needs.
    """
    document = Document(text, str(path or name))
    for region in ConformanceParser(name, label)(document):
        document.add(region)
    examples = tuple(region.parsed for _, region in document.regions)
    return Page(path=Path(path or name), name=name, label=label or name, examples=examples)


@functools.lru_cache(maxsize=512)
def _parse_cached(name: str, text: str, path: str, label: str) -> Page:
    return parse_page(name, text, Path(path), label)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory if it lies below it, else absolute."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def load_page(path: Path, root: Path) -> Page:
    """Read and parse ``path`` (cached on its text, so each page is parsed once per process).

    Args:
        path: the page file.
        root: the docs root; the page's name is ``path`` relative to it.
    """
    name = path.relative_to(root).as_posix()
    text = path.read_text(encoding="utf-8")
    return _parse_cached(name, text, str(path), display_path(path))


def page_files(root: Path) -> list[Path]:
    """Every Markdown page under ``root``, recursively, in a stable (sorted) order."""
    return sorted(
        (p for p in root.rglob("*.md") if p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
