"""conv2d_relu (Triton; on CPU under the interpreter) against F.relu(F.conv2d) in float64.

Shapes are AlexNet's layer configurations at reduced batch, spatial size and channel count: the
interpreter runs one program at a time, so every case stays at a few GEMM tiles.
"""

import importlib

import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_close

import kernels._common as common
from kernels import tuning
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
    # 24 output pixels per weight-gradient split (not a multiple of the interpreter's BLOCK_K=16):
    # tiny shapes still run the split-K with several splits and a ragged last block per split.
    monkeypatch.setattr(conv_mod, "WGRAD_SPLIT_PIXELS", 24)


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
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups, x_grad", CASES)
def test_matches_reference(x_shape, w_shape, stride, padding, groups, x_grad):
    x, w, b = make(x_shape, w_shape, x_grad=x_grad)
    check(x, w, b, stride, padding, groups)


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


def test_wgrad_split_k_is_deterministic_and_split_independent(monkeypatch):
    splits = []
    real_split_sum = conv_mod._split_sum
    monkeypatch.setattr(conv_mod, "_split_sum",
                        lambda part, out: (splits.append(part.shape[0]), real_split_sum(part, out)))
    x, w, b = make((2, 8, 7, 7), (12, 4, 5, 5), x_grad=False)

    def weight_grads():
        y = conv2d_relu(x, w, b, 1, 2, 1, 2)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        return torch.autograd.grad(y, [w, b], dy)

    many = weight_grads()  # 98 output pixels in splits of 24 -> 5 splits
    again = weight_grads()
    monkeypatch.setattr(conv_mod, "WGRAD_SPLIT_PIXELS", 8192)
    one = weight_grads()
    # (db, dW) per call: the bias gradient comes from the ReLU-mask pass, in 64-pixel splits
    assert splits == [2, 5, 2, 5, 2, 1]
    for a, b_, c in zip(many, again, one):
        assert torch.equal(a, b_)  # fixed reduction order: bit-identical
        assert_close(a, c, torch.float32, reduce_dim=98)


