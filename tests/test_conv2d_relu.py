"""conv2d_relu (Triton; on CPU under the interpreter) against F.relu(F.conv2d) in float64.

Shapes are AlexNet's layer configurations at reduced batch, spatial size and channel count: the
interpreter runs one program at a time, so every case stays at a few GEMM tiles.
"""

import importlib

import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from tolerances import assert_close

import kernels._common as common
from kernels import tuning
from kernels._conv2d_relu_kernels import _round_to_tf32
from kernels.conv2d_relu import conv2d_relu

# the package exports the function conv2d_relu, which shadows the submodule's attribute name
conv_mod = importlib.import_module("kernels.conv2d_relu")
args_mod = importlib.import_module("kernels._conv2d_relu_args")
kernels_mod = importlib.import_module("kernels._conv2d_relu_kernels")

# ----------------------------------------------------------------------------------------------
# float64 reference
# ----------------------------------------------------------------------------------------------


def reference(x, weight, bias, stride, padding, groups, dy):
    """F.relu(F.conv2d(...)) in float64 and the gradients of the tensors that require one."""
    leaves = [None if t is None else t.detach().double().requires_grad_(t.requires_grad)
              for t in (x, weight, bias)]
    y = F.relu(F.conv2d(leaves[0], leaves[1], leaves[2], stride, padding, 1, groups))
    wanted = {name: t for name, t in zip(("input", "weight", "bias"), leaves)
              if t is not None and t.requires_grad}
    grads = torch.autograd.grad(y, list(wanted.values()), dy.double()) if wanted else ()
    return y.detach(), dict(zip(wanted, grads))


def tf32_reference(t: torch.Tensor) -> torch.Tensor:
    """Finite fp32 values rounded to TF32 in float64: 11 significant bits, ties to even (torch's
    round), at TF32's spacing 2**(e - 11), fixed at 2**-136 below the normal range."""
    _, e = torch.frexp(t.double())
    spacing = torch.ldexp(torch.ones_like(e, dtype=torch.float64), e.clamp(min=-125) - 11)
    return torch.round(t.double() / spacing) * spacing


def make(x_shape, w_shape, bias=True, dtype=torch.float32, x_grad=True, seed=0):
    """Random input/weight/bias; the weight scaled by 1/sqrt(fan-in) so about half the
    pre-activations are negative and the ReLU mask matters."""
    g = torch.Generator().manual_seed(seed)
    fan_in = w_shape[1] * w_shape[2] * w_shape[3]
    x = torch.randn(x_shape, generator=g, dtype=torch.float64)
    w = torch.randn(w_shape, generator=g, dtype=torch.float64) / fan_in**0.5
    b = torch.randn(w_shape[0], generator=g, dtype=torch.float64) * 0.5 if bias else None
    x = x.to(dtype).requires_grad_(x_grad)
    w = w.to(dtype).requires_grad_()
    b = b.to(dtype).requires_grad_() if bias else None
    return x, w, b


def check(x, w, b, stride=1, padding=0, groups=1):
    """Forward output and every gradient against the float64 reference."""
    dtype = x.dtype
    y = conv2d_relu(x, w, b, stride, padding, 1, groups)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    y_ref, grads_ref = reference(x, w, b, stride, padding, groups, dy)
    assert y.dtype == dtype and y.shape == y_ref.shape
    if y_ref.numel():
        negative = (y_ref == 0).double().mean().item()
        assert 0.1 < negative < 0.9, f"ReLU mask not exercised: {negative:.0%} of outputs clamped"

    kh, kw = w.shape[2:]
    cg_in, cg_out = w.shape[1], w.shape[0] // groups
    pixels = y.numel() // w.shape[0]  # N * OH * OW
    reduce_dims = {"input": cg_out * kh * kw, "weight": pixels, "bias": pixels}
    assert_close(y, y_ref, dtype, reduce_dim=cg_in * kh * kw)

    wanted = {n: t for n, t in (("input", x), ("weight", w), ("bias", b))
              if t is not None and t.requires_grad}
    grads = torch.autograd.grad(y, list(wanted.values()), dy)
    assert list(wanted) == list(grads_ref)
    for (name, t), grad in zip(wanted.items(), grads):
        assert grad.shape == t.shape and grad.dtype == dtype, name
        assert_close(grad, grads_ref[name], dtype, reduce_dim=reduce_dims[name])
    return y, dict(zip(wanted, grads))


@pytest.fixture(autouse=True)
def small_wgrad_splits(monkeypatch):
    # ask for 5 weight-gradient splits: tiny shapes still run the split-K with several splits
    # (e.g. 50 pixels -> 4 splits of 16 under the interpreter's BLOCK_K=16, the last one ragged)
    monkeypatch.setattr(conv_mod, "WGRAD_SPLITS", 5)


# ----------------------------------------------------------------------------------------------
# AlexNet layers and awkward shapes
# ----------------------------------------------------------------------------------------------

