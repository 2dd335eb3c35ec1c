"""The demo's optimizer/schedule pairs and the training loop that runs each of them.

Every run trains the same fused LeNet from the same initial weights, sees the training images
in the same order, and is evaluated on the same held-out split; only the optimizer and the
learning-rate schedule differ. The five runs (:data:`RUNS`):

==============================  ===========================================================
``sgd-steplr``                  ``torch.optim.SGD`` + torch ``StepLR`` (the notes' step decay)
``adam``                        ``torch.optim.Adam`` at a constant lr (the notes' Adam)
``fusedadam-warmup-cosine``     ``torchkit.optim.FusedAdam`` + ``WarmupDecayLR`` (linear
                                warmup, cosine decay)
``sgd-onecycle-exp``            SGD + torchkit ``OneCycleLR`` chained with torch
                                ``ExponentialLR`` through ``ChainedScheduler`` (torch's own
                                OneCycleLR cannot be chained)
``fusedadam-noam``              ``FusedAdam`` + ``NoamLR`` (the Transformer's schedule)
==============================  ===========================================================
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from torchkit.demo.data import Split

__all__ = [
    "RUNS",
    "Budget",
    "Recipe",
    "RunResult",
    "RunSpec",
    "evaluate",
    "fused_backends",
    "train_run",
]

StepEvery = Literal["batch", "epoch"]


@dataclass(frozen=True)
class Budget:
    """How long each run trains.

    Attributes:
        epochs: passes over the training split.
        steps_per_epoch: optimizer steps per epoch (batches, after any ``--max-batches`` cap).
    """

    epochs: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        """Optimizer steps over the whole run."""
        return self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        """Warmup length of the warmup schedules: a tenth of the run, at least one step."""
        return max(1, self.total_steps // 10)


@dataclass
class Recipe:
    """An optimizer, its lr scheduler, and how the loop drives them.

    Attributes:
        optimizer: the optimizer over the run's model parameters.
        scheduler: the lr scheduler, or ``None`` for a constant lr.
        step_every: ``"batch"`` steps the scheduler after every optimizer step, ``"epoch"``
            after every epoch.
        optimizer_text: the optimizer as constructed, for the summary.
        schedule_text: the schedule as constructed, for the summary.
    """

    optimizer: Optimizer
    scheduler: LRScheduler | None
    step_every: StepEvery
    optimizer_text: str
    schedule_text: str


@dataclass(frozen=True)
class RunSpec:
    """One optimizer/schedule pair of the demo.

    Attributes:
        key: a slug for file names and ``metrics.json``.
        label: the name shown in plots and tables.
        family: ``"SGD"`` or ``"Adam"``; the lr plot draws each family on its own axes.
        build: ``build(parameters, budget) -> Recipe``.
    """

    key: str
    label: str
    family: str
    build: Callable[[Iterable[nn.Parameter], Budget], Recipe]


def _sgd_steplr(params: Iterable[nn.Parameter], budget: Budget) -> Recipe:
    # The notes' step decay: lr 0.02, momentum 0.9, halved every 10 of 30 epochs.
    step_size = max(1, budget.epochs // 3)
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=0.5)
    return Recipe(
        optimizer,
        scheduler,
        "epoch",
        "torch.optim.SGD(lr=0.02, momentum=0.9)",
        f"torch StepLR(step_size={step_size}, gamma=0.5), per epoch",
    )


def _adam(params: Iterable[nn.Parameter], budget: Budget) -> Recipe:
    # The notes' Adam: lr 0.001 (TrainingConfiguration.learning_rate), no schedule.
    optimizer = torch.optim.Adam(params, lr=1e-3)
    return Recipe(optimizer, None, "epoch", "torch.optim.Adam(lr=1e-3)", "constant")


def _fusedadam_warmup_cosine(params: Iterable[nn.Parameter], budget: Budget) -> Recipe:
    from torchkit.optim import FusedAdam
    from torchkit.optim.lr_scheduler import WarmupDecayLR

    # Leave at least one step of decay after the warmup; a one-step run has no warmup.
    warmup = min(budget.warmup_steps, budget.total_steps - 1)
    optimizer = FusedAdam(params, lr=3e-3)
    scheduler = WarmupDecayLR(
        optimizer,
        warmup_steps=warmup,
        total_steps=budget.total_steps,
        warmup="linear",
        decay="cosine",
    )
    return Recipe(
        optimizer,
        scheduler,
        "batch",
        "torchkit FusedAdam(lr=3e-3)",
        f"torchkit WarmupDecayLR(warmup_steps={warmup}, "
        f"total_steps={budget.total_steps}, linear warmup, cosine decay), per batch",
    )


def _sgd_onecycle_exp(params: Iterable[nn.Parameter], budget: Budget) -> Recipe:
    from torchkit.optim.lr_scheduler import OneCycleLR

    total = budget.total_steps
    # Halve the one-cycle curve once more by the last step: onecycle(t) * gamma**t.
    gamma = 0.5 ** (1.0 / total)
    optimizer = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    one_cycle = OneCycleLR(optimizer, max_lr=0.05, total_steps=total)
    decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    scheduler = torch.optim.lr_scheduler.ChainedScheduler([one_cycle, decay], optimizer)
    return Recipe(
        optimizer,
        scheduler,
        "batch",
        "torch.optim.SGD(momentum=0.9)",
        f"torchkit OneCycleLR(max_lr=0.05, total_steps={total}) chained with torch "
        f"ExponentialLR(gamma=0.5**(1/{total})), per batch",
    )


# NoamLR's peak lr is base_lr * factor * (d_model * warmup_steps) ** -0.5; the factor below is
# chosen so that the peak is this value whatever the run's length.
_NOAM_PEAK_LR = 3e-3
_NOAM_D_MODEL = 512


def _fusedadam_noam(params: Iterable[nn.Parameter], budget: Budget) -> Recipe:
    from torchkit.optim import FusedAdam
    from torchkit.optim.lr_scheduler import NoamLR

    warmup = budget.warmup_steps
    factor = _NOAM_PEAK_LR * math.sqrt(_NOAM_D_MODEL * warmup)
    # The Transformer paper's Adam settings, with base lr 1.0 so NoamLR sets the lr itself.
    optimizer = FusedAdam(params, lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    scheduler = NoamLR(optimizer, d_model=_NOAM_D_MODEL, warmup_steps=warmup, factor=factor)
    return Recipe(
        optimizer,
        scheduler,
        "batch",
        "torchkit FusedAdam(lr=1.0, betas=(0.9, 0.98), eps=1e-9)",
        f"torchkit NoamLR(d_model={_NOAM_D_MODEL}, warmup_steps={warmup}, factor={factor:.4g}) "
        f"(peak lr {_NOAM_PEAK_LR:g}), per batch",
    )


RUNS: tuple[RunSpec, ...] = (
    RunSpec("sgd-steplr", "SGD + StepLR", "SGD", _sgd_steplr),
    RunSpec("adam", "Adam", "Adam", _adam),
    RunSpec(
        "fusedadam-warmup-cosine", "FusedAdam + WarmupDecayLR", "Adam", _fusedadam_warmup_cosine
    ),
    RunSpec("sgd-onecycle-exp", "SGD + OneCycleLR × ExponentialLR", "SGD", _sgd_onecycle_exp),
    RunSpec("fusedadam-noam", "FusedAdam + NoamLR", "Adam", _fusedadam_noam),
)


@dataclass
class RunResult:
    """What one run measured; lists have one entry per epoch unless said otherwise.

    Attributes:
        key, label, family: from the :class:`RunSpec`.
        optimizer_text, schedule_text: from the :class:`Recipe`.
        train_loss: mean cross-entropy over the epoch's training batches (sample-weighted).
        train_acc: accuracy over the epoch's training batches, as the model was updated.
        test_loss: mean cross-entropy on the test split after the epoch.
        test_acc: accuracy on the test split after the epoch.
        epoch_seconds: wall time of the epoch's training pass (evaluation excluded).
        lrs: the lr of param group 0 used by each optimizer step (one entry per step).
        backends: fused op class name -> the backend it ran on.
    """

    key: str
    label: str
    family: str
    optimizer_text: str
    schedule_text: str
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    backends: dict[str, str] = field(default_factory=dict)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``.

    Args:
        model: a classifier returning logits.
        split: images and labels on the model's device.
        batch_size: images per forward pass; default 1000.

    Example:
        >>> from torchkit.demo.model import LeNet
        >>> split = Split(torch.zeros(4, 1, 32, 32), torch.tensor([0, 1, 2, 3]))
        >>> loss, acc = evaluate(LeNet(), split)
        >>> 0.0 <= acc <= 1.0
        True
    """
    was_training = model.training
    model.eval()
    total_loss = 0.0
    correct = 0
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size]
        labels = split.labels[start : start + batch_size]
        logits = model(images)
        total_loss += float(F.cross_entropy(logits, labels, reduction="sum"))
        correct += int((logits.argmax(dim=1) == labels).sum())
    model.train(was_training)
    return total_loss / len(split), correct / len(split)


