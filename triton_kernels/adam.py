"""Multi-tensor Adam/AdamW: one Triton kernel launch updates every tensor of one dtype and device.

The parameters of an optimizer are many separate tensors of different sizes. Instead of one
launch per tensor (or per op per tensor list, as torch's foreach path does), the launcher writes
small tables describing all of them and launches a single flat grid:

* a *tensor table* (int64, one row per tensor): the ``data_ptr()`` of the parameter, its
  gradient, ``exp_avg``, ``exp_avg_sq`` and ``max_exp_avg_sq``, the element count, and the
  tensor's hyperparameters as eight float32 values packed into the row's last four int64
  slots (the kernel reads them through a float32 view of the same buffer). Hyperparameters
  are per tensor, so param groups with different ``lr``/``betas``/``eps``/``weight_decay``
  share one launch; the bias corrections are computed here, on the host, from each tensor's
  step count, in float64 like torch's own Adam;
* a *chunk table* (int32, one row per program): which tensor a program works on and which
  ``CHUNK``-element slice of it. It depends only on the element counts, so it is cached.

A program loads its row of each table, turns the pointers back into typed pointers with
``.to(tl.pointer_type(...))`` and updates its slice in ``BLOCK``-element tiles: it reads
``p, g, m, v`` once and writes ``p, m, v`` once (plus ``v_max`` with AMSGrad, and ``g`` when a
gradient scale is folded in), doing the arithmetic in float32 whatever the storage dtype.

The launcher works in two phases: :func:`plan_adam_multi_tensor` checks every tensor and
collects the pointers without writing anything, :func:`launch_adam_plan` fills in the
hyperparameters and launches (:func:`adam_multi_tensor` does both), so a caller can check all
its launches before it changes any state. This module holds the kernel and its launcher only;
the optimizer classes, the state and the choice of backend live in :mod:`torchkit.optim.adam`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from torchkit._layout import is_dense
from torchkit.kernels._aot import KernelSpec

__all__ = [
    "AdamHyperparams",
    "AdamLaunchPlan",
    "AdamTiling",
    "adam_multi_tensor",
    "aot_specs",
    "launch_adam_plan",
    "plan_adam_multi_tensor",
]

_KERNEL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}

# Layout of one row of the tensor table, in int64 slots.
_PTR_COLUMNS = 5  # param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq
_HYPER_COLUMNS = 8  # float32 values, stored in 4 int64 slots
_ROW = _PTR_COLUMNS + 1 + _HYPER_COLUMNS // 2  # 10 int64 = 20 float32 per row
_HYPER_OFFSET = 2 * (_PTR_COLUMNS + 1)  # first hyperparameter, in float32 units within a row
_STATE_NAMES = ("grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")


class AdamTiling(NamedTuple):
    """How the flat grid is cut: a program updates ``chunk`` elements in ``block``-sized tiles.

    Args:
        block: elements per tile, a power of two.
        chunk: elements per program, a multiple of ``block``; small chunks balance the load
            over many tensors, large ones keep the chunk table short.
        num_warps: warps per program (ignored by the interpreter).

    The defaults are for GPUs: a 512-element tile on 4 warps is 4 elements (one 16-byte fp32
    vector) per thread per tensor and compiles to 48 registers on sm_90 without spills (1024
    elements on 4 warps need 126, which caps occupancy); 32 tiles per program keep the chunk
    table at 1/16384 of the element count.
    """

    block: int = 512
    chunk: int = 16384
    num_warps: int = 4


# CPU tensors run in the Triton interpreter (numpy underneath), where every program instance
# and every tile costs Python overhead: one tile per program, programs as large as a tile.
INTERPRETER_TILING = AdamTiling(block=1024, chunk=1024, num_warps=1)


class AdamHyperparams(NamedTuple):
    """One tensor's hyperparameters for the step about to be taken (the launcher's input).

    Args:
        lr: learning rate.
        beta1: decay of the first moment.
        beta2: decay of the second moment.
        eps: added to the denominator.
        weight_decay: L2 penalty (Adam) or decoupled decay (AdamW); ``0`` disables it.
        step: the step count *after* this step (1 on the first step); sets the bias corrections.
    """

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    step: float


@triton.jit
def _adam_multi_tensor_kernel(
    table_ptr,  # *int64 [n_tensors, 10]: 5 data pointers, numel, 4 slots of packed float32
    hyper_ptr,  # *fp32 [n_tensors, 20]: the same buffer as table_ptr, seen as float32
    chunks_ptr,  # *int32 [n_programs, 2]: (tensor index, chunk index within the tensor)
    grad_scale_ptr,  # *fp32 [1]: gradients are divided by it; not read unless HAS_GRAD_SCALE
    DTYPE: tl.constexpr,  # storage dtype of params, grads and state (fp32, fp16 or bf16)
    AMSGRAD: tl.constexpr,  # keep max_exp_avg_sq and normalise by it
    MAXIMIZE: tl.constexpr,  # ascend: negate the gradient
    DECOUPLED: tl.constexpr,  # AdamW: decay the parameter instead of adding wd * p to the grad
    HAS_GRAD_SCALE: tl.constexpr,  # unscale the gradient (and store it back unscaled)
    ROW: tl.constexpr,  # int64 slots per tensor-table row (10)
    HYPER: tl.constexpr,  # float32 offset of the hyperparameters within a row (12)
    BLOCK: tl.constexpr,  # elements per tile
    CHUNK: tl.constexpr,  # elements per program, a multiple of BLOCK
):
    """Program ``pid`` updates elements ``[c * CHUNK, (c + 1) * CHUNK)`` of tensor ``t``, where
    ``(t, c) = chunks[pid]``, in tiles of BLOCK elements."""
    pid = tl.program_id(0)
    t = tl.load(chunks_ptr + 2 * pid).to(tl.int64)
    c = tl.load(chunks_ptr + 2 * pid + 1).to(tl.int64)

    row = table_ptr + t * ROW
    p_ptr = tl.load(row + 0).to(tl.pointer_type(DTYPE))
    g_ptr = tl.load(row + 1).to(tl.pointer_type(DTYPE))
    m_ptr = tl.load(row + 2).to(tl.pointer_type(DTYPE))
    v_ptr = tl.load(row + 3).to(tl.pointer_type(DTYPE))
    numel = tl.load(row + 5)

    # Hyperparameters, float32, computed on the host in float64 (see _hyper_row).
    hyper = hyper_ptr + t * (2 * ROW) + HYPER
    w1 = tl.load(hyper + 0)  # 1 - beta1: weight of the gradient in exp_avg's lerp
    beta2 = tl.load(hyper + 1)
    w2 = tl.load(hyper + 2)  # 1 - beta2
    eps = tl.load(hyper + 3)
    weight_decay = tl.load(hyper + 4)
    decay = tl.load(hyper + 5)  # 1 - lr * weight_decay (DECOUPLED)
    step_size = tl.load(hyper + 6)  # lr / (1 - beta1 ** step)
    bc2_sqrt = tl.load(hyper + 7)  # sqrt(1 - beta2 ** step)

    if HAS_GRAD_SCALE:
        grad_scale = tl.load(grad_scale_ptr).to(tl.float32)

    start = c * CHUNK
    stop = tl.minimum(start + CHUNK, numel)
    for tile in range(start, stop, BLOCK):
        offs = tile + tl.arange(0, BLOCK)
        mask = offs < stop
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_GRAD_SCALE:
            g = g / grad_scale
            tl.store(g_ptr + offs, g.to(DTYPE), mask=mask)
        if MAXIMIZE:
            g = -g
        p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if weight_decay != 0.0:
            if DECOUPLED:
                p = p * decay
            else:
                g = g + weight_decay * p
        m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        # torch's lerp: the formula depends on which side of 0.5 the weight is.
        if w1 < 0.5:  # noqa: SIM108 (a runtime branch: Triton has no scalar ternary)
            m = m + w1 * (g - m)
        else:
            m = g - (g - m) * (1.0 - w1)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        v = v * beta2 + w2 * (g * g)
        if AMSGRAD:
            vmax_ptr = tl.load(row + 4).to(tl.pointer_type(DTYPE))
            vmax = tl.load(vmax_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            vmax = tl.maximum(vmax, v)
            tl.store(vmax_ptr + offs, vmax.to(DTYPE), mask=mask)
            denom = tl.sqrt(vmax) / bc2_sqrt + eps
        else:
            denom = tl.sqrt(v) / bc2_sqrt + eps
        p = p - step_size * (m / denom)
        tl.store(p_ptr + offs, p.to(DTYPE), mask=mask)
        tl.store(m_ptr + offs, m.to(DTYPE), mask=mask)
        tl.store(v_ptr + offs, v.to(DTYPE), mask=mask)


def _hyper_row(h: AdamHyperparams, decoupled: bool) -> list[float]:
    """The eight float32 hyperparameters of one tensor, in the kernel's order (float64 math)."""
    bias_correction1 = 1.0 - h.beta1**h.step
    bias_correction2 = 1.0 - h.beta2**h.step
    return [
        1.0 - h.beta1,
        h.beta2,
        1.0 - h.beta2,
        h.eps,
        h.weight_decay,
        1.0 - h.lr * h.weight_decay if decoupled else 1.0,
        h.lr / bias_correction1,
        math.sqrt(bias_correction2),
    ]


