"""An enabled conformance run: the plugin object ``pytest_configure`` registers.

One Sybil over the docs root (``--conformance-docs``; default: the pages installed with the
package, or the checkout's ``docs/`` in an editable install) collects the pages, with
``pages.ConformanceParser`` and ``evaluate.evaluate``; naming the ``torchkit.conformance`` package
collects them too, and so can a test-suite, with :func:`collect_docs`. ``requires=`` and unknown
families skip items; expectations files turn known failures into xfail (or skip) with a reason:
one entry a line, ``[xfail|skip] PATTERN REASON``, ``PATTERN`` a conformance id (a leading
``docs/`` is accepted) in which ``*`` is the only wildcard, and ``#`` comments.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from packaging.requirements import InvalidRequirement, Requirement
from sybil import Sybil
from sybil.integration.pytest import SybilFile

from torchkit.backend import interpreter_enabled, triton_available
from torchkit.conformance import PACKAGE_DIR, names_package, summary
from torchkit.conformance.evaluate import evaluate, setup_page
from torchkit.conformance.pages import Case, ConformanceParser, PageError, load_page, page_files
from torchkit.conformance.registry import KINDS, builtin_registry

ENV_VAR = "TORCHKIT_CONFORMANCE_IMPL"


@dataclass(frozen=True)
class Expectation:
    """One entry of an expectations file: a pattern over conformance ids, what to do, why."""

    pattern: str
    action: str  # "xfail" or "skip"
    reason: str
    source: str  # FILE:LINE

    def matches(self, conformance_id: str) -> bool:
        regex = ".*".join(re.escape(part) for part in self.pattern.split("*"))
        return re.fullmatch(regex, conformance_id) is not None


def parse_expectations(text: str, source: str = "<expectations>") -> list[Expectation]:
    """Read an expectations file; ``ValueError`` for an entry without a reason or a pattern
    that is not a conformance id."""
    entries = []
    for number, line in enumerate((raw.strip() for raw in text.splitlines()), start=1):
        if not line or line.startswith("#"):
            continue
        action, _, rest = line.partition(" ")
        if action not in ("xfail", "skip"):
            action, rest = "xfail", line
        pattern, _, reason = rest.strip().partition(" ")
        if not reason.strip():
            raise ValueError(f"{source}:{number}: expected 'PATTERN REASON', got {line!r}")
        if "::" not in (pattern := pattern.removeprefix("docs/")):
            raise ValueError(
                f"{source}:{number}: {pattern!r} is not a conformance id (PAGE::SLUG[...])"
            )
        entries.append(Expectation(pattern, action, reason.strip(), f"{source}:{number}"))
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
            if not (triton_available() and interpreter_enabled()):
                return "needs Triton's interpreter: triton installed and TRITON_INTERPRET=1"
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


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _tally(results: list[dict[str, Any]]) -> str:
    outcomes = Counter(r["outcome"] for r in results)
    return ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))


class _Pages(Sybil):
    """The run's Sybil: the pages below its path (those ``selected``, if any)."""

    selected: frozenset[str] = frozenset()

    def identify(self, example: Any) -> str:
        return example.parsed.name

    def should_parse(self, path: Path) -> bool:
        name = path.relative_to(self.path).as_posix() if self.path in path.parents else ""
        return name.endswith(".md") and (not self.selected or name in self.selected)


class DocsDirectory(pytest.Directory):
    """The run's pages, each a Sybil ``SybilFile``, with node ids from the rootdir or, outside
    it, from the docs root's parent: ``docs/reference/losses.md`` wherever pytest runs."""

    def collect(self) -> list[pytest.Collector]:
        run: Conformance = self.config.pluginmanager.get_plugin(Conformance.NAME)
        return [
            SybilFile.from_parent(self, path=page, sybils=[run.sybil], nodeid=run.node_id(page))
            for page in run.pages()
        ]


def collect_docs(parent: pytest.Collector) -> DocsDirectory | None:
    """The spec pages as a child of ``parent``, for a test-suite's ``pytest_collect_file``
    (``None`` when the suite is not enabled)."""
    run = parent.config.pluginmanager.get_plugin(Conformance.NAME)
    if run is None:
        return None
    return DocsDirectory.from_parent(parent, path=run.root, nodeid=run.node_id(run.root))


class Conformance:
    """The enabled run: its pages, registry and expectations; its collection, markers and report."""

    NAME = "torchkit-conformance"

    def __init__(self, config: pytest.Config) -> None:
        option = config.option
        root = PACKAGE_DIR / "docs"  # installed by a wheel; an editable install runs the checkout's
        if not root.is_dir() and (PACKAGE_DIR.parents[2] / "docs" / "conformance.md").is_file():
            root = PACKAGE_DIR.parents[2] / "docs"
        self.root = root = Path(option.conformance_docs or root).resolve()
        if not root.is_dir():
            raise pytest.UsageError(f"conformance docs root {str(root)!r} is not a directory")
        selected = frozenset(p.removeprefix("docs/") for p in option.conformance_page)
        if missing := sorted(p for p in selected if not (root / p).is_file()):
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
        self.sybil = _Pages(parsers=[parser], path=str(root), setup=setup)
        self.sybil.selected = selected
        self.collect_page = self.sybil.pytest()
        self.package_requested, self.rootpath = names_package(config), config.rootpath
        self.reporting = not hasattr(config, "workerinput")  # the controller, or the only process
        self.summary_path = option.conformance_summary
        self.results: dict[str, dict[str, Any]] = {}  # node id: conformance properties, outcome
        for kind in KINDS:
            config.addinivalue_line("markers", f"conformance_{kind}: a docs {kind} example")

    def pages(self) -> list[Path]:
        return [path for path in page_files(self.root) if self.sybil.should_parse(path)]

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
        try:
            return path.relative_to(self.rootpath).as_posix()
        except ValueError:
            return path.relative_to(self.root.parent).as_posix()

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent: pytest.Collector) -> Any:
        if self.package_requested and path == PACKAGE_DIR:
            return DocsDirectory.from_parent(parent, path=path)
        return None

    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> Any:
        return self.collect_page(file_path, parent)

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            case = getattr(getattr(item, "example", None), "parsed", None)
            if not isinstance(case, Case):
                continue
            directive, implementation = case.directive, case.implementation
            properties = {"id": case.id, "page": case.page.name, "errata": list(directive.errata)}
            properties["family"] = directive.family or ""
            properties["implementation"] = implementation.name if implementation else ""
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
        selected = ", selected by --conformance-page" if self.sybil.selected else ""
        versions = ", ".join(f"{name} {_version(name)}" for name in ("torch", "triton", "torchkit"))
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

    def pytest_sessionfinish(self) -> None:
        if not (self.reporting and self.summary_path):
            return
        environment = {name: _version(name) for name in ("torch", "triton", "torchkit")}
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
        write(f"conformance: {_plural(len(results), 'item')} on {pages}: {_tally(results)}")
        third_party = {i.name for i in self.registry.implementations() if i.origin != "built-in"}
        for (family, name), rs in summary.grouped(results, "family", "implementation").items():
            if name in third_party:
                write(f"conformance: {family} {name}: {_tally(rs)}")
        for rule in self.expectations:
            if not any(rule.matches(r["id"]) for r in results):
                write(f"conformance: expectation {rule.source} matched no item: {rule.pattern}")
        if self.summary_path:
            write(f"conformance: summary written to {self.summary_path}")
