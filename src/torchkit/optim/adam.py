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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor

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

# What FusedAdam.step collects per combination of amsgrad/maximize/decoupled_weight_decay: the
# arguments of fused_adam, tensor lists first (in _init_group's order), then hyperparameters.
_BUCKET_LISTS = (
    "params",
    "grads",
    "exp_avgs",
    "exp_avg_sqs",
    "max_exp_avg_sqs",
    "state_steps",
    "lr",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
)


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
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} as a Tensor must have one element, got shape {value.shape}")
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number, got a {value.dtype} tensor")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or a one-element Tensor, got {value!r}")
    return float(value)


def _validate_hyperparameters(
    lr: Any, betas: Any, eps: Any, weight_decay: Any, where: str = ""
) -> None:
    """Raise ``ValueError``/``TypeError`` naming the first invalid hyperparameter."""
    if not _as_float("lr", lr) >= 0.0:
        raise ValueError(f"lr{where} must be >= 0, got {lr}")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas{where} must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        if not 0.0 <= _as_float(f"betas[{i}]", beta) < 1.0:
            raise ValueError(f"betas[{i}]{where} must be in [0, 1), got {beta}")
    if not _as_float("eps", eps) >= 0.0:
        raise ValueError(f"eps{where} must be >= 0, got {eps}")
    if not _as_float("weight_decay", weight_decay) >= 0.0:
        raise ValueError(f"weight_decay{where} must be >= 0, got {weight_decay}")


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
    if isinstance(value, (Tensor, int, float)):
        return [_as_float(name, value)] * n
    values = list(value)
    if not set(map(type, values)) <= {float}:  # the optimizer passes floats: no conversion
        values = [_as_float(f"{name}[{i}]", v) for i, v in enumerate(values)]
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} values for {n} parameters")
    return values


class _Bucket(NamedTuple):
    """The tensors of one device and dtype in a checked step, and what will update them."""

    device: torch.device
    dtype: torch.dtype
    backend: Backend
    indices: list[int]  # positions in fused_adam's lists
    tensors: list[tuple[Tensor, ...]]  # (p, g, m, v[, v_max]): local shards, real views
    grad_scale: Tensor | None  # on ``device``, float32
    plan: AdamLaunchPlan | None  # Triton backends (grads in the params' layout), else None
    grad_copies: list[tuple[Tensor, Tensor]]  # (gradient, its copy in the param's layout)


class _CheckedStep(NamedTuple):
    """A :func:`fused_adam` call whose arguments all passed the checks: nothing changed yet."""

    buckets: list[_Bucket]
    state_steps: list[Tensor]
    hyper: list[tuple[float, float, float, float, float]]  # (lr, beta1, beta2, eps, wd) per tensor
    amsgrad: bool
    maximize: bool
    decoupled: bool


_LIST_NAMES = ("grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")


