"""FusedAdam and FusedAdamW: drop-ins for :class:`torch.optim.Adam`/``AdamW`` that update every
parameter of one device and dtype with a single multi-tensor Triton kernel launch per step.

The classes follow ``torch/optim/adam.py``: hyperparameters are validated in ``__init__``, state
is created lazily in ``_init_group`` under torch's key names (``step``, ``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``) with torch's dtypes and devices, and ``step()`` hands the
tensors of all param groups to the functional entry point :func:`fused_adam`, which picks the
backend for each device (:func:`torchkit.backend.select_backend`):

* ``Backend.TRITON`` (CUDA tensors) and ``Backend.TRITON_INTERPRETER`` (CPU tensors with
  ``TRITON_INTERPRET=1``): the kernel of :mod:`torchkit.kernels.adam`, one launch per device
  and dtype for all groups that share ``amsgrad``/``maximize``/``decoupled_weight_decay``;
* ``Backend.TORCH``: torch's own fused Adam kernel (``torch._fused_adam_``/``_fused_adamw_``),
  the fastest stock path on CPU, one call per device, dtype and distinct hyperparameters.

Because the param-group keys and the state match torch's, a ``torch.optim.Adam`` state_dict
loads into :class:`FusedAdam` and a FusedAdam state_dict loads into ``torch.optim.Adam``, and
training continues the same way (:func:`fused_adam_from` converts a live optimizer).
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

from torchkit._layout import is_dense
from torchkit.backend import Backend, select_backend

if TYPE_CHECKING:  # importing the kernels imports triton
    from torchkit.kernels.adam import AdamLaunchPlan

__all__ = ["AdamLaunch", "FusedAdam", "FusedAdamW", "fused_adam", "fused_adam_from"]

# Storage dtypes the kernels take; complex parameters are updated through view_as_real.
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_SUPPORTED_COMPLEX = (torch.complex64, torch.complex32)
# Param-group keys that select one of torch's Adam implementations. FusedAdam keeps them (so a
# state_dict round trip through torch restores them) but runs its own implementation.
_TORCH_IMPL_KEYS = ("foreach", "fused")

PerTensor = float | Tensor | Sequence[float | Tensor]


class AdamLaunch(NamedTuple):
    """What one bucket of tensors (one device and dtype) ran on during a step.

    Args:
        device: the tensors' device.
        dtype: their storage dtype (the real dtype for complex parameters).
        backend: the implementation that updated them.
        launches: kernel launches (Triton backends) or fused-kernel calls (``Backend.TORCH``);
            0 when the step was skipped because ``found_inf`` was set.
    """

    device: torch.device
    dtype: torch.dtype
    backend: Backend
    launches: int


# --------------------------------------------------------------------------------------------
# Validation


def _as_float(name: str, value: Any) -> float:
    if type(value) is float:  # the common case, once per group and step
        return value
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} as a Tensor must have one element, got shape {value.shape}")
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number, got a {value.dtype} tensor")
        return float(value.item())
    # numbers.Real covers int, float and numpy's floating and integer scalars, as torch takes.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a float (or another real number) or a one-element Tensor, "
            f"got {value!r}"
        )
    return float(value)


def _group_hyper(lr: Any, betas: Any, eps: Any, weight_decay: Any, where: str = "") -> Hyper:
    """A param group's hyperparameters as floats; ``ValueError``/``TypeError`` naming the first
    invalid one. The one check of ``__init__``, ``add_param_group`` and every ``step()``."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas{where} must be a pair (beta1, beta2), got {betas!r}")
    hyper = (
        _as_float("lr", lr),
        _as_float("betas[0]", betas[0]),
        _as_float("betas[1]", betas[1]),
        _as_float("eps", eps),
        _as_float("weight_decay", weight_decay),
    )
    _check_hyper(hyper, _GROUP_HYPER_NAMES, where)
    return hyper


