"""Compile every Triton kernel of torchkit for GPU targets, without a GPU, and read its resources.

For each kernel variant (:class:`torchkit.kernels._aot.KernelSpec`), each of its autotune configs
and each target arch, :func:`compile_report` builds the kernel with ``triton.compile`` for a
``GPUTarget("cuda", cc, 32)`` and runs ``ptxas -v`` on its PTX to read registers and spills;
Triton's compiled metadata gives the shared memory. The compile is the one a launch on that GPU
would do: pointer arguments are 16-byte aligned (as the JIT assumes for torch's allocations) and
ints equal to 1 are constants where the spec says so. ``ptxas`` is the binary Triton itself runs
for that arch (for Triton 3.9: the CUDA 12.9 ``ptxas`` for sm_80, ``ptxas-blackwell`` from
sm_90 on, both shipped in the Triton wheel), with the register-allocation flag Triton passes,
so the counts are those of the cubin Triton would load.

Each row also reads the machine code (:func:`sass_stats`): the cubin is disassembled with the
``cuobjdump`` shipped in the Triton wheel and its *hottest loop* located (the innermost loop with
the most tensor-core MMAs, the longest one on a tie). The row reports that loop's instruction
count, MMAs and asynchronous copies (``LDGSTS``/TMA), the widest global load in it, and, from the
PTX, whether square roots and divisions are rounded to nearest (IEEE) or approximate.

This runs only with Triton's compiler, i.e. with ``TRITON_INTERPRET`` unset: under the interpreter
``@triton.jit`` yields interpreted functions that cannot be compiled.

Example:
    From a shell (``TRITON_INTERPRET`` unset or ``0``)::

        python -m torchkit kernels --arch sm_90 --json
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib
import json
import multiprocessing
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from torchkit.backend import interpreter_enabled

# Modules of torchkit.kernels that define ``aot_specs()``.
KERNEL_MODULES: tuple[str, ...] = (
    "torchkit.kernels.adam",
    "torchkit.kernels.conv2d_relu",
    "torchkit.kernels.gemm_reference",
)

ARCHS: dict[str, int] = {"sm_80": 80, "sm_90": 90}
# ptxas needs the arch-specific name for Hopper features that Triton emits for sm_90.
_PTXAS_ARCH = {80: "sm_80", 90: "sm_90a"}
# Both sm_80 and sm_90 have 64K 32-bit registers and at most 64 resident warps per SM; ptxas
# allocates registers per thread in units of 8.
_REGISTERS_PER_SM = 65536
_MAX_WARPS_PER_SM = 64
# Triton 3.9 passes this to ptxas for every cubin (it works around a ptxas 13 bug); it changes
# register allocation, so the report passes it too.
_PTXAS_FLAGS = ("--regAllocOptLevel=2",)


@dataclass(frozen=True)
class KernelResources:
    """One row of the report: a kernel variant and config compiled for one arch.

    ``dtype``, ``input_precision``, ``layout``, ``flat_k`` and ``channels`` describe the
    variant as its :class:`~torchkit.kernels._aot.KernelSpec` does (``None`` where a kernel has
    no such property): select rows by them, not by parsing ``variant``.
    """

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
    block: list[int] | None
    loop_instructions: int
    loop_mma: int
    loop_async_copies: int
    max_global_load_bits: int
    ieee_sqrt_div: bool | None
    yardstick_loop_instructions: int | None = None
    dtype: str | None = None
    input_precision: str | None = None
    layout: str | None = None
    flat_k: bool | None = None
    channels: int | None = None

    @property
    def resident_warps(self) -> int:
        """Warps an SM can hold at once as far as registers allow (whole CTAs, at most 64)."""
        per_thread = -(-self.registers // 8) * 8
        ctas = _REGISTERS_PER_SM // (per_thread * 32 * self.num_warps)
        return min(ctas * self.num_warps, _MAX_WARPS_PER_SM)


def ptxas_path() -> Path | None:
    """The ``ptxas-blackwell`` binary inside the Triton wheel, or ``None`` when absent."""
    try:
        import triton
    except ImportError:
        return None
    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas-blackwell"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _ptxas_for(cc: int) -> Path:
    """The ptxas binary Triton's NVIDIA backend runs when it builds a cubin for ``cc``."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError:  # a Triton without per-arch ptxas: the wheel's newest one
        path = ptxas_path()
        if path is None:
            raise RuntimeError(
                "the ptxas-blackwell binary of the triton wheel was not found"
            ) from None
        return path
    return Path(get_ptxas(cc).path)


