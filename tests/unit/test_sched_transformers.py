"""get_scheduler against transformers' schedules, and what a scheduler does with the lr it finds.

The expected learning rates come from transformers' lambdas written out in
``_sched_reference.py`` (transformers is not a test dependency), times each group's base lr;
transformers' own test (one optimizer shared by every schedule, with a save/reload check)
is reproduced with its published values as a cross-check of those transcriptions.
"""

from __future__ import annotations

import copy
import enum
import io

import pytest
import torch
from _sched_reference import (
    assert_lrs,
    hf_constant,
    hf_constant_with_warmup,
    hf_cosine,
    hf_cosine_warmup_with_min_lr,
    hf_cosine_with_hard_restarts,
    hf_cosine_with_min_lr,
    hf_inverse_sqrt,
    hf_linear,
    hf_polynomial,
    hf_wsd,
    hyperparameters,
    lrs_of,
)
from torch.optim import lr_scheduler as torch_sched

from torchkit.optim.lr_scheduler import (
    SCHEDULER_NAMES,
    CosineRestartsLR,
    ReduceLROnPlateau,
    WarmupDecayLR,
    get_scheduler,
)

# The scheduler steps before the optimizer ever did in transformers' test pattern, and reads
# get_lr() outside step(); torch warns about both.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`:UserWarning"),
    pytest.mark.filterwarnings("ignore:To get the last learning rate:UserWarning"),
]

LR = 10.0  # the optimizer's default lr, transformers' lr_init and the base of min_lr
BASES = (LR, 3.0)  # two param groups: transformers' multipliers apply to each base lr


def make_optimizer():
    groups = [{"params": [torch.nn.Parameter(torch.ones(2))], "lr": lr} for lr in BASES]
    return torch.optim.AdamW(groups, lr=LR)


def case(name, warmup, total, kwargs, multiplier, checked):
    """``checked``: how many steps (from 0) must match transformers exactly."""
    return name, warmup, total, kwargs, multiplier, checked


