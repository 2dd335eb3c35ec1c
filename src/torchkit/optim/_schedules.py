"""The shapes of torchkit's LR schedules as small pure functions of the step.

Nothing here knows about optimizers: every function maps a step (and the schedule's
constants) to a number. :mod:`torchkit.optim.lr_scheduler` binds them to param groups and
checks their arguments; the functions trust theirs. Tests, the docs and
:func:`~torchkit.optim.lr_scheduler.preview` can call them directly.

Conventions: ``step`` is the scheduler's ``last_epoch`` (0 at construction); a *factor*
multiplies a base lr; a *fraction* ``s`` interpolates ``min_lr + (base_lr - min_lr) * s``
and goes from 1 at the start of a decay to 0 at its end.

Decays come in two kinds. A *finite* decay (:data:`DECAY_FUNCTIONS`) runs over ``span``
steps and ends at 0 (every shape is defined, or rescaled, so that it does); an *endless*
decay (:data:`ENDLESS_FUNCTIONS`) is a curve that never reaches 0 on its own (constant,
exponential, step, inverse square root), used as is. Their options are keyword arguments,
named in :data:`DECAY_OPTIONS`.

The cosine cycles of :class:`~torchkit.optim.lr_scheduler.CosineRestartsLR` are here too:
:func:`timm_cycle` locates a step in timm's cycles (fixed length, or growing by
``cycle_mul``) with timm's own arithmetic, :func:`fitted_cycle` in ``num_cycles`` equal cycles
fitted to a span with transformers' arithmetic, so that each reproduces its library's floats.

Example:
    >>> from torchkit.optim import _schedules
    >>> _schedules.linear_warmup(5, warmup_steps=10, start_factor=0.0)
    0.5
    >>> _schedules.cosine_decay(50, span=100)
    0.5
    >>> _schedules.ENDLESS_FUNCTIONS["inverse_sqrt"](12, timescale=4)  # sqrt(4/16)
    0.5
    >>> _schedules.timm_cycle(250, cycle_steps=100, cycle_mul=2.0)  # cycle 1: steps 100-299
    (1, 200.0, 100.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "ANNEALS",
    "DECAYS",
    "DECAY_FUNCTIONS",
    "DECAY_OPTIONS",
    "ENDLESS_DECAYS",
    "ENDLESS_FUNCTIONS",
    "ONE_CYCLE_ANNEALS",
    "WARMUPS",
    "WARMUP_FUNCTIONS",
    "anneal_cos",
    "anneal_linear",
    "bind_decay",
    "constant_curve",
    "constant_decay",
    "constant_warmup",
    "cosine_decay",
    "cosine_warmup",
    "cycle_cosine",
    "exponential_curve",
    "exponential_decay",
    "exponential_warmup",
    "fitted_cycle",
    "inverse_sqrt_curve",
    "inverse_sqrt_decay",
    "linear_decay",
    "linear_warmup",
    "noam_factor",
    "one_cycle_phase",
    "one_cycle_phase_ends",
    "one_minus_sqrt_decay",
    "one_minus_sqrt_warmup",
    "polynomial_decay",
    "step_curve",
    "step_decay",
    "timm_cycle",
]


# ---------------------------------------------------------------------------- warmup
# A warmup factor goes from ``start_factor`` at step 0 towards 1 at ``warmup_steps``;
# callers use it for 0 <= step < warmup_steps only.


def linear_warmup(step: int, warmup_steps: int, start_factor: float) -> float:
    """Linear ramp ``start_factor + (1 - start_factor) * step / warmup_steps``."""
    return start_factor + (1.0 - start_factor) * step / warmup_steps


def exponential_warmup(step: int, warmup_steps: int, start_factor: float) -> float:
    """Geometric ramp ``start_factor ** (1 - step / warmup_steps)`` (needs ``start_factor > 0``)."""
    return start_factor ** (1.0 - step / warmup_steps)


def constant_warmup(step: int, warmup_steps: int, start_factor: float) -> float:
    """Hold ``start_factor`` for the whole warmup (torch's ``ConstantLR``)."""
    return start_factor


def cosine_warmup(step: int, warmup_steps: int, start_factor: float) -> float:
    """Half a cosine up: ``sf + (1 - sf) * (1 - cos(pi * step / warmup_steps)) / 2``."""
    return start_factor + (1.0 - start_factor) * (
        0.5 * (1.0 - math.cos(math.pi * (step / warmup_steps)))
    )


def one_minus_sqrt_warmup(step: int, warmup_steps: int, start_factor: float) -> float:
    """``sf + (1 - sf) * (1 - sqrt(1 - step / warmup_steps))``: fast at first, then flat."""
    return start_factor + (1.0 - start_factor) * (1.0 - math.sqrt(1.0 - step / warmup_steps))


# Each warmup by name, as a function (step, warmup_steps, start_factor).
WARMUP_FUNCTIONS: dict[str, Callable[[int, int, float], float]] = {
    "linear": linear_warmup,
    "exponential": exponential_warmup,
    "constant": constant_warmup,
    "cosine": cosine_warmup,
    "1-sqrt": one_minus_sqrt_warmup,
}
WARMUPS: tuple[str, ...] = tuple(WARMUP_FUNCTIONS)


# ----------------------------------------------------------------------------- decay
# A finite decay fraction is a function of ``elapsed = step - decay start`` and ``span``, the
# decay's length (so the progress is ``p = elapsed / span``), with value 1 at ``elapsed == 0``
# and 0 at ``elapsed == span``; callers use 0 <= elapsed < span. The curves that never reach
# 0 on their own (exponential, step, inverse square root) are rescaled affinely,
# ``(r - r_end) / (1 - r_end)``, so that every finite decay ends at ``min_lr``.


def cosine_decay(elapsed: int, span: int, *, num_cycles: float = 0.5) -> float:
    """``(1 + cos(2 pi * num_cycles * p)) / 2``: half a cosine for the default ``num_cycles``.

    Other values give transformers' cosine "waves" (``num_cycles=1``: down and back up),
    which end at 0 only for odd multiples of 0.5. For 0.5, ``pi * 0.5 * 2.0`` is ``pi``
    exactly, so the floats are those of ``(1 + cos(pi * p)) / 2``.
    """
    return 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * (elapsed / span)))


