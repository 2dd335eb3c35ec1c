"""Multi-tensor Adam/AdamW: one Triton launch updates every tensor of one dtype and device.

An optimizer's parameters are many tensors of different sizes. The launcher describes all of
them in small device tables and launches one flat grid over their chunks:

* a *tensor table* (int64, one row per tensor): the addresses of the parameter, ``exp_avg``,
  ``exp_avg_sq``, ``max_exp_avg_sq`` and the ``step`` counter, the element count and the
  index of the tensor's param group;
* a *gradient table* (int64, one address per tensor), kept apart because ``zero_grad()``
  makes new gradients every step: it is rewritten only when an address changed;
* a *group table* (float64, one row per param group): ``lr``, ``beta1``, ``beta2``, ``eps``,
  ``weight_decay``. Tensor hyperparameters are copied into it on the device, never read on the
  host, so param groups of different hyperparameters share the launch;
* a *chunk table* (int32, one row per program): which tensor a program updates and which
  ``CHUNK``-element slice of it.

:class:`AdamPlan` builds these once for a fixed set of tensors and reuses them at every
launch; :func:`adam_multi_tensor` keeps the last plans it built, by the tensors' addresses.
The step count is read and advanced on the device (the last program of a tensor writes it
back), the bias corrections are computed in the kernel, and ``found_inf`` / ``grad_scale`` are
read there: a launch never synchronises with the host, so it can be captured in a CUDA graph.

The arithmetic is that of torch's CUDA kernel, ``FusedAdamMathFunctor`` in
``aten/src/ATen/native/cuda/fused_adam_utils.cuh`` (torch 2.13, the header its wheels ship):
the hyperparameters rounded to the compute type (float32; float64 for float64 tensors), the
moments updated with its fused multiply-adds, square roots and divisions rounded to nearest.
``beta ** step`` is binary exponentiation in float64, rounded once (torch calls ``powf``; the
two agree wherever ``powf`` rounds correctly). One deliberate difference: where ``grad * grad``
overflows (``|grad|`` above about 1.8e19 in float32), torch's kernel turns the second moment
into NaN; this one computes ``(1 - beta2) * grad * grad`` in that order there, as torch's CPU
kernel does, and stays finite. When every address is 16-byte aligned the *aligned* variant is
launched, which moves 128 bits per global access.

Triton's interpreter (CPU tensors, ``TRITON_INTERPRET=1``) truncates float32 to bfloat16 where a
GPU rounds to nearest even: told that it is interpreted, the kernel rounds explicitly.

This module holds the kernel and its launcher only; the optimizer classes, their state and
the choice of backend live in :mod:`torchkit.optim.adam`.
"""

from __future__ import annotations

import array
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import triton
import triton.language as tl

from torchkit._layout import fitted, is_dense, same_strides
from torchkit.kernels._aot import KernelSpec

__all__ = ["AdamPlan", "AdamTiling", "adam_multi_tensor", "aot_specs", "default_tiling"]

# Storage dtype -> (Triton storage dtype, Triton compute dtype), as torch's opmath types.
_KERNEL_DTYPES = {
    torch.float32: (tl.float32, tl.float32),
    torch.float16: (tl.float16, tl.float32),
    torch.bfloat16: (tl.bfloat16, tl.float32),
    torch.float64: (tl.float64, tl.float64),
}
# Complex tensors are updated as their real and imaginary parts (torch.view_as_real).
_REAL_OF_COMPLEX = {
    torch.complex64: torch.float32,
    torch.complex32: torch.float16,
    torch.complex128: torch.float64,
}
_GROUP_COLUMNS = 5  # lr, beta1, beta2, eps, weight_decay
_ALIGNMENT = 16  # bytes of one 128-bit access


class AdamTiling(NamedTuple):
    """How the flat grid is cut: a program updates ``chunk`` elements in ``block``-sized tiles.

    Args:
        block: elements per tile, a power of two (default: 512, one 16-byte float32 vector
            per thread on 4 warps; :func:`default_tiling` scales it to the dtype).
        chunk: elements per program, a multiple of ``block`` (default: 16384).
        num_warps: warps per program (ignored by the interpreter).
    """

    block: int = 512
    chunk: int = 16384
    num_warps: int = 4


# The interpreter runs every program instance and tile through numpy: one tile per program.
INTERPRETER_TILING = AdamTiling(block=4096, chunk=4096, num_warps=1)


