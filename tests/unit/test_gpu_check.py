"""benchmarks/gpu_check.py: its dry run on CPU writes every section, and its report machinery.

The dry run is the same script a GPU runs, on CPU tensors through the Triton interpreter at tiny
sizes (one run of about ten seconds, shared by the tests of this module).
"""

from __future__ import annotations

import doctest
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# benchmarks/ is a folder of scripts, not a package: its modules import each other this way too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_check
import run_all
import tables
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
        assert (small.kernel, small.stride, small.padding) == (
            shape.kernel, shape.stride, shape.padding,
        ), shape.name  # fmt: skip
        assert small.c_in <= 32, shape.name
        assert small.size <= 9, shape.name
        # 2 x 5 x 5 output pixels at most: one program instance of the interpreter's 64 rows
        assert small.batch * small.out_size**2 <= 50, shape.name


def test_dry_run_warm_up_runs_every_kind_of_job_in_the_pool(dry_run):
    _, data, _ = dry_run
    cases = next(s["cases"] for s in data["sections"] if s["name"] == "warm_up")
    assert [c["case"] for c in cases] == [f"warm_up/{kind}" for kind in gpu_check.WARM_JOBS]
    for case in cases:
        assert case["status"] == "ok", case
        assert case["finished"] == case["jobs"] > 0, case
        assert (case["failed"], case["unfinished"]) == (0, 0), case
        assert case["workers"] == 2
        assert case["note"].startswith("dry run: ")


def _warm_targets() -> list[tuple[str, tuple, tuple]]:
    gpu = gpu_check.Target(torch.device("cuda"), dry_run=False)  # no CUDA call: planning only
    return gpu_check.warm_up_jobs(gpu)


def test_warm_up_covers_every_tile_the_conv_cases_may_launch():
    jobs = _warm_targets()
    conv = [args for kind, args, _ in jobs if kind == "conv"]
    assert len(conv) == len(set(conv)), "duplicate warm-up jobs"
    warmed = {(name, precision, layout, gpu_check.tile_label(tile))
              for name, precision, layout, tile in conv}  # fmt: skip
    gpu = gpu_check.Target(torch.device("cuda"), dry_run=False)
    cases = [(n, p, lay) for p, lay in gpu_check._conv_correctness_variants()
             for n in gpu_check.CONV_CORRECTNESS]  # fmt: skip
    cases += [(s.name, p, lay) for p, lay in gpu_check.SPEED_VARIANTS for s in traffic.CONV_SHAPES]
    for name, precision, layout in cases:
        dtype, _, _ = gpu_check.PRECISIONS[precision]
        shape = gpu_check._shape(name, gpu)
        # What autotuning may run for this case: the candidates of either fp32 precision, as the
        # autotuner's key names the dtype only.
        for use_tf32 in (False, True):
            for config in gpu_check.autotune_candidates(shape, dtype, use_tf32):
                if dtype != torch.float32 and use_tf32:
                    continue
                assert (name, precision, layout, gpu_check.tile_label(config)) in warmed
    for tile in gpu_check.conv_tiles():  # the sweep pins every tile on its shape
        assert (gpu_check.TILE_SHAPE, "fp16", "channels_last", gpu_check.tile_label(tile)) in warmed


def test_warm_up_covers_every_adam_case_and_a_dry_run_keeps_one_job_per_group():
    kinds = {}
    for kind, args, _ in _warm_targets():
        kinds.setdefault(kind, []).append(args)
    assert set(kinds) == set(gpu_check.WARM_JOBS)
    assert kinds["adam_compare"] == [
        (d, v) for d in gpu_check.DTYPES for v in gpu_check.ADAM_VARIANTS
    ]
    assert len(kinds["adam_tiling"]) == len(gpu_check.adam_tilings())
    assert len(kinds["adam_step_time"]) == 6
    dry = gpu_check.warm_up_jobs(gpu_check.Target(torch.device("cpu"), dry_run=True))
    groups = [(kind, *group) for kind, _, group in dry]
    assert len(groups) == len(set(groups))
    conv_groups = {group for kind, _, group in dry if kind == "conv"}
    assert conv_groups == {(layout, loop) for layout in gpu_check.LAYOUTS
                           for loop in ("GEMM form", "flat K")}  # fmt: skip


def test_gradient_reference_uses_the_checked_outputs_relu_mask():
    # One output pixel whose float64 pre-activation is +1e-12: an implementation that rounds it
    # to 0 masks its gradient out, as its own backward must. Against a reference with that same
    # mask its gradients are exact; against float64's own mask grad_input would be off by 100%.
    x = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    x[..., 0], x[..., 1] = 1e-12, 1.0
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    exact = [t.clone().requires_grad_() for t in (x, weight, torch.zeros(1, dtype=torch.float64))]
    pre_activation = torch.nn.functional.conv2d(*exact)
    y = torch.tensor([[[[0.0, 1.0]]]], dtype=torch.float64)  # the implementation's output
    upstream = torch.ones_like(y)
    grads = [torch.tensor([[[[0.0, 1.0]]]]), torch.tensor([[[[1.0]]]]), torch.tensor([1.0])]
    errors = gpu_check._errors_against_float64(y, grads, pre_activation, exact, upstream)
    assert errors[1:] == [0.0, 0.0, 0.0]
    assert errors[0] == pytest.approx(1e-12)


