"""conv2d_relu on the inputs a careful user tries: views of every tensor, NaN and inf, float64
and gradcheck, double backward, int32 spans, the TF32 decision. Float64 references as in
tests/test_conv2d_relu.py (whose helpers this file reuses)."""

import importlib

import numpy as np
import pytest
import torch
from test_conv2d_relu import (  # noqa: F401 (two_accumulator_dgrad: a fixture)
    TWO_ACCUMULATORS,
    RefuseLaunch,
    check,
    make,
    reference,
    two_accumulator_dgrad,
)
from tolerances import assert_close

from kernels.conv2d_relu import conv2d_relu
from kernels.tuning import CONV_INTERPRET_CONFIG

conv_mod = importlib.import_module("kernels.conv2d_relu")
kernels_mod = importlib.import_module("kernels._conv2d_relu_kernels")

INF, NAN = float("inf"), float("nan")

# ----------------------------------------------------------------------------------------------
# Views: every pointer honours its strides (strided, expanded with stride 0, storage offset)
# ----------------------------------------------------------------------------------------------


def as_view(t: torch.Tensor, view: str) -> torch.Tensor:
    """A tensor holding ``t``'s values (for "expanded": t's first slice along dim 0, repeated)
    as a non-contiguous view, a 0-stride expansion or a slice at a storage offset."""
    t = t.detach()
    if view == "strided":  # every other element of the last dimension of a wider buffer
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype)
        big[..., ::2] = t
        out = big[..., ::2]
    elif view == "expanded":
        out = t[:1].expand(t.shape)
    else:  # "offset": contiguous, 5 elements into its storage
        big = torch.zeros(t.numel() + 5, dtype=t.dtype)
        big[5:] = t.flatten()
        out = big[5:].view(t.shape)
    assert out.stride() != t.stride() or out.storage_offset() > 0
    return out


@pytest.mark.parametrize("view", ["strided", "expanded", "offset"])
@pytest.mark.parametrize("which", ["input", "weight", "bias", "grad_output"])
def test_views_of_every_tensor(which, view):
    x, w, b = make((2, 4, 5, 5), (6, 2, 3, 3))
    leaves = {"input": x, "weight": w, "bias": b}
    if which in leaves:  # the view is a leaf of its own, so its gradient is compared too
        leaves[which] = as_view(leaves[which], view).requires_grad_()
    x, w, b = leaves["input"], leaves["weight"], leaves["bias"]
    y = conv2d_relu(x, w, b, 2, 1, 1, 2)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    if which == "grad_output":
        dy = as_view(dy, view)
    y_ref, grads_ref = reference(x, w, b, 2, 1, 2, dy)
    assert_close(y, y_ref, torch.float32, reduce_dim=18)
    grads = torch.autograd.grad(y, [x, w, b], dy)
    for name, grad in zip(("input", "weight", "bias"), grads):
        assert_close(grad, grads_ref[name], torch.float32, reduce_dim=50)


def test_bias_reads_stay_inside_its_storage():
    # the example: a 0-stride bias of one element (the old kernel read past it)
    x, w, _ = make((1, 4, 5, 5), (6, 4, 3, 3))
    b = torch.tensor(0.5).expand(6)
    y = conv2d_relu(x.detach(), w.detach(), b, 1, 1)
    y_ref, _ = reference(x.detach(), w.detach(), b, 1, 1, 1, torch.zeros(1))
    assert_close(y, y_ref, torch.float32, reduce_dim=36)


# ----------------------------------------------------------------------------------------------
# NaN and inf as PyTorch: relu(NaN) = NaN, inf - inf = NaN, relu's backward passes the gradient
# where the output is NaN and drops it (NaN included) where the output is <= 0
# ----------------------------------------------------------------------------------------------

# where the special value goes: input at a border pixel, weight at the bottom-right tap (which
# reaches no output from the top/left border in the input gradient), bias, grad_output
SPOTS = {
    "input": (0, 1, 0, 2),
    "weight": (1, 0, 2, 2),
    "bias": (2,),
    "grad_output": (0, 3, 1, 1),
}