def _check_step(
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
    grad_scale: Tensor | None,
) -> _CheckedStep:
    """Everything of :func:`fused_adam` that can fail on its arguments, and nothing it writes:
    list lengths, hyperparameters, tensors, the backend of each bucket, the kernel's layouts.
    """
    n = len(params)
    for name, values in (("grads", grads), ("exp_avgs", exp_avgs), ("exp_avg_sqs", exp_avg_sqs)):
        if len(values) != n:
            raise ValueError(f"{name} has {len(values)} entries but params has {n}")
    if len(state_steps) != n:
        raise ValueError(f"state_steps has {len(state_steps)} entries but params has {n}")
    if amsgrad and len(max_exp_avg_sqs) != n:
        raise ValueError(f"amsgrad=True needs {n} max_exp_avg_sqs, got {len(max_exp_avg_sqs)}")
    lrs = _per_tensor("lr", lr, n)
    beta1s = _per_tensor("beta1", beta1, n)
    beta2s = _per_tensor("beta2", beta2, n)
    epss = _per_tensor("eps", eps, n)
    wds = _per_tensor("weight_decay", weight_decay, n)
    for name, values, upper in (
        ("lr", lrs, math.inf),
        ("beta1", beta1s, 1.0),
        ("beta2", beta2s, 1.0),
        ("eps", epss, math.inf),
        ("weight_decay", wds, math.inf),
    ):
        for v in set(values):
            if not 0.0 <= v < upper:
                bounds = "in [0, 1)" if upper == 1.0 else ">= 0"
                raise ValueError(f"{name} must be {bounds}, got {v}")
    for i, s in enumerate(state_steps):
        if not isinstance(s, Tensor) or s.numel() != 1:
            raise ValueError(f"state_steps[{i}] must be a one-element tensor, got {s!r}")
    if grad_scale is not None and (not isinstance(grad_scale, Tensor) or grad_scale.numel() != 1):
        raise ValueError(f"grad_scale must be a one-element tensor, got {grad_scale!r}")

    # Bucket by (device, real dtype), on local shards and real views. A parameter's gradient
    # and state are DTensors (complex) exactly when the parameter is, so it is asked once.
    dtensor = _dtensor_type()
    by_key: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    local: list[tuple[Tensor, ...]] = []
    for i, p in enumerate(params):
        if amsgrad:
            tensors = (p, grads[i], exp_avgs[i], exp_avg_sqs[i], max_exp_avg_sqs[i])
        else:
            tensors = (p, grads[i], exp_avgs[i], exp_avg_sqs[i])
        if dtensor is not None and isinstance(p, dtensor):
            tensors = tuple(t.to_local() if isinstance(t, dtensor) else t for t in tensors)
        if tensors[1].is_sparse:
            raise RuntimeError("FusedAdam does not support sparse gradients, use SparseAdam")
        shape, dtype, device = tensors[0].shape, tensors[0].dtype, tensors[0].device
        if dtype not in _SUPPORTED_DTYPES and dtype not in _SUPPORTED_COMPLEX:
            raise TypeError(
                f"params[{i}] has dtype {p.dtype}; FusedAdam supports float32, float16, bfloat16 "
                "and complex64/complex32 parameters"
            )
        for name, t in zip(_LIST_NAMES, tensors[1:], strict=False):
            if t.shape != shape or t.dtype != dtype or t.device != device:
                raise ValueError(
                    f"{name}[{i}] must have the shape, dtype and device of params[{i}] "
                    f"({tuple(shape)}, {dtype}, {device}), got {tuple(t.shape)}, {t.dtype}, "
                    f"{t.device}"
                )
        if dtype in _SUPPORTED_COMPLEX:
            tensors = tuple(torch.view_as_real(t) for t in tensors)
            dtype = tensors[0].dtype
        local.append(tensors)
        key = (device, dtype)
        if key in by_key:
            by_key[key].append(i)
        else:
            by_key[key] = [i]

    buckets = []
    for (device, dtype), indices in by_key.items():
        backend = select_backend(device)
        scale = None if grad_scale is None else grad_scale.to(device, torch.float32)
        tensors = [local[i] for i in indices]
        plan, copies = None, []
        if backend is not Backend.TORCH:
            from torchkit.kernels.adam import plan_adam_multi_tensor

            dense_grads, copies = _dense_grads(tensors)
            plan = plan_adam_multi_tensor(
                [t[0] for t in tensors],
                dense_grads,
                [t[2] for t in tensors],
                [t[3] for t in tensors],
                [t[4] for t in tensors] if amsgrad else [],
                amsgrad=amsgrad,
            )
        buckets.append(_Bucket(device, dtype, backend, indices, tensors, scale, plan, copies))
    hyper = list(zip(lrs, beta1s, beta2s, epss, wds, strict=True))
    return _CheckedStep(
        buckets, list(state_steps), hyper, amsgrad, maximize, decoupled_weight_decay
    )


def _overflowed(found_inf: Tensor | None) -> bool:
    """Whether ``GradScaler``'s ``found_inf`` says the gradients overflowed (one device read)."""
    if found_inf is None:
        return False
    if not isinstance(found_inf, Tensor) or found_inf.numel() != 1:
        raise ValueError(f"found_inf must be a one-element tensor, got {found_inf!r}")
    return float(found_inf.item()) != 0.0


