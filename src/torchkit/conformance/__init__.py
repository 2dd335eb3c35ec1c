"""torchkit's pytest plugin: the conformance suite, where every example of the documentation is a
test, and the skipping of docstring examples that need Triton's interpreter where it is off.

The ``pytest11`` entry point loads this module in every pytest run; it imports nothing but pytest
until the suite is enabled, by ``--conformance`` or any other ``--conformance-*`` option, the ini
option ``conformance = true``, or naming the package (``pytest --pyargs torchkit.conformance``,
``python -m torchkit conformance``). It then registers ``plugin.Conformance``, which runs the spec
pages: those installed with the package, or the ini option ``conformance_docs`` (a clone's
``docs/``), or ``--conformance-docs`` (``docs/conformance.md``). A command-line option or the
package named adds the pages to what the run collects; the ini option only lets a test-suite
collect them (``plugin.collect_docs``).

A docstring example that launches a Triton kernel on CPU tensors says so in a sentence starting
``Needs Triton's interpreter``; ``pytest --doctest-modules`` skips it, with the reason, where
``TRITON_INTERPRET=1`` is not set (``tests/unit/test_docstrings.py`` runs it under the
interpreter).
"""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

PACKAGE = "torchkit.conformance"
PACKAGE_DIR = Path(__file__).resolve().parent
NEEDS_INTERPRETER = "Needs Triton's interpreter"  # in a docstring: its example launches a kernel
# option suffix: (argparse keywords, help)
OPTIONS = {
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
    "-docs": (
        {"metavar": "DIR"},
        "the docs root to collect (also the ini option conformance_docs)",
    ),
    "-page": (
        {"action": "append", "default": [], "metavar": "PAGE"},
        "collect only this page, relative to the docs root (repeatable)",
    ),
    "-strict": ({"action": "store_true"}, "an unknown family is a collection error, not a skip"),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "torchkit's docs-driven conformance suite")
    for suffix, (keywords, help) in OPTIONS.items():
        group.addoption(f"--conformance{suffix}", help=help, **keywords)
    parser.addini("conformance", "load the conformance suite in this project's runs", type="bool")
    parser.addini("conformance_impl", "modules registering implementations", type="linelist")
    parser.addini("conformance_docs", "the docs root, from the ini file's folder", default="")


def names_package(config: pytest.Config) -> bool:
    """Whether the command line names this package or a path inside it."""
    for arg in config.args:
        if config.option.pyargs and (arg == PACKAGE or arg.startswith(f"{PACKAGE}.")):
            return True
        path = Path(arg.partition("::")[0]).resolve()
        if path == PACKAGE_DIR or PACKAGE_DIR in path.parents:
            return True
    return False


def options_given(config: pytest.Config) -> bool:
    """Whether the command line sets a ``--conformance*`` option."""
    return any(getattr(config.option, f"conformance{s.replace('-', '_')}") for s in OPTIONS)


def pytest_configure(config: pytest.Config) -> None:
    if options_given(config) or config.getini("conformance") or names_package(config):
        from torchkit.conformance.plugin import Conformance

        config.pluginmanager.register(Conformance(config), Conformance.NAME)


def interpreter_problem() -> str | None:
    """Why Triton's interpreter cannot run kernels here, or ``None`` when it can."""
    from torchkit.backend import interpreter_enabled, triton_available

    if triton_available() and interpreter_enabled():
        return None
    return "needs Triton's interpreter: triton installed and TRITON_INTERPRET=1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    examples = [
        item
        for item in items
        if isinstance(test := getattr(item, "dtest", None), doctest.DocTest)
        and NEEDS_INTERPRETER in (test.docstring or "")
    ]
    if examples and (why := interpreter_problem()):
        for item in examples:
            item.add_marker(pytest.mark.skip(reason=why))
