"""The arithmetic behind docs/performance.md: the roofline model and the page generator.

Hand-computed cases of the roofline model, and the generated blocks of the page.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

# benchmarks/ is a folder of scripts, not a package: its modules import each other this way too.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import run_all
import traffic

from torchkit.kernel_report import KernelResources, config_label
from torchkit.kernels import conv2d_relu

# --------------------------------------------------------------------------------------------
# The roofline model: hand-computed cases


@pytest.mark.parametrize(
    ("dtype", "options", "fused", "foreach"),
    [
        # fused: read p, g, m, v and write p, m, v: 7 passes; foreach: 18 (see adam_bytes_per_param)
        (torch.float32, {}, 28, 72),
        (torch.bfloat16, {}, 14, 36),
        (torch.float16, {}, 14, 36),
        # amsgrad: v_max read and written (+2), and torch's maximum_ over it (+3)
        (torch.float32, {"amsgrad": True}, 36, 84),
        # a GradScaler's grad_scale: the unscaled gradient is written back (+1, fused only)
        (torch.float32, {"grad_scale": True}, 32, 72),
    ],
    ids=["fp32", "bf16", "fp16", "fp32-amsgrad", "fp32-grad_scale"],
)
def test_adam_bytes_per_parameter(dtype, options, fused, foreach):
    assert traffic.adam_bytes_per_param(dtype, **options) == (fused, foreach)


@pytest.mark.parametrize(
    ("numels", "amsgrad", "launches"),
    [
        ([1000] * 36, False, 1),  # 36 tensors fill one launch of depth 4
        ([1000] * 37, False, 2),
        ([1000] * 30, True, 1),  # depth 5 (AMSGrad): 30 tensors
        ([1000] * 31, True, 2),
        ([320 * 65536], False, 1),  # 320 chunks fill one launch exactly
        ([320 * 65536 + 1], False, 2),  # the 321st chunk carries the tensor into a second
        ([0, 5, 0], False, 1),  # empty tensors take no slot
        ([], False, 0),
    ],
)
def test_torch_fused_adam_launches_follow_multi_tensor_apply(numels, amsgrad, launches):
    assert traffic.torch_fused_adam_launches(numels, amsgrad=amsgrad) == launches


def test_parameter_lists_of_the_step_benchmarks():
    lenet = traffic.step_time_param_shapes(10)
    resnet = traffic.step_time_param_shapes(161)
    assert (len(lenet), sum(math.prod(s) for s in lenet)) == (10, 61_706)
    assert (len(resnet), sum(math.prod(s) for s in resnet)) == (161, 25_557_032)
    assert len(traffic.step_time_param_shapes(400)) == 400


def test_adam_paths_count_bytes_and_launches():
    # LeNet-5 in 2 groups of 5 tensors: torch launches its fused kernel once per group and adds
    # its step counters with one _foreach_add_ per group.
    case = traffic.AdamCase(
        "lenet", tuple(map(math.prod, traffic.lenet5_param_shapes())), 2, torch.float32
    )
    paths = case.paths()
    assert paths["torchkit"].bytes == 28 * 61_706
    assert paths["torchkit"].launches == 1
    assert paths["torch_fused"].bytes == pytest.approx(28 * 61_706)
    assert paths["torch_fused"].launches == 4
    assert paths["torch_foreach"].bytes == pytest.approx(72 * 61_706)
    assert paths["torch_foreach"].launches == 14
    # Memory-bound: the floor is the bytes over the H200's bandwidth.
    assert paths["torchkit"].bound(traffic.H200, "fp32") == "memory"
    assert paths["torchkit"].floor(traffic.H200, "fp32") == pytest.approx(28 * 61_706 / 4.8e12)


def _shape(name):
    return next(s for s in traffic.CONV_SHAPES if s.name == name)


def test_resnet_layer1_unfused_traffic_is_five_output_passes_in_three_launches():
    # 32x64x56x56 fp16, 64 3x3 filters, padding 1: x 12,845,056 B, w 73,728 B, b 128 B, y as x.
    paths = traffic.conv_paths(_shape("resnet50.layer1.3x3"), torch.float16)
    x, w, b, y = 32 * 64 * 56 * 56 * 2, 64 * 64 * 9 * 2, 64 * 2, 32 * 64 * 56 * 56 * 2
    assert paths["torchkit"].bytes == x + w + b + y == 25_763_968
    assert paths["torch"].bytes == x + w + b + 5 * y == 77_144_192  # 77.1 MB, not 51.5
    assert [k.name for k in paths["torch"].kernels] == ["cudnn_convolution", "add_ (bias)", "relu_"]
    assert paths["cudnn_fused"].bytes == paths["torchkit"].bytes
    assert paths["cudnn_fused"].launches == 1


def test_resnet_layer1_sits_at_the_h100_fp16_ridge_and_above_the_h200s():
    path = traffic.conv_paths(_shape("resnet50.layer1.3x3"), torch.float16)["torchkit"]
    flops = 2 * 32 * 56 * 56 * 64 * 64 * 9
    assert path.flops == flops == 7_398_752_256
    assert flops / path.bytes == pytest.approx(287.2, abs=0.05)
    assert traffic.H100.ridge("fp16") == pytest.approx(295.4, abs=0.05)
    assert traffic.H200.ridge("fp16") == pytest.approx(206.1, abs=0.05)
    assert path.bound(traffic.H100, "fp16") == "memory"  # 287 < 295: just below the ridge
    assert path.floor(traffic.H100, "fp16") == pytest.approx(25_763_968 / 3.35e12)
    assert path.bound(traffic.H200, "fp16") == "compute"
    assert path.floor(traffic.H200, "fp16") == pytest.approx(flops / 989.5e12)
    assert path.bound(traffic.A100, "fp16") == "compute"


def test_resnet_layer3_is_compute_bound_with_a_7_5_us_floor():
    # 32x256x14x14 bf16, 256 3x3 filters: 973 FLOP per byte, above every ridge.
    path = traffic.conv_paths(_shape("resnet50.layer3.3x3"), torch.bfloat16)["torchkit"]
    assert path.bytes == (32 * 256 * 196 + 256 * 256 * 9 + 256 + 32 * 256 * 196) * 2 == 7_602_688
    assert path.flops / path.bytes == pytest.approx(973.2, abs=0.05)
    for gpu in traffic.GPUS:
        assert path.bound(gpu, "bf16") == "compute"
    assert path.floor(traffic.H100, "bf16") * 1e6 == pytest.approx(7.477, abs=1e-3)
    # The unfused floor adds the bias and ReLU passes, memory-bound, to the same convolution.
    unfused = traffic.conv_paths(_shape("resnet50.layer3.3x3"), torch.bfloat16)["torch"]
    y = 32 * 256 * 196 * 2
    extra = (2 * y + 512 + 2 * y) / 3.35e12
    assert unfused.floor(traffic.H100, "bf16") == pytest.approx(path.flops / 989.5e12 + extra)


def test_lenet_is_memory_bound_everywhere_and_bias_free_convolutions_take_two_launches():
    for precision in ((torch.float16, "fp16"), (torch.float32, "tf32")):
        for name in ("lenet.conv1", "lenet.conv2"):
            path = traffic.conv_paths(_shape(name), precision[0])["torchkit"]
            assert all(path.bound(g, precision[1]) == "memory" for g in traffic.GPUS)
    shape = traffic.ConvShape("no bias", 2, 3, 4, 8, 3, bias=False)
    paths = traffic.conv_paths(shape, torch.float32)
    y = 2 * 4 * 6 * 6 * 4
    assert paths["torch"].launches == 2
    assert (
        paths["torch"].bytes - paths["torchkit"].bytes == 2 * y
    )  # conv writes y, relu_ reads + writes


def test_nchw_input_adds_torchkits_copy_to_channels_last():
    # ResNet layer1 in fp32, NCHW: the launcher copies x to channels_last (read + write x) in
    # a launch of its own before the fused kernel: 102.9 MB in 2 launches, not 51.5 MB in 1.
    layer1 = _shape("resnet50.layer1.3x3")
    x, w, b, y = 32 * 64 * 56 * 56 * 4, 64 * 64 * 9 * 4, 64 * 4, 32 * 64 * 56 * 56 * 4
    nchw = traffic.conv_paths(layer1, torch.float32, "nchw")["torchkit"]
    assert [k.name for k in nchw.kernels] == ["contiguous(channels_last) of x", "conv"]
    assert nchw.kernels[0].bytes == 2 * x == 51_380_224
    assert nchw.kernels[0].flops == 0
    assert nchw.bytes == 3 * x + w + b + y == 102_908_160
    channels_last = traffic.conv_paths(layer1, torch.float32, "channels_last")["torchkit"]
    assert (channels_last.bytes, channels_last.launches) == (x + w + b + y, 1) == (51_527_936, 1)
    # H200, TF32: the copy is memory-bound (10.70 us), the convolution compute-bound (14.96 us)
    flops = 2 * 32 * 56 * 56 * 64 * 64 * 9
    assert nchw.floor(traffic.H200, "tf32") == pytest.approx(2 * x / 4.8e12 + flops / 494.5e12)
    assert nchw.bound(traffic.H200, "tf32") == "compute"
    # H100: the copy (15.34 us) and the convolution's bytes (15.38 us > 14.96 us of FLOPs)
    assert nchw.floor(traffic.H100, "tf32") == pytest.approx((2 * x + x + w + b + y) / 3.35e12)
    assert nchw.bound(traffic.H100, "tf32") == "memory"
    # The stock paths read NCHW as they are (any transpose inside cuDNN is not counted).
    for name in ("torch", "cudnn_fused"):
        assert (
            traffic.conv_paths(layer1, torch.float32, "nchw")[name].bytes
            == traffic.conv_paths(layer1, torch.float32)[name].bytes
        )


def test_a_one_channel_nchw_input_needs_no_copy():
    # LeNet's first layer: with one channel, NCHW is already NHWC; the launcher copies nothing.
    lenet = _shape("lenet.conv1")
    nchw = traffic.conv_paths(lenet, torch.float32, "nchw")["torchkit"]
    assert nchw.launches == 1
    assert nchw.bytes == (64 * 32 * 32 + 6 * 25 + 6 + 64 * 6 * 28 * 28) * 4
    with pytest.raises(ValueError, match="layout must be one of"):
        traffic.conv_paths(lenet, torch.float32, "nhwc")


def test_gpu_constants_are_the_datasheets():
    assert (traffic.A100.bandwidth, traffic.H100.bandwidth, traffic.H200.bandwidth) == (
        2.039e12,
        3.35e12,
        4.8e12,
    )
    assert traffic.A100.peaks == {"fp16": 312e12, "bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12}
    assert traffic.H100.peaks["tf32"] == traffic.H200.peaks["tf32"] == 494.5e12
    assert traffic.gpu_for("NVIDIA H100 80GB HBM3") is traffic.H100
    assert traffic.gpu_for("NVIDIA A100-SXM4-80GB") is traffic.A100
    assert traffic.gpu_for("NVIDIA A100-SXM4-40GB").bandwidth == 1.555e12
    assert traffic.gpu_for("NVIDIA H200 NVL") is None


def test_conv_output_size_follows_stride_and_padding():
    stem = _shape("resnet50.conv1")  # 224x224, 7x7, stride 2, padding 3 -> 112x112
    assert stem.out_size == 112
    assert stem.flops == 2 * 32 * 112 * 112 * 64 * 3 * 49


def test_model_tables_have_a_row_per_case():
    fp16 = traffic.conv_table(torch.float16).splitlines()
    assert len(fp16) == 2 + len(traffic.CONV_SHAPES)
    row = next(line for line in fp16 if line.startswith("| resnet50.layer1.3x3"))
    assert "| 25.76 / 77.14 | 1 / 3 | 287 |" in row
    assert "memory, 7.69 / " in row  # H100
    tf32 = traffic.conv_table(torch.float32, tf32=True, layout="nchw").splitlines()
    row = next(line for line in tf32 if line.startswith("| resnet50.layer1.3x3"))
    assert "| 102.91 / 154.29 | 2 / 3 | 144 |" in row
    assert "compute, 25.67 / 36.37" in row  # H200: 10.70 us of copy + 14.96 us of convolution
    adam = traffic.adam_table().splitlines()
    assert len(adam) == 2 + len(traffic.ADAM_CASES)


PAGE = """intro
<!-- begin: a -->
old a
<!-- end: a -->
middle
<!-- begin: b -->
<!-- end: b -->
outro
"""


def test_replace_block_rewrites_only_the_named_block():
    text = run_all.replace_block(PAGE, "a", "new a\n\n")
    assert text == PAGE.replace("old a", "new a")
    text = run_all.replace_block(text, "b", "| x |")
    assert "<!-- begin: b -->\n| x |\n<!-- end: b -->" in text
    assert text.startswith("intro\n")
    assert text.endswith("outro\n")


def test_replace_block_is_idempotent_and_literal():
    # A body with regex replacement syntax must land verbatim.
    body = r"\1 \g<0> $1"
    once = run_all.replace_block(PAGE, "a", body)
    assert run_all.replace_block(once, "a", body) == once
    assert f"<!-- begin: a -->\n{body}\n<!-- end: a -->" in once


def test_replace_block_names_a_missing_block():
    with pytest.raises(ValueError, match="<!-- begin: c -->"):
        run_all.replace_block(PAGE, "c", "body")


# --------------------------------------------------------------------------------------------
# The page's GPU and per-shape blocks


def _run(gpu: str, dry_run: bool = False) -> dict:
    """A gpu_check.json as the script writes it, with one case per section that matters here."""
    return {
        "meta": {"gpu": gpu, "dry_run": dry_run, "finished": True, "elapsed_s": 250.0},
        "sections": [
            {
                "name": "adam_correctness",
                "title": "Adam correctness",
                "cases": [
                    {"case": "adam/fp32/plain", "status": "ok", "bitwise_equal": 1.0},
                    {"case": "adam/fp32/maximize", "status": "mismatch", "reason": "off"},
                ],
            },
            {
                "name": "conv_speed",
                "title": "Conv speed",
                "cases": [
                    {
                        "case": "conv_speed/resnet50.layer1.3x3/fp16/channels_last",
                        "status": "ok",
                        "torchkit_us": 31.25,
                        "torchkit_graph_us": 24.5,
                        "conv_relu__us": 25.0,
                        "conv_relu__graph_us": 20.0,
                    }
                ],
            },
        ],
    }


def _write(folder, name: str, run: dict) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "gpu_check.json").write_text(json.dumps(run))


def test_load_results_takes_gpu_runs_and_leaves_dry_runs_out(tmp_path):
    results = tmp_path / "benchmarks" / "results"
    _write(results, "NVIDIA-H200", _run("NVIDIA H200"))
    _write(results, "dry-run", _run("none", dry_run=True))
    runs = run_all.load_results(results)
    assert [r["meta"]["gpu"] for r in runs] == ["NVIDIA H200"]
    assert runs[0]["path"] == "benchmarks/results/NVIDIA-H200/gpu_check.json"


def test_gpu_block_says_not_measured_for_every_section_without_a_run():
    block = run_all.gpu_block([])
    for name, title, _ in run_all.gpu_check.SECTIONS:
        assert f"| `{name}` | {title} | not measured |" in block


def test_gpu_block_shows_a_run_and_only_the_failed_correctness_cases():
    run = {**_run("NVIDIA H200"), "path": "benchmarks/results/NVIDIA-H200/gpu_check.json"}
    block = run_all.gpu_block([run])
    assert "### NVIDIA H200" in block
    assert "**Adam correctness** (1 ok, 1 mismatch)" in block
    assert "adam/fp32/maximize | mismatch" in block
    assert "adam/fp32/plain" not in block  # passing correctness cases stay in gpu_check.md
    # graph times first, then eager; a column no case has (cudnn_fused) reads "-"
    assert (
        "| conv_speed/resnet50.layer1.3x3/fp16/channels_last | ok | 24.5 | 20 | - | 31.25 | 25 |"
        in block
    )


def test_gpu_block_says_why_a_run_stopped():
    run = _run("NVIDIA H200")
    run["meta"].update(finished=False, stopped="the CUDA context is unusable after case x")
    block = run_all.gpu_block([{**run, "path": "benchmarks/results/NVIDIA-H200/gpu_check.json"}])
    assert "(stopped: the CUDA context is unusable after case x, 250 s," in block


def _kernel_row(
    variant: str, tile: str, loop: int, yardstick: int | None, registers: int, arch: str = "sm_90"
) -> KernelResources:
    """A conv row of the kernel report compiled with the autotune tile ``tile`` ("MxNxK"), its
    variant fields as ``aot_specs`` sets them for the label ``variant``."""
    config = next(t.config() for t in conv2d_relu.TILES if _tile(t) == tile)
    tokens = variant.split(",")
    return KernelResources(
        kernel=run_all.CONV_KERNEL,
        variant=variant,
        arch=arch,
        config=config_label(config),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        registers=registers,
        spill_stores=0,
        spill_loads=0,
        shared_mem=0,
        ptx_bytes=0,
        block=[int(size) for size in tile.split("x")],
        loop_instructions=loop,
        loop_mma=4,
        loop_async_copies=6,
        max_global_load_bits=128,
        ieee_sqrt_div=None,
        yardstick_loop_instructions=yardstick,
        dtype=tokens[0],
        input_precision="tf32" if "tf32" in tokens else "ieee",
        layout="nchw" if "nchw" in tokens else "channels_last",
        flat_k="flat K" in tokens,
        channels=3 if "flat K" in tokens else 64,
    )


def _tile(tile: conv2d_relu.Conv2dReLUBlocks) -> str:
    return f"{tile.block_m}x{tile.block_n}x{tile.block_k}"


def _line(lines: list[str], shape: str, precision: str) -> str:
    return next(line for line in lines if line.startswith(f"| {shape}:") and precision in line)


def test_autotune_candidates_of_resnet_layer1_and_lenet():
    # ResNet layer1 3x3, 64 -> 64 channels: tiles between 32 and 64 output channels wide
    # (128x128 is wider than the layer, 64x16 narrower than 32); LeNet's conv2 (16 output
    # channels) only fills the 16-wide tile.
    shapes = {s.name: s for s in traffic.CONV_SHAPES}
    layer1 = run_all.gpu_check.autotune_candidates(
        shapes["resnet50.layer1.3x3"], torch.float16, tf32=False
    )
    assert [_tile(c) for c in layer1] == ["128x64x32", "64x64x32", "128x32x32"]
    lenet = run_all.gpu_check.autotune_candidates(shapes["lenet.conv2"], torch.float32, tf32=True)
    assert [_tile(c) for c in lenet] == ["64x16x32"]


def test_shapes_block_shows_the_bound_the_tiles_static_figures_and_measurements():
    rows = [
        # fp16 channels_last, GEMM form: layer1's three candidate tiles, and one it never runs
        _kernel_row("fp16,channels_last", "128x64x32", 120, 80, 128),
        _kernel_row("fp16,channels_last", "64x64x32", 100, 80, 64),
        _kernel_row("fp16,channels_last", "128x32x32", 90, 75, 96),
        _kernel_row("fp16,channels_last", "64x16x32", 999, 70, 255),
        _kernel_row("fp16,channels_last", "128x64x32", 500, 80, 200, arch="sm_80"),
        # the flat-K variant, no yardstick; bf16 compiled for NCHW only; no TF32 variant
        _kernel_row("fp16,channels_last,flat K", "64x16x32", 363, None, 124),
        _kernel_row("bf16,nchw,no bias", "128x64x32", 104, 85, 220),
    ]
    lines = run_all.shapes_block(rows, [_run("NVIDIA H200")]).splitlines()
    layer1 = _line(lines, "resnet50.layer1.3x3", "fp16, channels_last")
    assert layer1 == (
        "| resnet50.layer1.3x3: 64->64, 3x3, 32x56x56 | fp16, channels_last | compute, 23.71 "
        "| memory, 7.69 | compute, 7.48 | GEMM form | `fp16,channels_last` "
        "| 128x64x32, 64x64x32, 128x32x32 | 90-120 vs 75-80 (1.20-1.50x) | 64-128 | 3 "
        "| 24.5 / 31.2 (NVIDIA H200) |"
    )
    lenet = _line(lines, "lenet.conv2", "fp16, channels_last")
    assert (
        "| flat K | `fp16,channels_last,flat K` | 64x16x32 | 363 (no yardstick) | 124 | 3 |"
        in lenet
    )
    assert lenet.endswith("| not measured |")
    bf16 = _line(lines, "resnet50.layer1.3x3", "bf16, channels_last")
    assert (
        "| `bf16,nchw,no bias` (other layout) | 128x64x32, 64x64x32, 128x32x32 "
        "| 104 vs 85 (1.22x) |" in bf16
    )
    tf32 = _line(lines, "resnet50.layer3.3x3", "tf32, nchw")
    assert (
        "| GEMM form | none compiled | 128x128x32, 128x64x32, 64x64x32, 128x32x32 | - | - | - |"
        in tf32
    )


def test_variants_block_is_the_reports_yardstick_table_on_sm_90():
    rows = [
        _kernel_row("fp16,channels_last", "128x64x32", 120, 80, 128),
        _kernel_row("fp16,channels_last", "128x64x32", 500, 80, 200, arch="sm_80"),
        _kernel_row("fp16,channels_last,flat K", "64x16x32", 363, None, 124),
    ]
    lines = run_all.variants_block(rows).splitlines()
    # tile, warps, stages, loop, yardstick, ratio, MMAs, async copies, load bits, registers, spills
    figures = "128x64x32 | 4 | 3 | 120 | 80 | 1.50 | 4 | 6 | 128 | 128 | 0"
    assert lines[2:] == [f"| fp16,channels_last | sm_90 | {figures} |"]


def test_the_page_shows_the_model_and_the_committed_gpu_runs():
    # docs/performance.md is generated: its model is traffic.py's and its GPU figures are the
    # committed runs' (or "not measured"), never typed in.
    page = run_all.PAGE.read_text()
    blocks = {
        "roofline": traffic.format_model(),
        "gpu": run_all.gpu_block(run_all.load_results()),
    }
    for name, body in blocks.items():
        assert f"<!-- begin: {name} -->\n{body.rstrip()}\n<!-- end: {name} -->" in page, name
    if not run_all.load_results():
        assert "measured µs" in page
        shapes = page.split("<!-- begin: shapes -->")[1].split("<!-- end: shapes -->")[0]
        assert all(line.endswith("| not measured |") for line in shapes.strip().splitlines()[2:])
