"""The multi-tensor Adam kernel and its launcher (``torchkit.kernels.adam``).

Run by Triton's interpreter on CPU tensors: low-precision results bitwise against torch's fused
Adam in the same dtype, the aligned (128-bit) and fallback variants, the step count kept on the
device by the last program of a tensor, ``found_inf`` and ``grad_scale`` read in the kernel, the
tables rewritten only when they change. The slow test at the end compiles every variant for
sm_90 with Triton's real compiler and reads its SASS and PTX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch
from _adam_reference import cuda_adam_step, plans_built
from _helpers import assert_tensors_close
from torch.optim.adam import adam as torch_adam

import torchkit
from torchkit import kernel_report
from torchkit.backend import interpreter_enabled
from torchkit.kernels.adam import adam_multi_tensor
from torchkit.optim import FusedAdam, FusedAdamW

_MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

pytestmark = pytest.mark.interpreter

KERNEL = "_adam_kernel"
HYPER = [(1e-2, 0.9, 0.999, 1e-8, 0.0)]
OPTIONS = {"maximize": False, "decoupled_weight_decay": False}


@pytest.fixture(autouse=True)
def _needs_interpreter() -> None:
    if not interpreter_enabled():
        pytest.skip("TRITON_INTERPRET=1 is not set")


@pytest.fixture
def launches(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The compile-time switches of every interpreted launch of the Adam kernel."""
    from triton.runtime.interpreter import InterpretedFunction

    seen: list[dict[str, Any]] = []
    original = InterpretedFunction.run

    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.fn.__name__ == KERNEL:
            seen.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", run)
    return seen


def adam_tensors(shapes: list[tuple[int, ...]], dtype: torch.dtype = torch.float32) -> dict:
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    return {
        "params": params,
        "exp_avgs": [torch.zeros_like(p) for p in params],
        "exp_avg_sqs": [torch.zeros_like(p) for p in params],
        "max_exp_avg_sqs": [],
        "state_steps": [torch.zeros(()) for _ in params],
    }


def reference_step(tensors: dict, grads: list[torch.Tensor], **kwargs: Any) -> None:
    """torch's functional fused Adam (its CPU kernel) on the same lists."""
    torch_adam(
        tensors["params"],
        grads,
        tensors["exp_avgs"],
        tensors["exp_avg_sqs"],
        tensors["max_exp_avg_sqs"],
        tensors["state_steps"],
        fused=True,
        amsgrad=False,
        beta1=0.9,
        beta2=0.999,
        lr=1e-2,
        weight_decay=0.0,
        eps=1e-8,
        maximize=False,
        **kwargs,
    )


