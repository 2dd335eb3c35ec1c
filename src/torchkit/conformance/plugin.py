"""The conformance suite as a pytest plugin: options, collection, markers, report.

Registered in every pytest run through the ``pytest11`` entry point ``torchkit.conformance``,
this module imports nothing but pytest until the suite is enabled, so other projects' runs pay
nothing. It is enabled by ``--conformance`` (or any other ``--conformance-*`` option), by the ini
option ``conformance = true``, or by naming the package: ``pytest --pyargs torchkit.conformance``
(``python -m torchkit conformance``). Then:

* one :class:`sybil.Sybil` over the docs root (``--conformance-docs``, default: the pages
  installed with the package) collects every Markdown page: its parser
  (:class:`~torchkit.conformance.pages.ConformanceParser`) yields one region per item, its
  evaluator is :func:`~torchkit.conformance.evaluate.evaluate`;
* collecting the ``torchkit.conformance`` package collects the docs root instead (the pages
  need not lie inside the package: in an editable install they are the repository's
  ``docs/``); a test-suite can do the same with :func:`collect_docs`;
* ``pytest_collection_modifyitems`` marks items: ``requires=`` and unknown families skip, and
  expectations files turn known failures into xfail (or skip), each with its reason;
* the report header names what is under test, and the summary is written by the process that
  sees every report (the xdist controller).

Expectations files: one entry per line, ``#`` comments, ``[xfail|skip] PATTERN REASON`` where
``PATTERN`` is a conformance id (a leading ``docs/`` is accepted) in which ``*`` is the only
wildcard.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

PACKAGE = "torchkit.conformance"
PACKAGE_DIR = Path(__file__).resolve().parent
_KINDS = ("session", "shapes", "milestones")


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
    """Parse an expectations file's text.

    Raises:
        ValueError: for an entry without a reason, or a pattern that is not a conformance id.

    Example:
        >>> (rule,) = parse_expectations("skip docs/a.md::x[*]  needs CUDA  # see #12\\n")
        >>> rule.action, rule.matches("a.md::x[row=1]"), rule.reason
        ('skip', True, 'needs CUDA  # see #12')
    """
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        action, _, rest = line.partition(" ")
        if action not in ("xfail", "skip"):
            action, rest = "xfail", line
        pattern, _, reason = rest.strip().partition(" ")
        if not reason.strip():
            raise ValueError(f"{source}:{number}: expected 'PATTERN REASON', got {line!r}")
        pattern = pattern.removeprefix("docs/")
        if "::" not in pattern:
            raise ValueError(
                f"{source}:{number}: {pattern!r} is not a conformance id (PAGE::SLUG[...])"
            )
        entries.append(Expectation(pattern, action, reason.strip(), f"{source}:{number}"))
    return entries


def default_docs_root() -> Path:
    """The spec pages: installed in the package's ``docs/`` folder by a wheel, or the ``docs/``
    of the source checkout this package runs from (an editable install, ``src/`` on the path)."""
    installed, checkout = PACKAGE_DIR / "docs", PACKAGE_DIR.parents[2] / "docs"
    if not installed.is_dir() and (checkout / "conformance.md").is_file():
        return checkout
    return installed


# option suffix: (argparse keywords, help); every one is in the group "conformance"
_OPTIONS = {
    "": ({"action": "store_true"}, "run the spec pages (default: those installed with torchkit)"),
    "-impl": (
        {"action": "append", "default": [], "metavar": "MODULE"},
        "module registering implementations (repeatable; also the ini option conformance_impl "
        "and TORCHKIT_CONFORMANCE_IMPL=MOD1,MOD2)",
    ),
    "-expectations": (
        {"action": "append", "default": [], "metavar": "FILE"},
        "known failures, lines '[xfail|skip] PATTERN REASON' (repeatable)",
    ),
    "-summary": ({"metavar": "PATH"}, "write a summary (Markdown, or JSON if PATH is *.json)"),
    "-docs": ({"metavar": "DIR"}, "the docs root to collect"),
    "-page": (
        {"action": "append", "default": [], "metavar": "PAGE"},
        "collect only this page, relative to the docs root (repeatable)",
    ),
    "-strict": ({"action": "store_true"}, "an unknown family is a collection error, not a skip"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "torchkit's docs-driven conformance suite")
    for suffix, (keywords, help) in _OPTIONS.items():
        group.addoption(f"--conformance{suffix}", help=help, **keywords)
    parser.addini("conformance", "run the conformance pages in this project's runs", type="bool")
    parser.addini("conformance_impl", "modules registering implementations", type="linelist")


def _names_package(config: pytest.Config) -> bool:
    """Whether the command line names this package or a path inside it."""
    for arg in config.args:
        if config.option.pyargs and (arg == PACKAGE or arg.startswith(f"{PACKAGE}.")):
            return True
        path = Path(arg.partition("::")[0]).resolve()
        if path == PACKAGE_DIR or PACKAGE_DIR in path.parents:
            return True
    return False


def _enabled(config: pytest.Config) -> bool:
    option = config.option
    return bool(
        any(getattr(option, f"conformance{s.replace('-', '_')}", None) for s in _OPTIONS)
        or config.getini("conformance")
        or _names_package(config)
    )


@dataclass
class _Run:
    """What an enabled run tests, kept in ``config.stash``."""

    root: Path
    pages: frozenset[str]
    strict: bool
    registry: Any
    sybil: Any
    collect_file: Any  # Sybil's pytest_collect_file hook, for pages given as paths
    plugins: Any
    expectations: list[Expectation]
    expectation_files: list[str]
    package_requested: bool
    rootpath: Path
    summary: Any = None
    outcomes: Counter = field(default_factory=Counter)


_RUN = pytest.StashKey[_Run]()


def pytest_configure(config: pytest.Config) -> None:
    if not _enabled(config):
        return
    from sybil import Sybil

    from torchkit.conformance.evaluate import evaluate, setup_page
    from torchkit.conformance.pages import ConformanceParser
    from torchkit.conformance.registry import builtin_registry, load_plugins, plugin_modules

    option = config.option
    root = (
        Path(option.conformance_docs).resolve() if option.conformance_docs else default_docs_root()
    )
    if not root.is_dir():
        raise pytest.UsageError(f"conformance docs root {str(root)!r} is not a directory")
    pages = frozenset(p.removeprefix("docs/") for p in option.conformance_page)
    if missing := sorted(p for p in pages if not (root / p).is_file()):
        raise pytest.UsageError(f"--conformance-page: no page {missing} under {root}")
    registry = builtin_registry()
    try:
        plugins = load_plugins(
            registry, plugin_modules(option.conformance_impl, config.getini("conformance_impl"))
        )
        files = [str(p) for p in [*plugins.expectations, *option.conformance_expectations]]
        expectations = [e for f in files for e in _read_expectations(f)]
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None

    class ConformanceSybil(Sybil):
        def identify(self, example: Any) -> str:
            return example.parsed.name

        def should_parse(self, path: Path) -> bool:
            name = path.relative_to(root).as_posix() if root in path.parents else ""
            return name.endswith(".md") and (not pages or name in pages)

    sybil = ConformanceSybil(
        parsers=[ConformanceParser(root, registry, evaluate, strict=option.conformance_strict)],
        path=str(root),
        setup=partial(setup_page, registry=registry),
    )
    config.stash[_RUN] = _Run(
        root,
        pages,
        option.conformance_strict,
        registry,
        sybil,
        sybil.pytest(),
        plugins,
        expectations,
        files,
        _names_package(config),
        config.rootpath,
    )
    for kind in _KINDS:
        config.addinivalue_line("markers", f"conformance_{kind}: a docs {kind} example")
    if not hasattr(config, "workerinput"):  # the controller (or only process) reports
        from torchkit.conformance.summary import SummaryCollector

        run = config.stash[_RUN]
        run.summary = SummaryCollector(option.conformance_summary, _environment(config, run))
        config.pluginmanager.register(run.summary, "conformance-summary")


def _read_expectations(path: str) -> list[Expectation]:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"--conformance-expectations: no such file {path!r}")
    return parse_expectations(file.read_text(encoding="utf-8"), path)


class DocsDirectory(pytest.Directory):
    """The run's spec pages, each a Sybil ``SybilFile`` collected by the run's Sybil.

    A page's node id is its path from the docs root's parent (``docs/reference/losses.md``) or,
    when the docs root lies below pytest's rootdir, from the rootdir: the same wherever pytest
    runs and whichever of the pages (installed or checked out) it runs.
    """

    def collect(self) -> list[pytest.Collector]:
        from sybil.integration.pytest import SybilFile

        from torchkit.conformance.pages import page_files

        run = self.config.stash[_RUN]
        return [
            SybilFile.from_parent(self, path=page, sybils=[run.sybil], nodeid=_node_id(run, page))
            for page in page_files(run.root, run.pages)
        ]


def _node_id(run: _Run, path: Path) -> str:
    try:
        return path.relative_to(run.rootpath).as_posix()
    except ValueError:
        return path.relative_to(run.root.parent).as_posix()


def collect_docs(parent: pytest.Collector) -> DocsDirectory | None:
    """The spec pages as a child of ``parent``, for a test-suite's ``pytest_collect_file``.

    Returns ``None`` when the suite is not enabled.
    """
    run = parent.config.stash.get(_RUN, None)
    if run is None:
        return None
    return DocsDirectory.from_parent(parent, path=run.root, nodeid=_node_id(run, run.root))


@pytest.hookimpl(tryfirst=True)
def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    run = parent.config.stash.get(_RUN, None)
    if run is not None and run.package_requested and path == PACKAGE_DIR:
        return DocsDirectory.from_parent(parent, path=path)
    return None


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    run = parent.config.stash.get(_RUN, None)
    return run.collect_file(file_path, parent) if run is not None else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run = config.stash.get(_RUN, None)
    if run is None:
        return
    from torchkit.conformance.pages import Case, requirement_problem

    for item in items:
        case = getattr(getattr(item, "example", None), "parsed", None)
        if not isinstance(case, Case):
            continue
        directive = case.directive
        item.user_properties += [
            ("conformance_id", case.id),
            ("conformance_page", case.page.name),
            ("conformance_errata", ",".join(directive.errata)),
            ("conformance_family", directive.family or ""),
            ("conformance_impl", case.implementation.name if case.implementation else ""),
        ]
        if directive.kind != "errata":
            item.add_marker(f"conformance_{directive.kind}")
        if why := case.skip or requirement_problem(directive.requires):
            item.add_marker(pytest.mark.skip(reason=why))
        if rule := next((e for e in run.expectations if e.matches(case.id)), None):
            item.add_marker(getattr(pytest.mark, rule.action)(reason=rule.reason))


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _page_count(run: _Run) -> int:
    from torchkit.conformance.pages import PageError, load_page, page_files

    count = 0
    for path in page_files(run.root, run.pages):
        try:
            count += bool(load_page(path, run.root).directives)
        except PageError:
            count += 1  # reported as that page's collection error
    return count


def _environment(config: pytest.Config, run: _Run) -> dict[str, object]:
    registry = run.registry
    return {
        "torch": _version("torch"),
        "triton": _version("triton"),
        "torchkit": _version("torchkit"),
        "docs": str(run.root),
        "implementations": "; ".join(
            f"{family} ({spec.binding}): "
            + ", ".join(i.name for i in registry.implementations(family))
            for family, spec in registry.families.items()
        ),
        "plugins": ", ".join(run.plugins.loaded) or "none",
        "expectations": ", ".join(run.expectation_files) or "none",
    }


def pytest_report_header(config: pytest.Config) -> list[str]:
    run = config.stash.get(_RUN, None)
    if run is None:
        return []
    selected = ", selected by --conformance-page" if run.pages else ""
    lines = [
        f"conformance: torch {_version('torch')}, triton {_version('triton')}, "
        f"torchkit {_version('torchkit')}; docs {run.root} "
        f"({_plural(_page_count(run), 'page')}{selected})"
    ]
    for family, spec in run.registry.families.items():
        names = ", ".join(
            i.name
            + (f" ({'/'.join(sorted(i.kinds))} only)" if len(i.kinds) < len(_KINDS) else "")
            + (f" [from {i.origin}]" if i.origin != "built-in" else "")
            for i in run.registry.implementations(family)
        )
        lines.append(f"  {family} ({spec.binding}): {names}")
    for module, why in run.plugins.unavailable.items():
        lines.append(f"  plugin {module} not tested: {why}")
    if run.expectations:
        files = ", ".join(run.expectation_files)
        count = len(run.expectations)
        lines.append(f"  expectations: {files} ({count} {'entry' if count == 1 else 'entries'})")
    return lines


def pytest_sessionfinish(session: pytest.Session) -> None:
    run = session.config.stash.get(_RUN, None)
    if run is not None and run.summary is not None:
        run.summary.write()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    run = config.stash.get(_RUN, None)
    if run is None or run.summary is None:
        return
    write = terminalreporter.write_line
    for module, why in run.plugins.unavailable.items():
        write(f"conformance: plugin {module} was not tested: {why}")
    results = list(run.summary.results.values())
    if not results:
        return
    counts = Counter(r.outcome for r in results)
    pages = len({r.page for r in results})
    write(
        f"conformance: {_plural(len(results), 'item')} on {_plural(pages, 'page')}: "
        + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    )
    third_party = {
        i.name
        for f in run.registry.families
        for i in run.registry.implementations(f)
        if i.origin != "built-in"
    }
    for (family, name), rs in run.summary.by("family", "implementation").items():
        if name in third_party:
            tally = Counter(r.outcome for r in rs)
            write(
                f"conformance: {family} {name}: "
                + ", ".join(f"{n} {o}" for o, n in sorted(tally.items()))
            )
    used = {r.id for r in results}
    for rule in run.expectations:
        if not any(rule.matches(i) for i in used):
            write(f"conformance: expectation {rule.source} matched no item: {rule.pattern}")
    if run.summary.path:
        write(f"conformance: summary written to {run.summary.path}")