# Chunk tables by (device, element counts, chunk size): they only change when the set of
# parameters does, and rebuilding one costs a host-to-device copy proportional to the model.
_CHUNK_TABLES: OrderedDict[tuple[torch.device, tuple[int, ...], int], torch.Tensor] = OrderedDict()
_CHUNK_TABLES_MAX = 16


def _chunk_table(device: torch.device, numels: tuple[int, ...], chunk: int) -> torch.Tensor:
    key = (device, numels, chunk)
    table = _CHUNK_TABLES.get(key)
    if table is not None:
        _CHUNK_TABLES.move_to_end(key)
        return table
    counts = torch.tensor([triton.cdiv(n, chunk) for n in numels], dtype=torch.int64)
    tensors = torch.repeat_interleave(torch.arange(len(numels)), counts)
    starts = torch.cumsum(counts, 0) - counts
    within = torch.arange(int(counts.sum())) - torch.repeat_interleave(starts, counts)
    table = torch.stack([tensors, within], dim=1).to(torch.int32).to(device)
    _CHUNK_TABLES[key] = table
    if len(_CHUNK_TABLES) > _CHUNK_TABLES_MAX:
        _CHUNK_TABLES.popitem(last=False)
    return table


def _same_dense_layout(t: torch.Tensor, ref: torch.Tensor) -> bool:
    """Same shape, and the same strides wherever a dimension has more than one element."""
    if t.shape != ref.shape:
        return False
    dims = zip(t.stride(), ref.stride(), t.shape, strict=True)
    return all(a == b for a, b, n in dims if n > 1) and is_dense(t)


