"""``pytest tests/conformance`` runs the spec pages of this repository's ``docs/``.

The harness is the ``torchkit.conformance`` pytest plugin (``src/torchkit/conformance/``),
enabled for this repository's runs by ``conformance = true`` in ``pyproject.toml``, where
``conformance_docs = "docs"`` makes the checkout's ``docs/`` the pages, however torchkit is
installed. pytest does not walk ``docs/`` itself (``testpaths`` is ``tests``): it offers each file
of this folder to ``pytest_collect_file``, and when it offers this conftest the hook returns the
docs root, so the pages are collected once per run, with node ids such as
``docs/reference/losses.md::cross-entropy`` (re-run one with ``pytest ID``). Where the run
collects the pages itself (a ``--conformance*`` option, or pages named), it returns nothing.
Outside a clone, ``pytest --pyargs torchkit.conformance`` runs the installed copy of the pages.

Example::

    pytest tests/conformance -n 2 --dist loadfile --conformance-summary=conformance.md
"""

from __future__ import annotations

from pathlib import Path

import pytest

from torchkit.conformance.plugin import collect_docs


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    return collect_docs(parent) if file_path == Path(__file__) else None