def test_conv_speed_times_each_path_on_its_own(monkeypatch):
    # A failing stock path is recorded in its own columns; the other paths are still timed,
    # with cudnn.benchmark on for the stock ones only, and the setting restored after.
    seen = []

    def failing_cudnn(x, conv):
        def call():
            seen.append(torch.backends.cudnn.benchmark)
            raise RuntimeError("CUDNN_STATUS_NOT_SUPPORTED")

        return call

    monkeypatch.setattr(gpu_check, "_cudnn_fused", failing_cudnn)
    dry = gpu_check.Target(torch.device("cpu"), dry_run=True)
    figures = gpu_check.conv_speed(dry, "lenet.conv1", "fp16", "channels_last")
    assert seen == [True, True]  # tried for the eager and for the graph timing
    assert torch.backends.cudnn.benchmark is False
    assert figures["cudnn_fused_us"].startswith("error: RuntimeError: CUDNN_STATUS_NOT_SUPPORTED")
    assert figures["cudnn_fused_graph_us"] == figures["cudnn_fused_us"]
    assert figures["cudnn_fused_tflops"] is None
    assert figures["reason"].startswith("cudnn_fused us: error: RuntimeError")
    assert "torchkit_over_cudnn_fused" not in figures
    assert "status" not in figures  # the case stays ok: torchkit's path ran
    for path in ("torchkit", "conv_relu_"):
        assert figures[f"{path}_us"] > 0, path
        assert figures[f"{path}_graph_us"] > 0, path
    assert figures["torchkit_over_conv_relu_"] > 0


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
    # The CUDA path of conv_autotuned_call, with a stand-in for the conv kernel's Autotuner that
    # "tunes" the way Triton's (3.2 to 3.9) does: a new key in its cache, best_config set, and,
    # when it timed several tiles, a new configs_timings dict and bench_time.
    from torchkit.kernels import conv2d_relu

    best = conv2d_relu.Conv2dReLUBlocks(128, 64, 32, num_warps=4, num_stages=3)
    tuner = SimpleNamespace(cache={}, best_config=best)
    monkeypatch.setattr(conv2d_relu, "_conv2d_relu_fwd_kernel_autotuned", tuner)
    cuda = torch.device("cuda")

    def tune(key: str, timed: int | None) -> None:
        tuner.cache[key] = best
        if timed is not None:
            tuner.configs_timings = {f"tile {i}": 1.0 + i for i in range(timed)}
            tuner.bench_time = 0.25

    label = "128x64x32, 4 warps, 3 stages"
    assert gpu_check.conv_autotuned_call(lambda: tune("a", 3), cuda) == {
        "config": label, "tuning": "timed 3 tiles", "tune_s": 0.25,
    }  # fmt: skip
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


def test_an_unusable_device_stops_the_run_after_marking_the_case(tmp_path):
    clock = _Clock()
    problems = iter([None, "CUDA error: an illegal memory access was encountered"])
    report = gpu_check.Report(
        tmp_path, {"gpu": "test"}, [("s0", "Section 0", 10.0)], clock=clock,
        health=lambda: next(problems),
    )  # fmt: skip
    ran = []

    def run_section() -> None:
        with report.section("s0") as section:
            for name in ("a", "b", "c"):
                section.case(name, lambda n=name: ran.append(n) or {})

    with pytest.raises(gpu_check.DeviceLost, match="after case b"):
        run_section()
    assert ran == ["a", "b"]
    cases = {c["case"]: c for c in _read(tmp_path)["sections"][0]["cases"]}
    assert cases["a"]["status"] == "ok"
    assert cases["b"]["status"] == "error"
    assert "illegal memory access" in cases["b"]["device"]


def test_main_stops_with_status_3_when_the_device_is_lost(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check.Target, "health", lambda self: "CUDA error: launch failure")
    status = gpu_check.main(["--dry-run", "--out", str(tmp_path), "--sections", "adam_large"])
    assert status == gpu_check.EXIT_STOPPED == 3
    meta = _read(tmp_path)["meta"]
    assert meta["stopped"].startswith("the CUDA context is unusable after case adam_large/")
    assert meta["finished"] is False


def test_main_stops_at_the_deadline_and_keeps_what_it_measured(tmp_path):
    # The tile sweep takes about a second in a dry run; the watchdog interrupts it.
    argv = ["--dry-run", "--out", str(tmp_path), "--sections", "conv_tiles", "--deadline", "0.3"]
    assert gpu_check.main(argv) == gpu_check.EXIT_STOPPED
    data = _read(tmp_path)
    assert data["meta"]["stopped"].startswith("the watchdog stopped the run at its 0.3 s deadline")
    assert "(during case conv_tile/" in data["meta"]["stopped"]
    assert "stopped" in (tmp_path / "gpu_check.md").read_text()


def test_time_limits_nest_inside_five_minutes_as_the_docs_say():
    # Budgets < watchdog < the device script's timeout < the device call's timeout_s, and the
    # performance page and the script state the same figures.
    root = Path(gpu_check.__file__).resolve().parents[1]
    script = (root / "benchmarks" / "device_run.sh").read_text()
    page = (root / "docs" / "performance.md").read_text()
    budgets = sum(budget for _, _, budget in gpu_check.SECTIONS)
    timeout = int(re.search(r"GPU_CHECK_TIMEOUT:-(\d+)", script).group(1))
    call = int(re.search(r"timeout_s=(\d+)", page).group(1))
    assert budgets + 20 <= gpu_check.DEADLINE_S < timeout < call <= 5.5 * 60
    assert timeout + 20 < call  # the install and the start-up fit in between
    for figure in (budgets, gpu_check.DEADLINE_S, timeout):
        assert f"{figure:g} s" in page, figure


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
    for module in (gpu_check, traffic, run_all, tables):
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
