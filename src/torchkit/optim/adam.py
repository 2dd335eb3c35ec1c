"""FusedAdam and FusedAdamW: drop-ins for :class:`torch.optim.Adam`/``AdamW`` whose step updates
every parameter of one device and dtype with a single multi-tensor kernel launch.

The layering is torch's: ``__init__`` and ``add_param_group`` validate; ``step`` gathers each
group's tensors with ``_init_group`` and hands them to the functional layer, which buckets them
by device, dtype and options and runs each bucket's backend (:func:`select_backend`):

* ``Backend.TRITON`` (CUDA) and ``Backend.TRITON_INTERPRETER`` (CPU, ``TRITON_INTERPRET=1``):
  one launch of :mod:`torchkit.kernels.adam` for all the bucket's groups, which reads
  ``found_inf``, ``grad_scale``, tensor hyperparameters and step counters on the device;
* ``Backend.TORCH``: torch's public functional Adam with ``fused=True``, once per group.

:func:`fused_adam` is that layer's public entry point. ``FusedAdam.step`` keeps its buckets and
their launch tables while the parameters stay the same (:class:`_Steps`). Under
``torch.compile`` nothing is kept and a Triton launch is the custom op
``torchkit::adam_multi_tensor_``, whose fake implementation tracing runs. Param-group keys and
state are torch's (``step``: float32 on the parameter's device, as with ``fused=True``), so
state_dicts move between FusedAdam and ``torch.optim.Adam`` both ways.

Private torch API used (tested with torch 2.13):
``torch.optim.optimizer._get_fused_kernels_supported_devices``, the devices torch's fused Adam
runs on, checked before the stock backend runs (torch's ``Adam(fused=True)`` makes the same
check). ``_init_group`` keeps torch's signature: ``torch.compile`` calls it by name.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.graph import increment_version
from torch.optim.adam import adam as torch_adam

from torchkit._layout import fitted, is_dense, same_strides
from torchkit.backend import Backend, select_backend

if TYPE_CHECKING:  # importing the kernels imports triton
    from torchkit.kernels.adam import AdamPlan

__all__ = ["AdamLaunch", "FusedAdam", "FusedAdamW", "fused_adam", "fused_adam_from"]

_COMPLEX = (torch.complex64, torch.complex128, torch.complex32)
_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
_PLAIN = frozenset({Tensor, torch.nn.Parameter})
_NONE = itertools.repeat(None)
_grad = operator.attrgetter("grad")

PerTensor = float | Tensor | Sequence[float | Tensor]
Hyper = tuple[float | Tensor, ...]  # lr, beta1, beta2, eps, weight_decay
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
# Validation, where values enter


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


def _checked(values: Sequence[Any], names: Sequence[str], where: str, read: bool) -> Hyper:
    """``values`` (lr, beta1, beta2, eps, weight_decay) converted and range-checked, naming the
    first bad one. Tensors are read only when ``read`` (at construction, never at a step)."""
    hyper = tuple(_real(name, v) for name, v in zip(names, values, strict=True))
    for name, value in zip(names, hyper, strict=True):
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
    return hyper


def _group_hyper(group: dict[str, Any], where: str = "", read: bool = False) -> Hyper:
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas{where} must be a pair (beta1, beta2), got {betas!r}")
    values = (group["lr"], *betas, group["eps"], group["weight_decay"])
    names = ("lr", "betas[0]", "betas[1]", "eps", "weight_decay")
    return _checked(values, names, where, read)


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


def _check_device(device: torch.device, name: str) -> Backend:
    """The backend for ``device``; ``RuntimeError`` when none can run there."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    backend = select_backend(device)
    if backend is Backend.TORCH and device.type not in _get_fused_kernels_supported_devices():
        raise RuntimeError(
            f"{name} is on {device}: torch's fused Adam, the stock backend, runs on "
            f"{_get_fused_kernels_supported_devices()}"
        )
    return backend


