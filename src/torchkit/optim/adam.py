"""FusedAdam and FusedAdamW: drop-ins for :class:`torch.optim.Adam`/``AdamW`` whose step updates
every parameter of one device and dtype with a single multi-tensor kernel launch.

The layering is torch's: ``__init__`` and ``add_param_group`` validate; ``step`` gathers each
group's tensors with ``_init_group`` and hands them to the functional layer (:class:`_Update`),
which buckets them by device, dtype and options and runs each bucket's backend
(:func:`select_backend`):

* ``Backend.TRITON`` (CUDA) and ``Backend.TRITON_INTERPRETER`` (CPU, ``TRITON_INTERPRET=1``):
  one launch of :mod:`torchkit.kernels.adam` for all the bucket's groups, which reads
  ``found_inf``, ``grad_scale``, tensor hyperparameters and step counters on the device;
* ``Backend.TORCH``: torch's public functional Adam with ``fused=True``, once per group.

:func:`fused_adam`, the public functional form, validates its tensor lists and runs the same
layer. ``FusedAdam.step`` keeps its :class:`_Update` (launch tables included) while the
parameters, their state tensors and their gradients' presence stay the same
(:class:`_StepCache`); under ``torch.compile`` nothing is kept and a Triton launch is the
operator ``torchkit::adam_multi_tensor_`` (``torch.library``), whose fake implementation
tracing runs (its real one keeps its launch tables by the tensors' addresses, see
:func:`torchkit.kernels.adam.adam_multi_tensor`, and bumps the parameters' versions).
Param-group keys and state are torch's (``step``: float32 on the parameter's device, as with
``fused=True``), so state_dicts move between FusedAdam and ``torch.optim.Adam`` both ways.

Private torch API used (tested with torch 2.13):

* ``torch.optim.optimizer._get_fused_kernels_supported_devices``: the devices torch's fused
  Adam runs on, checked before the stock backend runs and before a state_dict says
  ``fused=True`` (torch's ``Adam(fused=True)`` makes the same check);
* ``torch.optim.optimizer._global_optimizer_pre_hooks`` / ``_post_hooks``, the optimizer's
  ``_optimizer_step_pre_hooks`` / ``_optimizer_step_post_hooks`` and
  ``torch.autograd._profiler_enabled``: whether a step hook is registered or a profiler runs.
  ``step`` runs torch's own step wrapper (``Optimizer.profile_hook_step``: a profiler range
  and the hooks) only then, which saves about 10 µs of host time per step; it carries the
  ``hooked`` mark that ``Optimizer._patch_step_function`` checks, so it is not wrapped again;
* ``_step_supports_amp_scaling``: ``GradScaler`` then hands ``grad_scale``/``found_inf`` to
  ``step`` instead of unscaling and checking the gradients itself (as for torch's fused Adam).

``_init_group`` keeps torch's signature: ``torch.compile`` calls it by name.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import operator
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.graph import increment_version
from torch.optim.adam import adam as torch_adam
from torch.optim.optimizer import Optimizer, _get_fused_kernels_supported_devices

from torchkit._layout import fitted, is_dense, same_strides
from torchkit.backend import Backend, select_backend

__all__ = ["AdamLaunch", "FusedAdam", "FusedAdamW", "fused_adam", "fused_adam_from"]

_FLOATING = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_COMPLEX = (torch.complex64, torch.complex128, torch.complex32)
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_STATE = (*_MOMENTS, "step")  # owners[1:] of _Update, in order
_PLAIN = frozenset({Tensor, torch.nn.Parameter})
_NUMBERS = frozenset({float, int})  # not bool
_NONE = itertools.repeat(None)
_grad = operator.attrgetter("grad")

_HYPER = ("lr", "beta1", "beta2", "eps", "weight_decay")  # a Row's, as functional Adam names them
Row = tuple[float | Tensor, ...]  # lr, beta1, beta2, eps, weight_decay
Options = tuple[bool, bool, bool]  # amsgrad, maximize, decoupled_weight_decay


class AdamLaunch(NamedTuple):
    """What one bucket of tensors (one device and dtype) ran on during a step.

    Args:
        device: the tensors' device.
        dtype: their dtype (the real dtype for complex parameters).
        backend: the implementation that updated them.
        launches: kernel launches (Triton backends) or calls of torch's fused Adam
            (``Backend.TORCH``); a step that ``found_inf`` skips on the device counts them too.
    """

    device: torch.device
    dtype: torch.dtype
    backend: Backend
    launches: int


# --------------------------------------------------------------------------------------------
# Validation, where values enter: the layers below trust what passed it.


def _real(name: str, value: Any) -> float | Tensor:
    """``value`` as a float, or as a one-element real Tensor (not read)."""
    if type(value) is float:
        return value
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} as a Tensor must have one element, got shape {value.shape}")
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number, got a {value.dtype} tensor")
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # int, numpy scalars
        raise TypeError(
            f"{name} must be a float (or another real number) or a one-element Tensor, "
            f"got {value!r}"
        )
    return float(value)


def _row(values: Sequence[Any], names: Sequence[str], where: str, read: bool) -> Row:
    """``values`` (lr, beta1, beta2, eps, weight_decay) converted and range-checked, naming the
    first bad one. Tensors are read only when ``read`` (at construction, never at a step)."""
    if _NUMBERS.issuperset(map(type, values)):  # floats (a scheduler's lr at every step)
        lr, beta1, beta2, eps, weight_decay = row = tuple(map(float, values))
        inf = math.inf
        finite = 0.0 <= lr < inf and 0.0 <= eps < inf and 0.0 <= weight_decay < inf
        if finite and 0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0:
            return row  # NaN fails every comparison: the slow path below names it
    row = tuple(_real(name, v) for name, v in zip(names, values, strict=True))
    for name, value in zip(names, row, strict=True):
        if isinstance(value, Tensor):
            if not read:
                continue
            value = float(value)
        if name.startswith("beta") and not 0.0 <= value < 1.0:
            raise ValueError(f"{name}{where} must be in [0, 1), got {value}")
        if not value >= 0.0:
            raise ValueError(f"{name}{where} must be >= 0, got {value}")
        if value == math.inf:
            raise ValueError(f"{name}{where} must be finite, got {value}")
    return row


def _group_row(group: dict[str, Any], where: str = "", read: bool = False) -> Row:
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas{where} must be a pair (beta1, beta2), got {betas!r}")
    values = (group["lr"], *betas, group["eps"], group["weight_decay"])
    return _row(values, ("lr", "betas[0]", "betas[1]", "eps", "weight_decay"), where, read)


def _check_options(group: dict[str, Any], where: str) -> None:
    """Raise ``ValueError`` for torch Adam options FusedAdam cannot honour (never ignore them)."""
    if group.get("differentiable"):
        raise ValueError(f"differentiable=True{where} is not supported: the kernel has no autograd")
    if group.get("foreach"):
        raise ValueError(
            f"foreach=True{where} asks for torch's multi-tensor implementation; FusedAdam always "
            "runs its fused kernel (pass foreach=None)"
        )
    if group.get("fused") is False:
        raise ValueError(f"fused=False{where} contradicts FusedAdam (pass fused=None)")


def _check_amp(name: str, value: Any) -> Tensor | None:
    """``GradScaler``'s ``grad_scale``/``found_inf``: ``None`` or a one-element real tensor."""
    if value is not None and (
        not isinstance(value, Tensor) or value.numel() != 1 or not value.is_floating_point()
    ):
        raise ValueError(f"{name} must be a one-element floating-point tensor, got {value!r}")
    return value


