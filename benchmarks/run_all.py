"""Regenerate docs/performance.md: the roofline model, the static kernel report, the GPU figures
of committed ``gpu_check.py`` runs, and the CPU benchmarks.

The page's generated blocks (between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->``; the prose
around them is kept):

* ``roofline``: the model of ``benchmarks/traffic.py`` (bytes, FLOPs, launches, bounds, floors);
* ``shapes``: per benchmark shape, the bound and floor on each modelled GPU; the kernel's main
  loop for it, the compiled variant, the tiles autotuning times and their static figures on
  sm_90 from ``python -m torchkit kernels --json`` (hottest-loop instructions against the
  ``gemm_reference`` yardstick, registers, stages); its GPU time from a committed run or "not
  measured";
* ``variants``: every conv tile against its yardstick on sm_90 (the report's
  ``--format vs-yardstick``);
* ``kernels``: that report, one row per kernel variant and arch (``--format summary``);
* ``gpu``: every ``benchmarks/results/*/gpu_check.json`` of a GPU run (dry runs are ignored), or a
  table saying each GPU figure is not measured;
* ``machine`` and ``cpu-ratios``: each ``bench_*.py`` module's ``run(quick) -> list[dict]`` rows
  ``{"benchmark", "case", "torchkit_s", "stock_s", "ratio"}``: torchkit and the stock torch
  equivalent timed in the same process, interleaved, median of several repeats.

    python benchmarks/run_all.py              # everything; the CPU benchmarks take minutes
    python benchmarks/run_all.py --page-only  # model, kernels, GPU results; CPU blocks kept
    python benchmarks/run_all.py --quick      # fewer repeats, for a smoke test
    python benchmarks/run_all.py --no-write   # print only

CPU timings use one intra-op thread by default (``--threads``): on a machine whose cores are
shared, an OpenMP team waits at every barrier for a worker the OS has descheduled, which turns
a 0.4 ms fused Adam step into 40 ms (measured on the 2-core machine of docs/performance.md) and
makes ratios meaningless. One thread measures the work each implementation does.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from torchkit.backend import triton_version
from torchkit.kernel_report import (
    KernelResources,
    _span,
    config_label,
    format_summary,
    format_versus_yardstick,
    yardstick_ratio,
)
from torchkit.kernels.conv2d_relu import Conv2dReLUBlocks

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "docs" / "performance.md"
RESULTS = HERE / "results"
BENCHMARKS = ("bench_schedulers", "bench_adam", "bench_conv_relu")
sys.path.insert(0, str(HERE))
import gpu_check  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
import traffic  # noqa: E402
from tables import markdown_table  # noqa: E402


def shared_note() -> str:
    """A warning for the page when other jobs kept the cores busy (1-min load > half of them)."""
    busy = os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1)
    return " Other jobs were running on the machine, so the ratios are noisy." if busy else ""


def machine() -> str:
    """One line: CPU, cores, GPU, torch, threads and the load average when it was called."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} logical cores, {gpu}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op thread(s), Python {platform.python_version()}; "
        f"load average {load} (1, 5, 15 min)"
    )


def ratio_table(rows: list[dict]) -> str:
    """Rows of the benchmarks as a Markdown table of times and ratios."""
    cells = []
    for r in rows:
        if r.get("skipped"):
            skipped = {"torchkit (µs)": f"skipped: {r['skipped']}", "stock (µs)": ""}
            cells.append({**r, **skipped, "torchkit / stock": ""})
            continue
        cells.append(
            {
                **r,
                "torchkit (µs)": f"{r['torchkit_s'] * 1e6:.1f}",
                "stock (µs)": f"{r['stock_s'] * 1e6:.1f}",
                "torchkit / stock": f"{r['ratio']:.2f}",
            }
        )
    columns = ["benchmark", "case", "torchkit (µs)", "stock (µs)", "torchkit / stock"]
    return markdown_table(cells, columns, right=columns[2:])


# ---------------------------------------------------------------------------------------------
# The static kernel report


CONV_KERNEL = "_conv2d_relu_fwd_kernel"
STATIC_ARCH = "sm_90"  # the arch of the per-shape and per-tile figures (H100, H200)
# A speed-section precision -> the dtype and ``input_precision`` of the conv variants that serve
# it (see torchkit.kernels.conv2d_relu.aot_specs).
_PRECISION_FIELDS = {
    "fp16": ("fp16", "ieee"),
    "bf16": ("bf16", "ieee"),
    "tf32": ("fp32", "tf32"),
    "fp32": ("fp32", "ieee"),
}
FLAT_K = "flat K"


