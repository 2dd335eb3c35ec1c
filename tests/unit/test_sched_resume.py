"""Resuming every kind of scheduler and chain, in both load orders, and what a load refuses.

A run is stopped after ``stop`` steps, saved through ``torch.save`` /
``torch.load(weights_only=True)``, and resumed either in torch's documented order (build the
schedulers, then load the optimizer and the schedulers) or with the optimizer loaded first
(then the constructors overwrite its lrs, and loading the schedulers must put back the lrs
of the interrupted step). Either way every later lr and momentum must be the uninterrupted
run's, float for float.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from _sched_reference import hyperparameters
from torch.optim import lr_scheduler as torch_sched

from torchkit.optim.lr_scheduler import (
    SCHEDULER_NAMES,
    ChainedScheduler,
    CosineRestartsLR,
    GreedyLR,
    NoamLR,
    OneCycleLR,
    ReduceLROnPlateau,
    WarmupDecayLR,
    get_scheduler,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:Detected call of `lr_scheduler.step\\(\\)`:UserWarning"
)

STEPS = 45
STOPS = (1, 3, 4, 6, 9, 17)
# A loss that stalls now and then: the plateaus cut at several of the stops above.
METRICS = [1.0, 0.9, 0.9, 0.9, 0.9, 0.95, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.7] + [0.7] * 40


def make_adamw():
    groups = [
        {"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.1},
        {"params": [torch.nn.Parameter(torch.ones(2))], "lr": 0.03},
    ]
    return torch.optim.AdamW(groups, lr=0.1)


def warmup(opt, **options):
    return WarmupDecayLR(opt, 8, None, decay="constant", **options)


def plateau(opt, cls=ReduceLROnPlateau, **options):
    return cls(opt, **{"factor": 0.5, "patience": 1, **options})


FACTORY_OPTIONS = {
    "cosine_with_min_lr": {"min_lr_rate": 0.1},
    "cosine_warmup_with_min_lr": {"min_lr_rate": 0.1},
    "warmup_stable_decay": {"num_decay_steps": 10},
    "cosine_with_restarts": {"num_cycles": 2},
    "reduce_lr_on_plateau": {"factor": 0.5, "patience": 1},
    "greedy": {"factor": 0.5, "patience": 1, "smooth": True, "window_size": 3},
}

# Each kind: a factory ``optimizer -> scheduler`` (what a training script rebuilds).
KINDS = {
    "wsd": lambda o: WarmupDecayLR(o, 5, 40, stable_steps=5, decay="1-sqrt", min_lr_ratio=0.1),
    "exponential-from-0": lambda o: WarmupDecayLR(
        o, 5, None, decay="exponential", gamma=0.9, warmup_start_factor=0.0
    ),
    "restarts": lambda o: CosineRestartsLR(
        o, 4, cycle_mul=1.5, cycle_decay=0.7, min_lr=1e-3, warmup_steps=3, warmup_prefix=True
    ),
    "restarts-fitted": lambda o: CosineRestartsLR(
        o, total_steps=30, num_cycles=3, warmup_steps=3, warmup_prefix=True
    ),
    "noam": lambda o: NoamLR(o, 32, 5),
    "onecycle": lambda o: OneCycleLR(o, max_lr=1.0, total_steps=60),
    "plateau": lambda o: plateau(o, cooldown=1, min_lr=[1e-3, 2e-3]),
    "chain-then-torch-exponential": lambda o: ChainedScheduler(
        [WarmupDecayLR(o, 5, 40), torch_sched.ExponentialLR(o, 0.95)]
    ),
    "chain-torch-exponential-first": lambda o: ChainedScheduler(
        [torch_sched.ExponentialLR(o, 0.95), WarmupDecayLR(o, 5, 40)]
    ),
    "chain-then-plateau": lambda o: ChainedScheduler([warmup(o), plateau(o)]),
    "greedy-resets": lambda o: GreedyLR(
        o, factor=0.5, patience=0, cooldown=1, min_lr=[0.02, 0.01], reset_start=2
    ),
    "chain-then-greedy": lambda o: ChainedScheduler(
        [warmup(o, warmup_start_factor=0.0), GreedyLR(o, factor=0.7, patience=1, warmup=1)]
    ),
    "chain-then-torch-plateau": lambda o: ChainedScheduler(
        [warmup(o), plateau(o, torch_sched.ReduceLROnPlateau)]
    ),
    "chain-restarts-then-plateau": lambda o: ChainedScheduler(
        [CosineRestartsLR(o, 6, warmup_steps=3, warmup_start_lr=1e-3), plateau(o)]
    ),
    "chain-from-0-then-plateau": lambda o: ChainedScheduler(
        [warmup(o, warmup_start_factor=0.0), plateau(o, patience=0)]
    ),
    "chain-only-torch": lambda o: ChainedScheduler(
        [torch_sched.LinearLR(o, 0.2, total_iters=6), torch_sched.ExponentialLR(o, 0.95)]
    ),
    "torch-chain-then-exponential": lambda o: torch_sched.ChainedScheduler(
        [OneCycleLR(o, max_lr=0.3, total_steps=60), torch_sched.ExponentialLR(o, 0.97)]
    ),
    **{
        f"get_scheduler-{name}": lambda o, name=name: get_scheduler(
            name, o, 4, 40, FACTORY_OPTIONS.get(name, {})
        )
        for name in SCHEDULER_NAMES
    },
}


def takes_metrics(scheduler):
    return isinstance(scheduler, (torch_sched.ReduceLROnPlateau, GreedyLR)) or (
        isinstance(scheduler, ChainedScheduler) and True in scheduler._takes_metrics
    )


def train(optimizer, scheduler, start, stop):
    """(lr, beta1) of every group after each of the steps ``start..stop-1``."""
    trace = []
    for step in range(start, stop):
        optimizer.step()
        if takes_metrics(scheduler):
            scheduler.step(METRICS[step])
        else:
            scheduler.step()
        trace.append([(group["lr"], group["betas"][0]) for group in optimizer.param_groups])
    return trace


def through_a_file(checkpoint):
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("order", ["build-then-load", "optimizer-first"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_scheduler_resumes_exactly_in_either_load_order(kind, order):
    build = KINDS[kind]
    optimizer = make_adamw()
    uninterrupted = train(optimizer, build(optimizer), 0, STEPS)
    for stop in STOPS:
        optimizer = make_adamw()
        scheduler = build(optimizer)
        first = train(optimizer, scheduler, 0, stop)
        checkpoint = through_a_file(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        )
        optimizer = make_adamw()
        if order == "optimizer-first":
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler = build(optimizer)
        else:
            scheduler = build(optimizer)
            optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        assert first + train(optimizer, scheduler, stop, STEPS) == uninterrupted, f"stop={stop}"


# -------------------------------------------------------------- what a load refuses


def state(scheduler):
    return copy.deepcopy(scheduler.state_dict())


def test_a_refused_chain_load_changes_neither_the_optimizer_nor_any_member():
    """The state's first member is another class: every member's state is checked before
    any is loaded, so the plateau after it (loaded first before) is left alone too."""
    optimizer = make_adamw()
    chain = ChainedScheduler([warmup(optimizer), plateau(optimizer, patience=0)])
    train(optimizer, chain, 0, 2)
    donor_optimizer = make_adamw()
    donor = ChainedScheduler([CosineRestartsLR(donor_optimizer, 5), plateau(donor_optimizer)])
    train(donor_optimizer, donor, 0, 7)
    before = (hyperparameters(optimizer), state(chain), [state(m) for m in chain._schedulers])
    with pytest.raises(ValueError, match=r"saved by '.*CosineRestartsLR' into '.*WarmupDecayLR'"):
        chain.load_state_dict(donor.state_dict())
    after = (hyperparameters(optimizer), state(chain), [state(m) for m in chain._schedulers])
    assert after == before


def test_a_refused_nested_chain_load_changes_nothing():
    optimizer = make_adamw()
    inner = ChainedScheduler([warmup(optimizer), torch_sched.ExponentialLR(optimizer, 0.9)])
    chain = ChainedScheduler([inner, plateau(optimizer)])
    train(optimizer, chain, 0, 3)
    before = (hyperparameters(optimizer), state(chain))
    saved = chain.state_dict()
    saved["_schedulers"][0]["_schedulers"][0]["base_lrs"] = [0.1]  # one group, not two
    with pytest.raises(ValueError, match="saved with 1 param groups"):
        chain.load_state_dict(saved)
    assert (hyperparameters(optimizer), state(chain)) == before
    saved = chain.state_dict()
    saved["_schedulers"][0]["_schedulers"][1] = ["not", "a", "state"]  # torch's member
    with pytest.raises(TypeError, match=r"the state of schedulers\[1\] must be a dict, got list"):
        chain.load_state_dict(saved)
    assert (hyperparameters(optimizer), state(chain)) == before


def test_the_state_of_torchs_chained_scheduler_loads_and_resumes():
    """torch's ChainedScheduler saves its _last_lr and the members' states; torchkit's loads
    it (which step with a metric is not state: it follows from the members)."""

    def members(optimizer):
        return [
            torch_sched.LinearLR(optimizer, 0.5, total_iters=4),
            torch_sched.ExponentialLR(optimizer, 0.9),
        ]

    optimizer = make_adamw()
    uninterrupted = train(optimizer, torch_sched.ChainedScheduler(members(optimizer)), 0, 12)
    optimizer = make_adamw()
    torchs = torch_sched.ChainedScheduler(members(optimizer))
    first = train(optimizer, torchs, 0, 5)
    checkpoint = through_a_file(
        {"optimizer": optimizer.state_dict(), "scheduler": torchs.state_dict()}
    )
    assert set(checkpoint["scheduler"]) == {"_last_lr", "_schedulers"}
    optimizer = make_adamw()
    chain = ChainedScheduler(members(optimizer))
    optimizer.load_state_dict(checkpoint["optimizer"])
    chain.load_state_dict(checkpoint["scheduler"])
    assert first + train(optimizer, chain, 5, 12) == uninterrupted
    assert "_takes_metrics" not in chain.state_dict()


# -------------------------------------------------------- states of older torchkits

# State dicts saved by torchkit 1.0 (git dd42785) after ``V1_STEP`` steps on ``make_adamw()``,
# with the factory that rebuilds each scheduler; they hold entries torchkit now derives
# (``_unchained``, OneCycleLR's phase points) and lack the newer ones.
V1_STEP = 6
V1 = {
    "OneCycleLR": (
        lambda o: OneCycleLR(o, max_lr=[1.0, 0.3], total_steps=20, anneal_strategy="linear"),
        {
            "_chain_factors": [1.0, 1.0],
            "_get_lr_called_within_step": False,
            "_is_initial": False,
            "_last_lr": [0.9285717142857143, 0.27857151428571425],
            "_lr_points": [[0.04, 1.0, 4e-06], [0.012, 0.3, 1.2e-06]],
            "_momentum_points": [[0.95, 0.85, 0.95], [0.95, 0.85, 0.95]],
            "_phase_ends": [5.0, 19.0],
            "_scheduler_class": "torchkit.optim.lr_scheduler.OneCycleLR",
            "_step_count": 7,
            "_unchained": True,
            "anneal_strategy": "linear",
            "base_lrs": [0.04, 0.012],
            "base_momentums": [0.85, 0.85],
            "cycle_momentum": True,
            "div_factor": 25.0,
            "final_div_factor": 10000.0,
            "initial_lrs": [0.04, 0.012],
            "last_epoch": 6,
            "max_lrs": [1.0, 0.3],
            "max_momentums": [0.95, 0.95],
            "min_lrs": [4e-06, 1.2e-06],
            "pct_start": 0.3,
            "three_phase": False,
            "total_steps": 20,
            "use_beta1": True,
        },
    ),
    "WarmupDecayLR": (
        lambda o: WarmupDecayLR(o, 3, 20, decay="inverse_sqrt", min_lr=1e-3),
        {
            "_chain_factors": [1.0, 1.0],
            "_get_lr_called_within_step": False,
            "_is_initial": False,
            "_last_lr": [0.05267447389002413, 0.016136967099097975],
            "_scheduler_class": "torchkit.optim.lr_scheduler.WarmupDecayLR",
            "_step_count": 7,
            "_timescale": 3,
            "_unchained": True,
            "base_lrs": [0.1, 0.03],
            "decay": "inverse_sqrt",
            "gamma": None,
            "last_epoch": 6,
            "min_lrs": [0.001, 0.001],
            "power": 1.0,
            "step_size": None,
            "total_steps": 20,
            "warmup": "linear",
            "warmup_start_factor": 0.25,
            "warmup_steps": 3,
        },
    ),
    "NoamLR": (
        lambda o: NoamLR(o, 32, 4),
        {
            "_chain_factors": [1.0, 1.0],
            "_get_lr_called_within_step": False,
            "_is_initial": False,
            "_last_lr": [0.0072168783648703235, 0.0021650635094610966],
            "_scheduler_class": "torchkit.optim.lr_scheduler.NoamLR",
            "_step_count": 7,
            "_unchained": True,
            "base_lrs": [0.1, 0.03],
            "d_model": 32,
            "factor": 1.0,
            "last_epoch": 6,
            "warmup_steps": 4,
        },
    ),
}


@pytest.mark.parametrize("order", ["build-then-load", "optimizer-first"])
@pytest.mark.parametrize("name", list(V1))
def test_a_state_of_torchkit_1_still_loads_and_resumes(name, order):
    build, saved = V1[name]
    optimizer = make_adamw()
    uninterrupted = train(optimizer, build(optimizer), 0, 19)
    optimizer = make_adamw()
    first = train(optimizer, build(optimizer), 0, V1_STEP)
    assert [[lr for lr, _ in row] for row in first][-1] == saved["_last_lr"]
    saved_optimizer = optimizer.state_dict()
    optimizer = make_adamw()
    if order == "optimizer-first":
        optimizer.load_state_dict(saved_optimizer)
        scheduler = build(optimizer)
    else:
        scheduler = build(optimizer)
        optimizer.load_state_dict(saved_optimizer)
    scheduler.load_state_dict(copy.deepcopy(saved))
    assert first + train(optimizer, scheduler, V1_STEP, 19) == uninterrupted
    derived = {"_unchained"}
    if name == "OneCycleLR":
        derived |= {"initial_lrs", "min_lrs", "_lr_points", "_momentum_points", "_phase_ends"}
    assert not derived & set(scheduler.state_dict())
