"""kernels.local_response_norm vs F.local_response_norm per channel group, in float64."""

import math

import pytest
import torch
import torch.nn.functional as F
from layouts import VIEW_CASES, as_view, check_against_reference, with_specials
from tolerances import assert_close

from kernels.lrn import _lrn_backward, local_response_norm, lrn_backward_op, lrn_op

# --- float64 references --------------------------------------------------------------------


def ref_lrn(x, size, alpha=1e-4, beta=0.75, k=1.0, groups=1):
    """torch's LRN (alpha / size, windows c - size//2 .. c + (size-1)//2) on each channel group."""
    x = x.double()
    slices = x.chunk(groups, 1)
    return torch.cat([F.local_response_norm(t, size, alpha, beta, k) for t in slices], 1)


def paper_lrn(a, n, alpha, beta, k):
    """Krizhevsky et al. 2012, section 3.3, written out: b_i = a_i / (k + alpha * sum_{j =
    max(0, i - n/2)}^{min(N - 1, i + n/2)} a_j^2)^beta, with no division by n."""
    a = a.double()
    channels = a.shape[1]
    out = torch.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        out[:, i] = a[:, i] / (k + alpha * (a[:, lo : hi + 1] ** 2).sum(1)) ** beta
    return out


def _layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """A leaf tensor holding x's values in the given memory layout."""
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "noncontig":  # every other channel and a column offset of a larger buffer
        n, c, *mid, w = x.shape
        big = torch.zeros(n, 2 * c, *mid, w + 3, dtype=x.dtype)
        view = big[:, ::2, ..., 1 : x.shape[-1] + 1]
        view.copy_(x)
        x = view
    return x.detach().requires_grad_()


def check(shape, size, alpha, beta, k, groups, dtype=torch.float32, layout="contiguous", scale=1.0):
    torch.manual_seed(0)
    x = (torch.randn(shape, dtype=torch.float64) * scale).to(dtype)  # values exact in dtype
    xk = _layout(x, layout)
    xr = x.double().requires_grad_()
    y = local_response_norm(xk, size, alpha, beta, k, groups)
    yr = ref_lrn(xr, size, alpha, beta, k, groups)
    assert y.dtype == dtype and y.shape == yr.shape
    assert_close(y, yr, dtype, reduce_dim=size)
    dy = torch.randn(shape, dtype=torch.float64).to(dtype)
    y.backward(dy)
    yr.backward(dy.double())
    assert xk.grad.dtype == dtype and xk.grad.shape == x.shape
    assert_close(xk.grad, xr.grad, dtype, reduce_dim=size)
    return y


# --- cases ---------------------------------------------------------------------------------

F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


def case(label, shape, size, alpha, beta, k, groups, dtype=F32, layout="contiguous", scale=1.0):
    return pytest.param(shape, size, alpha, beta, k, groups, dtype, layout, scale, id=label)


CASES = [
    # after conv1 (reduced): paper constants in torch terms, two towers, conv-scale activations
    case("conv1-paper", (2, 8, 5, 5), 5, 5e-4, 0.75, 2.0, 2, scale=10.0),
    # after conv2 (reduced), cuda-convnet's constants (alpha=1e-4 in torch terms)
    case("conv2-convnet", (2, 12, 3, 3), 5, 1e-4, 0.75, 2.0, 2, scale=10.0),
    # a strong alpha so the cross-channel term of the gradient is of order 1
    case("strong-alpha", (2, 6, 4, 3), 5, 3.0, 0.75, 1.0, 1),
    case("N1-odd-C7", (1, 7, 5, 3), 3, 2.0, 0.5, 1.5, 1),
    case("size-even", (2, 6, 3, 3), 4, 2.0, 0.75, 1.0, 2),
    case("size-gt-C", (2, 3, 3, 4), 7, 2.0, 0.75, 1.0, 1),
    case("size-gt-group", (2, 8, 3, 3), 6, 2.0, 0.75, 1.0, 2),
    case("size-1", (2, 5, 3, 3), 1, 2.0, 1.3, 0.5, 1),
    case("channels_last", (2, 8, 4, 5), 5, 2.0, 0.75, 2.0, 2, layout="channels_last"),
    case("noncontig", (2, 8, 4, 5), 5, 2.0, 0.75, 2.0, 2, layout="noncontig"),
    case("3d-NCL", (3, 6, 7), 3, 2.0, 0.75, 1.0, 3),
    case("5d", (2, 4, 2, 3, 2), 3, 2.0, 0.75, 1.0, 2),
    case("5d-noncontig", (2, 6, 2, 3, 2), 3, 2.0, 0.75, 1.0, 2, layout="noncontig"),
    case("fp16-paper", (2, 8, 5, 5), 5, 5e-4, 0.75, 2.0, 2, F16, scale=10.0),
    case("fp16-strong-cl", (2, 6, 3, 4), 5, 2.0, 0.75, 1.0, 2, F16, layout="channels_last"),
    case("bf16-strong", (2, 6, 3, 4), 5, 2.0, 0.75, 1.0, 2, BF16),
]