def _take_step(step: _CheckedStep, skip: bool) -> list[AdamLaunch]:
    """Count the step and update every bucket of a checked step (``skip``: change nothing)."""
    if skip:
        return [AdamLaunch(b.device, b.dtype, b.backend, 0) for b in step.buckets]
    state_steps = step.state_steps
    if state_steps and state_steps[0].is_cpu:
        # With a Python number the CPU foreach fallback would wrap it once per tensor.
        torch._foreach_add_(state_steps, _one(), alpha=1.0)
    else:
        torch._foreach_add_(state_steps, 1.0)
    options = {"amsgrad": step.amsgrad, "maximize": step.maximize, "decoupled": step.decoupled}
    report = []
    for b in step.buckets:
        hyper = [step.hyper[i] for i in b.indices]
        if b.backend is Backend.TORCH:
            steps = [state_steps[i] for i in b.indices]
            launches = _run_torch(b.tensors, hyper, steps, b.grad_scale, **options)
        else:
            counts = [float(state_steps[i].item()) for i in b.indices]
            launches = _run_triton(
                b, hyper, counts, maximize=step.maximize, decoupled=step.decoupled
            )
        report.append(AdamLaunch(b.device, b.dtype, b.backend, launches))
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
        params: parameters (float32, float16, bfloat16, complex64 or complex32), updated in place.
        grads: their gradients (dense), with the parameters' shapes, dtypes and devices.
        exp_avgs: first moments, dtype and layout of the parameters; updated in place.
        exp_avg_sqs: second moments; updated in place.
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
        ValueError: lists of different lengths, invalid hyperparameters, or a gradient or
            state tensor whose shape, dtype or device differ from its parameter's (or, on the
            Triton backends, whose layout does).
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
    checked = _check_step(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        max_exp_avg_sqs,
        state_steps,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
        grad_scale=grad_scale,
    )
    return _take_step(checked, _overflowed(found_inf))


def _same_strides(a: Tensor, b: Tensor) -> bool:
    """Same strides along every dimension that has more than one element."""
    return all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape, strict=True) if n > 1)


def _dense_grads(
    tensors: list[tuple[Tensor, ...]],
) -> tuple[list[Tensor], list[tuple[Tensor, Tensor]]]:
    """Gradients laid out like their parameters (same shapes): copies where the strides differ."""
    grads, copies = [], []
    for p, g, *_ in tensors:
        if not _same_strides(g, p):
            dense = torch.empty_like(p)
            dense.copy_(g)
            copies.append((g, dense))
            g = dense
        grads.append(g)
    return grads, copies


def _run_triton(
    bucket: _Bucket,
    hyper: list[tuple[float, float, float, float, float]],
    steps: list[float],
    *,
    maximize: bool,
    decoupled: bool,
) -> int:
    """The multi-tensor Triton kernel: one launch (``steps``: the counts after this step)."""
    from torchkit.kernels.adam import AdamHyperparams, launch_adam_plan

    launches = launch_adam_plan(
        bucket.plan,
        [AdamHyperparams(*h, step=s) for h, s in zip(hyper, steps, strict=True)],
        maximize=maximize,
        decoupled_weight_decay=decoupled,
        grad_scale=bucket.grad_scale,
    )
    if bucket.grad_scale is not None:  # the kernel unscaled the copies: hand the result back
        for grad, dense in bucket.grad_copies:
            grad.copy_(dense)
    return launches


def _run_torch(
    tensors: list[tuple[Tensor, ...]],
    hyper: list[tuple[float, float, float, float, float]],
    state_steps: list[Tensor],
    grad_scale: Tensor | None,
    *,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
) -> int:
    """torch's fused Adam kernel, one call per distinct hyperparameter tuple."""
    device = tensors[0][0].device
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    by_hyper: dict[tuple[float, ...], list[int]] = {}
    for i, h in enumerate(hyper):
        by_hyper.setdefault(h, []).append(i)
    on_cpu = device.type == "cpu"
    for (lr, beta1, beta2, eps, weight_decay), idx in by_hyper.items():
        columns = list(zip(*(tensors[i] for i in idx), strict=True))
        # torch's kernel reads float32 step counters on the parameters' device.
        counts = [state_steps[i] for i in idx]
        if not (on_cpu and all(s.is_cpu and s.dtype == torch.float32 for s in counts)):
            counts = [s.to(device, torch.float32) for s in counts]
        kernel(
            columns[0],
            columns[1],
            columns[2],
            columns[3],
            columns[4] if amsgrad else [],
            counts,
            amsgrad=amsgrad,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            weight_decay=weight_decay,
            eps=eps,
            maximize=maximize,
            grad_scale=grad_scale,
            found_inf=None,
        )
    return len(by_hyper)


