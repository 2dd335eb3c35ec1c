"""GPU proof kit: validate and measure every torchkit kernel on one CUDA GPU within five minutes.

    python benchmarks/gpu_check.py               # on a CUDA machine, no arguments needed
    python benchmarks/gpu_check.py --dry-run     # the same code paths on CPU (Triton interpreter)

It writes ``gpu_check.json`` (every figure, with the GPU, driver, CUDA, cuDNN, torch and Triton
versions) and ``gpu_check.md`` (the same as tables) into ``--out`` (default
``benchmarks/results/<gpu name>/``, ``benchmarks/results/dry-run/`` for a dry run). Both files are
rewritten, atomically, after every case: a run cut short leaves everything it measured.

Sections, in order, each with a time budget (``SECTIONS``; the budgets add up to the total, and
time one section leaves unused passes to the next). A case that would start after its section's
deadline is recorded as skipped, never dropped:

1. ``adam_correctness``: FusedAdam against ``torch.optim.Adam(fused=True)`` in fp32, bf16 and
   fp16, plain, AMSGrad + weight decay, maximize, AdamW, GradScaler with an overflowing step, and
   capturable under a CUDA graph: fraction of bitwise-equal parameters and the largest difference.
2. ``conv_correctness``: FusedConv2dReLU against ``relu(conv2d)`` on cuDNN, forward and
   backward, fp32, TF32, fp16 and bf16, NCHW and channels_last; both against a float64 reference.
3. ``adam_bandwidth``: achieved TB/s on one large tensor against torch's fused kernel.
4. ``adam_tiling``: the same with each tiling of the sweep.
5. ``adam_step_time``: ``step()`` for 10, 161 and 400 tensors, host and device time, torchkit
   against torch's fused and foreach Adam, eager and replayed from a CUDA graph.
6. ``conv_speed``: time per call and TFLOP/s against ``F.conv2d(...).relu_()`` and
   ``torch.cudnn_convolution_relu`` on LeNet and ResNet-50 shapes (batch 32), the autotuned
   config and the time its first call took.
7. ``conv_tiles``: every tile of the autotune space on one ResNet shape.
8. ``adam_large``: one Adam tensor of more than 2^31 elements (skipped when memory is short).

Statuses: ``ok``; ``mismatch`` (a correctness check failed); ``skipped`` (with the reason: the
time budget, the GPU's memory, or ``dry run: ...`` for what only a GPU can do); ``error``
(anything else, a refusal by torchkit included, with the exception; the run goes on). The exit
status is 1 when a case is ``mismatch`` or ``error``.

``--dry-run`` runs every section on CPU tensors through Triton's interpreter at tiny sizes, timing
with ``time.perf_counter`` and replaying "graphs" eagerly: it proves the script and its report
work, not anything about speed. Its conv shapes keep the main loop the GPU shape runs (the
GEMM form for at least 16 input channels per group, the flat-K variant below that), which each
conv case records as ``main_loop``. CUDA timings use ``triton.testing.do_bench`` (medians,
warm-up included, L2 flushed between calls) for kernels and CUDA events for optimizer steps.

The kit drives the public surface (``FusedAdam(capturable=True)``, ``FusedConv2dReLU.blocks`` to
pin a tiling) except in the block "Kernel internals", which reads what no public API exposes:
``torchkit.kernels.adam.AdamPlan``, ``AdamTiling`` and ``default_tiling`` (the tiling sweep);
the conv kernel's Triton ``Autotuner`` (its ``configs`` and ``best_config``) and its
``_prune_configs`` (which tiles autotuning times for a shape); Triton's
``knobs.autotuning.listener`` (how long tuning took, and over how many tiles). Tested with
torch 2.13 and Triton 3.9.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
import traffic  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

# (name, title, budget in seconds); the budgets add up to the default total of 285 s, which
# leaves a margin under five minutes for start-up (imports, CUDA context).
SECTIONS: tuple[tuple[str, str, float], ...] = (
    ("adam_correctness", "Correctness: FusedAdam against torch.optim.Adam(fused=True)", 20),
    ("conv_correctness", "Correctness: FusedConv2dReLU against relu(conv2d) on cuDNN", 80),
    ("adam_bandwidth", "Adam: achieved bandwidth on one large tensor", 15),
    ("adam_tiling", "Adam: tiling sweep", 15),
    ("adam_step_time", "Adam: step time for 10, 161 and 400 tensors", 30),
    ("conv_speed", "Conv2d + bias + ReLU: time per call and TFLOP/s", 80),
    ("conv_tiles", "Conv2d + bias + ReLU: every autotune tile on one shape", 25),
    ("adam_large", "Adam: one tensor of more than 2^31 elements", 20),
)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Skipped(Exception):
    """The case cannot run here; the text says why (``dry run: ...`` for GPU-only work)."""


# --------------------------------------------------------------------------------------------
# Kernel internals: what the kit reads that no public API exposes (see the module docstring).


def adam_tilings() -> list[Any]:
    """The tilings the Adam sweep times: the one a float32 launch on a GPU uses first, then a
    small grid around it (tile size, chunk size, warps)."""
    from torchkit.kernels.adam import AdamTiling, default_tiling

    default = default_tiling(torch.float32, torch.device("cuda"))
    others = [
        AdamTiling(block=256, chunk=16384, num_warps=2),
        AdamTiling(block=1024, chunk=16384, num_warps=4),
        AdamTiling(block=1024, chunk=16384, num_warps=8),
        AdamTiling(block=2048, chunk=65536, num_warps=8),
        AdamTiling(block=512, chunk=65536, num_warps=4),
    ]
    return [default, *[t for t in others if t != default]]


def adam_tiled_step(
    tensors: dict[str, list[torch.Tensor]], tiling: Any
) -> tuple[Callable[[], object], Any]:
    """``(step, plan)``: ``step()`` runs one Adam update of ``tensors`` (``params``, ``grads``,
    ``exp_avgs``, ``exp_avg_sqs``) as one launch of ``plan``, an ``AdamPlan`` cut by ``tiling``
    and built once, as ``FusedAdam`` keeps its own. The step counters it creates are added to
    ``tensors`` as ``state_steps``: a plan holds addresses, not tensors, so whoever launches it
    keeps every tensor alive (a freed counter would be written after its memory was reused)."""
    from torchkit.kernels.adam import AdamPlan

    params = tensors["params"]
    steps = tensors["state_steps"] = [torch.zeros((), device=p.device) for p in params]
    plan = AdamPlan(
        params, tensors["exp_avgs"], tensors["exp_avg_sqs"], [], steps, amsgrad=False, tiling=tiling
    )
    hyper = [(1e-3, 0.9, 0.999, 1e-8, 0.0)]

    def step() -> object:
        return plan.launch(tensors["grads"], hyper, maximize=False, decoupled_weight_decay=False)

    return step, plan


def conv_tiles() -> list[Any]:
    """Every tile of the conv kernel's autotune space, as the ``Conv2dReLUBlocks`` that
    ``FusedConv2dReLU.blocks`` pins."""
    from torchkit.kernels.conv2d_relu import Conv2dReLUBlocks, _conv2d_relu_fwd_kernel_autotuned

    return [
        Conv2dReLUBlocks(
            block_m=c.kwargs["BLOCK_M"],
            block_n=c.kwargs["BLOCK_N"],
            block_k=c.kwargs["BLOCK_K"],
            group_m=c.kwargs["GROUP_M"],
            num_warps=c.num_warps,
            num_stages=c.num_stages,
        )
        for c in _conv2d_relu_fwd_kernel_autotuned.configs
    ]


def main_loop(shape: traffic.ConvShape) -> str:
    """The conv kernel's main loop for ``shape``: ``"GEMM form"`` or ``"flat K"`` (few channels).

    Example:
        >>> [main_loop(s) for s in traffic.CONV_SHAPES[2:4]]
        ['flat K', 'GEMM form']
    """
    from torchkit.kernels.conv2d_relu import uses_flat_k

    return "flat K" if uses_flat_k(shape.c_in, shape.kernel, shape.kernel) else "GEMM form"


def autotune_candidates(shape: traffic.ConvShape, dtype: torch.dtype, tf32: bool) -> list[Any]:
    """The autotune configs (``triton.Config``) the conv kernel times for ``shape`` on a GPU:
    those its early pruning keeps for the shape's GEMM sizes, dtype and main loop.

    Example:
        >>> layer1 = next(s for s in traffic.CONV_SHAPES if s.name == "resnet50.layer1.3x3")
        >>> [c.kwargs["BLOCK_N"] for c in autotune_candidates(layer1, torch.float16, False)]
        [64, 64, 32]
    """
    from torchkit.kernels.conv2d_relu import _conv2d_relu_fwd_kernel_autotuned as tuner
    from torchkit.kernels.conv2d_relu import _prune_configs, uses_flat_k

    launch = {
        "M": shape.batch * shape.out_size**2,
        "C_IN_G": shape.c_in,
        "C_OUT_G": shape.c_out,
        "KH": shape.kernel,
        "KW": shape.kernel,
        "x_ptr": torch.empty(0, dtype=dtype, device="meta"),  # read for its element size
    }
    return _prune_configs(
        list(tuner.configs),
        launch,
        FLAT_K=uses_flat_k(shape.c_in, shape.kernel, shape.kernel),
        INPUT_PRECISION="tf32" if tf32 and dtype == torch.float32 else "ieee",
    )


def conv_autotuned_call(call: Callable[[], object], device: torch.device) -> dict[str, Any]:
    """Run ``call`` (one fused conv forward) and say which config the autotuner used, and how
    this call tuned: ``tuning`` and ``tune_s``, the seconds it spent timing tiles (``None`` when
    it timed none). CPU tensors run fixed interpreter blocks, never autotuned."""
    if device.type != "cuda":
        call()
        return {
            "config": "interpreter blocks (CPU tensors are not autotuned)",
            "tuning": "none",
            "tune_s": None,
        }
    from triton import knobs

    from torchkit.kernels.conv2d_relu import _conv2d_relu_fwd_kernel_autotuned as tuner

    events: list[dict[str, Any]] = []
    keys_before = len(tuner.cache)
    with knobs.autotuning.scope():
        knobs.autotuning.listener = lambda **event: events.append(event)
        call()
    figures: dict[str, Any] = {"config": tile_label(tuner.best_config), "tune_s": None}
    if events:
        event = events[-1]
        timed = f"timed {len(event['configs_timings'])} tiles"
        figures["tuning"] = f"{timed} (Triton's disk cache)" if event["cache_hit"] else timed
        figures["tune_s"] = event["duration"]
    elif len(tuner.cache) > keys_before:
        figures["tuning"] = "one tile left after pruning, not timed"
    else:
        figures["tuning"] = "tuned earlier in this run"
    return figures


def tile_label(config: Any) -> str:
    """A conv tiling, a ``Conv2dReLUBlocks`` or an autotune ``triton.Config``, in one line.

    Example:
        >>> from torchkit.kernels.conv2d_relu import Conv2dReLUBlocks
        >>> tile_label(Conv2dReLUBlocks(128, 64, 32, num_warps=4, num_stages=3))
        '128x64x32, 4 warps, 3 stages'
    """
    if hasattr(config, "block_m"):  # Conv2dReLUBlocks
        sizes = (config.block_m, config.block_n, config.block_k)
    else:
        sizes = tuple(config.kwargs[name] for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    return "x".join(map(str, sizes)) + f", {config.num_warps} warps, {config.num_stages} stages"


# --------------------------------------------------------------------------------------------
# The report: JSON and Markdown, rewritten after every case


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """``rows`` as a Markdown table; columns default to every key, in order of first appearance.

    Example:
        >>> print(markdown_table([{"case": "a", "time_us": 1.23456}, {"case": "b", "ok": True}]))
        | case | time_us | ok |
        | --- | --- | --- |
        | a | 1.235 | - |
        | b | - | yes |
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def status_summary(cases: Sequence[dict[str, Any]]) -> str:
    """How many cases have each status, in order of first appearance.

    Example:
        >>> status_summary([{"status": "ok"}, {"status": "skipped"}, {"status": "ok"}])
        '2 ok, 1 skipped'
    """
    counts: dict[str, int] = {}
    for case in cases:
        counts[case["status"]] = counts.get(case["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "not reached"


class Report:
    """What the run measured so far, written to ``out/gpu_check.{json,md}`` after every case."""

    def __init__(
        self,
        out: Path,
        meta: dict[str, Any],
        sections: Sequence[tuple[str, str, float]] = SECTIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.clock = clock
        self.started = clock()
        self.data: dict[str, Any] = {
            "meta": meta,
            "sections": [
                {"name": n, "title": t, "budget_s": b, "elapsed_s": 0.0, "cases": []}
                for n, t, b in sections
            ],
        }
        out.mkdir(parents=True, exist_ok=True)
        self.write()

    def entry(self, name: str) -> dict[str, Any]:
        return next(s for s in self.data["sections"] if s["name"] == name)

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[Section]:
        """Run one section: its deadline is the start of the run plus the budgets up to it."""
        names = [s["name"] for s in self.data["sections"]]
        budgets = [s["budget_s"] for s in self.data["sections"]]
        deadline = self.started + sum(budgets[: names.index(name) + 1])
        entry = self.entry(name)
        start = self.clock()
        try:
            yield Section(self, entry, deadline)
        finally:
            entry["elapsed_s"] = round(self.clock() - start, 3)
            self.write()

    def write(self) -> None:
        self.data["meta"]["elapsed_s"] = round(self.clock() - self.started, 3)
        _atomic_write(
            self.out / "gpu_check.json", json.dumps(self.data, indent=1, default=str) + "\n"
        )
        _atomic_write(self.out / "gpu_check.md", self.markdown())

    def markdown(self) -> str:
        meta = self.data["meta"]
        kind = "GPU run"
        if meta.get("dry_run"):
            kind = "dry run on CPU (Triton interpreter; its timings are not speeds)"
        lines = [
            f"# torchkit GPU check: {meta.get('gpu', '?')}",
            "",
            f"Written by `benchmarks/gpu_check.py`, {kind}. Statuses: ok, mismatch, "
            "skipped (with the reason), error.",
            "",
            markdown_table([{"key": k, "value": v} for k, v in meta.items()]),
        ]
        for s in self.data["sections"]:
            lines += [
                "",
                f"## {s['title']}",
                "",
                f"`{s['name']}`: {status_summary(s['cases'])}; {s['elapsed_s']:.1f} s "
                f"(budget {s['budget_s']:.0f} s).",
            ]
            if s["cases"]:
                lines += ["", markdown_table(s["cases"])]
        return "\n".join(lines) + "\n"

    def failures(self) -> list[dict[str, Any]]:
        return [
            case
            for s in self.data["sections"]
            for case in s["cases"]
            if case["status"] in ("mismatch", "error")
        ]


class Section:
    """The cases of one section; each runs through :meth:`case`."""

    def __init__(self, report: Report, entry: dict[str, Any], deadline: float) -> None:
        self.report, self.entry, self.deadline = report, entry, deadline

    def case(self, case_id: str, run: Callable[[], dict[str, Any]], **labels: Any) -> dict:
        """Run ``run`` (returning the case's figures, ``status`` optional) and record it.

        Past the section's deadline the case is recorded as skipped without running. A
        :class:`Skipped` exception records that status with its text; any other exception is
        recorded as an error, and the run continues.
        """
        record: dict[str, Any] = {"case": case_id, **labels}
        clock = self.report.clock
        if clock() > self.deadline:
            record.update(status="skipped", reason="time budget: the section's deadline passed")
        else:
            start = clock()
            try:
                figures = run()
                record.update(figures)
                record.setdefault("status", "ok")
            except Skipped as error:
                record.update(status="skipped", reason=str(error))
            except Exception as error:  # the run must go on: record it and continue
                where = traceback.extract_tb(error.__traceback__)[-1]
                record.update(
                    status="error",
                    reason=f"{type(error).__name__}: {error}"[:2000],
                    where=f"{Path(where.filename).name}:{where.lineno}",
                )
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            record["case_s"] = round(clock() - start, 3)
        # Status first after the id: the Markdown table reads best that way.
        ordered = {"case": case_id, "status": record.pop("status")}
        self.entry["cases"].append({**ordered, **record})
        self.report.write()
        return self.entry["cases"][-1]


# --------------------------------------------------------------------------------------------
# Where the run happens: device, timers, graphs


@dataclass(frozen=True)
class Target:
    """The device under test, and how to time and capture graphs on it (CPU stand-ins: dry run)."""

    device: torch.device
    dry_run: bool

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def bench(self, fn: Callable[[], object], rep_ms: int = 100) -> float:
        """Seconds per call of ``fn``: ``do_bench``'s median on CUDA; in a dry run one call
        timed with ``perf_counter`` after one warm-up call."""
        if self.cuda:
            import triton.testing

            return triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median") / 1e3
        fn()
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def step_times(self, step: Callable[[], object], steps: int) -> tuple[float, float]:
        """``(host, device)`` seconds per call of ``step``: host is the median time a call takes
        to return (nothing synchronises inside the loop), device is the GPU time between CUDA
        events around ``steps`` back-to-back calls, divided by ``steps`` (the steady state).
        A dry run reports the mean wall time of a call for both (CPU work is synchronous)."""
        step()
        self.sync()
        host = []
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        for _ in range(steps):
            t0 = time.perf_counter()
            step()
            host.append(time.perf_counter() - t0)
        if not self.cuda:
            return statistics.median(host), sum(host) / steps
        end.record()
        end.synchronize()
        return statistics.median(host), start.elapsed_time(end) / 1e3 / steps

    def graph(self, fn: Callable[[], object]) -> Callable[[], object]:
        """``fn`` captured in a CUDA graph (three warm-up calls on a side stream, then the
        capture); returns the replay. A dry run returns ``fn`` itself, called eagerly."""
        if not self.cuda:
            return fn
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Set cuDNN's TF32 switch (which FusedConv2dReLU follows too) for a block, then restore it."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def _bitwise(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: same value, or both NaN."""
    return (a == b) | (a.isnan() & b.isnan())


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


# --------------------------------------------------------------------------------------------
# 1. Adam correctness

ADAM_VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "amsgrad+wd": {"amsgrad": True, "weight_decay": 0.01},
    "maximize": {"maximize": True},
    "adamw": {"weight_decay": 0.01},
    "grad_scaler_inf": {},
    "capturable_graph": {},
}


def _adam_shapes(target: Target) -> list[tuple[int, ...]]:
    if target.dry_run:
        return [(37,), (6, 5), (3, 1, 3, 3), (1,)]
    return [(1 << 20,), (1023,), (256, 64, 3, 3), (1,)]


def adam_compare(target: Target, dtype: torch.dtype, variant: str) -> dict[str, Any]:
    """Run FusedAdam/FusedAdamW and torch's fused Adam/AdamW side by side on the same gradients."""
    from torchkit.optim import FusedAdam, FusedAdamW

    steps = 3 if target.dry_run else 5
    gen = torch.Generator().manual_seed(0)
    shapes = _adam_shapes(target)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(steps)]
    if variant == "grad_scaler_inf":
        grads[1][0].view(-1)[0] = math.inf  # the second step overflows: both must skip it

    def params() -> list[torch.nn.Parameter]:
        return [torch.nn.Parameter(t.to(target.device, dtype)) for t in init]

    ours_p, ref_p = params(), params()
    options = {"lr": 1e-2, **ADAM_VARIANTS[variant]}
    adamw = variant == "adamw"
    ours_cls, ref_cls = (FusedAdamW, torch.optim.AdamW) if adamw else (FusedAdam, torch.optim.Adam)
    if variant == "capturable_graph":
        ours = ours_cls(ours_p, capturable=True, **options)
        ref = ref_cls(ref_p, fused=True, capturable=True, **options)
    else:
        ours = ours_cls(ours_p, **options)
        ref = ref_cls(ref_p, fused=True, **options)

    if variant == "grad_scaler_inf":
        scalers = [torch.amp.GradScaler(target.device.type, init_scale=1024.0) for _ in range(2)]
        for step_grads in grads:
            for opt, ps, scaler in zip((ours, ref), (ours_p, ref_p), scalers, strict=True):
                g = [t.to(target.device) for t in step_grads]
                loss = sum((p.float() * gi).sum() for p, gi in zip(ps, g, strict=True))
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()
        scales = [s.get_scale() for s in scalers]
        extra: dict[str, Any] = {"scale_after": scales[0], "scale_equal": scales[0] == scales[1]}
    elif variant == "capturable_graph":
        for ps in (ours_p, ref_p):
            for p, g in zip(ps, grads[0], strict=True):
                p.grad = g.to(target.device, dtype)
        replays = [target.graph(ours.step), target.graph(ref.step)]
        for step_grads in grads:
            for ps, replay in zip((ours_p, ref_p), replays, strict=True):
                for p, g in zip(ps, step_grads, strict=True):
                    p.grad.copy_(g)
                replay()
        extra = {"graph": "eager stand-in (dry run)" if target.dry_run else "CUDA graph replay"}
    else:
        for step_grads in grads:
            for opt, ps in ((ours, ours_p), (ref, ref_p)):
                for p, g in zip(ps, step_grads, strict=True):
                    p.grad = g.to(target.device, dtype)
                opt.step()
        extra = {}
    target.sync()

    backend = str(ours.last_backend)
    expected = "triton" if target.cuda else "triton-interpreter"
    a = torch.cat([p.detach().reshape(-1) for p in ours_p])
    b = torch.cat([p.detach().reshape(-1) for p in ref_p])
    moments = [
        _max_diff(ours.state[po][key], ref.state[pr][key])
        for po, pr in zip(ours_p, ref_p, strict=True)
        for key in ("exp_avg", "exp_avg_sq")
    ]
    figures = {
        "backend": backend,
        "steps": steps,
        "elements": a.numel(),
        "bitwise_equal": float(_bitwise(a, b).double().mean()),
        "max_abs_diff": _max_diff(a, b),
        "moments_max_abs_diff": max(moments),
        **extra,
    }
    try:
        torch.testing.assert_close(a, b)  # the dtype's default tolerances
    except AssertionError as error:
        figures.update(status="mismatch", reason=str(error).splitlines()[0])
    if backend != expected:
        figures.update(status="error", reason=f"ran on backend {backend}, expected {expected}")
    return figures


def run_adam_correctness(section: Section, target: Target) -> None:
    for dtype_name, dtype in DTYPES.items():
        for variant in ADAM_VARIANTS:
            section.case(
                f"adam/{dtype_name}/{variant}",
                lambda d=dtype, v=variant: adam_compare(target, d, v),
                dtype=dtype_name,
                variant=variant,
            )


# --------------------------------------------------------------------------------------------
# 2. Conv correctness

CONV_CORRECTNESS = ("lenet.conv1", "lenet.conv2", "resnet50.layer1.3x3", "resnet50.layer2.1x1")
CONV_CORRECTNESS += ("resnet50.layer4.3x3",)
# precision -> (dtype, TF32 on, unit roundoff of the products)
PRECISIONS: dict[str, tuple[torch.dtype, bool, float]] = {
    "fp32": (torch.float32, False, 2.0**-24),
    "tf32": (torch.float32, True, 2.0**-11),
    "fp16": (torch.float16, False, 2.0**-11),
    "bf16": (torch.bfloat16, False, 2.0**-8),
}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
# (precision, layout) the speed section times, in its order: mixed precision in channels_last,
# and fp32 on TF32 tensor cores in torch's default layout.
SPEED_VARIANTS = (("fp16", "channels_last"), ("bf16", "channels_last"), ("tf32", "nchw"))


def _shape(name: str, target: Target) -> traffic.ConvShape:
    """A benchmark shape; in a dry run shrunk to a few pixels and channels (same kernel size,
    stride and padding), so the interpreter runs it in milliseconds. The input channels stay
    as they are below 16 and become 32 above: the shape keeps its main loop (:func:`main_loop`),
    and 32 channels fill one ``BLOCK_K`` step of the GEMM form as ResNet's do on a GPU."""
    shape = next(s for s in traffic.CONV_SHAPES if s.name == name)
    if not target.dry_run:
        return shape
    size = max(shape.kernel + 2, min(shape.size, 9))
    return traffic.ConvShape(
        shape.name, 2, min(shape.c_in, 32), min(shape.c_out, 6), size, shape.kernel,
        shape.stride, shape.padding,
    )  # fmt: skip


def _conv_inputs(
    shape: traffic.ConvShape, dtype: torch.dtype, layout: str, target: Target, seed: int = 0
) -> tuple[torch.Tensor, torch.nn.Conv2d]:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(
        shape.c_in, shape.c_out, shape.kernel, stride=shape.stride, padding=shape.padding
    )
    conv = conv.to(target.device, dtype).to(memory_format=LAYOUTS[layout])
    x = torch.randn(shape.batch, shape.c_in, shape.size, shape.size, device=target.device)
    return x.to(dtype).contiguous(memory_format=LAYOUTS[layout]), conv


def _relative_errors(
    results: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]
) -> list[float]:
    """``max|a - ref| / max|ref|`` per pair (0 when the reference is all zero and so is ``a``)."""
    errors = []
    for a, r in zip(results, reference, strict=True):
        scale = float(r.abs().max())
        diff = float((a.double() - r).abs().max())
        errors.append(diff / scale if scale > 0 else diff)
    return errors


