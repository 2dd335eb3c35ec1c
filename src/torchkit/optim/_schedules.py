"""The shapes of torchkit's LR schedules as small pure functions of the step.

Nothing here knows about optimizers: every function maps a step (and the schedule's
constants) to a number. :mod:`torchkit.optim.lr_scheduler` binds them to param groups;
tests, :func:`~torchkit.optim.lr_scheduler.preview` and the docs can call them directly.

Conventions: ``step`` is the scheduler's ``last_epoch`` (0 at construction); a *factor*
multiplies a base lr; a *fraction* ``s`` interpolates ``min_lr + (base_lr - min_lr) * s``
and goes from 1 at the start of a decay to 0 at its end.

Example:
    >>> from torchkit.optim import _schedules
    >>> _schedules.linear_warmup(5, warmup_steps=10, start_factor=0.0)
    0.5
    >>> _schedules.cosine_decay(50, span=100)
    0.5
"""

from __future__ import annotations

import math

__all__ = [
    "DECAYS",
    "ONE_CYCLE_ANNEALS",
    "WARMUPS",
    "anneal_cos",
    "anneal_linear",
    "constant_decay",
    "constant_warmup",
    "cosine_decay",
    "decay_fraction",
    "exponential_decay",
    "exponential_warmup",
    "inverse_sqrt_decay",
    "linear_decay",
    "linear_warmup",
    "noam_factor",
    "one_cycle_phase",
    "one_cycle_phase_ends",
    "polynomial_decay",
    "step_decay",
    "warmup_factor",
]

WARMUPS: tuple[str, ...] = ("linear", "exponential", "constant")
DECAYS: tuple[str, ...] = (
    "cosine",
    "linear",
    "polynomial",
    "exponential",
    "step",
    "inverse_sqrt",
    "constant",
)
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


def warmup_factor(kind: str, step: int, warmup_steps: int, start_factor: float) -> float:
    """The warmup factor of ``kind`` (one of :data:`WARMUPS`) at ``step < warmup_steps``."""
    if kind == "linear":
        return linear_warmup(step, warmup_steps, start_factor)
    if kind == "exponential":
        return exponential_warmup(step, warmup_steps, start_factor)
    if kind == "constant":
        return constant_warmup(step, warmup_steps, start_factor)
    raise ValueError(f"warmup must be one of {WARMUPS}, got {kind!r}")


# ----------------------------------------------------------------------------- decay
# A decay fraction is a function of ``elapsed = step - warmup_steps`` and
# ``span = total_steps - warmup_steps`` (so the progress is ``p = elapsed / span``), with
# value 1 at ``elapsed == 0`` and 0 at ``elapsed == span``; callers use 0 <= elapsed < span.
# Curves that never reach 0 on their own (exponential, step, inverse square root) are
# rescaled affinely, ``(r - r_end) / (1 - r_end)``, so that every decay ends at ``min_lr``.


def cosine_decay(elapsed: int, span: int) -> float:
    """Half a cosine, ``(1 + cos(pi * p)) / 2``."""
    return 0.5 * (1.0 + math.cos(math.pi * (elapsed / span)))


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


def constant_decay(elapsed: int, span: int) -> float:
    """1 until the end of the decay (the lr drops to ``min_lr`` at ``total_steps``)."""
    return 1.0


def decay_fraction(
    kind: str,
    elapsed: int,
    span: int,
    power: float = 1.0,
    gamma: float | None = None,
    step_size: int | None = None,
    timescale: int = 1,
) -> float:
    """The decay fraction of ``kind`` (one of :data:`DECAYS`) for ``0 <= elapsed < span``."""
    if kind == "cosine":
        return cosine_decay(elapsed, span)
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
    raise ValueError(f"decay must be one of {DECAYS}, got {kind!r}")


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
