"""torchkit's conformance suite: every example of the documentation is a test.

The spec is the Markdown pages of ``docs/`` (installed with the package); each
``<!-- conformance: ... -->`` directive in them is one or more pytest items, run against stock
torch, torchkit's drop-ins and any implementation a plugin registers (``docs/conformance.md``).

This package is a pytest plugin, registered by the ``pytest11`` entry point of the same name;
it does nothing until enabled (see :mod:`torchkit.conformance.plugin`). Run the whole spec
against the installed torch and torchkit from any directory with::

    pytest --pyargs torchkit.conformance -n 2
    python -m torchkit conformance -n 2 --conformance-summary=summary.md

Modules: :mod:`~torchkit.conformance.pages` (the Sybil parser: pages to items),
:mod:`~torchkit.conformance.evaluate` (the Sybil evaluator), :mod:`~torchkit.conformance.values`
(printed output compared by value), :mod:`~torchkit.conformance.registry` (families and
implementations), :mod:`~torchkit.conformance.summary` (the report). Only pytest is imported here.
"""

from torchkit.conformance.plugin import (
    pytest_addoption,
    pytest_collect_directory,
    pytest_collect_file,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_report_header,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

__all__ = [
    "pytest_addoption",
    "pytest_collect_directory",
    "pytest_collect_file",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_report_header",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
]