def _check_supported_options(
    *,
    capturable: bool,
    differentiable: bool,
    where: str,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Raise ``ValueError`` for torch Adam options FusedAdam cannot honour (never ignore them)."""
    if capturable:
        raise ValueError(
            f"capturable=True{where} is not supported: FusedAdam computes bias corrections on "
            "the host from CPU step counters, which cannot be captured in a CUDA graph"
        )
    if differentiable:
        raise ValueError(f"differentiable=True{where} is not supported: the kernel has no autograd")
    if foreach:
        raise ValueError(
            f"foreach=True{where} asks for torch's multi-tensor implementation; FusedAdam always "
            "runs its fused kernel (pass foreach=None)"
        )
    if fused is False:
        raise ValueError(f"fused=False{where} contradicts FusedAdam (pass fused=None)")


# --------------------------------------------------------------------------------------------
# The functional entry point

# (lr, beta1, beta2, eps, weight_decay): what torch's fused kernel takes as scalars.
Hyper = tuple[float, float, float, float, float]
_HYPER_NAMES = ("lr", "beta1", "beta2", "eps", "weight_decay")
_GROUP_HYPER_NAMES = ("lr", "betas[0]", "betas[1]", "eps", "weight_decay")
_LIST_NAMES = ("grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")
# Tensor types that need no conversion before the kernels see them (no DTensor).
_PLAIN_TYPES = frozenset({Tensor, torch.nn.Parameter})


@functools.cache
def _one() -> Tensor:
    return torch.tensor(1.0)


@functools.cache
def _dtensor_type() -> type | None:
    if not torch.distributed.is_available():
        return None
    from torch.distributed.tensor import DTensor

    return DTensor


def _per_tensor(name: str, value: PerTensor, n: int) -> list[float]:
    if isinstance(value, (Tensor, numbers.Real)):
        return [_as_float(name, value)] * n
    values = list(value)
    if not set(map(type, values)) <= {float}:  # plain floats need no conversion
        values = [_as_float(f"{name}[{i}]", v) for i, v in enumerate(values)]
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values for {n} parameters")
    return values


def _check_hyper(hyper: Hyper, names: Sequence[str], where: str = "") -> None:
    """Raise ``ValueError`` naming the first hyperparameter of ``hyper`` out of its range."""
    lr, beta1, beta2, eps, weight_decay = hyper
    inf = math.inf
    if (
        0.0 <= lr < inf
        and 0.0 <= beta1 < 1.0
        and 0.0 <= beta2 < 1.0
        and 0.0 <= eps < inf
        and 0.0 <= weight_decay < inf
    ):
        return
    for name, value in zip(names, hyper, strict=True):
        upper = 1.0 if name.startswith("beta") else math.inf
        if upper == 1.0 and not 0.0 <= value < 1.0:
            raise ValueError(f"{name}{where} must be in [0, 1), got {value}")
        if not value >= 0.0:
            raise ValueError(f"{name}{where} must be >= 0, got {value}")
        if value == math.inf:
            raise ValueError(f"{name}{where} must be finite, got {value}")


def _to_local(columns: list[list[Tensor]]) -> list[list[Tensor]]:
    """The local shards of any DTensors in ``columns`` (other tensors as they are)."""
    dtensor = _dtensor_type()
    if dtensor is None:
        return columns
    return [[t.to_local() if isinstance(t, dtensor) else t for t in c] for c in columns]


class _Segment(NamedTuple):
    """Tensors handed to a step together that share hyperparameters (one param group, say)."""

    hyper: Hyper
    columns: list[list[Tensor]]  # params, grads, exp_avgs, exp_avg_sqs[, max]: no DTensors
    state_steps: list[Tensor]
    name: Callable[[int], str]  # names the parameter at a position of the columns, for errors
    # The params' strides when known (FusedAdam.step): spares _plan_step reading them again.
    param_strides: list[tuple[int, ...]] | None = None


class _Run(NamedTuple):
    """Tensors of one device and dtype that share hyperparameters: one call of torch's kernel."""

    hyper: Hyper
    columns: list[list[Tensor]]  # params, grads, exp_avgs, exp_avg_sqs[, max]: real views
    state_steps: list[Tensor]


class _Bucket(NamedTuple):
    """The tensors of one device and dtype in a checked step, and what will update them."""

    device: torch.device
    dtype: torch.dtype  # the real dtype for complex parameters
    backend: Backend
    runs: list[_Run]  # one per distinct set of hyperparameters
    grad_scale: Tensor | None  # on ``device``, float32
    plan: AdamLaunchPlan | None  # Triton backends (all runs)


class _CheckedStep(NamedTuple):
    """A step whose arguments all passed the checks: nothing has changed yet."""

    buckets: list[_Bucket]
    amsgrad: bool
    maximize: bool
    decoupled: bool
    steps_on_host: bool  # every step counter is a float32 CPU tensor
    # (gradient, its copy in the parameter's layout) where the kernel unscales the copy, which
    # is then written back: the caller's gradients end unscaled, as with torch's fused Adam.
    unscaled_copies: list[tuple[Tensor, Tensor]]


def _plan_step(
    segments: Sequence[_Segment],
    *,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
    grad_scale: Tensor | None,
    steps_on_host: bool,
) -> _CheckedStep:
    """Bucket checked segments by device and dtype and pick each bucket's backend.

    Both backends walk a parameter and its tensors element by element in memory, so every
    tensor must be laid out like its parameter: gradients in another layout (a contiguous
    gradient of a channels_last parameter, an expanded one) are copied into the parameter's
    layout here, for every backend. The other tensors are trusted to fit their parameters:
    :func:`fused_adam` checks them, and ``FusedAdam`` creates, loads and re-lays out its state
    so that they do. What can still fail (an unsupported dtype, a backend that cannot run, the
    kernel's checks) fails before anything is written.
    """
    if grad_scale is not None and (not isinstance(grad_scale, Tensor) or grad_scale.numel() != 1):
        raise ValueError(f"grad_scale must be a one-element tensor, got {grad_scale!r}")
    by_key: dict[tuple[torch.device, torch.dtype], dict[Hyper, _Run]] = {}
    copies: list[tuple[Tensor, Tensor]] = []
    for segment in segments:
        params = segment.columns[0]
        if not params:
            continue
        segment_columns = segment.columns
        misfits = _misfits(params, segment.columns[1], segment.param_strides)
        if misfits:  # new lists: the caller's stay as they are
            grads = list(segment.columns[1])
            for i in misfits:
                dense = _relaid(grads[i], params[i], segment.name(i))
                copies.append((grads[i], dense))
                grads[i] = dense
            segment_columns = [params, grads, *segment.columns[2:]]
        # torch's grouping (C++) reads every device and dtype far faster than a Python loop.
        grouped = torch._C._group_tensors_by_device_and_dtype([params], True)
        for (device, dtype), (_, positions) in grouped.items():
            if dtype not in _SUPPORTED_DTYPES and dtype not in _SUPPORTED_COMPLEX:
                raise TypeError(
                    f"{segment.name(positions[0])} has dtype {dtype}; FusedAdam supports "
                    "float32, float16, bfloat16 and complex64/complex32 parameters"
                )
            columns, steps = segment_columns, segment.state_steps
            if len(grouped) > 1:
                columns = [[c[i] for i in positions] for c in columns]
                steps = [steps[i] for i in positions]
            if dtype in _SUPPORTED_COMPLEX:
                columns = [[torch.view_as_real(t) for t in c] for c in columns]
                dtype = columns[0][0].dtype
            runs = by_key.setdefault((device, dtype), {})
            run = runs.get(segment.hyper)
            if run is not None:  # new lists: the caller's stay as they are
                columns = [a + b for a, b in zip(run.columns, columns, strict=True)]
                steps = run.state_steps + steps
            runs[segment.hyper] = _Run(segment.hyper, columns, steps)

    buckets = []
    for (device, dtype), runs in by_key.items():
        backend = select_backend(device)
        scale = None if grad_scale is None else grad_scale.to(device, torch.float32)
        plan = None
        if backend is not Backend.TORCH:
            from torchkit.kernels.adam import plan_adam_multi_tensor

            # One launch for all runs: the kernel takes hyperparameters per tensor.
            columns = [
                [t for run in runs.values() for t in run.columns[k]]
                for k in range(5 if amsgrad else 4)
            ]
            plan = plan_adam_multi_tensor(
                columns[0],
                columns[1],
                columns[2],
                columns[3],
                columns[4] if amsgrad else [],
                amsgrad=amsgrad,
            )
        buckets.append(_Bucket(device, dtype, backend, list(runs.values()), scale, plan))
    unscaled = copies if grad_scale is not None else []
    return _CheckedStep(buckets, amsgrad, maximize, decoupled, steps_on_host, unscaled)


def _overflowed(found_inf: Tensor | None) -> bool:
    """Whether ``GradScaler``'s ``found_inf`` says the gradients overflowed (one device read)."""
    if found_inf is None:
        return False
    if not isinstance(found_inf, Tensor) or found_inf.numel() != 1:
        raise ValueError(f"found_inf must be a one-element tensor, got {found_inf!r}")
    return float(found_inf.item()) != 0.0


def _take_steps(steps: Sequence[_CheckedStep], skip: bool) -> list[AdamLaunch]:
    """Count the step and update every bucket of checked steps (``skip``: change nothing)."""
    if skip:
        return [AdamLaunch(b.device, b.dtype, b.backend, 0) for s in steps for b in s.buckets]
    counters = [c for s in steps for b in s.buckets for r in b.runs for c in r.state_steps]
    if counters and counters[0].is_cpu:
        # With a Python number the CPU foreach fallback would wrap it once per tensor.
        torch._foreach_add_(counters, _one(), alpha=1.0)
    elif counters:
        torch._foreach_add_(counters, 1.0)
    report = []
    for s in steps:
        for b in s.buckets:
            if b.backend is Backend.TORCH:
                launches = _run_torch(b, s)
            else:
                launches = _run_triton(b, maximize=s.maximize, decoupled=s.decoupled)
            report.append(AdamLaunch(b.device, b.dtype, b.backend, launches))
        for grad, dense in s.unscaled_copies:  # the kernels unscaled the copies: hand them back
            grad.copy_(dense)
    return report


def fused_adam(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    max_exp_avg_sqs: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    *,
    lr: PerTensor,
    beta1: PerTensor,
    beta2: PerTensor,
    eps: PerTensor,
    weight_decay: PerTensor,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> list[AdamLaunch]:
    """One Adam step over lists of tensors, on the backend :func:`select_backend` picks per device.

    The counterpart of :func:`torch.optim.adam.adam`, except that the hyperparameters may
    differ per tensor: ``lr``, ``beta1``, ``beta2``, ``eps`` and ``weight_decay`` are each one
    value for all tensors or a sequence with one value per tensor, so several param groups
    update in one kernel launch. Tensors are bucketed by device and dtype; each bucket is one
    launch of the Triton kernel (or one call of torch's fused kernel per distinct set of
    hyperparameters on ``Backend.TORCH``). DTensors update through their local shards, complex
    tensors through :func:`torch.view_as_real`. Every argument, and the backend of every
    bucket, is checked before anything is written: an error leaves all tensors and step
    counters as they were.

    Args:
        params: dense parameters (float32, float16, bfloat16, complex64 or complex32), any
            memory format, updated in place.
        grads: their gradients (dense, not sparse), with the parameters' shapes, dtypes and
            devices; one in another layout than its parameter (strides) is copied into the
            parameter's layout first, on every backend.
        exp_avgs: first moments, with the parameters' dtypes and strides; updated in place.
        exp_avg_sqs: second moments, likewise; updated in place.
        max_exp_avg_sqs: running maxima of the second moments (``amsgrad``), else empty.
        state_steps: one-element float tensors counting the steps taken, incremented in place
            (unless the step is skipped); CPU tensors avoid a device read per step.
        lr: learning rate(s).
        beta1: first-moment decay(s).
        beta2: second-moment decay(s).
        eps: denominator term(s).
        weight_decay: L2 penalty (Adam) or decoupled decay (AdamW) coefficient(s).
        amsgrad: use the running maximum of the second moment.
        maximize: maximise the objective.
        decoupled_weight_decay: AdamW's decay ``p *= 1 - lr * weight_decay``.
        grad_scale: the ``GradScaler`` scale; gradients are divided by it in the kernel and
            stored back unscaled, as torch's fused Adam does.
        found_inf: a tensor that is non-zero when the scaled gradients overflowed; then
            nothing is updated and no step is counted. Reading it is one device sync.

    Returns:
        One :class:`AdamLaunch` per (device, dtype) bucket.

    Raises:
        ValueError: lists of different lengths, invalid hyperparameters, a parameter that is
            not dense, a gradient or state tensor whose shape, dtype or device differ from its
            parameter's, or a moment whose strides do (on every backend).
        TypeError: a parameter dtype the kernels do not support (float64).
        RuntimeError: sparse gradients, or a backend pinned with
            :func:`torchkit.force_backend` that cannot run on the tensors' device.

    Example:
        >>> import torchkit
        >>> p = torch.ones(3)
        >>> step = torch.tensor(0.0)
        >>> with torchkit.force_backend("torch"):
        ...     launches = fused_adam([p], [torch.full((3,), 0.5)], [torch.zeros(3)],
        ...                           [torch.zeros(3)], [], [step], lr=0.1, beta1=0.9,
        ...                           beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
        ...                           maximize=False, decoupled_weight_decay=False)
        >>> p, step
        (tensor([0.9000, 0.9000, 0.9000]), tensor(1.))
    """
    n = len(params)
    for name, values in (("grads", grads), ("exp_avgs", exp_avgs), ("exp_avg_sqs", exp_avg_sqs)):
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries but params has {n}")
    if len(state_steps) != n:
        raise ValueError(f"state_steps has {len(state_steps)} entries but params has {n}")
    if amsgrad and len(max_exp_avg_sqs) != n:
        raise ValueError(f"amsgrad=True needs {n} max_exp_avg_sqs, got {len(max_exp_avg_sqs)}")
    hypers = list(
        zip(
            _per_tensor("lr", lr, n),
            _per_tensor("beta1", beta1, n),
            _per_tensor("beta2", beta2, n),
            _per_tensor("eps", eps, n),
            _per_tensor("weight_decay", weight_decay, n),
            strict=True,
        )
    )
    distinct = dict.fromkeys(hypers)  # in order of first appearance
    for hyper in distinct:
        _check_hyper(hyper, _HYPER_NAMES)
    steps_on_host = True
    for i, s in enumerate(state_steps):
        if not isinstance(s, Tensor) or s.numel() != 1:
            raise ValueError(f"state_steps[{i}] must be a one-element tensor, got {s!r}")
        steps_on_host = steps_on_host and s.is_cpu and s.dtype == torch.float32

    # Every tensor against its parameter, on local shards. A parameter's gradient and state
    # are DTensors exactly when the parameter is, so it is asked once.
    columns: list[list[Tensor]] = [list(params), list(grads), list(exp_avgs), list(exp_avg_sqs)]
    if amsgrad:
        columns.append(list(max_exp_avg_sqs))
    dtensor = _dtensor_type()
    for i, p in enumerate(params):
        if dtensor is not None and isinstance(p, dtensor):
            for c in columns:
                c[i] = c[i].to_local() if isinstance(c[i], dtensor) else c[i]
        if columns[1][i].is_sparse:
            raise RuntimeError("FusedAdam does not support sparse gradients, use SparseAdam")
        local = columns[0][i]
        shape, dtype, device = local.shape, local.dtype, local.device
        for name, c in zip(_LIST_NAMES, columns[1:], strict=False):
            t = c[i]
            if t.shape != shape or t.dtype != dtype or t.device != device:
                raise ValueError(
                    f"{name}[{i}] must have the shape, dtype and device of params[{i}] "
                    f"({tuple(shape)}, {dtype}, {device}), got {tuple(t.shape)}, {t.dtype}, "
                    f"{t.device}"
                )
        # Gradients in any layout are copied into their parameter's (_plan_step); the state,
        # updated in place, must already share it, and the parameter must be dense.
        strides = local.stride()
        for name, c in zip(_LIST_NAMES[1:], columns[2:], strict=False):
            t = c[i]
            if t.stride() != strides and not _same_strides(t, local):
                raise ValueError(
                    f"{name}[{i}] must have the strides of params[{i}] {strides}, got "
                    f"{t.stride()}: moments are updated in place in their parameter's layout "
                    "(pass torch.empty_like(param).copy_(moment))"
                )
        if not is_dense(local):
            raise ValueError(
                f"params[{i}] is not dense (shape {tuple(shape)}, strides {strides}); "
                "fused_adam updates dense parameters only"
            )

    if len(distinct) == 1:
        segments = [_Segment(hypers[0], columns, list(state_steps), "params[{}]".format)]
    else:
        segments = []
        positions: dict[Hyper, list[int]] = {h: [] for h in distinct}
        for i, hyper in enumerate(hypers):
            positions[hyper].append(i)
        for hyper, idx in positions.items():
            segments.append(
                _Segment(
                    hyper,
                    [[c[i] for i in idx] for c in columns],
                    [state_steps[i] for i in idx],
                    lambda k, idx=idx: f"params[{idx[k]}]",
                )
            )
    checked = _plan_step(
        segments,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled=decoupled_weight_decay,
        grad_scale=grad_scale,
        steps_on_host=steps_on_host,
    )
    return _take_steps([checked], _overflowed(found_inf))


def _same_strides(a: Tensor, b: Tensor) -> bool:
    """Same strides along every dimension that has more than one element."""
    return all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape, strict=True) if n > 1)