def linear_decay(elapsed: int, span: int) -> float:
    """``1 - p``, computed as ``(span - elapsed) / span``."""
    return (span - elapsed) / span


def polynomial_decay(elapsed: int, span: int, *, power: float) -> float:
    """``(1 - p) ** power``."""
    return ((span - elapsed) / span) ** power


def _rescaled(value: float, end: float) -> float:
    return (value - end) / (1.0 - end)


def exponential_curve(elapsed: int, *, gamma: float) -> float:
    """``gamma ** elapsed``: torch's ``ExponentialLR`` (endless)."""
    return gamma**elapsed


def step_curve(elapsed: int, *, gamma: float, step_size: int) -> float:
    """``gamma ** (elapsed // step_size)``: torch's ``StepLR`` (endless)."""
    return gamma ** (elapsed // step_size)


def inverse_sqrt_curve(elapsed: int, *, timescale: int) -> float:
    """``sqrt(timescale / (timescale + elapsed))`` (endless).

    With ``timescale = warmup_steps`` it is the classic ``sqrt(warmup_steps / step)`` of
    fairseq and transformers' ``get_inverse_sqrt_schedule``.
    """
    return math.sqrt(timescale / (timescale + elapsed))


def constant_curve(elapsed: int) -> float:
    """1 for ever (endless)."""
    return 1.0


def exponential_decay(elapsed: int, span: int, *, gamma: float) -> float:
    """``gamma ** elapsed`` rescaled to end at 0: ``(g**e - g**span) / (1 - g**span)``."""
    return _rescaled(exponential_curve(elapsed, gamma=gamma), gamma**span)


def step_decay(elapsed: int, span: int, *, gamma: float, step_size: int) -> float:
    """``gamma ** (elapsed // step_size)`` rescaled to reach 0 after the last stair.

    There are ``ceil(span / step_size)`` stairs; the last one ends at ``span`` (it is
    shorter than ``step_size`` when ``step_size`` does not divide ``span``).
    """
    stairs = -(-span // step_size)
    return _rescaled(step_curve(elapsed, gamma=gamma, step_size=step_size), gamma**stairs)


def inverse_sqrt_decay(elapsed: int, span: int, *, timescale: int) -> float:
    """:func:`inverse_sqrt_curve` rescaled to end at 0."""
    end = inverse_sqrt_curve(span, timescale=timescale)
    return _rescaled(inverse_sqrt_curve(elapsed, timescale=timescale), end)


def constant_decay(elapsed: int, span: int) -> float:
    """1 until the end of the decay (the lr drops to ``min_lr`` at its end)."""
    return 1.0


def one_minus_sqrt_decay(elapsed: int, span: int) -> float:
    """``1 - sqrt(p)``: the "1-sqrt" cooldown of warmup-stable-decay schedules."""
    return 1.0 - math.sqrt(elapsed / span)


# Each finite decay by name, as a function (elapsed, span, **options).
DECAY_FUNCTIONS: dict[str, Callable[..., float]] = {
    "cosine": cosine_decay,
    "linear": linear_decay,
    "polynomial": polynomial_decay,
    "exponential": exponential_decay,
    "step": step_decay,
    "inverse_sqrt": inverse_sqrt_decay,
    "constant": constant_decay,
    "1-sqrt": one_minus_sqrt_decay,
}
DECAYS: tuple[str, ...] = tuple(DECAY_FUNCTIONS)
# The decays that make sense without an end, as functions (elapsed, **options): the
# unrescaled curves, which never reach 0.
ENDLESS_FUNCTIONS: dict[str, Callable[..., float]] = {
    "constant": constant_curve,
    "exponential": exponential_curve,
    "step": step_curve,
    "inverse_sqrt": inverse_sqrt_curve,
}
ENDLESS_DECAYS: tuple[str, ...] = tuple(ENDLESS_FUNCTIONS)
# The keyword options of each decay's functions (the others take none).
DECAY_OPTIONS: dict[str, tuple[str, ...]] = {
    "cosine": ("num_cycles",),
    "polynomial": ("power",),
    "exponential": ("gamma",),
    "step": ("gamma", "step_size"),
    "inverse_sqrt": ("timescale",),
}


def bind_decay(
    kind: str, span: int | None, options: dict[str, Any]
) -> tuple[Callable[..., float], dict[str, Any]]:
    """``(function, keywords)`` of decay ``kind``: ``function(elapsed, **keywords)`` is its
    fraction ``elapsed`` steps into the decay.

    ``span`` None: the endless curve (``kind`` in :data:`ENDLESS_DECAYS`); else the finite
    decay over ``span`` steps. ``options`` holds the keywords of :data:`DECAY_OPTIONS` (any
    others are left out).

    Example:
        >>> function, keywords = bind_decay("step", 10, {"gamma": 0.5, "step_size": 5, "power": 2})
        >>> keywords
        {'span': 10, 'gamma': 0.5, 'step_size': 5}
        >>> function(5, **keywords)
        0.3333333333333333
    """
    bound = {name: options[name] for name in DECAY_OPTIONS.get(kind, ())}
    if span is None:
        return ENDLESS_FUNCTIONS[kind], bound
    return DECAY_FUNCTIONS[kind], {"span": span, **bound}


# ----------------------------------------------------------------------- cosine cycles
# A cycle is located as ``(index, fraction done)``; the lr in cycle ``i`` is a cosine from
# ``base * cycle_decay**i`` down towards ``min_lr`` (see :func:`cycle_cosine`).


def _timm_cycle_start(i: int, cycle_steps: float, cycle_mul: float) -> float:
    """Where cycle ``i`` starts, as timm computes it (``cycle_mul != 1``)."""
    return (1 - cycle_mul**i) / (1 - cycle_mul) * cycle_steps


def timm_cycle(t: float, cycle_steps: float, cycle_mul: float) -> tuple[int, float, float]:
    """``(cycle index, cycle length, step where the cycle starts)`` at ``t``, as timm has them.

    Cycle ``i`` lasts ``cycle_steps * cycle_mul**i``. With ``cycle_mul == 1`` the index is
    ``t // cycle_steps``; otherwise timm reads it from the geometric sum with a floored
    logarithm, and so does this function, in the same operations, so that ``t - start`` is
    timm's position in the cycle float for float. Where the logarithm rounds to the
    neighbouring cycle (``log(243, 3)`` is ``4.999999999999999``: timm puts step 121 of
    ``t_initial=1, cycle_mul=3`` at the end of cycle 4, when cycle 5 starts there), the index is
    corrected to the cycle whose start is the last one at or before ``t``, as torch's
    ``CosineAnnealingWarmRestarts`` counts.

    Example:
        >>> timm_cycle(121, cycle_steps=1.0, cycle_mul=3.0)  # timm: (4, 81.0, 40.0)
        (5, 243.0, 121.0)
    """
    if cycle_mul == 1:
        i = int(t // cycle_steps)
        return i, float(cycle_steps), cycle_steps * i
    i = math.floor(math.log(1 - t / cycle_steps * (1 - cycle_mul), cycle_mul))
    if _timm_cycle_start(i + 1, cycle_steps, cycle_mul) <= t:
        i += 1
    elif _timm_cycle_start(i, cycle_steps, cycle_mul) > t:
        i -= 1
    return i, cycle_mul**i * cycle_steps, _timm_cycle_start(i, cycle_steps, cycle_mul)


def fitted_cycle(elapsed: int, span: int, num_cycles: float) -> tuple[int, float]:
    """``(cycle index, fraction of the cycle done)`` for ``num_cycles`` equal cycles in ``span``.

    The arithmetic of transformers' ``get_cosine_with_hard_restarts_schedule_with_warmup``:
    the fraction is ``(num_cycles * elapsed / span) % 1``. Callers handle ``elapsed >= span``
    (past the last cycle) themselves.
    """
    position = float(num_cycles) * (float(elapsed) / float(span))
    return math.floor(position), position % 1.0


def cycle_cosine(done: float, length: float, k_decay: float) -> float:
    """``1 + cos(pi * done**k / length**k)``, twice the cosine fraction of a cycle.

    ``lr = min_lr + 0.5 * (peak - min_lr) * cycle_cosine(...)`` is timm's expression, in its
    order of operations. ``k_decay`` (the k-decay of Zhang & Li, 2020) above 1 keeps the lr
    high for longer in each cycle, below 1 drops it sooner.
    """
    if k_decay == 1.0:  # x ** 1.0 is x exactly: the same floats, without two powers
        return 1 + math.cos(math.pi * done / length)
    return 1 + math.cos(math.pi * done**k_decay / length**k_decay)


# -------------------------------------------------------------------------- one cycle
# The arithmetic below is torch.optim.lr_scheduler.OneCycleLR's, operation for operation,
# so that torchkit's OneCycleLR reproduces torch's floats exactly.


def one_cycle_phase_ends(total_steps: int, pct_start: float, three_phase: bool) -> list[float]:
    """The last step of each phase (as torch defines them; they need not be integers)."""
    if three_phase:
        return [
            float(pct_start * total_steps) - 1,
            float(2 * pct_start * total_steps) - 2,
            float(total_steps - 1),
        ]
    return [float(pct_start * total_steps) - 1, float(total_steps - 1)]


def one_cycle_phase(step: int, phase_ends: list[float]) -> tuple[int, float]:
    """``(phase index, fraction of that phase done)`` at ``step``.

    A phase runs from the previous phase's end (0 for the first) to its own end; the last
    phase extrapolates beyond its end. A phase of zero length counts as done (fraction 1),
    where torch divides by zero.
    """
    start = 0.0
    last = len(phase_ends) - 1
    index = 0
    while index < last and step > phase_ends[index]:
        start = phase_ends[index]
        index += 1
    end = phase_ends[index]
    if end == start:
        return index, 1.0
    return index, (step - start) / (end - start)


def anneal_cos(start: float, end: float, pct: float) -> float:
    """Cosine from ``start`` (pct 0) to ``end`` (pct 1)."""
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def anneal_linear(start: float, end: float, pct: float) -> float:
    """Straight line from ``start`` (pct 0) to ``end`` (pct 1)."""
    return (end - start) * pct + start


# OneCycleLR's anneal strategies by name, as functions (start, end, pct).
ANNEALS: dict[str, Callable[[float, float, float], float]] = {
    "cos": anneal_cos,
    "linear": anneal_linear,
}
ONE_CYCLE_ANNEALS: tuple[str, ...] = tuple(ANNEALS)


# ------------------------------------------------------------------------------ noam


def noam_factor(step: int, d_model: int, warmup_steps: int, factor: float) -> float:
    """``factor * d_model**-0.5 * min(s**-0.5, s * warmup_steps**-1.5)``, ``s = max(step, 1)``.

    The rate of "Attention Is All You Need" (section 5.3) as written in the Annotated
    Transformer, where it multiplies a base lr of 1.
    """
    s = max(step, 1)
    return factor * (d_model**-0.5 * min(s**-0.5, s * warmup_steps**-1.5))