def fused_backends(model: nn.Module, optimizer: Optimizer) -> dict[str, str]:
    """The backend each torchkit fused object of a run used, by class name.

    Args:
        model: the trained model.
        optimizer: its optimizer.

    Raises:
        RuntimeError: a fused object has not run yet, so it has no backend to report.
    """
    found: dict[str, str] = {}
    for obj in (*model.modules(), optimizer):
        # torchkit's fused classes say which backend a device gets (backend_for) and record
        # what their latest call ran on (last_backend).
        if not hasattr(type(obj), "backend_for"):
            continue
        backend = getattr(obj, "last_backend", None)
        if backend is None:
            raise RuntimeError(f"{type(obj).__name__} reports no backend; did it run?")
        found[type(obj).__name__] = str(backend)
    return found


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_run(
    spec: RunSpec,
    initial_model: nn.Module,
    train: Split,
    test: Split,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    max_batches: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train a copy of ``initial_model`` with ``spec``'s optimizer and schedule.

    Batches are drawn without replacement from a permutation of the training split made by a
    generator seeded with ``seed``, so every run sees the same batches in the same order.

    Args:
        spec: the optimizer/schedule pair.
        initial_model: the starting weights (copied, never modified).
        train: the training split, on the model's device.
        test: the test split, on the model's device.
        epochs: passes over the training split; at least 1.
        batch_size: images per optimizer step; at least 1.
        seed: seeds the shuffling generator.
        max_batches: stop each epoch after this many batches (a quick smoke run); ``None``
            trains on the whole split.
        progress: show a tqdm progress bar on stderr.
        log: receives one line per epoch.

    Raises:
        ValueError: ``epochs``, ``batch_size`` or ``max_batches`` is not a positive integer.

    Example:
        >>> from torchkit.demo.data import load_digits_32
        >>> from torchkit.demo.model import LeNet
        >>> data = load_digits_32()  # doctest: +SKIP
        >>> result = train_run(RUNS[1], LeNet(), data.train, data.test, epochs=1,
        ...                    batch_size=64, seed=0)  # doctest: +SKIP
        >>> result.test_acc[-1] > 0.1  # doctest: +SKIP
        True
    """
    for name, value in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("max_batches", max_batches),
    ):
        if name == "max_batches" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")

    model = copy.deepcopy(initial_model)
    model.train()
    device = train.images.device
    steps_per_epoch = math.ceil(len(train) / batch_size)
    if max_batches is not None:
        steps_per_epoch = min(steps_per_epoch, max_batches)
    recipe = spec.build(model.parameters(), Budget(epochs, steps_per_epoch))
    optimizer, scheduler = recipe.optimizer, recipe.scheduler
    result = RunResult(
        spec.key, spec.label, spec.family, recipe.optimizer_text, recipe.schedule_text
    )
    generator = torch.Generator().manual_seed(seed)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=epochs * steps_per_epoch,
            desc=f"{spec.label:<33}",
            unit="step",
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.5,
        )
    try:
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(train), generator=generator).to(device)
            # Summed on the device and read once per epoch: no host sync inside the loop.
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            seen = 0
            _sync(device)
            started = time.perf_counter()
            for step in range(steps_per_epoch):
                index = order[step * batch_size : (step + 1) * batch_size]
                images, labels = train.images[index], train.labels[index]
                result.lrs.append(float(optimizer.param_groups[0]["lr"]))
                optimizer.zero_grad(set_to_none=True)
                logits = model(images)
                loss = F.cross_entropy(logits, labels)
                loss.backward()
                optimizer.step()
                if scheduler is not None and recipe.step_every == "batch":
                    scheduler.step()
                loss_sum += loss.detach() * len(labels)
                correct += (logits.detach().argmax(dim=1) == labels).sum()
                seen += len(labels)
                if bar is not None:
                    bar.update(1)
            if scheduler is not None and recipe.step_every == "epoch":
                scheduler.step()
            _sync(device)
            result.epoch_seconds.append(time.perf_counter() - started)
            train_loss, train_acc = float(loss_sum) / seen, int(correct) / seen
            result.train_loss.append(train_loss)
            result.train_acc.append(train_acc)
            test_loss, test_acc = evaluate(model, test)
            result.test_loss.append(test_loss)
            result.test_acc.append(test_acc)
            line = (
                f"{spec.label:<33} epoch {epoch:>3}/{epochs}  train loss {train_loss:.4f}  "
                f"acc {train_acc:6.2%}  |  test loss {test_loss:.4f}  acc {test_acc:6.2%}  "
                f"({result.epoch_seconds[-1]:.2f} s)"
            )
            if bar is not None:
                bar.set_postfix(epoch=epoch, loss=f"{train_loss:.3f}", test_acc=f"{test_acc:.1%}")
                bar.clear()
            log(line)
    finally:
        if bar is not None:
            bar.close()
    result.backends = fused_backends(model, optimizer)
    return result
