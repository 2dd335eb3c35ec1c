"""Worker functions for the distributed tests (``tests/unit/test_distributed.py``).

The tests spawn two processes with :func:`torch.multiprocessing.start_processes`; each runs
:func:`entry`, which joins a gloo process group on loopback and runs the requested scenarios.
A scenario trains a small ``fuse_conv_relu``-ed convolutional model and returns plain tensors,
which :func:`entry` writes to ``<outdir>/<scenario>-rank<r>.pt`` for the test to compare with a
reference computed in the test process. Nothing here compares: the tests do.

The spawned processes import this module by name, so ``tests/unit`` must be on their
``sys.path``: the test puts it in their ``PYTHONPATH``. They choose the backend from the
environment they inherit (``TRITON_INTERPRET`` is set by the test before spawning, so before
anything in a worker can import Triton).

The model and the data are built here too, so the test process builds exactly the same ones
for its single-process references.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

WORLD_SIZE = 2
BATCH = 8  # per step, split evenly over the ranks
STEPS = 6
# Collectives give up after this long, so a rank whose peer died raises instead of hanging.
COLLECTIVE_TIMEOUT = datetime.timedelta(seconds=30)


# ------------------------------------------------------------------ model and data


def make_model(seed: int) -> nn.Sequential:
    """Two Conv2d+ReLU pairs (fused into ``FusedConv2dReLU``) and a Linear with one output.

    Chosen for sharding: the second conv has 3 output channels (shards of 2 and 1 rows on two
    ranks) and the Linear's weight (1, 27) and bias (1,) leave rank 1 an empty shard.
    """
    from torchkit.nn import FusedConv2dReLU, fuse_conv_relu

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 3, 3, stride=2),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(27, 1),
    )
    fused, names = fuse_conv_relu(model, return_fused=True)
    if names != ["0", "2"] or not isinstance(fused[2], FusedConv2dReLU):
        raise RuntimeError(f"fuse_conv_relu fused {names}, expected ['0', '2']")
    return fused


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The full batch of ``step``: inputs (8, 2, 8, 8) and targets (8, 1), fixed by the step."""
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(BATCH, 2, 8, 8, generator=gen), torch.randn(BATCH, 1, generator=gen)


def local_batch(step: int, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's contiguous share of the batch of ``step``."""
    x, y = batch(step)
    return x.chunk(world_size)[rank], y.chunk(world_size)[rank]


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    x: torch.Tensor,
    y: torch.Tensor,
) -> float:
    """One step on the mean squared error; returns the lr the step used."""
    lr = float(optimizer.param_groups[0]["lr"])
    optimizer.zero_grad()
    F.mse_loss(model(x), y).backward()
    optimizer.step()
    scheduler.step()
    return lr


def make_optimizer(kind: str, params: Iterable[nn.Parameter]) -> torch.optim.Adam:
    """FusedAdam, or torch's Adam with the same hyperparameters (weight decay and AMSGrad on)."""
    from torchkit.optim import FusedAdam

    cls = FusedAdam if kind == "fused" else torch.optim.Adam
    return cls(params, lr=2e-2, weight_decay=1e-2, amsgrad=True)


def make_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Two warmup steps, then a cosine decay to 1e-3 at step 6."""
    from torchkit.optim.lr_scheduler import WarmupDecayLR

    return WarmupDecayLR(optimizer, warmup_steps=2, total_steps=STEPS, min_lr=1e-3)


def train_single_process(kind: str = "fused") -> dict[str, Any]:
    """The reference: one process, full batches, ``STEPS`` steps (the caller picks the backend)."""
    model = make_model(seed=0)
    optimizer = make_optimizer(kind, model.parameters())
    scheduler = make_scheduler(optimizer)
    lrs = [train_step(model, optimizer, scheduler, *batch(step)) for step in range(STEPS)]
    return {"params": _detached(model.state_dict()), "lrs": lrs}


def _detached(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _local(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return (t.to_local() if isinstance(t, DTensor) else t).detach().clone()


def _fully_shard(model: nn.Sequential) -> nn.Sequential:
    """FSDP2: one unit per layer with parameters, plus the root (parameters become DTensors)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model:
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


# ------------------------------------------------------------------------ scenarios


def ddp(rank: int, world_size: int, outdir: Path) -> dict[str, Any]:
    """DDP + FusedAdam + WarmupDecayLR on this rank's half of every batch."""
    from torch.nn.parallel import DistributedDataParallel

    model = make_model(seed=0)
    wrapped = DistributedDataParallel(model)
    optimizer = make_optimizer("fused", wrapped.parameters())
    scheduler = make_scheduler(optimizer)
    lrs = [
        train_step(wrapped, optimizer, scheduler, *local_batch(step, rank, world_size))
        for step in range(STEPS)
    ]
    return {
        "params": _detached(model.state_dict()),
        "lrs": lrs,
        "backend": str(optimizer.last_backend),
        "conv_backend": str(model[0].last_backend),
    }


