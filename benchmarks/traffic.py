"""Roofline model of torchkit's kernels and of the stock torch paths they replace: A100, H100, H200.

For every benchmark shape the model counts the floating-point operations, the bytes moved through
HBM and the kernel launches of each path *as torch runs it on CUDA*, then places each kernel on a
GPU's roofline: a kernel needs at least ``max(flops / peak, bytes / bandwidth)``, and the kernels of
one path run one after the other, so a path needs at least the sum of its kernels' floors. Which
term wins is the bound that applies (``"memory"`` or ``"compute"``); the ratio ``flops / bytes``
against the GPU's ridge point ``peak / bandwidth`` says the same.

These are floors, not predictions. Bytes count every tensor pass once (ideal reuse through caches
inside a kernel, none between kernels); a real implicit GEMM re-reads input tiles, and no kernel
reaches the datasheet peaks. Launch latency (a few microseconds each) is not in the floor; the
launch counts are listed beside it. Nothing here is measured: ``benchmarks/gpu_check.py`` measures.

The torch paths, read in torch's source (torch 2.4 to 2.13 run them the same way):

* ``F.conv2d(x, w, b)`` on CUDA: ``at::_convolution`` in ``aten/src/ATen/native/Convolution.cpp``,
  ``case ConvBackend::Cudnn``, calls ``at::cudnn_convolution(...)`` (no bias) and then
  ``output.add_(reshape_bias(input.dim(), bias))``: a second kernel that reads and writes the
  output. ``.relu_()`` (or ``F.relu``) is a third, reading and writing it again: the output
  crosses HBM 5 times in 3 launches (3 times in 2 launches without bias).
* torchkit's ``FusedConv2dReLU`` on CUDA: ``conv2d_relu_fwd`` in ``triton_kernels/conv2d_relu.py``
  reads the input as NHWC; an NCHW input (more than one channel) is first converted with one
  ``x.contiguous(memory_format=torch.channels_last)``, a copy kernel that reads and writes the
  input once more, then the fused kernel runs: 2 launches. A channels_last input is read in
  place: 1 launch. (cuDNN may transpose an NCHW input internally for its tensor-core kernels
  too; that is not counted for the stock paths, whose bytes stay a floor.)
* ``torch.cudnn_convolution_relu(x, w, b, ...)``: ``aten/src/ATen/native/cudnn/ConvShared.cpp``
  makes one ``raw_cudnn_convolution_add_relu_out`` call (cuDNN's conv-bias-activation) with the
  output as ``z`` and ``alpha = 0``: counted as one output write (cuDNN does not document whether
  it reads ``z`` when its scale is 0, which would add one pass).
* ``torch.optim.Adam(fused=True)``: ``FusedAdamMathFunctor`` in
  ``aten/src/ATen/native/cuda/fused_adam_utils.cuh`` reads param, grad, exp_avg, exp_avg_sq and
  writes param, exp_avg, exp_avg_sq (and max_exp_avg_sq with AMSGrad); it writes the gradient back
  only when a ``grad_scale`` is given. ``multi_tensor_apply_for_fused_optimizer`` in
  ``aten/src/ATen/native/cuda/MultiTensorApply.cuh`` cuts the launches: 65,536-element chunks, a
  new launch whenever a launch holds 320 chunks or ``depth_to_max_tensors`` tensors (36 at depth 4,
  30 with AMSGrad); ``_fused_adam`` in ``torch/optim/adam.py`` adds one ``_foreach_add_`` on the
  step counters per param group.
* ``torch.optim.Adam(foreach=True)``: ``_multi_tensor_adam`` in ``torch/optim/adam.py``, see
  :func:`adam_bytes_per_param`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tables import markdown_table  # benchmarks/ is a folder of scripts: its modules import so

# --------------------------------------------------------------------------------------------
# GPUs: datasheet figures. Tensor-core peaks are the dense ones (the datasheets print the
# 2:4-sparse figure, twice as large, with an asterisk); "fp32" is the CUDA-core (non-tensor) rate.


@dataclass(frozen=True)
class GPU:
    """One GPU's HBM bandwidth and peak dense FLOP/s per math mode, with their source."""

    name: str
    bandwidth: float  # bytes/s
    peaks: dict[str, float]  # FLOP/s: "fp16", "bf16" and "tf32" tensor cores, "fp32" CUDA cores
    source: str

    def ridge(self, mode: str) -> float:
        """FLOP per byte above which a kernel in math ``mode`` is compute-bound on this GPU."""
        return self.peaks[mode] / self.bandwidth