# Hold-type schedules are checked 5 steps past num_training_steps too; the cosine ones up to
# it, after which transformers' cosine goes on (the differences are tested below).
PAST = 5
HF_CASES = {
    **{
        f"linear-W{w}-T{t}": case(
            "linear", w, t, {}, lambda s, w=w, t=t: hf_linear(s, w, t), t + 1 + PAST
        )
        for w, t in [(0, 10), (2, 10), (7, 40)]
    },
    **{
        f"cosine-W{w}-T{t}": case("cosine", w, t, {}, lambda s, w=w, t=t: hf_cosine(s, w, t), t + 1)
        for w, t in [(0, 10), (2, 10), (5, 37)]
    },
    **{
        f"cosine-W3-T20-cycles{c}": case(
            "cosine", 3, 20, {"num_cycles": c}, lambda s, c=c: hf_cosine(s, 3, 20, c), 21
        )
        for c in (0.25, 1.0, 1.5)
    },
    **{
        f"cosine_with_restarts-W{w}-T{t}-cycles{c}": case(
            "cosine_with_restarts",
            w,
            t,
            {"num_cycles": c},
            lambda s, w=w, t=t, c=c: hf_cosine_with_hard_restarts(s, w, t, c),
            t + 1 + PAST,
        )
        for w, t, c in [(2, 10, 2), (0, 30, 3), (5, 47, 4), (3, 20, 1), (4, 25, 2.5)]
    },
    **{
        f"polynomial-W{w}-T{t}-end{e}-power{p}": case(
            "polynomial",
            w,
            t,
            {"lr_end": e, "power": p},
            lambda s, w=w, t=t, e=e, p=p: hf_polynomial(s, w, t, LR, e, p),
            t + 1 + PAST,
        )
        for w, t, e, p in [
            (2, 10, 1e-7, 2.0),
            (0, 20, 0.0, 1.0),
            (5, 30, 1e-3, 0.5),
            (3, 25, 2.0, 3),
        ]
    },
    "constant": case("constant", None, None, {}, hf_constant, 12),
    **{
        f"constant_with_warmup-W{w}": case(
            "constant_with_warmup", w, None, {}, lambda s, w=w: hf_constant_with_warmup(s, w), 20
        )
        for w in (0, 4, 10)
    },
    **{
        f"inverse_sqrt-W{w}-timescale{ts}": case(
            "inverse_sqrt",
            w,
            None,
            {} if ts is None else {"timescale": ts},
            lambda s, w=w, ts=ts: hf_inverse_sqrt(s, w, ts),
            60,
        )
        for w, ts in [(2, None), (0, None), (5, 3), (10, 50)]
    },
    **{
        f"cosine_with_min_lr-W{w}-T{t}-{key}{value}-cycles{c}": case(
            "cosine_with_min_lr",
            w,
            t,
            {key: value, "num_cycles": c},
            lambda s, w=w, t=t, c=c, r=rate: hf_cosine_with_min_lr(s, w, t, c, r),
            t + 1,
        )
        for w, t, key, value, rate, c in [
            (2, 10, "min_lr_rate", 0.1, 0.1, 0.5),
            (0, 25, "min_lr", 1.0, 1.0 / LR, 0.5),
            (5, 40, "min_lr_rate", 0.05, 0.05, 1.0),
            (3, 17, "min_lr_rate", 0.2, 0.2, 0.3),
        ]
    },
    **{
        f"cosine_warmup_with_min_lr-W{w}-T{t}-rate{r}-warmup_rate{wr}-cycles{c}": case(
            "cosine_warmup_with_min_lr",
            w,
            t,
            {"min_lr_rate": r, "warmup_lr_rate": wr, "num_cycles": c},
            lambda s, w=w, t=t, r=r, wr=wr, c=c: hf_cosine_warmup_with_min_lr(s, w, t, c, r, wr),
            t,  # transformers' lambda reads t + 1: at t it is past its end (tested below)
        )
        for w, t, r, wr, c in [
            (0, 20, 0.1, None, 0.5),
            (1, 20, 0.1, None, 0.5),
            (4, 20, 0.1, None, 0.5),
            (4, 20, 0.1, 0.2, 0.5),
            (2, 15, 0.0, 0.5, 0.5),
            (0, 12, 0.1, 0.3, 0.5),
            (4, 20, 0.1, None, 1.0),
            (3, 16, 0.2, 0.4, 0.75),
            (0, 11, 0.0, None, 1.5),
        ]
    },
    **{
        f"warmup_stable_decay-{wt}-{dt}": case(
            "warmup_stable_decay",
            3,
            12,
            {"num_decay_steps": 5, "warmup_type": wt, "decay_type": dt, "min_lr_ratio": 0.1},
            lambda s, wt=wt, dt=dt: hf_wsd(s, 3, 4, 5, wt, dt, 0.1),
            12 + 1 + PAST,
        )
        for wt in ("linear", "cosine", "1-sqrt")
        for dt in ("linear", "cosine", "1-sqrt")
    },
    "warmup_stable_decay-cycles1": case(
        "warmup_stable_decay",
        2,
        20,
        {"num_decay_steps": 8, "num_cycles": 1.0},
        lambda s: hf_wsd(s, 2, 10, 8, num_cycles=1.0),
        20 + 1 + PAST,
    ),
    "warmup_stable_decay-stable-given": case(
        "warmup_stable_decay",
        4,
        None,
        {"num_decay_steps": 6, "num_stable_steps": 9, "decay_type": "1-sqrt"},
        lambda s: hf_wsd(s, 4, 9, 6, decay_type="1-sqrt"),
        19 + 1 + PAST,
    ),
    "warmup_stable_decay-no-warmup-no-decay": case(
        "warmup_stable_decay",
        0,
        7,
        {"num_decay_steps": 0, "min_lr_ratio": 0.25},
        lambda s: hf_wsd(s, 0, 7, 0, min_lr_ratio=0.25),
        7 + 1 + PAST,
    ),
}
# A warmup over the whole run (transformers' Trainer with warmup_ratio=1.0): transformers'
# cosine schedules divide by max(1, total - warmup), so they are at the peak at total.
# (transformers' polynomial divides by total - warmup and fails at total: checked up to it.)
WHOLE_RUN_WARMUP = {
    "linear": ({}, lambda s: hf_linear(s, 5, 5), 5 + 1 + PAST),
    "cosine": ({}, lambda s: hf_cosine(s, 5, 5), 5 + 1),
    "cosine-cycles1.5": ({"num_cycles": 1.5}, lambda s: hf_cosine(s, 5, 5, 1.5), 5 + 1),
    "cosine_with_restarts": ({}, lambda s: hf_cosine_with_hard_restarts(s, 5, 5), 5 + 1 + PAST),
    "polynomial": ({"power": 2.0}, lambda s: hf_polynomial(s, 5, 5, LR, power=2.0), 5),
    "cosine_with_min_lr": (
        {"min_lr_rate": 0.1},
        lambda s: hf_cosine_with_min_lr(s, 5, 5, min_lr_rate=0.1),
        5 + 1,
    ),
    "cosine_warmup_with_min_lr": (
        {"min_lr_rate": 0.1},
        lambda s: hf_cosine_warmup_with_min_lr(s, 5, 5, min_lr_rate=0.1),
        5 + 1,
    ),
    "cosine_warmup_with_min_lr-warmup_rate": (
        {"min_lr_rate": 0.1, "warmup_lr_rate": 0.3},
        lambda s: hf_cosine_warmup_with_min_lr(s, 5, 5, min_lr_rate=0.1, warmup_lr_rate=0.3),
        5 + 1,
    ),
    "warmup_stable_decay": (
        {"num_decay_steps": 0, "min_lr_ratio": 0.2},
        lambda s: hf_wsd(s, 5, 0, 0, min_lr_ratio=0.2),
        5 + 1 + PAST,
    ),
}
HF_CASES.update(
    {
        f"{key}-W5-T5": case(key.split("-")[0], 5, 5, kwargs, multiplier, checked)
        for key, (kwargs, multiplier, checked) in WHOLE_RUN_WARMUP.items()
    }
)


