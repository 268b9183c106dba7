"""kernels.lrn_max_pool2d vs F.max_pool2d(F.local_response_norm per group) in float64."""

import pytest
import torch
import torch.nn.functional as F
from layouts import VIEWS, as_layout, as_view, check_against_reference, with_specials
from tolerances import assert_close

from kernels.lrn_max_pool2d import (
    _fused_backward,
    lrn_max_pool2d,
    lrn_max_pool2d_backward_op,
    lrn_max_pool2d_op,
)
from kernels.max_pool2d import PoolGeometry

# --- float64 reference ---------------------------------------------------------------------


def ref_lrn_pool(x, size, alpha, beta, k, groups, kernel_size=3, stride=2, padding=0):
    x = x.double()
    slices = x.chunk(groups, 1)
    lrn = torch.cat([F.local_response_norm(t, size, alpha, beta, k) for t in slices], 1)
    return F.max_pool2d(lrn, kernel_size, stride, padding)


def check(x, lrn, pool=(3, 2, 0), layout="contiguous"):
    """Forward and input gradient vs the float64 reference on the same values."""
    dtype = x.dtype
    xk = as_layout(x, layout)
    xr = x.double().requires_grad_()
    y = lrn_max_pool2d(xk, *lrn, *pool)
    yr = ref_lrn_pool(xr, *lrn, *pool)
    assert y.dtype == dtype and y.shape == yr.shape
    assert_close(y, yr, dtype, reduce_dim=lrn[0])
    dy = torch.randn(yr.shape, dtype=torch.float64).to(dtype)
    y.backward(dy)
    yr.backward(dy.double())
    assert_close(xk.grad, xr.grad, dtype, reduce_dim=4 * lrn[0])  # 4 windows x size channels
    return y, xk.grad, xr.grad


# --- cases ---------------------------------------------------------------------------------

PAPER = (5, 5e-4, 0.75, 2.0, 2)  # the paper's LRN in torch terms, two towers
STRONG = (5, 3.0, 0.75, 1.0, 2)  # alpha large enough that the cross-channel terms are of order 1

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def case(label, shape, lrn, pool=(3, 2, 0), dtype=F32, layout="contiguous", scale=1.0):
    return pytest.param(shape, lrn, pool, dtype, layout, scale, id=label)


CASES = [
    # after conv1 (reduced): 11x11 -> 5x5, ReLU'd activations of conv scale
    case("conv1-paper", (2, 8, 11, 11), PAPER, scale=10.0),
    # after conv2 (reduced): 9x9 -> 4x4
    case("conv2-paper-N1", (1, 12, 9, 9), PAPER, scale=10.0),
    case("strong-odd", (2, 6, 7, 9), STRONG),
    case("C7-groups1-pad1", (2, 7, 7, 7), (3, 2.0, 0.5, 1.5, 1), (3, 2, 1)),
    case("size-even", (2, 6, 6, 6), (4, 2.0, 0.75, 1.0, 2)),
    case("size-gt-C", (2, 3, 5, 5), (7, 2.0, 0.75, 1.0, 1)),
    case("pool-2s2", (2, 4, 6, 6), (3, 2.0, 0.75, 1.0, 2), (2, 2, 0)),
    case("pool-rect-pad", (2, 4, 7, 6), (3, 2.0, 0.75, 1.0, 1), ((3, 2), (1, 2), (1, 1))),
    case("channels_last", (2, 8, 7, 7), STRONG, layout="channels_last"),
    case("noncontig", (2, 6, 7, 7), STRONG, layout="noncontig"),
    case("fp16-paper", (2, 8, 9, 9), PAPER, dtype=F16, scale=10.0),
    case("fp16-strong-cl", (2, 6, 7, 7), STRONG, (3, 2, 1), F16, "channels_last"),
    case("bf16-strong", (2, 6, 7, 7), STRONG, dtype=BF16),
]