A100 = GPU(
    "A100 SXM4 80GB",
    2.039e12,
    {"fp16": 312e12, "bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "NVIDIA A100 Tensor Core GPU datasheet: 2,039 GB/s HBM2e; FP16/BF16 312, TF32 156, "
    "FP32 19.5 TFLOPS (dense)",
)
H100 = GPU(
    "H100 SXM5 80GB",
    3.35e12,
    {"fp16": 989.5e12, "bf16": 989.5e12, "tf32": 494.5e12, "fp32": 67e12},
    "NVIDIA H100 Tensor Core GPU datasheet, SXM: 3.35 TB/s HBM3; FP16/BF16 1,979 and TF32 989 "
    "TFLOPS with sparsity, half that dense; FP32 67 TFLOPS",
)
H200 = GPU(
    "H200 SXM 141GB",
    4.8e12,
    H100.peaks,  # the same GH100 chip and clocks: only the memory differs
    "NVIDIA H200 Tensor Core GPU datasheet, SXM: 4.8 TB/s HBM3e; FP16/BF16 1,979 and TF32 989 "
    "TFLOPS with sparsity, half that dense; FP32 67 TFLOPS",
)
GPUS: tuple[GPU, ...] = (A100, H100, H200)


# Not on the page, but named by torch as "...A100-SXM4-40GB": the same chip with HBM2.
A100_40GB = GPU(
    "A100 SXM4 40GB",
    1.555e12,
    A100.peaks,
    "NVIDIA A100 Tensor Core GPU datasheet: 1,555 GB/s HBM2 (40GB); peaks as the 80GB part",
)


def gpu_for(device_name: str) -> GPU | None:
    """The modelled GPU ``device_name`` (``torch.cuda.get_device_name()``) is, or ``None``.

    PCIe and NVL cards run other clocks, power limits and (A100 80GB PCIe) bandwidths than the
    SXM parts modelled here, so they are not matched.

    Example:
        >>> gpu_for("NVIDIA H200").name, gpu_for("NVIDIA A100-SXM4-40GB").name
        ('H200 SXM 141GB', 'A100 SXM4 40GB')
        >>> gpu_for("NVIDIA H100 PCIe") is None, gpu_for("Tesla T4") is None
        (True, True)
    """
    name = device_name.upper()
    if "PCIE" in name or "NVL" in name:
        return None
    if "A100" in name:
        return A100_40GB if "40GB" in name else A100
    return next((g for g in (H100, H200) if g.name.split()[0] in name), None)


def math_mode(dtype: torch.dtype, *, tf32: bool = False) -> str:
    """The peak that applies to a matrix product in ``dtype`` (``tf32``: fp32 on TF32 cores)."""
    if dtype == torch.float32:
        return "tf32" if tf32 else "fp32"
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


# --------------------------------------------------------------------------------------------
# Kernels, paths and their place on a roofline


@dataclass(frozen=True)
class Kernel:
    """One kernel launch: what it computes and moves through HBM."""

    name: str
    flops: float
    bytes: float


@dataclass(frozen=True)
class Path:
    """A sequence of kernel launches that computes one result (fused: a single launch)."""

    name: str
    kernels: tuple[Kernel, ...]

    @property
    def flops(self) -> float:
        return sum(k.flops for k in self.kernels)

    @property
    def bytes(self) -> float:
        return sum(k.bytes for k in self.kernels)

    @property
    def launches(self) -> int:
        return len(self.kernels)

    def _floors(self, gpu: GPU, mode: str) -> list[tuple[float, float]]:
        """Each kernel's ``(compute, memory)`` seconds on ``gpu``: its floor is the larger."""
        return [(k.flops / gpu.peaks[mode], k.bytes / gpu.bandwidth) for k in self.kernels]

    def floor(self, gpu: GPU, mode: str) -> float:
        """Seconds no implementation of this path can beat on ``gpu`` (kernels run in turn)."""
        return sum(max(times) for times in self._floors(gpu, mode))

    def bound(self, gpu: GPU, mode: str) -> str:
        """``"compute"`` or ``"memory"``: the term that makes up most of the path's floor."""
        floors = self._floors(gpu, mode)
        compute = sum(flop_s for flop_s, byte_s in floors if flop_s >= byte_s)
        memory = sum(byte_s for flop_s, byte_s in floors if flop_s < byte_s)
        return "compute" if compute >= memory else "memory"


# --------------------------------------------------------------------------------------------
# Conv2d + bias + ReLU


@dataclass(frozen=True)
class ConvShape:
    """A convolution of a known network, on the input it sees (square, groups 1, dilation 1)."""

    name: str
    batch: int
    c_in: int
    c_out: int
    size: int
    kernel: int
    stride: int = 1
    padding: int = 0
    bias: bool = True

    @property
    def out_size(self) -> int:
        return (self.size + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def flops(self) -> int:
        """Multiply-adds of the convolution, twice (bias and ReLU are negligible beside them)."""
        m = self.batch * self.out_size**2
        return 2 * m * self.c_out * self.c_in * self.kernel**2

    def label(self) -> str:
        return (
            f"{self.name}: {self.c_in}->{self.c_out}, {self.kernel}x{self.kernel}"
            f"{f' s{self.stride}' if self.stride > 1 else ''}, {self.batch}x{self.size}x{self.size}"
        )


# The benchmark shapes: LeNet-5 at its training batch, ResNet-50's convolutions at batch 32
# (torchvision's layout: the 3x3 convolution of each stage, the 1x1 reductions and expansions).
CONV_SHAPES: tuple[ConvShape, ...] = (
    ConvShape("lenet.conv1", 64, 1, 6, 32, 5),
    ConvShape("lenet.conv2", 64, 6, 16, 14, 5),
    ConvShape("resnet50.conv1", 32, 3, 64, 224, 7, stride=2, padding=3),
    ConvShape("resnet50.layer1.3x3", 32, 64, 64, 56, 3, padding=1),
    ConvShape("resnet50.layer1.1x1", 32, 64, 256, 56, 1),
    ConvShape("resnet50.layer2.3x3", 32, 128, 128, 28, 3, padding=1),
    ConvShape("resnet50.layer2.1x1", 32, 512, 128, 28, 1),
    ConvShape("resnet50.layer3.3x3", 32, 256, 256, 14, 3, padding=1),
    ConvShape("resnet50.layer3.1x1", 32, 1024, 256, 14, 1),
    ConvShape("resnet50.layer4.3x3", 32, 512, 512, 7, 3, padding=1),
    ConvShape("resnet50.layer4.1x1", 32, 2048, 512, 7, 1),
)


LAYOUTS = ("channels_last", "nchw")


def conv_paths(
    shape: ConvShape, dtype: torch.dtype, layout: str = "channels_last"
) -> dict[str, Path]:
    """The three ways to compute ``relu(conv2d(x, w, b))`` on CUDA, as launches and bytes.

    * ``"torchkit"``: the fused kernel reads x, w and b once and writes y once; for an NCHW
      input with more than one channel, a copy to channels_last comes first (module docstring).
    * ``"torch"``: ``F.conv2d(...).relu_()``: cuDNN's convolution writes y, the bias add reads
      and writes it, the ReLU reads and writes it (module docstring).
    * ``"cudnn_fused"``: ``torch.cudnn_convolution_relu``, one cuDNN launch writing y once.

    Args:
        shape: the convolution.
        dtype: the dtype of input, weight, bias and output.
        layout: the memory format of the input (and so of the output), ``"channels_last"`` or
            ``"nchw"``.

    Example:
        >>> layer1 = next(s for s in CONV_SHAPES if s.name == "resnet50.layer1.3x3")
        >>> fused = conv_paths(layer1, torch.float32, "nchw")["torchkit"]
        >>> fused.launches, round(fused.bytes / 1e6, 1)
        (2, 102.9)
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    size = dtype.itemsize
    x = shape.batch * shape.c_in * shape.size**2
    w = shape.c_out * shape.c_in * shape.kernel**2
    inputs = (x + w) * size
    bias = shape.c_out * size if shape.bias else 0
    y = shape.batch * shape.c_out * shape.out_size**2  # output elements
    out = y * size
    conv = Kernel("conv", shape.flops, inputs + bias + out)
    fused = [conv]
    if layout == "nchw" and shape.c_in > 1:  # one channel: NCHW and NHWC are the same bytes
        fused.insert(0, Kernel("contiguous(channels_last) of x", 0, 2 * x * size))
    unfused = [Kernel("cudnn_convolution", shape.flops, inputs + out)]
    if shape.bias:
        unfused.append(Kernel("add_ (bias)", y, 2 * out + bias))
    unfused.append(Kernel("relu_", y, 2 * out))
    return {
        "torchkit": Path("torchkit fused", tuple(fused)),
        "torch": Path("F.conv2d + relu_", tuple(unfused)),
        "cudnn_fused": Path("torch.cudnn_convolution_relu", (conv,)),
    }


# --------------------------------------------------------------------------------------------
# Adam

# FLOPs per element of one Adam step, counted from the update both fused kernels compute:
# weight decay 2, first moment 3, second moment 4, sqrt 1, bias correction 1, eps 1, step 3.
ADAM_FLOPS_PER_ELEMENT = 15


def adam_bytes_per_param(
    dtype: torch.dtype, *, amsgrad: bool = False, grad_scale: bool = False
) -> tuple[float, float]:
    """Bytes per parameter of one Adam step: (a fused kernel, torch's multi-tensor foreach path).

    Fused (torchkit's kernel and torch's ``fused=True`` alike): read p, g, m, v and write p, m, v
    (plus read and write v_max with AMSGrad; plus the unscaled gradient written back under a
    ``GradScaler``); the state has the parameter's dtype, as in torch. Foreach (torch 2.13
    ``_multi_tensor_adam``, not capturable, no weight decay), tensor passes per op:
    ``lerp_(m, g)`` 3, ``mul_(v)`` 2, ``addcmul_(v, g, g)`` 3, ``sqrt(v)`` 2, ``div_`` and ``add_``
    on that temporary 2 each, ``addcdiv_(p, m, denom)`` 4: 18 passes in 7 launches (AMSGrad adds
    ``maximum_`` over v_max, 3 passes).
    """
    size = dtype.itemsize
    fused = 7 + (2 if amsgrad else 0) + (1 if grad_scale else 0)
    foreach = 18 + (3 if amsgrad else 0)
    return fused * size, foreach * size


def torch_fused_adam_launches(numels: Sequence[int], *, amsgrad: bool = False) -> int:
    """Kernel launches of one ``torch._fused_adam_`` call over tensors of ``numels`` elements.

    Follows ``multi_tensor_apply_for_fused_optimizer`` (module docstring): chunks of 65,536
    elements; a launch when the current one holds 320 chunks, or holds ``depth_to_max_tensors``
    tensors (36 for Adam, 30 for AMSGrad) and the last one's chunks are all in; a tensor cut by a
    launch carries over into the next.

    Example:
        >>> torch_fused_adam_launches([1000] * 36), torch_fused_adam_launches([1000] * 37)
        (1, 2)
    """
    max_tensors = 30 if amsgrad else 36
    max_blocks, chunk_size = 320, 65536
    launches = tensors = blocks = 0
    for numel in numels:
        if numel == 0:
            continue
        tensors += 1
        chunks = -(-numel // chunk_size)
        for chunk in range(chunks):
            blocks += 1
            if (tensors == max_tensors and chunk == chunks - 1) or blocks == max_blocks:
                launches += 1
                blocks = 0
                tensors = 0 if chunk == chunks - 1 else 1
    return launches + (1 if blocks else 0)


@dataclass(frozen=True)
class AdamCase:
    """An optimizer step over a list of parameter tensors split into param groups."""

    name: str
    numels: tuple[int, ...]
    groups: int
    dtype: torch.dtype

    @property
    def params(self) -> int:
        return sum(self.numels)

    def paths(self) -> dict[str, Path]:
        """torchkit's one launch, torch's ``fused=True`` and ``foreach=True`` launches and bytes."""
        fused_b, foreach_b = adam_bytes_per_param(self.dtype)
        n = self.params
        flops = ADAM_FLOPS_PER_ELEMENT * n
        groups = [self.numels[g :: self.groups] for g in range(self.groups)]
        torch_fused = []
        for g, numels in enumerate(groups):
            torch_fused.append(Kernel(f"group {g} step counters (_foreach_add_)", 0, 0))
            launches = torch_fused_adam_launches(numels)
            share = sum(numels) / launches  # elements per launch, on average
            kernel = Kernel(
                f"group {g} _fused_adam_", ADAM_FLOPS_PER_ELEMENT * share, fused_b * share
            )
            torch_fused += [kernel] * launches
        # Foreach: 7 ops per group; each op is at least one launch (long lists take more).
        foreach = [
            Kernel(
                f"group {g} foreach op {i}", flops / self.groups / 7, foreach_b * sum(numels) / 7
            )
            for g, numels in enumerate(groups)
            for i in range(7)
        ]
        return {
            "torchkit": Path("torchkit FusedAdam", (Kernel("adam", flops, fused_b * n),)),
            "torch_fused": Path("torch Adam fused=True", tuple(torch_fused)),
            "torch_foreach": Path("torch Adam foreach=True (at least)", tuple(foreach)),
        }


def lenet5_param_shapes() -> list[tuple[int, ...]]:
    """LeNet-5's 10 parameter shapes (61,706 parameters), in module order."""
    shapes = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,)]
    return [*shapes, (10, 84), (10,)]