CASES = [
    # x shape, w shape, stride, padding, groups, input needs grad
    # conv1: 11x11 /4, C_in=3, pad 2; the image needs no gradient (dgrad is skipped)
    pytest.param((2, 3, 19, 19), (4, 3, 11, 11), 4, 2, 1, False, id="conv1"),
    # conv1 with an input gradient: stride-4 gather in dgrad, pad 0 (torchvision's variant has 2)
    pytest.param((1, 3, 15, 15), (4, 3, 11, 11), 4, 0, 1, True, id="conv1-dgrad-pad0"),
    # conv2: 5x5 pad 2, groups 2
    pytest.param((2, 8, 7, 7), (12, 4, 5, 5), 1, 2, 2, True, id="conv2"),
    # conv3: 3x3 pad 1
    pytest.param((2, 8, 5, 5), (12, 8, 3, 3), 1, 1, 1, True, id="conv3"),
    # conv4/5: grouped 3x3 pad 1
    pytest.param((2, 12, 5, 5), (8, 6, 3, 3), 1, 1, 2, True, id="conv4-5"),
    pytest.param((1, 4, 7, 5), (6, 4, 3, 3), 2, 1, 1, True, id="N1-odd-HW-stride2"),
    # padding 3 > kernel - 1: border outputs see only zeros (relu(bias))
    pytest.param((1, 2, 4, 5), (5, 2, 3, 3), 2, 3, 1, True, id="pad-larger-than-kernel"),
    pytest.param((1, 3, 6, 7), (4, 3, 3, 2), (2, 1), (1, 0), 1, True, id="pairs-rect-kernel"),
    pytest.param((1, 4, 6, 6), (4, 4, 4, 3), 1, "same", 1, True, id="same-even-kernel",
                 marks=pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")),
    pytest.param((1, 4, 6, 6), (4, 4, 3, 3), 1, "valid", 1, True, id="valid"),
    # channels a multiple of the K block (the interpreter's 16; AlexNet's conv2-5 on the GPU):
    # each K block lies in one tap, bounds tested per row (the forward's C_in, dgrad's C_out)
    pytest.param((1, 16, 6, 6), (16, 16, 3, 3), 1, 1, 1, True, id="channels-16"),
    pytest.param((1, 32, 7, 7), (32, 16, 3, 3), 2, 1, 2, True, id="channels-16-stride2-groups2"),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups, x_grad", CASES)
def test_matches_reference(x_shape, w_shape, stride, padding, groups, x_grad):
    x, w, b = make(x_shape, w_shape, x_grad=x_grad)
    check(x, w, b, stride, padding, groups)


# dgrad's two-accumulator tiles (BLOCK_N + BLOCK_N_TAIL columns per program, the GPU configs
# for conv2's 48 input channels per group): the interpreter's own config has one accumulator,
# so these cases swap in a two-accumulator one (32 + 16 columns)
TWO_ACCUMULATORS = tuning._config(32, 32, 16, 4, 1, tail=16)


@pytest.fixture
def two_accumulator_dgrad(monkeypatch):
    """Every dgrad launch (both instruction paths) takes TWO_ACCUMULATORS; returns the
    autotuners, whose ``best_config`` shows what ran."""
    for tuner in kernels_mod._conv_dgrad.values():
        monkeypatch.setattr(tuner, "configs", [TWO_ACCUMULATORS])
    return kernels_mod._conv_dgrad


TWO_ACCUMULATOR_CASES = [
    # x shape, w shape, stride, padding, groups
    # conv2's 48 input channels per group (groups 2): one program covers a group's 48 columns;
    # 16 output channels per group, so each K block lies in one tap
    pytest.param((1, 96, 4, 4), (32, 48, 3, 3), 1, 1, 2, id="conv2-48-per-group"),
    # 40 channels: the tail accumulator's columns 40..47 are masked
    pytest.param((2, 40, 4, 4), (6, 40, 3, 3), 1, 1, 1, id="cin40"),
    # 100 channels, 3 programs: the last has 4 live columns of its 32 and an empty tail; stride 2
    pytest.param((1, 100, 5, 5), (4, 100, 3, 3), 2, 1, 1, id="cin100-stride2"),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups", TWO_ACCUMULATOR_CASES)
def test_dgrad_two_accumulators_match_reference(two_accumulator_dgrad, x_shape, w_shape, stride,
                                                padding, groups):
    x, w, b = make(x_shape, w_shape)
    check(x, w, b, stride, padding, groups)
    ran = two_accumulator_dgrad["fma"].best_config  # exact fp32 in the tests
    assert ran is TWO_ACCUMULATORS and ran.kwargs["BLOCK_N_TAIL"] == 16


def test_no_bias():
    x, w, _ = make((2, 8, 5, 5), (12, 8, 3, 3), bias=False)
    check(x, w, None, 1, 1)


def test_float16():
    # conv2 geometry in half precision: fp16 in and out, fp32 accumulation
    x, w, b = make((2, 8, 7, 7), (12, 4, 5, 5), dtype=torch.float16)
    check(x, w, b, 1, 2, 2)


def test_channels_last_input_and_weight():
    x, w, b = make((2, 8, 5, 5), (12, 4, 3, 3))
    x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    w = w.detach().to(memory_format=torch.channels_last).requires_grad_()
    y, grads = check(x, w, b, 1, 1, 2)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert grads["input"].is_contiguous(memory_format=torch.channels_last)
    assert grads["weight"].is_contiguous(memory_format=torch.channels_last)


def test_non_contiguous_views():
    # input: every other column of an H/W-transposed tensor; weight: every other input channel
    # (not dense, so its gradient is allocated contiguous)
    base, w, b = make((2, 6, 10, 7), (6, 6, 3, 3))
    x = base.detach().transpose(2, 3)[:, :, :, ::2].requires_grad_()  # (2, 6, 7, 5)
    w = w.detach()[:, ::2].requires_grad_()  # (6, 3, 3, 3)
    assert not x.is_contiguous() and not w.is_contiguous()
    check(x, w, b, 1, 1, 2)


def test_unbatched_input():
    x, w, b = make((4, 6, 6), (6, 4, 3, 3))
    y, _ = check(x, w, b, 1, 1)
    assert y.shape == (6, 6, 6)


class RefuseLaunch:
    """Stands in for a kernel table: any launch fails the test."""

    def __getitem__(self, key):
        raise AssertionError(f"a kernel was launched ({key!r})")


def test_empty_batch_launches_nothing(monkeypatch):
    for kernel in ("_conv_fwd", "_conv_dgrad", "_conv_wgrad", "_relu_grad_kernel",
                   "_split_sum_kernel"):
        monkeypatch.setattr(conv_mod, kernel, RefuseLaunch())
    x, w, b = make((0, 4, 5, 5), (6, 4, 3, 3))
    y, grads = check(x, w, b)
    assert y.shape == (0, 6, 3, 3)
    assert grads["input"].shape == x.shape
    assert torch.equal(grads["weight"], torch.zeros_like(w))


def test_input_grad_skipped_when_not_needed(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("dgrad launched although the input needs no gradient")

    monkeypatch.setattr(conv_mod, "_conv_input_grad", fail)
    x, w, b = make((1, 3, 15, 15), (4, 3, 11, 11), x_grad=False)
    _, grads = check(x, w, b, 4, 2)
    assert set(grads) == {"weight", "bias"}


def test_bias_grad_only():
    x, w, b = make((2, 8, 5, 5), (12, 8, 3, 3), x_grad=False)
    w.requires_grad_(False)
    _, grads = check(x, w, b, 1, 1)
    assert set(grads) == {"bias"}


def spy_split_sums(monkeypatch) -> list[int]:
    """The row count of every split-sum call (bias partials, then dW partials per backward)."""
    splits = []
    real_split_sum = conv_mod._split_sum
    monkeypatch.setattr(conv_mod, "_split_sum",
                        lambda part, out: (splits.append(part.shape[0]), real_split_sum(part, out)))
    return splits


def test_wgrad_split_k_is_deterministic_and_split_independent(monkeypatch):
    splits = spy_split_sums(monkeypatch)
    x, w, b = make((2, 8, 7, 7), (12, 4, 5, 5), x_grad=False)

    def weight_grads():
        y = conv2d_relu(x, w, b, 1, 2, 1, 2)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        return torch.autograd.grad(y, [w, b], dy)

    many = weight_grads()  # 98 output pixels, 5 splits asked -> 4 splits of 32 (the last 2)
    again = weight_grads()
    monkeypatch.setattr(conv_mod, "WGRAD_SPLITS", 1)
    one = weight_grads()
    # (db, dW) per call: the bias gradient comes from the ReLU-mask pass, in 64-pixel splits
    assert splits == [2, 4, 2, 4, 2, 1]
    for a, b_, c in zip(many, again, one):
        assert torch.equal(a, b_)  # fixed reduction order: bit-identical
        assert_close(a, c, torch.float32, reduce_dim=98)


# 3x3 pad 1 on 2 x 6 x 6 = 72 output pixels: split counts asked -> launched (BLOCK_K = 16)
@pytest.mark.parametrize("asked, launched", [
    (1, 1),
    (3, 3),  # splits of 32, 32, 8 (3 does not divide 72)
    (4, 3),  # 18 pixels rounded up to 32: a 4th split would be empty
    (500, 5),  # more splits than K blocks: one 16-pixel K block per split, the last 8 pixels
])
def test_wgrad_split_counts_match_float64(monkeypatch, asked, launched):
    splits = spy_split_sums(monkeypatch)
    monkeypatch.setattr(conv_mod, "WGRAD_SPLITS", asked)
    x, w, b = make((2, 4, 6, 6), (6, 4, 3, 3), x_grad=False)
    check(x, w, b, 1, 1)  # dW against torch in float64
    assert splits == [2, launched]  # (db in 64-pixel splits, dW)


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("pixel, value", [(0, float("nan")), (71, float("inf"))],
                         ids=["nan-first-split", "inf-last-split"])
def test_wgrad_splits_carry_nan_and_inf(monkeypatch, pixel, value):
    # a non-finite input pixel reaches dW through the split that holds its output pixels, and
    # the split-sum adds it in (inf + finite = inf, inf - inf and NaN = NaN), as torch's dW
    monkeypatch.setattr(conv_mod, "WGRAD_SPLITS", 3)  # 72 pixels: splits of 32, 32, 8
    x, w, b = make((2, 4, 6, 6), (6, 4, 3, 3), x_grad=False)
    x = x.detach().clone()
    n, rest = divmod(pixel, 36)
    x[n, :, rest // 6, rest % 6] = value  # input pixel (n, h, w): stride 1, so output pixel too
    _, grads = check(x, w, b, 1, 1)
    assert not torch.isfinite(grads["weight"]).all()


def test_wgrad_split_count_leaves_no_split_empty():
    # every count launched has splits of the kernel's length q = round_up(cdiv(P, S), BLOCK_K)
    # with the last one starting inside the P pixels; never more splits than asked
    for pixels in range(1, 300):
        geo = args_mod._Geometry(1, 4, 1, pixels, 4, 1, pixels, 1, 1, (1, 1), (0, 0), 1)
        for block_k in (16, 32, 64):
            for asked in range(1, 40):
                s = args_mod._wgrad_splits(geo, 132, 64, 64, block_k, 2, asked)
                q = args_mod._wgrad_split_pixels(pixels, s, block_k)
                assert 1 <= s <= asked and q % block_k == 0, (pixels, block_k, asked)
                assert (s - 1) * q < pixels <= s * q, (pixels, block_k, asked, s, q)


@triton.jit
def _round_to_tf32_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(y_ptr + offs, _round_to_tf32(tl.load(x_ptr + offs, mask=offs < n)), mask=offs < n)


def test_tf32_rounding_of_the_wgrad_x_tile():
    # wgrad rounds x to TF32 in registers when TF32 is allowed: to the nearest value with 11
    # significant bits (10 stored), ties to even, at TF32's spacing 2**(e - 11) (2**-136 for
    # subnormals); overflow to inf, NaN (whatever its payload) stays NaN, -0 stays -0
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(200, generator=g) * 2.0 ** torch.randint(-120, 120, (200,), generator=g)
    special = torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-11 + 2**-20, -(1 + 2**-11),
                            3.4028235e38, -3.4028235e38, 1e-40, 2**-140 * 1.5, 2**-137 * 3,
                            -0.0, 0.0, float("inf"), float("-inf"), float("nan")])
    payload_nan = torch.tensor([0x7F800001, 0xFF801000 - 2**32], dtype=torch.int32).view(
        torch.float32)
    x = torch.cat([normal, special, payload_nan])
    y = torch.empty_like(x)
    _round_to_tf32_kernel[(1,)](x, y, x.numel(), BLOCK=256)
    want = torch.where(torch.isfinite(x), tf32_reference(x).float(), x)  # 2**128 -> inf
    assert torch.equal(y.isnan(), x.isnan()) and y.isnan().sum() == 3
    assert torch.equal(y[~x.isnan()], want[~x.isnan()])
    assert torch.equal(torch.signbit(y), torch.signbit(x))
    assert y[204] == float("inf")  # the largest float rounds up
    assert y[200] == 1.0 and y[201] == 1 + 2**-9 and y[202] == 1 + 2**-10


@pytest.mark.skipif(not common.INTERPRET, reason="a GPU's TF32 MMA also truncates the gradient "
                    "operand, which the interpreter's tl.dot multiplies exactly")
def test_tf32_wgrad_rounds_the_input(monkeypatch):
    # TF32 allowed: dW is exactly (x rounded to TF32)^T g, up to the fp32 sums
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    x, w, _ = make((2, 4, 6, 6), (6, 4, 3, 3), bias=False, x_grad=False)
    y = conv2d_relu(x, w, None, 1, 1)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    (dw,) = torch.autograd.grad(y, [w], dy)
    g = torch.where(y > 0, dy, 0.0).double()
    want = torch.nn.grad.conv2d_weight(tf32_reference(x), w.shape, g, 1, 1)
    assert_close(dw, want, torch.float32, reduce_dim=72)
    exact = torch.nn.grad.conv2d_weight(x.double(), w.shape, g, 1, 1)
    assert not torch.allclose(dw.double(), exact, rtol=1e-5, atol=1e-5)  # the rounding happened


def test_wgrad_partials_past_int32_are_refused(monkeypatch):
    # 9,216 pixels in as many splits as K blocks (576 of 16, or 288 of 32) x 9.4 M weights:
    # the fp32 partials would pass 2**31 elements. Meta tensors: refused before any launch.
    monkeypatch.setattr(conv_mod, "WGRAD_SPLITS", 10**6)
    x = torch.empty(1, 1024, 96, 96, device="meta")
    w = torch.empty(1024, 1024, 3, 3, device="meta")
    geo = args_mod._geometry(x, w, (1, 1), (1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"partials would hold \d+ x 9437184 elements \(int32 "
                       r"indexing\); set kernels.conv2d_relu.WGRAD_SPLITS \(now 1000000\) "
                       r"below 227 splits"):
        conv_mod._conv_weight_grad(x, x, w, geo)


def alexnet_geometry(layer: str):
    (n, _, h, w), (c_out, cg_in, kh, kw), stride, pad, groups, _ = conv_mod.ALEXNET_CONVS[layer]
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    return args_mod._Geometry(n, cg_in, h, w, c_out // groups, oh, ow, kh, kw, (stride, stride),
                              (pad, pad), groups)


def test_wgrad_fills_two_waves_of_an_h100_at_batch_128():
    # 132 SMs holding up to WGRAD_RESIDENT programs each (6 with 2-byte operands, 4 with TF32's
    # 4): every config of every AlexNet layer launches >= 2 x 132 x that many programs, each
    # split at least 256 pixels long
    assert args_mod.WGRAD_WAVES == 2 and args_mod.WGRAD_RESIDENT == {2: 6, 4: 4}
    every = [c for configs, _ in tuning.CONV_TUNING["wgrad"].values() for c in configs]
    splits = {}
    for layer in conv_mod.ALEXNET_CONVS:
        geo = alexnet_geometry(layer)
        pixels = geo.n * geo.oh * geo.ow
        for elem_bytes, resident in args_mod.WGRAD_RESIDENT.items():
            for c in every:
                bm, bn, bk = (c.kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
                split = args_mod._wgrad_splits(geo, 132, bm, bn, bk, elem_bytes)
                tiles = -(-geo.kh * geo.kw * geo.cg_in // bm) * -(-geo.cg_out // bn) * geo.groups
                assert split * tiles >= 2 * 132 * resident, (layer, bm, bn, split, tiles)
                assert args_mod._wgrad_split_pixels(pixels, split, bk) >= 256, (layer, bm, bn)
                splits[layer, bm, bn, elem_bytes] = split
    layers = list(conv_mod.ALEXNET_CONVS)
    assert [splits[layer, 64, 64, 2] for layer in layers] == [132, 21, 8, 10, 15]
    assert [splits[layer, 128, 64, 2] for layer in layers] == [264, 40, 15, 19, 29]
    assert [splits[layer, 64, 64, 4] for layer in layers] == [88, 14, 5, 7, 10]


def test_wgrad_tiles_over_128x64_fill_the_waves_with_fewer_programs():
    # the gated 8-warp tiles (128x128, 256x64) hold twice a 128x64 tile's accumulator in twice
    # the threads: half as many of their programs fit an SM, so half as many fill two waves
    # (fewer fp32 partials than the 4-warp count would write)
    assert args_mod.WGRAD_RESIDENT_TILE == 128 * 64
    for layer in ("conv2", "conv3", "conv4", "conv5"):  # conv1's wgrad is the packed kernel's
        geo = alexnet_geometry(layer)
        for c in tuning.WGRAD_8WARP_CONFIGS:
            bm, bn, bk = (c.kwargs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
            tiles = -(-geo.kh * geo.kw * geo.cg_in // bm) * -(-geo.cg_out // bn) * geo.groups
            for elem_bytes, resident in args_mod.WGRAD_RESIDENT.items():
                programs = args_mod._wgrad_splits(geo, 132, bm, bn, bk, elem_bytes) * tiles
                assert 2 * 132 * resident // 2 <= programs < 2 * 132 * resident, (layer, bm, bn)


def test_wgrad_partials_hold_the_most_splits_any_config_launches(monkeypatch):
    # the autotuner may pick any config: the buffer has a row for each split of the largest
    # count, and the sum reads only the rows the launched grid wrote
    monkeypatch.setattr(conv_mod, "WGRAD_SPLITS", None)
    geo = alexnet_geometry("conv3")
    every = tuning.CONV_TUNING["wgrad"]["mma"][0]
    counts = {args_mod._wgrad_splits(geo, 132, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"],
                                     c.kwargs["BLOCK_K"], 2) for c in every}
    assert len(counts) > 1 and args_mod._wgrad_max_splits(geo, 132, every, 2) == max(counts)


def test_backward_masks_the_gradient_once(monkeypatch):
    # one ReLU-mask pass per backward; dgrad and wgrad read its result, never the output
    calls = []
    real = conv_mod._relu_grad
    monkeypatch.setattr(conv_mod, "_relu_grad", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    for kernel in (kernels_mod._conv_dgrad_kernel, kernels_mod._conv_wgrad_kernel):
        assert "y_ptr" not in kernel.arg_names and "g_ptr" in kernel.arg_names
    x, w, b = make((2, 8, 5, 5), (12, 8, 3, 3))
    check(x, w, b, 1, 1)
    assert calls == [1]


# ----------------------------------------------------------------------------------------------
# conv1's packed forward (kernels._conv2d_relu_args._Packing)
# ----------------------------------------------------------------------------------------------


def packing(x_shape, w_shape, stride, padding, groups=1):
    x, w = torch.empty(x_shape), torch.empty(w_shape)
    stride, pads, _ = args_mod._check_args(x, w, None, stride, padding, 1, groups)
    geo = args_mod._geometry(x, w, stride, pads)
    return geo, args_mod._Packing.of(geo)


def test_packing_of_alexnet_conv1():
    # 3 channels (stride 4 keeps every window row 4-aligned: it starts at 12 * ow); a row's 33
    # elements are 32 from the packed rows and 1 from the window's tail: K = 11 * 32 + 16 = 368
    # for 363 taps
    geo, pk = packing((128, 3, 224, 224), (96, 3, 11, 11), 4, 2)
    assert (pk.cp, pk.body, pk.tk, pk.kp) == (3, 32, 16, 368) and pk.fits(geo)
    assert pk.hp == 54 * 4 + 11 and pk.wpc % 16 == 0 and pk.wpc >= (54 * 4 + 11) * 3
    # stride 1: 4 channels for aligned rows; 5 taps x 4 = 16 + 4 per row, 5 rows of tail -> 32
    geo, pk = packing((1, 3, 9, 9), (4, 3, 5, 5), 1, 0)
    assert (pk.cp, pk.body, pk.tk, pk.kp) == (4, 16, 32, 112) and pk.fits(geo)
    # window rows shorter than one K block, more than 4 channels, groups: the general forward
    for shapes in [((1, 4, 5, 5), (6, 4, 3, 3), 1, 1), ((1, 8, 9, 9), (4, 8, 3, 3), 1, 1),
                   ((1, 4, 9, 9), (4, 2, 5, 5), 1, 1, 2)]:
        geo, pk = packing(*shapes)
        assert not pk.fits(geo), shapes


PACKED_CASES = [
    # x shape, w shape, stride, padding, dtype; (cp, body per row, TK) in the comment
    pytest.param((2, 3, 23, 23), (8, 3, 11, 11), 4, 2, torch.float32, id="conv1"),  # 3, 32, 16
    pytest.param((1, 3, 23, 27), (8, 3, 11, 11), 4, 2, torch.float16, id="conv1-fp16"),
    pytest.param((1, 3, 9, 10), (4, 3, 5, 5), 1, 1, torch.float32, id="cp4-tail"),  # 4, 16, 32
    pytest.param((1, 4, 7, 8), (5, 4, 3, 4), 1, (1, 0), torch.float32, id="no-tail"),  # 4, 16, 0
    pytest.param((1, 3, 9, 13), (4, 3, 7, 6), (1, 2), 2, torch.float32,
                 id="rect-stride-long-tail"),  # 4, 16, 64
    pytest.param((1, 1, 6, 40), (3, 1, 2, 16), (1, 4), 0, torch.float32,
                 id="one-channel"),  # 1, 16, 0
]


class PathSpy(dict):
    """A kernel table (path -> autotuned kernel) that records the path of each launch."""

    def __init__(self, table, log):
        super().__init__(table)
        self.log = log

    def __getitem__(self, path):
        self.log.append(path)
        return super().__getitem__(path)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dtype", PACKED_CASES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_packed_path_matches_reference(monkeypatch, x_shape, w_shape, stride, padding, dtype,
                                       bias):
    # forward and weight gradient on the packed input (the image needs no gradient); the
    # interpreter's 32-row wgrad tiles straddle the rows/tail boundary of K in cp4-tail (80)
    # and rect-stride-long-tail (112)
    launches = []
    for table in ("_conv_fwd_packed", "_conv_wgrad_packed"):
        monkeypatch.setattr(conv_mod, table, PathSpy(getattr(conv_mod, table), launches))
    for table in ("_conv_fwd", "_conv_wgrad"):
        monkeypatch.setattr(conv_mod, table, RefuseLaunch())
    x, w, b = make(x_shape, w_shape, bias, dtype, x_grad=False)
    y = conv2d_relu(x, w, b, stride, padding)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    grads = torch.autograd.grad(y, [w] + ([b] if bias else []), dy)
    # both packed kernels ran: fp16 on the tensor-core path, fp32 exact under the interpreter
    assert launches == ["mma" if dtype == torch.float16 else "fma"] * 2
    y_ref, grads_ref = reference(x, w, b, stride, padding, 1, dy)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert 0.1 < (y_ref == 0).double().mean().item() < 0.9  # the ReLU mask is exercised
    assert_close(y, y_ref, dtype, reduce_dim=w_shape[1] * w_shape[2] * w_shape[3])
    pixels = y.numel() // w_shape[0]
    for grad, name in zip(grads, ("weight", "bias")):
        assert grad.shape == grads_ref[name].shape and grad.dtype == dtype
        assert_close(grad, grads_ref[name], dtype, reduce_dim=pixels)


# ----------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------

X = torch.randn(1, 4, 6, 6)
W = torch.randn(6, 4, 3, 3)

BAD = [
    pytest.param({"dilation": 2}, NotImplementedError, r"dilation=2", id="dilation"),
    pytest.param({"stride": 0}, ValueError, r"stride must be positive, got 0", id="stride-0"),
    pytest.param({"stride": (1, -2)}, ValueError, r"got \(1, -2\)", id="stride-negative"),
    pytest.param({"stride": "2"}, ValueError, r"stride must be an int or a pair.*'2'",
                 id="stride-str"),
    pytest.param({"padding": -1}, ValueError, r"padding must be non-negative, got -1",
                 id="padding-neg"),
    pytest.param({"padding": "full"}, ValueError, r"got 'full'", id="padding-str"),
    pytest.param({"padding": "same", "stride": 2}, ValueError, r"'same' needs stride 1, got stride=2",
                 id="same-strided"),
    pytest.param({"groups": 3, "weight": torch.randn(6, 1, 3, 3)}, ValueError,
                 r"groups=3 must divide in_channels=4", id="groups-not-dividing"),
    pytest.param({"groups": 0}, ValueError, r"groups must be a positive int, got 0",
                 id="groups-0"),
    pytest.param({"weight": torch.randn(6, 3, 3, 3)}, ValueError,
                 r"expects 3 input channels .* input has 4", id="weight-channels"),
    pytest.param({"weight": torch.randn(6, 4, 3)}, ValueError, r"got shape \(6, 4, 3\)",
                 id="weight-ndim"),
    pytest.param({"input": torch.randn(4, 6)}, ValueError, r"got shape \(4, 6\)", id="input-ndim"),
    pytest.param({"bias": torch.randn(5)}, ValueError, r"bias must have shape \(6,\), got \(5,\)",
                 id="bias-shape"),
    pytest.param({"weight": W.half()}, ValueError, r"weight.dtype=torch.float16",
                 id="dtype-mismatch"),
    pytest.param({"bias": torch.randn(6, dtype=torch.float64)}, ValueError,
                 r"bias.dtype=torch.float64", id="bias-float64-mixed"),
    pytest.param({"input": X.long()}, NotImplementedError, r"input.dtype=torch.int64",
                 id="int-input"),
    pytest.param({"input": X.bfloat16(), "weight": W.bfloat16()}, NotImplementedError,
                 r"input.dtype=torch.bfloat16 .* interpret", id="bf16-interpreter"),
    pytest.param({"bias": torch.randn(6, device="meta")}, NotImplementedError, r"bias.device=meta",
                 id="device"),
    pytest.param({"input": torch.randn(1, 4, 2, 2)}, ValueError, r"output size would be 0x0",
                 id="output-empty"),
    pytest.param({"input": [1.0]}, TypeError, r"input must be a torch.Tensor, got list",
                 id="not-a-tensor"),
]


@pytest.mark.parametrize("override, error, match", BAD)
def test_rejects_bad_arguments(override, error, match):
    kwargs = {"input": X, "weight": W, "bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
    kwargs.update(override)
    with pytest.raises(error, match=match):
        conv2d_relu(**kwargs)


def test_cpu_tensor_without_interpreter_is_refused(monkeypatch):
    monkeypatch.setattr(common, "INTERPRET", False)
    with pytest.raises(RuntimeError, match="input is a CPU tensor"):
        conv2d_relu(X, W)


# ----------------------------------------------------------------------------------------------
# Ahead-of-time specs are complete (compiling them is tests/test_compile.py's job)
# ----------------------------------------------------------------------------------------------


def tiles(configs):
    return [tuning._tile(c) for c in configs]


def spec_tiles(specs, kernel, layer, label, tma=False, unverified=False):
    """(BM, BN, BK, warps, stages) of the specs for one kernel, layer and dtype label: the
    default autotuner's pointer configs, or (``unverified``) the gated pointer ones
    (kernels.tuning.CONV_UNVERIFIED, named so), or (``tma``) the sm_90 TMA configs'."""
    return sorted(
        (s.constexprs["BLOCK_M"], s.constexprs["BLOCK_N"], s.constexprs["BLOCK_K"], s.num_warps,
         s.num_stages)
        for s in specs
        if s.name.startswith(f"conv2d_relu_{kernel}[{layer}, ") and s.name.endswith(f", {label}]")
        and bool(s.constexprs.get("USE_TMA")) == tma
        and (not tma and " unverified," in s.name) == unverified
    )


# conv2 at batch 128 per group, as the kernels' size arguments
CONV2_SIZES = {"N": 128, "CG_IN": 48, "H": 27, "W": 27, "CG_OUT": 128, "OH": 27, "OW": 27,
               "KH": 5, "KW": 5}


def pruned(kernel, path, precision, sizes=CONV2_SIZES, gated=False):
    """What the autotuner's pruner keeps (``gated``: with the gated configs too, as aot_specs)."""
    configs, prune = tuning.CONV_TUNING[kernel][path]
    if gated:
        configs = tuning._union(configs, tuning.CONV_UNVERIFIED[kernel][path])
    return prune(configs, {}, **sizes, INPUT_PRECISION=precision)


def pruned_tma(kernel, precision, sizes=CONV2_SIZES):
    """The TMA configs (gate or not) the "mma_tma" pruner keeps, given a weight descriptor."""
    prune = tuning.CONV_TUNING[kernel]["mma_tma"][1]
    return prune(tuning.TMA_CONFIGS[kernel], {}, w_desc=object(), **sizes,
                 INPUT_PRECISION=precision)


def test_aot_specs_cover_every_config_and_dtype():
    specs = conv_mod.aot_specs(layers=("conv2",))
    kernels = ("fwd", "dgrad", "wgrad")
    mma = sum(len(pruned(k, "mma", "ieee", gated=True)) for k in kernels)
    tf32 = sum(len(pruned(k, "mma", "tf32", gated=True)) for k in kernels)
    fma = sum(len(pruned(k, "fma", "ieee", gated=True)) for k in kernels)
    # the forward's and dgrad's TMA configs, for sm_90
    tma = sum(len(pruned_tma(k, "ieee")) for k in ("fwd", "dgrad"))
    tma_tf32 = sum(len(pruned_tma(k, "tf32")) for k in ("fwd", "dgrad"))
    # fp16, bf16, fp32-tf32 on tensor cores; exact fp32 on FMAs; one split-sum and one
    # ReLU-mask pass per dtype
    assert 0 < tf32 < mma and 0 < tma_tf32 < tma
    assert len(specs) == 2 * mma + tf32 + fma + 3 + 3 + 2 * tma + tma_tf32
    assert sum(s.uses_dot for s in specs) == 2 * mma + tf32 + 2 * tma + tma_tf32
    assert sum(s.min_arch == 90 for s in specs) == 2 * tma + tma_tf32
    for spec in specs:
        assert list(spec.signature) == spec.fn.arg_names, spec.name
        consts = [a for a, t in spec.signature.items() if t == "constexpr"]
        assert sorted(consts) == sorted(spec.constexprs), spec.name
        assert set(spec.divisible) <= set(spec.signature) - set(consts), spec.name
        assert spec.name.startswith(("conv2d_relu_fwd[conv2, ", "conv2d_relu_dgrad[conv2, ",
                                     "conv2d_relu_wgrad[conv2, ", "conv2d_relu_split_sum[conv2 ",
                                     "conv2d_relu_relu_grad[conv2, "))
    fwd = {s.name.rsplit(", ", 1)[1]: s for s in specs if s.name.startswith("conv2d_relu_fwd")}
    assert fwd["fp16]"].signature["x_ptr"] == "*fp16" and fwd["bf16]"].signature["y_ptr"] == "*bf16"
    assert fwd["fp32]"].constexprs["INPUT_PRECISION"] == "ieee"
    assert fwd["fp32-tf32]"].constexprs["INPUT_PRECISION"] == "tf32"
    # channels_last conv2: unit channel strides become constants, as the JIT specialises them
    spec = fwd["fp16]"]
    assert spec.constexprs["stride_xc"] == 1 and spec.constexprs["KH"] == 5
    assert spec.constexprs["CG_IN"] == 48 and spec.constexprs["CG_OUT"] == 128
    assert {"N", "stride_xh", "stride_xw", "x_ptr"} <= set(spec.divisible)
    assert spec.signature["H"] == "i32" and "H" not in spec.divisible  # 27


def test_aot_specs_cover_every_alexnet_layer_with_the_pruned_configs():
    specs = conv_mod.aot_specs()
    assert len({s.name for s in specs}) == len(specs)
    layers = {s.name.split("[")[1].split(",")[0].split(" ")[0] for s in specs}
    assert layers == {"conv1", "conv2", "conv3", "conv4", "conv5"}
    labels = ("fp32", "fp32-tf32", "fp16", "bf16")
    for layer in sorted(layers):
        for kernel in ("fwd", "dgrad", "wgrad"):
            for label in labels:
                found = spec_tiles(specs, kernel, layer, label)
                if kernel == "dgrad" and layer == "conv1":  # the image needs no gradient
                    assert found == [], label
                else:  # the autotuner keeps a choice for every shape and dtype
                    assert len(found) >= 2, (kernel, layer, label, found)
                    assert all(t[3] <= 4 for t in found), (kernel, layer, label, found)
                # 8 warps (pytorch#173068) and persistent forwards only behind the gate, and only
                # on conv2-5
                gated = spec_tiles(specs, kernel, layer, label, unverified=True)
                persistent = spec_tiles([s for s in specs if s.constexprs.get("PERSISTENT")],
                                        kernel, layer, label, unverified=True)
                assert all(t[3] == 8 for t in gated if t not in persistent), (
                    kernel, layer, label, gated)
                assert bool(gated) == (label != "fp32" and layer != "conv1"), (
                    kernel, layer, label, gated)
    # the sm_90 TMA configs: conv2-5's forward and dgrad, not conv1 (its rows of 363 taps are
    # not 16-byte multiples)
    for layer in ("conv2", "conv3", "conv4", "conv5"):
        for kernel in ("fwd", "dgrad"):
            assert spec_tiles(specs, kernel, layer, "bf16", tma=True), (kernel, layer)
    assert spec_tiles(specs, "fwd", "conv1", "fp16", tma=True) == []
    # conv1 (C_in=3) takes the small-channel lists, conv3 (C_in=256) the regular ones
    assert spec_tiles(specs, "fwd", "conv1", "fp16") == sorted(
        tiles(tuning.FWD_SMALL_CIN_CONFIGS))
    assert spec_tiles(specs, "wgrad", "conv1", "fp32") == sorted(
        tiles(tuning.WGRAD_SMALL_CIN_FP32_CONFIGS))
    assert spec_tiles(specs, "fwd", "conv3", "bf16") == sorted(tiles(tuning.FWD_CONFIGS))
    assert spec_tiles(specs, "dgrad", "conv3", "fp32") == sorted(
        t for t in tiles(tuning.DGRAD_FP32_CONFIGS) if len(t) == 5)  # one accumulator
    conv1_tf32 = spec_tiles(specs, "wgrad", "conv1", "fp32-tf32")
    assert conv1_tf32 and all(m * n <= tuning.TF32_SMALL_CIN_MAX_TILE
                              for m, n, *_ in conv1_tf32)
    assert len(conv1_tf32) < len(tuning.WGRAD_SMALL_CIN_CONFIGS)
    assert sum(s.name.startswith("conv2d_relu_split_sum") for s in specs) == 5 * 3
    # wgrad on conv2-5 keeps the tiles >= 90% efficient: conv4's N = 192 drops BLOCK_N = 128
    # (75%), conv5's N = 128 keeps it; TF32 drops 64x128x32 everywhere (spills on sm_80)
    assert spec_tiles(specs, "wgrad", "conv4", "fp16") == [(64, 64, 32, 4, 4), (128, 64, 32, 4, 3)]
    assert (64, 128, 32, 4, 3) in spec_tiles(specs, "wgrad", "conv5", "fp16")
    for layer in ("conv2", "conv3", "conv4", "conv5"):
        assert spec_tiles(specs, "wgrad", layer, "fp32-tf32") == [(64, 64, 32, 4, 4),
                                                                  (128, 64, 32, 4, 3)]


def test_pruner_keeps_what_aot_specs_compiled():
    # the autotuner's pruner (not installed under the interpreter) picks by CG_IN and precision
    small = pruned("fwd", "mma", "ieee", {**CONV2_SIZES, "CG_IN": 3})
    regular = pruned("fwd", "mma", "ieee")
    regular_tf32 = pruned("fwd", "mma", "tf32")
    assert tiles(small) == tiles(tuning.FWD_SMALL_CIN_CONFIGS)
    assert tiles(regular) == tiles(tuning.FWD_CONFIGS)
    assert (128, 128, 32, 4, 3) in tiles(regular) and (128, 128, 32, 4, 3) not in tiles(small)
    assert (128, 128, 32, 4, 3) not in tiles(regular_tf32) and len(regular_tf32) >= 2
    specs = conv_mod.aot_specs(layers=("conv1",))
    assert spec_tiles(specs, "fwd", "conv1", "fp16") == sorted(tiles(small))


def layer_sizes(layer):
    """An AlexNet layer's per-group sizes at batch 128, as the kernels' size arguments."""
    (n, _, h, w), (c_out, cg_in, kh, kw), stride, pad, groups, _ = conv_mod.ALEXNET_CONVS[layer]
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    return {"N": n, "CG_IN": cg_in, "H": h, "W": w, "CG_OUT": c_out // groups, "OH": oh,
            "OW": ow, "KH": kh, "KW": kw}


@pytest.mark.parametrize("layer", ["conv2", "conv3", "conv4", "conv5"])
@pytest.mark.parametrize("path, precision", [("mma", "ieee"), ("mma", "tf32"), ("fma", "ieee")])
@pytest.mark.parametrize("kernel", ["fwd", "dgrad"])
def test_pruner_keeps_tiles_that_divide_the_gemm(kernel, path, precision, layer):
    # issue 13: every forward and dgrad tile a fit runs on conv2-5 wastes < 10% of its MACs
    # (exact fp32 too), and the autotuner still has a choice
    sizes = layer_sizes(layer)
    kept = pruned(kernel, path, precision, sizes)
    assert len(kept) >= 2
    for c in kept:
        useful, issued = tuning.conv_gemm_macs(kernel, sizes, c.kwargs)
        assert useful / issued >= tuning.MIN_TILE_EFFICIENCY, (tuning._tile(c), useful / issued)
    # one accumulator wherever that reaches 90%; two (32 + 16 columns) for dgrad's 48 channels
    tails = {c.kwargs.get("BLOCK_N_TAIL", 0) for c in kept}
    assert tails == ({16} if (kernel, layer) == ("dgrad", "conv2") else {0})


def test_pruner_keeps_the_most_efficient_tiles_when_none_reaches_90_percent():
    # dgrad with 40 input channels: 64-wide tiles use 62%, 48-wide (32 + 16) ones 83%
    sizes = {**layer_sizes("conv3"), "CG_IN": 40}
    def efficiency(c):
        useful, issued = tuning.conv_gemm_macs("dgrad", sizes, c.kwargs)
        return useful / issued

    best = max(map(efficiency, tuning.CONV_TUNING["dgrad"]["mma"][0]))
    assert best == pytest.approx(40 / 48)
    kept = pruned("dgrad", "mma", "ieee", sizes)
    assert kept and all(efficiency(c) == best for c in kept)


def test_wgrad_pruner_keeps_the_efficient_tiles():
    # conv2-5 keep the tiles that pad the GEMM (M = KH*KW*Cg_in, N = Cg_out) by <= 10%; where
    # none does, the least wasteful; conv1's small-C_in tiles are left as listed
    configs, prune = tuning.CONV_TUNING["wgrad"]["mma"]

    def kept(cg_in, cg_out, k, precision="ieee"):
        return tiles(prune(configs, {}, CG_IN=cg_in, CG_OUT=cg_out, KH=k, KW=k,
                           INPUT_PRECISION=precision))

    assert kept(192, 192, 3) == [(128, 64, 32, 4, 3), (64, 64, 32, 4, 4)]  # conv4: N = 192
    assert kept(192, 128, 3) == tiles(tuning.WGRAD_CONFIGS)  # conv5: N = 128
    assert kept(16, 16, 1) == [(64, 64, 32, 4, 4)]  # 6% at best: the least padding wins
    assert kept(3, 96, 11) == tiles(tuning.WGRAD_SMALL_CIN_CONFIGS)  # conv1: as listed


def test_aot_specs_rejects_unknown_layer():
    with pytest.raises(ValueError, match=r"unknown layers \['conv6'\]"):
        conv_mod.aot_specs(layers=("conv6",))


def test_tf32_exactly_when_cudnn_allows_it():
    # PyTorch's convolutions follow torch.backends.cudnn.allow_tf32 (default True); the matmul
    # flag is not theirs. conftest.py turns both off; tests/test_conv2d_relu_edge.py checks
    # which precision reaches the kernel launch.
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.allow_tf32, matmul.allow_tf32
    try:
        cudnn.allow_tf32, matmul.allow_tf32 = False, True
        assert args_mod._input_precision(torch.float32) == "ieee"
        assert args_mod._path(torch.float32) == "fma"
        cudnn.allow_tf32, matmul.allow_tf32 = True, False
        assert args_mod._input_precision(torch.float32) == "tf32"
        assert args_mod._path(torch.float32) == args_mod._path(torch.float16) == "mma"
        assert args_mod._input_precision(torch.float16) == "ieee"
        assert args_mod._input_precision(torch.float64) == "ieee"
        assert args_mod._path(torch.float64) == "fma"  # no tensor cores for fp64
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before