class AdamLaunchPlan(NamedTuple):
    """The checked tensors of one launch and their rows of the tensor table, minus hyperparameters.

    Built by :func:`plan_adam_multi_tensor`, which validates every tensor and writes nothing;
    :func:`launch_adam_plan` then only launches. A caller that must not change anything unless
    the whole update can run (an optimizer step over several launches) plans every launch first.

    Args:
        tensors: the lists the plan was made from (params, grads, exp_avgs, exp_avg_sqs,
            max_exp_avg_sqs); held so that the data pointers in ``rows`` stay valid.
        rows: one row per tensor: five data pointers (0 for ``max_exp_avg_sq`` without
            AMSGrad) and the element count.
        numels: the element counts, the key of the chunk table.
        device: the tensors' device.
        dtype: their storage dtype.
        amsgrad: whether ``max_exp_avg_sqs`` are part of the update.
    """

    tensors: tuple[Sequence[torch.Tensor], ...]
    rows: list[list[int]]
    numels: tuple[int, ...]
    device: torch.device
    dtype: torch.dtype
    amsgrad: bool


def plan_adam_multi_tensor(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    max_exp_avg_sqs: Sequence[torch.Tensor],
    *,
    amsgrad: bool,
) -> AdamLaunchPlan:
    """Check the tensors of one :func:`adam_multi_tensor` launch; launch nothing, write nothing.

    Args:
        params: parameters, all of one dtype (float32, float16 or bfloat16) and device, each
            non-overlapping and dense (any memory format).
        grads: one gradient per parameter, with the parameter's shape, dtype and strides.
        exp_avgs: first moments, laid out like the parameters.
        exp_avg_sqs: second moments, laid out like the parameters.
        max_exp_avg_sqs: running maxima of the second moments when ``amsgrad``, else empty.
        amsgrad: whether the update uses ``max_exp_avg_sqs``.

    Returns:
        The plan :func:`launch_adam_plan` launches.

    Raises:
        ValueError: lists of different lengths, or tensors whose dtype, device or layout do
            not fit.

    Example:
        >>> p, m, v = torch.ones(4, 4), torch.zeros(4, 4), torch.zeros(4, 4)
        >>> plan_adam_multi_tensor([p], [torch.ones(4, 4)], [m], [v], [], amsgrad=False).numels
        (16,)
        >>> try:  # a gradient in another layout than its parameter
        ...     plan_adam_multi_tensor([p], [torch.ones(4, 4).t()], [m], [v], [], amsgrad=False)
        ... except ValueError as error:
        ...     print(str(error)[:45])
        grads[0] must have params[0]'s dtype, device,
    """
    n = len(params)
    lists = {"grads": grads, "exp_avgs": exp_avgs, "exp_avg_sqs": exp_avg_sqs}
    if amsgrad:
        lists["max_exp_avg_sqs"] = max_exp_avg_sqs
    elif len(max_exp_avg_sqs) != 0:
        raise ValueError(
            f"max_exp_avg_sqs must be empty when amsgrad=False, got {len(max_exp_avg_sqs)} tensors"
        )
    for name, values in lists.items():
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries but params has {n}")
    tensors = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs)
    if n == 0:
        return AdamLaunchPlan(tensors, [], (), torch.device("cpu"), torch.float32, amsgrad)
    device, dtype = params[0].device, params[0].dtype
    if dtype not in _KERNEL_DTYPES:
        raise ValueError(f"params have dtype {dtype}; the kernel supports {list(_KERNEL_DTYPES)}")

    rows: list[list[int]] = []
    numels: list[int] = []
    for i, p in enumerate(params):
        if p.dtype != dtype or p.device != device:
            raise ValueError(
                f"params[{i}] is {p.dtype} on {p.device} but params[0] is {dtype} on {device}; "
                "one launch takes one dtype and device"
            )
        if not is_dense(p):
            raise ValueError(f"params[{i}] is not dense (strides {p.stride()})")
        state = [grads[i], exp_avgs[i], exp_avg_sqs[i]]
        state.append(max_exp_avg_sqs[i] if amsgrad else p)
        for name, t in zip(_STATE_NAMES, state, strict=True):
            if t.dtype != dtype or t.device != device or not _same_dense_layout(t, p):
                raise ValueError(
                    f"{name}[{i}] must have params[{i}]'s dtype, device, shape and strides "
                    f"({dtype}, {device}, {tuple(p.shape)}, {p.stride()}), got {t.dtype}, "
                    f"{t.device}, {tuple(t.shape)}, {t.stride()}"
                )
        ptrs = [p.data_ptr(), *(t.data_ptr() for t in state)]
        if not amsgrad:
            ptrs[4] = 0
        numels.append(p.numel())
        rows.append([*ptrs, p.numel()])
    return AdamLaunchPlan(tensors, rows, tuple(numels), device, dtype, amsgrad)