# the interpreter's numpy matmul warns about the NaN it makes, as intended
@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("where", list(SPOTS))
def test_nan_and_inf_forward_and_backward(where, value, stride):
    x, w, b = make((1, 4, 5, 5), (6, 4, 3, 3))
    x, w, b = (t.detach().clone() for t in (x, w, b))
    tensors = {"input": x, "weight": w, "bias": b}
    if where in tensors:
        tensors[where][SPOTS[where]] = value
    for t in tensors.values():
        t.requires_grad_()
    y = conv2d_relu(x, w, b, stride, 1)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    if where == "grad_output":
        dy[SPOTS[where][:1] + (slice(None),) + SPOTS[where][2:]] = value  # one pixel, all channels
    y_ref, grads_ref = reference(x, w, b, stride, 1, 1, dy)
    assert_close(y, y_ref, torch.float32, reduce_dim=36)
    grads = torch.autograd.grad(y, [x, w, b], dy)
    for name, grad in zip(("input", "weight", "bias"), grads):
        assert_close(grad, grads_ref[name], torch.float32, reduce_dim=54)
    if not (where == "bias" and value == -INF):  # relu(-inf) = 0: nothing non-finite is left
        # the test can fail: the special value reached the output or a gradient
        assert not (torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads))


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("where", ["input", "weight", "grad_output"])
@pytest.mark.usefixtures("two_accumulator_dgrad")
def test_nan_and_inf_through_dgrads_two_accumulators(where, value):
    # 40 input channels: columns 0..31 in the first accumulator, 32..39 in the tail one (of
    # 16, 8 masked); the special value sits on channel 36 (tail) or, for dy, on one pixel
    x, w, b = make((1, 40, 4, 4), (3, 40, 3, 3))
    x, w, b = (t.detach().clone() for t in (x, w, b))
    if where == "input":
        x[0, 36, 0, 2] = value
    elif where == "weight":  # the exact route for a non-finite weight runs dgrad 8 times
        w[1, 36, 2, 2] = value
    for t in (x, w, b):
        t.requires_grad_()
    y = conv2d_relu(x, w, b, 1, 1)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    if where == "grad_output":
        dy[0, :, 1, 1] = value
    y_ref, grads_ref = reference(x, w, b, 1, 1, 1, dy)
    assert_close(y, y_ref, torch.float32, reduce_dim=360)
    dx, dw, db = torch.autograd.grad(y, [x, w, b], dy)
    assert_close(dx, grads_ref["input"], torch.float32, reduce_dim=27)
    assert_close(dw, grads_ref["weight"], torch.float32, reduce_dim=16)
    assert_close(db, grads_ref["bias"], torch.float32, reduce_dim=16)
    # the test can fail: the special value reached the output, and (from the weight or dy)
    # the tail columns of the input gradient
    assert not torch.isfinite(y).all() or where == "grad_output"
    assert not torch.isfinite(dx[0, 32:]).all() or where == "input"
    assert kernels_mod._conv_dgrad["fma"].best_config is TWO_ACCUMULATORS


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("value", [NAN, INF], ids=["nan", "+inf"])
def test_conv1_packed_path_keeps_special_values_in_their_windows(monkeypatch, value):
    # conv1's geometry (3 channels, 11x11 / 4, pad 2) on its packed path: a window row is 33
    # interleaved elements, 32 read from the packed rows and 1 from the window's tail copy. The
    # special value sits in the pixel just right of window ow = 0's rows (image column 9, the
    # next 3 elements after the row in the packed layout: a 4-element read of the row's end
    # would reach it) and at the two image corners (the zero border's neighbours)
    launches = []

    class Spy(dict):
        def __getitem__(self, path):
            launches.append(path)
            return super().__getitem__(path)

    monkeypatch.setattr(conv_mod, "_conv_fwd_packed", Spy(conv_mod._conv_fwd_packed))
    x, w, b = (t.detach().clone() for t in make((1, 3, 23, 23), (4, 3, 11, 11)))
    x[0, :, 5, 9] = value  # windows ow = 1, 2 (columns 2..12, 6..16) hold it, ow = 0 does not
    x[0, :, 0, 0] = value
    x[0, :, 22, 22] = value
    y = conv2d_relu(x, w, b, 4, 2)
    assert launches == ["fma"]  # the packed path ran (exact fp32 under the interpreter)
    y_ref, _ = reference(x, w, b, 4, 2, 1, torch.ones(y.shape))
    assert_close(y, y_ref, torch.float32, reduce_dim=363)
    # outputs no special pixel reaches stay finite (the corners reach output (0, 0) and (4, 4)
    # alone, pixel (5, 9) outputs (0..1, 1..2)), and the test can fail: some reached output is
    # not (+-inf times weights of both signs gives NaN)
    assert torch.isfinite(y[..., 1:, 0]).all() and torch.isfinite(y[..., 1:4, 3]).all()
    assert not torch.isfinite(y[..., :2, 1:3]).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
