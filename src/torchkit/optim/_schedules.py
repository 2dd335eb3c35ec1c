"""The shapes of torchkit's LR schedules as small pure functions of the step.

Nothing here knows about optimizers: every function maps a step (and the schedule's
constants) to a number. :mod:`torchkit.optim.lr_scheduler` binds them to param groups;
tests, :func:`~torchkit.optim.lr_scheduler.preview` and the docs can call them directly.

Conventions: ``step`` is the scheduler's ``last_epoch`` (0 at construction); a *factor*
multiplies a base lr; a *fraction* ``s`` interpolates ``min_lr + (base_lr - min_lr) * s``
and goes from 1 at the start of a decay to 0 at its end.

Decays come in two kinds. A *finite* decay runs over ``span`` steps and ends at 0 (every
shape is defined, or rescaled, so that it does); an *endless* decay (``span=None``) is a curve
that never reaches 0 on its own (constant, exponential, step, inverse square root), used as is.

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
    >>> _schedules.decay_fraction("inverse_sqrt", 12, None, timescale=4)  # endless: sqrt(4/16)
    0.5
    >>> _schedules.timm_cycle(250, cycle_steps=100, cycle_mul=2.0)  # cycle 1: steps 100-299
    (1, 200.0, 100.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = [
    "DECAYS",
    "ENDLESS_DECAYS",
    "ONE_CYCLE_ANNEALS",
    "WARMUPS",
    "WARMUP_FUNCTIONS",
    "anneal_cos",
    "anneal_linear",
    "constant_decay",
    "constant_warmup",
    "cosine_decay",
    "cosine_warmup",
    "cycle_cosine",
    "decay_fraction",
    "exponential_decay",
    "exponential_warmup",
    "fitted_cycle",
    "inverse_sqrt_decay",
    "linear_decay",
    "linear_warmup",
    "noam_factor",
    "one_cycle_phase",
    "one_cycle_phase_ends",
    "one_minus_sqrt_decay",
    "one_minus_sqrt_warmup",
    "polynomial_decay",
    "step_decay",
    "timm_cycle",
    "warmup_factor",
]

WARMUPS: tuple[str, ...] = ("linear", "exponential", "constant", "cosine", "1-sqrt")
DECAYS: tuple[str, ...] = (
    "cosine",
    "linear",
    "polynomial",
    "exponential",
    "step",
    "inverse_sqrt",
    "constant",
    "1-sqrt",
)
# Decays that make sense without an end (``span=None``): curves that never reach 0.
ENDLESS_DECAYS: tuple[str, ...] = ("constant", "exponential", "step", "inverse_sqrt")
ONE_CYCLE_ANNEALS: tuple[str, ...] = ("cos", "linear")


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


# The warmup factor of each of WARMUPS, as a function (step, warmup_steps, start_factor).
WARMUP_FUNCTIONS: dict[str, Callable[[int, int, float], float]] = {
    "linear": linear_warmup,
    "exponential": exponential_warmup,
    "constant": constant_warmup,
    "cosine": cosine_warmup,
    "1-sqrt": one_minus_sqrt_warmup,
}


def warmup_factor(kind: str, step: int, warmup_steps: int, start_factor: float) -> float:
    """The warmup factor of ``kind`` (one of :data:`WARMUPS`) at ``step < warmup_steps``."""
    if kind not in WARMUP_FUNCTIONS:
        raise ValueError(f"warmup must be one of {WARMUPS}, got {kind!r}")
    return WARMUP_FUNCTIONS[kind](step, warmup_steps, start_factor)


# ----------------------------------------------------------------------------- decay
# A decay fraction is a function of ``elapsed = step - warmup_steps`` and
# ``span = total_steps - warmup_steps`` (so the progress is ``p = elapsed / span``), with
# value 1 at ``elapsed == 0`` and 0 at ``elapsed == span``; callers use 0 <= elapsed < span.
# Curves that never reach 0 on their own (exponential, step, inverse square root) are
# rescaled affinely, ``(r - r_end) / (1 - r_end)``, so that every decay ends at ``min_lr``.


def cosine_decay(elapsed: int, span: int, num_cycles: float = 0.5) -> float:
    """``(1 + cos(2 pi * num_cycles * p)) / 2``: half a cosine for the default ``num_cycles``.

    Other values give transformers' cosine "waves" (``num_cycles=1``: down and back up),
    which end at 0 only for odd multiples of 0.5. For 0.5, ``pi * 0.5 * 2.0`` is ``pi``
    exactly, so the floats are those of ``(1 + cos(pi * p)) / 2``.
    """
    return 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * (elapsed / span)))


def linear_decay(elapsed: int, span: int) -> float:
    """``1 - p``, computed as ``(span - elapsed) / span``."""
    return (span - elapsed) / span


def polynomial_decay(elapsed: int, span: int, power: float) -> float:
    """``(1 - p) ** power``."""
    return ((span - elapsed) / span) ** power


def _rescaled(value: float, end: float) -> float:
    return (value - end) / (1.0 - end)


def exponential_decay(elapsed: int, span: int, gamma: float) -> float:
    """``gamma ** elapsed`` rescaled to end at 0: ``(g**e - g**span) / (1 - g**span)``."""
    return _rescaled(gamma**elapsed, gamma**span)


def step_decay(elapsed: int, span: int, gamma: float, step_size: int) -> float:
    """``gamma ** (elapsed // step_size)`` rescaled to reach 0 after the last stair.

    There are ``ceil(span / step_size)`` stairs; the last one ends at ``span`` (it is
    shorter than ``step_size`` when ``step_size`` does not divide ``span``).
    """
    stairs = -(-span // step_size)
    return _rescaled(gamma ** (elapsed // step_size), gamma**stairs)


def inverse_sqrt_decay(elapsed: int, span: int, timescale: int) -> float:
    """``sqrt(timescale / (timescale + elapsed))`` rescaled to end at 0.

    With ``timescale = warmup_steps`` the unrescaled curve is the classic
    ``sqrt(warmup_steps / step)`` of fairseq and transformers' ``get_inverse_sqrt_schedule``.
    """
    end = math.sqrt(timescale / (timescale + span))
    return _rescaled(math.sqrt(timescale / (timescale + elapsed)), end)


def constant_decay(elapsed: int, span: int | None) -> float:
    """1 until the end of the decay (the lr drops to ``min_lr`` at ``total_steps``)."""
    return 1.0


def one_minus_sqrt_decay(elapsed: int, span: int) -> float:
    """``1 - sqrt(p)``: the "1-sqrt" cooldown of warmup-stable-decay schedules."""
    return 1.0 - math.sqrt(elapsed / span)


def _endless_fraction(
    kind: str, elapsed: int, gamma: float | None, step_size: int | None, timescale: int
) -> float:
    """The unrescaled curve of an endless decay (:data:`ENDLESS_DECAYS`)."""
    if kind == "inverse_sqrt":
        return math.sqrt(timescale / (timescale + elapsed))
    if kind == "exponential":
        if gamma is None:
            raise ValueError("decay='exponential' needs gamma")
        return gamma**elapsed
    if kind == "step":
        if gamma is None or step_size is None:
            raise ValueError("decay='step' needs gamma and step_size")
        return gamma ** (elapsed // step_size)
    if kind == "constant":
        return 1.0
    raise ValueError(f"an endless decay must be one of {ENDLESS_DECAYS}, got {kind!r}")


def decay_fraction(
    kind: str,
    elapsed: int,
    span: int | None,
    power: float = 1.0,
    gamma: float | None = None,
    step_size: int | None = None,
    timescale: int = 1,
    num_cycles: float = 0.5,
) -> float:
    """The decay fraction of ``kind`` (one of :data:`DECAYS`).

    For ``0 <= elapsed < span``, or for any ``elapsed >= 0`` when ``span`` is None (an
    endless decay: one of :data:`ENDLESS_DECAYS`, not rescaled).
    """
    if span is None:
        return _endless_fraction(kind, elapsed, gamma, step_size, timescale)
    if kind == "cosine":
        return cosine_decay(elapsed, span, num_cycles)
    if kind == "linear":
        return linear_decay(elapsed, span)
    if kind == "polynomial":
        return polynomial_decay(elapsed, span, power)
    if kind == "exponential":
        if gamma is None:
            raise ValueError("decay='exponential' needs gamma")
        return exponential_decay(elapsed, span, gamma)
    if kind == "step":
        if gamma is None or step_size is None:
            raise ValueError("decay='step' needs gamma and step_size")
        return step_decay(elapsed, span, gamma, step_size)
    if kind == "inverse_sqrt":
        return inverse_sqrt_decay(elapsed, span, timescale)
    if kind == "constant":
        return constant_decay(elapsed, span)
    if kind == "1-sqrt":
        return one_minus_sqrt_decay(elapsed, span)
    raise ValueError(f"decay must be one of {DECAYS}, got {kind!r}")


# ----------------------------------------------------------------------- cosine cycles
# A cycle is located as ``(index, fraction done)``; the lr in cycle ``i`` is a cosine from
# ``base * cycle_decay**i`` down towards ``min_lr`` (see :func:`cycle_cosine`).


def timm_cycle(t: float, cycle_steps: float, cycle_mul: float) -> tuple[int, float, float]:
    """``(cycle index, cycle length, step where the cycle starts)`` at ``t``, as timm has them.

    Cycle ``i`` lasts ``cycle_steps * cycle_mul**i``. With ``cycle_mul == 1`` the index is
    ``t // cycle_steps``; otherwise it is read from the geometric sum with a logarithm, in
    the same operations as timm's ``CosineLRScheduler`` so that the cycle boundaries (where
    the floor of a float decides the cycle) land on the same steps. ``t - start`` is then
    timm's position in the cycle, float for float.
    """
    if cycle_mul != 1:
        i = math.floor(math.log(1 - t / cycle_steps * (1 - cycle_mul), cycle_mul))
        return i, cycle_mul**i * cycle_steps, (1 - cycle_mul**i) / (1 - cycle_mul) * cycle_steps
    i = int(t // cycle_steps)
    return i, float(cycle_steps), cycle_steps * i


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


# ------------------------------------------------------------------------------ noam


def noam_factor(step: int, d_model: int, warmup_steps: int, factor: float) -> float:
    """``factor * d_model**-0.5 * min(s**-0.5, s * warmup_steps**-1.5)``, ``s = max(step, 1)``.

    The rate of "Attention Is All You Need" (section 5.3) as written in the Annotated
    Transformer, where it multiplies a base lr of 1.
    """
    s = max(step, 1)
    return factor * (d_model**-0.5 * min(s**-0.5, s * warmup_steps**-1.5))