def conv_compare(target: Target, name: str, precision: str, layout: str) -> dict[str, Any]:
    """FusedConv2dReLU and stock ``relu(conv2d)``, forward and backward, each against float64.

    A quantity passes when torchkit's relative error is at most four times stock torch's, or
    at most ``4 sqrt(K) u`` (``K`` terms summed, ``u`` the unit roundoff of the products): the
    error a sum of ``K`` rounded products reaches. Backward: input, weight and bias gradients
    for a fixed random upstream gradient.
    """
    from torchkit.nn import FusedConv2dReLU

    dtype, use_tf32, unit = PRECISIONS[precision]
    shape = _shape(name, target)
    x, conv = _conv_inputs(shape, dtype, layout, target)
    fused = FusedConv2dReLU.from_conv(conv)
    upstream = None
    outputs = {}
    with tf32(use_tf32):
        # The first call autotunes (and compiles a variant not seen before): say what it chose.
        with torch.no_grad():
            tuning = conv_autotuned_call(lambda: fused(x), target.device)
        for which in ("torchkit", "stock", "float64"):
            cast = torch.float64 if which == "float64" else dtype
            xi = x.detach().to(cast).requires_grad_()
            w = conv.weight.detach().to(cast).requires_grad_()
            b = conv.bias.detach().to(cast).requires_grad_()
            if which == "torchkit":  # the layer and its parameters: its autograd is tested
                y = fused(xi)
                w, b = fused.weight, fused.bias
            else:
                y = torch.relu(F.conv2d(xi, w, b, conv.stride, conv.padding))
            if upstream is None:
                upstream = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
                upstream = upstream.to(target.device)
            grads = torch.autograd.grad(y, (xi, w, b), upstream.to(cast))
            outputs[which] = [y.detach(), *grads]
    ref = outputs["float64"]
    ours = _relative_errors(outputs["torchkit"], ref)
    stock = _relative_errors(outputs["stock"], ref)
    m = shape.batch * shape.out_size**2
    terms = [
        shape.c_in * shape.kernel**2,  # output: a sum over C_in x KH x KW
        shape.c_out * shape.kernel**2,  # input gradient
        m,  # weight gradient
        m,  # bias gradient
    ]
    names = ("out", "grad_input", "grad_weight", "grad_bias")
    failed = [
        n
        for n, e_ours, e_stock, k in zip(names, ours, stock, terms, strict=True)
        if not e_ours <= max(4 * e_stock, 4 * math.sqrt(k) * unit)
    ]
    expected = "triton" if target.cuda else "triton-interpreter"
    figures: dict[str, Any] = {
        "shape": shape.label(),
        "main_loop": main_loop(shape),
        "backend": str(fused.last_backend),
        "reference": "cuDNN" if target.cuda else "CPU F.conv2d (dry run)",
    }
    for n, e_ours, e_stock in zip(names, ours, stock, strict=True):
        figures[f"{n}_err"] = e_ours
        figures[f"{n}_err_stock"] = e_stock
    figures.update(tuning)
    if failed:
        figures.update(status="mismatch", reason=f"error above bound: {', '.join(failed)}")
    if figures["backend"] != expected:
        figures.update(status="error", reason=f"ran on {figures['backend']}, expected {expected}")
    return figures