def test_inf_minus_inf_is_nan():
    x, w, b = make((1, 2, 4, 4), (3, 2, 3, 3))
    x = x.detach().clone()
    x[0, 0, 1, 1], x[0, 0, 1, 2] = INF, -INF  # one window holds both when both weights are > 0
    w = w.detach().abs().requires_grad_()
    x.requires_grad_()
    y = conv2d_relu(x, w, b, 1, 0)
    assert y.isnan().any()
    y_ref, grads_ref = reference(x, w, b, 1, 0, 1, torch.ones(y.shape))
    assert_close(y, y_ref, torch.float32, reduce_dim=18)
    for name, grad in zip(("input", "weight", "bias"),
                          torch.autograd.grad(y, [x, w, b], torch.ones(y.shape))):
        assert_close(grad, grads_ref[name], torch.float32, reduce_dim=18)


def test_relu_backward_keeps_nan_where_the_output_is_nan():
    # torch: grad * (y > 0) would drop it; threshold_backward passes the gradient where y is NaN
    x, w, _ = make((1, 1, 3, 3), (1, 1, 1, 1))
    x = x.detach().clone()
    x[0, 0, 0, 0] = NAN
    w = torch.ones(1, 1, 1, 1, requires_grad=True)
    y = conv2d_relu(x.requires_grad_(), w)
    (dx,) = torch.autograd.grad(y, [x], torch.full(y.shape, 2.0))
    assert y[0, 0, 0, 0].isnan() and dx[0, 0, 0, 0] == 2.0


# ----------------------------------------------------------------------------------------------
# float64 (fp64 accumulation) and gradcheck
# ----------------------------------------------------------------------------------------------


def test_float64_matches_reference():
    x, w, b = make((2, 4, 5, 5), (6, 2, 3, 3), dtype=torch.float64)
    y, grads = check(x, w, b, 2, 1, 2)
    assert y.dtype == torch.float64 and grads["weight"].dtype == torch.float64


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups", [
    pytest.param((1, 2, 5, 5), (4, 1, 3, 3), 2, 1, 2, id="grouped-strided"),
    pytest.param((2, 3, 4, 4), (2, 3, 2, 3), 1, (1, 0), 1, id="conv1-like-rect"),
])
def test_gradcheck(x_shape, w_shape, stride, padding, groups):
    x, w, b = make(x_shape, w_shape, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x, w, b: conv2d_relu(x, w, b, stride, padding, 1, groups), (x, w, b),
        fast_mode=True,
    )