def kernel_rows() -> list[KernelResources]:
    """``python -m torchkit kernels --json`` (Triton's compiler, no GPU), as report rows."""
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "torchkit", "kernels", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"python -m torchkit kernels failed:\n{done.stderr}")
    return [KernelResources(**row) for row in json.loads(done.stdout)]


def kernel_block(rows: list[KernelResources]) -> str:
    """The kernel report as the page shows it: the Triton release that compiled it and one row
    per kernel variant and arch (``--format summary``). Every config's row (``--format table``)
    is left to the command: its PTX sizes include the source's path on the machine that
    compiled it."""
    return f"Compiled by Triton {triton_version()}.\n\n{format_summary(rows)}"


def variants_block(rows: list[KernelResources]) -> str:
    """Every conv tile that has a GEMM yardstick, on :data:`STATIC_ARCH`: the report's own
    ``--format vs-yardstick`` table."""
    return format_versus_yardstick([r for r in rows if r.arch == STATIC_ARCH])


def conv_variant(
    rows: list[KernelResources], precision: str, layout: str, loop: str, channels: int
) -> KernelResources | None:
    """A row of the conv variant of the report that serves ``precision`` in ``layout`` with the main
    loop ``loop`` (``"GEMM form"`` or ``"flat K"``) for a layer with ``channels`` input
    channels per group: one compiled for that dtype and ``input_precision`` and that loop,
    preferably for a channel count as divisible by 16 as ``channels`` (16 decides whether the
    JIT sees the channel strides aligned), then for ``layout``. ``None`` when none fits.

    Example:
        >>> def row(variant, layout, channels):
        ...     return KernelResources(CONV_KERNEL, variant, "sm_90", "", 4, 3, 64, 0, 0, 0, 0,
        ...                            None, 90, 2, 4, 128, None, None, "fp16", "ieee", layout,
        ...                            False, channels)
        >>> rows = [row("fp16,nchw", "nchw", 64), row("fp16,24", "channels_last", 24)]
        >>> conv_variant(rows, "fp16", "channels_last", "GEMM form", 64).variant
        'fp16,nchw'
        >>> conv_variant(rows, "fp16", "channels_last", "GEMM form", 40).variant
        'fp16,24'
        >>> print(conv_variant(rows, "fp16", "channels_last", "flat K", 3))
        None
    """
    dtype, input_precision = _PRECISION_FIELDS[precision]
    fitting = {
        r.variant: r
        for r in rows
        if r.kernel == CONV_KERNEL
        and (r.dtype, r.input_precision) == (dtype, input_precision)
        and r.flat_k == (loop == FLAT_K)
    }

    def mismatch(r: KernelResources) -> tuple[bool, bool]:
        aligned = (r.channels or 0) % 16 == 0
        return aligned != (channels % 16 == 0), r.layout != layout

    return min(fitting.values(), key=mismatch, default=None)


def tile_figures(
    rows: list[KernelResources], variant: str, tiles: list[Conv2dReLUBlocks]
) -> list[str]:
    """The static figures of ``variant``'s rows on :data:`STATIC_ARCH` compiled with one of
    ``tiles``: hottest-loop instructions against the GEMM yardstick's, registers, stages
    (each the range over the tiles; ``-`` when the report has none of them)."""
    labels = {config_label(tile.config()) for tile in tiles}
    chosen = [
        r
        for r in rows
        if (r.kernel, r.variant, r.arch) == (CONV_KERNEL, variant, STATIC_ARCH)
        and r.config in labels
    ]
    if not chosen:
        return ["-", "-", "-"]
    loop = _span(sorted(r.loop_instructions for r in chosen))
    ratios = [yardstick_ratio(r) for r in chosen]
    if any(ratio is None for ratio in ratios):
        loop += " (no yardstick)"
    else:
        yardstick = _span(sorted(r.yardstick_loop_instructions or 0 for r in chosen))
        low, high = f"{min(ratios):.2f}", f"{max(ratios):.2f}"  # type: ignore[type-var]
        loop += f" vs {yardstick} ({low if low == high else f'{low}-{high}'}x)"
    return [
        loop,
        _span(sorted(r.registers for r in chosen)),
        _span(sorted(r.num_stages for r in chosen)),
    ]


# ---------------------------------------------------------------------------------------------
# GPU results of gpu_check.py

NOT_MEASURED = "not measured"


def load_results(folder: Path = RESULTS) -> list[dict[str, Any]]:
    """Every ``gpu_check.json`` of a GPU run under ``folder/*/`` (dry runs are left out), each
    with ``"path"``: where it lies, relative to ``folder``'s parent's parent (the repository)."""
    runs = []
    for path in sorted(folder.glob("*/gpu_check.json")):
        data = json.loads(path.read_text())
        if data["meta"].get("dry_run", True):
            continue
        data["path"] = path.relative_to(folder.parent.parent).as_posix()
        runs.append(data)
    return runs