@pytest.mark.parametrize("case", list(HF_CASES))
def test_get_scheduler_reproduces_transformers(case):
    name, warmup, total, kwargs, multiplier, checked = HF_CASES[case]
    optimizer = make_optimizer()
    scheduler = get_scheduler(name, optimizer, warmup, total, kwargs)
    lrs = lrs_of(optimizer, scheduler, checked)
    expected = [[base * multiplier(t) for base in BASES] for t in range(checked)]
    assert_lrs(lrs, expected, case)


def test_every_name_of_transformers_scheduler_type_is_covered():
    assert {HF_CASES[c][0] for c in HF_CASES} | {"reduce_lr_on_plateau", "greedy"} == set(
        SCHEDULER_NAMES
    )


def test_it_takes_transformers_scheduler_type_enum():
    class SchedulerType(str, enum.Enum):  # transformers' is a str Enum too
        LINEAR = "linear"

    scheduler = get_scheduler(SchedulerType.LINEAR, make_optimizer(), 2, 10)
    assert isinstance(scheduler, WarmupDecayLR)
    assert scheduler.decay == "linear"


def test_reduce_lr_on_plateau_is_torchs():
    metrics = [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85]
    options = {"factor": 0.5, "patience": 1, "cooldown": 1, "min_lr": 0.5}
    optimizer, reference_optimizer = make_optimizer(), make_optimizer()
    scheduler = get_scheduler("reduce_lr_on_plateau", optimizer, 3, 10, options)
    reference = torch_sched.ReduceLROnPlateau(reference_optimizer, **options)
    assert isinstance(scheduler, ReduceLROnPlateau)
    for metric in metrics:
        scheduler.step(metric)
        reference.step(metric)
        assert scheduler.get_last_lr() == reference.get_last_lr()


# ---------------------------------------------------- where torchkit differs, on purpose


def test_past_the_end_the_lr_holds_where_transformers_cosine_climbs():
    warmup, total = 2, 10
    optimizer = make_optimizer()
    lrs = lrs_of(optimizer, get_scheduler("cosine", optimizer, warmup, total), total + 6)
    assert [row[0] for row in lrs[total:]] == [0.0] * 6
    assert all(hf_cosine(t, warmup, total) > 0.0 for t in range(total + 1, total + 6))


