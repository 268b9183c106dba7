"""kernels.max_pool2d vs F.max_pool2d in float64: values, gradients, ties, NaN, errors."""

import pytest
import torch
import torch.nn.functional as F
from layouts import VIEW_CASES, as_layout, as_view, check_against_reference, with_specials
from tolerances import assert_close

from kernels.max_pool2d import (
    PoolGeometry,
    _pool_backward,
    max_pool2d,
    max_pool2d_backward_op,
    max_pool2d_op,
)

# --- float64 reference ---------------------------------------------------------------------


def ref_pool(x, kernel_size, stride=None, padding=0):
    return F.max_pool2d(x.double(), kernel_size, stride, padding)


def check(x, kernel_size, stride=None, padding=0, layout="contiguous"):
    """Forward and input gradient of the kernel vs torch in float64 on the same values."""
    dtype = x.dtype
    xk = as_layout(x, layout)
    xr = x.double().requires_grad_()
    y = max_pool2d(xk, kernel_size, stride, padding)
    yr = ref_pool(xr, kernel_size, stride, padding)
    assert y.dtype == dtype and y.shape == yr.shape
    assert_close(y, yr, dtype)
    dy = torch.randn(yr.shape, dtype=torch.float64).to(dtype)
    y.backward(dy)
    yr.backward(dy.double())
    assert_close(xk.grad, xr.grad, dtype, reduce_dim=4)  # up to 4 overlapping windows sum
    return y, xk.grad, xr.grad


# --- cases ---------------------------------------------------------------------------------

CASES = [
    # (shape, kernel_size, stride, padding, dtype, layout)
    pytest.param((2, 4, 13, 13), 3, 2, 0, torch.float32, "contiguous", id="pool5-3s2-13to6"),
    pytest.param((2, 3, 11, 11), 3, 2, 0, torch.float16, "contiguous", id="pool1-fp16"),
    pytest.param((1, 5, 7, 9), 3, 2, 1, torch.float32, "contiguous", id="N1-odd-pad1"),
    pytest.param((2, 3, 6, 8), 2, None, 0, torch.float32, "contiguous", id="2x2-stride-default"),
    pytest.param((2, 3, 5, 6), 3, 1, 1, torch.float32, "contiguous", id="3s1-pad1"),
    pytest.param((2, 3, 7, 6), (3, 2), (2, 1), (1, 0), torch.float32, "contiguous", id="rect"),
    pytest.param((2, 3, 8, 8), 2, 3, 0, torch.float32, "contiguous", id="stride-gt-kernel"),
    pytest.param((2, 3, 4, 5), 1, 1, 0, torch.float32, "contiguous", id="1x1"),
    pytest.param((2, 3, 13, 12), 5, 2, 2, torch.float32, "contiguous", id="5s2-pad2"),
    pytest.param((2, 6, 9, 9), 3, 2, 0, torch.float32, "channels_last", id="channels_last"),
    pytest.param((2, 6, 9, 9), 3, 2, 1, torch.bfloat16, "channels_last", id="channels_last-bf16"),
    pytest.param((2, 3, 9, 7), 3, 2, 0, torch.float32, "noncontig", id="noncontig"),
    pytest.param((3, 9, 9), 3, 2, 0, torch.float32, "contiguous", id="unbatched"),
    pytest.param((3, 9, 9), 3, 2, 1, torch.float16, "noncontig", id="unbatched-noncontig"),
]


@pytest.mark.parametrize("shape,kernel_size,stride,padding,dtype,layout", CASES)
def test_max_pool2d_matches_torch(shape, kernel_size, stride, padding, dtype, layout):
    torch.manual_seed(0)
    x = torch.randn(shape).to(dtype)
    y, _, _ = check(x, kernel_size, stride, padding, layout)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_ties_first_max_gets_the_gradient(dtype):
    # integer values in {0, 1, 2}: most 3x3 windows hold several exact maxima
    torch.manual_seed(0)
    x = torch.randint(0, 3, (2, 3, 9, 9)).to(dtype)
    _, grad, ref_grad = check(x, 3, 2, 1)
    assert torch.equal(grad != 0, ref_grad != 0)  # the same positions got the gradient
    # a constant map: every window's first in-bounds tap is its max
    ones = torch.ones(1, 1, 5, 5, dtype=dtype, requires_grad=True)
    max_pool2d(ones, 3, 2).sum().backward()
    expected = torch.zeros(5, 5, dtype=dtype)
    expected[0:4:2, 0:4:2] = 1
    assert torch.equal(ones.grad[0, 0], expected)


