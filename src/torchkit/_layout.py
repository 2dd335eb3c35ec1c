"""Memory-layout predicates shared by the optimizer and its kernel launcher."""

from __future__ import annotations

import torch

__all__ = ["is_dense"]


def is_dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill ``numel`` consecutive slots in some dimension order.

    Dense tensors (contiguous, channels_last, any permutation of a contiguous tensor) can be
    updated as one flat array; views with gaps or overlaps (``w[:, ::2]``, ``expand``) cannot.

    Example:
        >>> w = torch.zeros(4, 6)
        >>> is_dense(w.t()), is_dense(w[:, ::2])
        (True, False)
    """
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((s, n) for n, s in zip(t.shape, t.stride(), strict=True) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True
