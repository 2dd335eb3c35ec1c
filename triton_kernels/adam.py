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
launch. The step count is read and advanced on the device (the last program of a tensor
writes it back), the bias corrections are computed in the kernel, and ``found_inf`` /
``grad_scale`` are read there: a launch never synchronises with the host, so it can be
captured in a CUDA graph.

The arithmetic follows torch's CUDA kernel (``aten/src/ATen/native/cuda/fused_adam_utils.cuh``)
operation by operation, in its precision (float32, float64 for float64 tensors), with IEEE
square roots and divisions and the same fused multiply-adds, so that a GPU run can match
``torch.optim.Adam(fused=True)`` bit for bit. ``beta ** step`` is binary exponentiation in
float64, rounded once (libdevice's ``pow`` would bring approximate reciprocals, and the
interpreter has no libdevice). When every address is 16-byte aligned the *aligned* variant is
launched, which moves 128 bits per global access.

Triton's interpreter (CPU tensors, ``TRITON_INTERPRET=1``) truncates float32 to bfloat16 where a
GPU rounds to nearest even: told that it is interpreted, the kernel rounds explicitly.

This module holds the kernel and its launcher only; the optimizer classes, their state and
the choice of backend live in :mod:`torchkit.optim.adam`.
"""

from __future__ import annotations

import array
import functools
import operator
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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
_TENSOR_COLUMNS = 7  # param, exp_avg, exp_avg_sq, max_exp_avg_sq, step addresses; numel; group
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
    # Divisions rounded to nearest: float32 needs div.rn asked for (a plain float32 division
    # is approximate), float64 divisions always are.
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

    # The step this update makes (the counter holds the steps taken) and beta ** step by
    # binary exponentiation in float64: multiplications only, each rounded once, so the powers
    # round correctly to COMPUTE (libdevice's pow approximates its reciprocals).
    step_ptr = tl.load(row + 4).to(tl.pointer_type(tl.float32))
    step = tl.load(step_ptr) + 1.0
    n = step.to(tl.int32)
    base1 = beta1.to(tl.float64)
    base2 = beta2.to(tl.float64)
    beta1_pow = tl.full((), 1.0, tl.float64)
    beta2_pow = tl.full((), 1.0, tl.float64)
    while n > 0:
        if n % 2 == 1:
            beta1_pow *= base1
            beta2_pow *= base2
        base1 *= base1
        base2 *= base2
        n = n // 2
    beta1_pow = beta1_pow.to(COMPUTE)
    beta2_pow = beta2_pow.to(COMPUTE)
    step_size = tl.math.fdiv(lr, 1.0 - beta1_pow, ieee_rounding=FLOAT32)
    if COMPUTE.is_fp64():  # float64 square roots are always rounded to nearest
        bias_correction2_sqrt = tl.sqrt(1.0 - beta2_pow)
    else:
        bias_correction2_sqrt = tl.math.sqrt_rn(1.0 - beta2_pow)
    if HAS_GRAD_SCALE:
        grad_scale = tl.load(grad_scale_ptr).to(COMPUTE)

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

    # Whole tiles first, whose bound is a multiple of BLOCK (the mask is uniform over every
    # vector), then the chunk's remainder as one masked tile.
    start = chunk * CHUNK
    stop = tl.minimum(start + CHUNK, numel)
    whole = (stop - start) // BLOCK
    for part in tl.static_range(2):
        if part == 0:
            first = start
            tiles = whole
            bound = start + whole * BLOCK
        else:
            first = start + whole * BLOCK
            tiles = 1
            bound = stop
        for i in range(0, tiles):
            if first < bound:  # false only for an empty remainder
                offs = first + i * BLOCK + tl.arange(0, BLOCK)
                if part == 0:
                    offs = tl.max_contiguous(tl.multiple_of(offs, BLOCK), BLOCK)
                mask = offs < bound
                g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
                p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
                m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
                v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
                if HAS_GRAD_SCALE:
                    g = tl.math.fdiv(g, grad_scale, ieee_rounding=FLOAT32)
                unscaled = g
                if MAXIMIZE:
                    g = -g
                if weight_decay != 0.0:
                    if DECOUPLED:
                        p = tl.fma(-(lr * weight_decay), p, p)
                    else:
                        g = tl.fma(p, weight_decay, g)
                m = tl.fma(beta1, m, tl.fma(-beta1, g, g))
                g2 = g * g
                v = tl.fma(beta2, v, tl.fma(-beta2, g2, g2))
                values = (m, v)
                ptrs = (m_ptr, v_ptr)
                if AMSGRAD:
                    vmax = tl.load(vmax_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
                    vmax = tl.where(vmax < v, v, vmax)  # std::max: keeps vmax when v is NaN
                    values += (vmax,)
                    ptrs += (vmax_ptr,)
                    v = vmax
                root = tl.sqrt(v) if COMPUTE.is_fp64() else tl.math.sqrt_rn(v)
                denom = tl.math.fdiv(root, bias_correction2_sqrt, ieee_rounding=FLOAT32) + eps
                p = p - tl.math.fdiv(step_size * m, denom, ieee_rounding=FLOAT32)
                values += (p,)
                ptrs += (p_ptr,)
                if HAS_GRAD_SCALE:
                    values += (unscaled,)
                    ptrs += (g_ptr,)
                for k in tl.static_range(len(values)):
                    value = values[k]
                    if INTERPRETER and DTYPE.is_bf16():  # round to nearest even, as a GPU
                        bits = value.to(tl.uint32, bitcast=True)
                        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
                        value = tl.where(value != value, value, bits.to(tl.float32, bitcast=True))
                    tl.store(ptrs[k] + offs, value.to(DTYPE), mask=mask)

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


# Chunk tables by (device, element counts, chunk size): they only change with the set of
# tensors, so plans over the same parameters (a functional call per step) share one upload.
_CHUNK_TABLES: OrderedDict[tuple[torch.device, tuple[int, ...], int], torch.Tensor] = OrderedDict()
_CHUNK_TABLES_MAX = 16


def _chunk_table(device: torch.device, numels: tuple[int, ...], chunk: int) -> torch.Tensor:
    """``(tensor, chunk)`` per program; an empty tensor still gets one (to count its step)."""
    key = (device, numels, chunk)
    table = _CHUNK_TABLES.get(key)
    if table is not None:
        _CHUNK_TABLES.move_to_end(key)
        return table
    counts = torch.tensor([max(1, -(-n // chunk)) for n in numels], dtype=torch.int64)
    tensors = torch.repeat_interleave(torch.arange(len(numels)), counts)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.arange(int(counts.sum())) - torch.repeat_interleave(starts, counts)
    table = _to_device(torch.stack([tensors, within], dim=1).to(torch.int32), device)
    _CHUNK_TABLES[key] = table
    if len(_CHUNK_TABLES) > _CHUNK_TABLES_MAX:
        _CHUNK_TABLES.popitem(last=False)
    return table


Hyperparams = tuple[float | torch.Tensor, ...]  # lr, beta1, beta2, eps, weight_decay


class AdamPlan:
    """The device tables of one multi-tensor Adam launch over a fixed set of tensors.

    Built once (every tensor checked, every address but the gradients' written), then launched
    as often as needed: a launch rewrites the gradient addresses only when they changed and
    the group table only when a float hyperparameter did, so its host cost is a few passes
    over the gradient list. Tensor hyperparameters are copied on the device at every launch.
    The plan keeps its tensors alive; it must be rebuilt when a tensor is replaced (a new
    ``exp_avg``, a parameter whose ``.data`` was swapped). The kernel writes through raw
    pointers and bumps no version counter: callers that need autograd to see the update call
    ``torch.autograd.graph.increment_version`` on what it wrote (``FusedAdam`` does; the custom
    op ``torchkit::adam_multi_tensor_`` has torch do it).

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
        lists = {"exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs, "state_steps": state_steps}
        lists["groups"] = groups
        if amsgrad:
            lists["max_exp_avg_sqs"] = max_exp_avg_sqs
        elif max_exp_avg_sqs:
            raise ValueError(
                f"max_exp_avg_sqs must be empty when amsgrad=False, got {len(max_exp_avg_sqs)}"
            )
        for name, values in lists.items():
            if len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries but params has {n}")
        if n == 0:
            raise ValueError("params is empty: there is nothing to launch")
        self.device, dtype = params[0].device, params[0].dtype
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
        columns = (exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else params)
        for i, p in enumerate(params):
            if p.dtype != dtype or p.device != self.device:
                raise ValueError(
                    f"params[{i}] is {p.dtype} on {p.device} but params[0] is {dtype} on "
                    f"{self.device}; one launch takes one dtype and device"
                )
            if not is_dense(p):
                raise ValueError(f"params[{i}] is not dense (strides {p.stride()})")
            for name, t in zip(_STATE_NAMES, (c[i] for c in columns), strict=False):
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
            addresses = [p.data_ptr(), *(c[i].data_ptr() for c in columns), step.data_ptr()]
            if not amsgrad:
                addresses[3] = 0
            numel = p.numel() * (2 if dtype.is_complex else 1)
            rows.append([*addresses, numel, groups[i]])
        self._tensors = _to_device(torch.tensor(rows, dtype=torch.int64), self.device)
        self._keep_alive = (list(params), list(exp_avgs), list(exp_avg_sqs), list(state_steps))
        self._keep_alive += (list(max_exp_avg_sqs),)
        self._params = self._keep_alive[0]
        self._param_strides = list(map(torch.Tensor.stride, params))
        self._contiguous = all(map(torch.Tensor.is_contiguous, params))
        numels = tuple(row[5] for row in rows)
        self._chunks = _chunk_table(self.device, numels, chunk)
        self._done = torch.zeros(n, dtype=torch.int32, device=self.device)
        vector = _ALIGNMENT // self.dtype.itemsize
        self._state_aligned = block % vector == 0 and not any(
            address % _ALIGNMENT for row in rows for address in row[:4]
        )
        self._grads = torch.zeros(n, dtype=torch.int64, device=self.device)
        self._grad_addresses: list[int] = []
        self._grads_aligned = False
        shape = (self.n_groups, _GROUP_COLUMNS)
        self._groups = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self._hyperparams: Sequence[Hyperparams] | torch.Tensor | None = None
        self._tensor_hyper: list[tuple[int, torch.Tensor]] = []
        self._captured: list[torch.Tensor] = []  # staging buffers a CUDA graph copies from

    def _upload(self, target: torch.Tensor, values: list[int] | list[float]) -> None:
        """Write host ``values`` into the device table ``target`` without synchronising."""
        typecode = "q" if target.dtype == torch.int64 else "d"
        host = torch.frombuffer(array.array(typecode, values), dtype=target.dtype)
        if self.device.type == "cpu":
            target.view(-1).copy_(host)
            return
        staging = host.pin_memory()
        target.view(-1).copy_(staging, non_blocking=True)
        if torch.cuda.is_current_stream_capturing():  # the graph copies from it at each replay
            self._captured.append(staging)

    def prepare(
        self,
        grads: Sequence[torch.Tensor],
        hyperparams: Sequence[Hyperparams] | torch.Tensor,
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
                float or a one-element tensor (read on the device); or the group table itself,
                a float64 tensor of shape ``(n_groups, 5)`` on the plan's device.
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
        n = len(self._params)
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
        grads, copies = fitted(grads, self._params, self._param_strides, self._contiguous)
        addresses = list(map(torch.Tensor.data_ptr, grads))
        if addresses != self._grad_addresses:
            self._upload(self._grads, addresses)
            self._grad_addresses = addresses
            self._grads_aligned = not functools.reduce(operator.or_, addresses) % _ALIGNMENT
        groups = self._group_table(hyperparams)
        launch = functools.partial(
            self._launch,
            groups,
            grads,  # alive until the launch is queued
            copies if grad_scale is not None else [],
            grad_scale,
            found_inf,
            maximize=maximize,
            decoupled=decoupled_weight_decay,
        )
        return launch

    def _group_table(self, hyperparams: Sequence[Hyperparams] | torch.Tensor) -> torch.Tensor:
        if isinstance(hyperparams, torch.Tensor):
            expected = (torch.float64, self.device, (self.n_groups, _GROUP_COLUMNS))
            if (hyperparams.dtype, hyperparams.device, tuple(hyperparams.shape)) != expected:
                raise ValueError(
                    f"hyperparams as a tensor must be float64 of shape "
                    f"{(self.n_groups, _GROUP_COLUMNS)} on {self.device}, got "
                    f"{hyperparams.dtype} of shape {tuple(hyperparams.shape)} on "
                    f"{hyperparams.device}"
                )
            return hyperparams
        if len(hyperparams) != self.n_groups:
            raise ValueError(
                f"hyperparams has {len(hyperparams)} rows but the plan has {self.n_groups} groups"
            )
        if hyperparams is not self._hyperparams:  # a new sequence: write its floats
            if any(len(row) != _GROUP_COLUMNS for row in hyperparams):
                raise ValueError("hyperparams rows must be (lr, beta1, beta2, eps, weight_decay)")
            values = [
                v if isinstance(v, torch.Tensor) else float(v) for r in hyperparams for v in r
            ]
            self._upload(self._groups, [0.0 if isinstance(v, torch.Tensor) else v for v in values])
            self._hyperparams = hyperparams
            self._tensor_hyper = [
                (k, v) for k, v in enumerate(values) if isinstance(v, torch.Tensor)
            ]
        for k, value in self._tensor_hyper:  # read on the device, at every launch
            self._groups.view(-1)[k].copy_(value.reshape(()), non_blocking=True)
        return self._groups

    def _launch(
        self,
        groups: torch.Tensor,
        grads: list[torch.Tensor],
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
            groups,
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
            ALIGNED=self._state_aligned and self._grads_aligned,
            INTERPRETER=self.interpreted,
            BLOCK=self.tiling.block,
            CHUNK=self.tiling.chunk,
            num_warps=self.tiling.num_warps,
        )
        for grad, copy in copies:  # the kernel unscaled the copies: hand the values back
            grad.copy_(copy)
        return 1

    def launch(self, *args: Any, **kwargs: Any) -> int:
        """:meth:`prepare` (same arguments) and launch: the number of kernel launches (1)."""
        return self.prepare(*args, **kwargs)()

    @property
    def interpreted(self) -> bool:
        """Whether Triton's interpreter runs the kernel (CPU tensors); the kernel then rounds
        bfloat16 stores itself."""
        return self.device.type == "cpu"

    @property
    def aligned(self) -> bool:
        """Whether the last prepared launch takes the 128-bit (16-byte aligned) variant."""
        return self._state_aligned and self._grads_aligned


_STATE_NAMES = ("exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")


def adam_multi_tensor(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    max_exp_avg_sqs: Sequence[torch.Tensor],
    state_steps: Sequence[torch.Tensor],
    hyperparams: Sequence[Hyperparams] | torch.Tensor,
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

    :class:`AdamPlan` built (cut by ``tiling``) and launched once: the other arguments are those
    of both. Everything is checked before the launch, so an error leaves every tensor as it was.

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
    plan = AdamPlan(
        params,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps,
        amsgrad=amsgrad,
        groups=groups,
        tiling=tiling,
    )
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
    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    names[torch.float64] = "fp64"
    specs = []
    for dtype, name in names.items():
        tiling = default_tiling(dtype, torch.device("cuda"))
        storage, compute = _KERNEL_DTYPES[dtype]
        for amsgrad_amp in (False, True):
            for aligned in (False, True):
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
                label = [name, *(["amsgrad", "grad_scale"] if amsgrad_amp else [])]
                label += ["aligned"] if aligned else []
                specs.append(
                    KernelSpec(
                        name=",".join(label),
                        kernel=_adam_kernel,
                        signature=signature,
                        constexprs=constexprs,
                        configs=(triton.Config({}, num_warps=tiling.num_warps),),
                    )
                )
    return specs
