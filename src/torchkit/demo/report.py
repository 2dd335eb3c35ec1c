"""The demo's outputs: three plots, ``summary.md``, ``metrics.json`` and the stdout table.

Matplotlib (the ``demo`` or ``plot`` extra) is imported when a plot is drawn; figures are
``matplotlib.figure.Figure`` objects saved with the Agg renderer, without pyplot, so neither a
display nor the caller's matplotlib backend is involved.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torchkit.demo.train import RunResult

__all__ = [
    "PLOT_FILES",
    "DemoInfo",
    "format_table",
    "write_metrics",
    "write_plots",
    "write_summary",
]

PLOT_FILES = ("lr_schedules.png", "loss_curves.png", "accuracy.png")


@dataclass(frozen=True)
class DemoInfo:
    """What a demo run was: everything the summary states besides the results.

    Attributes:
        command: the command line, as it would be typed.
        dataset: dataset name.
        data_source: one sentence on where the data came from and how it was prepared.
        train_size, test_size: images per split.
        mean, std: the training statistics the images were standardised with.
        device: the device trained on.
        threads: torch's CPU thread count during training.
        backend_note: which path the fused ops took and why, in one sentence.
        fused_layers: the names of the convolutions ``fuse_conv_relu`` fused with their ReLU.
        epochs, batch_size, seed: the training settings.
        max_batches: the per-epoch batch cap, or ``None``.
        versions: package -> version (torch, torchkit, triton, python).
    """

    command: str
    dataset: str
    data_source: str
    train_size: int
    test_size: int
    mean: float
    std: float
    device: str
    threads: int
    backend_note: str
    fused_layers: list[str]
    epochs: int
    batch_size: int
    seed: int
    max_batches: int | None
    versions: dict[str, str]


def _figure_class() -> Any:
    # matplotlib.figure.Figure renders with Agg on savefig and touches no pyplot state, so a
    # caller's interactive backend (a notebook, say) is left as it is.
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "the demo's plots need matplotlib: pip install 'torchkit[demo]'"
        ) from err
    return Figure


def _style(index: int) -> dict[str, Any]:
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
    return {"color": colors[index % len(colors)], "linewidth": 1.8}


def _epochs(result: RunResult) -> list[int]:
    return list(range(1, len(result.train_loss) + 1))


def _finish(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def _plot_lrs(results: Sequence[RunResult], path: Path, title: str, figure: Any) -> Path:
    families = list(dict.fromkeys(r.family for r in results))
    fig = figure(figsize=(6.0 * len(families), 4.2), layout="constrained")
    axes = fig.subplots(1, len(families), squeeze=False)
    for ax, family in zip(axes[0], families, strict=True):
        for index, result in enumerate(results):
            if result.family != family:
                continue
            steps_per_epoch = len(result.lrs) / max(1, len(result.train_loss))
            x = [step / steps_per_epoch for step in range(len(result.lrs))]
            ax.plot(x, result.lrs, label=result.label, drawstyle="steps-post", **_style(index))
        ax.set_title(f"{family} runs")
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate (param group 0)")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.set_ylim(bottom=0.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{title}: the lr each optimizer step used")
    return _finish(fig, path)


def _plot_per_epoch(
    results: Sequence[RunResult],
    path: Path,
    title: str,
    figure: Any,
    *,
    train: str,
    test: str,
    ylabel: str,
    log: bool,
    percent: bool,
) -> Path:
    from matplotlib.ticker import MaxNLocator

    fig = figure(figsize=(12.0, 4.6), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    few = max(len(r.train_loss) for r in results) <= 12
    for ax, attribute, name in ((axes[0], train, "training"), (axes[1], test, "test")):
        for index, result in enumerate(results):
            values = getattr(result, attribute)
            if percent:
                values = [100.0 * v for v in values]
            ax.plot(
                _epochs(result),
                values,
                label=result.label,
                marker="o" if few else None,
                markersize=3,
                **_style(index),
            )
        ax.set_title(f"{name} split")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel(ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(results), fontsize=8)
    fig.suptitle(title)
    return _finish(fig, path)


def write_plots(results: Sequence[RunResult], out: Path, title: str) -> list[Path]:
    """Draw ``lr_schedules.png``, ``loss_curves.png`` and ``accuracy.png`` into ``out``.

    Args:
        results: the runs, in the order their colours are assigned.
        out: an existing folder.
        title: the plots' title prefix, e.g. ``"LeNet on sklearn digits"``.

    Raises:
        ValueError: ``results`` is empty.

    Example:
        >>> write_plots(results, Path("demo-out"), "LeNet on sklearn digits")  # doctest: +SKIP
        [PosixPath('demo-out/lr_schedules.png'), ...]
    """
    if not results:
        raise ValueError("results is empty; nothing to plot")
    figure = _figure_class()
    lr_path, loss_path, acc_path = (out / name for name in PLOT_FILES)
    return [
        _plot_lrs(results, lr_path, title, figure),
        _plot_per_epoch(
            results, loss_path, f"{title}: cross-entropy loss per epoch", figure,
            train="train_loss", test="test_loss", ylabel="loss (log scale)", log=True,
            percent=False,
        ),
        _plot_per_epoch(
            results, acc_path, f"{title}: accuracy per epoch", figure,
            train="train_acc", test="test_acc", ylabel="accuracy (%)", log=False, percent=True,
        ),
    ]  # fmt: skip


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _backend_cell(result: RunResult) -> str:
    if not result.backends:
        return "-"
    return ", ".join(f"{name}: {backend}" for name, backend in result.backends.items())


def _rows(results: Sequence[RunResult]) -> list[list[str]]:
    return [
        [
            r.label,
            f"{r.test_acc[-1]:.2%}",
            f"{max(r.test_acc):.2%}",
            f"{r.test_loss[-1]:.3g}",
            f"{r.train_loss[-1]:.3g}",
            f"{_mean(r.epoch_seconds):.2f}",
            _backend_cell(r),
        ]
        for r in results
    ]


_HEADER = [
    "run",
    "final test acc",
    "best test acc",
    "final test loss",
    "final train loss",
    "s/epoch",
    "fused-op backends",
]


def format_table(results: Sequence[RunResult]) -> str:
    """The results as a fixed-width text table (what the demo prints on stdout).

    Example:
        >>> print(format_table(results))  # doctest: +SKIP
        run            final test acc  best test acc  ...
    """
    rows = [_HEADER, *_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            cell.ljust(width) if i in (0, len(row) - 1) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_summary(results: Sequence[RunResult], info: DemoInfo, out: Path) -> Path:
    """Write ``summary.md``: the setup, one table row per run, and the three plots.

    Args:
        results: the runs.
        info: the run's settings and environment.
        out: an existing folder (the plots are linked relative to it).

    Example:
        >>> write_summary(results, info, Path("demo-out"))  # doctest: +SKIP
        PosixPath('demo-out/summary.md')
    """
    cap = f", at most {info.max_batches} batches per epoch" if info.max_batches else ""
    versions = ", ".join(f"{name} {version}" for name, version in info.versions.items())
    lines = [
        f"# torchkit demo: LeNet on {info.dataset}",
        "",
        f"`{info.command}`",
        "",
        f"- **data**: {info.data_source}; {info.train_size} training and {info.test_size} test "
        f"images, standardised with the training mean {info.mean:.4f} and std {info.std:.4f}.",
        f"- **model**: the reference notes' LeNet; `torchkit.nn.fuse_conv_relu` replaced "
        f"{len(info.fused_layers)} Conv2d+ReLU pairs "
        f"({', '.join(f'`{name}`' for name in info.fused_layers)}) by `FusedConv2dReLU`. "
        "Every run starts from the "
        "same weights and sees the same batches.",
        f"- **training**: {info.epochs} epochs, batch size {info.batch_size}{cap}, seed "
        f"{info.seed}, device `{info.device}`, {info.threads} CPU "
        f"{'thread' if info.threads == 1 else 'threads'}.",
        f"- **backends**: {info.backend_note}",
        f"- **versions**: {versions}.",
        "",
        "| " + " | ".join(_HEADER[:-1]) + " | optimizer | lr schedule | fused-op backends |",
        "|" + " --- |" * (len(_HEADER) + 2),
    ]
    for result, row in zip(results, _rows(results), strict=True):
        cells = [*row[:-1], result.optimizer_text, result.schedule_text, row[-1]]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += [
        "",
        "`s/epoch` is the mean wall time of an epoch's training pass (evaluation excluded).",
        "",
        "![learning rates](lr_schedules.png)",
        "",
        "![loss curves](loss_curves.png)",
        "",
        "![accuracy](accuracy.png)",
        "",
    ]
    path = out / "summary.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_metrics(results: Sequence[RunResult], info: DemoInfo, out: Path) -> Path:
    """Write ``metrics.json``: the settings and every run's per-epoch and per-step values.

    Example:
        >>> path = write_metrics(results, info, Path("demo-out"))  # doctest: +SKIP
        >>> json.loads(path.read_text())["runs"][0]["key"]  # doctest: +SKIP
        'sgd-steplr'
    """
    path = out / "metrics.json"
    payload = {"info": asdict(info), "runs": [asdict(result) for result in results]}
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return path
