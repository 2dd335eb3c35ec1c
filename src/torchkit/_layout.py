"""Memory-layout predicates shared by the optimizer and its kernel launcher.

Both of FusedAdam's backends walk a parameter, its gradient and its state as flat memory in the
parameter's layout, so every tensor of an update must share that layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["fitted", "is_dense", "same_strides"]


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


def same_strides(t: torch.Tensor, ref: torch.Tensor | tuple[int, ...]) -> bool:
    """Whether ``t`` has the strides of ``ref`` (a tensor of ``t``'s shape, or its strides)
    wherever a dimension has more than one element (the strides of the others do not move
    any element).

    Example:
        >>> w = torch.zeros(3, 1, 4)
        >>> odd = w.as_strided((3, 1, 4), (4, 99, 1))  # another stride only where size is 1
        >>> same_strides(odd, w), same_strides(w.permute(2, 1, 0).contiguous().permute(2, 1, 0), w)
        (True, False)
    """
    strides = ref if isinstance(ref, tuple) else ref.stride()
    return all(a == b for a, b, n in zip(t.stride(), strides, t.shape, strict=False) if n > 1)


def fitted(
    tensors: Sequence[torch.Tensor], strides: list[tuple[int, ...]], contiguous: bool
) -> tuple[Sequence[torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
    """``tensors`` (one per dense parameter, with its shape) in their parameters' layouts.

    The common case costs one pass over ``tensors``: ``is_contiguous`` when every parameter is
    contiguous, else one comparison of the stride lists. A tensor in another layout (a
    contiguous gradient of a channels_last parameter, an expanded one) is replaced by a copy
    with its parameter's strides.

    Args:
        tensors: the tensors to fit, e.g. gradients.
        strides: their parameters' strides (``[p.stride() for p in params]``), each dense.
        contiguous: whether every parameter is contiguous.

    Returns:
        The fitted tensors (``tensors`` itself when all fit) and the ``(tensor, copy)`` pairs.

    Raises:
        RuntimeError: a sparse tensor.

    Example:
        >>> p = torch.zeros(2, 3).t()
        >>> out, copies = fitted([torch.ones(3, 2)], [p.stride()], contiguous=False)
        >>> out[0].stride(), len(copies)
        ((1, 3), 1)
    """
    if contiguous:
        fits = all(map(torch.Tensor.is_contiguous, tensors))
    else:
        fits = list(map(torch.Tensor.stride, tensors)) == strides
    if fits:
        return tensors, []
    out = list(tensors)
    copies = []
    for i, (t, stride) in enumerate(zip(tensors, strides, strict=True)):
        if t.layout != torch.strided:
            raise RuntimeError(
                f"gradient {i} is {t.layout}: Adam does not support sparse gradients, "
                "please consider SparseAdam"
            )
        if not same_strides(t, stride):
            out[i] = torch.empty_strided(t.shape, stride, dtype=t.dtype, device=t.device)
            out[i].copy_(t)
            copies.append((t, out[i]))
    return out, copies
