"""Compile every Triton kernel of torchkit for GPU targets, without a GPU, and read its resources.

For each kernel variant (:class:`torchkit.kernels._aot.KernelSpec`), each of its autotune configs
and each target arch, :func:`compile_report` builds PTX with ``triton.compile`` for a
``GPUTarget("cuda", cc, 32)`` and runs the ``ptxas-blackwell`` binary shipped in the Triton wheel
(``-v``) to read registers and spills. Triton's compiled metadata gives the shared memory.

This runs only with Triton's compiler, i.e. with ``TRITON_INTERPRET`` unset: under the interpreter
``@triton.jit`` yields interpreted functions that cannot be compiled.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torchkit.backend import interpreter_enabled

# Modules of torchkit.kernels that define ``aot_specs()``.
KERNEL_MODULES: tuple[str, ...] = ("torchkit.kernels.adam", "torchkit.kernels.conv2d_relu")

ARCHS: dict[str, int] = {"sm_80": 80, "sm_90": 90}
# ptxas needs the arch-specific name for Hopper features that Triton emits for sm_90.
_PTXAS_ARCH = {80: "sm_80", 90: "sm_90a"}


@dataclass(frozen=True)
class KernelResources:
    """One row of the report: a kernel variant and config compiled for one arch."""

    kernel: str
    variant: str
    arch: str
    config: str
    num_warps: int
    num_stages: int
    registers: int
    spill_stores: int
    spill_loads: int
    shared_mem: int
    ptx_bytes: int


def ptxas_path() -> Path | None:
    """The ``ptxas-blackwell`` binary inside the Triton wheel, or ``None`` when absent."""
    try:
        import triton
    except ImportError:
        return None
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas-blackwell"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _ptxas_stats(ptx: str, cc: int, ptxas: Path) -> tuple[int, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        done = subprocess.run(
            [str(ptxas), "-v", f"--gpu-name={_PTXAS_ARCH[cc]}", str(source), "-o", os.devnull],
            capture_output=True,
            text=True,
            check=False,
        )
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed for sm_{cc}:\n{out}")
    registers = re.search(r"Used (\d+) registers", out)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)
    if registers is None or spills is None:
        raise RuntimeError(f"could not read registers/spills from ptxas output:\n{out}")
    return int(registers.group(1)), int(spills.group(1)), int(spills.group(2))


def _configs(spec: Any) -> list[Any]:
    configs = getattr(spec.kernel, "configs", None) or list(spec.configs)
    if not configs:
        raise ValueError(f"kernel variant {spec.name!r} has neither autotune configs nor configs")
    return configs


def _config_label(config: Any) -> str:
    params = ",".join(f"{k}={v}" for k, v in sorted(config.kwargs.items()))
    return f"{params},warps={config.num_warps},stages={config.num_stages}"


def compile_report(archs: list[str] | None = None) -> list[KernelResources]:
    """Compile every kernel variant for every config and arch; return one row each.

    Args:
        archs: target names from :data:`ARCHS` (default: all of them).

    Raises:
        ValueError: an unknown arch.
        RuntimeError: the Triton interpreter is enabled, Triton or ptxas is missing, or a kernel
            fails to compile.
    """
    archs = list(archs or ARCHS)
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        raise ValueError(f"unknown arch {unknown[0]!r}; expected one of {sorted(ARCHS)}")
    if interpreter_enabled():
        raise RuntimeError("kernels cannot be compiled while TRITON_INTERPRET=1 is set")
    ptxas = ptxas_path()
    if ptxas is None:
        raise RuntimeError("the ptxas-blackwell binary of the triton wheel was not found")

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    rows = []
    for module_name in KERNEL_MODULES:
        module = importlib.import_module(module_name)
        for spec in module.aot_specs():
            # An autotuner wraps the JITFunction in .fn; a JITFunction's own .fn is plain Python.
            autotuned = hasattr(spec.kernel, "configs")
            jit_fn = spec.kernel.fn if autotuned else spec.kernel
            for config in _configs(spec):
                constexprs = {**spec.constexprs, **config.kwargs}
                signature = {**spec.signature, **dict.fromkeys(constexprs, "constexpr")}
                source = ASTSource(fn=jit_fn, signature=signature, constexprs=constexprs)
                for arch in archs:
                    cc = ARCHS[arch]
                    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
                    try:
                        compiled = triton.compile(
                            source, target=GPUTarget("cuda", cc, 32), options=options
                        )
                    except Exception as error:
                        raise RuntimeError(
                            f"{jit_fn.__name__}[{spec.name}] failed to compile for {arch} "
                            f"with {_config_label(config)}: {error}"
                        ) from error
                    ptx = compiled.asm["ptx"]
                    registers, spill_stores, spill_loads = _ptxas_stats(ptx, cc, ptxas)
                    rows.append(
                        KernelResources(
                            kernel=jit_fn.__name__,
                            variant=spec.name,
                            arch=arch,
                            config=_config_label(config),
                            num_warps=config.num_warps,
                            num_stages=config.num_stages,
                            registers=registers,
                            spill_stores=spill_stores,
                            spill_loads=spill_loads,
                            shared_mem=int(compiled.metadata.shared),
                            ptx_bytes=len(ptx.encode()),
                        )
                    )
    return rows


def as_dicts(rows: list[KernelResources]) -> list[dict[str, Any]]:
    """Rows as plain dicts (the ``--json`` output)."""
    return [asdict(row) for row in rows]


def format_table(rows: list[KernelResources]) -> str:
    """Rows as a Markdown table."""
    header = (
        "| kernel | variant | arch | config | registers | spill stores (B) | spill loads (B) "
        "| shared mem (B) | PTX (B) |"
    )
    lines = [header, "|" + " --- |" * 9]
    for r in rows:
        lines.append(
            f"| `{r.kernel}` | {r.variant} | {r.arch} | `{r.config}` | {r.registers} "
            f"| {r.spill_stores} | {r.spill_loads} | {r.shared_mem} | {r.ptx_bytes} |"
        )
    return "\n".join(lines)