def run_conv_correctness(section: Section, target: Target) -> None:
    # The variants the speed section times come first (it reuses their compiled kernels and
    # autotune choices); if the budget runs out, the others are the ones skipped.
    variants = list(SPEED_VARIANTS)
    variants += [(p, lay) for p in PRECISIONS for lay in LAYOUTS if (p, lay) not in variants]
    for precision, layout in variants:
        for name in CONV_CORRECTNESS:
            section.case(
                f"conv/{name}/{precision}/{layout}",
                lambda n=name, p=precision, lay=layout: conv_compare(target, n, p, lay),
            )


# --------------------------------------------------------------------------------------------
# 3. Adam bandwidth and tiling


def _adam_tensors(numels: Sequence[int], dtype: torch.dtype, target: Target) -> dict[str, list]:
    gen = torch.Generator(target.device).manual_seed(0)
    new = [torch.randn(n, generator=gen, device=target.device).to(dtype) for n in numels]
    return {
        "params": new,
        "grads": [torch.randn_like(p) for p in new],
        "exp_avgs": [torch.zeros_like(p) for p in new],
        "exp_avg_sqs": [torch.zeros_like(p) for p in new],
    }


def adam_bandwidth(target: Target, dtype: torch.dtype, numel: int) -> dict[str, Any]:
    """One Adam step over one large tensor: FusedAdam against torch's fused kernel, in TB/s of
    the bytes a fused step must move (traffic.adam_bytes_per_param)."""
    from torchkit.optim import FusedAdam

    bytes_ = traffic.adam_bytes_per_param(dtype)[0] * numel
    times = {}
    for name, factory in (
        ("torchkit", FusedAdam),
        ("torch_fused", lambda ps: torch.optim.Adam(ps, fused=True)),
    ):
        tensors = _adam_tensors([numel], dtype, target)
        p = torch.nn.Parameter(tensors["params"][0])
        p.grad = tensors["grads"][0]
        opt = factory([p])
        opt.step()  # creates the state
        times[name] = target.bench(opt.step)
        del opt, p, tensors
    figures: dict[str, Any] = {"elements": numel, "bytes_per_step": bytes_}
    for name, t in times.items():
        figures[f"{name}_us"] = t * 1e6
        figures[f"{name}_tb_s"] = bytes_ / t / 1e12
    figures["torchkit_over_torch"] = times["torchkit"] / times["torch_fused"]
    gpu = _modelled_gpu(target)
    if gpu is not None:
        figures["torchkit_of_datasheet_bw"] = bytes_ / times["torchkit"] / gpu.bandwidth
    return figures


