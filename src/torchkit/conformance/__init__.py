"""torchkit's conformance suite, a pytest plugin: every example of the documentation is a test.

The ``pytest11`` entry point loads this module in every pytest run; it imports nothing but pytest
until the suite is enabled, by ``--conformance`` or any other ``--conformance-*`` option, the ini
option ``conformance = true``, or naming the package (``pytest --pyargs torchkit.conformance``,
``python -m torchkit conformance``). It then registers ``plugin.Conformance``, which runs the spec
pages installed with the package (``docs/conformance.md``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = "torchkit.conformance"
PACKAGE_DIR = Path(__file__).resolve().parent
# option suffix: (argparse keywords, help)
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


def names_package(config: pytest.Config) -> bool:
    """Whether the command line names this package or a path inside it."""
    for arg in config.args:
        if config.option.pyargs and (arg == PACKAGE or arg.startswith(f"{PACKAGE}.")):
            return True
        path = Path(arg.partition("::")[0]).resolve()
        if path == PACKAGE_DIR or PACKAGE_DIR in path.parents:
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    options = (getattr(config.option, f"conformance{s.replace('-', '_')}") for s in _OPTIONS)
    if any(options) or config.getini("conformance") or names_package(config):
        from torchkit.conformance.plugin import Conformance

        config.pluginmanager.register(Conformance(config), Conformance.NAME)