def _check_param(p: Tensor, grad: Tensor, name: str, backends: dict[torch.device, Backend]) -> None:
    """Everything a backend would refuse about a parameter with a gradient, before any write.
    ``backends``: the backend of each device seen so far in this pass (filled in here), so
    that :func:`select_backend` runs once per device, not once per parameter."""
    if grad.is_sparse:
        raise RuntimeError(
            f"{name} has a sparse gradient: FusedAdam does not support sparse gradients, "
            "please consider SparseAdam"
        )
    if p.dtype not in _FLOATING and p.dtype not in _COMPLEX:
        raise TypeError(
            f"{name} has dtype {p.dtype}; Adam updates float32, float16, bfloat16, float64 "
            "and complex parameters"
        )
    local = _local(p)
    backend = backends.get(local.device)
    if backend is None:
        backend = backends[local.device] = select_backend(local.device)
    if backend is Backend.TORCH:
        supported = _get_fused_kernels_supported_devices()
        if local.device.type not in supported:
            raise RuntimeError(
                f"{name} is on {local.device}: torch's fused Adam, the stock backend, runs on "
                f"{supported}"
            )
    if not is_dense(local):
        raise ValueError(
            f"{name} is not dense (shape {tuple(p.shape)}, strides {local.stride()}); "
            "FusedAdam updates dense parameters only"
        )


