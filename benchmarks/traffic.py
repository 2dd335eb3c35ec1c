"""Memory-traffic model of torchkit's kernels: bytes moved, fused against unfused.

Both kernels are memory-bound at the sizes they are used for, so the bytes they move bound their
time from below: ``bytes / bandwidth``. The unfused counts follow the op sequence stock torch runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# HBM bandwidth used to turn bytes into a lower bound on time (H100 SXM, public spec sheet).
H100_BYTES_PER_S = 3.35e12


@dataclass(frozen=True)
class Traffic:
    case: str
    fused_bytes: float
    unfused_bytes: float
    fused_launches: int
    unfused_launches: int

    @property
    def saving(self) -> float:
        return 1.0 - self.fused_bytes / self.unfused_bytes


def adam_bytes_per_param(dtype: torch.dtype, *, amsgrad: bool = False) -> tuple[float, float]:
    """Bytes per parameter of one Adam step: (fused kernel, torch's multi-tensor foreach path).

    Fused: read p, g, m, v and write p, m, v once (plus read and write v_max with amsgrad); the
    state has the parameter's dtype, as in torch. Foreach (torch 2.13 ``_multi_tensor_adam``, not
    capturable, no weight decay), tensor passes per op: ``lerp_(m, g)`` 3, ``mul_(v)`` 2,
    ``addcmul_(v, g, g)`` 3, ``sqrt(v)`` 2, ``div_`` and ``add_`` on that temporary 2 each,
    ``addcdiv_(p, m, denom)`` 4: 18 passes in 7 launches, against 7 passes in one fused launch
    (amsgrad adds ``maximum_`` over v_max, 3 passes, and 2 to the fused kernel).
    """
    size = torch.empty((), dtype=dtype).element_size()
    fused = 7 + (2 if amsgrad else 0)
    foreach = 18 + (3 if amsgrad else 0)
    return fused * size, foreach * size


def adam_traffic(num_params: int, num_groups: int, dtype: torch.dtype) -> Traffic:
    """One Adam step over ``num_params`` parameters in ``num_groups`` groups of one dtype.

    Launches: the fused kernel is one launch for all groups; torch's fused Adam launches once per
    group (and dtype); the foreach path launches its 7 ops per group (more when a group holds more
    tensors than one foreach launch takes).
    """
    fused, foreach = adam_bytes_per_param(dtype)
    return Traffic(
        case=f"Adam, {num_params:,} params, {num_groups} groups, {dtype}".replace("torch.", ""),
        fused_bytes=fused * num_params,
        unfused_bytes=foreach * num_params,
        fused_launches=1,
        unfused_launches=7 * num_groups,
    )


def conv_relu_traffic(
    batch: int,
    c_in: int,
    c_out: int,
    hw: int,
    kernel: int,
    stride: int,
    padding: int,
    dtype: torch.dtype,
) -> Traffic:
    """Conv2d + bias + ReLU on a square input, bytes moved through memory.

    Both read the input, weight and bias once (ideal reuse through caches); the fused kernel
    writes the output once, while conv then ReLU writes it, reads it back and writes it again.
    """
    size = torch.empty((), dtype=dtype).element_size()
    hw_out = (hw + 2 * padding - kernel) // stride + 1
    inputs = (batch * c_in * hw * hw + c_out * c_in * kernel * kernel + c_out) * size
    output = batch * c_out * hw_out * hw_out * size
    name = f"conv {c_in}->{c_out} k{kernel} s{stride} on {batch}x{c_in}x{hw}x{hw}"
    return Traffic(
        case=f"{name}, {dtype}".replace("torch.", ""),
        fused_bytes=inputs + output,
        unfused_bytes=inputs + 3 * output,
        fused_launches=1,
        unfused_launches=2,
    )


def default_cases() -> list[Traffic]:
    """The cases docs/performance.md reports."""
    return [
        adam_traffic(61_706, 2, torch.float32),  # the notes' LeNet, weights and biases as 2 groups
        adam_traffic(25_000_000, 2, torch.float32),
        adam_traffic(25_000_000, 2, torch.bfloat16),
        conv_relu_traffic(64, 1, 6, 32, 5, 1, 0, torch.float32),  # LeNet conv1
        conv_relu_traffic(64, 6, 16, 14, 5, 1, 0, torch.float32),  # LeNet conv2
        conv_relu_traffic(32, 64, 64, 56, 3, 1, 1, torch.float16),  # ResNet stage 1
        conv_relu_traffic(32, 256, 256, 14, 3, 1, 1, torch.bfloat16),  # ResNet stage 3
    ]


def format_table(cases: list[Traffic]) -> str:
    lines = [
        "| case | fused MB | unfused MB | traffic saved | launches fused / unfused "
        "| bandwidth bound fused / unfused (µs, H100) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in cases:
        lines.append(
            f"| {t.case} | {t.fused_bytes / 1e6:.3f} | {t.unfused_bytes / 1e6:.3f} "
            f"| {t.saving:.0%} | {t.fused_launches} / {t.unfused_launches} "
            f"| {t.fused_bytes / H100_BYTES_PER_S * 1e6:.2f} / "
            f"{t.unfused_bytes / H100_BYTES_PER_S * 1e6:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(default_cases()))
