"""An enabled conformance run: the plugin object ``pytest_configure`` registers.

One Sybil over the docs root (:func:`docs_root`) parses the pages, with
``pages.ConformanceParser`` and ``evaluate.evaluate``. Each page is collected once per run:

* by pytest itself, from an argument that is the page or a folder above it
  (``pytest docs/reference/losses.md::cross-entropy`` in a clone);
* else by one :class:`DocsDirectory`, which the run adds to what pytest collects when it asks for
  the spec (the package named, pages or items named as this run prints them, or any
  ``--conformance*`` option with no argument in the docs root), or which :func:`collect_docs`
  gives a test-suite (this repository's ``tests/conformance``).

Node ids are paths from the rootdir when pytest's walk reaches the docs root from it (a clone:
``docs/reference/losses.md``), else from the docs root's parent (``docs/schedulers.md`` for the
installed pages). An argument that is not a path from the invocation folder but names a page,
folder or item that way is read as one, so every printed id can be run again.

``requires=`` and unknown families skip items; expectations files turn known failures into xfail
(or skip) with a reason: one entry a line, ``[xfail|skip] PATTERN REASON``, ``PATTERN`` a
conformance id (a leading ``docs/`` is accepted) in which ``*`` is the only wildcard, and ``#``
comments.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from packaging.requirements import InvalidRequirement, Requirement
from sybil import Sybil
from sybil.integration.pytest import SybilFile

from torchkit.conformance import PACKAGE, PACKAGE_DIR, interpreter_problem, options_given, summary
from torchkit.conformance.evaluate import evaluate, setup_page
from torchkit.conformance.pages import (
    Case,
    ConformanceParser,
    PageDocument,
    PageError,
    cases,
    load_page,
    page_files,
)
from torchkit.conformance.registry import KINDS, builtin_registry

ENV_VAR = "TORCHKIT_CONFORMANCE_IMPL"
_VERSIONS = ("torch", "triton", "torchkit")


@dataclass(frozen=True)
class Expectation:
    """One entry of an expectations file: a pattern over conformance ids, what to do, why."""

    pattern: str
    action: str  # "xfail" or "skip"
    reason: str
    source: str  # FILE:LINE

    def matches(self, conformance_id: str) -> bool:
        return _wildcard(self.pattern).fullmatch(conformance_id) is not None

    def matches_page(self, page: str) -> bool:
        """Whether the pattern's page part matches ``page``."""
        return _wildcard(self.pattern.partition("::")[0]).fullmatch(page) is not None


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def parse_expectations(text: str, source: str = "<expectations>") -> list[Expectation]:
    """Read an expectations file; ``ValueError`` for an entry without a reason or a pattern
    that is not a conformance id."""
    entries = []
    for number, line in enumerate((raw.strip() for raw in text.splitlines()), start=1):
        if not line or line.startswith("#"):
            continue
        action, rest = "xfail", line
        first, *others = line.split(None, 1)
        if first in ("xfail", "skip"):
            action, rest = first, "".join(others)
        pattern, *reason = rest.split(None, 1) or [""]
        if not reason:
            raise ValueError(f"{source}:{number}: expected 'PATTERN REASON', got {line!r}")
        if "::" not in (pattern := pattern.removeprefix("docs/")):
            raise ValueError(
                f"{source}:{number}: {pattern!r} is not a conformance id (PAGE::SLUG[...])"
            )
        entries.append(Expectation(pattern, action, reason[0].strip(), f"{source}:{number}"))
    return entries


def requirement_problem(requires: tuple[str, ...]) -> str | None:
    """Why an example cannot run here (``None`` if it can), from its ``requires=`` entries:
    ``cuda``, ``triton-interpreter``, or a requirement on an installed distribution, read by
    ``packaging`` (pre-releases count)."""
    for text in (r.strip() for r in requires):
        if text == "cuda":
            if not torch.cuda.is_available():
                return "needs CUDA, which this machine does not have"
        elif text == "triton-interpreter":
            if why := interpreter_problem():
                return why
        else:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                return f"unreadable requirement {text!r}"
            if (have := _version(requirement.name)) == "not installed":
                return f"needs {text}, which is not installed"
            if not requirement.specifier.contains(have, prereleases=True):
                return f"needs {text}, this is {requirement.name} {have}"
    return None