def _local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (FSDP2), any other tensor as it is."""
    if type(t) in _PLAIN or not torch.distributed.is_available():
        return t
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _address(t: Tensor) -> int:
    try:
        return t.data_ptr()
    except RuntimeError:  # a wrapper subclass (torch.Tensor._make_wrapper_subclass)
        return 0


def _real_views(tensors: Sequence[Tensor]) -> list[Tensor]:
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


# --------------------------------------------------------------------------------------------
# The functional layer


# The Triton launch as torch.compile sees it: an operator defined with torch.library's low-level
# API rather than torch.library.custom_op, whose version bumps of the mutated arguments run in
# Python one tensor at a time (about 0.6 ms of a compiled step's host time for 161 tensors);
# the implementation bumps what it writes with one call instead, as the eager step does.
# Tagged cudagraph_unsafe: cudagraph trees (mode="reduce-overhead") run it outside their CUDA
# graphs, because a launch may build its tables or upload new gradient addresses from the
# host, which a graph recorded from inputs copied into its own pool would replay stale.
_LIBRARY = torch.library.Library("torchkit", "FRAGMENT")
_LIBRARY.define(
    "adam_multi_tensor_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] exp_avgs, "
    "Tensor(d!)[] exp_avg_sqs, Tensor(e!)[] max_exp_avg_sqs, Tensor(f!)[] state_steps, "
    "float[] hyper_floats, Tensor[] hyper_tensors, int[] hyper_slots, int[] groups, "
    "Tensor? grad_scale, Tensor? found_inf, bool amsgrad, bool maximize, "
    "bool decoupled_weight_decay) -> ()",
    tags=(torch.Tag.cudagraph_unsafe,) if hasattr(torch.Tag, "cudagraph_unsafe") else (),
)


def _adam_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    hyper_floats: list[float],
    hyper_tensors: list[Tensor],
    hyper_slots: list[int],
    groups: list[int],
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    """``torchkit::adam_multi_tensor_``: the group rows come flattened (``hyper_floats``), with
    ``hyper_tensors[k]`` in place ``hyper_slots[k]``. Bumps the version counters of the
    parameters (and of the gradients it unscales), as :class:`_Bucket` does."""
    from torchkit.kernels.adam import adam_multi_tensor

    values: list[float | Tensor] = list(hyper_floats)
    for slot, tensor in zip(hyper_slots, hyper_tensors, strict=True):
        values[slot] = tensor
    rows = [values[k : k + 5] for k in range(0, len(values), 5)]
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
    adam_multi_tensor(
        *lists,
        rows,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=decoupled_weight_decay,
        groups=groups,
        grad_scale=grad_scale,
        found_inf=found_inf,
    )
    increment_version(params if grad_scale is None else [*params, *grads])


_LIBRARY.impl("adam_multi_tensor_", _adam_multi_tensor, "CompositeExplicitAutograd")


@torch.library.register_fake("torchkit::adam_multi_tensor_", lib=_LIBRARY)
def _(*args: Any, **kwargs: Any) -> None:
    return None  # updates in place: no output to describe


def _on(value: Tensor | None, device: torch.device) -> Tensor | None:
    """A checked ``grad_scale``/``found_inf`` as the float32 tensor on ``device`` kernels read."""
    if value is None or (value.dtype == torch.float32 and value.device == device):
        return value
    return value.to(device, torch.float32, non_blocking=True)


class _Bucket:
    """Tensors of one device, dtype and option combination, and what updates them.

    ``columns``: params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs (empty without AMSGrad) and
    state_steps, as local tensors (kept as real views for complex ones); ``groups``: each
    tensor's param group. The bucket takes the rows of the groups it has (:meth:`rows`); a
    subclass turns a step into its launches.

    A step bumps the version counters of the parameters (and of the gradients it unscales),
    as torch's single-tensor and foreach Adam do, so that autograd rejects a parameter changed
    after it was saved for backward and caches keyed on ``_version`` see the update:
    ``written`` holds the parameters as their owner holds them (a DTensor, not its local
    shard), bumped with one ``increment_version`` call. The Triton kernel writes through raw
    pointers, which autograd does not see, and torch's fused Adam bumps only its step counters
    (torch 2.13). The optimizer state is not bumped: nothing saves it for backward, and each
    bumped tensor costs about 45 ns of host time per step.
    """

    def __init__(
        self,
        backend: Backend,
        columns: list[list[Tensor]],
        groups: list[int],
        options: Options,
        written: list[Tensor],
    ) -> None:
        self.complex = columns[0][0].is_complex()
        self.columns = [_real_views(c) for c in columns[:4]] + [columns[4]]
        self.options, self.written = options, written
        self.groups = list(dict.fromkeys(groups))  # the rows used, in order
        self.index = [self.groups.index(g) for g in groups]  # each tensor's row
        p = self.columns[0][0]
        self.report = AdamLaunch(p.device, p.dtype, backend, 1)
        self._rows: tuple[Sequence[Row] | None, list[Row]] = (None, [])

    def rows(self, rows: Sequence[Row]) -> list[Row]:
        """The rows of this bucket's groups (the same list while ``rows`` is the same)."""
        if self._rows[0] is not rows:
            self._rows = rows, [rows[g] for g in self.groups]
        return self._rows[1]

    def prepare(
        self, grads: list[Tensor], rows: list[Row], scale: Tensor | None, inf: Tensor | None
    ) -> list[Callable[[], Any]]:
        raise NotImplementedError  # every bucket is one of the subclasses below

    def bump(self, grads: list[Tensor], scale: Tensor | None) -> Callable[[], None]:
        # Bumped whether or not found_inf skips the update on the device, as torch's in-place
        # ops would; the gradients are written only when they are unscaled.
        return functools.partial(
            increment_version, self.written if scale is None else self.written + grads
        )


class _PlanBucket(_Bucket):
    """An eager Triton bucket: its :class:`AdamPlan` built once and launched at every step
    (``FusedAdam.step``), or found among the plans kept by address (:func:`fused_adam`)."""

    def __init__(self, *args: Any, kept: bool) -> None:
        super().__init__(*args)
        from torchkit.kernels.adam import AdamPlan, _plan_for

        if kept:
            self.plan = AdamPlan(*self.columns, amsgrad=self.options[0], groups=self.index)
        else:
            self.plan = _plan_for(self.columns, self.options[0], self.index, None)

    def prepare(
        self, grads: list[Tensor], rows: list[Row], scale: Tensor | None, inf: Tensor | None
    ) -> list[Callable[[], Any]]:
        _, maximize, decoupled = self.options
        real = _real_views(grads) if self.complex else grads
        launch = self.plan.prepare(
            real, rows, maximize=maximize, decoupled_weight_decay=decoupled, grad_scale=scale,
            found_inf=inf,
        )  # fmt: skip
        return [launch, self.bump(grads, scale)]