def _misfits(
    params: Sequence[Tensor],
    tensors: Sequence[Tensor],
    param_strides: list[tuple[int, ...]] | None = None,
) -> list[int]:
    """Positions where ``tensors`` (shaped like ``params``) have other strides than their param.

    One comparison of two stride lists when every layout matches, the common case; a
    per-tensor look, which ignores dimensions of size 1, only when they do not.
    ``param_strides`` are the params' strides when the caller has them already.
    """
    if param_strides is None:
        param_strides = list(map(Tensor.stride, params))
    if list(map(Tensor.stride, tensors)) == param_strides:
        return []
    pairs = enumerate(zip(params, tensors, strict=True))
    return [i for i, (p, t) in pairs if not _same_strides(t, p)]


def _relaid(t: Tensor, param: Tensor, name: str) -> Tensor:
    """A copy of ``t`` laid out like ``param``, whose strides it lacks.

    Raises:
        ValueError: ``param`` (named ``name``) is not dense: no copy can share its layout, and
            both backends walk parameters as dense memory.
    """
    dense = torch.empty_like(param)
    if not _same_strides(dense, param):
        raise ValueError(
            f"{name} is not dense (shape {tuple(param.shape)}, strides {param.stride()}); "
            "FusedAdam updates dense parameters only (pass param.contiguous())"
        )
    return dense.copy_(t)