def train_fused(
    dtype: torch.dtype, steps: int, found_inf_at: int | None = None, **kwargs: Any
) -> tuple[list[torch.nn.Parameter], FusedAdamW, list[list[torch.Tensor]]]:
    """``steps`` FusedAdam steps under the interpreter on three tensors in two param groups
    (different betas, eps and weight decay), a fixed gradient sequence; ``found_inf`` set at
    step ``found_inf_at`` when a GradScaler's ``grad_scale`` is passed."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(37, 61), (1000,), (7,)]
    init = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    scale = kwargs.pop("grad_scale", None)
    factor = 1.0 if scale is None else float(scale)
    grads = [
        [(torch.randn(s, generator=gen) * 0.1 * factor).to(dtype) for s in shapes]
        for _ in range(steps)
    ]
    params = [torch.nn.Parameter(t.clone()) for t in init]
    groups = [
        {"params": params[:2]},
        {"params": params[2:], "lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    ]
    opt = FusedAdam(groups, **kwargs)
    for i, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        if scale is not None:
            opt.grad_scale, opt.found_inf = scale, torch.tensor(float(i == found_inf_at))
        with torchkit.force_backend("triton-interpreter"):
            opt.step()
    return params, opt, [[g.clone() for g in step] for step in grads]


def emulate_cuda(
    opt: FusedAdam,
    params: list[torch.nn.Parameter],
    init_seed_grads: list[list[torch.Tensor]],
    found_inf_at: int | None = None,
) -> list[dict[str, torch.Tensor]]:
    """The same run through :func:`_adam_reference.cuda_adam_step`, from the same start."""
    gen = torch.Generator().manual_seed(0)
    states = []
    for group in opt.param_groups:
        for p in group["params"]:
            init = torch.randn(p.shape, generator=gen).to(p.dtype)
            states.append(
                {
                    "param": init,
                    "exp_avg": torch.zeros_like(init),
                    "exp_avg_sq": torch.zeros_like(init),
                    "max_exp_avg_sq": torch.zeros_like(init) if group["amsgrad"] else None,
                    "step": torch.zeros(()),
                    "group": group,
                }
            )
    scale = getattr(opt, "grad_scale", None)
    for i, step_grads in enumerate(init_seed_grads):
        for state, g in zip(states, step_grads, strict=True):
            group = state["group"]
            cuda_adam_step(
                state["param"], g.clone(), state["exp_avg"], state["exp_avg_sq"],
                state["max_exp_avg_sq"], state["step"], lr=group["lr"],
                beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
                weight_decay=group["weight_decay"], maximize=group["maximize"],
                decoupled=group["decoupled_weight_decay"], grad_scale=scale,
                found_inf=None if scale is None else torch.tensor(float(i == found_inf_at)),
            )  # fmt: skip
    return states


# Option combinations of the bitwise float32 test; ids read as the options.
CUDA_CASES = {
    "adam": {},
    "amsgrad": {"amsgrad": True},
    "maximize": {"maximize": True},
    "weight_decay": {"weight_decay": 0.05},
    "adamw": {"weight_decay": 0.05, "decoupled_weight_decay": True},
    "tensor_lr": {"lr": torch.tensor(2e-2)},
    "grad_scaler": {"grad_scale": torch.tensor(1024.0)},
    "adamw-amsgrad-maximize-tensor_lr-grad_scaler": {
        "weight_decay": 0.05,
        "decoupled_weight_decay": True,
        "amsgrad": True,
        "maximize": True,
        "lr": torch.tensor(2e-2),
        "grad_scale": torch.tensor(1024.0),
    },
}


@pytest.mark.parametrize("options", CUDA_CASES.values(), ids=CUDA_CASES.keys())
def test_float32_is_bitwise_torchs_cuda_kernel(options: dict[str, Any]) -> None:
    """10 float32 steps in two param groups (a skipped overflow step under GradScaler): every
    parameter, moment and step counter bitwise equal to an emulation of torch 2.13's CUDA fused
    Adam (``_adam_reference``: float32 hyperparameters, fma lerps, IEEE sqrt and division).
    Emulation and kernel differing in the hyperparameters' precision alone (float64, as torch's
    CPU kernel keeps them) disagree on about one parameter in six after 12 steps."""
    params, opt, grads = train_fused(torch.float32, 10, found_inf_at=4, **dict(options))
    expected = emulate_cuda(opt, params, grads, found_inf_at=4)
    for i, (p, state) in enumerate(zip(params, expected, strict=True)):
        got = opt.state[p]
        assert got["step"].item() == state["step"].item(), i
        for key, value in (("param", p.detach()), *((k, got[k]) for k in _MOMENTS if k in got)):
            assert_tensors_close(value, state[key], name=f"{key} of tensor {i}", rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_is_bitwise_torchs_cuda_kernel(dtype: torch.dtype) -> None:
    """25 AdamW steps in bfloat16 and float16: every parameter bitwise equal to the emulation
    of torch's CUDA kernel in the same dtype (the kernel rounds its stores to nearest even, as a
    GPU), and at least 95% to torch's fused CPU kernel, which keeps its hyperparameters in
    float64 and orders its arithmetic differently (its fused and foreach paths agree on about
    98%)."""
    params, opt, grads = train_fused(dtype, 25, weight_decay=0.01, decoupled_weight_decay=True)
    expected = emulate_cuda(opt, params, grads)
    for i, (p, state) in enumerate(zip(params, expected, strict=True)):
        assert_tensors_close(p.detach(), state["param"], name=f"param {i}", rtol=0, atol=0)
    cpu = [torch.nn.Parameter(s["param"].clone()) for s in expected]
    gen = torch.Generator().manual_seed(0)
    for p in cpu:
        p.data = torch.randn(p.shape, generator=gen).to(dtype)
    groups = [
        {**{k: v for k, v in g.items() if k != "fused"}, "params": cpu[:2] if i == 0 else cpu[2:]}
        for i, g in enumerate(opt.param_groups)
    ]
    ref = torch.optim.Adam(groups, fused=True)
    for step_grads in grads:
        for p, g in zip(cpu, step_grads, strict=True):
            p.grad = g.clone()
        ref.step()
    equal = torch.cat([(p == q).flatten() for p, q in zip(params, cpu, strict=True)])
    assert equal.float().mean() >= 0.95, f"only {equal.float().mean():.2%} equal to torch's CPU"


def test_bfloat16_rounding_is_what_makes_the_interpreter_match(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control: without the kernel's interpreter-only rounding to nearest even, the
    interpreter truncates bfloat16 stores and most parameters drift from the emulation."""
    from torchkit.kernels.adam import AdamPlan

    monkeypatch.setattr(AdamPlan, "interpreted", False)
    params, opt, grads = train_fused(torch.bfloat16, 25)
    expected = emulate_cuda(opt, params, grads)
    equal = torch.cat([(p == s["param"]).flatten() for p, s in zip(params, expected, strict=True)])
    assert equal.float().mean() < 0.5, f"{equal.float().mean():.1%} equal without the rounding"


