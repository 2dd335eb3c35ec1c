"""benchmarks/gpu_check.py: its dry run on CPU writes every section, and its report machinery.

The dry run is the same script a GPU runs, on CPU tensors through the Triton interpreter at tiny
sizes (one run of about ten seconds, shared by the tests of this module).
"""

from __future__ import annotations

import doctest
import json
import sys
from pathlib import Path
from types import SimpleNamespace

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


def test_dry_run_conv_cases_run_both_main_loops(dry_run):
    # Each precision and layout of the conv sections runs shapes of the GEMM-form main loop
    # (>= 16 input channels per group) and of the flat-K variant, as the same shapes on a GPU.
    _, data, _ = dry_run
    for section in data["sections"]:
        if section["name"] not in ("conv_correctness", "conv_speed"):
            continue
        loops: dict[str, set[str]] = {}
        for case in section["cases"]:
            precision_layout = case["case"].split("/", 2)[2]
            loops.setdefault(precision_layout, set()).add(case["main_loop"])
        assert loops, section["name"]
        for precision_layout, seen in loops.items():
            assert seen == {"GEMM form", "flat K"}, (section["name"], precision_layout)


def test_dry_run_shapes_keep_the_main_loop_of_the_gpu_shapes():
    dry = gpu_check.Target(torch.device("cpu"), dry_run=True)
    for shape in traffic.CONV_SHAPES:
        small = gpu_check._shape(shape.name, dry)
        assert gpu_check.main_loop(small) == gpu_check.main_loop(shape), shape.name
        assert small.c_in <= 32, shape.name
        assert small.size <= 9, shape.name


def test_dry_run_tile_sweep_pins_every_tile_of_the_autotune_space(dry_run):
    _, data, _ = dry_run
    cases = next(s["cases"] for s in data["sections"] if s["name"] == "conv_tiles")
    pinned = {c["tile"] for c in cases if not c["tile"].startswith("autotuned")}
    assert pinned == {gpu_check.tile_label(tile) for tile in gpu_check.conv_tiles()}
    assert len(gpu_check.conv_tiles()) == 5
    # The tiny dry-run shape (6 output channels) fills only the narrowest tile.
    candidates = [c["tile"] for c in cases if c.get("autotune_candidate")]
    assert candidates == ["64x16x32, 4 warps, 3 stages"]


def test_autotuned_call_reports_how_the_call_tuned(monkeypatch):
    # The CUDA path of conv_autotuned_call, against Triton's own autotuning knobs, with a
    # stand-in for the conv kernel's Autotuner that "tunes" the way Triton's does: a new key in
    # its cache, best_config set, and the listener told about the timed tiles.
    from triton import knobs

    from torchkit.kernels import conv2d_relu

    best = conv2d_relu.Conv2dReLUBlocks(128, 64, 32, num_warps=4, num_stages=3)
    tuner = SimpleNamespace(cache={}, best_config=best)
    monkeypatch.setattr(conv2d_relu, "_conv2d_relu_fwd_kernel_autotuned", tuner)
    cuda = torch.device("cuda")

    def tune(key: str, timed: int | None) -> None:
        tuner.cache[key] = best
        if timed is not None:
            timings = {f"tile {i}": 1.0 + i for i in range(timed)}
            knobs.autotuning.listener(
                fn=None, key=key, best_config=best, configs_timings=timings, duration=0.25,
                cache_hit=False,
            )  # fmt: skip

    label = "128x64x32, 4 warps, 3 stages"
    assert gpu_check.conv_autotuned_call(lambda: tune("a", 3), cuda) == {
        "config": label, "tuning": "timed 3 tiles", "tune_s": 0.25,
    }  # fmt: skip
    assert knobs.autotuning.listener is None  # restored after the call
    assert gpu_check.conv_autotuned_call(lambda: tune("b", None), cuda) == {
        "config": label, "tuning": "one tile left after pruning, not timed", "tune_s": None,
    }  # fmt: skip
    assert gpu_check.conv_autotuned_call(lambda: None, cuda) == {
        "config": label, "tuning": "tuned earlier in this run", "tune_s": None,
    }  # fmt: skip


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


def test_report_records_skipped_and_errors_and_goes_on(tmp_path):
    report, _ = _report(tmp_path)

    def skipped() -> dict:
        raise gpu_check.Skipped("dry run: needs a GPU")

    def broken() -> dict:
        raise RuntimeError("boom")

    with report.section("s0") as section:
        for name, run in (("s", skipped), ("e", broken)):
            section.case(name, run)
        section.case("m", lambda: {"status": "mismatch", "reason": "off by one"})
        section.case("ok", lambda: {})
    cases = {c["case"]: c for c in _read(tmp_path)["sections"][0]["cases"]}
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


def test_adam_tiled_step_keeps_the_step_counters_its_plan_writes_alive():
    """An ``AdamPlan`` holds addresses, not tensors: the tiling sweep's step counters live in
    the caller's dict for as long as it launches the plan (freed ones were written after their
    memory was reused, which crashed the dry run's interpreted launches now and then)."""
    import gc

    from torchkit.kernels.adam import AdamTiling

    tensors = {
        "params": [torch.ones(8), torch.ones(3)],
        "grads": [torch.ones(8), torch.ones(3)],
        "exp_avgs": [torch.zeros(8), torch.zeros(3)],
        "exp_avg_sqs": [torch.zeros(8), torch.zeros(3)],
    }
    step, _ = gpu_check.adam_tiled_step(tensors, AdamTiling(block=4, chunk=4, num_warps=1))
    gc.collect()
    step()
    step()
    assert [s.item() for s in tensors["state_steps"]] == [2.0, 2.0]