def _cases(run: dict[str, Any], section: str) -> list[dict[str, Any]]:
    return next((s["cases"] for s in run["sections"] if s["name"] == section), [])


MEASURED = "measured µs graph / eager (GPU)"


def shapes_block(rows: list[KernelResources], runs: list[dict[str, Any]]) -> str:
    """One row per benchmark shape and speed-section precision and layout: the fused path's
    bound and floor (µs) on each modelled GPU (for an NCHW input, with the copy to
    channels_last that precedes the kernel); the main loop that serves the shape, the compiled
    variant of the report that has it, the tiles autotuning times for the shape and their
    static figures on :data:`STATIC_ARCH` (:func:`tile_figures`); and the time per call
    measured on each GPU of ``runs`` (replayed from a CUDA graph / called eagerly), or
    "not measured"."""
    measured = {}
    for run in runs:
        for case in _cases(run, "conv_speed"):
            if case["status"] == "ok":
                measured[(run["meta"]["gpu"], case["case"])] = case
    gpus = [run["meta"]["gpu"] for run in runs]
    gpu_columns = [f"{g.name.split()[0]} bound, floor µs" for g in traffic.GPUS]
    figure_columns = [
        "main loop",
        "compiled variant",
        "tiles autotuning times",
        f"{STATIC_ARCH} loop instructions vs GEMM yardstick",
        "registers",
        "stages",
    ]
    table = []
    for precision, layout in gpu_check.SPEED_VARIANTS:
        dtype, use_tf32, _ = gpu_check.PRECISIONS[precision]
        mode = traffic.math_mode(dtype, tf32=use_tf32)
        for shape in traffic.CONV_SHAPES:
            path = traffic.conv_paths(shape, dtype, layout)["torchkit"]
            row = {"shape": shape.label(), "precision, layout": f"{precision}, {layout}"}
            for g, column in zip(traffic.GPUS, gpu_columns, strict=True):
                row[column] = f"{path.bound(g, mode)}, {path.floor(g, mode) * 1e6:.2f}"
            loop = gpu_check.main_loop(shape)
            tiles = gpu_check.autotune_candidates(shape, dtype, use_tf32)
            tile_sizes = ", ".join(f"{t.block_m}x{t.block_n}x{t.block_k}" for t in tiles)
            variant = conv_variant(rows, precision, layout, loop, shape.c_in)
            if variant is None:
                figures = [loop, "none compiled", tile_sizes, "-", "-", "-"]
            else:
                other = "" if variant.layout == layout else " (other layout)"
                figures = [
                    loop,
                    f"`{variant.variant}`{other}",
                    tile_sizes,
                    *tile_figures(rows, variant.variant, tiles),
                ]
            row.update(zip(figure_columns, figures, strict=True))
            case_id = f"conv_speed/{shape.name}/{precision}/{layout}"
            times = [
                f"{measured[(g, case_id)]['torchkit_graph_us']:.1f} / "
                f"{measured[(g, case_id)]['torchkit_us']:.1f} ({g})"
                for g in gpus
                if (g, case_id) in measured
            ]
            row[MEASURED] = "; ".join(times) or NOT_MEASURED
            table.append(row)
    return markdown_table(table)


# The columns of each gpu_check section the page shows (the run's gpu_check.md has them all).
# Correctness sections show their status counts and the cases that are not ok.
PAGE_COLUMNS: dict[str, tuple[str, ...]] = {
    "warm_up": ("case", "status", "jobs", "finished", "failed", "unfinished", "slowest_s",
                "workers", "pool_wall_s", "reason"),
    "adam_correctness": ("case", "status", "bitwise_equal", "max_abs_diff", "reason"),
    "conv_correctness": ("case", "status", "out_err", "out_err_stock", "grad_input_err",
                         "grad_input_err_stock", "grad_weight_err", "grad_weight_err_stock",
                         "main_loop", "config", "reason"),
    "adam_bandwidth": ("case", "status", "torchkit_us", "torch_fused_us", "torchkit_tb_s",
                       "torch_fused_tb_s", "torchkit_of_datasheet_bw", "reason"),
    "adam_tiling": ("case", "status", "default", "time_us", "tb_s", "aligned", "reason"),
    "adam_step_time": ("case", "status", "host_us", "device_us", "reason"),
    "conv_speed": ("case", "status", "torchkit_graph_us", "conv_relu__graph_us",
                   "cudnn_fused_graph_us", "torchkit_us", "conv_relu__us", "cudnn_fused_us",
                   "torchkit_tflops", "torchkit_over_conv_relu_", "torchkit_over_cudnn_fused",
                   "bound", "floor_us", "torchkit_of_floor", "main_loop", "config", "tuning",
                   "tune_s", "reason"),
    "conv_tiles": ("case", "status", "tile", "graph_us", "time_us", "tflops", "first_call_s",
                   "autotune_candidate", "reason"),
    "adam_large": ("case", "status", "elements", "dtype", "bitwise_equal", "max_abs_diff",
                   "reason"),
}  # fmt: skip
SUMMARY_ONLY = ("adam_correctness", "conv_correctness")