@pytest.mark.parametrize("magnitude", [1e19, 2e19, 1e20, 1e25, 1e38])
def test_huge_gradients_keep_the_update_finite(magnitude: float) -> None:
    """Past |g| ~ 1.8e19 float32 ``g * g`` overflows and torch's CUDA kernel (which squares
    first) turns the second moment and the parameter into NaN, as the emulation shows; there
    the kernel computes ``(1 - beta2) * g * g`` in that order, as torch's CPU kernel does, and
    stays finite: the parameter matches torch's fused CPU Adam (it stops moving once the second
    moment overflows too). Below that, it is the CUDA kernel's result, bit for bit."""
    p, q = torch.ones(4), torch.nn.Parameter(torch.ones(4))
    m, v, step = torch.zeros(4), torch.zeros(4), torch.zeros(())
    em, ev, ep, estep = torch.zeros(4), torch.zeros(4), torch.ones(4), torch.zeros(())
    ref = torch.optim.Adam([q], lr=1e-2, fused=True)
    with np.errstate(over="ignore", invalid="ignore"):  # numpy squares for the interpreter
        for sign in (1.0, -1.0):
            g = torch.full((4,), sign * magnitude)
            adam_multi_tensor([p], [g], [m], [v], [], [step], HYPER, **OPTIONS, amsgrad=False)
            cuda_adam_step(
                ep,
                g.clone(),
                em,
                ev,
                None,
                estep,
                lr=1e-2,
                beta1=0.9,
                beta2=0.999,
                eps=1e-8,
                weight_decay=0.0,
                maximize=False,
                decoupled=False,
            )
            q.grad = g.clone()
            ref.step()
    assert torch.isfinite(p).all(), p
    if magnitude * magnitude < torch.finfo(torch.float32).max:
        torch.testing.assert_close(p, ep, rtol=0, atol=0)
        torch.testing.assert_close(v, ev, rtol=0, atol=0)
    else:
        assert ep.isnan().all()  # what torch's CUDA kernel computes
        assert_tensors_close(p, q.detach())
        # torch's CPU kernel keeps 1 - beta2 in float64; the CUDA arithmetic rounds beta2 to
        # float32 first (1 - 0.999f is 1.3e-5 away from 0.001, relatively).
        assert_tensors_close(v, ref.state[q]["exp_avg_sq"], rtol=1e-4, atol=0.0)