def test_nan_propagates_as_in_torch():
    torch.manual_seed(0)
    x = torch.randn(1, 2, 7, 7)
    x[0, 0, 1, 1] = float("nan")  # inside windows (0,0) and no other
    x[0, 0, 3, 3] = float("nan")  # shared by four windows
    x[0, 1, 4, 5] = float("nan")
    x[0, 1, 4, 6] = float("nan")  # two NaNs in one window: torch keeps the last
    y, grad, ref_grad = check(x, 3, 2)
    assert torch.isnan(y).sum() == torch.isnan(ref_pool(x, 3, 2)).sum() > 0
    assert torch.equal(grad.double() != 0, ref_grad != 0)  # the NaNs' positions got the gradient
    assert grad[0, 1, 4, 6] != 0 and grad[0, 1, 4, 5] == 0


def test_all_minus_inf_with_padding():
    # padding never wins, even over -inf: the first in-bounds tap is the argmax
    x = torch.full((1, 1, 3, 3), float("-inf"))
    check(x, 3, 2, 1)


def test_empty_batch():
    x = torch.randn(0, 3, 9, 9, requires_grad=True)
    y = max_pool2d(x, 3, 2)
    assert y.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_no_grad_forward():
    x = torch.randn(2, 3, 7, 7)
    with torch.no_grad():
        y = max_pool2d(x, 3, 2)
    assert_close(y, ref_pool(x, 3, 2), torch.float32)


@pytest.mark.parametrize("kwargs,error,text", [
    ({"kernel_size": 3, "dilation": 2}, NotImplementedError, "dilation=2"),
    ({"kernel_size": 3, "dilation": (1, 2)}, NotImplementedError, r"dilation=\(1, 2\)"),
    ({"kernel_size": 3, "ceil_mode": True}, NotImplementedError, "ceil_mode=True"),
    ({"kernel_size": 3, "return_indices": True}, NotImplementedError, "return_indices=True"),
    ({"kernel_size": 3, "padding": 2}, ValueError, r"pad=\(2, 2\), kernel_size=\(3, 3\)"),
    ({"kernel_size": 3, "padding": -1}, ValueError, r"got \(-1, -1\)"),
    ({"kernel_size": 0}, ValueError, "kernel_size must be positive, got 0"),
    ({"kernel_size": 3, "stride": 0}, ValueError, r"stride must be positive, got \(0, 0\)"),
    ({"kernel_size": "3"}, ValueError, "kernel_size must be an int or a pair of ints, got '3'"),
    ({"kernel_size": (3, 3, 3)}, ValueError, r"got \(3, 3, 3\)"),
    ({"kernel_size": 11}, ValueError, r"output size \(0, 0\)"),
])
def test_bad_arguments(kwargs, error, text):
    with pytest.raises(error, match=text):
        max_pool2d(torch.randn(2, 3, 9, 9), **kwargs)


@pytest.mark.parametrize("x,error,text", [
    (torch.randn(9, 9), ValueError, r"got shape \(9, 9\)"),
    (torch.randn(1, 2, 3, 9, 9), ValueError, r"got shape \(1, 2, 3, 9, 9\)"),
    (torch.randn(2, 0, 9, 9), ValueError, r"shape \(2, 0, 9, 9\)"),
    (torch.ones(2, 3, 9, 9, dtype=torch.int64), NotImplementedError, "torch.int64"),
    ("x", TypeError, "got str"),
])
def test_bad_input(x, error, text):
    with pytest.raises(error, match=text):
        max_pool2d(x, 3, 2)


# --- every pointer's strides, NaN and inf, float64 -----------------------------------------

F64 = torch.float64


@pytest.mark.parametrize("x_kind,dy_kind", VIEW_CASES)
def test_views_of_input_and_gradient(x_kind, dy_kind):
    torch.manual_seed(0)
    x = as_view(torch.randn(2, 3, 7, 6, dtype=F64), x_kind)
    check_against_reference(lambda t: max_pool2d(t, 3, 2, 1), lambda t: ref_pool(t, 3, 2, 1), x,
                            dy_kind, reduce_dim=4)