def resnet50_param_shapes() -> list[tuple[int, ...]]:
    """torchvision ResNet-50's 161 parameter shapes (25,557,032 parameters), in module order."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    in_ch = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True):
        for b in range(blocks):
            shapes += [(width, in_ch, 1, 1), (width,), (width,)]
            shapes += [(width, width, 3, 3), (width,), (width,)]
            shapes += [(4 * width, width, 1, 1), (4 * width,), (4 * width,)]
            if b == 0:
                shapes += [(4 * width, in_ch, 1, 1), (4 * width,), (4 * width,)]
            in_ch = 4 * width
    return [*shapes, (1000, 2048), (1000,)]


def step_time_param_shapes(count: int) -> list[tuple[int, ...]]:
    """Parameter shapes of the step-time benchmarks: LeNet-5's for 10 tensors, else ResNet-50's,
    repeated to ``count`` tensors (161: ResNet-50 itself; 400: 63.6M parameters)."""
    base = lenet5_param_shapes() if count == 10 else resnet50_param_shapes()
    return [base[i % len(base)] for i in range(count)]


def _numels(count: int) -> tuple[int, ...]:
    return tuple(math.prod(s) for s in step_time_param_shapes(count))


ADAM_CASES: tuple[AdamCase, ...] = (
    AdamCase("LeNet-5, 10 tensors", _numels(10), 2, torch.float32),
    AdamCase("ResNet-50, 161 tensors", _numels(161), 2, torch.float32),
    AdamCase("ResNet-50, 161 tensors", _numels(161), 2, torch.bfloat16),
    AdamCase("400 tensors", _numels(400), 2, torch.float32),
)


# --------------------------------------------------------------------------------------------
# Tables for docs/performance.md


def _gpu_label(gpu: GPU) -> str:
    return gpu.name.split()[0]


def conv_table(dtype: torch.dtype, *, tf32: bool = False, layout: str = "channels_last") -> str:
    """One row per benchmark shape in ``layout``: FLOPs, bytes and launches of the fused path and
    of ``F.conv2d + relu_``, the intensity of the convolution kernel (the same in every path),
    and per GPU the fused path's bound and the floor (µs) of each path."""
    mode = math_mode(dtype, tf32=tf32)
    gpu_columns = [f"{_gpu_label(g)}: bound, floor µs fused / unfused" for g in GPUS]
    rows = []
    for shape in CONV_SHAPES:
        paths = conv_paths(shape, dtype, layout)
        fused, unfused = paths["torchkit"], paths["torch"]
        conv = fused.kernels[-1]
        row = {
            "shape": shape.label(),
            "GFLOP": f"{shape.flops / 1e9:.3f}",
            "MB fused / unfused": f"{fused.bytes / 1e6:.2f} / {unfused.bytes / 1e6:.2f}",
            "launches fused / unfused": f"{fused.launches} / {unfused.launches}",
            "conv FLOP/B": f"{conv.flops / conv.bytes:.0f}",
        }
        for g, column in zip(GPUS, gpu_columns, strict=True):
            row[column] = (
                f"{fused.bound(g, mode)}, {fused.floor(g, mode) * 1e6:.2f} / "
                f"{unfused.floor(g, mode) * 1e6:.2f}"
            )
        rows.append(row)
    return markdown_table(rows, right=list(rows[0])[1:5])