def test_aligned_variant_only_when_every_address_is_aligned(
    launches: list[dict[str, Any]],
) -> None:
    """The variant is chosen per launch, all or nothing: one tensor starting 4 bytes into its
    storage, a parameter here or a gradient (a view into a flat buffer, as DDP's bucket views
    can be), takes the whole launch to the element-wide variant; every variant computes the
    same values. The state's alignment is known when the plan is built, the gradients' at each
    launch."""
    from torchkit.kernels.adam import AdamPlan

    def misaligned(t: torch.Tensor) -> torch.Tensor:
        storage = torch.zeros(t.numel() + 1)
        storage[1:] = t.flatten()
        return storage[1:].view(t.shape)

    results = []
    for case in ("aligned", "param", "grad"):
        tensors = adam_tensors([(300,), (9,)])
        if case == "param":
            tensors["params"][0] = misaligned(tensors["params"][0])
        plan = AdamPlan(**tensors, amsgrad=False)
        grads = [torch.linspace(-1, 1, 300), torch.ones(9)]
        if case == "grad":
            grads[1] = misaligned(grads[1])
        plan.launch(grads, HYPER, **OPTIONS)
        assert plan.aligned is (case == "aligned"), case
        results.append([p.clone() for p in tensors["params"]])
    assert [kwargs["ALIGNED"] for kwargs in launches] == [True, False, False]
    for result in results[1:]:
        for a, b in zip(results[0], result, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_adam_multi_tensor_keeps_its_tables_by_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """Called at every step over the same tensors (``fused_adam``, or the operator a compiled
    step calls), the launcher builds the tables once; a state tensor replaced by another
    (another address) gets new ones, and the results stay torch's."""
    built = plans_built(monkeypatch)
    tensors, expected = adam_tensors([(5,), (3, 4)]), adam_tensors([(5,), (3, 4)])
    for i in range(4):
        if i == 2:  # a momentum reset: another tensor
            tensors["exp_avgs"][1] = torch.zeros(3, 4)
            expected["exp_avgs"][1] = torch.zeros(3, 4)
        grads = [torch.full_like(p, i - 1.5) for p in tensors["params"]]
        lists = [tensors[k] for k in ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")]
        adam_multi_tensor(lists[0], grads, *lists[1:], tensors["state_steps"], HYPER,
                          amsgrad=False, **OPTIONS)  # fmt: skip
        reference_step(expected, grads)
    assert len(built) == 2
    for p, q in zip(tensors["params"], expected["params"], strict=True):
        assert_tensors_close(p, q)


def test_adam_multi_tensor_keeps_the_last_eight_sets_and_tells_tensors_at_one_address_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The launcher keeps the tables of the last eight sets of tensors it was called with (the
    least recently used one goes first), and a tensor at a kept address with another element
    count (a view at the start of a kept parameter) gets tables of its own."""
    built = plans_built(monkeypatch)

    def call(tensors: dict) -> None:
        lists = [tensors[k] for k in ("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs")]
        grads = [torch.ones_like(p) for p in lists[0]]
        adam_multi_tensor(lists[0], grads, *lists[1:], tensors["state_steps"], HYPER,
                          amsgrad=False, **OPTIONS)  # fmt: skip

    sets = [adam_tensors([(2,)]) for _ in range(9)]
    for tensors in sets[:8]:
        call(tensors)
    call(sets[0])  # kept: now the most recent
    assert len(built) == 8
    call(sets[8])  # a ninth set drops the least recently used, sets[1]
    call(sets[0])
    assert len(built) == 9
    call(sets[1])
    assert len(built) == 10
    whole = adam_tensors([(6,)])
    call(whole)
    start = {k: [t[:3] if t.dim() else t for t in v] for k, v in whole.items()}
    assert start["params"][0].data_ptr() == whole["params"][0].data_ptr()
    call(start)
    assert len(built) == 12
    assert torch.equal(whole["state_steps"][0], torch.tensor(2.0))


def test_captured_uploads_keep_one_host_buffer_per_contents(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A CUDA graph replays a captured host-to-device copy from its host buffer, so the plan
    keeps the buffers of captured uploads, one per distinct contents (recapturing the same
    step keeps no more), and none of uncaptured ones. Capture is faked: there is no GPU."""
    import array

    from torchkit.kernels.adam import AdamPlan

    plan = AdamPlan(**adam_tensors([(4,)]), amsgrad=False)
    monkeypatch.setattr(plan, "device", torch.device("cuda"))
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: self.clone())
    capturing = [False]
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing[0])
    for contents in ([1], [2], [1]):
        plan._upload(plan._grads, array.array("q", contents))
    assert plan._captured == {}
    capturing[0] = True
    for contents in ([1], [2], [1], [2], [1]):
        plan._upload(plan._grads, array.array("q", contents))
        assert plan._grads.tolist() == contents
    assert sorted(buffer.tolist() for buffer in plan._captured.values()) == [[1], [2]]