@pytest.mark.parametrize("shape,lrn,pool,dtype,layout,scale", CASES)
def test_lrn_max_pool2d_matches_torch(shape, lrn, pool, dtype, layout, scale):
    torch.manual_seed(0)
    x = torch.randn(shape)
    x = (x * scale).relu() if scale > 1 else x  # conv-scale cases: ReLU'd activations
    x = x.to(dtype)
    y, _, _ = check(x, lrn, pool, layout)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_ties_first_max_gets_the_gradient():
    # constant over space: every LRN value of a channel is exactly equal, so each window's
    # first tap is its max
    torch.manual_seed(0)
    x = torch.randn(2, 6, 1, 1).expand(2, 6, 5, 5).contiguous()
    _, grad, ref_grad = check(x, STRONG)
    assert torch.equal(grad != 0, ref_grad != 0)
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[0:4:2, 0:4:2] = True
    assert torch.equal(grad[0, 0] != 0, mask)


def test_nan_propagates_like_the_unfused_ops():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 7, 7)
    x[0, 1, 3, 3] = float("nan")  # NaN in the LRN of channels 0..3 (group 0), pooled everywhere
    y = lrn_max_pool2d(x, *STRONG)
    yr = ref_lrn_pool(x, *STRONG)
    assert torch.equal(torch.isnan(y), torch.isnan(yr)) and torch.isnan(y).any()
    assert_close(y, yr, torch.float32, reduce_dim=5)
    assert not torch.isnan(y[0, 3:]).any()  # the other tower is untouched


def test_empty_batch():
    x = torch.randn(0, 6, 9, 9, requires_grad=True)
    y = lrn_max_pool2d(x, *PAPER)
    assert y.shape == (0, 6, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_no_grad_forward():
    x = torch.randn(2, 6, 7, 7)
    with torch.no_grad():
        y = lrn_max_pool2d(x, *STRONG)
    assert_close(y, ref_lrn_pool(x, *STRONG), torch.float32, reduce_dim=5)


@pytest.mark.parametrize("kwargs,error,text", [
    ({"size": 0}, ValueError, "size must be a positive int, got 0"),
    ({"size": 5, "groups": 4}, ValueError, "groups=4 must divide the 6 input channels"),
    ({"size": 5, "alpha": float("inf")}, ValueError, "alpha must be a finite real number, got inf"),
    ({"size": 5, "alpha": -1.0}, ValueError, "alpha must be >= 0 .*got -1.0"),
    ({"size": 5, "k": 0}, ValueError, "k must be > 0 .*got 0"),
    ({"size": 5, "kernel_size": 0}, ValueError, "kernel_size must be positive, got 0"),
    ({"size": 5, "stride": -1}, ValueError, r"stride must be positive, got \(-1, -1\)"),
    ({"size": 5, "padding": 2}, ValueError, r"pad=\(2, 2\), kernel_size=\(3, 3\)"),
    ({"size": 5, "kernel_size": 13}, ValueError, r"output size \(-1, -1\)"),
])
def test_bad_arguments(kwargs, error, text):
    with pytest.raises(error, match=text):
        lrn_max_pool2d(torch.randn(2, 6, 9, 9), **kwargs)


@pytest.mark.parametrize("x,error,text", [
    (torch.randn(6, 9), ValueError, r"got shape \(6, 9\)"),
    (torch.randn(1, 6, 2, 9, 9), ValueError, r"got shape \(1, 6, 2, 9, 9\)"),
    (torch.randn(6, 9, 9), ValueError,
     r"got shape \(6, 9, 9\) \(a 3-D input is \(N, C, L\) to local_response_norm"),
    (torch.ones(2, 6, 9, 9, dtype=torch.int32), NotImplementedError, "torch.int32"),
    (None, TypeError, "got NoneType"),
])
def test_bad_input(x, error, text):
    with pytest.raises(error, match=text):
        lrn_max_pool2d(x, 5)


# --- every pointer's strides, NaN and inf, float64 -----------------------------------------

F64 = torch.float64
LRN3 = (3, 2.0, 0.75, 1.0, 2)
VIEW_CASES = [pytest.param(kind, "contiguous", id=f"x-{kind}") for kind in VIEWS] + [
    pytest.param("contiguous", kind, id=f"dy-{kind}") for kind in VIEWS[:3]]


@pytest.mark.parametrize("x_kind,dy_kind", VIEW_CASES)
def test_views_of_input_and_gradient(x_kind, dy_kind):
    torch.manual_seed(0)
    x = as_view(torch.randn(2, 4, 5, 6, dtype=F64), x_kind)
    check_against_reference(lambda t: lrn_max_pool2d(t, *LRN3, 3, 2, 1),
                            lambda t: ref_lrn_pool(t, *LRN3, 3, 2, 1), x, dy_kind, reduce_dim=12)


def test_saved_tensor_strides():
    # the backward op reads the saved input and argmax through their own strides
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 5, dtype=F64)
    pool = ([3, 3], [2, 2], [0, 0])
    y, arg = lrn_max_pool2d_op(x, *LRN3, *pool, True)
    dy = torch.randn_like(y)
    expected = lrn_max_pool2d_backward_op(x, dy, arg, *LRN3, *pool)
    for xv, argv in ((as_view(x, "strided"), arg), (x, as_view(arg, "offset"))):
        assert torch.equal(lrn_max_pool2d_backward_op(xv, dy, argv, *LRN3, *pool), expected)
    xr = x.clone().requires_grad_()
    ref_lrn_pool(xr, *LRN3).backward(dy)
    assert_close(expected, xr.grad, F64)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's NaN notes in the interpreter