def adam_tiling(target: Target, tiling: Any, numel: int) -> dict[str, Any]:
    """One float32 Adam step over one large tensor with ``tiling``; ``aligned`` says whether
    the launch took the 128-bit variant (every address 16-byte aligned)."""
    tensors = _adam_tensors([numel], torch.float32, target)
    step, plan = adam_tiled_step(tensors, tiling)
    seconds = target.bench(step)
    bytes_ = traffic.adam_bytes_per_param(torch.float32)[0] * numel
    return {
        "block": tiling.block,
        "chunk": tiling.chunk,
        "num_warps": tiling.num_warps,
        "aligned": plan.aligned,
        "time_us": seconds * 1e6,
        "tb_s": bytes_ / seconds / 1e12,
    }


def _large_numel(target: Target) -> int:
    """Elements of the bandwidth tensors: 2^27 (0.5 GiB in fp32 per tensor), 4,099 dry."""
    return 4099 if target.dry_run else 1 << 27


def run_adam_bandwidth(section: Section, target: Target) -> None:
    for dtype_name in ("fp32", "bf16"):
        section.case(
            f"adam_bw/{dtype_name}",
            lambda d=DTYPES[dtype_name]: adam_bandwidth(target, d, _large_numel(target)),
            dtype=dtype_name,
        )