def test_step_counted_once_per_tensor_across_programs(launches: list[dict[str, Any]]) -> None:
    """With 32-element chunks a 100-element tensor is 4 programs: only the last to finish
    advances its counter (an empty tensor still counts its step), and the result is torch's."""
    from torchkit.kernels.adam import AdamPlan, AdamTiling

    tensors = adam_tensors([(100,), (0,), (1,), (33,)])
    expected = adam_tensors([(100,), (0,), (1,), (33,)])
    plan = AdamPlan(**tensors, amsgrad=False, tiling=AdamTiling(block=16, chunk=32))
    for i in range(3):
        grads = [torch.full_like(p, float(i) - 0.5) for p in tensors["params"]]
        plan.launch(grads, HYPER, **OPTIONS)
        reference_step(expected, grads)
    assert [s.item() for s in tensors["state_steps"]] == [3.0] * 4
    assert plan._done.count_nonzero() == 0  # the counters are reset for the next launch
    for p, q in zip(tensors["params"], expected["params"], strict=True):
        assert_tensors_close(p, q)
    assert len(launches) == 3


def test_found_inf_and_grad_scale_are_read_in_the_kernel() -> None:
    """``found_inf`` set: nothing changes, step counters included. ``grad_scale``: the
    gradients are unscaled and stored back unscaled, as torch's fused Adam does."""
    from torchkit.kernels.adam import AdamPlan

    tensors = adam_tensors([(5,), (3, 4)])
    expected = adam_tensors([(5,), (3, 4)])
    before = [p.clone() for p in tensors["params"]]
    plan = AdamPlan(**tensors, amsgrad=False)
    grads = [torch.full_like(p, 8.0) for p in tensors["params"]]
    for found_inf in (1.0, 2.0):  # any non-zero value skips (GradScaler sets 0 or 1)
        plan.launch(grads, HYPER, **OPTIONS, grad_scale=torch.tensor(4.0),
                    found_inf=torch.tensor(found_inf))  # fmt: skip
    assert [s.item() for s in tensors["state_steps"]] == [0.0, 0.0]
    for p, b, g in zip(tensors["params"], before, grads, strict=True):
        torch.testing.assert_close(p, b, rtol=0, atol=0)
        assert torch.equal(g, torch.full_like(g, 8.0))
    plan.launch(grads, HYPER, **OPTIONS, grad_scale=torch.tensor(4.0), found_inf=torch.zeros(()))
    reference_step(
        expected,
        [torch.full_like(p, 8.0) for p in expected["params"]],
        grad_scale=torch.tensor(4.0),
    )
    assert all(torch.equal(g, torch.full_like(g, 2.0)) for g in grads)
    for p, q in zip(tensors["params"], expected["params"], strict=True):
        assert_tensors_close(p, q)