def fsdp2(rank: int, world_size: int, outdir: Path) -> dict[str, Any]:
    """FSDP2 with FusedAdam and, on an identical sharded copy, torch's Adam.

    FSDP2 all-gathers each step's new weights into the unsharded parameters with their version
    counters preserved: under ``TRITON_INTERPRET=1`` this checks that the layers' packed
    weights follow them.
    """
    from torch.distributed.tensor import DTensor

    result: dict[str, Any] = {}
    for kind in ("fused", "torch"):
        model = _fully_shard(make_model(seed=0))
        optimizer = make_optimizer(kind, model.parameters())
        scheduler = make_scheduler(optimizer)
        for step in range(STEPS):
            x, y = local_batch(step, rank, world_size)
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            optimizer.step()
            scheduler.step()
        result[kind] = {
            "local": {n: _local(p) for n, p in model.named_parameters()},
            "full": {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()},
            "state": {
                n: {k: _local(v) for k, v in optimizer.state[p].items()}
                for n, p in model.named_parameters()
            },
            "dtensor_params": all(isinstance(p, DTensor) for p in model.parameters()),
            "dtensor_state": all(
                isinstance(optimizer.state[p][k], DTensor)
                for p in model.parameters()
                for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
            ),
        }
        if kind == "fused":
            result["backend"] = str(optimizer.last_backend)
            result["conv_backend"] = str(model[0].last_backend)
    return result


class _TrainingState:
    """What DCP saves and loads: model, optimizer and scheduler (``dcp.stateful.Stateful``)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        return {
            "model": model_state,
            "optimizer": optimizer_state,
            "scheduler": self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(
            self.model,
            self.optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
        )
        self.scheduler.load_state_dict(state["scheduler"])


SAVE_AT = 3  # after 3 steps: mid-decay (the warmup is steps 0 and 1; a save at 1 is mid-warmup)


def dcp_resume(rank: int, world_size: int, outdir: Path) -> dict[str, Any]:
    """Save model + FusedAdam + scheduler with ``torch.distributed.checkpoint`` after 1 and
    after ``SAVE_AT`` steps (mid-warmup and mid-decay), keep training; then load each
    checkpoint into a fresh, differently initialised FSDP2 model and train the same steps."""
    import torch.distributed.checkpoint as dcp

    result: dict[str, Any] = {}
    model = _fully_shard(make_model(seed=0))
    optimizer = make_optimizer("fused", model.parameters())
    scheduler = make_scheduler(optimizer)
    lrs = []
    for step in range(STEPS):
        if step in (1, SAVE_AT):
            state = {"app": _TrainingState(model, optimizer, scheduler)}
            dcp.save(state, checkpoint_id=str(outdir / f"checkpoint-{step}"))
        lrs.append(train_step(model, optimizer, scheduler, *local_batch(step, rank, world_size)))
    result["uninterrupted"] = {
        "lrs": lrs,
        "local": {n: _local(p) for n, p in model.named_parameters()},
        "state": {n: _local(optimizer.state[p]["exp_avg"]) for n, p in model.named_parameters()},
    }
    for start in (1, SAVE_AT):
        model = _fully_shard(make_model(seed=1))
        optimizer = make_optimizer("fused", model.parameters())
        scheduler = make_scheduler(optimizer)
        dcp.load(
            {"app": _TrainingState(model, optimizer, scheduler)},
            checkpoint_id=str(outdir / f"checkpoint-{start}"),
        )
        lrs = [
            train_step(model, optimizer, scheduler, *local_batch(step, rank, world_size))
            for step in range(start, STEPS)
        ]
        result[f"resumed-at-{start}"] = {
            "lrs": lrs,
            "local": {n: _local(p) for n, p in model.named_parameters()},
            "state": {
                n: _local(optimizer.state[p]["exp_avg"]) for n, p in model.named_parameters()
            },
            "last_epoch": scheduler.last_epoch,
        }
    return result


SCENARIOS: dict[str, Callable[[int, int, Path], dict[str, Any]]] = {
    "ddp": ddp,
    "fsdp2": fsdp2,
    "dcp": dcp_resume,
}


# ---------------------------------------------------------------------------- entry


def entry(rank: int, world_size: int, port: int, outdir: str, scenarios: list[str]) -> None:
    """Join the gloo group on 127.0.0.1:``port`` and run ``scenarios`` in order.

    Each result goes to ``<outdir>/<scenario>-rank<rank>.pt``; an exception propagates, so the
    process exits non-zero and the test reports the traceback.
    """
    from torchkit.backend import select_backend

    torch.set_num_threads(1)  # two ranks share the two cores of the test machine
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    try:
        for name in scenarios:
            result = SCENARIOS[name](rank, world_size, Path(outdir))
            result["selected_backend"] = str(select_backend("cpu"))
            result["triton_imported"] = "triton" in sys.modules
            result["TRITON_INTERPRET"] = os.environ.get("TRITON_INTERPRET")
            torch.save(result, Path(outdir) / f"{name}-rank{rank}.pt")
            dist.barrier()
    finally:
        dist.destroy_process_group()
