"""The conformance suite's pytest hooks, except collection (see ``conftest.py`` beside this).

``tests/conftest.py`` re-exports these hooks so they are active in every run of the test-suite
(``pytest``, ``pytest tests``, ``pytest tests/conformance``): the options parse, the report header
names what is under test, and the summary is written by the xdist controller, which never loads
``tests/conformance/conftest.py`` itself. That conftest keeps only ``pytest_collect_file``.

Options (group "conformance"):

``--conformance-impl=MODULE``
    Also test the implementations registered by ``MODULE`` (repeatable; the environment
    variable ``TORCHKIT_CONFORMANCE_IMPL`` adds comma-separated modules). ``MODULE`` exposes
    ``register_conformance(registry)`` or a ``CONFORMANCE_IMPLEMENTATIONS`` dict
    ``{family: {name: object or "module:attr"}}`` (see ``conformance.registry``).
``--conformance-expectations=FILE``
    Known failures with reasons: matching items become xfail (or skip); see
    ``conformance.expectations`` for the format.
``--conformance-summary=PATH``
    Write a per-page summary (passed / failed / xfailed / skipped with reasons / errata) as
    Markdown, or JSON when ``PATH`` ends in ``.json``.
``--conformance-docs=DIR``
    The docs root to collect (default: this repository's ``docs/``).

Example::

    pytest tests/conformance -n 2 --dist loadfile --conformance-summary=conformance.md
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch

from conformance.collect import EXPECTATIONS_KEY, REGISTRY_KEY
from conformance.expectations import load_expectations
from conformance.pages import page_files
from conformance.registry import builtin_registry, load_plugins, plugin_modules
from conformance.summary import SummaryCollector

_DEFAULT_DOCS = Path(__file__).resolve().parents[2] / "docs"
_SUMMARY_KEY = pytest.StashKey[SummaryCollector]()
_PLUGINS_KEY = pytest.StashKey[list[str]]()


def _option(config: pytest.Config, name: str) -> object:
    # This conftest may be loaded after the command line was parsed (``pytest tests``):
    # its options then keep their defaults.
    return config.getoption(name, default=None)


def docs_root(config: pytest.Config) -> Path:
    """The docs root this run collects."""
    value = _option(config, "conformance_docs")
    return Path(str(value)).resolve() if value else _DEFAULT_DOCS


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "docs-driven conformance suite")
    group.addoption(
        "--conformance-impl",
        action="append",
        default=[],
        metavar="MODULE",
        help="module registering more implementations (repeatable; also "
        "TORCHKIT_CONFORMANCE_IMPL=MOD1,MOD2)",
    )
    group.addoption(
        "--conformance-expectations",
        metavar="FILE",
        help="known failures: lines 'PATTERN REASON' (PATTERN: conformance id, * wildcard)",
    )
    group.addoption(
        "--conformance-summary",
        metavar="PATH",
        help="write a per-page summary as Markdown (or JSON if PATH ends in .json)",
    )
    group.addoption("--conformance-docs", metavar="DIR", help="docs root to collect")


def pytest_configure(config: pytest.Config) -> None:
    for kind in ("session", "shapes", "milestones"):
        config.addinivalue_line("markers", f"conformance_{kind}: a docs {kind} example")
    registry = builtin_registry()
    try:
        modules = plugin_modules(_option(config, "conformance_impl"))  # type: ignore[arg-type]
        config.stash[_PLUGINS_KEY] = load_plugins(registry, modules)
        expectations_file = _option(config, "conformance_expectations")
        expectations = load_expectations(str(expectations_file)) if expectations_file else []
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    config.stash[REGISTRY_KEY] = registry
    config.stash[EXPECTATIONS_KEY] = expectations
    if not hasattr(config, "workerinput"):  # the controller (or only process) reports
        collector = SummaryCollector(_option(config, "conformance_summary"), _environment(config))
        config.stash[_SUMMARY_KEY] = collector
        config.pluginmanager.register(collector, "conformance-summary")


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _environment(config: pytest.Config) -> dict[str, object]:
    registry = config.stash[REGISTRY_KEY]
    return {
        "torch": torch.__version__,
        "triton": _version("triton"),
        "torchkit": _version("torchkit"),
        "docs": str(docs_root(config)),
        "implementations": "; ".join(
            f"{family} ({registry.families[family].binding}): "
            + ", ".join(i.name for i in registry.implementations(family))
            for family in registry.families
        ),
        "plugins": ", ".join(config.stash.get(_PLUGINS_KEY, [])) or "none",
        "expectations": str(_option(config, "conformance_expectations") or "none"),
    }


def pytest_report_header(config: pytest.Config) -> list[str]:
    registry = config.stash[REGISTRY_KEY]
    root = docs_root(config)
    lines = [
        f"conformance: torch {torch.__version__}, triton {_version('triton')}, "
        f"torchkit {_version('torchkit')}; docs {root} ({len(page_files(root))} pages)"
    ]
    for family, spec in registry.families.items():
        names = ", ".join(
            f"{i.name}"
            + (f" ({'/'.join(sorted(i.kinds))} only)" if len(i.kinds) < 3 else "")
            + (f" [from {i.origin}]" if i.origin != "built-in" else "")
            for i in registry.implementations(family)
        )
        lines.append(f"  {family} ({spec.binding}): {names}")
    expectations = config.stash.get(EXPECTATIONS_KEY, [])
    if expectations:
        lines.append(
            f"  expectations: {_option(config, 'conformance_expectations')} "
            f"({len(expectations)} entries)"
        )
    return lines


def pytest_sessionfinish(session: pytest.Session) -> None:
    collector = session.config.stash.get(_SUMMARY_KEY, None)
    if collector is not None:
        collector.write()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    collector = config.stash.get(_SUMMARY_KEY, None)
    if collector is None or not collector.results:
        return
    counts: dict[str, int] = {}
    for result in collector.results.values():
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    pages = len({r.page for r in collector.results.values()})
    text = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    terminalreporter.write_line(
        f"conformance: {len(collector.results)} items on {pages} pages: {text}"
    )
    for expectation in collector.unused(config.stash.get(EXPECTATIONS_KEY, [])):
        terminalreporter.write_line(
            f"conformance: expectation on line {expectation.line} matched no item: "
            f"{expectation.pattern}"
        )
    if collector.path:
        terminalreporter.write_line(f"conformance: summary written to {collector.path}")
