"""``python -m torchkit.demo`` / ``torchkit-demo``: the command line of the demo."""

from __future__ import annotations

import argparse
import contextlib
import platform
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

import torchkit
from torchkit.backend import Backend, force_backend, select_backend, triton_available
from torchkit.backend import triton_version as _triton_version
from torchkit.demo.data import DemoData, load_digits_32, load_idx_dataset
from torchkit.demo.model import LeNet
from torchkit.demo.report import (
    PLOT_FILES,
    DemoInfo,
    format_table,
    write_metrics,
    write_plots,
    write_summary,
)
from torchkit.demo.train import RUNS, RunResult, train_run

__all__ = ["build_parser", "main"]

DEFAULT_EPOCHS = 30
DEFAULT_OUT = "demo-out"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The demo's argument parser.

    Example:
        >>> build_parser().parse_args(["--epochs", "1"]).epochs
        1
    """
    parser = argparse.ArgumentParser(
        prog="torchkit-demo",
        description=(
            "Train the reference notes' LeNet, with torchkit.nn.fuse_conv_relu applied, under "
            "five optimizer/lr-schedule pairs side by side; write lr_schedules.png, "
            "loss_curves.png, accuracy.png, summary.md and metrics.json to --out."
        ),
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=DEFAULT_EPOCHS,
        help=f"passes over the training data per run (default {DEFAULT_EPOCHS}; 1 is a smoke run)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(DEFAULT_OUT),
        help=f"folder for the plots and summary, created if missing (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=(
            "folder with MNIST/FashionMNIST IDX files as torchvision stores them (e.g. data, "
            "data/FashionMNIST or data/FashionMNIST/raw; .gz or not); default: scikit-learn's "
            "bundled 8x8 digits, upsampled to 32x32"
        ),
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device to train on, e.g. cpu or cuda:0 (default auto: cuda if available)",
    )
    parser.add_argument(
        "--seed", type=_int, default=0, help="seeds the initial weights and the batch order"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=64, help="images per step (default 64)"
    )
    parser.add_argument(
        "--max-batches",
        type=_positive_int,
        default=None,
        help="stop every epoch after this many batches (quick runs on large data)",
    )
    parser.add_argument(
        "--backend",
        choices=["auto", *(b.value for b in Backend)],
        default="auto",
        help=(
            "pin the backend of the fused ops (default auto: torchkit's policy, see "
            "'python -m torchkit info')"
        ),
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help=(
            "torch CPU threads while training (default 1: LeNet's layers are too small for "
            "intra-op threads to pay, and on a busy machine threads that wait for each other "
            "make every step several times slower)"
        ),
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    return parser


def _resolve_device(text: str, parser: argparse.ArgumentParser) -> torch.device:
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        parser.error(f"--device: not a torch device: {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {text}: torch sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {text}: the demo runs on cpu or cuda, got {device.type!r}")
    return device


@contextlib.contextmanager
def _backend_scope(choice: str) -> Iterator[None]:
    if choice == "auto":
        yield
    else:
        with force_backend(choice):
            yield


def _backend_note(device: torch.device, backend: Backend, forced: bool) -> str:
    if forced:
        return f"pinned to `{backend.value}` with --backend."
    if backend is Backend.TRITON:
        return f"compiled Triton kernels on `{device}` (torchkit's policy for CUDA tensors)."
    if backend is Backend.TRITON_INTERPRETER:
        return (
            "Triton kernels run by Triton's interpreter on CPU tensors, because "
            "TRITON_INTERPRET=1 is set: correct, but far slower than the stock path."
        )
    if not triton_available():
        return f"the stock torch path on `{device}` (triton is not installed)."
    return (
        f"the stock torch path on `{device}` (Triton kernels need CUDA tensors, or "
        "TRITON_INTERPRET=1 for Triton's interpreter on CPU tensors, which is not set; on a "
        "CUDA device the fused ops run compiled Triton kernels)."
    )


def _load(args: argparse.Namespace, parser: argparse.ArgumentParser) -> DemoData:
    if args.data is None:
        return load_digits_32()
    try:
        return load_idx_dataset(args.data)
    except (FileNotFoundError, ValueError) as err:
        parser.error(f"--data: {err}")


def _initial_model(seed: int, device: torch.device) -> tuple[torch.nn.Module, list[str]]:
    from torchkit.nn import fuse_conv_relu

    # Seed only the weights, without disturbing the caller's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LeNet()
    fused, names = fuse_conv_relu(model, return_fused=True)
    return fused.to(device), names


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; the entry point of ``python -m torchkit.demo`` and ``torchkit-demo``.

    Args:
        argv: the arguments without the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        0 on success. Bad arguments exit with status 2 through :mod:`argparse`.

    Example:
        >>> main(["--epochs", "1", "--out", "/tmp/demo-smoke"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    device = _resolve_device(args.device, parser)
    out: Path = args.out
    try:  # before training, so that a bad --out fails at once
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"--out {str(out)!r}: {err}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with _backend_scope(args.backend):
            try:
                policy = select_backend(device)
            except RuntimeError as err:
                parser.error(f"--backend {args.backend}: {err}")
            return _run(args, parser, argv, device, policy)
    finally:
        torch.set_num_threads(threads)


def _run(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    argv: list[str],
    device: torch.device,
    policy: Backend,
) -> int:
    data = _load(args, parser)
    train, test = data.train.to(device), data.test.to(device)
    model, fused_names = _initial_model(args.seed, device)
    note = _backend_note(device, policy, forced=args.backend != "auto")

    log = print
    if not args.no_progress:
        from tqdm import tqdm

        def log(line: str) -> None:
            tqdm.write(line, file=sys.stdout)

    print(
        f"torchkit demo: LeNet on {data.name} ({len(train)} train / {len(test)} test images), "
        f"{len(RUNS)} optimizer/schedule pairs; epochs={args.epochs}, "
        f"batch_size={args.batch_size}, seed={args.seed}"
    )
    print(
        f"fuse_conv_relu replaced {len(fused_names)} Conv2d+ReLU pairs by FusedConv2dReLU "
        f"({', '.join(fused_names)})"
    )
    print(f"device {device}, threads={args.threads}; fused ops: {note.replace('`', '')}")
    if policy is Backend.TRITON_INTERPRETER:
        print("warning: the Triton interpreter makes this run take far longer than usual")
    started = time.perf_counter()
    results: list[RunResult] = [
        train_run(
            spec,
            model,
            train,
            test,
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            max_batches=args.max_batches,
            progress=not args.no_progress,
            log=log,
        )
        for spec in RUNS
    ]
    elapsed = time.perf_counter() - started

    info = DemoInfo(
        command=shlex.join(["python", "-m", "torchkit.demo", *argv]),
        dataset=data.name,
        data_source=data.source,
        train_size=len(train),
        test_size=len(test),
        mean=data.mean,
        std=data.std,
        device=str(device),
        threads=args.threads,
        backend_note=note,
        fused_layers=fused_names,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        max_batches=args.max_batches,
        versions={
            "torchkit": torchkit.__version__,
            "torch": torch.__version__,
            "triton": _triton_version() or "not installed",
            "python": platform.python_version(),
        },
    )
    write_plots(results, args.out, f"LeNet on {data.name}")
    write_summary(results, info, args.out)
    write_metrics(results, info, args.out)

    print()
    print(format_table(results))
    print()
    written = ", ".join([*PLOT_FILES, "summary.md", "metrics.json"])
    print(f"trained {len(results)} runs in {elapsed:.1f} s; wrote {written} to {args.out}/")
    return 0
