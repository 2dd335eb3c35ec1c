"""FusedConv2dReLU against stock ``relu(conv2d(x))``, measured in one run and printed as ratios.

* CPU: forward and forward+backward of ``FusedConv2dReLU`` (whatever backend it picks on this
  machine; with ``TRITON_INTERPRET=1`` that would be the interpreter, so the CPU rows are
  skipped then) against ``nn.Conv2d`` + ``nn.ReLU``. The two are timed interleaved, call by
  call, and the ratio is of the medians: on a shared machine a slow stretch hits both.
* CUDA: the Triton kernel against cuDNN conv + ReLU and against cuDNN's fused
  ``torch.cudnn_convolution_relu``, with ``triton.testing.do_bench``, forward only, fp16
  channels_last and fp32, over LeNet and ResNet-18/50 layer shapes.

``ratio`` is torchkit time / stock time: below 1 is faster. Run ``python
benchmarks/bench_conv_relu.py [--quick]``; :func:`run` returns the rows for
``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import torchkit
from torchkit.backend import Backend
from torchkit.nn import FusedConv2dReLU

BENCHMARK = "conv2d_relu"


@dataclass(frozen=True)
class Layer:
    """A convolution of a known network and the input it sees."""

    name: str
    batch: int
    in_channels: int
    out_channels: int
    size: int
    kernel_size: int
    stride: int = 1
    padding: int = 0

    def conv(self, **factory: Any) -> nn.Conv2d:
        return nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            **factory,
        )

    def input(self, batch: int, **factory: Any) -> torch.Tensor:
        return torch.randn(batch, self.in_channels, self.size, self.size, **factory)


LAYERS = [
    Layer("lenet.conv1", 64, 1, 6, 32, 5),
    Layer("lenet.conv2", 64, 6, 16, 14, 5),
    Layer("resnet.conv1", 8, 3, 64, 224, 7, stride=2, padding=3),
    Layer("resnet.layer1", 8, 64, 64, 56, 3, padding=1),
    Layer("resnet.layer3", 8, 256, 256, 14, 3, padding=1),
    Layer("resnet50.layer2.1x1", 8, 512, 128, 28, 1),
]
QUICK_LAYERS = ("lenet.conv2", "resnet.layer1")


def _interleaved_medians(
    first: Callable[[], object], second: Callable[[], object], repeats: int
) -> tuple[float, float]:
    """Median seconds of ``first`` and ``second``, called alternately ``repeats`` times each."""
    for _ in range(2):  # warm-up: allocator, oneDNN primitive caches
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for i in range(repeats):
        order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate which one runs first
        for which in order:
            fn = (first, second)[which]
            start = time.perf_counter()
            fn()
            times[which].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _conv_then_relu(x: torch.Tensor, *conv_args: Any) -> torch.Tensor:
    return F.relu(F.conv2d(x, *conv_args))


def _row(case: str, torchkit_s: float, stock_s: float) -> dict[str, Any]:
    return {
        "benchmark": BENCHMARK,
        "case": case,
        "torchkit_s": torchkit_s,
        "stock_s": stock_s,
        "ratio": torchkit_s / stock_s,
    }


def run_cpu(quick: bool) -> list[dict[str, Any]]:
    """Forward and forward+backward on CPU against ``nn.Conv2d`` + ``nn.ReLU``."""
    backend = FusedConv2dReLU.backend_for("cpu")
    if backend is Backend.TRITON_INTERPRETER:
        print("cpu: skipped: TRITON_INTERPRET=1 would time the Triton interpreter")
        return []
    layers = [layer for layer in LAYERS if not quick or layer.name in QUICK_LAYERS]
    repeats = 7 if quick else 31
    rows = []
    for layer in layers:
        torch.manual_seed(0)
        batch = min(layer.batch, 4) if quick else layer.batch
        conv = layer.conv()
        stock = nn.Sequential(conv, nn.ReLU())
        fused = FusedConv2dReLU.from_conv(conv)
        x = layer.input(batch)
        x_grad = x.clone().requires_grad_()

        def forward(module: nn.Module, x: torch.Tensor = x) -> None:
            with torch.no_grad():
                module(x)

        def training_step(module: nn.Module, x: torch.Tensor = x_grad) -> None:
            module(x).sum().backward()

        for kind, step in (("fwd", forward), ("fwd+bwd", training_step)):
            t_fused, t_stock = _interleaved_medians(
                functools.partial(step, fused), functools.partial(step, stock), repeats
            )
            rows.append(_row(f"cpu/{backend.value}/{kind}/{layer.name}/b{batch}", t_fused, t_stock))
    return rows


def run_cuda(quick: bool) -> list[dict[str, Any]]:
    """Forward on CUDA: the Triton kernel against cuDNN conv + ReLU and cuDNN's fused op."""
    if not torch.cuda.is_available():
        print("cuda: skipped: no CUDA")
        return []
    import triton.testing

    rows = []
    layers = [layer for layer in LAYERS if not quick or layer.name in QUICK_LAYERS]
    for dtype, memory_format in (
        (torch.float16, torch.channels_last),
        (torch.float32, torch.contiguous_format),
    ):
        for layer in layers:
            torch.manual_seed(0)
            conv = layer.conv(device="cuda", dtype=dtype).to(memory_format=memory_format)
            fused = FusedConv2dReLU.from_conv(conv)
            x = layer.input(layer.batch, device="cuda", dtype=dtype)
            x = x.contiguous(memory_format=memory_format)
            backend = fused.backend_for(x.device)
            if backend is not Backend.TRITON:
                raise RuntimeError(f"expected the Triton backend on CUDA, got {backend}")
            args = (conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
            with torch.no_grad():
                fused(x)  # autotune outside the timed region
                t_fused, t_conv_relu, t_cudnn_fused = (
                    triton.testing.do_bench(
                        functools.partial(fn, x, *fn_args), return_mode="median"
                    )
                    for fn, fn_args in (
                        (fused, ()),
                        (_conv_then_relu, args),
                        (torch.cudnn_convolution_relu, args),
                    )
                )
            tag = f"cuda/{str(dtype).removeprefix('torch.')}/{layer.name}/b{layer.batch}"
            rows.append(_row(f"{tag}/vs-conv+relu", t_fused / 1e3, t_conv_relu / 1e3))
            rows.append(
                _row(f"{tag}/vs-cudnn_convolution_relu", t_fused / 1e3, t_cudnn_fused / 1e3)
            )
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """All rows: ``{"benchmark", "case", "torchkit_s", "stock_s", "ratio"}``."""
    return run_cpu(quick) + run_cuda(quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two layers, small batches")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, torchkit {torchkit.__version__}, {threads} CPU threads")
    rows = run(args.quick)
    width = max((len(r["case"]) for r in rows), default=10)
    print(f"{'case':<{width}}  {'torchkit':>11}  {'stock':>11}  {'ratio':>6}")
    for r in rows:
        print(
            f"{r['case']:<{width}}  {r['torchkit_s'] * 1e3:9.3f}ms  {r['stock_s'] * 1e3:9.3f}ms  "
            f"{r['ratio']:6.3f}"
        )


if __name__ == "__main__":
    main()
