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

import pytest
import torch
from _helpers import assert_tensors_close
from torch.optim.adam import adam as torch_adam

import torchkit
from torchkit import kernel_report
from torchkit.backend import interpreter_enabled
from torchkit.optim import FusedAdamW

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


# (dtype, the kernel's interpreter-only rounding on): float16 needs no control, the interpreter
# rounds float16 stores correctly by itself.
LOW_PRECISION = [
    pytest.param(torch.bfloat16, True, id="bf16"),
    pytest.param(torch.float16, True, id="fp16"),
    pytest.param(torch.bfloat16, False, id="bf16-truncated"),
]


@pytest.mark.parametrize(("dtype", "rounding"), LOW_PRECISION)
def test_low_precision_is_bitwise_torchs_fused_adam(
    dtype: torch.dtype, rounding: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """25 AdamW steps on a fixed gradient sequence: at least 95% of the parameters bitwise
    equal to torch's fused AdamW in the same dtype (which computes in float32 too, in another
    order). Without the kernel's interpreter-only rounding to nearest even, the interpreter
    truncates bfloat16 stores and falls far below (the control that this test can fail)."""
    from torchkit.kernels.adam import AdamPlan

    if not rounding:
        monkeypatch.setattr(AdamPlan, "interpreted", False)
    gen = torch.Generator().manual_seed(0)
    shapes = [(37, 61), (1000,), (7,)]
    init = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    grads = [[(torch.randn(s, generator=gen) * 0.1).to(dtype) for s in shapes] for _ in range(25)]
    ps, qs = ([torch.nn.Parameter(t.clone()) for t in init] for _ in range(2))

    def groups(params: list[torch.nn.Parameter]) -> list[dict[str, Any]]:
        return [{"params": params[:2]}, {"params": params[2:], "lr": 3e-3}]

    opt = FusedAdamW(groups(ps), lr=1e-2, weight_decay=0.01)
    ref = torch.optim.AdamW(groups(qs), lr=1e-2, weight_decay=0.01, fused=True)
    for step_grads in grads:
        for p, q, g in zip(ps, qs, step_grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        with torchkit.force_backend("triton-interpreter"):
            opt.step()
        ref.step()
    equal = torch.cat([(p == q).flatten() for p, q in zip(ps, qs, strict=True)]).float().mean()
    if rounding:
        assert equal >= 0.95, f"only {equal:.1%} of the parameters are bitwise equal"
    else:
        assert equal < 0.5, f"{equal:.1%} equal without rounding: the control does not bite"


def test_aligned_variant_only_when_every_address_is_aligned(
    launches: list[dict[str, Any]],
) -> None:
    """A tensor starting 4 bytes into its storage takes the fallback variant for the whole
    launch; both variants compute the same values."""
    from torchkit.kernels.adam import AdamPlan

    results = []
    for offset in (0, 1):
        storage = torch.zeros(301 + offset)
        tensors = adam_tensors([(300,), (9,)])
        storage[offset : offset + 300] = tensors["params"][0]
        tensors["params"][0] = storage[offset : offset + 300]
        plan = AdamPlan(**tensors, amsgrad=False)
        grads = [torch.linspace(-1, 1, 300), torch.ones(9)]
        plan.launch(grads, HYPER, **OPTIONS)
        assert plan.aligned is (offset == 0)
        results.append([p.clone() for p in tensors["params"]])
    assert [kwargs["ALIGNED"] for kwargs in launches] == [True, False]
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


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
    plan.launch(grads, HYPER, **OPTIONS, grad_scale=torch.tensor(4.0), found_inf=torch.ones(()))
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