def _local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (FSDP2), any other tensor as it is."""
    if type(t) in _PLAIN or not torch.distributed.is_available():
        return t
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


# --------------------------------------------------------------------------------------------
# The functional layer


@torch.library.custom_op(
    "torchkit::adam_multi_tensor_",
    mutates_args=("params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps"),
)
def _adam_multi_tensor(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    hyperparams: Tensor,
    groups: list[int],
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> None:
    """The Triton launch as ``torch.compile`` sees it; tracing runs the fake below."""
    from torchkit.kernels.adam import adam_multi_tensor

    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
    options = {"amsgrad": amsgrad, "maximize": maximize, "groups": groups, "found_inf": found_inf}
    options.update(decoupled_weight_decay=decoupled_weight_decay, grad_scale=grad_scale)
    adam_multi_tensor(*lists, hyperparams, **options)


@_adam_multi_tensor.register_fake
def _(*args: Any, **kwargs: Any) -> None:
    return None  # updates in place: no output to describe


def _real_views(tensors: Sequence[Tensor]) -> list[Tensor]:
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


def _on(name: str, value: Tensor | None, device: torch.device) -> Tensor | None:
    """``GradScaler``'s ``grad_scale``/``found_inf`` as a float32 tensor on ``device``."""
    if value is None:
        return None
    if not isinstance(value, Tensor) or value.numel() != 1:
        raise ValueError(f"{name} must be a one-element tensor, got {value!r}")
    return value.to(device, torch.float32, non_blocking=True)


def _hyper_table(rows: Sequence[Hyper], device: torch.device) -> Tensor:
    """``rows`` as the kernel's float64 group table on ``device``; a tensor hyperparameter is
    copied there on the device, never read on the host."""
    floats = [[0.0 if isinstance(v, Tensor) else v for v in row] for row in rows]
    table = torch.tensor(floats, dtype=torch.float64, device=device)
    for g, row in enumerate(rows):
        for k, v in enumerate(row):
            if isinstance(v, Tensor):
                table[g, k] = v.to(device, torch.float64).reshape(())
    return table


class _Bucket:
    """Tensors of one device, dtype and option combination, and the backend that updates them.

    ``columns``: params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs (empty without AMSGrad),
    state_steps (local tensors); ``groups``: each tensor's row of hyperparameters. A Triton
    bucket builds its ``AdamPlan`` once (``trace``d: calls the custom op at each step); a stock
    bucket calls torch's functional fused Adam once per group.

    A step bumps the version counters of the parameters (and of the gradients it unscales),
    as torch's single-tensor and foreach Adam do, so that autograd rejects a parameter changed
    after it was saved for backward and caches keyed on ``_version`` see the update:
    ``written`` holds the parameters as their owner holds them (a DTensor, not its local
    shard), bumped with one ``increment_version`` call. The Triton kernel writes through raw
    pointers, which autograd does not see, and torch's fused Adam bumps only its step counters
    (torch 2.13). The optimizer state is not bumped: nothing saves it for backward, and each
    bumped tensor costs about 45 ns of host time per step. Traced buckets call the custom op,
    whose ``ADInplaceOrView`` kernel bumps its arguments.
    """

    def __init__(
        self,
        backend: Backend,
        columns: list[list[Tensor]],
        groups: list[int],
        options: Options,
        trace: bool,
        written: list[Tensor],
    ) -> None:
        device, dtype = columns[0][0].device, columns[0][0].dtype
        self.columns, self.options = columns, options
        self.groups = list(dict.fromkeys(groups))  # the rows used, in order
        self.rows = [self.groups.index(g) for g in groups]
        self.complex = dtype in _COMPLEX
        self.plan: AdamPlan | None = None
        self.runs: list[tuple[int, list[list[Tensor]], list[int]]] = []
        if backend is Backend.TORCH:
            real = [_real_views(c) for c in columns[:4]] + [columns[4]]
            for k in range(len(self.groups)):
                pos = [i for i, row in enumerate(self.rows) if row == k]
                self.runs.append((k, [[c[i] for i in pos] if c else [] for c in real], pos))
        elif not trace:
            from torchkit.kernels.adam import AdamPlan

            self.plan = AdamPlan(*columns, amsgrad=options[0], groups=self.rows)
        self.written = written
        self.bump = functools.partial(increment_version, written)
        real_dtype = torch.view_as_real(columns[0][0]).dtype if self.complex else dtype
        launches = len(self.runs) if backend is Backend.TORCH else 1
        self.report = AdamLaunch(device, real_dtype, backend, launches)
        self._hyper: tuple[Sequence[Hyper] | None, list[Hyper]] = (None, [])

    def prepare(
        self,
        grads: list[Tensor],
        hyper: Sequence[Hyper],
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
    ) -> list[Callable[[], Any]]:
        """Check a step (``hyper``: a row per group, a new sequence when one changed) and
        return its launches."""
        device = self.report.device
        scale, inf = _on("grad_scale", grad_scale, device), _on("found_inf", found_inf, device)
        if self._hyper[0] is not hyper:
            self._hyper = hyper, [hyper[g] for g in self.groups]
        rows = self._hyper[1]
        _, maximize, decoupled = self.options
        if self.plan is not None:
            options = {"maximize": maximize, "decoupled_weight_decay": decoupled}
            launches = [self.plan.prepare(grads, rows, **options, grad_scale=scale, found_inf=inf)]
        elif not self.runs:  # traced Triton bucket
            table = _hyper_table(rows, device)
            args = (self.columns[0], grads, *self.columns[1:], table, self.rows, scale, inf)
            return [functools.partial(_adam_multi_tensor, *args, *self.options)]
        else:
            real = _real_views(grads) if self.complex else grads
            launches = [
                _torch_fused_adam(cols, [real[i] for i in pos], rows[k], self.options, scale, inf)
                for k, cols, pos in self.runs
            ]
        # Bumped whether or not found_inf skips the update on the device, as torch's in-place
        # ops would; the gradients are written only when they are unscaled.
        if scale is None:
            return [*launches, self.bump]
        return [*launches, functools.partial(increment_version, self.written + grads)]