def gpu_block(runs: list[dict[str, Any]]) -> str:
    """The committed GPU runs section by section, or a table saying nothing is measured yet."""
    if not runs:
        rows = [
            {"section": f"`{name}`", "figures": title, "result": NOT_MEASURED}
            for name, title, _ in gpu_check.SECTIONS
        ]
        return (
            "No `gpu_check.json` from a GPU run is committed under `benchmarks/results/`: every "
            f"GPU figure is **{NOT_MEASURED}**.\n\n{markdown_table(rows)}"
        )
    out = []
    for run in runs:
        meta = run["meta"]
        versions = ", ".join(
            f"{k} {meta.get(k)}" for k in ("driver", "cuda", "cudnn", "torch", "triton")
        )
        state = "complete" if meta.get("finished") else "cut short"
        if meta.get("stopped"):
            state = f"stopped: {meta['stopped']}"
        out += [
            f"### {meta['gpu']}",
            "",
            f"`{run['path']}` ({state}, {meta.get('elapsed_s', 0):.0f} s, started "
            f"{meta.get('started_utc')}; {versions}; torchkit {meta.get('torchkit_commit')}). "
            "The run's `gpu_check.md` beside it has every column.",
        ]
        for section in run["sections"]:
            cases = section["cases"]
            out += ["", f"**{section['title']}** ({gpu_check.status_summary(cases)})"]
            if section["name"] in SUMMARY_ONLY:
                cases = [c for c in cases if c["status"] != "ok"]
            if cases:
                columns = PAGE_COLUMNS.get(section["name"])
                out += ["", markdown_table(cases, columns)]
        out.append("")
    return "\n".join(out)


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- begin: name -->`` and ``<!-- end: name -->``
    replaced by ``body`` (taken literally).

    Raises:
        ValueError: ``text`` has no such block.

    Example:
        >>> replace_block("<!-- begin: x -->\\nold\\n<!-- end: x -->", "x", "new")
        '<!-- begin: x -->\\nnew\\n<!-- end: x -->'
    """
    pattern = re.compile(rf"(<!-- begin: {name} -->\n).*?(<!-- end: {name} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"{PAGE} has no <!-- begin: {name} --> ... <!-- end: {name} --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="print, leave the page alone")
    parser.add_argument(
        "--page-only",
        action="store_true",
        help="skip the CPU benchmarks: regenerate the model, kernel and GPU blocks only",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads for CPU timings (default 1)"
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be positive, got {args.threads}")
    torch.set_num_threads(args.threads)

    blocks: dict[str, str] = {}
    if not args.page_only:
        measured_on = machine()
        rows: list[dict] = []
        for name in BENCHMARKS:
            print(f"running {name} ...", file=sys.stderr)
            rows += importlib.import_module(name).run(quick=args.quick)
        if not args.no_write:
            importlib.import_module("bench_adam").write_host_cost(rows)
        # CUDA rows of the bench modules are printed; the page's GPU figures come from
        # gpu_check.py runs, one source for every GPU number.
        blocks["machine"] = (
            f"Measured on: {measured_on} at the start; {machine().split('; ')[-1]} "
            f"at the end.{shared_note()}"
        )
        blocks["cpu-ratios"] = ratio_table(
            [r for r in rows if not r["benchmark"].startswith("cuda")]
        )
        gpu_rows = [r for r in rows if r["benchmark"].startswith("cuda")]
        if gpu_rows:
            print(ratio_table(gpu_rows))
    print("compiling the kernel report ...", file=sys.stderr)
    kernels = kernel_rows()
    runs = load_results()
    blocks.update(
        roofline=traffic.format_model(),
        shapes=shapes_block(kernels, runs),
        variants=variants_block(kernels),
        kernels=kernel_block(kernels),
        gpu=gpu_block(runs),
    )
    for name, body in blocks.items():
        print(f"\n## {name}\n{body}")
    if not args.no_write:
        text = PAGE.read_text()
        for name, body in blocks.items():
            text = replace_block(text, name, body)
        PAGE.write_text(text)
        print(f"\nwrote {PAGE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