def test_a_cosine_wave_holds_where_it_is_at_the_end_and_wsd_drops_to_its_minimum():
    """With num_cycles=1, transformers' cosine is back at the base lr at num_training_steps
    and torchkit's stays there; transformers' warmup_stable_decay drops to min_lr_ratio at
    its end whatever the wave, and so does torchkit's."""
    optimizer = make_optimizer()
    scheduler = get_scheduler("cosine", optimizer, 3, 20, {"num_cycles": 1.0})
    lrs = lrs_of(optimizer, scheduler, 25)
    assert hf_cosine(20, 3, 20, 1.0) == 1.0
    assert lrs[20:] == [list(BASES)] * 5
    assert hf_cosine(21, 3, 20, 1.0) < 1.0  # transformers' wave goes on
    optimizer = make_optimizer()
    options = {"num_decay_steps": 17, "num_cycles": 1.0, "min_lr_ratio": 0.1}
    lrs = lrs_of(optimizer, get_scheduler("warmup_stable_decay", optimizer, 3, 20, options), 25)
    assert hf_wsd(19, 3, 0, 17, num_cycles=1.0) > 0.9
    assert hf_wsd(20, 3, 0, 17, num_cycles=1.0, min_lr_ratio=0.1) == 0.1
    assert_lrs(lrs[20:], [[base * 0.1 for base in BASES]] * 5)


@pytest.mark.parametrize("cycles", [0.5, 1.0])
def test_cosine_warmup_with_min_lr_is_one_step_ahead_and_holds_its_end(cycles):
    """transformers' lambda reads t + 1: its decay ends at num_training_steps - 1, and at
    num_training_steps it is one step past its end, back up the wave; torchkit holds."""
    warmup, total, rate = 4, 20, 0.1
    optimizer = make_optimizer()
    options = {"min_lr_rate": rate, "num_cycles": cycles}
    scheduler = get_scheduler("cosine_warmup_with_min_lr", optimizer, warmup, total, options)
    assert scheduler.last_epoch == 1  # transformers' LambdaLR: 0
    lrs = lrs_of(optimizer, scheduler, total + 3)
    end = hf_cosine_warmup_with_min_lr(total - 1, warmup, total, cycles, rate)
    assert end == (rate if cycles == 0.5 else 1.0)
    for t in range(total - 1, total + 3):  # the end of the decay from total - 1 on
        assert_lrs(lrs[t], [base * end for base in BASES], f"step {t}")
    past_the_end = hf_cosine_warmup_with_min_lr(total, warmup, total, cycles, rate)
    assert past_the_end > end if cycles == 0.5 else past_the_end < end


# ------------------------------------------------------------ transformers' test pattern


def unwrap_schedule(scheduler, num_steps=10):
    lrs = []
    for _ in range(num_steps):
        lrs.append(scheduler.get_lr()[0])
        scheduler.step()
    return lrs


def unwrap_and_save_reload_schedule(scheduler, num_steps=10):
    lrs = []
    for step in range(num_steps):
        lrs.append(scheduler.get_lr()[0])
        scheduler.step()
        if step == num_steps // 2:
            buffer = io.BytesIO()
            torch.save(scheduler.state_dict(), buffer)
            buffer.seek(0)
            scheduler.load_state_dict(torch.load(buffer, weights_only=True))
    return lrs