def _run_triton(bucket: _Bucket, *, maximize: bool, decoupled: bool) -> int:
    """The multi-tensor Triton kernel: one launch for all runs of the bucket."""
    from torchkit.kernels.adam import AdamHyperparams, launch_adam_plan

    hyperparams = [
        AdamHyperparams(*run.hyper, step=float(s.item()))  # the counts after this step
        for run in bucket.runs
        for s in run.state_steps
    ]
    launches = launch_adam_plan(
        bucket.plan,
        hyperparams,
        maximize=maximize,
        decoupled_weight_decay=decoupled,
        grad_scale=bucket.grad_scale,
    )
    return launches


def _run_torch(bucket: _Bucket, step: _CheckedStep) -> int:
    """torch's fused Adam kernel, one call per run (distinct hyperparameters) of the bucket."""
    kernel = torch._fused_adamw_ if step.decoupled else torch._fused_adam_
    # torch's kernel reads float32 step counters on the parameters' device.
    counters_fit = step.steps_on_host and bucket.device.type == "cpu"
    for run in bucket.runs:
        lr, beta1, beta2, eps, weight_decay = run.hyper
        counters = run.state_steps
        if not counters_fit:
            counters = [s.to(bucket.device, torch.float32) for s in counters]
        kernel(
            run.columns[0],
            run.columns[1],
            run.columns[2],
            run.columns[3],
            run.columns[4] if step.amsgrad else [],
            counters,
            amsgrad=step.amsgrad,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=weight_decay,
            eps=eps,
            maximize=step.maximize,
            grad_scale=bucket.grad_scale,
            found_inf=None,
        )
    return len(bucket.runs)