def test_saved_argmax_strides():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 7, dtype=F64)
    y, arg = max_pool2d_op(x, [3, 3], [2, 2], [1, 1], True)
    dy = torch.randn_like(y)
    expected = max_pool2d_backward_op(dy, arg, 7, 7, False, [3, 3], [2, 2], [1, 1])
    for view in ("strided", "offset", "channels_last"):
        got = max_pool2d_backward_op(dy, as_view(arg, view), 7, 7, False, [3, 3], [2, 2], [1, 1])
        assert torch.equal(got, expected), view
    xr = x.clone().requires_grad_()
    ref_pool(xr, 3, 2, 1).backward(dy)
    assert torch.equal(expected, xr.grad)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's NaN notes in the interpreter
@pytest.mark.parametrize("padding,where,dtype", [
    *[(padding, where, F64) for padding in (0, 1) for where in ("x", "dy", "both")],
    (1, "both", torch.float32), (1, "both", torch.float16),
])
def test_nan_and_inf_as_torch(padding, where, dtype):
    # NaN, +inf, -inf: the same outputs and the same argmax (which tap gets the gradient, NaN
    # and inf gradients included) as F.max_pool2d, padding or not
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 7, dtype=F64)
    if where != "dy":
        x = with_specials(x, seed=0, fraction=0.2)
    dx, ref_dx = check_against_reference(lambda t: max_pool2d(t, 3, 2, padding),
                                         lambda t: ref_pool(t, 3, 2, padding), x.to(dtype),
                                         dy_specials=where != "x", reduce_dim=4)
    assert torch.equal(dx != 0, ref_dx != 0)  # NaN != 0 too: the same taps got a gradient


def test_inf_ties_and_minus_inf_windows():
    # +inf twice in window (0, 1): the first in row-major order, (0, 2), gets its gradient;
    # window (2, 2) holds -inf only: output -inf, its first in-bounds tap (3, 3) gets it
    x = torch.full((1, 1, 6, 6), float("-inf"), dtype=F64)
    x[0, 0, 0, 2] = x[0, 0, 1, 1] = float("inf")
    y, grad, ref_grad = check(x, 3, 2, 1)
    assert torch.equal(grad, ref_grad)
    y = y.detach()
    assert y[0, 0, 0, 1] == float("inf") and y[0, 0, 2, 2] == float("-inf")
    dy = torch.zeros_like(y)
    dy[0, 0, 0, 1] = dy[0, 0, 2, 2] = 1.0
    xk = x.detach().clone().requires_grad_()
    max_pool2d(xk, 3, 2, 1).backward(dy)
    assert xk.grad[0, 0, 0, 2] == 1 and xk.grad[0, 0, 3, 3] == 1 and xk.grad.sum() == 2


def test_gradcheck_float64():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 5, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: max_pool2d(t, 3, 2, 1), (x,))


def test_double_backward_is_refused():
    x = torch.randn(1, 2, 5, 5, dtype=F64, requires_grad=True)
    y = max_pool2d(x, 3, 2)
    dy = torch.ones_like(y, requires_grad=True)  # dx is linear in dy: differentiate that
    (dx,) = torch.autograd.grad(y, x, dy, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward of max_pool2d"):
        dx.sum().backward()


def test_int32_span_is_refused_without_allocating():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # tensors with shapes and strides but no memory
        huge_x = torch.empty_strided((2, 3, 5, 5), (2**31, 25, 5, 1))
        with pytest.raises(ValueError, match=r"input of shape \(2, 3, 5, 5\) .* spans"):
            max_pool2d(huge_x, 3, 2)
        huge_dy = torch.empty_strided((2, 3, 2, 2), (2**31, 4, 2, 1))
        arg = torch.empty(2, 3, 2, 2, dtype=torch.int8)
        geo = PoolGeometry((3, 3), (2, 2), (0, 0), (2, 2))
        with pytest.raises(ValueError, match="grad_output of shape .* spans"):
            _pool_backward(huge_dy, arg, torch.empty(2, 3, 5, 5), geo)
        with pytest.raises(ValueError, match="argmax of shape .* spans"):
            huge_arg = torch.empty_strided((2, 3, 2, 2), (2**31, 4, 2, 1), dtype=torch.int8)
            _pool_backward(torch.empty(2, 3, 2, 2), huge_arg, torch.empty(2, 3, 5, 5), geo)