COMMON = {"num_warmup_steps": 2, "num_training_steps": 10}
# (kwargs, transformers' published values (the first seven) or None, multiplier)
PATTERN = {
    "constant": ({}, [10.0] * 10, hf_constant),
    "constant_with_warmup": (
        {"num_warmup_steps": 4},
        [0.0, 2.5, 5.0, 7.5, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
        lambda t: hf_constant_with_warmup(t, 4),
    ),
    "linear": (
        COMMON,
        [0.0, 5.0, 10.0, 8.75, 7.5, 6.25, 5.0, 3.75, 2.5, 1.25],
        lambda t: hf_linear(t, 2, 10),
    ),
    "cosine": (
        COMMON,
        [0.0, 5.0, 10.0, 9.61, 8.53, 6.91, 5.0, 3.08, 1.46, 0.38],
        lambda t: hf_cosine(t, 2, 10),
    ),
    "cosine_with_restarts": (
        {**COMMON, "scheduler_specific_kwargs": {"num_cycles": 2}},
        [0.0, 5.0, 10.0, 8.53, 5.0, 1.46, 10.0, 8.53, 5.0, 1.46],
        lambda t: hf_cosine_with_hard_restarts(t, 2, 10, 2),
    ),
    "polynomial": (
        {**COMMON, "scheduler_specific_kwargs": {"power": 2.0, "lr_end": 1e-7}},
        [0.0, 5.0, 10.0, 7.656, 5.625, 3.906, 2.5, 1.406, 0.625, 0.156],
        lambda t: hf_polynomial(t, 2, 10, LR, 1e-7, 2.0),
    ),
    "inverse_sqrt": (
        {"num_warmup_steps": 2},
        [0.0, 5.0, 10.0, 8.165, 7.071, 6.325, 5.774, 5.345, 5.0, 4.714],
        lambda t: hf_inverse_sqrt(t, 2),
    ),
    "cosine_with_min_lr": (
        {**COMMON, "scheduler_specific_kwargs": {"min_lr": 1.0}},
        None,
        lambda t: hf_cosine_with_min_lr(t, 2, 10, 0.5, 0.1),
    ),
    "cosine_warmup_with_min_lr": (
        {**COMMON, "scheduler_specific_kwargs": {"min_lr_rate": 0.1}},
        None,
        lambda t: hf_cosine_warmup_with_min_lr(t, 2, 10, 0.5, 0.1),
    ),
    "warmup_stable_decay": (
        {
            **COMMON,
            "scheduler_specific_kwargs": {"num_decay_steps": 4, "decay_type": "1-sqrt"},
        },
        None,
        lambda t: hf_wsd(t, 2, 4, 4, decay_type="1-sqrt"),
    ),
}


def test_transformers_test_pattern_one_optimizer_for_every_schedule():
    """transformers' ScheduleInitTest: every schedule is built in turn on one optimizer
    (each starts from initial_lr, whatever lr the previous one left, 0 or not), unwrapped
    through get_lr(), then built again and unwrapped with a save/reload half way."""
    model = torch.nn.Linear(50, 50)
    optimizer = torch.optim.AdamW(model.parameters(), lr=10.0)
    for name, (kwargs, published, multiplier) in PATTERN.items():
        scheduler = get_scheduler(name, optimizer, **kwargs)
        lrs_1 = unwrap_schedule(scheduler)
        assert_lrs(lrs_1, [10.0 * multiplier(t) for t in range(10)], name)
        if published is not None:  # transformers' tolerance for its rounded values
            assert all(abs(a - b) <= 1e-2 for a, b in zip(lrs_1, published, strict=True)), name
        scheduler = get_scheduler(name, optimizer, **kwargs)
        lrs_2 = unwrap_and_save_reload_schedule(scheduler)
        assert lrs_2 == lrs_1, name


# ------------------------------------------------------------- construction semantics


def optimizer_left_at(lr):
    """An optimizer whose lr a previous schedule moved from initial_lr=10.0 to ``lr``."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=10.0)
    optimizer.param_groups[0]["initial_lr"] = 10.0
    optimizer.param_groups[0]["lr"] = lr
    return optimizer


def test_start_from_lr_follows_the_lr_found_as_torchs_chainable_schedulers():
    """The default: the lr found is a factor on the schedule (2.5 on a base of 10: 0.25)."""
    optimizer, twin = optimizer_left_at(2.5), optimizer_left_at(2.5)
    scheduler = WarmupDecayLR(optimizer, 4, None, decay="constant", warmup_start_factor=0.5)
    reference = torch_sched.LinearLR(twin, start_factor=0.5, total_iters=4)
    lrs, expected = lrs_of(optimizer, scheduler, 10), lrs_of(twin, reference, 10)
    assert_lrs(lrs, expected, "WarmupDecayLR vs LinearLR")
    assert lrs[-1] == [2.5]
    # A zero left behind stays a zero, as for torch's recursive schedulers.
    optimizer = optimizer_left_at(0.0)
    scheduler = WarmupDecayLR(optimizer, 4, None, decay="constant", warmup_start_factor=0.5)
    assert lrs_of(optimizer, scheduler, 8) == [[0.0]] * 8


def test_start_from_initial_lr_ignores_it_as_transformers_schedules():
    for left in (2.5, 0.0):
        optimizer, twin = optimizer_left_at(left), optimizer_left_at(left)
        scheduler = WarmupDecayLR(
            optimizer,
            4,
            None,
            decay="constant",
            warmup_start_factor=0.5,
            start_from="initial_lr",
        )
        reference = torch_sched.LambdaLR(twin, lambda t: 0.5 + 0.5 * min(t, 4) / 4)
        assert_lrs(lrs_of(optimizer, scheduler, 10), lrs_of(twin, reference, 10), f"{left}")


@pytest.mark.parametrize("last_epoch", [0, 3, 11])
@pytest.mark.parametrize("found", [4.0, 9.0], ids=lambda f: f"lr-found={f}")
def test_rebuilding_with_last_epoch_gives_torchs_result(found, last_epoch):
    """Rebuilt with ``last_epoch=k`` on an optimizer holding some lr (right for step k + 1 or
    not), torch's recursive cosine keeps that lr at the step it lands on and continues from
    it; ``LambdaLR`` (transformers) computes the closed form. ``start_from="lr"`` gives the
    first, ``start_from="initial_lr"`` and get_scheduler the second."""
    total = 20
    steps = total - last_epoch - 1

    def closed_form(opt, k):
        return torch_sched.LambdaLR(opt, lambda t: hf_cosine(t, 0, total), last_epoch=k)

    builds = {
        "lr": (
            lambda opt, k: WarmupDecayLR(opt, 0, total, last_epoch=k),
            lambda opt, k: torch_sched.CosineAnnealingLR(opt, T_max=total, last_epoch=k),
        ),
        "initial_lr": (
            lambda opt, k: WarmupDecayLR(opt, 0, total, start_from="initial_lr", last_epoch=k),
            closed_form,
        ),
        "get_scheduler": (
            lambda opt, k: get_scheduler("cosine", opt, 0, total, {"last_epoch": k}),
            closed_form,
        ),
    }
    for what, (build, build_reference) in builds.items():
        optimizer, twin = optimizer_left_at(found), optimizer_left_at(found)
        scheduler, reference = build(optimizer, last_epoch), build_reference(twin, last_epoch)
        assert scheduler.last_epoch == reference.last_epoch == last_epoch + 1
        assert_lrs(lrs_of(optimizer, scheduler, steps), lrs_of(twin, reference, steps), what)


# ------------------------------------------------------------------------- bad input

BAD = {
    "unknown-name": (("cosine_annealing", 2, 10, None), ValueError, "name must be one of"),
    "no-warmup": (("linear", None, 10, None), ValueError, "linear requires num_warmup_steps"),
    "no-total": (("cosine", 2, None, None), ValueError, "cosine requires num_training_steps"),
    "total<warmup": (
        ("linear", 10, 9, None),
        ValueError,
        "num_training_steps must be at least num_warmup_steps, got num_training_steps=9 and "
        "num_warmup_steps=10",
    ),
    "restarts-total<warmup": (
        ("cosine_with_restarts", 3, 2, None),
        ValueError,
        "num_training_steps must be at least num_warmup_steps",
    ),
    "unknown-kwarg": (
        ("cosine", 2, 10, {"num_cycle": 1}),
        TypeError,
        r"get_scheduler\('cosine'\) got unexpected scheduler_specific_kwargs \['num_cycle'\]",
    ),
    "kwargs-for-constant": (
        ("constant", None, None, {"last_epoch": 3}),
        TypeError,
        "it takes: none",
    ),
    "plateau-kwarg": (
        ("reduce_lr_on_plateau", None, None, {"verbose": True}),
        TypeError,
        r"unexpected scheduler_specific_kwargs \['verbose'\]",
    ),
    "polynomial-end-above-init": (
        ("polynomial", 2, 10, {"lr_end": 20.0}),
        ValueError,
        r"lr_end \(20.0\) must be smaller than initial lr \(10.0\)",
    ),
    "polynomial-power-0": (("polynomial", 2, 10, {"power": 0}), ValueError, "power must be > 0"),
    "polynomial-negative-end": (
        ("polynomial", 2, 10, {"lr_end": -1.0}),
        ValueError,
        "lr_end must be >= 0, got -1.0",
    ),
    "min_lr-above-lr": (
        ("cosine_with_min_lr", 2, 10, {"min_lr": 15.0}),
        ValueError,
        r"min_lr must be in \[0, 10.0\] \(the optimizer's default lr, which transformers divides "
        r"it by\), got 15.0",
    ),
    "min_lr_rate-above-1": (
        ("cosine_warmup_with_min_lr", 2, 10, {"min_lr_rate": 1.5}),
        ValueError,
        r"min_lr_rate must be in \[0, 1\], got 1.5",
    ),
    "warmup_lr_rate-above-1": (
        ("cosine_warmup_with_min_lr", 3, 10, {"min_lr_rate": 0.1, "warmup_lr_rate": 2}),
        ValueError,
        r"warmup_lr_rate must be in \[0, 1\], got 2",
    ),
    "wsd-min_lr_ratio": (
        ("warmup_stable_decay", 2, 10, {"num_decay_steps": 3, "min_lr_ratio": 1.5}),
        ValueError,
        r"min_lr_ratio must be in \[0, 1\], got 1.5",
    ),
    "wsd-nothing": (
        ("warmup_stable_decay", 0, None, {"num_decay_steps": 0, "num_stable_steps": 0}),
        ValueError,
        "needs at least one step of warmup, stable phase or decay",
    ),
    "min_lr-and-rate": (
        ("cosine_with_min_lr", 2, 10, {"min_lr": 1.0, "min_lr_rate": 0.1}),
        ValueError,
        "give min_lr or min_lr_rate, not both",
    ),
    "min_lr-neither": (
        ("cosine_with_min_lr", 2, 10, {}),
        ValueError,
        "one of min_lr or min_lr_rate must be given",
    ),
    "warmup-rate-with-one-warmup-step": (
        ("cosine_warmup_with_min_lr", 1, 10, {"min_lr_rate": 0.1, "warmup_lr_rate": 0.5}),
        ValueError,
        "warmup_lr_rate and num_warmup_steps=1",
    ),
    "wsd-no-decay-steps": (
        ("warmup_stable_decay", 2, 10, {}),
        ValueError,
        r"needs scheduler_specific_kwargs \['num_decay_steps'\]",
    ),
    "wsd-no-length": (
        ("warmup_stable_decay", 2, None, {"num_decay_steps": 3}),
        ValueError,
        "needs num_training_steps or num_stable_steps",
    ),
    "wsd-negative-stable": (
        ("warmup_stable_decay", 6, 10, {"num_decay_steps": 5}),
        ValueError,
        "the stable phase would be negative",
    ),
    "wsd-type": (
        ("warmup_stable_decay", 2, 10, {"num_decay_steps": 3, "decay_type": "exponential"}),
        ValueError,
        "decay_type must be one of 'linear', 'cosine', '1-sqrt'; got 'exponential'",
    ),
    "wsd-cycles-with-linear": (
        (
            "warmup_stable_decay",
            2,
            10,
            {"num_decay_steps": 3, "decay_type": "linear", "num_cycles": 1},
        ),
        ValueError,
        "num_cycles is only used by decay_type='cosine'",
    ),
    "negative-warmup": (("cosine", -1, 10, None), ValueError, "num_warmup_steps must be"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments_are_refused_before_the_optimizer_changes(case):
    args, error, message = BAD[case]
    optimizer = make_optimizer()
    before = copy.deepcopy(hyperparameters(optimizer))
    with pytest.raises(error, match=message):
        get_scheduler(args[0], optimizer, *args[1:])
    assert hyperparameters(optimizer) == before


def test_wsd_with_both_lengths_warns_and_uses_num_stable_steps():
    optimizer = make_optimizer()
    with pytest.warns(UserWarning, match="num_stable_steps will be used"):
        scheduler = get_scheduler(
            "warmup_stable_decay", optimizer, 2, 100, {"num_decay_steps": 3, "num_stable_steps": 4}
        )
    assert (scheduler.stable_steps, scheduler.total_steps) == (4, 9)


def test_restarts_are_a_cosine_restarts_lr():
    scheduler = get_scheduler("cosine_with_restarts", make_optimizer(), 2, 10)
    assert isinstance(scheduler, CosineRestartsLR)
    assert (scheduler.total_steps, scheduler.num_cycles, scheduler.warmup_prefix) == (10, 1, True)