@pytest.mark.parametrize("where,dtype,beta", [
    ("x", F64, 0.75), ("dy", F64, 0.75), ("both", F64, 0.75),
    ("both", F64, 1.5), ("both", F64, 0.0), ("both", torch.float32, 0.75),
])
def test_nan_and_inf_as_the_composition(where, dtype, beta):
    # NaN, +inf, -inf: NaN/inf where the unfused ops put them, forward and backward; the fused
    # backward computes every channel's term even where the routed gradient is 0, as the
    # composition does (0 * (inf / inf) is NaN there)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5, dtype=F64) * 3
    if where != "dy":
        x = with_specials(x, seed=0, fraction=0.1)
    lrn = (3, 2.0, beta, 1.0, 2)
    check_against_reference(lambda t: lrn_max_pool2d(t, *lrn, 3, 2, 1),
                            lambda t: ref_lrn_pool(t, *lrn, 3, 2, 1), x.to(dtype),
                            dy_specials=where != "x", reduce_dim=12)


def test_gradcheck_float64():
    # fast mode (a random projection of the Jacobian): the full one takes minutes here
    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: lrn_max_pool2d(t, *LRN3, 3, 2, 1), (x,),
                                    fast_mode=True)


def test_double_backward_is_refused():
    x = torch.randn(1, 4, 5, 5, dtype=F64, requires_grad=True)
    (dx,) = torch.autograd.grad(lrn_max_pool2d(x, *LRN3).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward of lrn_max_pool2d"):
        dx.sum().backward()


def test_int32_span_is_refused_without_allocating():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # tensors with shapes and strides but no memory
        huge = torch.empty_strided((2, 4, 5, 5), (2**31, 25, 5, 1))
        with pytest.raises(ValueError, match=r"input of shape \(2, 4, 5, 5\) .* spans"):
            lrn_max_pool2d(huge, *LRN3)
        x, dx = torch.empty(2, 4, 5, 5), torch.empty(2, 4, 5, 5)
        dy, arg = torch.empty(2, 4, 2, 2), torch.empty(2, 4, 2, 2, dtype=torch.int8)
        huge_dy = torch.empty_strided((2, 4, 2, 2), (2**31, 4, 2, 1))
        geo = PoolGeometry((3, 3), (2, 2), (0, 0), (2, 2))
        for name, args in (("input", (huge, dy, arg)), ("grad_output", (x, huge_dy, arg)),
                           ("argmax", (x, dy, huge_dy.to(torch.int8).as_strided(
                               dy.shape, (2**31, 4, 2, 1))))):
            with pytest.raises(ValueError, match=f"{name} of shape .* spans"):
                _fused_backward(*args, dx, LRN3, geo)