def adam_table() -> str:
    """One row per Adam case: bytes, launches of torchkit / torch fused / foreach, per-GPU floor."""
    floor_columns = [f"{_gpu_label(g)} floor µs" for g in GPUS]
    rows = []
    for case in ADAM_CASES:
        p = case.paths()
        row = {
            "case": case.name,
            "dtype": str(case.dtype).removeprefix("torch."),
            "params": f"{case.params:,}",
            "MB fused / foreach": f"{p['torchkit'].bytes / 1e6:.1f} / "
            f"{p['torch_foreach'].bytes / 1e6:.1f}",
            "launches torchkit / torch fused / foreach": " / ".join(
                str(p[k].launches) + ("+" if k == "torch_foreach" else "")
                for k in ("torchkit", "torch_fused", "torch_foreach")
            ),
        }
        for g, column in zip(GPUS, floor_columns, strict=True):
            row[column] = f"{p['torchkit'].floor(g, 'fp32') * 1e6:.1f}"
        rows.append(row)
    numeric = ["params", "MB fused / foreach", "launches torchkit / torch fused / foreach"]
    return markdown_table(rows, right=numeric + floor_columns)


def gpu_table() -> str:
    """The GPU constants, their ridge points and sources."""
    rows = [
        {
            "GPU": g.name,
            "HBM TB/s": f"{g.bandwidth / 1e12:.3g}",
            "dense TFLOP/s fp16/bf16, TF32, fp32": f"{g.peaks['fp16'] / 1e12:.4g}, "
            f"{g.peaks['tf32'] / 1e12:.4g}, {g.peaks['fp32'] / 1e12:.3g}",
            "ridge FLOP/B fp16, TF32, fp32": f"{g.ridge('fp16'):.0f}, {g.ridge('tf32'):.0f}, "
            f"{g.ridge('fp32'):.1f}",
            "source": g.source,
        }
        for g in GPUS
    ]
    return markdown_table(rows, right=list(rows[0])[1:4])