# State keys shaped like their parameter.
_MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _check_loaded_state(
    param: Tensor, state: dict[str, Any] | None, group: int, index: int
) -> None:
    """Raise ``ValueError`` unless ``state`` (loaded for ``param``) fits it."""
    if not state:
        return
    where = f"state of parameter {index} (param group {group})"
    for key in _MOMENT_KEYS:
        value = state.get(key)
        if isinstance(value, Tensor) and value.shape != param.shape:
            raise ValueError(
                f"{where}: {key!r} has shape {tuple(value.shape)}, the parameter "
                f"{tuple(param.shape)}"
            )
    step = state.get("step")
    if isinstance(step, Tensor) and step.numel() != 1:
        raise ValueError(f"{where}: 'step' must have one element, got shape {tuple(step.shape)}")


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
    ``last_launches`` tell what the last step ran.

    Works with :class:`torch.amp.GradScaler` like torch's fused Adam: the scaler hands over
    ``grad_scale`` and ``found_inf``; gradients are unscaled inside the kernel and a step with
    an overflow changes nothing (reading ``found_inf`` costs one device sync per step).

    Args:
        params: iterable of parameters or of param-group dicts.
        lr: learning rate, a float or a one-element Tensor (default: 1e-3). A Tensor is read
            on the host at every step, which synchronises when it lives on a GPU.
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
        _validate_hyperparameters(lr, betas, eps, weight_decay)
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
            _validate_hyperparameters(
                group["lr"], group["betas"], group["eps"], group["weight_decay"], where
            )
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
    ) -> bool:
        """Collect the group's tensors that have gradients, with the state they will have.

        The state is torch's: ``step`` a float32 scalar tensor on the CPU (the host computes
        the bias corrections from it), the moments zeros like the parameter. Step counters
        loaded from a ``fused``/``capturable`` torch checkpoint (on the device) move to the CPU.
        New state and moved counters go into ``pending`` (parameter -> entries), not into
        ``self.state``: :meth:`step` installs them once the whole step has been checked.

        Returns:
            Whether a parameter is complex.
        """
        has_complex = False
        amsgrad = group["amsgrad"]
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            if grad.is_sparse:
                raise RuntimeError(
                    "FusedAdam does not support sparse gradients, please consider SparseAdam"
                )
            has_complex |= p.is_complex()
            params.append(p)
            grads.append(grad)
            state = self.state.get(p)
            if not state:
                state = {
                    "step": torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                }
                if amsgrad:
                    state["max_exp_avg_sq"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                pending[p] = state
            elif not state["step"].is_cpu:
                pending[p] = {"step": state["step"].cpu()}
                state = {**state, **pending[p]}
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if amsgrad:
                max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            state_steps.append(state["step"])
        return has_complex

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform a single optimization step over all param groups.

        Every group, tensor and backend is checked before anything changes: a step that
        raises leaves parameters, state and step counts as they were.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or ``None``.

        Raises:
            ValueError: a group with an unsupported option or invalid hyperparameter, or a
                state tensor that does not fit its parameter.
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

        # One call of the functional per combination of the compile-time options.
        buckets: dict[tuple[bool, bool, bool], dict[str, list[Any]]] = {}
        pending: dict[Tensor, dict[str, Tensor]] = {}
        for i, group in enumerate(self.param_groups):
            # foreach/fused in a group loaded from a torch checkpoint name torch's implementation
            # choice; they are kept for the way back, while FusedAdam runs its own.
            _check_supported_options(
                capturable=group["capturable"],
                differentiable=group["differentiable"],
                where=f" (param group {i})",
            )
            key = (
                bool(group["amsgrad"]),
                bool(group["maximize"]),
                bool(group["decoupled_weight_decay"]),
            )
            b = buckets.get(key)
            if b is None:
                b = buckets[key] = {name: [] for name in _BUCKET_LISTS}
            before = len(b["params"])
            self._init_group(group, *(b[name] for name in _BUCKET_LISTS[:6]), pending)
            n = len(b["params"]) - before
            b["lr"] += [_as_float("lr", group["lr"])] * n
            b["beta1"] += [_as_float("betas[0]", group["betas"][0])] * n
            b["beta2"] += [_as_float("betas[1]", group["betas"][1])] * n
            b["eps"] += [_as_float("eps", group["eps"])] * n
            b["weight_decay"] += [_as_float("weight_decay", group["weight_decay"])] * n

        checked = [
            _check_step(
                **b,
                amsgrad=amsgrad,
                maximize=maximize,
                decoupled_weight_decay=decoupled,
                grad_scale=getattr(self, "grad_scale", None),
            )
            for (amsgrad, maximize, decoupled), b in buckets.items()
            if b["params"]
        ]
        skip = _overflowed(getattr(self, "found_inf", None))
        # Everything is checked: from here on the step changes state.
        for p, entries in pending.items():
            self.state[p].update(entries)
        self.last_launches = [launch for c in checked for launch in _take_step(c, skip)]
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