def test_tables_are_rewritten_only_when_they_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same gradients and the same hyperparameter rows: no upload; new gradient tensors
    (zero_grad sets None) or a new row list (a scheduler): one upload each. A tensor lr is
    copied on the device at every launch and follows in-place changes."""
    from torchkit.kernels.adam import AdamPlan

    tensors = adam_tensors([(6,)])
    plan = AdamPlan(**tensors, amsgrad=False)
    uploads: list[torch.dtype] = []
    original = AdamPlan._upload
    monkeypatch.setattr(
        AdamPlan, "_upload", lambda self, t, v: (uploads.append(t.dtype), original(self, t, v))
    )
    lr = torch.tensor(0.5)
    rows = [(lr, 0.9, 0.999, 1e-8, 0.0)]
    grads = [torch.ones(6)]
    plan.launch(grads, rows, **OPTIONS)
    plan.launch(grads, rows, **OPTIONS)
    assert uploads == [torch.int64, torch.float64]
    lr.fill_(0.0)  # in place: read on the device, so the third step does not move
    before = tensors["params"][0].clone()
    plan.launch([torch.ones(6)], rows, **OPTIONS)
    assert uploads == [torch.int64, torch.float64, torch.int64]
    torch.testing.assert_close(tensors["params"][0], before, rtol=0, atol=0)


def test_plan_validates_its_tensors() -> None:
    from torchkit.kernels.adam import AdamPlan

    tensors = adam_tensors([(4, 4)])
    with pytest.raises(ValueError, match=r"exp_avgs\[0\] must have params\[0\]'s dtype"):
        AdamPlan(**{**tensors, "exp_avgs": [torch.zeros(4, 4).t()]}, amsgrad=False)
    with pytest.raises(ValueError, match=r"params\[0\] is not dense"):
        AdamPlan(**{**tensors, "params": [torch.ones(4, 8)[:, ::2]]}, amsgrad=False)
    with pytest.raises(ValueError, match=r"state_steps\[0\] must be a one-element float32"):
        AdamPlan(
            **{**tensors, "state_steps": [torch.zeros((), dtype=torch.float64)]}, amsgrad=False
        )
    with pytest.raises(ValueError, match="max_exp_avg_sqs must be empty"):
        AdamPlan(**{**tensors, "max_exp_avg_sqs": [torch.zeros(4, 4)]}, amsgrad=False)
    plan = AdamPlan(**tensors, amsgrad=False)
    with pytest.raises(ValueError, match="found_inf must be a one-element float32 tensor"):
        plan.launch([torch.ones(4, 4)], HYPER, **OPTIONS, found_inf=torch.zeros(2))
    with pytest.raises(RuntimeError, match="sparse gradients"):
        plan.launch([torch.ones(4, 4).to_sparse()], HYPER, **OPTIONS)
    assert tensors["state_steps"][0].item() == 0.0


@pytest.mark.slow
def test_sm90_machine_code_is_vectorized_ieee_and_spill_free() -> None:
    """Every variant of the kernel compiled for sm_90 (Triton's compiler, in a subprocess
    without the interpreter): the aligned variants load 128 bits per access in their main loop,
    every variant's square roots and divisions are IEEE (no approximate instruction in the PTX)
    and no variant spills registers."""
    if kernel_report.ptxas_path() is None:
        pytest.skip("the triton wheel ships no ptxas-blackwell binary")
    code = (
        "import json, torchkit.kernels.adam as adam\n"
        "from torchkit.kernel_report import _compile_one\n"
        "rows = [_compile_one('torchkit.kernels.adam', i, 0, 'sm_90')\n"
        "        for i in range(len(adam.aot_specs()))]\n"
        "print(json.dumps([r.__dict__ for r in rows]))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stderr[-4000:]
    rows = {row["variant"]: row for row in json.loads(done.stdout)}
    assert len(rows) == 16
    for dtype in ("fp32", "fp16", "bf16", "fp64"):
        for variant in (f"{dtype},aligned", f"{dtype},amsgrad,grad_scale,aligned"):
            assert rows[variant]["max_global_load_bits"] == 128, rows[variant]
    for variant, row in rows.items():
        assert row["ieee_sqrt_div"] is True, variant
        assert row["spill_stores"] == row["spill_loads"] == 0, variant
        if "aligned" not in variant:  # the fallback: element-wide accesses
            assert row["max_global_load_bits"] < 128, variant