def test_wgrad_fills_two_waves_of_an_h100_at_batch_128(monkeypatch):
    # 132 SMs: every AlexNet layer's wgrad grid has >= 264 programs whichever config runs
    monkeypatch.setattr(conv_mod, "WGRAD_SPLIT_PIXELS", None)  # the automatic choice
    every = [c for configs, _ in tuning.CONV_TUNING["wgrad"].values() for c in configs]
    # no config's tile is larger than (max BLOCK_M) x (max BLOCK_N): the fewest programs per split
    bm, bn = (max(c.kwargs[k] for c in every) for k in ("BLOCK_M", "BLOCK_N"))
    assert (bm, bn) == (128, 128)
    splits = {}
    for layer, (x_shape, w_shape, stride, pad, groups, _) in conv_mod.ALEXNET_CONVS.items():
        (n, _, h, w), (c_out, cg_in, kh, kw) = x_shape, w_shape
        oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
        geo = args_mod._Geometry(n, cg_in, h, w, c_out // groups, oh, ow, kh, kw,
                                 (stride, stride), (pad, pad), groups)
        pix = args_mod._wgrad_pixels_per_split(geo, 132)
        split = -(-n * oh * ow // pix)
        tiles = -(-kh * kw * cg_in // bm) * -(-(c_out // groups) // bn) * groups
        assert split * tiles >= 2 * 132, (layer, split, tiles)
        assert pix % 64 == 0 and pix >= args_mod.WGRAD_MIN_SPLIT_PIXELS, (layer, pix)
        splits[layer] = split
    assert splits == {"conv1": 88, "conv2": 14, "conv3": 5, "conv4": 5, "conv5": 10}


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


def spec_tiles(specs, kernel, layer, label):
    """(BM, BN, BK, warps, stages) of the specs for one kernel, layer and dtype label."""
    return sorted(
        (s.constexprs["BLOCK_M"], s.constexprs["BLOCK_N"], s.constexprs["BLOCK_K"], s.num_warps,
         s.num_stages)
        for s in specs
        if s.name.startswith(f"conv2d_relu_{kernel}[{layer}, ") and s.name.endswith(f", {label}]")
    )


def test_aot_specs_cover_every_config_and_dtype():
    specs = conv_mod.aot_specs(layers=("conv2",))
    mma_lists = (tuning.FWD_CONFIGS, tuning.DGRAD_CONFIGS, tuning.WGRAD_CONFIGS)
    mma = sum(map(len, mma_lists))
    tf32 = sum(c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= tuning.TF32_MAX_TILE
               for configs, drop in zip(mma_lists, ((), tuning.DGRAD_TF32_DROP,
                                                    tuning.WGRAD_TF32_DROP))
               for c in configs if tuning._tile(c) not in drop)
    fma = (len(tuning.FWD_FP32_CONFIGS) + len(tuning.DGRAD_FP32_CONFIGS)
           + len(tuning.WGRAD_FP32_CONFIGS))
    # fp16, bf16, fp32-tf32 on tensor cores; exact fp32 on FMAs; one split-sum and one
    # ReLU-mask pass per dtype
    assert 0 < tf32 < mma
    assert len(specs) == 2 * mma + tf32 + fma + 3 + 3
    assert sum(s.uses_dot for s in specs) == 2 * mma + tf32
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
                elif kernel == "wgrad" and label == "fp32-tf32" and layer != "conv1":
                    # every other tile spills with TF32 on sm_80 (tuning.WGRAD_TF32_DROP)
                    assert found == [(64, 128, 32, 4, 3)], (layer, found)
                else:  # the autotuner keeps a choice for every shape and dtype
                    assert len(found) >= 2, (kernel, layer, label, found)
                    assert all(t[3] <= 4 for t in found), (kernel, layer, label, found)
    # conv1 (C_in=3) takes the small-channel lists, conv3 (C_in=256) the regular ones
    assert spec_tiles(specs, "fwd", "conv1", "fp16") == sorted(
        tiles(tuning.FWD_SMALL_CIN_CONFIGS))
    assert spec_tiles(specs, "wgrad", "conv1", "fp32") == sorted(
        tiles(tuning.WGRAD_SMALL_CIN_FP32_CONFIGS))
    assert spec_tiles(specs, "fwd", "conv3", "bf16") == sorted(tiles(tuning.FWD_CONFIGS))
    assert spec_tiles(specs, "dgrad", "conv3", "fp32") == sorted(tiles(tuning.DGRAD_FP32_CONFIGS))
    conv1_tf32 = spec_tiles(specs, "wgrad", "conv1", "fp32-tf32")
    assert conv1_tf32 and all(m * n <= tuning.TF32_SMALL_CIN_MAX_TILE
                              for m, n, *_ in conv1_tf32)
    assert len(conv1_tf32) < len(tuning.WGRAD_SMALL_CIN_CONFIGS)
    assert sum(s.name.startswith("conv2d_relu_split_sum") for s in specs) == 5 * 3


def test_pruner_keeps_what_aot_specs_compiled():
    # the autotuner's pruner (not installed under the interpreter) picks by CG_IN and precision
    configs, prune = tuning.CONV_TUNING["fwd"]["mma"]
    small = prune(configs, {}, CG_IN=3, INPUT_PRECISION="ieee")
    regular = prune(configs, {}, CG_IN=48, INPUT_PRECISION="ieee")
    regular_tf32 = prune(configs, {}, CG_IN=48, INPUT_PRECISION="tf32")
    assert tiles(small) == tiles(tuning.FWD_SMALL_CIN_CONFIGS)
    assert tiles(regular) == tiles(tuning.FWD_CONFIGS)
    assert (128, 128, 32, 4, 3) in tiles(regular) and (128, 128, 32, 4, 3) not in tiles(small)
    assert (128, 128, 32, 4, 3) not in tiles(regular_tf32) and len(regular_tf32) >= 2
    specs = conv_mod.aot_specs(layers=("conv1",))
    assert spec_tiles(specs, "fwd", "conv1", "fp16") == sorted(tiles(small))


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