def launch_adam_plan(
    plan: AdamLaunchPlan,
    hyperparams: Sequence[AdamHyperparams],
    *,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: torch.Tensor | None = None,
    tiling: AdamTiling | None = None,
) -> int:
    """Launch the Adam step a :func:`plan_adam_multi_tensor` plan describes (one kernel).

    Args:
        plan: the checked tensors.
        hyperparams: one :class:`AdamHyperparams` per parameter of the plan.
        maximize: maximise the objective (negate the gradients).
        decoupled_weight_decay: AdamW's decay ``p *= 1 - lr * wd`` instead of ``g += wd * p``.
        grad_scale: a one-element tensor on the plan's device; gradients are divided by it.
        tiling: block and chunk sizes; ``None`` picks :data:`INTERPRETER_TILING` on CPU tensors
            and ``AdamTiling()`` otherwise.

    Returns:
        The number of kernel launches (0 when there is nothing to update, else 1).

    Raises:
        ValueError: ``hyperparams`` of another length than the plan's tensors, a ``grad_scale``
            that is not one element on the plan's device, or an invalid ``tiling``.

    Example:
        >>> import os
        >>> os.environ["TRITON_INTERPRET"] == "1"  # CPU tensors need the interpreter
        True
        >>> p, g, m, v = torch.ones(3), torch.full((3,), 0.5), torch.zeros(3), torch.zeros(3)
        >>> plan = plan_adam_multi_tensor([p], [g], [m], [v], [], amsgrad=False)
        >>> h = AdamHyperparams(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
        >>> launch_adam_plan(plan, [h], maximize=False, decoupled_weight_decay=False)
        1
        >>> p
        tensor([0.9000, 0.9000, 0.9000])
    """
    n = len(plan.rows)
    if len(hyperparams) != n:
        raise ValueError(f"hyperparams has {len(hyperparams)} entries but params has {n}")
    if n == 0:
        return 0
    device = plan.device
    if grad_scale is not None and (grad_scale.numel() != 1 or grad_scale.device != device):
        raise ValueError(
            f"grad_scale must be a one-element tensor on {device}, got shape "
            f"{tuple(grad_scale.shape)} on {grad_scale.device}"
        )
    tiling = tiling or (INTERPRETER_TILING if device.type == "cpu" else AdamTiling())
    if tiling.block <= 0 or tiling.block & (tiling.block - 1) or tiling.chunk % tiling.block:
        raise ValueError(
            f"tiling.block must be a power of two dividing tiling.chunk, got {tiling.block} "
            f"and {tiling.chunk}"
        )

    hyper = [_hyper_row(h, decoupled_weight_decay) for h in hyperparams]
    table = torch.empty((n, _ROW), dtype=torch.int64)
    table[:, : _PTR_COLUMNS + 1] = torch.tensor(plan.rows, dtype=torch.int64)
    table[:, _PTR_COLUMNS + 1 :].view(torch.float32).copy_(torch.tensor(hyper))
    table = table.to(device, non_blocking=True)
    chunks = _chunk_table(device, plan.numels, tiling.chunk)
    if chunks.shape[0] == 0:  # every tensor is empty
        return 0
    _adam_multi_tensor_kernel[(chunks.shape[0],)](
        table,
        table.view(torch.float32),
        chunks,
        grad_scale if grad_scale is not None else table,  # never read without HAS_GRAD_SCALE
        DTYPE=_KERNEL_DTYPES[plan.dtype],
        AMSGRAD=plan.amsgrad,
        MAXIMIZE=maximize,
        DECOUPLED=decoupled_weight_decay,
        HAS_GRAD_SCALE=grad_scale is not None,
        ROW=_ROW,
        HYPER=_HYPER_OFFSET,
        BLOCK=tiling.block,
        CHUNK=tiling.chunk,
        num_warps=tiling.num_warps,
    )
    return 1