def default_tiling(dtype: torch.dtype, device: torch.device) -> AdamTiling:
    """The tiling a launch on ``device`` uses for ``dtype`` tensors.

    On a GPU a tile is one 16-byte vector per thread and tensor (512 float32, 1024 bfloat16
    elements on 4 warps) and a program takes 32 tiles, which keeps the chunk table at 1/16384
    of the element count for float32. CPU tensors take :data:`INTERPRETER_TILING`.

    Example:
        >>> default_tiling(torch.bfloat16, torch.device("cuda"))
        AdamTiling(block=1024, chunk=32768, num_warps=4)
    """
    if device.type == "cpu":
        return INTERPRETER_TILING
    per_thread = _ALIGNMENT // dtype.itemsize
    block = 4 * 32 * per_thread
    return AdamTiling(block=block, chunk=32 * block, num_warps=4)


@triton.jit
def _bias_corrections(beta1, beta2, step, COMPUTE: tl.constexpr):
    """``(1 - beta1 ** step, sqrt(1 - beta2 ** step))`` in ``COMPUTE``, the powers by binary
    exponentiation in float64 (multiplications only, so each power rounds correctly to float32;
    libdevice's ``pow`` would bring approximate reciprocals, and the interpreter has none)."""
    n = step.to(tl.int32)
    base1 = beta1.to(tl.float64)
    base2 = beta2.to(tl.float64)
    power1 = tl.full((), 1.0, tl.float64)
    power2 = tl.full((), 1.0, tl.float64)
    while n > 0:
        if n % 2 == 1:
            power1 *= base1
            power2 *= base2
        base1 *= base1
        base2 *= base2
        n = n // 2
    correction1 = 1.0 - power1.to(COMPUTE)
    if COMPUTE.is_fp64():  # float64 square roots are always rounded to nearest
        correction2_sqrt = tl.sqrt(1.0 - power2)
    else:
        correction2_sqrt = tl.math.sqrt_rn(1.0 - power2.to(COMPUTE))
    return correction1, correction2_sqrt


@triton.jit
def _load(ptr, mask, COMPUTE: tl.constexpr, MASKED: tl.constexpr):
    """A tile read and converted to ``COMPUTE``; a whole tile unmasked, so that the aligned
    variant moves 16 bytes per access."""
    value = tl.load(ptr, mask=mask, other=0.0) if MASKED else tl.load(ptr)
    return value.to(COMPUTE)


@triton.jit
def _store(ptr, value, mask, DTYPE: tl.constexpr, MASKED: tl.constexpr, INTERPRETER: tl.constexpr):
    """A tile stored as ``DTYPE``, rounded to nearest even (the interpreter truncates to
    bfloat16 unless told)."""
    if INTERPRETER and DTYPE.is_bf16():
        bits = value.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        value = tl.where(value != value, value, bits.to(tl.float32, bitcast=True))
    if MASKED:
        tl.store(ptr, value.to(DTYPE), mask=mask)
    else:
        tl.store(ptr, value.to(DTYPE))


@triton.jit
def _adam_tile(
    offs,  # element offsets of the tile within its tensor
    bound,  # elements at offsets >= bound are outside the tensor (read only if MASKED)
    p_ptr,  # parameter
    g_ptr,  # gradient (stored back unscaled with HAS_GRAD_SCALE)
    m_ptr,  # exp_avg
    v_ptr,  # exp_avg_sq
    vmax_ptr,  # max_exp_avg_sq (read only with AMSGRAD)
    lr,  # the group's hyperparameters, in COMPUTE
    beta1,
    beta2,
    eps,
    weight_decay,
    step_size,  # lr / (1 - beta1 ** step)
    correction2_sqrt,  # sqrt(1 - beta2 ** step)
    grad_scale,  # GradScaler's scale (read only with HAS_GRAD_SCALE)
    DTYPE: tl.constexpr,
    COMPUTE: tl.constexpr,
    AMSGRAD: tl.constexpr,
    MAXIMIZE: tl.constexpr,
    DECOUPLED: tl.constexpr,
    HAS_GRAD_SCALE: tl.constexpr,
    MASKED: tl.constexpr,
    INTERPRETER: tl.constexpr,
):
    """One tile of the update, operation by operation as torch's ``adam_math``."""
    FLOAT32: tl.constexpr = not COMPUTE.is_fp64()  # float32 divisions must ask for div.rn
    mask = offs < bound
    g = _load(g_ptr + offs, mask, COMPUTE, MASKED)
    p = _load(p_ptr + offs, mask, COMPUTE, MASKED)
    m = _load(m_ptr + offs, mask, COMPUTE, MASKED)
    v = _load(v_ptr + offs, mask, COMPUTE, MASKED)
    if HAS_GRAD_SCALE:
        g = tl.math.fdiv(g, grad_scale, ieee_rounding=FLOAT32)
        _store(g_ptr + offs, g, mask, DTYPE, MASKED, INTERPRETER)
    if MAXIMIZE:
        g = -g
    if weight_decay != 0.0:
        if DECOUPLED:
            p = tl.fma(-(lr * weight_decay), p, p)
        else:
            g = tl.fma(p, weight_decay, g)
    m = tl.fma(beta1, m, tl.fma(-beta1, g, g))
    square = g * g
    v_fused = tl.fma(beta2, v, tl.fma(-beta2, square, square))
    # torch squares first, and an infinite square makes v NaN (|g| > ~1.8e19 in float32):
    # there (1 - beta2) * g * g, in that order, keeps v finite (torch's CPU kernel's order).
    v = tl.where(square - square != 0.0, tl.fma(beta2, v, ((1.0 - beta2) * g) * g), v_fused)
    _store(m_ptr + offs, m, mask, DTYPE, MASKED, INTERPRETER)
    _store(v_ptr + offs, v, mask, DTYPE, MASKED, INTERPRETER)
    if AMSGRAD:
        vmax = _load(vmax_ptr + offs, mask, COMPUTE, MASKED)
        v = tl.where(vmax < v, v, vmax)  # std::max: keeps vmax when v is NaN
        _store(vmax_ptr + offs, v, mask, DTYPE, MASKED, INTERPRETER)
    root = tl.sqrt(v) if COMPUTE.is_fp64() else tl.math.sqrt_rn(v)
    denom = tl.math.fdiv(root, correction2_sqrt, ieee_rounding=FLOAT32) + eps
    p = p - tl.math.fdiv(step_size * m, denom, ieee_rounding=FLOAT32)
    _store(p_ptr + offs, p, mask, DTYPE, MASKED, INTERPRETER)