@pytest.mark.parametrize("shape,size,alpha,beta,k,groups,dtype,layout,scale", CASES)
def test_lrn_matches_torch(shape, size, alpha, beta, k, groups, dtype, layout, scale):
    y = check(shape, size, alpha, beta, k, groups, dtype, layout, scale)
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_paper_convention():
    # The paper's layer (n=5, k=2, alpha=1e-4, beta=0.75, no division by n) is torch's
    # local_response_norm(x, 5, alpha=5e-4, ...); large activations so the term matters.
    torch.manual_seed(0)
    x = torch.randn(2, 9, 3, 3, dtype=torch.float64) * 30.0
    expected = paper_lrn(x, 5, 1e-4, 0.75, 2.0)
    assert not torch.allclose(expected, x / 2.0**0.75, rtol=1e-3)  # the window sum matters here
    assert_close(ref_lrn(x, 5, 5e-4, 0.75, 2.0), expected, torch.float64)
    assert_close(local_response_norm(x.float(), 5, alpha=5e-4, beta=0.75, k=2.0), expected,
                 torch.float32, reduce_dim=5)


def test_groups_keep_windows_inside_towers():
    # groups=2 differs from groups=1 exactly at the channels next to the tower boundary
    torch.manual_seed(0)
    x = torch.randn(1, 8, 2, 2) * 3
    one, two = (local_response_norm(x, 5, 2.0, 0.75, 1.0, g) for g in (1, 2))
    assert_close(two, ref_lrn(x, 5, 2.0, 0.75, 1.0, 2), torch.float32, reduce_dim=5)
    assert torch.equal(one[:, [0, 7]], two[:, [0, 7]])  # windows never reach the boundary
    assert not torch.allclose(one[:, 2:6], two[:, 2:6])


def test_empty_batch():
    x = torch.randn(0, 6, 3, 3, requires_grad=True)
    y = local_response_norm(x, 5, groups=2)
    assert y.shape == (0, 6, 3, 3)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_no_grad_skips_the_scale():
    x = torch.randn(2, 4, 3, 3)
    with torch.no_grad():
        y = local_response_norm(x, 3, 2.0)
    assert_close(y, ref_lrn(x, 3, 2.0), torch.float32, reduce_dim=3)


BAD_ARGS = [
    # (kwargs, error, text that must be in the message)
    ({"size": 0}, ValueError, "size must be a positive int, got 0"),
    ({"size": 2.5}, ValueError, "got 2.5"),
    ({"size": True}, ValueError, "got True"),
    ({"size": 3, "groups": 0}, ValueError, "groups must be a positive int, got 0"),
    ({"size": 3, "groups": 4}, ValueError, "groups=4 must divide the 6 input channels"),
    ({"size": 3, "alpha": math.inf}, ValueError, "alpha must be a finite real number, got inf"),
    ({"size": 3, "beta": math.nan}, ValueError, "beta must be a finite real number, got nan"),
    ({"size": 3, "k": "2"}, ValueError, "k must be a finite real number, got '2'"),
    # the power's domain: s = k + alpha/size sum x^2 must stay positive
    ({"size": 3, "k": 0.0}, ValueError, "k must be > 0 .*got 0.0"),
    ({"size": 3, "k": -1}, ValueError, "k must be > 0 .*got -1"),
    ({"size": 3, "alpha": -1e-4}, ValueError, "alpha must be >= 0 .*got -0.0001"),
]