def adam_note() -> str:
    """The sentence that introduces the Adam table: its intensity against the lowest ridge."""
    fp32, bf16 = (
        ADAM_FLOPS_PER_ELEMENT / adam_bytes_per_param(d)[0] for d in (torch.float32, torch.bfloat16)
    )
    ridge = min(g.ridge("fp32") for g in GPUS)
    return (
        f"Adam step: {ADAM_FLOPS_PER_ELEMENT} FLOP per element, {fp32:.2f} FLOP/B in fp32 and "
        f"{bf16:.2f} in bf16, below the lowest fp32 ridge of the three GPUs ({ridge:.1f}): "
        "memory-bound, so every floor below is bytes over bandwidth."
    )


def format_model() -> str:
    """Every table of the model, as docs/performance.md shows them."""
    return "\n\n".join(
        [
            gpu_table(),
            "Conv2d + bias + ReLU, fp16 in channels_last (bf16 moves the same bytes at the same "
            "peak):",
            conv_table(torch.float16),
            "Conv2d + bias + ReLU, fp32 inputs on TF32 tensor cores (cuDNN's default) in NCHW, "
            "torch's default layout (torchkit first copies the input to channels_last):",
            conv_table(torch.float32, tf32=True, layout="nchw"),
            adam_note(),
            adam_table(),
        ]
    )


if __name__ == "__main__":
    print(format_model())