def adam_multi_tensor(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor],
    exp_avg_sqs: Sequence[torch.Tensor],
    max_exp_avg_sqs: Sequence[torch.Tensor],
    hyperparams: Sequence[AdamHyperparams],
    *,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: torch.Tensor | None = None,
    tiling: AdamTiling | None = None,
) -> int:
    """Launch one Adam step over all ``params`` (one dtype, one device) as a single kernel.

    Updates ``params``, ``exp_avgs``, ``exp_avg_sqs`` (and ``max_exp_avg_sqs``) in place; step
    counters are the caller's business (``hyperparams[i].step`` is the count after this step).
    Everything is checked before the launch: an error leaves every tensor as it was. This is
    :func:`plan_adam_multi_tensor` followed by :func:`launch_adam_plan`.

    Args:
        params: parameters, all of one dtype (float32, float16 or bfloat16) and device, each
            non-overlapping and dense (any memory format).
        grads: one gradient per parameter, with the parameter's shape, dtype and strides.
        exp_avgs: first moments, laid out like the parameters.
        exp_avg_sqs: second moments, laid out like the parameters.
        max_exp_avg_sqs: running maxima of the second moments when ``amsgrad``, else empty.
        hyperparams: one :class:`AdamHyperparams` per parameter.
        amsgrad: normalise by the running maximum of the second moment.
        maximize: maximise the objective (negate the gradients).
        decoupled_weight_decay: AdamW's decay ``p *= 1 - lr * wd`` instead of ``g += wd * p``.
        grad_scale: a one-element float32 tensor on the params' device; gradients are divided
            by it (and stored back unscaled), as torch's fused Adam does for ``GradScaler``.
        tiling: block and chunk sizes; ``None`` picks :data:`INTERPRETER_TILING` on CPU tensors
            and ``AdamTiling()`` otherwise.

    Returns:
        The number of kernel launches (0 when there is nothing to update, else 1).

    Raises:
        ValueError: lists of different lengths, or tensors whose dtype, device or layout do
            not fit.

    Example:
        >>> import os
        >>> os.environ["TRITON_INTERPRET"] == "1"  # CPU tensors need the interpreter
        True
        >>> p, g = torch.ones(3), torch.full((3,), 0.5)
        >>> m, v = torch.zeros(3), torch.zeros(3)
        >>> h = AdamHyperparams(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
        >>> adam_multi_tensor([p], [g], [m], [v], [], [h], amsgrad=False, maximize=False,
        ...                   decoupled_weight_decay=False)
        1
        >>> p  # the first Adam step moves every element by lr
        tensor([0.9000, 0.9000, 0.9000])
    """
    if len(hyperparams) != len(params):
        raise ValueError(f"hyperparams has {len(hyperparams)} entries but params has {len(params)}")
    plan = plan_adam_multi_tensor(
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, amsgrad=amsgrad
    )
    return launch_adam_plan(
        plan,
        hyperparams,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
        grad_scale=grad_scale,
        tiling=tiling,
    )