@pytest.mark.parametrize("kwargs,error,text", BAD_ARGS)
def test_bad_arguments(kwargs, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(")):
        local_response_norm(torch.randn(2, 6, 3, 3), **kwargs)


@pytest.mark.parametrize("x,error,text", [
    (torch.randn(6, 3), ValueError, r"3 or more dims \(N, C, \*\), got shape \(6, 3\)"),
    (torch.ones(2, 6, 3, dtype=torch.int32), NotImplementedError, "torch.int32"),
    (torch.ones(2, 6, 3, dtype=torch.complex64), NotImplementedError, "torch.complex64"),
    ([[1.0]], TypeError, "got list"),
])
def test_bad_input(x, error, text):
    with pytest.raises(error, match=text):
        local_response_norm(x, 3)


# --- every pointer's strides, NaN and inf, powers, float64 ---------------------------------

F64 = torch.float64


@pytest.mark.parametrize("x_kind,dy_kind", VIEW_CASES)
def test_views_of_input_and_gradient(x_kind, dy_kind):
    torch.manual_seed(0)
    x = as_view(torch.randn(2, 6, 3, 4, dtype=F64), x_kind)
    check_against_reference(lambda t: local_response_norm(t, 3, 2.0, 0.75, 1.0, 2),
                            lambda t: ref_lrn(t, 3, 2.0, 0.75, 1.0, 2), x, dy_kind)


def test_saved_scale_strides():
    # the backward op reads the saved scale through its own strides, not the gradient's
    torch.manual_seed(0)
    x, dy = torch.randn(2, 4, 3, 3, dtype=F64), torch.randn(2, 4, 3, 3, dtype=F64)
    _, scale = lrn_op(x, 3, 2.0, 0.75, 1.0, 1, True)
    expected = lrn_backward_op(x, scale, dy, 3, 2.0, 0.75, 1)
    for view in ("strided", "offset", "channels_last"):
        got = lrn_backward_op(x, as_view(scale, view), dy, 3, 2.0, 0.75, 1)
        assert torch.equal(got, expected), view
    xr = x.clone().requires_grad_()
    ref_lrn(xr, 3, 2.0, 0.75, 1.0).backward(dy)
    assert_close(expected, xr.grad, F64)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's NaN notes in the interpreter
@pytest.mark.parametrize("where,dtype,beta", [
    *[(where, F64, beta) for beta in (0.75, 1.0, 1.5, -0.5, 0.0) for where in ("x", "dy", "both")],
    ("both", torch.float32, 0.75), ("both", torch.float32, 1.5),
])
def test_nan_and_inf_as_torch(where, dtype, beta):
    # NaN, +inf, -inf in the input and/or the gradient: the same NaN/inf positions as
    # F.local_response_norm's autograd graph, for powers below, at and above 1 and beta = 0
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3, 3, dtype=F64) * 3
    if where != "dy":
        x = with_specials(x, seed=0)
    dx, _ = check_against_reference(lambda t: local_response_norm(t, 3, 2.0, beta, 1.0, 2),
                                    lambda t: ref_lrn(t, 3, 2.0, beta, 1.0, 2), x.to(dtype),
                                    dy_specials=where != "x", reduce_dim=3)
    assert torch.isnan(dx).any() and not torch.isnan(dx).all()


def test_beta_zero_is_the_identity():
    # s ** 0 = 1 even where the window holds inf or NaN (torch.pow): y = x exactly
    x = torch.tensor([[[1.0], [float("inf")], [2.0], [float("nan")], [-3.0]]], dtype=F64)
    y = local_response_norm(x, 3, 1e-4, 0.0, 2.0)
    assert torch.equal(y.isnan(), x.isnan()) and torch.equal(y[~x.isnan()], x[~x.isnan()])


def test_gradcheck_float64():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 2, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: local_response_norm(t, 3, 3.0, 0.75, 1.0, 2), (x,))


def test_double_backward_is_refused():
    x = torch.randn(1, 4, 2, 2, dtype=F64, requires_grad=True)
    (dx,) = torch.autograd.grad(local_response_norm(x, 3).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward of local_response_norm"):
        dx.sum().backward()


def test_int32_span_is_refused_without_allocating():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():  # tensors with shapes and strides but no memory
        huge = torch.empty_strided((2, 4, 3, 3), (2**31, 9, 3, 1))  # 2 * 4 * 9 elements
        small = torch.empty(2, 4, 3, 3)
        with pytest.raises(ValueError, match=r"input .* spans 2147483684 elements"):
            local_response_norm(huge, 3)
        scale = small.clone()
        for name, args in (("grad_output", (small, scale, huge)), ("scale", (small, huge, small)),
                           ("input", (huge, scale, small))):
            with pytest.raises(ValueError, match=f"{name} of shape .* spans"):
                _lrn_backward(*args, torch.empty(2, 4, 3, 3), (3, 1e-4, 0.75, 1))