class _OpBucket(_Bucket):
    """A Triton bucket that calls ``torchkit::adam_multi_tensor_``: steps traced by
    ``torch.compile`` (the op bumps the versions of what it writes)."""

    def prepare(
        self, grads: list[Tensor], rows: list[Row], scale: Tensor | None, inf: Tensor | None
    ) -> list[Callable[[], Any]]:
        values = [v for row in rows for v in row]
        slots = [k for k, v in enumerate(values) if isinstance(v, Tensor)]
        tensors = [values[k] for k in slots]
        floats = [0.0 if isinstance(v, Tensor) else v for v in values]
        args = (self.columns[0], _real_views(grads), *self.columns[1:], floats, tensors, slots)
        op = torch.ops.torchkit.adam_multi_tensor_.default
        return [functools.partial(op, *args, self.index, scale, inf, *self.options)]


class _TorchBucket(_Bucket):
    """A stock bucket: torch's functional fused Adam, once per group (one set of
    hyperparameters a call)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.parts: list[tuple[int, list[list[Tensor]], list[int]]] = []
        for k in range(len(self.groups)):
            pos = [i for i, row in enumerate(self.index) if row == k]
            self.parts.append((k, [[c[i] for i in pos] if c else [] for c in self.columns], pos))
        self.report = self.report._replace(launches=len(self.parts))

    def prepare(
        self, grads: list[Tensor], rows: list[Row], scale: Tensor | None, inf: Tensor | None
    ) -> list[Callable[[], Any]]:
        real = _real_views(grads) if self.complex else grads
        amsgrad, maximize, decoupled = self.options
        runs: list[Callable[[], Any]] = []
        for k, columns, pos in self.parts:
            params = columns[0]
            strides = list(map(Tensor.stride, params))
            fits, copies = fitted(
                [real[i] for i in pos], strides, all(map(Tensor.is_contiguous, params))
            )
            runs.append(functools.partial(
                torch_adam, params, list(fits), *columns[1:], fused=True, grad_scale=scale,
                found_inf=inf, amsgrad=amsgrad, maximize=maximize,
                decoupled_weight_decay=decoupled, **dict(zip(_HYPER, rows[k], strict=True)),
            ))  # fmt: skip
            if scale is not None:  # torch unscales the copies: hand the values back after it
                runs += [functools.partial(grad.copy_, copy) for grad, copy in copies]
        return [*runs, self.bump(grads, scale)]


class _Update:
    """The functional layer: tensor lists bucketed by device, dtype and options, each bucket on
    its device's backend. :meth:`run` checks every bucket's launches, then launches them all.

    Args:
        owners: params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs (``None`` where a group has no
            AMSGrad) and state_steps, as their owner holds them (DTensors, not local shards).
        groups: each tensor's param group (its row of hyperparameters).
        options: each tensor's ``(amsgrad, maximize, decoupled_weight_decay)``.
        mode: how Triton buckets launch: ``"kept"`` (an :class:`AdamPlan` of their own,
            ``FusedAdam.step``), ``"call"`` (the plan kept for these addresses,
            :func:`fused_adam`) or ``"traced"`` (the operator ``torchkit::adam_multi_tensor_``,
            under ``torch.compile``).
    """

    def __init__(
        self, owners: list[list[Any]], groups: list[int], options: list[Options], mode: str
    ) -> None:
        columns = [list(map(_local, c)) if k < 4 else c for k, c in enumerate(owners)]
        keys: dict[tuple[Any, ...], list[int]] = {}
        for i, p in enumerate(columns[0]):
            keys.setdefault((p.device, p.dtype, options[i]), []).append(i)
        self.buckets: list[tuple[_Bucket, list[int] | None]] = []
        for (device, _, opts), index in keys.items():
            sub = [
                [c[i] for i in index] if k != 3 or opts[0] else [] for k, c in enumerate(columns)
            ]
            backend = select_backend(device)
            args = (backend, sub, [groups[i] for i in index], opts, [owners[0][i] for i in index])
            if backend is Backend.TORCH:
                bucket: _Bucket = _TorchBucket(*args)
            elif mode == "traced":
                bucket = _OpBucket(*args)
            else:
                bucket = _PlanBucket(*args, kept=mode == "kept")
            self.buckets.append((bucket, None if len(index) == len(columns[0]) else index))

    def run(
        self,
        grads: list[Tensor],
        rows: Sequence[Row],
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
    ) -> list[AdamLaunch]:
        """One step: ``grads`` local, one per tensor; ``rows`` per param group."""
        launches = []
        amp = grad_scale is not None or found_inf is not None
        for bucket, index in self.buckets:
            part = grads if index is None else list(map(grads.__getitem__, index))
            scale, inf = grad_scale, found_inf
            if amp:
                scale, inf = _on(scale, bucket.report.device), _on(inf, bucket.report.device)
            launches += bucket.prepare(part, bucket.rows(rows), scale, inf)
        for launch in launches:
            launch()
        return [bucket.report for bucket, _ in self.buckets]


def _check_tensors(columns: list[list[Tensor]], grads: list[Tensor], amsgrad: bool) -> None:
    """Every list as long as ``params``, every tensor fitting its parameter."""
    n = len(columns[0])
    names = ("grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps")
    for name, column in zip(names, [grads, *columns[1:]], strict=True):
        if name == "max_exp_avg_sqs" and amsgrad and len(column) != n:
            raise ValueError(f"amsgrad=True needs {n} max_exp_avg_sqs, got {len(column)}")
        if len(column) != n and not (name == "max_exp_avg_sqs" and not column):
            raise ValueError(f"{name} has {len(column)} entries but params has {n}")
    moments = columns[1:4] if amsgrad else columns[1:3]  # unused maxima are not read
    backends: dict[torch.device, Backend] = {}
    for i, p in enumerate(columns[0]):
        _check_param(p, grads[i], f"params[{i}]", backends)
        for name, t in zip(names, (grads[i], *(c[i] for c in moments)), strict=False):
            if (t.shape, t.dtype, t.device) != (p.shape, p.dtype, p.device):
                raise ValueError(
                    f"{name}[{i}] must have the shape, dtype and device of params[{i}] "
                    f"({tuple(p.shape)}, {p.dtype}, {p.device}), got {tuple(t.shape)}, "
                    f"{t.dtype}, {t.device}"
                )
            if name != "grads" and not same_strides(t, p):
                raise ValueError(
                    f"{name}[{i}] must have the strides of params[{i}] {p.stride()}, got "
                    f"{t.stride()}: moments are updated in place in their parameter's layout "
                    "(pass torch.empty_like(param).copy_(moment))"
                )
        step = columns[4][i]
        if (step.numel(), step.dtype, step.device) != (1, torch.float32, p.device):
            raise ValueError(
                f"state_steps[{i}] must be a one-element float32 tensor on {p.device}, got "
                f"{step.dtype} of shape {tuple(step.shape)} on {step.device}"
            )


@torch.no_grad()
def fused_adam(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    max_exp_avg_sqs: Sequence[Tensor],
    state_steps: Sequence[Tensor],
    *,
    lr: float | Tensor,
    beta1: float | Tensor,
    beta2: float | Tensor,
    eps: float | Tensor,
    weight_decay: float | Tensor,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> list[AdamLaunch]:
    """One Adam step over lists of tensors, on the backend :func:`select_backend` picks per device.

    :func:`torch.optim.adam.adam` with ``fused=True`` (one launch per device and dtype), on
    FusedAdam's functional layer. DTensors update through their local shards, complex tensors
    as their real and imaginary parts. Everything is checked before anything is written, so
    an error changes nothing. The Triton launch keeps its tables by the tensors' addresses:
    calling this at every step over the same tensors builds them once.

    Args:
        params: dense parameters (floating point or complex), any memory format.
        grads: their gradients, with the parameters' shapes, dtypes and devices; one in another
            layout is copied into its parameter's for the step.
        exp_avgs: first moments, with the parameters' dtypes and strides, updated in place.
        exp_avg_sqs: second moments, likewise.
        max_exp_avg_sqs: running maxima of the second moments (``amsgrad``), else empty.
        state_steps: one-element float32 tensors on the parameters' devices, the steps taken;
            incremented on the device unless ``found_inf`` is set.
        lr: learning rate: a float, or a one-element tensor read on the device.
        beta1: first-moment decay (float or one-element tensor, as the others).
        beta2: second-moment decay.
        eps: denominator term.
        weight_decay: L2 penalty (Adam) or decoupled decay (AdamW) coefficient.
        amsgrad: use the running maximum of the second moment.
        maximize: maximise the objective.
        decoupled_weight_decay: AdamW's decay ``p -= lr * weight_decay * p``.
        grad_scale: ``GradScaler``'s scale: gradients are divided by it on the device and
            stored back unscaled, as with torch's fused Adam.
        found_inf: non-zero when the scaled gradients overflowed: nothing changes. Read on the
            device, never on the host.

    Returns:
        One :class:`AdamLaunch` per device and dtype.

    Raises:
        ValueError: lists of different lengths, invalid hyperparameters, a parameter that is
            not dense, a tensor whose shape, dtype or device differ from its parameter's, a
            moment whose strides do, or a step counter that is not one float32 element on its
            parameter's device.
        TypeError: a parameter that is neither floating point nor complex.
        RuntimeError: sparse gradients, or a backend that cannot run on the tensors' device.

    Example:
        >>> import torchkit
        >>> p, step = torch.ones(3), torch.tensor(0.0)
        >>> with torchkit.force_backend("torch"):
        ...     launches = fused_adam([p], [torch.full((3,), 0.5)], [torch.zeros(3)],
        ...                           [torch.zeros(3)], [], [step], lr=0.1, beta1=0.9,
        ...                           beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
        ...                           maximize=False, decoupled_weight_decay=False)
        >>> p, step
        (tensor([0.9000, 0.9000, 0.9000]), tensor(1.))
    """
    row = _row((lr, beta1, beta2, eps, weight_decay), _HYPER, "", read=False)
    n = len(params)
    owners = [list(c) for c in (params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)]
    grads = list(map(_local, grads))
    _check_tensors([list(map(_local, c)) for c in owners], grads, amsgrad)
    _check_amp("grad_scale", grad_scale)
    _check_amp("found_inf", found_inf)
    if not amsgrad:
        owners[3] = [None] * n
    options = [(amsgrad, maximize, decoupled_weight_decay)] * n
    mode = "traced" if torch.compiler.is_compiling() else "call"
    return _Update(owners, [0] * n, options, mode).run(grads, [row], grad_scale, found_inf)


# --------------------------------------------------------------------------------------------
# The optimizers


# The options whose change rebuilds the step cache, and the hyperparameters a step compares
# with the last step's.
_options = operator.itemgetter(
    "amsgrad", "maximize", "decoupled_weight_decay", "differentiable", "foreach", "fused"
)
_raw = operator.itemgetter("lr", "betas", "eps", "weight_decay")


def _same(a: Any, b: Any) -> bool:
    """Equal without reading a tensor: floats by value, tuples elementwise, the rest by identity."""
    if a is b or (type(a) is float and type(b) is float and a == b):
        return True
    return type(a) is tuple and type(b) is tuple and len(a) == len(b) and all(map(_same, a, b))


def _gather(opt: FusedAdam) -> tuple[list[list[Any]], list[int], list[Options]]:
    """Every group's tensors with gradients and their state (created on first use), as
    ``_Update`` takes them."""
    owners: list[list[Any]] = [[], [], [], [], []]
    groups: list[int] = []
    options: list[Options] = []
    for g, group in enumerate(opt.param_groups):
        found: tuple[list[Tensor], ...] = ([], [], [], [], [], [])
        opt._init_group(group, *found)
        n = len(found[0])
        if not group["amsgrad"]:
            found[4][:] = [None] * n
        for owned, values in zip(owners, (found[0], *found[2:]), strict=True):
            owned += values
        groups += [g] * n
        options += [(group["amsgrad"], group["maximize"], group["decoupled_weight_decay"])] * n
    return owners, groups, options


class _StepCache:
    """What ``FusedAdam.step`` keeps between steps: the :class:`_Update` (its launch tables) and
    what it was built from. :meth:`gradients` checks at each step, by identity and address,
    that the optimizer still holds the same parameters (and storages), the same of them have
    gradients, the same state dicts and state tensors, options and backends; any change builds
    a new cache (after every check a step can fail, before any state is created)."""

    def __init__(self, opt: FusedAdam) -> None:
        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                "FusedAdam builds its launch tables at the first step and when the parameters "
                "change: take a step before capturing a CUDA graph"
            )
        self.rows = _check_groups(opt)  # every check a step can fail, before any write
        self.raw = list(map(_raw, opt.param_groups))
        owners, groups, options = _gather(opt)
        self.update = _Update(owners, groups, options, "kept")
        self.groups = [(group["params"], len(group["params"])) for group in opt.param_groups]
        self.options = list(map(_options, opt.param_groups))
        self.params = owners[0]  # those with gradients, in the update's order
        self.idle = [p for group in opt.param_groups for p in group["params"] if p.grad is None]
        self.state = opt.state
        self.dicts = list(opt.state.values())
        stepped = [opt.state[p] for p in self.params]
        self.entries = []  # (key, its tensors, their state dicts)
        for key, column in zip(_STATE, owners[1:], strict=True):
            kept = [i for i, t in enumerate(column) if t is not None]  # AMSGrad's where it runs
            if kept:
                dicts = [stepped[i] for i in kept]
                self.entries.append((operator.itemgetter(key), [column[i] for i in kept], dicts))
        self.local = any(type(p) not in _PLAIN for p in self.params)
        self.addresses = self._addresses()

    def _addresses(self) -> list[int]:
        """The parameters' storage addresses (of their local shards; 0 for a wrapper subclass
        without storage of its own, which only torch's kernel can update, through it)."""
        if not self.local:
            return list(map(Tensor.data_ptr, self.params))
        return [_address(_local(p)) for p in self.params]

    def gradients(self, opt: FusedAdam) -> list[Tensor] | None:
        """The step's gradients (local, in the update's order) if the cache still describes
        ``opt``, else ``None``."""
        groups = opt.param_groups
        if len(groups) != len(self.groups) or list(map(_options, groups)) != self.options:
            return None
        for group, (params, n) in zip(groups, self.groups, strict=True):
            if group["params"] is not params or len(params) != n:
                return None
        grads = list(map(_grad, self.params))
        if any(map(operator.is_, grads, _NONE)) or not all(
            map(operator.is_, map(_grad, self.idle), _NONE)
        ):
            return None  # another set of parameters has gradients
        state = opt.state
        if state is not self.state or len(state) != len(self.dicts):
            return None
        if not all(map(operator.is_, state.values(), self.dicts)):
            return None  # opt.state[p] = {...}
        try:  # state[p]["exp_avg"] = ..., an offload round trip, a step counter reset
            for get, column, dicts in self.entries:
                if not all(map(operator.is_, map(get, dicts), column)):
                    return None
        except KeyError:
            return None
        if self._addresses() != self.addresses:
            return None  # a parameter's .data was replaced (model.to(memory_format=...), say)
        for bucket, _ in self.update.buckets:
            if select_backend(bucket.report.device) is not bucket.report.backend:
                return None
        return list(map(_local, grads)) if self.local else grads

    def run(
        self, opt: FusedAdam, grads: list[Tensor], scale: Tensor | None, inf: Tensor | None
    ) -> list[AdamLaunch]:
        """One step; hyperparameters a scheduler changed are checked and taken over first."""
        raw = list(map(_raw, opt.param_groups))
        if not all(map(_same, raw, self.raw)):
            where = " (param group {})".format
            rows = [
                self.rows[g] if _same(r, self.raw[g]) else _group_row(group, where(g))
                for g, (group, r) in enumerate(zip(opt.param_groups, raw, strict=True))
            ]
            self.rows, self.raw = rows, raw  # a new list: the buckets see the change
        return self.update.run(grads, self.rows, scale, inf)