# State keys shaped like their parameter.
_MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _check_loaded_state(
    param: Tensor, state: dict[str, Any] | None, group: int, index: int
) -> None:
    """Raise ``ValueError`` unless ``state`` (loaded for ``param``) fits it.

    Moments must have the parameter's shape, dtype and device (``load_state_dict`` has cast
    floating-point ones already), ``step`` one element: the step then trusts them.
    """
    if not state:
        return
    where = f"state of parameter {index} (param group {group})"
    for key in _MOMENT_KEYS:
        value = state.get(key)
        if not isinstance(value, Tensor):
            continue
        if value.shape != param.shape:
            raise ValueError(
                f"{where}: {key!r} has shape {tuple(value.shape)}, the parameter "
                f"{tuple(param.shape)}"
            )
        if value.dtype != param.dtype or value.device != param.device:
            raise ValueError(
                f"{where}: {key!r} is {value.dtype} on {value.device}, the parameter "
                f"{param.dtype} on {param.device}"
            )
    step = state.get("step")
    if isinstance(step, Tensor) and step.numel() != 1:
        raise ValueError(f"{where}: 'step' must have one element, got shape {tuple(step.shape)}")


def _group_param(index: int, group: dict[str, Any], position: int) -> str:
    """Names, in an error message, the ``position``-th parameter with a gradient of the param
    group ``group`` (number ``index``)."""
    with_grad = [i for i, p in enumerate(group["params"]) if p.grad is not None]
    return f"param_groups[{index}]['params'][{with_grad[position]}]"


# --------------------------------------------------------------------------------------------
# The optimizers


