"""The conformance summary file: outcomes per page, per implementation and per erratum.

``--conformance-summary=PATH`` writes it as Markdown, or as JSON when ``PATH`` ends in ``.json``,
from each item's result: its ``conformance`` user property (id, page, errata, family and
implementation) with the ``outcome`` and ``reason`` of its reports. Items are counted per
outcome (:data:`OUTCOMES`) the same way here and at the end of the run.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

OUTCOMES = ("failed", "passed", "skipped", "xfailed", "xpassed")  # in pytest's order


def natural_key(text: str) -> list[object]:
    """Sort key comparing runs of digits as numbers: ``step=2`` before ``step=10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def outcome(report: pytest.TestReport) -> str | None:
    """The outcome a report gives its item (``None``: a passing setup or teardown)."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        return report.outcome
    if report.failed:
        return "error"
    if report.skipped:
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    return None


def reason(report: pytest.TestReport) -> str:
    """Why an item did not pass: the xfail or skip reason, or the first line of the failure."""
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail).removeprefix("reason: ")
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    lines = [line.strip() for line in str(report.longrepr or "").splitlines() if line.strip()]
    # Sybil's own first line names the file and column: the harness's message follows it.
    return next((line for line in lines if not line.startswith("Example at ")), "")


def counts(results: list[dict[str, Any]]) -> dict[str, int]:
    """Items per outcome of :data:`OUTCOMES`, pytest's own; an error counts as failed."""
    found = Counter("failed" if r["outcome"] == "error" else r["outcome"] for r in results)
    return {outcome: found[outcome] for outcome in OUTCOMES}


def tally(results: list[dict[str, Any]]) -> str:
    """The counts that are not zero, as the end of the run prints them: ``2 passed, 1 xfailed``."""
    return ", ".join(f"{n} {outcome}" for outcome, n in counts(results).items() if n)


def grouped(results: list[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    """Results grouped by the given fields, groups in natural order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(tuple(result[k] for k in keys), []).append(result)
    return {k: groups[k] for k in sorted(groups, key=lambda k: natural_key(" ".join(k)))}


def write(path: str, results: list[dict[str, Any]], environment: dict[str, str]) -> None:
    """Write the summary of ``results`` (each item's result) to ``path``."""
    results = sorted(results, key=lambda r: natural_key(r["id"]))
    pages = grouped(results, "page")
    by_implementation = grouped(results, "family", "implementation", "page")
    implementations = [(*k, rs) for k, rs in by_implementation.items() if k[0] and k[1]]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".json":
        report = {
            "environment": environment,
            "pages": {page: {**counts(rs), "items": rs} for (page,), rs in pages.items()},
            "implementations": [
                {"family": family, "implementation": name, "page": page, **counts(rs)}
                for family, name, page, rs in implementations
            ],
        }
        target.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        return
    lines = ["# Conformance summary", "", *(f"* {k}: {v}" for k, v in environment.items())]

    def table(title: str, header: list[str], rows: list[list[object]]) -> None:
        if rows:
            lines.extend(["", f"## {title}", "", "| " + " | ".join(header) + " |"])
            lines.append("|" + "|".join(" --- " for _ in header) + "|")
            lines.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)

    rows = [
        [f"`{page}`", *counts(rs).values(), len({e for r in rs for e in r["errata"]})]
        for (page,), rs in pages.items()
    ]
    total = ["**total**", *counts(results).values(), sum(row[-1] for row in rows)]
    table("Pages", ["page", *OUTCOMES, "errata checked"], [*rows, total])
    table(
        "Implementations",
        ["family", "implementation", "page", *OUTCOMES],
        [
            [family, f"`{name}`", f"`{page}`", *counts(rs).values()]
            for family, name, page, rs in implementations
        ],
    )
    errata_rows = [[e, f"`{r['id']}`", r["outcome"]] for r in results for e in r["errata"]]
    table(
        "Errata",
        ["erratum", "test", "outcome"],
        sorted(errata_rows, key=lambda row: natural_key(row[0])),
    )
    table(
        "Not passed",
        ["test", "outcome", "reason"],
        [
            [f"`{r['id']}`", r["outcome"], r["reason"].replace("|", "\\|")]
            for r in results
            if r["outcome"] != "passed"
        ],
    )
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
