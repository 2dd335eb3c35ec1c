"""``python -m torchkit``: environment report and tooling.

Sub-commands:

* ``info``: torch, triton and python versions, the devices torch sees, and the backend
  every fused op would use on each of them right now.
* ``kernels``: compiles every Triton kernel for sm_80/sm_90 without a GPU and reports
  registers, spills, shared memory and the hottest loop's machine code per kernel, config and
  arch, next to a plain Triton GEMM compiled with the same tile where a kernel names one as
  its yardstick (exit 1 if one fails). ``--format`` picks every row (``table``), one row per
  variant (``summary``), the rows against their yardstick (``vs-yardstick``) or ``json``.
* ``conformance [PYTEST ARGS]``: runs the spec pages installed with the package against the
  installed torch and torchkit (``python -m pytest --pyargs torchkit.conformance`` in a fresh
  interpreter, so that pytest imports torchkit itself; needs
  ``pip install "torchkit[conformance]"``); every pytest option works (``-n 2``,
  ``--conformance-summary=summary.md``, ``--conformance-impl=MODULE``, ...), and a printed
  test id re-runs that item (``docs/schedulers.md::warmup-cosine``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torchkit

if TYPE_CHECKING:
    import torch

# Every fused op of the package, as "module:attribute"; each one has a classmethod
# ``backend_for(device) -> Backend`` telling which path it takes for tensors on ``device``.
FUSED_OPS: tuple[str, ...] = (
    "torchkit.nn:FusedConv2dReLU",
    "torchkit.optim:FusedAdam",
    "torchkit.optim:FusedAdamW",
)


def _devices() -> list[torch.device]:
    import torch

    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return devices


def _load(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def collect_info() -> dict[str, Any]:
    """Everything ``python -m torchkit info`` prints, as a JSON-serialisable dict."""
    import torch

    from torchkit.backend import interpreter_enabled, select_backend, triton_version

    devices = _devices()
    backends: dict[str, dict[str, str]] = {}
    for spec in FUSED_OPS:
        op = _load(spec)
        backends[op.__name__] = {str(d): op.backend_for(d).value for d in devices}
    return {
        "torchkit": torchkit.__version__,
        "torch": torch.__version__,
        "triton": triton_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "devices": [str(d) for d in devices],
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "triton_interpret": interpreter_enabled(),
        "default_backend": {str(d): select_backend(d).value for d in devices},
        "fused_ops": backends,
    }


def _print_info(info: dict[str, Any]) -> None:
    print(f"torchkit  {info['torchkit']}")
    print(f"torch     {info['torch']}")
    print(f"triton    {info['triton'] or 'not installed'}")
    print(f"python    {info['python']} ({info['platform']})")
    cuda = ", ".join(info["cuda_devices"]) or "none"
    print(f"devices   {', '.join(info['devices'])} (CUDA: {cuda})")
    print(f"TRITON_INTERPRET={'1' if info['triton_interpret'] else '0'}")
    print()
    devices = info["devices"]
    rows = [("policy default", info["default_backend"])]
    rows += sorted(info["fused_ops"].items())
    width = max(len(name) for name, _ in rows)
    print(f"{'backend':<{width}}  " + "  ".join(f"{d:<18}" for d in devices))
    for name, per_device in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{per_device[d]:<18}" for d in devices))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["conformance"]:  # every argument after it is pytest's
        return _conformance(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m torchkit", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="versions, devices and the backend of every fused op")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    kernels = commands.add_parser("kernels", help="compile every kernel for GPU targets, no GPU")
    kernels.add_argument(
        "--arch", action="append", choices=["sm_80", "sm_90"], help="repeatable; default: both"
    )
    kernels.add_argument(
        "--format",
        choices=list(_KERNEL_FORMATS),
        default="table",
        help="every row, one per variant, the rows against their yardstick, or JSON",
    )
    kernels.add_argument("--json", action="store_true", help="the same as --format json")
    kernels.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="compiler processes in parallel (default: up to 4, one per CPU core)",
    )
    commands.add_parser(
        "conformance", help="run the spec pages on the installed torch and torchkit (pytest args)"
    )
    args = parser.parse_args(argv)

    if args.command == "info":
        report = collect_info()
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            _print_info(report)
        return 0
    if args.jobs < 1:
        parser.error(f"--jobs must be positive, got {args.jobs}")
    return _kernels(args.arch, "json" if args.json else args.format, args.jobs)


# --format of the kernels command -> the kernel_report function that formats the rows.
_KERNEL_FORMATS = {
    "table": "format_table",
    "summary": "format_summary",
    "vs-yardstick": "format_versus_yardstick",
    "json": None,
}


def _conformance(pytest_args: list[str]) -> int:
    if importlib.util.find_spec("pytest") is None:
        print(
            'error: the spec check needs pytest: pip install "torchkit[conformance]"',
            file=sys.stderr,
        )
        return 2
    # A fresh interpreter: pytest rewrites the asserts of its plugins' packages, torchkit's
    # included, which this one has imported already. -p loads the plugin by name when entry
    # points are not auto-loaded (a no-op otherwise).
    package = ["-p", "torchkit.conformance", "--pyargs", "torchkit.conformance"]
    with subprocess.Popen([sys.executable, "-m", "pytest", *package, *pytest_args]) as run:
        try:
            return run.wait()
        except KeyboardInterrupt:  # pytest got it too: let it report and stop
            return run.wait()


def _kernels(archs: list[str] | None, output: str, jobs: int) -> int:
    from torchkit.backend import interpreter_enabled

    if "triton" in sys.modules and interpreter_enabled():
        print("error: triton was imported with TRITON_INTERPRET=1; run without it", file=sys.stderr)
        return 1
    # Compiling needs Triton's real JIT: @triton.jit reads this when kernel modules import.
    os.environ["TRITON_INTERPRET"] = "0"
    # Triton 3.9 warns when this is unset; "1" is its current default (FMA contraction on).
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    from torchkit import kernel_report

    try:
        rows = kernel_report.compile_report(archs, jobs=jobs)
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    formatter = _KERNEL_FORMATS[output]
    if formatter is None:
        print(json.dumps(kernel_report.as_dicts(rows), indent=2))
    else:
        print(getattr(kernel_report, formatter)(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