class FusedAdam(torch.optim.Adam):
    r"""Adam (and, with ``decoupled_weight_decay=True``, AdamW) as one multi-tensor kernel per step.

    A drop-in for :class:`torch.optim.Adam`: same arguments, same math for every option, same
    param-group keys and state (``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``), so
    checkpoints move between the two in both directions. Param groups may differ in every
    hyperparameter and schedulers may change ``lr`` between steps. The update of all
    parameters of one device and dtype is a single Triton launch whenever the groups share
    ``amsgrad``, ``maximize`` and ``decoupled_weight_decay`` (the arithmetic is float32 for
    float16/bfloat16 parameters, whose state keeps the parameter dtype as in torch). On a
    device without Triton it runs torch's own fused Adam. ``last_backend`` and
    ``last_launches`` tell what the last step ran. ``step`` counters are float32 CPU tensors,
    as with torch's ``fused=True`` Adam, also under ``torch.set_default_dtype(torch.float64)``
    (where torch's default Adam makes them float64).

    Parameters may have any dense layout (channels_last, say): a gradient in another layout
    is copied into the parameter's for the step, and moments left in an old layout (by
    ``model.to(memory_format=torch.channels_last)`` between steps) are re-laid out once.

    Works with :class:`torch.amp.GradScaler` like torch's fused Adam: the scaler hands over
    ``grad_scale`` and ``found_inf``; gradients are unscaled inside the kernel and a step with
    an overflow changes nothing (reading ``found_inf`` costs one device sync per step).

    Args:
        params: iterable of parameters or of param-group dicts.
        lr: learning rate, a finite float (or other real number) or a one-element Tensor
            (default: 1e-3). A Tensor is read on the host at every step, which synchronises
            when it lives on a GPU.
        betas: decays of the first and second moment (default: (0.9, 0.999)).
        eps: term added to the denominator (default: 1e-8).
        weight_decay: L2 penalty, or decoupled decay with ``decoupled_weight_decay``
            (default: 0).
        amsgrad: use the AMSGrad variant (default: False).
        maximize: maximise the objective instead of minimising it (default: False).
        decoupled_weight_decay: AdamW's decoupled weight decay (default: False).
        foreach: accepted for signature compatibility; only ``None``/``False`` (FusedAdam is
            never torch's foreach implementation).
        capturable: must be False (CUDA-graph capture is not supported).
        differentiable: must be False (the update has no autograd).
        fused: accepted for signature compatibility; only ``None``/``True``.

    Raises:
        ValueError: an invalid hyperparameter or an unsupported option, naming it.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> groups = [{"params": [model.weight], "weight_decay": 0.01}, {"params": [model.bias]}]
        >>> opt = FusedAdam(groups, lr=1e-2)
        >>> model(torch.randn(8, 4)).pow(2).sum().backward()
        >>> opt.step()
        >>> sorted(opt.state[model.weight])
        ['exp_avg', 'exp_avg_sq', 'step']
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        _check_supported_options(
            foreach=foreach,
            fused=fused,
            capturable=capturable,
            differentiable=differentiable,
            where="",
        )
        _group_hyper(lr, betas, eps, weight_decay)
        self.last_launches: list[AdamLaunch] = []
        # torch.optim.Adam.__init__ by name: FusedAdamW's MRO must not reach torch's AdamW.
        torch.optim.Adam.__init__(
            self,
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            foreach=None,
            maximize=maximize,
            capturable=False,
            differentiable=False,
            fused=None,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        # GradScaler hands grad_scale/found_inf to step() instead of unscaling itself.
        self._step_supports_amp_scaling = True

    @classmethod
    def backend_for(cls, device: torch.device | str) -> Backend:
        """The backend a step takes for parameters on ``device`` (see :mod:`torchkit.backend`).

        Example:
            >>> import torchkit
            >>> with torchkit.force_backend("torch"):
            ...     FusedAdam.backend_for("cpu")
            <Backend.TORCH: 'torch'>
        """
        return select_backend(device)

    @property
    def last_backend(self) -> Backend | None:
        """The backend of the last step (``None`` before the first one, or if devices mixed)."""
        backends = {launch.backend for launch in self.last_launches}
        return backends.pop() if len(backends) == 1 else None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``torch.optim.Adam`` or FusedAdam ``state_dict``, all of it or nothing.

        As :meth:`torch.optim.Optimizer.load_state_dict`, and in addition:

        * every moment (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) must have its
          parameter's shape, and every ``step`` one element; otherwise (the model changed
          between save and load) a ``ValueError`` names the parameter and the optimizer keeps
          its state;
        * moments saved with other strides than their parameter now has (a checkpoint of a
          model converted to channels_last, say) are copied once into the parameter's layout,
          which the kernel needs.

        Args:
            state_dict: the optimizer state, as returned by ``state_dict()``.

        Raises:
            ValueError: the param groups or their sizes differ (as in torch), or a state
                tensor does not fit its parameter.

        Example:
            >>> saved = FusedAdam([torch.nn.Parameter(torch.ones(2, 3))]).state_dict()
            >>> saved["state"] = {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(3, 2),
            ...                       "exp_avg_sq": torch.zeros(3, 2)}}
            >>> opt = FusedAdam([torch.nn.Parameter(torch.ones(2, 3))])
            >>> try:
            ...     opt.load_state_dict(saved)
            ... except ValueError as error:
            ...     print(error)
            state of parameter 0 (param group 0): 'exp_avg' has shape (3, 2), the parameter (2, 3)
            >>> len(opt.state)
            0
        """
        # The checks run in __setstate__, where torch's load_state_dict hands over the new
        # state after its pre-hooks and casts and before anything of it is installed.
        super().load_state_dict(state_dict)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Optimizer.load_state_dict and unpickling both install the state through here: check
        # it, and bring moments into their parameter's layout, before anything is replaced.
        loaded = state.get("state", {})
        groups = state.get("param_groups", [])
        index = 0  # as in state_dict(): parameters numbered across the groups, in order
        for g, group in enumerate(groups):
            for p in group["params"]:
                _check_loaded_state(p, loaded.get(p), g, index)
                index += 1
        for group in groups:
            for p in group["params"]:
                entries = loaded.get(p)
                if not entries:
                    continue
                for key in _MOMENT_KEYS:
                    value = entries.get(key)
                    if isinstance(value, Tensor) and not _same_strides(value, p):
                        entries[key] = torch.empty_like(p).copy_(value)
        super().__setstate__(state)
        # Step counters live on the CPU as float32 (the host computes the bias corrections
        # from them): a fused or capturable torch checkpoint keeps them on the device.
        for entries in self.state.values():
            step = entries.get("step")
            if isinstance(step, Tensor) and (not step.is_cpu or step.dtype != torch.float32):
                entries["step"] = step.to("cpu", torch.float32)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group after validating its hyperparameters, like ``__init__`` does.

        The group is checked with the defaults filled in before torch's
        :meth:`~torch.optim.Optimizer.add_param_group` sees it: an invalid group changes
        neither the optimizer nor ``param_group``.

        Args:
            param_group: a dict with ``params`` and any hyperparameters that differ from the
                optimizer's defaults.

        Raises:
            ValueError: an invalid hyperparameter or unsupported option, naming it and the
                group's index; or torch's errors (a parameter already in another group).
        """
        if isinstance(param_group, dict):  # torch's add_param_group reports anything else
            group = {**self.defaults, **param_group}
            where = f" (param group {len(self.param_groups)})"
            _group_hyper(group["lr"], group["betas"], group["eps"], group["weight_decay"], where)
            _check_supported_options(
                foreach=group.get("foreach"),
                fused=group.get("fused"),
                capturable=group.get("capturable", False),
                differentiable=group.get("differentiable", False),
                where=where,
            )
        super().add_param_group(param_group)

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        max_exp_avg_sqs: list[Tensor],
        state_steps: list[Tensor],
        pending: dict[Tensor, dict[str, Tensor]],
        param_strides: list[tuple[int, ...]],
    ) -> bool:
        """Collect the group's tensors that have gradients, with the state they will have.

        The state is torch's: ``step`` a float32 scalar tensor on the CPU (the host computes
        the bias corrections from it; loaded counters are brought there by ``__setstate__``),
        the moments zeros like the parameter. Moments whose strides are no longer their
        parameter's (``model.to(memory_format=torch.channels_last)`` between two steps) are
        copied into the parameter's layout, which both backends need. New and re-laid-out
        state goes into ``pending`` (parameter -> entries), not into ``self.state``:
        :meth:`step` installs it once the whole step has been checked.

        Autograd only accepts gradients with their parameter's shape, dtype and device, and
        the state is made to fit when it is created or loaded; the layouts are compared here
        (one comparison of stride lists when they all match) and gradients brought into their
        parameter's layout by :func:`_plan_step`.

        Returns:
            Whether a parameter is complex. ``param_strides`` receives the strides of the
            parameters collected.
        """
        with_grad = [p for p in group["params"] if p.grad is not None]
        if not with_grad:
            return False
        new_grads = [p.grad for p in with_grad]
        if any(map(attrgetter("is_sparse"), new_grads)):
            raise RuntimeError(
                "FusedAdam does not support sparse gradients, please consider SparseAdam"
            )
        amsgrad = group["amsgrad"]
        param_strides += map(Tensor.stride, with_grad)
        states = list(map(self.state.get, with_grad))
        if not all(states):
            for i, (p, state) in enumerate(zip(with_grad, states, strict=True)):
                if state:
                    continue
                state = {
                    "step": torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
                if amsgrad:
                    state["max_exp_avg_sq"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                pending[p] = states[i] = state
        moments = {"exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs}
        if amsgrad:
            moments["max_exp_avg_sq"] = max_exp_avg_sqs
        for key, column in moments.items():
            values = list(map(itemgetter(key), states))
            for i in _misfits(with_grad, values, param_strides):
                p = with_grad[i]
                index = next(k for k, g in enumerate(self.param_groups) if g is group)
                relaid = _relaid(values[i], p, _group_param(index, group, i))
                values[i] = pending.setdefault(p, {})[key] = relaid
            column += values
        params += with_grad
        grads += new_grads
        state_steps += map(itemgetter("step"), states)
        return any(map(torch.is_complex, with_grad))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform a single optimization step over all param groups.

        Every group, hyperparameter and backend is checked before anything changes: a step
        that raises leaves parameters, state and step counts as they were.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or ``None``.

        Raises:
            ValueError: a group with an unsupported option or invalid hyperparameter.
            TypeError: a parameter dtype the kernels do not support (float64).
            RuntimeError: sparse gradients, or a backend pinned with
                :func:`torchkit.force_backend` that cannot run on the parameters' device.
        """
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("FusedAdam.step cannot be captured in a CUDA graph")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        # One segment per group, collected per combination of the kernel's compile-time
        # options; torch's kernel then runs once per group, the Triton kernel once per
        # combination, device and dtype.
        segments: dict[tuple[bool, bool, bool], list[_Segment]] = {}
        pending: dict[Tensor, dict[str, Tensor]] = {}
        for i, group in enumerate(self.param_groups):
            # foreach/fused in a group loaded from a torch checkpoint name torch's implementation
            # choice; they are kept for the way back, while FusedAdam runs its own.
            where = f" (param group {i})"
            _check_supported_options(
                capturable=group["capturable"],
                differentiable=group["differentiable"],
                where=where,
            )
            amsgrad = bool(group["amsgrad"])
            columns: list[list[Tensor]] = [[], [], [], [], []]
            state_steps: list[Tensor] = []
            param_strides: list[tuple[int, ...]] = []
            has_complex = self._init_group(group, *columns, state_steps, pending, param_strides)
            if not columns[0]:
                continue
            hyper = _group_hyper(
                group["lr"], group["betas"], group["eps"], group["weight_decay"], where
            )
            if not amsgrad:
                del columns[4]
            strides: list[tuple[int, ...]] | None = param_strides
            if has_complex or not set(map(type, columns[0])) <= _PLAIN_TYPES:
                columns = _to_local(columns)  # local shards: strides of their own
                strides = None
            key = (amsgrad, bool(group["maximize"]), bool(group["decoupled_weight_decay"]))
            segments.setdefault(key, []).append(
                _Segment(
                    hyper,
                    columns,
                    state_steps,
                    functools.partial(_group_param, i, group),
                    strides,
                )
            )

        grad_scale = getattr(self, "grad_scale", None)
        checked = [
            _plan_step(
                group_segments,
                amsgrad=amsgrad,
                maximize=maximize,
                decoupled=decoupled,
                grad_scale=grad_scale,
                steps_on_host=True,  # _init_group and __setstate__ keep the counters there
            )
            for (amsgrad, maximize, decoupled), group_segments in segments.items()
        ]
        skip = _overflowed(getattr(self, "found_inf", None))
        # Everything is checked: from here on the step changes state.
        for p, entries in pending.items():
            self.state[p].update(entries)
        self.last_launches = _take_steps(checked, skip)
        return loss


