"""pytest collectors and items generated from the pages under ``docs/``.

``DocsDirectory`` (node id ``docs``) yields one ``PageFile`` per Markdown page (node id
``docs/reference/losses.md``), which yields one ``ConformanceItem`` per example, table row and
implementation (``docs/reference/losses.md::cross-entropy``,
``docs/fused_conv.md::conv-shapes[row=3-torchkit.nn.FusedConv2dReLU]``). The part after
``docs/`` is the *conformance id* used by errata, expectations files and the summary.

Node ids follow the page files, so ``--dist loadfile`` sends each page to one worker, and the
order is the sorted page order, identical on every xdist worker.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conformance.expectations import Expectation
from conformance.pages import Example, Page, PageError, load_page, page_files
from conformance.registry import Implementation, ImplementationUnavailable, Registry
from conformance.runner import (
    ConformanceFailure,
    PageRuntime,
    check_requirements,
    milestone_columns,
    parse_shapes,
    strip_code,
)

__all__ = [
    "REGISTRY_KEY",
    "RUNTIMES_KEY",
    "ConformanceItem",
    "DocsDirectory",
    "PageFile",
    "Variant",
    "conformance_id",
    "variants",
]

REGISTRY_KEY = pytest.StashKey[Registry]()
EXPECTATIONS_KEY = pytest.StashKey[list[Expectation]]()
RUNTIMES_KEY = pytest.StashKey[dict[int, PageRuntime]]()
_TEST_ID_RE = re.compile(r"[\w./-]+\.md::[\w.-]+(?:\[[^\]\s`]*\])?")
_ERRATA_ID_RE = re.compile(r"[\w.-]+")


@dataclass(frozen=True)
class Variant:
    """One item of an example: its name and which row/block/implementation it runs."""

    name: str
    row: int = 0  # index of the table row (shapes, milestones)
    block: int = 0  # index of the milestone block
    implementation: Implementation | None = None


def conformance_id(page: str, name: str) -> str:
    """``PAGE::NAME``, the id used in errata, expectations and the summary."""
    return f"{page}::{name}"


def variants(example: Example, registry: Registry) -> list[Variant]:
    """The items an example expands to, in a stable order.

    Raises:
        PageError: for an unknown family, a malformed table, or ambiguous milestone blocks.
    """

    def fail(message: str, line: int | None = None) -> PageError:
        return PageError(example.label, line or example.line, message)

    if example.kind == "errata":
        return [Variant(example.slug)]
    implementations: list[Implementation | None] = [None]
    if example.family is not None:
        if example.family not in registry.families:
            raise fail(f"unknown family {example.family!r}; known: {sorted(registry.families)}")
        implementations = list(registry.implementations(example.family, example.kind))
        if not implementations:
            raise fail(f"family {example.family!r} has no implementation for {example.kind}")

    def suffix(*parts: str | None) -> str:
        kept = [p for p in parts if p]
        return f"[{'-'.join(kept)}]" if kept else ""

    def impl_name(implementation: Implementation | None) -> str | None:
        return implementation.name if implementation else None

    if example.kind == "session":
        return [
            Variant(example.slug + suffix(impl_name(i)), implementation=i) for i in implementations
        ]
    table = example.tables[0]
    if not table.rows:
        raise fail("the table has no rows", table.line)
    out: list[Variant] = []
    if example.kind == "shapes":
        header = [strip_code(h).lower() for h in table.header]
        missing = [c for c in ("module", "input", "output") if c not in header]
        if missing:
            raise fail(f"shape table header lacks {missing}; got {list(table.header)}", table.line)
        for number, (line, cells) in enumerate(table.rows, start=1):
            values = dict(zip(header, cells, strict=False))
            try:
                parse_shapes(values.get("input", ""))
                parse_shapes(values.get("output", ""))
            except (ValueError, SyntaxError) as error:
                raise fail(f"unreadable shape: {error}", line) from None
            for i in implementations:
                out.append(
                    Variant(
                        example.slug + suffix(f"row={number}", impl_name(i)),
                        row=number - 1,
                        implementation=i,
                    )
                )
        return out
    # milestones
    if strip_code(table.header[0]).lower() != "step":
        raise fail(f"the first column of a milestone table must be 'step', got {table.header[0]!r}")
    try:
        milestone_columns(table.header)
    except ValueError as error:
        raise fail(str(error), table.line) from None
    names = [b.name for b in example.blocks]
    if len(example.blocks) > 1 and (None in names or len(set(names)) != len(names)):
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
        for block_index, block in enumerate(example.blocks):
            block_name = block.name if len(example.blocks) > 1 else None
            for i in implementations:
                out.append(
                    Variant(
                        example.slug + suffix(f"step={step}", block_name, impl_name(i)),
                        row=table.rows.index((line, cells)),
                        block=block_index,
                        implementation=i,
                    )
                )
    return out


# --------------------------------------------------------------------------- nodes


class DocsDirectory(pytest.Directory):
    """The docs root: one :class:`PageFile` per Markdown page, sorted by path.

    Its node id is the root's path relative to pytest's rootdir (``docs``), or its folder name
    for a root elsewhere; a page's node id is that plus ``/`` and the page's name.
    """

    @classmethod
    def for_root(cls, parent: pytest.Collector, root: Path) -> DocsDirectory:
        try:
            nodeid = root.relative_to(parent.config.rootpath).as_posix()
        except ValueError:
            nodeid = root.name
        return cls.from_parent(parent, path=root, nodeid=nodeid)

    def collect(self) -> Iterator[PageFile]:
        for path in page_files(self.path):
            nodeid = f"{self.nodeid}/{path.relative_to(self.path).as_posix()}"
            yield PageFile.from_parent(self, path=path, nodeid=nodeid)


class PageFile(pytest.File):
    """One page; its items are its examples' variants."""

    def collect(self) -> Iterator[ConformanceItem]:
        root = self.parent.path
        page = load_page(self.path, root)
        registry = self.config.stash[REGISTRY_KEY]
        expectations = self.config.stash.get(EXPECTATIONS_KEY, [])
        for example in page.examples:
            skip_reason = check_requirements(example.requires)
            for variant in variants(example, registry):
                cls = ErrataItem if example.kind == "errata" else ConformanceItem
                item = cls.from_parent(
                    self, name=variant.name, page=page, example=example, variant=variant
                )
                if skip_reason:
                    item.add_marker(pytest.mark.skip(reason=skip_reason))
                for expectation in expectations:
                    if expectation.matches(item.conformance_id):
                        if expectation.action == "skip":
                            item.add_marker(pytest.mark.skip(reason=expectation.reason))
                        else:
                            item.add_marker(pytest.mark.xfail(reason=expectation.reason))
                        break
                yield item

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> str:
        if isinstance(excinfo.value, PageError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class ConformanceItem(pytest.Item):
    """One example variant: a session, a shape-table row or a milestone-table row."""

    def __init__(self, *, page: Page, example: Example, variant: Variant, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.page = page
        self.example = example
        self.variant = variant
        self.conformance_id = conformance_id(page.name, variant.name)
        self.user_properties += [
            ("conformance_page", page.name),
            ("conformance_id", self.conformance_id),
            ("conformance_errata", ",".join(example.errata)),
            ("conformance_impl", variant.implementation.name if variant.implementation else ""),
        ]
        if example.kind != "errata":
            self.add_marker(getattr(pytest.mark, f"conformance_{example.kind}"))

    def _runtime(self) -> PageRuntime:
        runtimes = self.config.stash.setdefault(RUNTIMES_KEY, {})
        runtime = runtimes.get(id(self.page))
        if runtime is None or runtime.page is not self.page:
            runtime = PageRuntime(self.page, self.config.stash[REGISTRY_KEY])
            runtimes[id(self.page)] = runtime
        return runtime

    def runtest(self) -> None:
        runtime = self._runtime()
        variant, example = self.variant, self.example
        if example.kind == "session":
            runtime.run_session(example, variant.implementation)
        elif example.kind == "shapes":
            runtime.run_shape_row(example, variant.row, variant.implementation)
        else:
            runtime.run_milestone_row(example, variant.row, variant.block, variant.implementation)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        if isinstance(excinfo.value, (ConformanceFailure, ImplementationUnavailable)):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        # Not a suffix of the node id, so pytest shows the node id as it is (it would turn the
        # dots of a suffix into "::"); failure headlines show this text.
        return (
            self.path,
            self.example.line - 1,
            f"{self.nodeid} (line {self.example.line})",
        )


@dataclass
class _ErrataRow:
    erratum: str
    tests: list[str] = field(default_factory=list)
    line: int = 0


class ErrataItem(ConformanceItem):
    """The errata file agrees with the pages: every erratum names existing tests, every
    ``erratum=ID`` used by an example is in an errata table, and erratum ids are unique."""

    def runtest(self) -> None:
        root = self.parent.parent.path
        registry = self.config.stash[REGISTRY_KEY]
        examples: list[Example] = []
        item_ids: set[str] = set()
        errata: dict[str, _ErrataRow] = {}
        problems: list[str] = []
        for path in page_files(root):
            try:
                page = load_page(path, root)
            except PageError:
                continue  # reported as that page's collection error
            for example in page.examples:
                examples.append(example)
                with contextlib.suppress(PageError):  # reported by that page's collection
                    item_ids.update(
                        conformance_id(page.name, v.name) for v in variants(example, registry)
                    )
                if example.kind == "errata":
                    for row in _errata_rows(example, problems):
                        if row.erratum in errata:
                            problems.append(
                                f"{example.label}:{row.line}: erratum {row.erratum!r} is listed "
                                f"twice (also on line {errata[row.erratum].line})"
                            )
                        errata[row.erratum] = row
        base_ids = {e.id for e in examples}
        own = [r for r in _errata_rows(self.example, [])]
        for row in own:
            if not row.tests:
                problems.append(
                    f"{self.page.label}:{row.line}: erratum {row.erratum!r} names no test"
                )
            for test in row.tests:
                known = test in item_ids if "[" in test else test in base_ids
                if not known:
                    problems.append(
                        f"{self.page.label}:{row.line}: erratum {row.erratum!r} names test "
                        f"{test!r}, which no page defines"
                    )
        for example in examples:
            for erratum in example.errata:
                if erratum not in errata:
                    problems.append(
                        f"{example.label}:{example.line}: {example.slug} is tagged "
                        f"erratum={erratum}, which no errata table lists"
                    )
        if problems:
            raise ConformanceFailure(
                "errata are inconsistent:\n" + "\n".join(f"  - {p}" for p in problems)
            )


def _errata_rows(example: Example, problems: list[str]) -> list[_ErrataRow]:
    rows = []
    for table in example.tables:
        header = [strip_code(h).lower() for h in table.header]
        if "id" not in header or "test" not in header:
            problems.append(
                f"{example.label}:{table.line}: errata table needs 'id' and 'test' columns, "
                f"got {list(table.header)}"
            )
            continue
        id_col, test_col = header.index("id"), header.index("test")
        for line, cells in table.rows:
            erratum = strip_code(cells[id_col]) if id_col < len(cells) else ""
            if not _ERRATA_ID_RE.fullmatch(erratum):
                problems.append(f"{example.label}:{line}: malformed erratum id {erratum!r}")
                continue
            test_cell = cells[test_col] if test_col < len(cells) else ""
            tests = [t.removeprefix("docs/") for t in _TEST_ID_RE.findall(test_cell)]
            rows.append(_ErrataRow(erratum, tests, line))
    return rows
