"""``python -m torchkit kernels``: every kernel compiles for sm_80 and sm_90 without spills.

The report compiles with Triton's real compiler, which the interpreter this suite runs under
(``TRITON_INTERPRET=1``, tests/conftest.py) rules out in-process; so one subprocess with
``TRITON_INTERPRET=0`` produces the whole JSON report, shared by the slow tests below. Triton
caches compiled kernels on disk, so a rerun costs mostly the ``ptxas`` runs.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from torchkit import kernel_report
from torchkit.__main__ import main as torchkit_main
from torchkit.backend import triton_version

REQUIRED_KEYS = {
    "kernel",
    "arch",
    "config",
    "registers",
    "spill_stores",
    "spill_loads",
    "shared_mem",
    "block",
    "loop_instructions",
    "loop_mma",
    "loop_async_copies",
    "max_global_load_bits",
    "ieee_sqrt_div",
    "yardstick_loop_instructions",
    "dtype",
    "input_precision",
    "layout",
    "flat_k",
    "channels",
}
ARCHS = ("sm_80", "sm_90")


def _jit_kernels_in_source(module_name: str) -> set[str]:
    """Names of the functions a module's source decorates with ``@triton.jit`` (read, not run),
    less those another of them calls: device functions, compiled inside their callers."""
    spec = importlib.util.find_spec(module_name)
    assert spec is not None, f"{module_name} not found"
    assert spec.origin is not None, f"{module_name} has no source file"
    tree = ast.parse(Path(spec.origin).read_text())
    jitted = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            if ast.unparse(target) in ("triton.jit", "jit"):
                jitted[node.name] = node
    called = {
        call.func.id
        for node in jitted.values()
        for call in ast.walk(node)
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
    }
    return jitted.keys() - called


@pytest.fixture(scope="module")
def report() -> list[dict[str, Any]]:
    if kernel_report.ptxas_path() is None:
        pytest.skip("the triton wheel ships no ptxas-blackwell binary: nothing to compile with")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torchkit", "kernels", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"python -m torchkit kernels failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


@pytest.mark.slow
def test_rows_have_the_documented_keys_and_real_counts(report):
    assert report, "the report has no rows"
    for row in report:
        assert row.keys() >= REQUIRED_KEYS, f"missing {REQUIRED_KEYS - row.keys()} in {row}"
        assert row["registers"] > 0, row
        assert row["shared_mem"] >= 0, row


@pytest.mark.slow
def test_no_kernel_spills_registers(report):
    # torchkit's kernels. The GEMM yardstick is measured by its loop only: with B contiguous
    # along K, its 128x32 tile on sm_80 keeps one register in local memory from before its
    # loop to after it (4 bytes), which the loop's instruction count does not see.
    spilling = [
        f"{r['kernel']}[{r['variant']}] {r['arch']} {r['config']}: {r['registers']} registers, "
        f"{r['spill_stores']} B stored, {r['spill_loads']} B loaded"
        for r in report
        if (r["spill_stores"] or r["spill_loads"]) and r["kernel"] != "gemm_reference"
    ]
    assert not spilling, "register spills:\n" + "\n".join(spilling)


@pytest.mark.slow
@pytest.mark.parametrize("module_name", kernel_report.KERNEL_MODULES)
def test_every_variant_config_and_arch_is_reported(report, module_name):
    specs = importlib.import_module(module_name).aot_specs()
    assert specs, f"{module_name}.aot_specs() is empty"
    reported = Counter((r["kernel"], r["variant"], r["arch"], r["config"]) for r in report)
    for spec in specs:
        kernel = kernel_report.jit_function(spec.kernel).__name__
        for config in kernel_report.spec_configs(spec):
            for arch in ARCHS:
                key = (kernel, spec.name, arch, kernel_report.config_label(config))
                assert reported[key] == 1, f"{key} reported {reported[key]} times, expected once"
                if spec.yardstick is not None:
                    key = ("gemm_reference", spec.yardstick.name, *key[2:])
                    assert reported[key] == 1, f"yardstick {key} reported {reported[key]} times"


@pytest.mark.slow
@pytest.mark.parametrize("module_name", kernel_report.KERNEL_MODULES)
def test_every_jit_kernel_of_the_module_is_compiled(report, module_name):
    defined = _jit_kernels_in_source(module_name)
    assert defined, f"no @triton.jit function found in {module_name}"
    missing = defined - {row["kernel"] for row in report}
    assert not missing, f"{module_name}: no aot_specs() variant compiles {sorted(missing)}"


# The target of the implicit-GEMM convolution (docs/fused_conv.md): every config that serves
# layers with 16 or more input channels per group keeps its hottest loop within 1.5x of a plain
# Triton GEMM's with the same tile, and feeds it with asynchronous or 16-byte loads.
MAX_YARDSTICK_RATIO = 1.5
CONV = "_conv2d_relu_fwd_kernel"


@pytest.mark.slow
def test_conv_loops_are_within_reach_of_the_gemm_yardstick(report):
    gemm_form = [r for r in report if r["kernel"] == CONV and not r["flat_k"]]
    with_yardstick = [r for r in gemm_form if r["yardstick_loop_instructions"] is not None]
    # Every tensor-core variant has one (fp32 IEEE multiplies with FMAs: no GEMM to match),
    # the layers with channel counts that are multiples of 8 but not 16 included.
    assert {r["variant"] for r in with_yardstick} >= {
        "fp32,tf32,nchw",
        "fp16,channels_last",
        "bf16,nchw,no bias",
        "fp16,channels_last,24 channels",
    }
    assert {r["channels"] for r in with_yardstick} == {64, 24}
    slow = []
    for r in with_yardstick:
        ratio = r["loop_instructions"] / r["yardstick_loop_instructions"]
        fed = r["loop_async_copies"] > 0 or r["max_global_load_bits"] == 128
        if ratio > MAX_YARDSTICK_RATIO or not fed or r["loop_mma"] == 0:
            slow.append(
                f"{r['variant']} {r['arch']} {r['config']}: {r['loop_instructions']} vs "
                f"{r['yardstick_loop_instructions']} ({ratio:.2f}x), {r['loop_mma']} MMAs, "
                f"{r['loop_async_copies']} async copies, {r['max_global_load_bits']}-bit loads"
            )
    assert not slow, "hottest loops too far from the GEMM yardstick:\n" + "\n".join(slow)


@pytest.mark.slow
def test_gemm_form_loops_load_16_byte_vectors_asynchronously(report):
    """Every GEMM-form config, 24 channels (48 bytes per pixel) included, copies its tiles with
    16-byte cp.async (LDGSTS.128)."""
    rows = [r for r in report if r["kernel"] == CONV and not r["flat_k"]]
    assert rows
    narrow = [
        f"{r['variant']} {r['arch']} {r['config']}: {r['loop_async_copies']} async copies, "
        f"{r['max_global_load_bits']}-bit loads"
        for r in rows
        if r["loop_async_copies"] == 0 or r["max_global_load_bits"] != 128
    ]
    assert not narrow, "\n".join(narrow)


TUTORIAL = {"loop_instructions": 85, "loop_mma": 4, "loop_async_copies": 6}


@pytest.mark.slow
def test_tutorial_gemm_is_the_loop_triton_on_cpu_describes(report):
    """The tutorial form of the GEMM (B contiguous along N, K masked every step): fp16
    128x64x32, 4 warps, 3 stages is the 85-instruction loop with 4 HGMMA and 6 LDGSTS the
    kernel was first measured against (torchkit.kernels.gemm_reference), as compiled by
    Triton 3.9 for sm_90."""
    rows = [r for r in report if r["variant"] == "fp16,tutorial" and r["arch"] == "sm_90"]
    assert len(rows) == 1, rows
    if triton_version() != "3.9.0":
        pytest.skip(f"the figure was measured with triton 3.9.0, this is {triton_version()}")
    assert {key: rows[0][key] for key in TUTORIAL} == TUTORIAL


@pytest.mark.slow
def test_yardstick_is_a_pipelined_tensor_core_gemm(report):
    # What makes it a yardstick worth the name: MMAs fed by asynchronous copies in its loop.
    gemms = [r for r in report if r["kernel"] == "gemm_reference"]
    assert gemms, "no gemm_reference rows in the report"
    weak = [r for r in gemms if r["loop_mma"] == 0 or r["loop_async_copies"] == 0]
    assert not weak, f"yardstick rows without MMAs or cp.async in their loop: {weak}"


DOC = Path(__file__).resolve().parents[2] / "docs" / "fused_conv.md"
_DOC_TABLE = re.compile(
    r"<!-- begin: vs-yardstick triton=(\S+) arch=(\S+) -->\n(.*?)<!-- end: vs-yardstick -->", re.S
)


@pytest.mark.slow
def test_docs_table_is_what_the_report_prints(report):
    """docs/fused_conv.md shows `python -m torchkit kernels --arch ARCH --format vs-yardstick`
    as compiled by the Triton release it names; with that release installed, it must match."""
    match = _DOC_TABLE.search(DOC.read_text())
    assert match is not None, f"{DOC} has no vs-yardstick block"
    version, arch, table = match.groups()
    if triton_version() != version:
        pytest.skip(f"the table was compiled with triton {version}, this is {triton_version()}")
    rows = [kernel_report.KernelResources(**r) for r in report if r["arch"] == arch]
    expected = kernel_report.format_versus_yardstick(rows)
    assert table.strip() == expected.strip(), f"regenerate the table in {DOC}:\n{expected}"


@pytest.mark.slow
def test_docs_prose_figures_are_the_reports(report):
    """The figures docs/fused_conv.md's prose quotes from the current report (ranges of the
    vs-yardstick ratio on sm_90 and sm_80, NCHW registers, the flat-K loops, the loop of each
    fp16 and TF32 tile) are the report's, for the Triton release the page's table names."""
    text = DOC.read_text()
    match = _DOC_TABLE.search(text)
    assert match is not None, f"{DOC} has no vs-yardstick block"
    if triton_version() != match.group(1):
        pytest.skip(
            f"the page was compiled with triton {match.group(1)}, this is {triton_version()}"
        )
    prose = " ".join(text.split())
    conv = [r for r in report if r["kernel"] == CONV]

    def on(arch: str) -> list[dict[str, Any]]:
        return [r for r in conv if r["arch"] == arch]

    def ratios(arch: str) -> list[float]:
        return [
            r["loop_instructions"] / r["yardstick_loop_instructions"]
            for r in on(arch)
            if r["yardstick_loop_instructions"] is not None
        ]

    flat = sorted(r["loop_instructions"] for r in on("sm_90") if r["flat_k"])
    nchw_registers = max(r["registers"] for r in on("sm_90") if r["layout"] == "nchw")
    fp16 = {
        f"{r['block'][0]}x{r['block'][1]}": r["loop_instructions"]
        for r in on("sm_90")
        if r["variant"] == "fp16,channels_last"
    }
    expected = [
        f"The conv's loop is {round(100 * min(ratios('sm_90')) - 100)}% to "
        f"{round(100 * max(ratios('sm_90')) - 100)}% longer than the GEMM's",
        f"(up to {nchw_registers} on sm_90)",
        f"keeps every config within {max(ratios('sm_80')):.2f}x of its yardstick",
        f"({flat[0]} to {flat[-1]} SASS instructions per K-step on sm_90 in the report)",
        f"the table below has {fp16['128x64']} for that tile",
        *(f"-> {loop} ({tile})" for tile, loop in fp16.items()),
    ]
    missing = [sentence for sentence in expected if sentence not in prose]
    assert not missing, f"update the prose of {DOC} to the report: {missing}"
    tf32 = re.search(r"\(fp32 TF32: ((?:\d+ -> \d+(?:, )?)+)\)", prose)
    assert tf32 is not None, "the prose no longer lists the TF32 loops"
    quoted = [int(pair.split(" -> ")[1]) for pair in tf32.group(1).split(", ")]
    # listed in the order of TILES, which is the report's
    assert quoted == [
        r["loop_instructions"] for r in on("sm_90") if r["variant"] == "fp32,tf32,nchw"
    ]


PERFORMANCE = DOC.parent / "performance.md"
BENCHMARKS = DOC.parents[1] / "benchmarks"


@pytest.mark.slow
def test_performance_page_blocks_are_what_run_all_writes_from_the_report(report, monkeypatch):
    """docs/performance.md's blocks built from this report (per shape, per tile against its
    yardstick, per variant) are what `python benchmarks/run_all.py` writes, for the Triton
    release the page names."""
    page = PERFORMANCE.read_text()
    version = re.search(r"<!-- begin: kernels -->\nCompiled by Triton (\S+)\.", page)
    assert version is not None, f"{PERFORMANCE} does not name the Triton release of its report"
    if triton_version() != version.group(1):
        pytest.skip(
            f"the page was compiled with triton {version.group(1)}, this is {triton_version()}"
        )
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # a folder of scripts that import each other
    run_all = importlib.import_module("run_all")
    rows = [kernel_report.KernelResources(**r) for r in report]
    blocks = {
        "shapes": run_all.shapes_block(rows, run_all.load_results()),
        "variants": run_all.variants_block(rows),
        "kernels": run_all.kernel_block(rows),
    }
    for name, body in blocks.items():
        expected = f"<!-- begin: {name} -->\n{body.rstrip()}\n<!-- end: {name} -->"
        assert expected in page, f"{name}: run `python benchmarks/run_all.py --page-only`"


@pytest.mark.slow
def test_flat_k_variant_is_reported_without_a_yardstick(report):
    flat = [r for r in report if r["kernel"] == CONV and r["flat_k"]]
    assert flat, "the flat-K variant is not in the report"
    assert all(r["yardstick_loop_instructions"] is None for r in flat)


def test_source_scan_finds_jit_kernels():
    # The scan the coverage test relies on, checked against a kernel known to exist.
    assert "_conv2d_relu_fwd_kernel" in _jit_kernels_in_source("torchkit.kernels.conv2d_relu")


# Plain functions the test below wraps in triton's JITFunction itself: under the interpreter
# this suite runs with, @triton.jit makes interpreted functions, which the report never sees.
def _inner(x):  # type: ignore[no-untyped-def]
    return x + 1


def _outer(x):  # type: ignore[no-untyped-def]
    return _inner(x) * 2


def _kernel(ptr):  # type: ignore[no-untyped-def]
    return _outer(ptr)


def _orphan(ptr):  # type: ignore[no-untyped-def]
    return ptr


def test_a_kernel_without_a_variant_is_named_but_not_the_functions_kernels_call() -> None:
    """Every ``@triton.jit`` function of a kernel module must be compiled by the report: as a
    variant's kernel, or as a function such a kernel calls (directly or through another)."""
    import types

    from triton.runtime.jit import JITFunction

    from torchkit.kernels._aot import KernelSpec

    module = types.SimpleNamespace(__name__=__name__)
    for fn in (_inner, _outer, _kernel, _orphan):
        setattr(module, fn.__name__, JITFunction(fn))
    spec = KernelSpec(name="v", kernel=module._kernel, signature={"ptr": "*fp32"}, constexprs={})
    assert kernel_report._uncovered_kernels(module, [spec]) == ["_orphan"]
    assert kernel_report._uncovered_kernels(module, []) == [
        "_inner",
        "_kernel",
        "_orphan",
        "_outer",
    ]