def _ptxas_stats(ptx: str, cc: int) -> tuple[int, int, int]:
    """``(registers, spill store bytes, spill load bytes)`` of ``ptx`` compiled for ``cc``.

    The counts are kept in Triton's on-disk cache, keyed by the PTX, the ptxas binary and its
    flags, so a repeated report reruns neither Triton's compiler nor ptxas.
    """
    from triton.runtime.cache import get_cache_manager

    ptxas = _ptxas_for(cc)
    command = [str(ptxas), "-v", *_PTXAS_FLAGS, f"--gpu-name={_PTXAS_ARCH[cc]}"]
    binary = ptxas.stat()
    identity = [ptx, *command, str(binary.st_size), str(binary.st_mtime_ns)]
    cache = get_cache_manager(hashlib.sha256("\0".join(identity).encode()).hexdigest())
    cached = cache.get_file("ptxas-v.json")
    if cached is not None:
        registers, spill_stores, spill_loads = json.loads(Path(cached).read_text())
        return int(registers), int(spill_stores), int(spill_loads)

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "kernel.ptx"
        source.write_text(ptx)
        done = subprocess.run(
            [*command, str(source), "-o", os.devnull], capture_output=True, text=True, check=False
        )
    out = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"{ptxas.name} failed for sm_{cc}:\n{out}")
    registers = re.search(r"Used (\d+) registers", out)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", out)
    if registers is None or spills is None:
        raise RuntimeError(f"could not read registers/spills from {ptxas.name}'s output:\n{out}")
    stats = int(registers.group(1)), int(spills.group(1)), int(spills.group(2))
    cache.put(json.dumps(stats), "ptxas-v.json", binary=False)
    return stats