def _check_groups(opt: FusedAdam) -> list[Row]:
    """Every check a step can fail, made before it changes anything; each group's row."""
    rows = []
    backends: dict[torch.device, Backend] = {}
    for g, group in enumerate(opt.param_groups):
        # foreach/fused in a group loaded from torch name its implementation: kept, not run.
        _check_options({"differentiable": group["differentiable"]}, f" (param group {g})")
        rows.append(_group_row(group, f" (param group {g})"))
        for i, p in enumerate(group["params"]):
            if p.grad is not None:
                _check_param(p, p.grad, f"param_groups[{g}]['params'][{i}]", backends)
    return rows


def _with_step_hooks(step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` behind torch's step wrapper (profiler range, pre- and post-hooks) when a hook,
    the profiler or ``torch.compile`` needs it, else called directly."""
    from torch.optim import optimizer

    hooked = Optimizer.profile_hook_step(step)

    @functools.wraps(step)
    def wrapper(self: FusedAdam, *args: Any, **kwargs: Any) -> Any:
        if (
            torch.compiler.is_compiling()  # first: dynamo cannot trace the profiler's flag
            or self._optimizer_step_pre_hooks
            or self._optimizer_step_post_hooks
            or optimizer._global_optimizer_pre_hooks
            or optimizer._global_optimizer_post_hooks
            or torch.autograd._profiler_enabled()
        ):
            return hooked(self, *args, **kwargs)
        return step(self, *args, **kwargs)

    wrapper.hooked = True  # type: ignore[attr-defined]  # Optimizer.__init__ wraps no further
    return wrapper


class FusedAdam(torch.optim.Adam):
    r"""Adam (and, with ``decoupled_weight_decay=True``, AdamW) as one multi-tensor kernel per step.

    A drop-in for :class:`torch.optim.Adam`: same arguments, math, param-group keys and state,
    so checkpoints move between the two both ways; groups may differ in every hyperparameter,
    schedulers may change them. All parameters of one device and dtype are one Triton launch
    when their groups share ``amsgrad``, ``maximize`` and ``decoupled_weight_decay``; without
    Triton, torch's fused Adam runs. ``last_backend`` and ``last_launches`` tell what ran.

    A step never synchronises with the host: ``found_inf`` and ``grad_scale`` (from
    :class:`torch.amp.GradScaler`), tensor hyperparameters and the ``step`` counters are read
    on the device. After a first step has built the launch tables it can be captured in a CUDA
    graph, whatever ``capturable`` says (kept for the state_dict); ``torch.compile`` traces it.
    Any dense parameter layout works: gradients and moments in another layout are copied into
    the parameter's.

    ``load_state_dict`` loads a ``torch.optim.Adam`` or FusedAdam ``state_dict``, all of it or
    nothing: in addition to torch's checks every moment must have its parameter's shape, dtype
    and device and every ``step`` one element (else a ``ValueError`` names the parameter and
    nothing is loaded); moments saved in another layout are copied into their parameter's,
    and ``step`` counters move to their parameter's device as float32. ``state_dict`` says
    ``fused=True`` for the groups torch's fused Adam can run (floating-point parameters on its
    devices, no implementation named), so that torch resumes a FusedAdam checkpoint fused.

    Args:
        params: iterable of parameters or of param-group dicts.
        lr: learning rate, a float (or other real number) or a one-element Tensor
            (default: 1e-3). A Tensor is read on the device at every step.
        betas: decays of the first and second moment, floats or one-element Tensors
            (default: (0.9, 0.999)).
        eps: term added to the denominator (default: 1e-8).
        weight_decay: L2 penalty, or decoupled decay with ``decoupled_weight_decay``
            (default: 0).
        amsgrad: use the AMSGrad variant (default: False).
        maximize: maximise the objective instead of minimising it (default: False).
        decoupled_weight_decay: AdamW's decoupled weight decay (default: False).
        foreach: accepted for signature compatibility; only ``None``/``False``.
        capturable: accepted and kept in the groups; every step is capturable.
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

    # GradScaler hands grad_scale/found_inf to step() instead of unscaling and checking itself.
    _step_supports_amp_scaling = True

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
        _check_options({"foreach": foreach, "fused": fused, "differentiable": differentiable}, "")
        _group_row({"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}, read=True)
        self.last_launches: list[AdamLaunch] = []
        self._cache: _StepCache | None = None
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
            capturable=capturable,
            differentiable=False,
            fused=None,
            decoupled_weight_decay=decoupled_weight_decay,
        )

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

    def state_dict(self) -> dict[str, Any]:
        """torch's ``state_dict``, with ``fused=True`` in the groups torch's fused Adam can run
        (see the class docstring)."""
        saved = super().state_dict()
        for packed, group in zip(saved["param_groups"], self.param_groups, strict=True):
            if packed["fused"] is None and not packed["foreach"] and _torch_fuses(group):
                packed["fused"] = True  # torch resumes with its fused Adam, as this ran
        return saved

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Optimizer.load_state_dict, copy.deepcopy and unpickling install the state through
        # here: check it, copy moments into their parameter's layout and move ``step`` to its
        # parameter's device as float32 (torch's Adam.__setstate__ then finds a tensor and
        # leaves it), before anything is replaced. Entries that are not a parameter's state
        # (torch's hook tests add some) are left alone.
        loaded = state.get("state", {})
        index = 0  # as in state_dict(): parameters numbered across the groups, in order
        for g, group in enumerate(state.get("param_groups", [])):
            for p in group["params"]:
                entries = loaded.get(p)
                index += 1
                if not isinstance(entries, dict):
                    continue
                where = f"state of parameter {index - 1} (param group {g})"
                step = entries.get("step")
                if isinstance(step, Tensor) and step.numel() != 1:
                    raise ValueError(
                        f"{where}: 'step' must have one element, got shape {tuple(step.shape)}"
                    )
                for key in _MOMENTS:
                    value = entries.get(key)
                    if not isinstance(value, Tensor):
                        continue
                    if value.shape != p.shape:
                        raise ValueError(
                            f"{where}: {key!r} has shape {tuple(value.shape)}, the "
                            f"parameter {tuple(p.shape)}"
                        )
                    if (value.dtype, value.device) != (p.dtype, p.device):
                        raise ValueError(
                            f"{where}: {key!r} is {value.dtype} on {value.device}, "
                            f"the parameter {p.dtype} on {p.device}"
                        )
                    if not same_strides(_local(value), _local(p)):
                        entries[key] = torch.empty_like(p).copy_(value)  # the kernel's layout
                if step is not None:  # a number in checkpoints older than torch 1.12
                    step = step if isinstance(step, Tensor) else torch.tensor(float(step))
                    entries["step"] = step.to(_local(p).device, torch.float32)
        super().__setstate__(state)
        self._cache = None
        self.__dict__.setdefault("last_launches", [])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group, checked with the defaults filled in like ``__init__`` checks its
        arguments: an invalid group changes neither the optimizer nor ``param_group``.

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
            _check_options(group, where)
            _group_row(group, where, read=True)
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
    ) -> bool:
        """Append the group's parameters that have gradients, and their state, as torch's Adam.

        State is created on first use (``step``: a float32 zero on the parameter's device, as
        with ``fused=True``); moments no longer in their parameter's layout are copied into it.

        Returns:
            Whether a parameter is complex.
        """
        has_complex = False
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"] and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            for key in _MOMENTS:
                value = state.get(key)
                if value is not None and not same_strides(_local(value), _local(p)):
                    state[key] = torch.empty_like(p).copy_(value)
            has_complex |= torch.is_complex(p)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if group["amsgrad"]:
                max_exp_avg_sqs.append(state["max_exp_avg_sq"])
            state_steps.append(state["step"])
        return has_complex

    @_with_step_hooks
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step over all param groups; a step that raises changes nothing.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or ``None``.

        Raises:
            ValueError: a group with an unsupported option or invalid hyperparameter, a
                parameter that is not dense, or a ``grad_scale``/``found_inf`` that is not a
                one-element tensor.
            TypeError: a parameter of a dtype Adam does not update (integer, float8).
            RuntimeError: sparse gradients, a device no backend runs on, or a backend pinned
                with :func:`torchkit.force_backend` that cannot run on the parameters' device.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        scale = _check_amp("grad_scale", getattr(self, "grad_scale", None))
        inf = _check_amp("found_inf", getattr(self, "found_inf", None))
        if not torch.compiler.is_compiling():
            launches = self._kept_step(scale, inf)
        elif all(select_backend(_local(p).device) is not Backend.TORCH for p in _stepped(self)):
            launches = self._traced_step(scale, inf)
        else:  # torch's fused Adam runs outside the graph, as in torch's own Adam(fused=True)
            launches = _kept_step_eagerly(self, scale, inf)
        # In place: torch.compile drops attribute assignments on optimizers (torch 2.13).
        self.last_launches[:] = launches
        return loss

    @torch.no_grad()
    def _kept_step(self, scale: Tensor | None, inf: Tensor | None) -> list[AdamLaunch]:
        """A step through the kept :class:`_StepCache`, rebuilt when it no longer applies."""
        cache = self._cache
        grads = None if cache is None else cache.gradients(self)
        if grads is None:  # (re)build: every check first, then the state and the tables
            self._cache = None
            cache = self._cache = _StepCache(self)
            grads = cache.gradients(self)
            assert grads is not None, "a new step cache must describe the optimizer"
        return cache.run(self, grads, scale, inf)

    @torch.no_grad()
    def _traced_step(self, scale: Tensor | None, inf: Tensor | None) -> list[AdamLaunch]:
        """A step as ``torch.compile`` traces it: nothing kept, each launch the operator
        ``torchkit::adam_multi_tensor_``."""
        owners, groups, options = _gather(self)
        rows = [(g["lr"], *g["betas"], g["eps"], g["weight_decay"]) for g in self.param_groups]
        grads = [_local(p.grad) for p in owners[0]]
        return _Update(owners, groups, options, "traced").run(grads, rows, scale, inf)


def _stepped(opt: FusedAdam) -> list[Tensor]:
    """The parameters a step updates: those with gradients."""
    return [p for group in opt.param_groups for p in group["params"] if p.grad is not None]


# The step run eagerly from a torch.compile'd caller: one graph break, then the kept step.
_kept_step_eagerly = torch.compiler.disable(FusedAdam._kept_step)


def _torch_fuses(group: dict[str, Any]) -> bool:
    """Whether torch's ``Adam(fused=True)`` can run ``group``'s parameters."""
    devices = _get_fused_kernels_supported_devices()
    return all(p.is_floating_point() and _local(p).device.type in devices for p in group["params"])


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
        capturable: kept in the groups; every step is capturable.
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
        ValueError: a param group uses ``differentiable``.

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
        where = f" (param group {i} of the {type(optimizer).__name__})"
        _check_options({"differentiable": group.get("differentiable")}, where)
        groups.append({k: v for k, v in group.items() if k not in ("foreach", "fused")})
    fused = cls(groups)
    fused.load_state_dict(optimizer.state_dict())
    return fused