def run_adam_tiling(section: Section, target: Target) -> None:
    for i, tiling in enumerate(adam_tilings()):
        section.case(
            f"adam_tiling/{tiling.block}/{tiling.chunk}/{tiling.num_warps}w",
            lambda t=tiling: adam_tiling(target, t, _large_numel(target)),
            default=i == 0,
        )


# --------------------------------------------------------------------------------------------
# 4. Adam step time


def _step_optimizer(impl: str, params: list, capturable: bool, target: Target) -> Any:
    from torchkit.optim import FusedAdam

    groups = [{"params": params[0::2]}, {"params": params[1::2], "lr": 2e-3}]
    if impl == "torchkit":
        return FusedAdam(groups, capturable=capturable)
    if impl == "torch_foreach" and capturable and not target.cuda:
        raise Skipped("dry run: torch's foreach Adam refuses capturable=True on CPU tensors")
    kind = "fused" if impl == "torch_fused" else "foreach"
    return torch.optim.Adam(groups, capturable=capturable, **{kind: True})


def adam_step_time(target: Target, count: int, impl: str, mode: str) -> dict[str, Any]:
    """``optimizer.step()`` over ``count`` fp32 tensors in two param groups (a dry run takes
    a twentieth as many, at least two, of two elements each: the interpreter is slow per tensor)."""
    shapes = traffic.step_time_param_shapes(count)
    numels = [2] * max(2, count // 20) if target.dry_run else [math.prod(s) for s in shapes]
    tensors = _adam_tensors(numels, torch.float32, target)
    params = [torch.nn.Parameter(t) for t in tensors["params"]]
    for p, g in zip(params, tensors["grads"], strict=True):
        p.grad = g
    opt = _step_optimizer(impl, params, mode == "graph", target)
    opt.step()  # creates the state
    step = target.graph(opt.step) if mode == "graph" else opt.step
    host, device = target.step_times(step, 1 if target.dry_run else 50)
    return {
        "tensors_run": len(numels),
        "params": sum(numels),
        "host_us": host * 1e6,
        "device_us": device * 1e6,
    }


def run_adam_step_time(section: Section, target: Target) -> None:
    for count in (10, 161, 400):
        for mode in ("eager", "graph"):
            for impl in ("torchkit", "torch_fused", "torch_foreach"):
                section.case(
                    f"adam_step/{count}/{mode}/{impl}",
                    lambda c=count, i=impl, m=mode: adam_step_time(target, c, i, m),
                    tensors=count,
                    mode=mode if target.cuda or mode == "eager" else "graph (eager stand-in)",
                    impl=impl,
                )


# --------------------------------------------------------------------------------------------
# 5. Conv speed and 6. tiles

TILE_SHAPE = "resnet50.layer1.3x3"


def _modelled_gpu(target: Target) -> traffic.GPU | None:
    return traffic.gpu_for(torch.cuda.get_device_name(target.device)) if target.cuda else None


def _cudnn_fused(x: torch.Tensor, conv: torch.nn.Conv2d) -> Callable[[], object] | None:
    """``torch.cudnn_convolution_relu`` on these arguments, or ``None`` where it cannot run."""
    op = getattr(torch, "cudnn_convolution_relu", None)
    if op is None or not x.is_cuda or not torch.backends.cudnn.is_available():
        return None
    args = (x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return lambda: op(*args)


def conv_speed(target: Target, name: str, precision: str, layout: str) -> dict[str, Any]:
    """Forward (no grad) time per call of the fused layer, of ``F.conv2d(...).relu_()`` and of
    ``torch.cudnn_convolution_relu``; the first call's time (autotuning, and compiling when
    the variant is new) and the config the autotuner chose."""
    from torchkit.nn import FusedConv2dReLU

    dtype, use_tf32, _ = PRECISIONS[precision]
    shape = _shape(name, target)
    x, conv = _conv_inputs(shape, dtype, layout, target)
    fused = FusedConv2dReLU.from_conv(conv)
    args = (conv.weight, conv.bias, conv.stride, conv.padding)
    figures: dict[str, Any] = {"shape": shape.label(), "main_loop": main_loop(shape)}
    with torch.no_grad(), tf32(use_tf32):
        target.sync()
        start = time.perf_counter()
        choice = conv_autotuned_call(lambda: fused(x), target.device)
        target.sync()
        figures["first_call_s"] = time.perf_counter() - start
        figures["backend"] = str(fused.last_backend)
        times = {
            "torchkit": target.bench(lambda: fused(x)),
            "conv_relu_": target.bench(lambda: F.conv2d(x, *args).relu_()),
        }
        cudnn_fused = _cudnn_fused(x, conv)
        if cudnn_fused is not None:
            times["cudnn_fused"] = target.bench(cudnn_fused)
    figures.update(choice)
    for key, t in times.items():
        figures[f"{key}_us"] = t * 1e6
        figures[f"{key}_tflops"] = shape.flops / t / 1e12
    if cudnn_fused is None:
        figures["cudnn_fused_us"] = "n/a: needs CUDA and cuDNN"
    figures["torchkit_over_conv_relu_"] = times["torchkit"] / times["conv_relu_"]
    gpu = _modelled_gpu(target)
    if gpu is not None:
        mode = traffic.math_mode(dtype, tf32=use_tf32)
        path = traffic.conv_paths(shape, dtype)["torchkit"]
        figures["bound"] = path.bound(gpu, mode)
        figures["floor_us"] = path.floor(gpu, mode) * 1e6
        figures["torchkit_of_floor"] = path.floor(gpu, mode) / times["torchkit"]
    return figures


def run_conv_speed(section: Section, target: Target) -> None:
    for precision, layout in SPEED_VARIANTS:
        for shape in traffic.CONV_SHAPES:
            section.case(
                f"conv_speed/{shape.name}/{precision}/{layout}",
                lambda n=shape.name, p=precision, lay=layout: conv_speed(target, n, p, lay),
            )


def conv_tile(target: Target, tile: Any) -> dict[str, Any]:
    """The fused layer with ``tile`` pinned (``FusedConv2dReLU.blocks``) on the sweep's shape in
    fp16 channels_last: its first call (compiling the tile), time per call, and whether
    autotuning would time this tile for the shape (``autotune_candidate``)."""
    from torchkit.nn import FusedConv2dReLU

    shape = _shape(TILE_SHAPE, target)
    x, conv = _conv_inputs(shape, torch.float16, "channels_last", target)
    fused = FusedConv2dReLU.from_conv(conv)
    fused.blocks = tile
    candidates = {tile_label(c) for c in autotune_candidates(shape, torch.float16, tf32=False)}
    with torch.no_grad():
        start = time.perf_counter()
        fused(x)
        target.sync()
        first = time.perf_counter() - start
        seconds = target.bench(lambda: fused(x))
    return {
        "shape": shape.label(),
        "main_loop": main_loop(shape),
        "autotune_candidate": tile_label(tile) in candidates,
        "backend": str(fused.last_backend),
        "first_call_s": first,
        "time_us": seconds * 1e6,
        "tflops": shape.flops / seconds / 1e12,
    }


def run_conv_tiles(section: Section, target: Target) -> None:
    for tile in conv_tiles():
        section.case(
            f"conv_tile/{TILE_SHAPE}/fp16/{tile.block_m}x{tile.block_n}x{tile.block_k}",
            lambda t=tile: conv_tile(target, t),
            tile=tile_label(tile),
        )
    section.case(f"conv_tile/{TILE_SHAPE}/fp16/autotuned", lambda: conv_tile_autotuned(target))


def conv_tile_autotuned(target: Target) -> dict[str, Any]:
    """The layer's own (autotuned) call on the tile sweep's shape, in the sweep's columns."""
    speed = conv_speed(target, TILE_SHAPE, "fp16", "channels_last")
    return {
        "tile": f"autotuned: {speed['config']}",
        "shape": speed["shape"],
        "main_loop": speed["main_loop"],
        "backend": speed["backend"],
        "first_call_s": speed["first_call_s"],
        "tuning": speed["tuning"],
        "tune_s": speed["tune_s"],
        "time_us": speed["torchkit_us"],
        "tflops": speed["torchkit_tflops"],
    }


# --------------------------------------------------------------------------------------------
# 7. Adam on one tensor of more than 2^31 elements


def adam_large(target: Target) -> dict[str, Any]:
    """Two FusedAdam steps on one tensor of 2^31 + 4,099 elements; three slices (the start,
    across element 2^31, the end) checked against torch's fused Adam run on copies of them."""
    from torchkit.optim import FusedAdam

    numel = 5003 if target.dry_run else 2**31 + 4099
    boundary = numel // 2 if target.dry_run else 2**31
    figures: dict[str, Any] = {"elements": numel}
    if target.dry_run:
        figures["note"] = f"dry run: {numel:,} elements stand in for 2^31 + 4,099"
        dtype = torch.float32
    else:
        # p, grad, exp_avg, exp_avg_sq, plus the float32 randn a narrower dtype is cast from.
        torch.cuda.empty_cache()  # what earlier cases left in torch's allocator counts as used
        free = torch.cuda.mem_get_info(target.device)[0]
        fits = [
            d for d in (torch.float32, torch.bfloat16)
            if numel * (4 * d.itemsize + (4 if d.itemsize < 4 else 0)) + 2**30 < free
        ]  # fmt: skip
        if not fits:
            need = numel * 12 / 2**30
            raise Skipped(f"needs {need:.0f} GiB of free GPU memory, {free / 2**30:.0f} free")
        dtype = fits[0]
    figures["dtype"] = str(dtype).removeprefix("torch.")
    gen = torch.Generator(target.device).manual_seed(0)
    p = torch.nn.Parameter(torch.randn(numel, generator=gen, device=target.device).to(dtype))
    p.grad = torch.randn(numel, generator=gen, device=target.device).to(dtype)
    spans = [(0, 4096), (boundary - 2048, boundary + 2048), (numel - 4096, numel)]
    copies = [torch.nn.Parameter(p.detach()[a:b].clone()) for a, b in spans]
    for c, (a, b) in zip(copies, spans, strict=True):
        c.grad = p.grad[a:b].clone()
    ours, ref = FusedAdam([p], lr=1e-2), torch.optim.Adam(copies, lr=1e-2, fused=True)
    for _ in range(2):
        ours.step()
        ref.step()
    target.sync()
    a = torch.cat([p.detach()[lo:hi] for lo, hi in spans])
    b = torch.cat([c.detach() for c in copies])
    figures.update(
        backend=str(ours.last_backend),
        bitwise_equal=float(_bitwise(a, b).double().mean()),
        max_abs_diff=_max_diff(a, b),
    )
    try:
        torch.testing.assert_close(a, b)
    except AssertionError as error:
        figures.update(status="mismatch", reason=str(error).splitlines()[0])
    return figures


def run_adam_large(section: Section, target: Target) -> None:
    section.case("adam_large/2^31+4099", lambda: adam_large(target))


# --------------------------------------------------------------------------------------------
# The run

RUNNERS: dict[str, Callable[[Section, Target], None]] = {
    "adam_correctness": run_adam_correctness,
    "conv_correctness": run_conv_correctness,
    "adam_bandwidth": run_adam_bandwidth,
    "adam_tiling": run_adam_tiling,
    "adam_step_time": run_adam_step_time,
    "conv_speed": run_conv_speed,
    "conv_tiles": run_conv_tiles,
    "adam_large": run_adam_large,
}


def _first_line(command: list[str]) -> str | None:
    """The first line ``command`` prints, or ``None`` when it is missing or fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def environment(target: Target, argv: Sequence[str]) -> dict[str, Any]:
    """What the run ran on: GPU, driver, CUDA, cuDNN, torch, Triton, torchkit and the command."""
    import triton

    import torchkit

    meta: dict[str, Any] = {
        "dry_run": target.dry_run,
        "gpu": "none (dry run on CPU)",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(["python benchmarks/gpu_check.py", *argv]),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "torchkit": torchkit.__version__,
        "torchkit_commit": _first_line(["git", "-C", str(HERE), "rev-parse", "HEAD"]),
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "finished": False,
    }
    if target.cuda:
        props = torch.cuda.get_device_properties(target.device)
        gpu = _modelled_gpu(target)
        meta.update(
            gpu=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            sms=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            driver=_first_line(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            ),
            roofline_model=gpu.name if gpu else None,
        )
    return meta


def default_out(target: Target) -> Path:
    """``benchmarks/results/<gpu name>`` (``dry-run`` for a dry run)."""
    if not target.cuda:
        return RESULTS / "dry-run"
    name = torch.cuda.get_device_name(target.device)
    return RESULTS / (re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-") or "gpu")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, Triton interpreter, tiny sizes"
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (default: benchmarks/results/<gpu>)"
    )
    parser.add_argument(
        "--sections",
        default=",".join(name for name, _, _ in SECTIONS),
        help="comma-separated subset of the sections, in their fixed order",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(RUNNERS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; expected some of {list(RUNNERS)}")

    if args.dry_run:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            parser.error("--dry-run needs TRITON_INTERPRET=1 before triton is imported")
        os.environ["TRITON_INTERPRET"] = "1"
        target = Target(torch.device("cpu"), dry_run=True)
    else:
        if os.environ.get("TRITON_INTERPRET") == "1":
            parser.error("TRITON_INTERPRET=1 is set: unset it, or pass --dry-run")
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU machine, or pass --dry-run")
        target = Target(torch.device("cuda", torch.cuda.current_device()), dry_run=False)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when unset

    sections = [s for s in SECTIONS if s[0] in chosen]
    meta = environment(target, argv)
    meta["budget_s"] = sum(b for _, _, b in sections)
    out = args.out or default_out(target)
    report = Report(out, meta, sections)
    print(f"gpu_check: writing {out}/gpu_check.{{json,md}}", file=sys.stderr)
    try:
        for name, title, _ in sections:
            print(f"gpu_check: {title}", file=sys.stderr)
            with report.section(name) as section:
                RUNNERS[name](section, target)
        meta["finished"] = True
    finally:
        report.write()
    failures = report.failures()
    for case in failures:
        print(f"gpu_check: {case['status']}: {case['case']}: {case.get('reason')}", file=sys.stderr)
    print(
        f"gpu_check: done in {meta['elapsed_s']:.0f} s; {len(failures)} failure(s)", file=sys.stderr
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
