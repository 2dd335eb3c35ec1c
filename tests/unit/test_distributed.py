"""torchkit under torch.distributed on CPU: DDP, FSDP2 and torch.distributed.checkpoint.

Two processes are spawned (gloo, 127.0.0.1, a free port) running the scenarios of
``_dist_workers.py`` on a ``fuse_conv_relu``-ed convolutional model trained with FusedAdam and
``WarmupDecayLR``; each writes plain tensors that the tests below compare with references.
Every spawn is bounded in time: a worker that raises, dies or stalls fails the test (the
workers are killed), it never hangs the suite.

The stock-path scenarios share one spawn (``TRITON_INTERPRET=0`` in the workers, so FusedAdam
runs torch's fused CPU kernel and FusedConv2dReLU runs ``F.conv2d``); the FSDP2 run repeats
with ``TRITON_INTERPRET=1``, where FusedAdam's Triton kernel updates the DTensors' local
shards, including an empty one, and the layers run their kernel on packed weights.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import _dist_workers as workers
import pytest
import torch
from _helpers import assert_tensors_close

import torchkit
from torchkit.backend import triton_available

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(
        not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
        reason="torch.distributed with gloo is not available",
    ),
]

UNIT_TESTS = Path(__file__).resolve().parent
SPAWN_TIMEOUT_S = 60.0  # 5-20 s needed on 2 busy cores; a stalled worker fails, never hangs
STOCK_SCENARIOS = ["ddp", "fsdp2", "dcp"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(scenarios: list[str], outdir: Path, *, interpret: bool) -> dict[str, list[Any]]:
    """Run ``scenarios`` on ``WORLD_SIZE`` spawned ranks; return ``{scenario: [rank results]}``.

    The workers inherit ``TRITON_INTERPRET`` (set here, before they start, so before they can
    import Triton) and ``PYTHONPATH`` with ``tests/unit`` (they import ``_dist_workers``).

    Raises:
        pytest.fail.Exception: a worker raised, died, or did not finish in time.
    """
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TRITON_INTERPRET", "1" if interpret else "0")
        env.setenv("TRITON_DEFAULT_FP_FUSION", "1")
        path = os.environ.get("PYTHONPATH", "")
        env.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(UNIT_TESTS), path) if p))
        context = torch.multiprocessing.start_processes(
            workers.entry,
            args=(workers.WORLD_SIZE, free_port(), str(outdir), scenarios),
            nprocs=workers.WORLD_SIZE,
            join=False,
            start_method="spawn",
        )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    try:
        while not context.join(timeout=max(0.0, deadline - time.monotonic())):
            if time.monotonic() >= deadline:
                alive = [i for i, p in enumerate(context.processes) if p.is_alive()]
                pytest.fail(
                    f"ranks {alive} still running after {SPAWN_TIMEOUT_S:.0f} s "
                    f"(scenarios {scenarios}); killed"
                )
    except (
        torch.multiprocessing.ProcessRaisedException,
        torch.multiprocessing.ProcessExitedException,
    ) as error:
        pytest.fail(f"a worker failed running {scenarios}:\n{error}")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join()
    return {
        name: [
            torch.load(outdir / f"{name}-rank{rank}.pt", weights_only=True)
            for rank in range(workers.WORLD_SIZE)
        ]
        for name in scenarios
    }


@pytest.fixture(scope="module")
def stock_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    """One spawn for every stock-path scenario (process start-up dominates their cost)."""
    return spawn(STOCK_SCENARIOS, tmp_path_factory.mktemp("dist"), interpret=False)


@pytest.fixture(scope="module")
def single_process() -> dict[str, Any]:
    """The reference: one process, full batches, stock torch path."""
    with torchkit.force_backend("torch"):
        return workers.train_single_process("fused")


def assert_state_dicts_close(
    actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], **tolerance: float
) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert_tensors_close(actual[name], value, name=name, **tolerance)


# The distributed runs reduce the gradients in another order than the single process (each rank
# averages its half of the batch, then the halves are averaged), so gradients differ in their
# last bits. Adam normalises the update, so such a relative error passes into each step's update
# (at most lr = 2e-2) instead of vanishing. Measured on the 2-core CI machine: at most 3e-8
# absolute after 6 steps. atol 1e-6 leaves a 30x margin for other thread counts and reduction
# orders, and is still 1000x below the movement of one step, so a wrong step is caught.
ACROSS_PROCESSES = {"atol": 1e-6, "rtol": 1e-5}


def test_workers_ran_the_stock_torch_path(stock_runs: dict[str, list[Any]]) -> None:
    for name, ranks in stock_runs.items():
        for rank, result in enumerate(ranks):
            assert result["TRITON_INTERPRET"] == "0", (name, rank)
            assert result["selected_backend"] == "torch", (name, rank)
    for result in stock_runs["ddp"]:
        assert result["backend"] == "torch"
        assert result["conv_backend"] == "torch"


def test_ddp_ranks_hold_identical_parameters(stock_runs: dict[str, list[Any]]) -> None:
    """DDP all-reduces the gradients, so both ranks take bit-identical steps."""
    rank0, rank1 = stock_runs["ddp"]
    assert rank0["lrs"] == rank1["lrs"]
    assert_state_dicts_close(rank1["params"], rank0["params"], atol=0.0, rtol=0.0)


def test_ddp_equals_single_process_on_the_full_batch(
    stock_runs: dict[str, list[Any]], single_process: dict[str, Any]
) -> None:
    rank0 = stock_runs["ddp"][0]
    assert rank0["lrs"] == single_process["lrs"]
    initial = workers.make_model(seed=0).state_dict()
    for name, value in single_process["params"].items():  # the comparison is not vacuous
        assert (value - initial[name]).abs().max() > 1e-3, f"{name} did not train"
    assert_state_dicts_close(rank0["params"], single_process["params"], **ACROSS_PROCESSES)


def check_fsdp2(ranks: list[dict[str, Any]], single_process: dict[str, Any]) -> None:
    """FusedAdam's local shards equal torch Adam's under the same sharding, on every rank."""
    empty_shards = 0
    for rank, result in enumerate(ranks):
        fused, reference = result["fused"], result["torch"]
        assert fused["dtensor_params"], rank
        assert fused["dtensor_state"], rank
        for name, shard in reference["local"].items():
            empty_shards += shard.numel() == 0
            # FusedAdam vs torch's single-tensor Adam on the same fp32 values: fp32 defaults.
            assert_tensors_close(fused["local"][name], shard, name=f"rank {rank} {name}")
            for key, value in reference["state"][name].items():
                actual = fused["state"][name][key]
                assert_tensors_close(actual, value, name=f"rank {rank} {name} {key}")
        # And the gathered parameters are those of single-process training on full batches.
        assert_state_dicts_close(fused["full"], single_process["params"], **ACROSS_PROCESSES)
    assert empty_shards >= 2, "the model should give rank 1 empty shards (Linear with 1 output)"


def test_fsdp2_fused_adam_equals_torch_adam(
    stock_runs: dict[str, list[Any]], single_process: dict[str, Any]
) -> None:
    ranks = stock_runs["fsdp2"]
    assert all(r["backend"] == "torch" for r in ranks)
    check_fsdp2(ranks, single_process)


@pytest.mark.slow  # a second spawn, and Triton imported in both workers: 5-20 s on 2 cores
@pytest.mark.interpreter
@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_fsdp2_with_the_kernels_trains_as_torch(
    tmp_path: Path, single_process: dict[str, Any]
) -> None:
    """The same FSDP2 run with the Triton kernels (interpreted): DTensor local shards, an empty
    shard on rank 1 included, are updated by FusedAdam's kernel as torch's Adam updates them,
    and the layers' packed weights follow the weights FSDP2 all-gathers at every step (with
    their version counters preserved: the optimizer step is what tells the layers)."""
    ranks = spawn(["fsdp2"], tmp_path, interpret=True)["fsdp2"]
    assert all(r["backend"] == "triton-interpreter" for r in ranks)
    assert all(r["conv_backend"] == "triton-interpreter" for r in ranks)
    check_fsdp2(ranks, single_process)


@pytest.mark.parametrize("start", [1, workers.SAVE_AT], ids=["mid-warmup", "mid-decay"])
def test_dcp_resume_follows_the_same_trajectory(
    stock_runs: dict[str, list[Any]], start: int
) -> None:
    """Loading a DCP checkpoint of model, FusedAdam and scheduler into a freshly (and
    differently) initialised model continues exactly as if training had not stopped: the same
    operations on the same values in the same process, so the comparison is exact."""
    for rank, result in enumerate(stock_runs["dcp"]):
        uninterrupted, resumed = result["uninterrupted"], result[f"resumed-at-{start}"]
        assert resumed["lrs"] == uninterrupted["lrs"][start:], rank
        assert resumed["last_epoch"] == workers.STEPS
        for key in ("local", "state"):
            assert_state_dicts_close(resumed[key], uninterrupted[key], atol=0.0, rtol=0.0)
