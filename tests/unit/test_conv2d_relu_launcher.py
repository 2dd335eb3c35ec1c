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


@needs_interpreter
@pytest.mark.interpreter
def test_padding_and_tap_offsets_past_int32_are_not_wrapped(kernel_launches):
    """The input spans 16 elements, but its row stride is 2**28: the tap kh = 1 (8 rows down)
    of an output row 8 rows above the image is 8 * 2**28 = 2**31 elements from the padding's
    first row, 2**31 the other way. In int32 both wrap to -2**31, and the kernel read 2**32
    elements before the input (a crash). The launcher must notice and read a channels_last
    copy (16 elements) instead."""
    from torchkit.kernels.conv2d_relu import conv2d_relu_fwd

    torch.manual_seed(0)
    storage = torch.randn(16, dtype=torch.float64)
    x = storage.as_strided((1, 16, 1, 1), (16, 1, 2**28, 16))
    weight = torch.randn(4, 16, 2, 1, dtype=torch.float64)
    out = conv2d_relu_fwd(x, weight, None, (1, 1), (8, 0), (8, 1), 1)
    expected = F.relu(F.conv2d(x.contiguous(), weight, padding=(8, 0), dilation=(8, 1)))
    assert_tensors_close(out, expected)
    assert kernel_launches == ["_conv2d_relu_fwd_kernel"]


@needs_interpreter
@pytest.mark.parametrize(
    "call",
    [
        # Rows 16 elements apart, 2**27 rows of padding either side: x offsets reach 2**32.
        pytest.param(((1, 16, 2, 1), (1, 16, 1, 1), (2**27, 0), (1, 1), "x offsets"), id="x"),
        # A broadcast input (zero strides) and 2**31 + 2**16 output pixels.
        pytest.param(
            ((1, 1, 2**16, 2**15 + 1), (1, 1, 1, 1), (0, 0), (1, 1), "output"), id="output"
        ),
    ],
)
def test_what_overflows_even_in_channels_last_is_refused(call):
    # Meta tensors: the launcher refuses before anything is allocated or launched.
    from torchkit.kernels.conv2d_relu import conv2d_relu_fwd

    x_shape, w_shape, padding, dilation, what = call
    x = torch.empty(x_shape, device="meta")
    if what == "output":
        x = torch.empty(1, 1, 1, 1, device="meta").expand(x_shape)
    weight = torch.empty(w_shape, device="meta")
    with pytest.raises(ValueError, match=r"int32 and supports offsets < 2\*\*31: " + what):
        conv2d_relu_fwd(x, weight, None, (1, 1), padding, dilation, 1)


@needs_interpreter
def test_groups_are_folded_into_one_grid_axis(monkeypatch):
    """CUDA limits a grid's second axis to 65535: the groups share the first with the tiles,
    so a depthwise layer with 70,000 channels launches (here recorded, not run: 70,000
    interpreted programs would take minutes)."""
    from triton.runtime.interpreter import InterpretedFunction

    from torchkit.kernels.conv2d_relu import conv2d_relu_fwd

    grids = []
    monkeypatch.setattr(InterpretedFunction, "run", lambda self, *a, grid, **k: grids.append(grid))
    x, weight = torch.randn(1, 70000, 1, 1), torch.randn(70000, 1, 1, 1)
    conv2d_relu_fwd(x, weight, None, (1, 1), (0, 0), (1, 1), 70000)
    assert grids == [(70000,)]