# SASS lines look like ``/*0460*/  @!P1 LDG.E.128 R4, desc[UR6][R2.64] ;``.
_SASS_LINE = re.compile(r"^\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P[0-9T]+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_MMA_OPCODES = frozenset({"HMMA", "HGMMA", "IMMA", "IGMMA", "DMMA", "QGMMA"})
_ASYNC_COPY_OPCODES = frozenset({"LDGSTS", "UTMALDG", "UBLKCP"})
# Approximate PTX square roots and divisions; IEEE ones are ``sqrt.rn``/``div.rn``.
_APPROX_PTX = re.compile(r"\b(?:sqrt|rsqrt|rcp)\.approx|\bdiv\.(?:approx|full)")
_EXACT_PTX = re.compile(r"\b(?:sqrt|div|rcp)\.rn")


@dataclass(frozen=True)
class SassStats:
    """What :func:`sass_stats` reads from a kernel's machine code.

    Args:
        loop_instructions: SASS instructions in the hottest loop (0 when there is no loop).
        loop_mma: tensor-core MMA instructions (``HGMMA``, ``HMMA``, ...) in that loop.
        loop_async_copies: asynchronous global-to-shared copies (``LDGSTS``, TMA) in that loop.
        max_global_load_bits: the widest global load (``LDG``, ``LDGSTS``; TMA counts as 128)
            in that loop, or in the whole kernel when it has no loop.
    """

    loop_instructions: int
    loop_mma: int
    loop_async_copies: int
    max_global_load_bits: int


def _load_bits(opcode: str) -> int:
    """Bits one lane moves with a global load opcode such as ``LDG.E.128`` (0: not a load)."""
    base, *modifiers = opcode.split(".")
    if base == "UTMALDG":
        return 128
    if base not in ("LDG", "LDGSTS"):
        return 0
    for modifier, bits in (("128", 128), ("64", 64), ("U16", 16), ("S16", 16), ("U8", 8)):
        if modifier in modifiers or (modifier == "U8" and "S8" in modifiers):
            return bits
    return 32


def sass_stats(sass: str) -> SassStats:
    """Locate the hottest loop of ``cuobjdump -sass`` output and count what it does.

    A loop is a branch to a lower address (a branch to itself, the trap at a kernel's end, is
    not). Of the innermost loops, the hottest is the one with the most MMAs, then the longest.
    """
    instructions = [
        (int(m.group(1), 16), m.group(2), m.group(3))
        for m in map(_SASS_LINE.match, sass.splitlines())
        if m is not None
    ]
    loops = []
    for address, opcode, operands in instructions:
        target = re.search(r"0x([0-9a-f]+)", operands) if opcode.startswith("BRA") else None
        if target is not None and int(target.group(1), 16) < address:
            loops.append((int(target.group(1), 16), address))
    innermost = [
        (lo, hi)
        for lo, hi in loops
        if not any((lo, hi) != (a, b) and lo <= a and b <= hi for a, b in loops)
    ]

    def body(loop: tuple[int, int]) -> list[str]:
        return [op for address, op, _ in instructions if loop[0] <= address <= loop[1]]

    def mmas(ops: list[str]) -> int:
        return sum(op.split(".")[0] in _MMA_OPCODES for op in ops)

    bodies = [body(loop) for loop in innermost]
    hottest = max(bodies, key=lambda ops: (mmas(ops), len(ops)), default=None)
    scope = hottest if hottest is not None else [op for _, op, _ in instructions]
    return SassStats(
        loop_instructions=len(hottest or ()),
        loop_mma=mmas(hottest or []),
        loop_async_copies=sum(op.split(".")[0] in _ASYNC_COPY_OPCODES for op in hottest or ()),
        max_global_load_bits=max(map(_load_bits, scope), default=0),
    )


def ieee_sqrt_div(ptx: str) -> bool | None:
    """Whether the PTX rounds every square root and division to nearest: ``True`` when all are
    IEEE (``sqrt.rn``, ``div.rn``), ``False`` when any is approximate, ``None`` when it has none."""
    if _APPROX_PTX.search(ptx):
        return False
    return True if _EXACT_PTX.search(ptx) else None


def _cuobjdump() -> Path:
    path = Path(_ptxas_for(90)).parent / "cuobjdump"
    if not path.is_file():
        raise RuntimeError(f"cuobjdump was not found next to {_ptxas_for(90)}")
    return path


def _sass_stats_cached(cubin: bytes) -> SassStats:
    """:func:`sass_stats` of a cubin, kept in Triton's cache keyed by the cubin's hash."""
    from triton.runtime.cache import get_cache_manager

    cache = get_cache_manager(hashlib.sha256(b"sass-stats-v1\0" + cubin).hexdigest())
    cached = cache.get_file("sass-stats.json")
    if cached is not None:
        return SassStats(**json.loads(Path(cached).read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        done = subprocess.run(
            [str(_cuobjdump()), "-sass", str(path)], capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(f"cuobjdump failed:\n{done.stdout}{done.stderr}")
    stats = sass_stats(done.stdout)
    cache.put(json.dumps(asdict(stats)), "sass-stats.json", binary=False)
    return stats


def _block(constexprs: dict[str, Any]) -> list[int] | None:
    """``[BLOCK_M, BLOCK_N, BLOCK_K]`` of a GEMM-like kernel, ``[BLOCK]`` of an elementwise one."""
    for names in (("BLOCK_M", "BLOCK_N", "BLOCK_K"), ("BLOCK",)):
        if all(name in constexprs for name in names):
            return [int(constexprs[name]) for name in names]
    return None


def jit_function(kernel: Any) -> Any:
    """The ``JITFunction`` of a spec's kernel: autotuners and heuristics wrap it in ``.fn``
    (under the interpreter, the Python function the interpreted kernel wraps)."""
    from triton.runtime.jit import JITFunction

    while not isinstance(kernel, JITFunction) and hasattr(kernel, "fn"):
        kernel = kernel.fn
    return kernel


def spec_configs(spec: Any) -> list[Any]:
    """The configs the report compiles a spec with: its own, else its kernel's autotune list."""
    configs = list(spec.configs) or getattr(spec.kernel, "configs", None)
    if not configs:
        raise ValueError(f"kernel variant {spec.name!r} has neither autotune configs nor configs")
    return configs


def config_label(config: Any) -> str:
    """A ``triton.Config`` as the report labels it: ``"BLOCK=512,warps=4,stages=3"``."""
    params = ",".join(f"{k}={v}" for k, v in sorted(config.kwargs.items()))
    prefix = f"{params}," if params else ""
    return f"{prefix}warps={config.num_warps},stages={config.num_stages}"


def _uncovered_kernels(module: Any, specs: list[Any]) -> list[str]:
    """Names of ``@triton.jit`` functions defined in ``module`` that no spec compiles, either
    as its kernel or as a function such a kernel calls (directly or through another)."""
    from triton.runtime.jit import JITFunction

    defined = {
        value.__name__: value
        for value in vars(module).values()
        if isinstance(value, JITFunction) and value.__module__ == module.__name__
    }
    compiled = {jit_function(spec.kernel).__name__ for spec in specs}
    pending = [name for name in compiled if name in defined]
    while pending:
        source = defined[pending.pop()].src
        for name in defined.keys() - compiled:
            if re.search(rf"\b{name}\s*\(", source):
                compiled.add(name)
                pending.append(name)
    return sorted(defined.keys() - compiled)


# One compile: (kernel module, spec index, config index, arch, whether the spec's yardstick).
_Job = tuple[str, int, int, str, bool]


def _jobs(archs: list[str]) -> list[_Job]:
    """Every compile, in report order: each variant, config and arch, then its yardstick
    with that config and arch unless an earlier variant already asked for the same one."""
    jobs: list[_Job] = []
    yardsticks = set()
    for module_name in KERNEL_MODULES:
        module = importlib.import_module(module_name)
        specs = module.aot_specs()
        uncovered = _uncovered_kernels(module, specs)
        if uncovered:
            raise RuntimeError(
                f"{module_name} defines @triton.jit kernels without a variant in aot_specs(): "
                f"{', '.join(uncovered)}"
            )
        for s, spec in enumerate(specs):
            for c, config in enumerate(spec_configs(spec)):
                for arch in archs:
                    jobs.append((module_name, s, c, arch, False))
                    key = _yardstick_key(spec, config, arch)
                    if key is not None and key not in yardsticks:
                        yardsticks.add(key)
                        jobs.append((module_name, s, c, arch, True))
    return jobs


def _yardstick_key(spec: Any, config: Any, arch: str) -> tuple[str, str, str] | None:
    if spec.yardstick is None:
        return None
    return spec.yardstick.name, config_label(config), arch


def _compile_one(
    module_name: str, spec_index: int, config_index: int, arch: str, yardstick: bool = False
) -> KernelResources:
    """Compile one (variant, config, arch), or the variant's yardstick with that config, and
    read its resources (runs in a worker process)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec = importlib.import_module(module_name).aot_specs()[spec_index]
    config = spec_configs(spec)[config_index]
    if yardstick:
        spec = spec.yardstick
    jit_fn = jit_function(spec.kernel)
    constexprs = {**spec.constexprs, **config.kwargs}
    signature = {**spec.signature, **dict.fromkeys(constexprs, "constexpr")}
    missing = [name for name in jit_fn.arg_names if name not in signature]
    if missing:
        raise RuntimeError(f"{jit_fn.__name__}[{spec.name}]: no type or value for {missing}")
    # torch's allocations are 16-byte aligned and the JIT specialises pointers on it, and
    # integers on being multiples of 16 where the spec says a launch passes such values.
    attrs = {
        (jit_fn.arg_names.index(name),): [["tt.divisibility", 16]]
        for name, kind in signature.items()
        if kind.startswith("*") or name in spec.divisible_by_16
    }
    source = ASTSource(fn=jit_fn, signature=signature, constexprs=constexprs, attrs=attrs)
    cc = ARCHS[arch]
    options = {"num_warps": config.num_warps, "num_stages": config.num_stages}
    try:
        compiled = triton.compile(source, target=GPUTarget("cuda", cc, 32), options=options)
    except Exception as error:
        raise RuntimeError(
            f"{jit_fn.__name__}[{spec.name}] failed to compile for {arch} "
            f"with {config_label(config)}: {error}"
        ) from error
    ptx = compiled.asm["ptx"]
    registers, spill_stores, spill_loads = _ptxas_stats(ptx, cc)
    sass = _sass_stats_cached(compiled.asm["cubin"])
    return KernelResources(
        kernel=jit_fn.__name__,
        variant=spec.name,
        arch=arch,
        config=config_label(config),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        registers=registers,
        spill_stores=spill_stores,
        spill_loads=spill_loads,
        shared_mem=int(compiled.metadata.shared),
        ptx_bytes=len(ptx.encode()),
        block=_block(constexprs),
        loop_instructions=sass.loop_instructions,
        loop_mma=sass.loop_mma,
        loop_async_copies=sass.loop_async_copies,
        max_global_load_bits=sass.max_global_load_bits,
        ieee_sqrt_div=ieee_sqrt_div(ptx),
        dtype=spec.dtype,
        input_precision=spec.input_precision,
        layout=spec.layout,
        flat_k=spec.flat_k,
        channels=spec.channels,
    )


def _with_yardsticks(work: list[_Job], rows: list[KernelResources]) -> list[KernelResources]:
    """``rows`` (one per job) with each variant row's ``yardstick_loop_instructions`` set."""
    measured = {
        (row.variant, row.config, row.arch): row.loop_instructions
        for job, row in zip(work, rows, strict=True)
        if job[4]
    }
    specs: dict[str, list[Any]] = {}
    out = []
    for (module_name, s, c, arch, yardstick), row in zip(work, rows, strict=True):
        if module_name not in specs:
            specs[module_name] = importlib.import_module(module_name).aot_specs()
        spec = specs[module_name][s]
        key = _yardstick_key(spec, spec_configs(spec)[c], arch)
        if not yardstick and key is not None:
            row = replace(row, yardstick_loop_instructions=measured[key])
        out.append(row)
    return out


def compile_report(archs: list[str] | None = None, *, jobs: int = 1) -> list[KernelResources]:
    """Compile every kernel variant for every config and arch; return one row each.

    Args:
        archs: target names from :data:`ARCHS` (default: all of them).
        jobs: worker processes compiling in parallel (``1``: in this process). Triton caches
            compiled kernels and ptxas' counts on disk, so a repeated report is quick.

    Raises:
        ValueError: an unknown arch, or ``jobs < 1``.
        RuntimeError: the Triton interpreter is enabled, Triton or ptxas is missing, a kernel
            module defines a ``@triton.jit`` kernel no ``aot_specs()`` variant covers, or a
            kernel fails to compile.

    Example:
        >>> rows = compile_report(["sm_90"])  # doctest: +SKIP
        >>> max(row.spill_stores for row in rows)  # doctest: +SKIP
        0
    """
    archs = list(archs or ARCHS)
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        raise ValueError(f"unknown arch {unknown[0]!r}; expected one of {sorted(ARCHS)}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    if interpreter_enabled():
        raise RuntimeError("kernels cannot be compiled while TRITON_INTERPRET=1 is set")
    if ptxas_path() is None:
        raise RuntimeError("the ptxas-blackwell binary of the triton wheel was not found")

    work = _jobs(archs)
    if jobs == 1 or len(work) == 1:
        return _with_yardsticks(work, [_compile_one(*job) for job in work])
    # "spawn": fresh interpreters, nothing inherited from a parent that may hold threads.
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(work))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        rows = list(pool.map(_compile_one, *zip(*work, strict=True)))
    return _with_yardsticks(work, rows)


def as_dicts(rows: list[KernelResources]) -> list[dict[str, Any]]:
    """Rows as plain dicts (the ``--json`` output)."""
    return [asdict(row) for row in rows]


def format_table(rows: list[KernelResources]) -> str:
    """Rows as a Markdown table, with the warps per SM their register use allows and the
    hottest loop's figures (:class:`SassStats`), next to its yardstick's where it has one."""
    header = (
        "| kernel | variant | arch | config | registers | spill stores (B) | spill loads (B) "
        "| shared mem (B) | resident warps/SM | PTX (B) | loop instructions | yardstick loop "
        "| loop MMAs | loop async copies | widest load (bits) | IEEE sqrt/div |"
    )
    lines = [header, "|" + " --- |" * 4 + " ---: |" * 11 + " --- |"]
    for r in rows:
        ieee = "-" if r.ieee_sqrt_div is None else ("yes" if r.ieee_sqrt_div else "no")
        yardstick = "-" if r.yardstick_loop_instructions is None else r.yardstick_loop_instructions
        lines.append(
            f"| `{r.kernel}` | {r.variant} | {r.arch} | `{r.config}` | {r.registers} "
            f"| {r.spill_stores} | {r.spill_loads} | {r.shared_mem} | {r.resident_warps} "
            f"| {r.ptx_bytes} | {r.loop_instructions} | {yardstick} | {r.loop_mma} "
            f"| {r.loop_async_copies} | {r.max_global_load_bits} | {ieee} |"
        )
    return "\n".join(lines)


def format_summary(rows: list[KernelResources]) -> str:
    """One Markdown row per kernel, variant and arch: the range over its configs, and the
    largest ratio of a config's hottest loop to its yardstick's (``-`` without yardstick)."""
    groups: dict[tuple[str, str, str], list[KernelResources]] = {}
    for r in rows:
        groups.setdefault((r.kernel, r.variant, r.arch), []).append(r)
    lines = [
        "| kernel | variant | arch | configs | registers | spilled bytes (max) "
        "| shared mem (B, max) | resident warps/SM | loop instructions | vs yardstick (max) "
        "| loop async copies | widest load (bits) |",
        "|" + " --- |" * 3 + " ---: |" * 9,
    ]
    for (kernel, variant, arch), group in groups.items():
        regs = sorted(r.registers for r in group)
        warps = sorted(r.resident_warps for r in group)
        spilled = max(r.spill_stores + r.spill_loads for r in group)
        shared = max(r.shared_mem for r in group)
        loop = sorted(r.loop_instructions for r in group)
        copies = sorted(r.loop_async_copies for r in group)
        loads = sorted(r.max_global_load_bits for r in group)
        ratios = [yardstick_ratio(r) for r in group]
        worst = "-" if None in ratios else f"{max(ratios):.2f}x"  # type: ignore[type-var]
        lines.append(
            f"| `{kernel}` | {variant} | {arch} | {len(group)} | {_span(regs)} | {spilled} "
            f"| {shared} | {_span(warps)} | {_span(loop)} | {worst} | {_span(copies)} "
            f"| {_span(loads)} |"
        )
    return "\n".join(lines)


def yardstick_ratio(row: KernelResources) -> float | None:
    """The row's hottest-loop instructions over its yardstick's, or ``None`` without one."""
    if not row.yardstick_loop_instructions:
        return None
    return row.loop_instructions / row.yardstick_loop_instructions


def format_versus_yardstick(rows: list[KernelResources]) -> str:
    """The rows that have a yardstick, as a Markdown table of their hottest loops: the
    kernel's and the yardstick's instructions, their ratio, and what the kernel's loop does.

    Example:
        >>> row = KernelResources("k", "fp16", "sm_90", "BLOCK_K=32,warps=4,stages=3", 4, 3,
        ...     120, 0, 0, 36992, 10, [128, 64, 32], 104, 4, 6, 128, None, 85)
        >>> print(format_versus_yardstick([row]).splitlines()[2])
        | fp16 | sm_90 | 128x64x32 | 4 | 3 | 104 | 85 | 1.22 | 4 | 6 | 128 | 120 | 0 |
    """
    lines = [
        "| variant | arch | tile | warps | stages | loop instructions | yardstick | ratio "
        "| MMAs | async copies | widest load (bits) | registers | spilled (B) |",
        "|" + " --- |" * 3 + " ---: |" * 10,
    ]
    for r in rows:
        ratio = yardstick_ratio(r)
        if ratio is None:
            continue
        tile = "x".join(map(str, r.block or []))
        lines.append(
            f"| {r.variant} | {r.arch} | {tile} | {r.num_warps} | {r.num_stages} "
            f"| {r.loop_instructions} | {r.yardstick_loop_instructions} | {ratio:.2f} "
            f"| {r.loop_mma} | {r.loop_async_copies} | {r.max_global_load_bits} "
            f"| {r.registers} | {r.spill_stores + r.spill_loads} |"
        )
    return "\n".join(lines)


def _span(values: list[int]) -> str:
    return str(values[0]) if values[0] == values[-1] else f"{values[0]}-{values[-1]}"
