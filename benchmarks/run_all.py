"""Run every benchmark and write the generated sections of docs/performance.md.

Each ``bench_*.py`` module exposes ``run(quick: bool) -> list[dict]`` with rows
``{"benchmark", "case", "torchkit_s", "stock_s", "ratio"}``: torchkit and the stock torch
equivalent timed in the same process, interleaved, median of several repeats. This script
collects them, adds the memory-traffic model (benchmarks/traffic.py) and the static kernel report
(``python -m torchkit kernels``), and rewrites the blocks between ``<!-- begin: NAME -->`` and
``<!-- end: NAME -->`` in docs/performance.md; the prose around them is kept.

    python benchmarks/run_all.py            # full run, rewrites docs/performance.md
    python benchmarks/run_all.py --quick    # fewer repeats, for a smoke test
    python benchmarks/run_all.py --no-write # print only

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

import torch

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "docs" / "performance.md"
BENCHMARKS = ("bench_schedulers", "bench_adam", "bench_conv_relu")
# What each benchmark times on a CUDA device (listed as skipped on machines without one).
GPU_BENCHMARKS = {
    "bench_adam": "FusedAdam (Triton) vs torch Adam fused=True and foreach=True, do_bench",
    "bench_conv_relu": "FusedConv2dReLU (Triton) vs cuDNN conv + ReLU and "
    "torch.cudnn_convolution_relu, fp16 channels_last and fp32, do_bench",
}


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
    lines = [
        "| benchmark | case | torchkit (µs) | stock (µs) | torchkit / stock |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['benchmark']} | {r['case']} | skipped: {r['skipped']} | | |")
            continue
        lines.append(
            f"| {r['benchmark']} | {r['case']} | {r['torchkit_s'] * 1e6:.1f} "
            f"| {r['stock_s'] * 1e6:.1f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def gpu_skipped_table() -> str:
    """The GPU benchmarks that did not run, and why."""
    lines = ["| benchmark | what it times on CUDA | result |", "| --- | --- | --- |"]
    for name, what in GPU_BENCHMARKS.items():
        lines.append(f"| `benchmarks/{name}.py` | {what} | skipped: no CUDA |")
    return "\n".join(lines)


def kernel_table() -> str:
    """The static kernel report (``python -m torchkit kernels``) as a Markdown table."""
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
    from torchkit.kernel_report import KernelResources, format_summary, format_table

    rows = [KernelResources(**row) for row in json.loads(done.stdout)]
    return (
        f"{format_summary(rows)}\n\n<details><summary>Every config ({len(rows)} compiles)"
        f"</summary>\n\n{format_table(rows)}\n\n</details>"
    )


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
        "--threads", type=int, default=1, help="torch intra-op threads for CPU timings (default 1)"
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be positive, got {args.threads}")
    torch.set_num_threads(args.threads)
    measured_on = machine()

    sys.path.insert(0, str(HERE))
    import traffic

    rows: list[dict] = []
    for name in BENCHMARKS:
        print(f"running {name} ...", file=sys.stderr)
        rows += importlib.import_module(name).run(quick=args.quick)
    cpu_rows = [r for r in rows if not r["benchmark"].startswith("cuda")]
    gpu_rows = [r for r in rows if r["benchmark"].startswith("cuda")]
    blocks = {
        "machine": f"Measured on: {measured_on} at the start; {machine().split('; ')[-1]} "
        f"at the end.{shared_note()}",
        "traffic": traffic.format_table(traffic.default_cases()),
        "kernels": kernel_table(),
        "cpu-ratios": ratio_table(cpu_rows),
        "gpu-ratios": ratio_table(gpu_rows) if gpu_rows else gpu_skipped_table(),
    }
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