@needs_interpreter
@pytest.mark.interpreter
@pytest.mark.parametrize(
    ("channels", "dtype", "sliced", "alignment"),
    [
        pytest.param(24, torch.float16, 0, 8, id="fp16-24-channels-16-byte-vectors"),
        pytest.param(20, torch.float32, 0, 4, id="fp32-20-channels-16-byte-vectors"),
        pytest.param(20, torch.float16, 0, 4, id="fp16-20-channels-8-byte-vectors"),
        pytest.param(24, torch.float16, 1, 1, id="fp16-24-of-25-channels-unaligned-rows"),
        pytest.param(24, torch.float64, 2, 2, id="fp64-24-of-26-channels"),
    ],
)
def test_channel_alignment_is_what_divides_channels_and_strides(
    channels, dtype, sliced, alignment, monkeypatch
):
    """C_ALIGN tells the compiler that the channel count and the input's strides are multiples
    of it (up to a 16-byte vector), which is what lets a layer with 24 fp16 channels load them
    in 16-byte vectors. The kernel rounds them down to multiples: a wrong C_ALIGN reads the
    wrong pixels, so each case is also checked against torch."""
    from triton.runtime.interpreter import InterpretedFunction

    from torchkit.kernels.conv2d_relu import conv2d_relu_fwd

    seen = []
    original = InterpretedFunction.run

    def recording(self, *args, **kwargs):
        seen.append(kwargs["C_ALIGN"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", recording)
    torch.manual_seed(0)
    wide = torch.randn(2, channels + sliced, 5, 4).to(dtype, memory_format=torch.channels_last)
    x = wide[:, sliced:]  # the last `channels` channels: rows channels + sliced apart
    weight = torch.randn(8, channels, 3, 3).to(dtype)
    out = conv2d_relu_fwd(x, weight, None, (1, 1), (1, 1), (1, 1), 1)
    assert seen == [alignment]
    expected = F.relu(F.conv2d(x.double(), weight.double(), padding=1)).to(dtype)
    assert_tensors_close(out, expected)


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


def _tiles(dtype=torch.float16, tf32=False, m=1 << 16, c_in_g=64, c_out_g=128, kh=3, kw=3):
    """The (BLOCK_M, BLOCK_N, BLOCK_K) of the tiles autotuning times for a layer."""
    from torchkit.kernels.conv2d_relu import candidate_tiles

    tiles = candidate_tiles(m, c_in_g, c_out_g, kh, kw, dtype, tf32)
    return {(t.block_m, t.block_n, t.block_k) for t in tiles}


@needs_interpreter
@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        pytest.param(
            {}, {(128, 128, 32), (128, 64, 32), (64, 64, 32), (128, 32, 32)}, id="resnet-layer"
        ),
        pytest.param(
            {"dtype": torch.float32, "tf32": True},
            {(128, 128, 32), (128, 64, 32), (64, 64, 32), (128, 32, 32)},
            id="tf32-resnet-layer",
        ),
        pytest.param(
            {"dtype": torch.float32}, {(64, 64, 32), (128, 32, 32)}, id="ieee-32-accumulators"
        ),
        pytest.param({"c_out_g": 16}, {(64, 16, 32)}, id="16-output-channels"),
        pytest.param(
            {"c_in_g": 16},
            {(128, 128, 32), (128, 64, 32), (64, 64, 32), (128, 32, 32)},
            id="16-input-channels-shallowest-tiles",
        ),
        pytest.param(
            {"c_in_g": 3, "kh": 7, "kw": 7, "c_out_g": 64},
            {(64, 64, 32)},
            id="flat-k-16-gathered-per-thread",
        ),
        pytest.param({"m": 20, "c_out_g": 8}, {(64, 16, 32)}, id="tiny-layer-smallest-tile"),
    ],
)
def test_pruning_keeps_the_tiles_a_layer_can_fill(layer, expected):
    assert _tiles(**layer) == expected


@needs_interpreter
@pytest.mark.interpreter
def test_autotuning_tf32_then_ieee_tunes_each_among_its_own_tiles(monkeypatch):
    """TF32 and IEEE products of one layer keep different tiles (IEEE multiplies with FMAs,
    which cannot hold a 128 x 128 accumulator per 256 threads without spilling): an IEEE
    launch after a TF32 one must not reuse the tile tuned for TF32, nor an NCHW output the
    one tuned for channels_last, nor a launch without bias the one with. The autotuner runs
    for real; the timing of each tile and the launch itself are stubbed (no GPU): the widest
    tile is the fastest."""
    from torchkit.kernels import conv2d_relu

    tuner = conv2d_relu._conv2d_relu_fwd_kernel_autotuned
    monkeypatch.setattr(tuner, "cache", {})
    monkeypatch.setattr(
        tuner, "_bench", lambda *args, config, **kwargs: [1.0 / config.kwargs["BLOCK_N"]] * 3
    )
    launched = []
    monkeypatch.setattr(tuner.fn, "run", lambda *args, **kwargs: launched.append(kwargs))

    def launch(allow_tf32, layout=torch.contiguous_format, bias=True):
        x = torch.randn(32, 64, 56, 56).to(memory_format=torch.channels_last)
        weight = torch.randn(128, 64, 3, 3)
        y = torch.empty(32, 128, 56, 56).to(memory_format=layout)
        b = torch.randn(128) if bias else None
        args, options = conv2d_relu._kernel_arguments(
            x, conv2d_relu.pack_weight(weight), b, y, (1, 1), (1, 1), (1, 1), 1, allow_tf32
        )
        tuner.run(*args, grid=(1,), warmup=False, **options)
        return tuple(launched[-1][k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))

    assert launch(allow_tf32=True) == (128, 128, 32)
    ieee = {(t.block_m, t.block_n, t.block_k) for t in conv2d_relu.candidate_tiles(
        32 * 56 * 56, 64, 128, 3, 3, torch.float32, tf32=False)}  # fmt: skip
    assert launch(allow_tf32=False) in ieee
    launch(allow_tf32=True, layout=torch.channels_last)
    launch(allow_tf32=True, bias=False)
    assert len(tuner.cache) == 4, "one tuning per precision, output layout and bias"


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
    from torchkit.kernels.conv2d_relu import Conv2dReLUBlocks, _fits

    deep = Conv2dReLUBlocks(128, 128, 64, num_warps=8, num_stages=3)
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