class FusedAdamW(FusedAdam):
    r"""AdamW as one multi-tensor kernel per step: :class:`FusedAdam` with decoupled weight decay.

    A drop-in for :class:`torch.optim.AdamW` (same defaults, ``weight_decay=1e-2``); every
    param group has ``decoupled_weight_decay=True``, also after ``load_state_dict``.

    Args:
        params: iterable of parameters or of param-group dicts.
        lr: learning rate, a float or a one-element Tensor (default: 1e-3).
        betas: decays of the first and second moment (default: (0.9, 0.999)).
        eps: term added to the denominator (default: 1e-8).
        weight_decay: decoupled weight decay coefficient (default: 1e-2).
        amsgrad: use the AMSGrad variant (default: False).
        maximize: maximise the objective instead of minimising it (default: False).
        foreach: only ``None``/``False``, see :class:`FusedAdam`.
        capturable: must be False.
        differentiable: must be False.
        fused: only ``None``/``True``.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(3))
        >>> opt = FusedAdamW([w], lr=0.1, weight_decay=0.1)
        >>> w.grad = torch.ones(3)
        >>> opt.step()
        >>> w  # decayed by lr * weight_decay, then moved by lr
        Parameter containing:
        tensor([0.8900, 0.8900, 0.8900], requires_grad=True)
    """

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        # As torch's AdamW: any loaded state runs with decoupled weight decay.
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True