def _torch_fused_adam(
    columns: list[list[Tensor]],
    grads: list[Tensor],
    hyper: Hyper,
    options: Options,
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
) -> Callable[[], None]:
    """torch's functional fused Adam over real local tensors, checked now, run by the call."""
    params = columns[0]
    grads, copies = fitted(grads, params, [p.stride() for p in params], contiguous=False)
    lr, beta1, beta2, eps, weight_decay = hyper
    amsgrad, maximize, decoupled = options
    kwargs = {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay}

    def run() -> None:
        torch_adam(
            params,
            list(grads),
            *columns[1:],
            fused=True,
            grad_scale=grad_scale,
            found_inf=found_inf,
            amsgrad=amsgrad,
            maximize=maximize,
            decoupled_weight_decay=decoupled,
            **kwargs,
        )
        for grad, copy in copies if grad_scale is not None else ():
            grad.copy_(copy)  # unscaled in the copy: hand the values back

    return run


def _buckets(
    columns: list[list[Any]],
    groups: list[int],
    options: list[Options],
    trace: bool,
    owners: list[list[Any]],
) -> list[tuple[_Bucket, list[int] | None]]:
    """Local tensors bucketed by device, dtype and options, each with the positions of its
    tensors (``None``: all of them). Every backend is chosen (and may refuse) first.
    ``owners``: ``columns`` as their owner holds them (DTensors, not their local shards)."""
    keys: dict[tuple[Any, ...], list[int]] = {}
    for i, p in enumerate(columns[0]):
        keys.setdefault((p.device, p.dtype, options[i]), []).append(i)
    backends = [_check_device(device, f"params[{i[0]}]") for (device, *_), i in keys.items()]
    buckets = []
    for ((_, _, opts), index), backend in zip(keys.items(), backends, strict=True):
        sub = [[c[i] for i in index] if k != 3 or opts[0] else [] for k, c in enumerate(columns)]
        written = [owners[0][i] for i in index]
        bucket = _Bucket(backend, sub, [groups[i] for i in index], opts, trace, written)
        buckets.append((bucket, None if len(index) == len(columns[0]) else index))
    return buckets


def _step(
    buckets: list[tuple[_Bucket, list[int] | None]],
    grads: list[Tensor],
    hyper: Sequence[Hyper],
    grad_scale: Tensor | None,
    found_inf: Tensor | None,
) -> list[AdamLaunch]:
    """Check every bucket's launches, then launch them all."""
    launches = []
    for bucket, index in buckets:
        part = grads if index is None else list(map(grads.__getitem__, index))
        launches += bucket.prepare(part, hyper, grad_scale, found_inf)
    for launch in launches:
        launch()
    return [bucket.report for bucket, _ in buckets]