@triton.jit
def _adam_kernel(
    tensors_ptr,  # *i64 [n_tensors, 7]: addresses of param, exp_avg, exp_avg_sq,
    #   max_exp_avg_sq (0 without AMSGRAD) and step; numel; param group
    grads_ptr,  # *i64 [n_tensors]: gradient addresses
    chunks_ptr,  # *i32 [n_programs, 2]: (tensor, chunk of that tensor)
    groups_ptr,  # *fp64 [n_groups, 5]: lr, beta1, beta2, eps, weight_decay
    done_ptr,  # *i32 [n_tensors]: programs done with each tensor in this launch; 0 between launches
    grad_scale_ptr,  # *fp32 [1]: gradients are divided by it (read if HAS_GRAD_SCALE)
    found_inf_ptr,  # *fp32 [1]: non-zero skips the whole step (read if HAS_FOUND_INF)
    DTYPE: tl.constexpr,  # storage dtype of params, gradients and state
    COMPUTE: tl.constexpr,  # arithmetic dtype: fp32, or fp64 for fp64 storage (torch's opmath)
    AMSGRAD: tl.constexpr,  # keep max_exp_avg_sq and normalise by it
    MAXIMIZE: tl.constexpr,  # ascend: negate the gradient
    DECOUPLED: tl.constexpr,  # AdamW: decay the parameter instead of adding wd * p to the grad
    HAS_GRAD_SCALE: tl.constexpr,  # unscale the gradient (and store it back unscaled)
    HAS_FOUND_INF: tl.constexpr,  # skip the step when found_inf is set
    ALIGNED: tl.constexpr,  # every address is 16-byte aligned: 128-bit accesses
    INTERPRETER: tl.constexpr,  # run by Triton's interpreter (see the module docstring)
    BLOCK: tl.constexpr,  # elements per tile
    CHUNK: tl.constexpr,  # elements per program, a multiple of BLOCK
):
    """Program ``pid`` updates elements ``[c * CHUNK, (c + 1) * CHUNK)`` of tensor ``t``, where
    ``(t, c) = chunks[pid]``, in tiles of BLOCK elements, and the last program of tensor ``t``
    to finish counts its step."""
    FLOAT32: tl.constexpr = not COMPUTE.is_fp64()
    if HAS_FOUND_INF and tl.load(found_inf_ptr) != 0.0:
        return
    pid = tl.program_id(0)
    t = tl.load(chunks_ptr + 2 * pid).to(tl.int64)
    chunk = tl.load(chunks_ptr + 2 * pid + 1).to(tl.int64)
    row = tensors_ptr + t * 7
    numel = tl.load(row + 5)
    group = groups_ptr + tl.load(row + 6) * 5
    lr = tl.load(group).to(COMPUTE)
    beta1 = tl.load(group + 1).to(COMPUTE)
    beta2 = tl.load(group + 2).to(COMPUTE)
    eps = tl.load(group + 3).to(COMPUTE)
    weight_decay = tl.load(group + 4).to(COMPUTE)
    grad_scale = 1.0
    if HAS_GRAD_SCALE:
        grad_scale = tl.load(grad_scale_ptr).to(COMPUTE)

    # The counter holds the steps taken; this update makes the next one.
    step_ptr = tl.load(row + 4).to(tl.pointer_type(tl.float32))
    correction1, correction2_sqrt = _bias_corrections(
        beta1, beta2, tl.load(step_ptr) + 1.0, COMPUTE
    )
    step_size = tl.math.fdiv(lr, correction1, ieee_rounding=FLOAT32)

    p_ptr = tl.load(row).to(tl.pointer_type(DTYPE))
    g_ptr = tl.load(grads_ptr + t).to(tl.pointer_type(DTYPE))
    m_ptr = tl.load(row + 1).to(tl.pointer_type(DTYPE))
    v_ptr = tl.load(row + 2).to(tl.pointer_type(DTYPE))
    vmax_ptr = tl.load(row + 3).to(tl.pointer_type(DTYPE))
    if ALIGNED:  # addresses read from a table: the compiler cannot know their alignment
        p_ptr = tl.multiple_of(p_ptr, 16)
        g_ptr = tl.multiple_of(g_ptr, 16)
        m_ptr = tl.multiple_of(m_ptr, 16)
        v_ptr = tl.multiple_of(v_ptr, 16)
        vmax_ptr = tl.multiple_of(vmax_ptr, 16)

    # Whole tiles unmasked, then the chunk's remainder as one masked tile.
    start = chunk * CHUNK
    stop = tl.minimum(start + CHUNK, numel)
    whole = (stop - start) // BLOCK
    for i in range(0, whole):
        offs = start + i * BLOCK + tl.arange(0, BLOCK)
        _adam_tile(
            tl.max_contiguous(tl.multiple_of(offs, BLOCK), BLOCK), stop,
            p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr,
            lr, beta1, beta2, eps, weight_decay, step_size, correction2_sqrt, grad_scale,
            DTYPE, COMPUTE, AMSGRAD, MAXIMIZE, DECOUPLED, HAS_GRAD_SCALE, False, INTERPRETER,
        )  # fmt: skip
    first = start + whole * BLOCK
    if first < stop:
        _adam_tile(
            first + tl.arange(0, BLOCK), stop, p_ptr, g_ptr, m_ptr, v_ptr, vmax_ptr,
            lr, beta1, beta2, eps, weight_decay, step_size, correction2_sqrt, grad_scale,
            DTYPE, COMPUTE, AMSGRAD, MAXIMIZE, DECOUPLED, HAS_GRAD_SCALE, True, INTERPRETER,
        )  # fmt: skip

    # Count the step once every program of the tensor has read the counter (reading it again
    # here rather than keeping it in a register across the loop).
    chunks = tl.maximum(tl.cdiv(numel, CHUNK), 1)
    if chunks == 1:
        tl.store(step_ptr, tl.load(step_ptr) + 1.0)
    else:
        tl.debug_barrier()  # every thread of this program is done with the counter it read
        if tl.atomic_add(done_ptr + t, 1, sem="acq_rel") == chunks - 1:
            tl.store(step_ptr, tl.load(step_ptr) + 1.0)
            tl.store(done_ptr + t, 0)


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``host`` copied to ``device`` without waiting for the device (through pinned memory)."""
    if device.type == "cpu":
        return host
    return host.pin_memory().to(device, non_blocking=True)


class AdamPlan:
    """The device tables of one multi-tensor Adam launch over a fixed set of tensors.

    Built once (every tensor checked, every address but the gradients' written), then launched
    as often as needed: a launch rewrites the gradient addresses only when they changed and
    the group table only when a float hyperparameter did, so its host cost is a few passes
    over the gradient list. Tensor hyperparameters are copied on the device at every launch.
    The plan holds addresses, not tensors: the caller keeps the tensors alive while it launches
    the plan, and builds another when one is replaced (a new ``exp_avg``, a parameter whose
    ``.data`` was swapped). The kernel writes through raw pointers and bumps no version
    counter: callers that need autograd to see the update call
    ``torch.autograd.graph.increment_version`` on what it wrote (``FusedAdam`` and the
    operator ``torchkit::adam_multi_tensor_`` do).

    Args:
        params: parameters, all on one device (CUDA, or CPU for the interpreter) and of one
            dtype (float32, float16, bfloat16, float64, or a complex dtype, updated as its
            real and imaginary parts), each dense (any memory format).
        exp_avgs: first moments, with their parameter's dtype, device, shape and strides.
        exp_avg_sqs: second moments, likewise.
        max_exp_avg_sqs: running maxima of the second moments when ``amsgrad``, else empty.
        state_steps: one-element float32 tensors on the parameters' device counting the
            steps taken; each launch adds one (unless ``found_inf`` is set).
        amsgrad: whether the update uses ``max_exp_avg_sqs``.
        groups: the param group (row of the hyperparameters) of each tensor (default: all 0).
        tiling: block and chunk sizes (default: :func:`default_tiling`).

    Raises:
        ValueError: lists of different lengths, or tensors that do not fit.
        RuntimeError: built while a CUDA graph is being captured (its tables are copied from
            the host).

    Example:
        Needs Triton's interpreter for these CPU tensors (``TRITON_INTERPRET=1`` set before
        Triton is imported):

        >>> p, m, v, step = torch.ones(4, 4), torch.zeros(4, 4), torch.zeros(4, 4), torch.zeros(())
        >>> plan = AdamPlan([p], [m], [v], [], [step], amsgrad=False)
        >>> plan.launch([torch.ones(4, 4)], [(0.1, 0.9, 0.999, 1e-8, 0.0)], maximize=False,
        ...             decoupled_weight_decay=False)
        1
        >>> p[0], step  # the first Adam step moves every element by lr
        (tensor([0.9000, 0.9000, 0.9000, 0.9000]), tensor(1.))
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        exp_avgs: Sequence[torch.Tensor],
        exp_avg_sqs: Sequence[torch.Tensor],
        max_exp_avg_sqs: Sequence[torch.Tensor],
        state_steps: Sequence[torch.Tensor],
        *,
        amsgrad: bool,
        groups: Sequence[int] | None = None,
        tiling: AdamTiling | None = None,
    ) -> None:
        n = len(params)
        groups = [0] * n if groups is None else list(groups)
        columns = {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}  # moments, as params
        if amsgrad:
            columns["max_exp_avg_sqs"] = max_exp_avg_sqs
        elif max_exp_avg_sqs:
            raise ValueError(
                f"max_exp_avg_sqs must be empty when amsgrad=False, got {len(max_exp_avg_sqs)}"
            )
        for name, values in {**columns, "state_steps": state_steps, "groups": groups}.items():
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries but params has {n}")
        if n == 0:
            raise ValueError("params is empty: there is nothing to launch")
        self.device, dtype = params[0].device, params[0].dtype
        if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                "an AdamPlan copies its tables from the host, which a CUDA graph cannot "
                "capture: build it (launch once) before capturing"
            )
        self.dtype = _REAL_OF_COMPLEX.get(dtype, dtype)
        if self.dtype not in _KERNEL_DTYPES:
            raise ValueError(
                f"params have dtype {dtype}; the kernel supports {list(_KERNEL_DTYPES)} and "
                f"{list(_REAL_OF_COMPLEX)}"
            )
        if min(groups) < 0:
            raise ValueError(f"groups must be non-negative, got {min(groups)}")
        self.n_groups = max(groups) + 1
        self.amsgrad = amsgrad
        self.tiling = tiling or default_tiling(self.dtype, self.device)
        block, chunk = self.tiling.block, self.tiling.chunk
        if block <= 0 or block & (block - 1) or chunk % block:
            raise ValueError(
                "tiling.block must be a power of two dividing tiling.chunk, got "
                f"{block} and {chunk}"
            )

        rows = []
        for i, p in enumerate(params):
            if p.dtype != dtype or p.device != self.device:
                raise ValueError(
                    f"params[{i}] is {p.dtype} on {p.device} but params[0] is {dtype} on "
                    f"{self.device}; one launch takes one dtype and device"
                )
            if not is_dense(p):
                raise ValueError(f"params[{i}] is not dense (strides {p.stride()})")
            for name, column in columns.items():
                t = column[i]
                if (t.dtype, t.device, t.shape) != (dtype, self.device, p.shape) or not (
                    same_strides(t, p)
                ):
                    raise ValueError(
                        f"{name}[{i}] must have params[{i}]'s dtype, device, shape and strides "
                        f"({dtype}, {self.device}, {tuple(p.shape)}, {p.stride()}), got "
                        f"{t.dtype}, {t.device}, {tuple(t.shape)}, {t.stride()}"
                    )
            step = state_steps[i]
            if step.dtype != torch.float32 or step.device != self.device or step.numel() != 1:
                raise ValueError(
                    f"state_steps[{i}] must be a one-element float32 tensor on {self.device}, "
                    f"got {step.dtype} of shape {tuple(step.shape)} on {step.device}"
                )
            moments = [c[i].data_ptr() for c in columns.values()]
            if not amsgrad:
                moments.append(0)
            numel = p.numel() * (2 if dtype.is_complex else 1)
            rows.append([p.data_ptr(), *moments, step.data_ptr(), numel, groups[i]])
        self._tensors = _to_device(torch.tensor(rows, dtype=torch.int64), self.device)
        self._param_strides = list(map(torch.Tensor.stride, params))
        self._contiguous = all(map(torch.Tensor.is_contiguous, params))
        counts = torch.tensor([max(1, -(-row[5] // chunk)) for row in rows], dtype=torch.int64)
        owners = torch.repeat_interleave(torch.arange(n), counts)
        within = torch.arange(len(owners)) - torch.repeat_interleave(
            counts.cumsum(0) - counts, counts
        )
        self._chunks = _to_device(torch.stack([owners, within], dim=1).to(torch.int32), self.device)
        self._done = torch.zeros(n, dtype=torch.int32, device=self.device)
        vector = _ALIGNMENT // self.dtype.itemsize
        self._state_aligned = block % vector == 0 and not any(
            address % _ALIGNMENT for row in rows for address in row[:4]
        )
        self._grads = torch.zeros(n, dtype=torch.int64, device=self.device)
        self._grad_addresses: list[int] = []
        self._grads_aligned = False
        size = self.n_groups * _GROUP_COLUMNS  # the group table, flat: row g at [5g, 5g + 5)
        self._groups = torch.zeros(size, dtype=torch.float64, device=self.device)
        self._slots = list(self._groups)  # one 0-dim view per hyperparameter
        self._rows: Sequence[Sequence[float | torch.Tensor]] | None = None
        self._floats: list[float] = []
        self._tensor_slots: list[tuple[torch.Tensor, torch.Tensor]] = []
        # Host buffers a captured CUDA graph copies from at each replay, by their contents.
        self._captured: dict[tuple[torch.dtype, bytes], torch.Tensor] = {}

    def _upload(self, target: torch.Tensor, values: array.array) -> None:
        """Write host ``values`` into the device table ``target`` without synchronising."""
        host = torch.frombuffer(values, dtype=target.dtype)
        if self.device.type == "cpu":
            target.copy_(host)
            return
        if torch.cuda.is_current_stream_capturing():
            # The graph copies from this buffer at every replay: keep it (one per contents).
            key = (target.dtype, host.numpy().tobytes())
            if key not in self._captured:
                self._captured[key] = host.pin_memory()
            staging = self._captured[key]
        else:  # torch's pinned-memory cache keeps it until the copy is done
            staging = host.pin_memory()
        target.copy_(staging, non_blocking=True)

    def prepare(
        self,
        grads: Sequence[torch.Tensor],
        hyperparams: Sequence[Sequence[float | torch.Tensor]],
        *,
        maximize: bool,
        decoupled_weight_decay: bool,
        grad_scale: torch.Tensor | None = None,
        found_inf: torch.Tensor | None = None,
    ) -> Callable[[], int]:
        """Check a launch's arguments and bring the tables up to date; launch nothing.

        :meth:`launch` is ``prepare(...)()``. A caller with several plans to launch in one step
        prepares all of them first, so that an error leaves every tensor as it was.

        Args:
            grads: one gradient per parameter, with its parameter's shape, dtype and device
                (the caller's promise: ``Tensor.grad`` keeps it). One in another layout is
                copied into its parameter's for the launch (and copied back when
                ``grad_scale`` unscales it).
            hyperparams: per param group, ``(lr, beta1, beta2, eps, weight_decay)``, each a
                float or a one-element tensor (read on the device). The same sequence object
                as at the last launch is taken as unchanged (its tensors are read again).
            maximize: maximise the objective (negate the gradients).
            decoupled_weight_decay: AdamW's decay ``p -= lr * wd * p`` instead of
                ``g += wd * p``.
            grad_scale: a one-element float32 tensor on the plan's device; gradients are
                divided by it and stored back unscaled, as torch's fused Adam does for
                ``GradScaler``.
            found_inf: a one-element float32 tensor on the plan's device; when it is non-zero
                the launch changes nothing, step counters included.

        Returns:
            A function that launches the kernel and returns the number of launches (1).

        Raises:
            ValueError: ``grads`` or ``hyperparams`` of the wrong length, or AMP tensors that
                are not one float32 element on the plan's device.
            RuntimeError: a sparse gradient.
        """
        n = len(self._param_strides)
        if len(grads) != n:
            raise ValueError(f"grads has {len(grads)} entries but params has {n}")
        for name, value in (("grad_scale", grad_scale), ("found_inf", found_inf)):
            if value is not None and (
                value.numel() != 1 or value.dtype != torch.float32 or value.device != self.device
            ):
                raise ValueError(
                    f"{name} must be a one-element float32 tensor on {self.device}, got "
                    f"{value.dtype} of shape {tuple(value.shape)} on {value.device}"
                )
        if hyperparams is not self._rows and (
            len(hyperparams) != self.n_groups
            or any(len(row) != _GROUP_COLUMNS for row in hyperparams)
        ):
            raise ValueError(
                f"hyperparams must be {self.n_groups} rows of (lr, beta1, beta2, eps, "
                f"weight_decay), got {[len(row) for row in hyperparams]}"
            )
        grads, copies = fitted(grads, self._param_strides, self._contiguous)
        addresses = list(map(torch.Tensor.data_ptr, grads))
        if addresses != self._grad_addresses:
            host = array.array("q", addresses)
            self._upload(self._grads, host)
            self._grad_addresses = addresses
            self._grads_aligned = (
                not np.bitwise_or.reduce(np.frombuffer(host, np.int64)) % _ALIGNMENT
            )
        self._write_hyperparams(hyperparams)
        return functools.partial(
            self._launch,
            grads,  # alive until the launch is queued
            copies if grad_scale is not None else [],
            grad_scale,
            found_inf,
            maximize=maximize,
            decoupled=decoupled_weight_decay,
        )

    def _write_hyperparams(self, rows: Sequence[Sequence[float | torch.Tensor]]) -> None:
        """The group table's writer: floats uploaded when they changed, tensors copied on the
        device at every launch (so in-place changes of a tensor ``lr`` are followed)."""
        if rows is not self._rows:
            values = [v for row in rows for v in row]
            floats = [0.0 if isinstance(v, torch.Tensor) else float(v) for v in values]
            if floats != self._floats:
                self._upload(self._groups, array.array("d", floats))
                self._floats = floats
            self._tensor_slots = [
                (self._slots[k], v.reshape(()))
                for k, v in enumerate(values)
                if isinstance(v, torch.Tensor)
            ]
            self._rows = rows
        for slot, value in self._tensor_slots:
            slot.copy_(value, non_blocking=True)

    def _launch(
        self,
        grads: Sequence[torch.Tensor],
        copies: list[tuple[torch.Tensor, torch.Tensor]],
        grad_scale: torch.Tensor | None,
        found_inf: torch.Tensor | None,
        *,
        maximize: bool,
        decoupled: bool,
    ) -> int:
        storage, compute = _KERNEL_DTYPES[self.dtype]
        _adam_kernel[(self._chunks.shape[0],)](
            self._tensors,
            self._grads,
            self._chunks,
            self._groups,
            self._done,
            self._tensors if grad_scale is None else grad_scale,  # unread without the flags
            self._tensors if found_inf is None else found_inf,
            DTYPE=storage,
            COMPUTE=compute,
            AMSGRAD=self.amsgrad,
            MAXIMIZE=maximize,
            DECOUPLED=decoupled,
            HAS_GRAD_SCALE=grad_scale is not None,
            HAS_FOUND_INF=found_inf is not None,
            ALIGNED=self.aligned,
            INTERPRETER=self.interpreted,
            BLOCK=self.tiling.block,
            CHUNK=self.tiling.chunk,
            num_warps=self.tiling.num_warps,
        )
        for grad, copy in copies:  # the kernel unscaled the copies: hand the values back
            grad.copy_(copy)
        return 1

    def launch(self, *args: object, **kwargs: object) -> int:
        """:meth:`prepare` (same arguments) and launch: the number of kernel launches (1)."""
        return self.prepare(*args, **kwargs)()  # type: ignore[arg-type]

    @property
    def interpreted(self) -> bool:
        """Whether Triton's interpreter runs the kernel (CPU tensors); the kernel then rounds
        bfloat16 stores itself."""
        return self.device.type == "cpu"

    @property
    def aligned(self) -> bool:
        """Whether the last prepared launch takes the 128-bit variant: every address of the
        launch 16-byte aligned (all or nothing: one misaligned tensor, a view starting inside
        its storage, say, takes the whole launch to the element-wide variant)."""
        return self._state_aligned and self._grads_aligned


# Plans of adam_multi_tensor with what their tables were built from, the most recent first.
# Plans a CUDA graph was captured with are never dropped: the graph replays their tables.
_PLANS: list[tuple[tuple[object, ...], list[object], AdamPlan]] = []
_PLANS_KEPT = 8
_CAPTURED_PLANS: list[tuple[tuple[object, ...], list[object], AdamPlan]] = []


def _kept_plan(head: tuple[object, ...], contents: list[object]) -> AdamPlan | None:
    """The kept plan built from ``head`` and ``contents``, moved to the front of the recent
    ones; ``None`` if there is none."""
    for i, (kept_head, kept_contents, plan) in enumerate(_PLANS):
        if kept_head == head and kept_contents == contents:
            _PLANS.insert(0, _PLANS.pop(i))
            return plan
    for kept_head, kept_contents, plan in _CAPTURED_PLANS:
        if kept_head == head and kept_contents == contents:
            return plan
    return None


def _plan_for(
    columns: Sequence[Sequence[torch.Tensor]],
    amsgrad: bool,
    groups: Sequence[int] | None,
    tiling: AdamTiling | None,
) -> AdamPlan:
    """The plan for these tensors: a kept one when every address, element count, stride and
    group is the same (the tables hold nothing else), else a new one.

    The lists are compared, not hashed: for 161 tensors hashing them cost about 80 µs a call,
    the comparison a few (this runs at every compiled step)."""
    params = columns[0]
    addresses = list(map(torch.Tensor.data_ptr, itertools.chain.from_iterable(columns)))
    head = (len(params), params[0].dtype, params[0].device, amsgrad, tiling) if params else ()
    contents = [
        addresses,
        list(map(torch.Tensor.numel, params)),
        list(map(torch.Tensor.stride, params)),
        list(groups or ()),
    ]
    plan = _kept_plan(head, contents)
    if plan is None:
        plan = AdamPlan(*columns, amsgrad=amsgrad, groups=groups, tiling=tiling)
        _PLANS.insert(0, (head, contents, plan))
        del _PLANS[_PLANS_KEPT:]
    capturing = plan.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    if capturing and not any(entry[2] is plan for entry in _CAPTURED_PLANS):
        _CAPTURED_PLANS.append((head, contents, plan))
    return plan


def adam_multi_tensor(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    max_exp_avg_sqs: Sequence[torch.Tensor],
    state_steps: Sequence[torch.Tensor],
    hyperparams: Sequence[Sequence[float | torch.Tensor]],
    *,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    groups: Sequence[int] | None = None,
    grad_scale: torch.Tensor | None = None,
    found_inf: torch.Tensor | None = None,
    tiling: AdamTiling | None = None,
) -> int:
    """One Adam step over all ``params`` (one dtype, one device) as a single kernel launch.

    The :class:`AdamPlan` of these tensors (cut by ``tiling``) launched once: the other
    arguments are those of both. The last plans built are kept by the tensors' addresses,
    element counts and strides, so calling this at every step over the same tensors builds
    the tables once. Everything is checked before the launch, so an error leaves every tensor
    as it was.

    Returns:
        The number of kernel launches (1).

    Example:
        Needs Triton's interpreter for these CPU tensors (``TRITON_INTERPRET=1`` set before
        Triton is imported):

        >>> p, g = torch.ones(3), torch.full((3,), 0.5)
        >>> m, v, step = torch.zeros(3), torch.zeros(3), torch.zeros(())
        >>> adam_multi_tensor([p], [g], [m], [v], [], [step], [(0.1, 0.9, 0.999, 1e-8, 0.0)],
        ...                   amsgrad=False, maximize=False, decoupled_weight_decay=False)
        1
        >>> p
        tensor([0.9000, 0.9000, 0.9000])
    """
    columns = (params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
    plan = _plan_for(columns, amsgrad, groups, tiling)
    return plan.launch(
        grads,
        hyperparams,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
        grad_scale=grad_scale,
        found_inf=found_inf,
    )


def aot_specs() -> list[KernelSpec]:
    """The variants ``python -m torchkit kernels`` compiles.

    For each dtype: the plain AdamW update and AMSGrad under ``GradScaler`` (grad scale and
    ``found_inf``), each in the aligned (128-bit) and the fallback variant, with the tiling of
    a CUDA launch.

    Example:
        >>> sorted(spec.name for spec in aot_specs())[:2]
        ['bf16', 'bf16,aligned']
    """
    signature = {
        "tensors_ptr": "*i64",
        "grads_ptr": "*i64",
        "chunks_ptr": "*i32",
        "groups_ptr": "*fp64",
        "done_ptr": "*i32",
        "grad_scale_ptr": "*fp32",
        "found_inf_ptr": "*fp32",
    }
    specs = []
    variants = itertools.product(_KERNEL_DTYPES.items(), (False, True), (False, True))
    for (dtype, (storage, compute)), amsgrad_amp, aligned in variants:
        tiling = default_tiling(dtype, torch.device("cuda"))
        constexprs = {
            "DTYPE": storage,
            "COMPUTE": compute,
            "AMSGRAD": amsgrad_amp,
            "MAXIMIZE": False,
            "DECOUPLED": True,
            "HAS_GRAD_SCALE": amsgrad_amp,
            "HAS_FOUND_INF": amsgrad_amp,
            "ALIGNED": aligned,
            "INTERPRETER": False,
            "BLOCK": tiling.block,
            "CHUNK": tiling.chunk,
        }
        label = [str(storage), *(["amsgrad", "grad_scale"] if amsgrad_amp else [])]
        label += ["aligned"] if aligned else []
        specs.append(
            KernelSpec(
                name=",".join(label),  # fp32, bf16, ...: Triton's names of the storage dtypes
                kernel=_adam_kernel,
                signature=signature,
                constexprs=constexprs,
                configs=(triton.Config({}, num_warps=tiling.num_warps),),
            )
        )
    return specs