def aot_specs() -> list[KernelSpec]:
    """The variants ``python -m torchkit kernels`` compiles: each dtype, plain and AMSGrad+AMP."""
    signature = {
        "table_ptr": "*i64",
        "hyper_ptr": "*fp32",
        "chunks_ptr": "*i32",
        "grad_scale_ptr": "*fp32",
    }
    tiling = AdamTiling()
    specs = []
    for name, tl_dtype in (("fp32", tl.float32), ("fp16", tl.float16), ("bf16", tl.bfloat16)):
        for amsgrad_amp in (False, True):
            constexprs = {
                "DTYPE": tl_dtype,
                "AMSGRAD": amsgrad_amp,
                "MAXIMIZE": False,
                "DECOUPLED": True,
                "HAS_GRAD_SCALE": amsgrad_amp,
                "ROW": _ROW,
                "HYPER": _HYPER_OFFSET,
                "BLOCK": tiling.block,
                "CHUNK": tiling.chunk,
            }
            specs.append(
                KernelSpec(
                    name=f"{name},amsgrad,grad_scale" if amsgrad_amp else name,
                    kernel=_adam_multi_tensor_kernel,
                    signature=signature,
                    constexprs=constexprs,
                    configs=(triton.Config({}, num_warps=tiling.num_warps),),
                )
            )
    return specs
