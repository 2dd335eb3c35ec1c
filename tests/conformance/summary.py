"""The per-page conformance summary (``--conformance-summary=PATH``).

:class:`SummaryCollector` is registered on the process that reports results (the xdist
controller, or the only process): ``pytest_runtest_logreport`` sees every item's reports
there, and the page, errata and implementation of an item travel in ``user_properties``.
At the end of the session the summary is written as Markdown, or as JSON when ``PATH`` ends
in ``.json``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conformance.expectations import Expectation

__all__ = ["ItemResult", "SummaryCollector"]

OUTCOMES = ("passed", "failed", "error", "xfailed", "xpassed", "skipped")


@dataclass
class ItemResult:
    """What happened to one item."""

    conformance_id: str
    page: str
    outcome: str = "passed"
    reason: str = ""
    errata: list[str] = field(default_factory=list)
    implementation: str = ""


def _reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail).removeprefix("reason: ")
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    text = str(longrepr or "")
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


class SummaryCollector:
    """Collects item outcomes from reports and writes the summary."""

    def __init__(self, path: str | None, environment: dict[str, object]) -> None:
        self.path = path
        self.environment = environment
        self.results: dict[str, ItemResult] = {}

    # -- hooks -----------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = dict(report.user_properties)
        if "conformance_id" not in properties:
            return
        result = self.results.get(report.nodeid)
        if result is None:
            result = ItemResult(
                conformance_id=str(properties["conformance_id"]),
                page=str(properties["conformance_page"]),
                errata=[e for e in str(properties.get("conformance_errata", "")).split(",") if e],
                implementation=str(properties.get("conformance_impl", "")),
            )
            self.results[report.nodeid] = result
        outcome = None
        if report.when == "call":
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            else:
                outcome = report.outcome
        elif report.failed:
            outcome = "error"
        elif report.skipped:
            outcome = "xfailed" if hasattr(report, "wasxfail") else "skipped"
        if outcome is not None and result.outcome not in ("failed", "error"):
            result.outcome = outcome
            if outcome != "passed":
                result.reason = _reason(report)

    # -- output ----------------------------------------------------------------

    def pages(self) -> dict[str, dict[str, list[ItemResult]]]:
        """Results grouped by page and outcome, pages sorted."""
        grouped: dict[str, dict[str, list[ItemResult]]] = defaultdict(lambda: defaultdict(list))
        for result in self.results.values():
            grouped[result.page][result.outcome].append(result)
        return {page: dict(grouped[page]) for page in sorted(grouped)}

    def unused(self, expectations: list[Expectation]) -> list[Expectation]:
        """Expectation entries that matched no item of this run."""
        ids = [r.conformance_id for r in self.results.values()]
        return [e for e in expectations if not any(e.matches(i) for i in ids)]

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
        pages = {}
        for page, by_outcome in self.pages().items():
            pages[page] = {
                **{o: len(by_outcome.get(o, [])) for o in OUTCOMES},
                "items": [
                    {
                        "id": r.conformance_id,
                        "outcome": r.outcome,
                        "reason": r.reason,
                        "errata": r.errata,
                        "implementation": r.implementation,
                    }
                    for o in OUTCOMES
                    for r in by_outcome.get(o, [])
                ],
            }
        return {"environment": self.environment, "pages": pages}

    def as_markdown(self) -> str:
        lines = ["# Conformance summary", ""]
        for key, value in self.environment.items():
            lines.append(f"* {key}: {value}")
        lines += [
            "",
            "| page | passed | failed | xfailed | skipped | errata checked |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        totals = defaultdict(int)
        details: list[str] = []
        for page, by_outcome in self.pages().items():
            count = {o: len(by_outcome.get(o, [])) for o in OUTCOMES}
            errata = sorted({e for rs in by_outcome.values() for r in rs for e in r.errata})
            for o, n in count.items():
                totals[o] += n
            totals["errata"] += len(errata)
            lines.append(
                f"| `{page}` | {count['passed'] + count['xpassed']} | "
                f"{count['failed'] + count['error']} | {count['xfailed']} | {count['skipped']} | "
                f"{len(errata)} |"
            )
            for outcome in ("failed", "error", "xpassed", "xfailed", "skipped"):
                for r in by_outcome.get(outcome, []):
                    reason = r.reason.replace("|", "\\|")
                    details.append(f"| `{r.conformance_id}` | {outcome} | {reason} |")
        lines.append(
            f"| **total** | {totals['passed'] + totals['xpassed']} | "
            f"{totals['failed'] + totals['error']} | {totals['xfailed']} | {totals['skipped']} | "
            f"{totals['errata']} |"
        )
        errata_rows = []
        for result in sorted(self.results.values(), key=lambda r: r.conformance_id):
            for erratum in result.errata:
                errata_rows.append(f"| {erratum} | `{result.conformance_id}` | {result.outcome} |")
        if errata_rows:
            lines += ["", "## Errata", "", "| erratum | test | outcome |", "| --- | --- | --- |"]
            lines += sorted(errata_rows)
        if details:
            lines += ["", "## Not passed", "", "| test | outcome | reason |", "| --- | --- | --- |"]
            lines += details
        return "\n".join(lines) + "\n"
