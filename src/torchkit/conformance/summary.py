"""The conformance summary: outcomes per page, per implementation and per erratum.

:class:`SummaryCollector` is registered on the process that reports results (the xdist
controller, or the only process): ``pytest_runtest_logreport`` sees every item's reports there,
and an item's page, family, implementation and errata travel in its ``user_properties``. It
writes ``--conformance-summary=PATH`` as Markdown, or as JSON when ``PATH`` ends in ``.json``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

OUTCOMES = ("passed", "failed", "error", "xfailed", "xpassed", "skipped")


def natural_key(text: str) -> list[object]:
    """Sort key comparing runs of digits as numbers: ``step=2`` before ``step=10``.

    Example:
        >>> sorted(["a[step=10]", "a[step=2]"], key=natural_key)
        ['a[step=2]', 'a[step=10]']
    """
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


@dataclass
class ItemResult:
    """What happened to one item."""

    id: str
    page: str
    outcome: str = "passed"
    reason: str = ""
    errata: list[str] = field(default_factory=list)
    family: str = ""
    implementation: str = ""


def _reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail).removeprefix("reason: ")
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    lines = [line.strip() for line in str(report.longrepr or "").splitlines() if line.strip()]
    # Sybil's own first line names the file and column: the harness's message follows it.
    lines = [line for line in lines if not line.startswith("Example at ")]
    return lines[0] if lines else ""


def _count(results: list[ItemResult]) -> dict[str, int]:
    counts = Counter(r.outcome for r in results)
    return {
        "passed": counts["passed"] + counts["xpassed"],
        "failed": counts["failed"] + counts["error"],
        "xfailed": counts["xfailed"],
        "skipped": counts["skipped"],
    }


class SummaryCollector:
    """Collects item outcomes from reports and writes the summary."""

    def __init__(self, path: str | None, environment: dict[str, object]) -> None:
        self.path = path
        self.environment = environment
        self.results: dict[str, ItemResult] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = dict(report.user_properties)
        if "conformance_id" not in properties:
            return
        result = self.results.setdefault(
            report.nodeid,
            ItemResult(
                id=properties["conformance_id"],
                page=properties["conformance_page"],
                errata=[e for e in properties["conformance_errata"].split(",") if e],
                family=properties["conformance_family"],
                implementation=properties["conformance_impl"],
            ),
        )
        if report.when == "call":
            outcome = report.outcome
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
        elif report.failed:
            outcome = "error"
        elif report.skipped:
            outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        else:
            return
        if result.outcome not in ("failed", "error"):
            result.outcome, result.reason = outcome, "" if outcome == "passed" else _reason(report)

    def by(self, *keys: str) -> dict[tuple[str, ...], list[ItemResult]]:
        """Results grouped by the given :class:`ItemResult` fields, keys in natural order."""
        grouped: dict[tuple[str, ...], list[ItemResult]] = {}
        for result in self.results.values():
            grouped.setdefault(tuple(getattr(result, k) for k in keys), []).append(result)
        return {k: grouped[k] for k in sorted(grouped, key=lambda k: natural_key(" ".join(k)))}

    def write(self) -> None:
        if not self.path:
            return
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".json":
            target.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")
        else:
            target.write_text(self.as_markdown(), encoding="utf-8")

    def as_json(self) -> dict[str, object]:
        ordered = sorted(self.results.values(), key=lambda r: natural_key(r.id))
        return {
            "environment": self.environment,
            "pages": {
                page: {**_count(results), "items": [asdict(r) for r in ordered if r.page == page]}
                for (page,), results in self.by("page").items()
            },
            "implementations": [
                {"family": family, "implementation": name, "page": page, **_count(results)}
                for (family, name, page), results in self.by(
                    "family", "implementation", "page"
                ).items()
                if family
            ],
        }

    def as_markdown(self) -> str:
        lines = ["# Conformance summary", "", *(f"* {k}: {v}" for k, v in self.environment.items())]

        def table(title: str, header: list[str], rows: list[list[object]]) -> None:
            if rows:
                lines.extend(["", f"## {title}", "", "| " + " | ".join(header) + " |"])
                lines.append("|" + "|".join(" --- " for _ in header) + "|")
                lines.extend("| " + " | ".join(str(c) for c in row) + " |" for row in rows)

        numbers = ["passed", "failed", "xfailed", "skipped"]
        pages = [
            [f"`{page}`", *_count(rs).values(), len({e for r in rs for e in r.errata})]
            for (page,), rs in self.by("page").items()
        ]
        totals = _count(list(self.results.values()))
        errata_total = sum(row[-1] for row in pages)
        pages.append(["**total**", *totals.values(), errata_total])
        table("Pages", ["page", *numbers, "errata checked"], pages)
        table(
            "Implementations",
            ["family", "implementation", "page", *numbers],
            [
                [family, f"`{name}`", f"`{page}`", *_count(rs).values()]
                for (family, name, page), rs in self.by("family", "implementation", "page").items()
                if family
            ],
        )
        ordered = sorted(self.results.values(), key=lambda r: natural_key(r.id))
        table(
            "Errata",
            ["erratum", "test", "outcome"],
            sorted(
                ([e, f"`{r.id}`", r.outcome] for r in ordered for e in r.errata),
                key=lambda row: natural_key(row[0]),
            ),
        )
        table(
            "Not passed",
            ["test", "outcome", "reason"],
            [
                [f"`{r.id}`", r.outcome, r.reason.replace("|", "\\|")]
                for r in ordered
                if r.outcome not in ("passed",)
            ],
        )
        return "\n".join(lines) + "\n"