def test_compile_report_refuses_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernel_report.compile_report(["sm_80"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"archs": ["sm_70"]}, "unknown arch 'sm_70'"), ({"jobs": 0}, "jobs must be a positive")],
    ids=["unknown-arch", "zero-jobs"],
)
def test_compile_report_validates_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kernel_report.compile_report(**kwargs)


def test_cli_exits_non_zero_under_the_interpreter(capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    import triton  # noqa: F401  (the CLI refuses once Triton was imported as interpreter)

    assert torchkit_main(["kernels", "--arch", "sm_80"]) == 1
    assert "TRITON_INTERPRET=1" in capsys.readouterr().err


# A hand-written disassembly: a prologue, an outer loop (0x0040-0x00c0) around an inner loop
# (0x0060-0x00a0) with two MMAs, a cp.async and a 128-bit load, then the end-of-kernel trap.
_SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E.64 R2, desc[UR4][R2.64] ;
        /*0020*/                   LDG.E.U16 R4, desc[UR4][R2.64] ;
        /*0030*/                   NOP ;
        /*0040*/                   IMAD R5, R5, 0x4, RZ ;
        /*0050*/                   LDG.E R6, desc[UR4][R2.64] ;
        /*0060*/                   HGMMA.64x64x16.F32 R24, gdesc[UR8], R24 ;
        /*0070*/                   LDGSTS.E.BYPASS.128 [R7], desc[UR4][R8.64] ;
        /*0080*/              @!P0 LDG.E.128 R8, desc[UR4][R10.64] ;
        /*0090*/                   HGMMA.64x64x16.F32 R24, gdesc[UR12], R24 ;
        /*00a0*/              @!P1 BRA 0x60 ;
        /*00b0*/                   IADD3 R5, R5, 0x1, RZ ;
        /*00c0*/              @P2 BRA 0x40 ;
        /*00d0*/                   EXIT ;
        /*00e0*/                   BRA 0xe0;
"""


def test_sass_stats_reads_the_innermost_mma_loop():
    stats = kernel_report.sass_stats(_SASS)
    assert stats == kernel_report.SassStats(
        loop_instructions=5, loop_mma=2, loop_async_copies=1, max_global_load_bits=128
    )


def test_sass_stats_without_a_loop_scans_the_whole_kernel():
    straight = "\n".join(
        line for line in _SASS.splitlines() if "BRA" not in line and "128" not in line
    )
    assert kernel_report.sass_stats(straight) == kernel_report.SassStats(0, 0, 0, 64)


def test_sass_stats_prefers_mmas_over_length():
    # A long copy loop after the MMA loop: the MMA loop stays the hottest.
    copy_loop = "".join(
        f"        /*{0x100 + 16 * i:04x}*/                   STG.E [R2], R4 ;\n" for i in range(9)
    )
    sass = _SASS + copy_loop + "        /*0190*/              @P0 BRA 0x100 ;\n"
    assert kernel_report.sass_stats(sass).loop_mma == 2
    assert kernel_report.sass_stats(sass).loop_instructions == 5


@pytest.mark.parametrize(
    ("ptx", "expected"),
    [
        ("sqrt.rn.f32 %f3, %f2;\ndiv.rn.f32 %f4, %f1, %f3;", True),
        ("sqrt.approx.ftz.f32 %f3, %f2;\ndiv.rn.f32 %f4, %f1, %f3;", False),
        ("sqrt.rn.f32 %f3, %f2;\ndiv.full.f32 %f4, %f1, %f3;", False),
        ("rcp.approx.ftz.f64 %fd2, %fd1;", False),
        ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%f1}, {%r1}, {%r2}, {%f1};", None),
    ],
    ids=["ieee", "approx-sqrt", "full-div", "approx-rcp", "none"],
)
def test_ieee_sqrt_div_reads_the_ptx(ptx, expected):
    assert kernel_report.ieee_sqrt_div(ptx) is expected


def _row(variant: str, config: str, loop: int, yardstick: int | None) -> Any:
    return kernel_report.KernelResources(
        "k", variant, "sm_90", config, 4, 3, 96, 0, 0, 1024, 10, [64, 64, 32], loop, 2, 4, 128,
        None, yardstick,
    )  # fmt: skip


def test_summary_reports_the_worst_ratio_to_the_yardstick():
    rows = [_row("fp16", "a", 100, 80), _row("fp16", "b", 90, 80), _row("flat", "a", 300, None)]
    lines = kernel_report.format_summary(rows).splitlines()
    assert lines[2].split("|")[9:11] == [" 90-100 ", " 1.25x "]
    assert lines[3].split("|")[9:11] == [" 300 ", " - "]


def test_yardsticks_have_the_conv_operand_layouts_and_masks():
    """Like for like: the yardstick reads A and B contiguous along K, as the conv reads its NHWC
    input rows and its K-major packed weight, and masks K exactly when the conv variant masks
    its channels (BLOCK_K not dividing them); the tutorial's N-major, masked form is only the
    separate `fp16,tutorial` row."""
    from torchkit.kernels import conv2d_relu, gemm_reference

    specs = [spec for spec in conv2d_relu.aot_specs() if spec.yardstick is not None]
    assert {spec.channels for spec in specs} == {64, 24}
    for spec in specs:
        yardstick = spec.yardstick.constexprs
        assert (yardstick["stride_ak"], yardstick["stride_bk"]) == (1, 1), spec.name
        assert "stride_bn" not in yardstick, spec.name
        assert yardstick["EVEN_K"] is spec.constexprs["EVEN_C"], spec.name
        assert spec.yardstick.dtype == spec.dtype
    (tutorial,) = gemm_reference.aot_specs()
    assert (tutorial.constexprs["stride_bn"], tutorial.constexprs["EVEN_K"]) == (1, False)