def fused_adam_from(optimizer: torch.optim.Adam) -> FusedAdam:
    """A :class:`FusedAdam` (``FusedAdamW`` for an ``AdamW``) that continues ``optimizer``.

    The new optimizer has the same param groups (hyperparameters, ``initial_lr`` and any
    other keys a scheduler added) and takes over the state through ``state_dict()`` /
    ``load_state_dict()``: tensors that need no conversion are shared, not copied, so stop
    using ``optimizer`` afterwards. Schedulers hold a reference to their optimizer: create
    them for the new one (their ``state_dict`` carries over).

    Args:
        optimizer: a :class:`torch.optim.Adam` or :class:`torch.optim.AdamW`.

    Raises:
        TypeError: ``optimizer`` is not an Adam.
        ValueError: a param group uses ``capturable`` or ``differentiable``.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> adam = torch.optim.AdamW(model.parameters(), lr=1e-2)
        >>> model(torch.randn(8, 4)).sum().backward()
        >>> adam.step()
        >>> fused = fused_adam_from(adam)
        >>> type(fused).__name__, fused.state[model.bias]["step"]
        ('FusedAdamW', tensor(1.))
    """
    if not isinstance(optimizer, torch.optim.Adam):
        raise TypeError(
            f"optimizer must be a torch.optim.Adam or AdamW, got {type(optimizer).__name__}"
        )
    cls = FusedAdamW if isinstance(optimizer, (torch.optim.AdamW, FusedAdamW)) else FusedAdam
    groups = []
    for i, group in enumerate(optimizer.param_groups):
        _check_supported_options(
            foreach=None,
            fused=None,
            capturable=group.get("capturable", False),
            differentiable=group.get("differentiable", False),
            where=f" (param group {i} of the {type(optimizer).__name__})",
        )
        groups.append({k: v for k, v in group.items() if k not in _TORCH_IMPL_KEYS})
    fused = cls(groups)
    fused.load_state_dict(optimizer.state_dict())
    return fused
