"""The launcher's own contract: argument layouts the kernel cannot index directly."""

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_tensors_close

from torchkit.backend import Backend, force_backend, triton_available
from torchkit.nn import FusedConv2dReLU, fuse_conv_relu
from torchkit.nn.functional import conv2d_relu

needs_interpreter = pytest.mark.skipif(
    not triton_available(), reason="the Triton interpreter needs triton installed"
)


@needs_interpreter
@pytest.mark.interpreter
def test_strided_bias_gives_the_reference_output():
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3)
    bias = (torch.arange(8.0) * 10)[::2]  # stride 2: the kernel must not read it as contiguous
    with force_backend(Backend.TRITON_INTERPRETER):
        out = conv2d_relu(x, w, bias, padding=1)
    assert_tensors_close(out, F.relu(F.conv2d(x, w, bias, padding=1)))


@needs_interpreter
@pytest.mark.interpreter
def test_offsets_past_int32_are_refused_not_wrapped():
    # A broadcast view spans 2**32 output positions without allocating them.
    x = torch.zeros(1, 1, 1, 1).expand(1, 1, 65536, 65536)
    with force_backend(Backend.TRITON_INTERPRETER), pytest.raises(ValueError, match="2\\*\\*31"):
        conv2d_relu(x, torch.ones(1, 1, 1, 1))


@pytest.mark.parametrize(
    "register",
    [
        lambda m: m.register_full_backward_hook(lambda *a: None),
        lambda m: m.register_full_backward_pre_hook(lambda *a: None),
        lambda m: m.register_forward_hook(lambda *a: None),
        lambda m: m._register_state_dict_hook(lambda *a: None),
    ],
    ids=["backward", "backward-pre", "forward", "state-dict"],
)
@pytest.mark.parametrize("where", [0, 1], ids=["on-conv", "on-relu"])
def test_pairs_with_hooks_are_left_alone(register, where):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
    register(model[where])
    fused, names = fuse_conv_relu(model, return_fused=True)
    assert names == []
    assert not isinstance(fused[0], FusedConv2dReLU)


# --- autotuning: which tiles a layer tries ------------------------------------------------


def _tiles_kept(dtype=torch.float16, precision="ieee", flat_k=False, **layer):
    """The (BLOCK_M, BLOCK_N, BLOCK_K) of the autotune configs kept for a layer."""
    from torchkit.kernels import conv2d_relu

    args = {"M": 1 << 16, "C_IN_G": 64, "C_OUT_G": 128, "KH": 3, "KW": 3, **layer}
    args["x_ptr"] = torch.empty(0, dtype=dtype)
    kept = conv2d_relu._prune_configs(
        conv2d_relu._autotune_configs(), args, FLAT_K=flat_k, INPUT_PRECISION=precision
    )
    return {tuple(c.kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K")) for c in kept}


@needs_interpreter
@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        pytest.param(
            {}, {(128, 128, 32), (128, 64, 32), (64, 64, 32), (128, 32, 32)}, id="resnet-layer"
        ),
        pytest.param(
            {"dtype": torch.float32, "precision": "tf32"},
            {(128, 128, 32), (128, 64, 32), (64, 64, 32), (128, 32, 32)},
            id="tf32-resnet-layer",
        ),
        pytest.param(
            {"dtype": torch.float32}, {(64, 64, 32), (128, 32, 32)}, id="ieee-32-accumulators"
        ),
        pytest.param({"C_OUT_G": 16}, {(64, 16, 32)}, id="16-output-channels"),
        pytest.param(
            {"C_IN_G": 16},
            {(128, 128, 32), (128, 64, 32), (64, 64, 32), (128, 32, 32)},
            id="16-input-channels-shallowest-tiles",
        ),
        pytest.param(
            {"C_IN_G": 3, "KH": 7, "KW": 7, "C_OUT_G": 64, "flat_k": True},
            {(64, 64, 32)},
            id="flat-k-16-gathered-per-thread",
        ),
        pytest.param({"M": 20, "C_OUT_G": 8}, {(64, 16, 32)}, id="tiny-layer-smallest-tile"),
    ],
)
def test_pruning_keeps_the_tiles_a_layer_can_fill(layer, expected):
    assert _tiles_kept(**layer) == expected


@needs_interpreter
def test_autotune_key_is_channels_kernel_size_and_m_bucket():
    from torchkit.kernels import conv2d_relu

    assert conv2d_relu._conv2d_relu_fwd_kernel_autotuned.keys == [
        "C_IN_G",
        "C_OUT_G",
        "KH",
        "KW",
        "M_BUCKET",
    ]


@needs_interpreter
@pytest.mark.interpreter
def test_packed_weight_must_match_the_weight():
    from torchkit.kernels.conv2d_relu import conv2d_relu_fwd, pack_weight

    x, w = torch.randn(1, 4, 5, 5), torch.randn(2, 4, 3, 3)
    wrong = pack_weight(torch.randn(2, 4, 3, 1))
    with pytest.raises(ValueError, match=r"packed_weight must be pack_weight\(weight\)"):
        conv2d_relu_fwd(x, w, None, (1, 1), (0, 0), (1, 1), 1, packed_weight=wrong)


@needs_interpreter
def test_pipelines_beyond_the_shared_memory_budget_are_dropped():
    import triton

    from torchkit.kernels.conv2d_relu import _fits

    deep = triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64}, num_warps=8, num_stages=3)
    assert _fits(deep, 2, tensor_cores=True, flat_k=False)  # fp16: 96 KB
    assert not _fits(deep, 4, tensor_cores=True, flat_k=False)  # fp32: 192 KB


@needs_interpreter
@pytest.mark.interpreter
def test_16_by_16_kernel_uses_every_tap_bit(kernel_launches):
    # The GEMM form tracks kernel rows in bits 16..31 of an int32 (bit 31 is the sign bit) and
    # columns in bits 0..15; padding puts some taps of every border row outside the image.
    from torchkit.kernels.conv2d_relu import conv2d_relu_fwd, uses_flat_k

    torch.manual_seed(0)
    x = torch.randn(1, 16, 17, 16, dtype=torch.float64)
    w = torch.randn(4, 16, 16, 16, dtype=torch.float64)
    assert not uses_flat_k(16, 16, 16)
    out = conv2d_relu_fwd(x, w, None, (1, 1), (1, 1), (1, 1), 1)
    assert_tensors_close(out, F.relu(F.conv2d(x, w, padding=1)))
    assert kernel_launches == ["_conv2d_relu_fwd_kernel"]