def docs_root(
    option: str | None, ini: str, ini_dir: Path, here: Path, package_dir: Path = PACKAGE_DIR
) -> Path:
    """The docs root of a run: ``--conformance-docs`` (from the invocation folder ``here``), else
    the ini option ``conformance_docs`` (from the ini file's folder ``ini_dir``: a clone names its
    own ``docs/``, whatever is installed), else the pages installed with the package, else the
    checkout's ``docs/`` (an editable install, run outside its clone)."""
    if option:
        return (here / option).resolve()
    if ini:
        return (ini_dir / ini).resolve()
    if (package_dir / "docs").is_dir():
        return package_dir / "docs"
    return package_dir.parents[2] / "docs"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _walked_to(config: pytest.Config, root: Path) -> bool:
    """Whether pytest's walk from the rootdir reaches ``root``: no folder on the way is one it
    skips (a virtualenv, ``norecursedirs``)."""
    try:
        parts = root.relative_to(config.rootpath).parts
    except ValueError:
        return False
    folders = (config.rootpath.joinpath(*parts[: n + 1]) for n in range(len(parts)))
    skipped = config.hook.pytest_ignore_collect
    return not any(skipped(collection_path=folder, config=config) for folder in folders)


def _reached_by_arguments(session: pytest.Session, path: Path) -> bool:
    """Whether pytest collects ``path`` itself: it is an argument, or lies in one and nothing on
    the way down is skipped (``pytest.Dir``'s rule)."""
    chain = [path, *path.parents]
    for depth, above in enumerate(chain):
        if session.isinitpath(above):
            return not any(
                not session.isinitpath(p, with_parents=True)
                and session.gethookproxy(p.parent).pytest_ignore_collect(
                    collection_path=p, config=session.config
                )
                for p in chain[:depth]
            )
    return False


@dataclass(frozen=True)
class _Wanted:
    """An item named on the command line (``PAGE::NAME``, ``[...]`` optional), matched by
    pytest's rule: with a suffix the name must be exact, without one any suffix goes."""

    argument: str
    names: tuple[str, ...]
    suffix: str | None

    def matches(self, name: str) -> bool:
        if len(self.names) != 1:
            return False
        if self.suffix is not None:
            return name == self.names[0] + self.suffix
        return name.split("[")[0] == self.names[0]


class _Pages(Sybil):
    """The run's Sybil: the pages below its path (those ``selected``, if any)."""

    selected: frozenset[str] = frozenset()

    def identify(self, example: Any) -> str:
        return example.parsed.name

    def should_parse(self, path: Path) -> bool:
        name = path.relative_to(self.path).as_posix() if self.path in path.parents else ""
        return name.endswith(".md") and (not self.selected or name in self.selected)


