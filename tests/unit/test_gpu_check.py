"""benchmarks/gpu_check.py: its dry run on CPU writes every section, and its report machinery.

The dry run is the same script a GPU runs, on CPU tensors through the Triton interpreter at tiny
sizes (one run of about ten seconds, shared by the tests of this module).
"""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path

import pytest
import torch

# benchmarks/ is a folder of scripts, not a package: its modules import each other this way too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_check
import run_all
import traffic


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str]:
    """``python benchmarks/gpu_check.py --dry-run`` in this process: (exit status, JSON, .md)."""
    out = tmp_path_factory.mktemp("gpu_check")
    with torch.random.fork_rng():
        status = gpu_check.main(["--dry-run", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.md"]
    return (
        status,
        json.loads((out / "gpu_check.json").read_text()),
        (out / "gpu_check.md").read_text(),
    )


def test_dry_run_writes_every_section_in_order(dry_run):
    _, data, markdown = dry_run
    names = [s["name"] for s in data["sections"]]
    assert names == [name for name, _, _ in gpu_check.SECTIONS]
    for section in data["sections"]:
        assert section["cases"], f"section {section['name']} ran no case"
        assert f"## {section['title']}" in markdown
        for case in section["cases"]:
            assert f"| {case['case']} | {case['status']} |" in markdown


def test_dry_run_meta_names_the_run(dry_run):
    _, data, _ = dry_run
    meta = data["meta"]
    assert meta["dry_run"] is True
    assert meta["finished"] is True
    assert meta["torch"] == torch.__version__
    for key in ("triton", "torchkit", "python", "started_utc", "command", "elapsed_s"):
        assert meta[key], key


def test_dry_run_cases_pass_or_say_why(dry_run):
    status, data, _ = dry_run
    unexpected = {
        c["case"]: (c["status"], c.get("reason"))
        for s in data["sections"]
        for c in s["cases"]
        # Work only a GPU can do is skipped explicitly, never silently.
        if c["status"] != "ok"
        and not (c["status"] == "skipped" and c["reason"].startswith("dry run: "))
    }
    assert not unexpected
    assert status == 0


def test_dry_run_runs_the_triton_kernels(dry_run):
    _, data, _ = dry_run
    backends = {
        c["backend"]
        for s in data["sections"]
        for c in s["cases"]
        if c["status"] == "ok" and "backend" in c
    }
    assert backends == {"triton-interpreter"}
    # Graphs replay eagerly in a dry run, and say so.
    modes = {c["mode"] for s in data["sections"] for c in s["cases"] if "mode" in c}
    assert modes == {"eager", "graph (eager stand-in)"}


# --------------------------------------------------------------------------------------------
# The report


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _report(tmp_path: Path, budgets: tuple[float, ...] = (10.0, 10.0)):
    clock = _Clock()
    sections = [(f"s{i}", f"Section {i}", b) for i, b in enumerate(budgets)]
    return gpu_check.Report(tmp_path, {"gpu": "test"}, sections, clock=clock), clock


def _read(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "gpu_check.json").read_text())


def test_report_is_rewritten_after_every_case_and_never_half_written(tmp_path):
    report, clock = _report(tmp_path)
    with report.section("s0") as section:
        section.case("a", lambda: {"time_us": 1.5})
        assert [c["case"] for c in _read(tmp_path)["sections"][0]["cases"]] == ["a"]
        clock.now = 1.0
        section.case("b", lambda: {"time_us": 2.5})
        assert [c["case"] for c in _read(tmp_path)["sections"][0]["cases"]] == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_check.json", "gpu_check.md"]
    assert "| b | ok | 2.5 |" in (tmp_path / "gpu_check.md").read_text()


def test_report_records_unsupported_skipped_and_errors_and_goes_on(tmp_path):
    report, _ = _report(tmp_path)

    def unsupported() -> dict:
        raise gpu_check.Unsupported("capturable=True is not supported")

    def skipped() -> dict:
        raise gpu_check.Skipped("dry run: needs a GPU")

    def broken() -> dict:
        raise RuntimeError("boom")

    with report.section("s0") as section:
        for name, run in (("u", unsupported), ("s", skipped), ("e", broken)):
            section.case(name, run)
        section.case("m", lambda: {"status": "mismatch", "reason": "off by one"})
        section.case("ok", lambda: {})
    cases = {c["case"]: c for c in _read(tmp_path)["sections"][0]["cases"]}
    assert cases["u"]["status"] == "unsupported"
    assert cases["u"]["reason"] == "capturable=True is not supported"
    assert (cases["s"]["status"], cases["s"]["reason"]) == ("skipped", "dry run: needs a GPU")
    assert (cases["e"]["status"], cases["e"]["reason"]) == ("error", "RuntimeError: boom")
    assert cases["e"]["where"].startswith("test_gpu_check.py:")
    assert cases["ok"]["status"] == "ok"
    assert [c["case"] for c in report.failures()] == ["e", "m"]


def test_sections_share_one_cumulative_budget(tmp_path):
    # Section deadlines: s0 at 10 s, s1 at 20 s from the start of the run.
    report, clock = _report(tmp_path)
    ran = []
    with report.section("s0") as section:
        clock.now = 4.0
        section.case("early", lambda: ran.append("early") or {})
        clock.now = 10.5  # past s0's deadline: recorded, not run
        section.case("late", lambda: ran.append("late") or {})
    with report.section("s1") as section:  # time s0 left over would pass on; here none did
        section.case("next", lambda: ran.append("next") or {})
        clock.now = 20.5
        section.case("last", lambda: ran.append("last") or {})
    assert ran == ["early", "next"]
    cases = {c["case"]: c for s in _read(tmp_path)["sections"] for c in s["cases"]}
    assert cases["late"]["status"] == cases["last"]["status"] == "skipped"
    assert cases["late"]["reason"].startswith("time budget")


def test_main_refuses_a_gpu_run_without_cuda_and_unknown_sections(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", "unused"])
    assert "--dry-run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check.main(["--dry-run", "--sections", "adam_correctness,warp_drive"])
    assert "warp_drive" in capsys.readouterr().err


def test_docstring_examples_of_the_benchmark_scripts():
    for module in (gpu_check, traffic, run_all):
        result = doctest.testmod(module)
        assert result.attempted > 0, module.__name__
        assert result.failed == 0, module.__name__
