"""Conformance suite: every example in ``docs/`` is a test.

``pytest tests/conformance`` collects every Markdown page under ``docs/`` (recursively, no
registration) and runs each example the page declares (see ``docs/conformance.md``) against
stock torch and against every registered drop-in. pytest does not walk ``docs/`` itself: it
offers each file of this folder to ``pytest_collect_file``, and when it offers this conftest
the hook returns the collector of the docs root. Items are therefore named after the pages
(``docs/reference/losses.md::cross-entropy``) and ``--dist loadfile`` keeps a page on one
xdist worker.

The options (``--conformance-impl``, ``--conformance-expectations``, ``--conformance-summary``,
``--conformance-docs``) and the other hooks live in ``conformance/plugin.py``, re-exported by
``tests/conftest.py`` so that they work in whole-suite runs too.

Example::

    pytest tests/conformance -n 2 --dist loadfile --conformance-summary=conformance.md
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.collect import DocsDirectory
from conformance.plugin import docs_root


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    # Fires for the conftest that defines (or re-exports) this hook: see the module docstring.
    if file_path.name != "conftest.py":
        return None
    module = parent.config.pluginmanager.get_plugin(str(file_path))
    if getattr(module, "pytest_collect_file", None) is not pytest_collect_file:
        return None
    root = docs_root(parent.config)
    if not root.is_dir():
        raise pytest.UsageError(f"conformance docs root {str(root)!r} is not a directory")
    return DocsDirectory.for_root(parent, root)