class _PageFile(SybilFile):
    """A page: Sybil's file collector; with ``wanted``, only the items named on the command line
    (a collection error names those that the page does not hold)."""

    def __init__(self, *, wanted: Sequence[_Wanted] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wanted = wanted

    def collect(self) -> list[pytest.Item]:
        items = list(super().collect())
        if not self.wanted:
            return items
        names = [item.name for item in items]
        if missing := [w.argument for w in self.wanted if not any(map(w.matches, names))]:
            raise self.CollectError(f"not found: {', '.join(missing)}")
        return [item for item in items if any(w.matches(item.name) for w in self.wanted)]


class DocsDirectory(pytest.Directory):
    """The run's pages that pytest does not collect from its own arguments."""

    def collect(self) -> list[pytest.Collector]:
        run: Conformance = self.config.pluginmanager.get_plugin(Conformance.NAME)
        return [
            run.page_file(self, page, run.wanted.get(run.name(page), ()))
            for page in run.pages()
            if not _reached_by_arguments(self.session, page)
        ]


def collect_docs(parent: pytest.Collector) -> DocsDirectory | None:
    """The spec pages as a child of ``parent``, for a test-suite's ``pytest_collect_file``
    (``None`` when the suite is not enabled, or when the run collects them already)."""
    run = parent.config.pluginmanager.get_plugin(Conformance.NAME)
    if run is None or run.add_docs:
        return None
    return DocsDirectory.from_parent(parent, path=run.root, nodeid=run.node_id(run.root))


class Conformance:
    """The enabled run: its pages, registry and expectations; its collection, markers and report."""

    NAME = "torchkit-conformance"

    def __init__(self, config: pytest.Config) -> None:
        option, here = config.option, config.invocation_params.dir
        ini_dir = config.inipath.parent if config.inipath else config.rootpath
        ini = config.getini("conformance_docs")
        self.root = root = docs_root(option.conformance_docs, ini, ini_dir, here)
        if not root.is_dir():
            raise pytest.UsageError(f"conformance docs root {str(root)!r} is not a directory")
        self.id_base = config.rootpath.resolve() if _walked_to(config, root) else root.parent
        self.whole = {p.removeprefix("docs/") for p in option.conformance_page}
        if missing := sorted(p for p in self.whole if not (root / p).is_file()):
            raise pytest.UsageError(f"--conformance-page: no page {missing} under {root}")
        self.registry = builtin_registry()
        values = [*option.conformance_impl, *config.getini("conformance_impl")]
        modules = [m.strip() for v in [*values, os.environ.get(ENV_VAR, "")] for m in v.split(",")]
        try:
            self.registry.load([m for m in modules if m])
            self.files = [*map(str, self.registry.expectations), *option.conformance_expectations]
            if missing := [f for f in self.files if not Path(f).is_file()]:
                raise ValueError(f"--conformance-expectations: no such file {missing[0]!r}")
            self.expectations = [
                e for f in self.files for e in parse_expectations(Path(f).read_text("utf-8"), f)
            ]
        except ValueError as error:
            raise pytest.UsageError(str(error)) from None
        parser = ConformanceParser(root, self.registry, evaluate, strict=option.conformance_strict)
        setup = partial(setup_page, registry=self.registry)
        self.sybil = _Pages(
            parsers=[parser], path=str(root), setup=setup, document_types={".md": PageDocument}
        )
        self.wanted: dict[str, list[_Wanted]] = {}  # page: items named on the command line
        asked = self._take_arguments(config)
        self.sybil.selected = frozenset(self.whole | self.wanted.keys())
        for name in self.whole:
            self.wanted.pop(name, None)
        # with what pytest collects from the arguments left, unless one lies in the docs root
        in_root = any(map(self._in_root, config.args))
        self.add_docs = asked or (options_given(config) and not in_root)
        self.reporting = not hasattr(config, "workerinput")  # the controller, or the only process
        self.summary_path = option.conformance_summary
        self.results: dict[str, dict[str, Any]] = {}  # node id: conformance properties, outcome
        for kind in KINDS:
            config.addinivalue_line("markers", f"conformance_{kind}: a docs {kind} example")

    def _take_arguments(self, config: pytest.Config) -> bool:
        """Take the arguments that name pages out of ``config.args``: the package (every page,
        unless some are selected) and, where no such path exists from the invocation folder, a
        folder, page or item as this run names them. Whether there was any."""
        here, kept, asked = config.invocation_params.dir, [], False
        for argument in config.args:
            base, bracket, suffix = argument.partition("[")
            path, *names = base.split("::")
            package = argument == PACKAGE and config.option.pyargs
            if package or (here / path).resolve() == PACKAGE_DIR:
                asked = True
                continue
            target = (self.id_base / path).resolve()
            if (here / path).exists() or not target.exists() or not self._in_root(target):
                kept.append(argument)
                continue
            asked = True
            if target.is_dir():
                self.whole.update(map(self.name, page_files(target)))
            elif names:
                wanted = _Wanted(argument, tuple(names), bracket + suffix if bracket else None)
                self.wanted.setdefault(self.name(target), []).append(wanted)
            else:
                self.whole.add(self.name(target))
        config.args[:] = kept
        return asked

    def _in_root(self, argument: str | Path) -> bool:
        path = Path(str(argument).partition("[")[0].split("::")[0]).resolve()
        return path == self.root or self.root in path.parents

    def name(self, page: Path) -> str:
        """A page's name below the docs root (``reference/losses.md``)."""
        return page.relative_to(self.root).as_posix()

    def pages(self) -> list[Path]:
        return [path for path in page_files(self.root) if self.sybil.should_parse(path)]

    def page_file(
        self, parent: pytest.Collector, path: Path, wanted: Sequence[_Wanted] = ()
    ) -> _PageFile:
        nodeid = self.node_id(path)
        return _PageFile.from_parent(
            parent, path=path, sybils=[self.sybil], nodeid=nodeid, wanted=wanted
        )

    def families(self, annotated: bool) -> list[str]:
        """``family (binding): implementations``, with their kinds and origins if ``annotated``."""
        lines = []
        for family, binding in self.registry.families.items():
            names = []
            for i in self.registry.implementations(family):
                kinds = f" ({'/'.join(sorted(i.kinds))} only)" if len(i.kinds) < len(KINDS) else ""
                origin = f" [from {i.origin}]" if i.origin != "built-in" else ""
                names.append(i.name + (kinds + origin if annotated else ""))
            lines.append(f"{family} ({binding}): {', '.join(names)}")
        return lines

    def node_id(self, path: Path) -> str:
        return path.resolve().relative_to(self.id_base).as_posix()

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector) -> Generator[None, Any, Any]:
        report = yield
        if self.add_docs and isinstance(collector, pytest.Session) and report.passed:
            nodeid = self.node_id(self.root)
            report.result.append(
                DocsDirectory.from_parent(collector, path=self.root, nodeid=nodeid)
            )
        return report

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> Any:
        return self.page_file(parent, file_path) if self.sybil.should_parse(file_path) else None

    @pytest.hookimpl(tryfirst=True)  # before -k and -m deselect: they may use the markers
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            case = getattr(getattr(item, "example", None), "parsed", None)
            if not isinstance(case, Case):
                continue
            directive = case.directive
            properties = {"id": case.id, "page": case.page.name, "errata": list(directive.errata)}
            properties["family"] = directive.family or ""
            properties["implementation"] = case.implementation_name
            item.user_properties.append(("conformance", properties))
            if directive.kind != "errata":
                item.add_marker(f"conformance_{directive.kind}")
            if why := case.skip or requirement_problem(directive.requires):
                item.add_marker(pytest.mark.skip(reason=why))
            if rule := next((e for e in self.expectations if e.matches(case.id)), None):
                item.add_marker(getattr(pytest.mark, rule.action)(reason=rule.reason))

    def pytest_report_header(self) -> list[str]:
        pages = 0
        for path in self.pages():
            try:
                pages += bool(load_page(path, self.root).directives)
            except PageError:
                pages += 1  # reported as that page's collection error
        selected = ", selected on the command line" if self.sybil.selected else ""
        versions = ", ".join(f"{name} {_version(name)}" for name in _VERSIONS)
        lines = [f"conformance: {versions}; docs {self.root} ({_plural(pages, 'page')}{selected})"]
        lines += [f"  {family}" for family in self.families(annotated=True)]
        lines += [f"  plugin {m} not tested: {why}" for m, why in self.registry.unavailable.items()]
        if count := len(self.expectations):
            entries = "entry" if count == 1 else "entries"
            lines.append(f"  expectations: {', '.join(self.files)} ({count} {entries})")
        return lines

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = dict(report.user_properties).get("conformance")
        if properties is None or (outcome := summary.outcome(report)) is None:
            return
        result = self.results.setdefault(report.nodeid, {**properties, "outcome": "passed"})
        if result["outcome"] not in ("failed", "error"):
            reason = "" if outcome == "passed" else summary.reason(report)
            result.update(outcome=outcome, reason=reason)

    def unmatched_expectations(self) -> list[Expectation]:
        """Entries that match no page, or no item of a page of the run (whatever ``-k`` or ids
        on the command line deselected); entries for pages left out are not checked."""
        every = [self.name(path) for path in page_files(self.root)]
        names, ids = [self.name(path) for path in self.pages()], set()
        for path in self.pages():
            with contextlib.suppress(PageError):  # reported as that page's collection error
                page = load_page(path, self.root)
                for directive in page.directives:
                    ids.update(c.id for c in cases(page, directive, self.registry, strict=False))
        return [
            rule
            for rule in self.expectations
            if not any(map(rule.matches_page, every))
            or (any(map(rule.matches_page, names)) and not any(map(rule.matches, ids)))
        ]

    def pytest_sessionfinish(self) -> None:
        if not (self.reporting and self.summary_path):
            return
        environment = {name: _version(name) for name in _VERSIONS}
        environment["docs"] = str(self.root)
        environment["implementations"] = "; ".join(self.families(annotated=False))
        environment["plugins"] = ", ".join(self.registry.loaded) or "none"
        environment["expectations"] = ", ".join(self.files) or "none"
        summary.write(self.summary_path, list(self.results.values()), environment)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.reporting:
            return
        write = terminalreporter.write_line
        for module, why in self.registry.unavailable.items():
            write(f"conformance: plugin {module} was not tested: {why}")
        if not (results := list(self.results.values())):
            return
        pages = _plural(len({r["page"] for r in results}), "page")
        write(f"conformance: {_plural(len(results), 'item')} on {pages}: {summary.tally(results)}")
        third_party = {i.name for i in self.registry.implementations() if i.origin != "built-in"}
        for (family, name), rs in summary.grouped(results, "family", "implementation").items():
            if name in third_party:
                write(f"conformance: {family} {name}: {summary.tally(rs)}")
        for rule in self.unmatched_expectations():
            write(f"conformance: expectation {rule.source} matched no item: {rule.pattern}")
        if self.summary_path:
            write(f"conformance: summary written to {self.summary_path}")