def test_double_backward_is_refused_clearly():
    x, w, b = make((1, 2, 4, 4), (3, 2, 3, 3))
    y = conv2d_relu(x, w, b, 1, 1)
    (gw,) = torch.autograd.grad(y.sum(), [w], create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward .* not supported"):
        gw.sum().backward()


# ----------------------------------------------------------------------------------------------
# Shapes: unbatched input, empty batch
# ----------------------------------------------------------------------------------------------


def test_unbatched_channels_last_like_and_empty_float64():
    x, w, b = make((4, 6, 5), (6, 4, 3, 3))
    y, grads = check(x.detach().transpose(1, 2).requires_grad_(), w, b, 1, 1)  # (4, 5, 6) view
    assert y.shape == (6, 5, 6) and grads["input"].shape == (4, 5, 6)
    x, w, b = make((0, 4, 5, 5), (6, 4, 3, 3), dtype=torch.float64)
    y, grads = check(x, w, b, 1, 1)
    assert y.shape == (0, 6, 5, 5) and torch.equal(grads["bias"], torch.zeros(6).double())


# ----------------------------------------------------------------------------------------------
# int32 offsets: the memory span of a view is checked, without allocating it
# ----------------------------------------------------------------------------------------------


def huge_view(shape, strides):
    """A float32 CPU tensor whose strides reach far past its 64 bytes of real storage (numpy's
    stride tricks; torch trusts them): any read beyond those bytes would be a bug."""
    base = np.zeros(16, dtype=np.float32)
    return torch.from_numpy(np.lib.stride_tricks.as_strided(
        base, shape=shape, strides=[4 * s for s in strides]))


@pytest.mark.parametrize("which", ["input", "weight"])
def test_view_spanning_past_int32_is_refused(monkeypatch, which):
    for kernel in ("_conv_fwd", "_conv_dgrad", "_conv_wgrad", "_split_sum_kernel"):
        monkeypatch.setattr(conv_mod, kernel, RefuseLaunch())
    x, w = torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 2, 2)
    if which == "input":  # 18 elements, batch stride 2**31: spans 2**31 + 9
        x = huge_view((2, 1, 3, 3), (2**31, 9, 3, 1))
    else:
        w = huge_view((2, 1, 2, 2), (2**31 - 2, 4, 2, 1))
    assert x.numel() < 100 and w.numel() < 100
    with pytest.raises(ValueError, match=rf"{which} of shape .* spans \d+ elements.* int32"):
        conv2d_relu(x, w)


def test_expanded_input_whose_gradient_would_overflow_is_refused():
    # 0 strides: the view spans 100 elements, but the output and input gradient are dense
    x = torch.zeros(1, 4, 5, 5).expand(2**25, 4, 5, 5)
    with pytest.raises(ValueError, match=r"input gradient would hold 3355443200 elements.*int32"):
        conv2d_relu(x, torch.zeros(2, 4, 3, 3))


# ----------------------------------------------------------------------------------------------
# TF32: fp32 convolutions take tensor cores exactly when cuDNN's flag allows it
# ----------------------------------------------------------------------------------------------


class SpyLaunch:
    """Stands in for one autotuned kernel: records the path and precision of each launch, and
    builds its grid for the interpreter's config as the autotuner would (wgrad's split-sum
    reads the split count the grid chose)."""

    def __init__(self, kernel, path, log):
        self.kernel, self.path, self.log = kernel, path, log

    def __getitem__(self, grid):
        def launch(**kwargs):
            grid({**kwargs, **CONV_INTERPRET_CONFIG.kwargs})
            self.log.append((self.kernel, self.path, kwargs["INPUT_PRECISION"]))

        return launch


@pytest.mark.parametrize("allow", [True, False])
def test_tf32_decision_reaches_the_launch(monkeypatch, allow):
    log = []
    for kernel in ("fwd", "dgrad", "wgrad"):
        monkeypatch.setattr(conv_mod, f"_conv_{kernel}", {p: SpyLaunch(kernel, p, log)
                                                         for p in ("mma", "fma")})
    # C_in = 4 with window rows of 4 x 4 elements takes conv1's packed forward and weight
    # gradient: they must get the same decision
    for kernel in ("fwd", "wgrad"):
        monkeypatch.setattr(conv_mod, f"_conv_{kernel}_packed",
                            {p: SpyLaunch(kernel, p, log) for p in ("mma", "fma")})
    x, w, b = make((1, 4, 5, 5), (6, 4, 3, 4))
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.allow_tf32, matmul.allow_tf32
    try:
        cudnn.allow_tf32, matmul.allow_tf32 = allow, not allow  # the matmul flag is not the conv's
        y = conv2d_relu(x, w, b, 1, 1)
        torch.autograd.grad(y, [x, w, b], torch.ones(y.shape))
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before
    want = ("mma", "tf32") if allow else ("fma", "ieee")
    assert log == [(k, *want) for k in ("fwd", "dgrad", "wgrad")]