def _check_tensors(columns: list[list[Tensor]], grads: list[Tensor], amsgrad: bool) -> None:
    """Every list as long as ``params``, every tensor fitting its parameter."""
    n = len(columns[0])
    names = ("grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "state_steps")
    for name, column in zip(names, [grads, *columns[1:]], strict=True):
        if name == "max_exp_avg_sqs" and amsgrad and len(column) != n:
            raise ValueError(f"amsgrad=True needs {n} max_exp_avg_sqs, got {len(column)}")
        if len(column) != n and name != "max_exp_avg_sqs":
            raise ValueError(f"{name} has {len(column)} entries but params has {n}")
    for i, p in enumerate(columns[0]):
        if not (p.is_floating_point() or p.is_complex()):
            raise TypeError(
                f"params[{i}] has dtype {p.dtype}; Adam updates floating point "
                "and complex parameters"
            )
        if grads[i].is_sparse:
            raise RuntimeError("FusedAdam does not support sparse gradients, use SparseAdam")
        for name, t in zip(names, (grads[i], *(c[i] for c in columns[1:4] if c)), strict=False):
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
        if not is_dense(p):
            raise ValueError(
                f"params[{i}] is not dense (shape {tuple(p.shape)}, strides "
                f"{p.stride()}); fused_adam updates dense parameters only"
            )


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

    :func:`torch.optim.adam.adam` with ``fused=True``, except that ``lr``, ``beta1``, ``beta2``,
    ``eps`` and ``weight_decay`` may each be one value or a sequence with one value per tensor,
    so that several param groups share a Triton launch (one per device and dtype; torch's
    fused Adam is called once per distinct set of hyperparameters). DTensors update through
    their local shards, complex tensors as their real and imaginary parts. Everything is
    checked before anything is written, so an error changes nothing (``torch.compile`` skips
    the checks, as torch's optimizers do).

    Args:
        params: dense parameters (floating point or complex), any memory format.
        grads: their gradients, with the parameters' shapes, dtypes and devices; one in another
            layout is copied into its parameter's for the step.
        exp_avgs: first moments, with the parameters' dtypes and strides, updated in place.
        exp_avg_sqs: second moments, likewise.
        max_exp_avg_sqs: running maxima of the second moments (``amsgrad``), else empty.
        state_steps: one-element float32 tensors on the parameters' devices, the steps taken;
            incremented on the device unless ``found_inf`` is set.
        lr: learning rate(s): floats, or one-element tensors read on the device.
        beta1: first-moment decay(s).
        beta2: second-moment decay(s).
        eps: denominator term(s).
        weight_decay: L2 penalty (Adam) or decoupled decay (AdamW) coefficient(s).
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
    n = len(params)
    owners = [list(c) for c in (params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)]
    columns = [list(map(_local, c)) for c in owners[:4]] + [owners[4]]
    grads = list(map(_local, grads))
    names = ("lr", "beta1", "beta2", "eps", "weight_decay")
    per_tensor = []
    for name, value in zip(names, (lr, beta1, beta2, eps, weight_decay), strict=True):
        if isinstance(value, (Tensor, numbers.Real)):
            value = [value] * n
        per_tensor.append([_real(f"{name}[{i}]", v) for i, v in enumerate(value)])
        if len(per_tensor[-1]) != n:
            raise ValueError(f"{name} has {len(per_tensor[-1])} values for {n} parameters")
    slots: dict[Hyper, int] = {}  # distinct hyperparameters: tensors hash by identity
    groups = [slots.setdefault(row, len(slots)) for row in zip(*per_tensor, strict=True)]
    trace = torch.compiler.is_compiling()
    if not trace:
        _check_tensors(columns, grads, amsgrad)
        for row in slots:
            _checked(row, names, "", read=False)
    options = [(amsgrad, maximize, decoupled_weight_decay)] * n
    buckets = _buckets(columns, groups, options, trace, owners)
    return _step(buckets, grads, list(slots), grad_scale, found_inf)


# --------------------------------------------------------------------------------------------
# The optimizers


class _Steps:
    """``FusedAdam.step``'s buckets, kept while the groups have the same parameters, the same of
    them have gradients, and no parameter's storage, option or backend changed and no state was
    loaded. A step then reads the gradients and the parameters' addresses; the backends check
    the gradients' layouts and write what changed."""

    def __init__(self, opt: FusedAdam, grads: list[list[Tensor | None]], trace: bool) -> None:
        if not trace and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                "FusedAdam builds its launch tables at the first step and when the parameters "
                "change: take a step before capturing a CUDA graph"
            )
        self.hyper = _check_groups(opt, grads)  # before any state is created
        self.raw = list(map(_raw, opt.param_groups))
        columns: list[list[Any]] = [[], [], [], [], []]
        owners: list[list[Any]] = [[], [], [], [], []]
        groups, options, self.keys = [], [], []
        for g, group in enumerate(opt.param_groups):
            found: tuple[list[Tensor], ...] = ([], [], [], [], [], [])
            opt._init_group(group, *found)
            n = len(found[0])
            found[4][:] = found[4] if group["amsgrad"] else [None] * n
            for column, owned, values in zip(columns, owners, (found[0], *found[2:]), strict=True):
                column += map(_local, values)
                owned += values
            groups += [g] * n
            options += [(group["amsgrad"], group["maximize"], group["decoupled_weight_decay"])] * n
            kept = [i for i, grad in enumerate(grads[g]) if grad is not None]
            every = len(kept) == len(group["params"])
            self.keys.append((group["params"], len(group["params"]), None if every else kept))
        self.options = list(map(_options, opt.param_groups))
        self.state, self.n_state = opt.state, len(opt.state)
        self.plain = [p for p in owners[0] if type(p) in _PLAIN]
        self.addresses = list(map(Tensor.data_ptr, self.plain))
        self.local = len(self.plain) != len(owners[0])
        self.buckets = _buckets(columns, groups, options, trace, owners)

    def gradients(self, opt: FusedAdam, grads: list[list[Tensor | None]]) -> list[Tensor] | None:
        """The step's gradients in bucket order if the buckets still describe ``opt``."""
        if opt.state is not self.state or len(opt.state) != self.n_state:
            return None
        if len(grads) != len(self.keys) or list(map(_options, opt.param_groups)) != self.options:
            return None
        flat: list[Tensor] = []
        for group, group_grads, (params, n, kept) in zip(
            opt.param_groups, grads, self.keys, strict=True
        ):
            if group["params"] is not params or len(params) != n:
                return None
            if any(map(operator.is_, group_grads, _NONE)):
                if kept != [i for i, grad in enumerate(group_grads) if grad is not None]:
                    return None
                group_grads = [group_grads[i] for i in kept]
            elif kept is not None:
                return None
            flat += group_grads
        if list(map(Tensor.data_ptr, self.plain)) != self.addresses:
            return None  # a parameter's .data was replaced (model.to(memory_format=...), say)
        for bucket, _ in self.buckets:
            if select_backend(bucket.report.device) is not bucket.report.backend:
                return None
        return list(map(_local, flat)) if self.local else flat

    def run(self, opt: FusedAdam, grads: list[Tensor]) -> list[AdamLaunch]:
        """One step; hyperparameters a scheduler changed are checked and taken over first."""
        raw = list(map(_raw, opt.param_groups))
        if not all(map(_same, raw, self.raw)):
            where = " (param group {})".format
            hyper = [
                self.hyper[g] if _same(r, self.raw[g]) else _group_hyper(group, where(g))
                for g, (group, r) in enumerate(zip(opt.param_groups, raw, strict=True))
            ]
            self.hyper, self.raw = hyper, raw  # a new list: the buckets see the change
        scale, inf = getattr(opt, "grad_scale", None), getattr(opt, "found_inf", None)
        return _step(self.buckets, grads, self.hyper, scale, inf)


def _raw(group: dict[str, Any]) -> tuple[Any, ...]:
    """The hyperparameters a step compares with the last step's."""
    return group["lr"], group["betas"], group["eps"], group["weight_decay"]


def _options(group: dict[str, Any]) -> tuple[Any, ...]:
    """The options whose change rebuilds the buckets."""
    return (
        group["amsgrad"],
        group["maximize"],
        group["decoupled_weight_decay"],
        group["differentiable"],
        group["foreach"],
        group["fused"],
    )


def _same(a: Any, b: Any) -> bool:
    """Equal without reading a tensor: floats by value, tuples elementwise, the rest by identity."""
    if a is b or (type(a) is float and type(b) is float and a == b):
        return True
    return type(a) is tuple and type(b) is tuple and len(a) == len(b) and all(map(_same, a, b))


def _check_groups(opt: FusedAdam, grads: list[list[Tensor | None]]) -> list[Hyper]:
    """Every check a step can fail, made before it changes anything; each group's hyperparams."""
    hyper = []
    for g, (group, group_grads) in enumerate(zip(opt.param_groups, grads, strict=True)):
        # foreach/fused in a group loaded from torch name its implementation: kept, not run.
        _check_options({"differentiable": group["differentiable"]}, f" (param group {g})")
        hyper.append(_group_hyper(group, f" (param group {g})"))
        for i, (p, grad) in enumerate(zip(group["params"], group_grads, strict=True)):
            name = f"param_groups[{g}]['params'][{i}]"
            if grad is not None and grad.is_sparse:
                raise RuntimeError(
                    f"{name} has a sparse gradient: FusedAdam does not support sparse "
                    "gradients, please consider SparseAdam"
                )
            if grad is not None:
                local = _local(p)
                _check_device(local.device, name)
                if not is_dense(local):
                    raise ValueError(
                        f"{name} is not dense (shape {tuple(p.shape)}, strides "
                        f"{local.stride()}); FusedAdam updates dense parameters only"
                    )
    return hyper


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
        _group_hyper(
            {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}, read=True
        )
        self.last_launches: list[AdamLaunch] = []
        self._steps: _Steps | None = None
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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``torch.optim.Adam`` or FusedAdam ``state_dict``, all of it or nothing.

        As :meth:`torch.optim.Optimizer.load_state_dict`; in addition every moment must have its
        parameter's shape and every ``step`` one element (else a ``ValueError`` names the
        parameter and nothing is loaded), moments saved in another layout are copied into their
        parameter's, and ``step`` counters move to their parameter's device as float32.

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
        # Optimizer.load_state_dict, copy.deepcopy and unpickling install the state through
        # here: check it and bring it into the parameters' layout before anything is replaced.
        # Entries that are not a parameter's state (torch's hook tests add some) are left alone.
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
        super().__setstate__(state)
        for group in self.param_groups:
            for p in group["params"]:
                entries = self.state.get(p)
                step = entries.get("step") if isinstance(entries, dict) else None
                device = _local(p).device
                if isinstance(step, Tensor) and (step.device, step.dtype) != (
                    device,
                    torch.float32,
                ):
                    entries["step"] = step.to(device, torch.float32)
        self._steps = None
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
            _group_hyper(group, where, read=True)
        super().add_param_group(param_group)
        self._steps = None

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

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One optimization step over all param groups; a step that raises changes nothing.

        Args:
            closure: re-evaluates the model and returns the loss (optional).

        Returns:
            The closure's loss, or ``None``.

        Raises:
            ValueError: a group with an unsupported option or invalid hyperparameter, or a
                parameter that is not dense.
            RuntimeError: sparse gradients, a device no backend runs on, or a backend pinned
                with :func:`torchkit.force_backend` that cannot run on the parameters' device.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if torch.compiler.is_compiling():  # nothing kept from one call to the next
            grads = [[p.grad for p in group["params"]] for group in self.param_groups]
            steps = _Steps(self, grads, trace=True)
            flat = [grad for group_grads in grads for grad in group_grads if grad is not None]
            # In place: torch.compile drops attribute assignments on optimizers (torch 2.13).
            self.last_launches[:] = steps.run(self, flat)
            return loss
        grads = [list(map(_grad, group["params"])) for group in self.param_groups]
        steps = self._steps
        flat = None if steps is None else steps.gradients(self, grads)
        if flat is None:  # (re)build: every check first, then the state and the tables
            self._steps = None
            steps = self._steps = _Steps(self, grads, trace=False)
            flat = steps.gradients(self, grads)
            assert flat is not None, "new buckets must describe the optimizer"
        self.last_launches[:] = steps.run(self, flat)
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
