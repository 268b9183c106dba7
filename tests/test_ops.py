"""The model's seam: the CPU path equals the eager reference; backends are chosen as asked."""

import pytest
import torch
import torch.nn.functional as F
from tolerances import assert_close

from lightning_alexnet import AlexNet, AlexNetConfig
from lightning_alexnet.ops import cpu_local_response_norm, eager_local_response_norm


def lrn_reference(x, size, alpha, beta, k, groups):
    """F.local_response_norm applied to each channel group, in float64."""
    parts = x.double().chunk(groups, dim=1)
    return torch.cat([F.local_response_norm(p, size, alpha, beta, k) for p in parts], dim=1)


@pytest.mark.parametrize(
    "shape, size, groups",
    [
        pytest.param((2, 12, 7, 7), 5, 2, id="alexnet-lrn-two-towers"),
        pytest.param((2, 12, 7, 7), 5, 1, id="one-tower"),
        pytest.param((1, 6, 3, 5), 4, 2, id="even-size"),
        pytest.param((1, 3, 4, 4), 7, 1, id="size-larger-than-C"),
    ],
)
@pytest.mark.parametrize("beta", [0.75, 0.6], ids=["beta-3/4-rsqrt", "beta-general-exp-log"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_lrn_matches_eager(shape, size, groups, dtype, beta):
    torch.manual_seed(0)
    x = (torch.randn(shape, dtype=torch.float64) * 3).to(dtype).requires_grad_()
    x_before = x.detach().clone()
    alpha, k = 5e-2, 2.0  # alpha large enough that the window matters
    y = cpu_local_response_norm(x, size, alpha, beta, k, groups)
    dy = torch.randn_like(y)
    dy_before = dy.clone()
    (dx,) = torch.autograd.grad(y, x, dy)
    assert torch.equal(x, x_before) and torch.equal(dy, dy_before)  # in-place work stays inside

    xr = x.detach().double().requires_grad_()
    yr = lrn_reference(xr, size, alpha, beta, k, groups)
    (dxr,) = torch.autograd.grad(yr, xr, dy.double())
    assert_close(y, yr, dtype)
    assert_close(dx, dxr, dtype, reduce_dim=size)


def test_cpu_lrn_rejects_bad_input():
    with pytest.raises(ValueError, match=r"expected \(N, C, H, W\) input, got shape \(3, 4\)"):
        cpu_local_response_norm(torch.randn(3, 4), 5, 1e-4, 0.75, 2.0, 1)
    with pytest.raises(ValueError, match="groups=2 does not divide the 5 channels"):
        cpu_local_response_norm(torch.randn(1, 5, 2, 2), 5, 1e-4, 0.75, 2.0, 2)


@pytest.mark.parametrize("alpha,k,text", [
    (5e-2, 0.0, "k must be > 0 .*got 0.0"),
    (5e-2, -2.0, "k must be > 0 .*got -2.0"),
    (-1e-4, 2.0, "alpha must be >= 0 .*got -0.0001"),
])
def test_cpu_lrn_refuses_what_the_kernels_refuse(alpha, k, text):
    # one domain for both paths: s = k + alpha/size sum x^2 stays positive, so s ** -beta is
    # torch.pow's value; the same ValueError from the CPU path and the Triton kernel
    from kernels.lrn import local_response_norm

    x = torch.randn(1, 4, 2, 2)
    with pytest.raises(ValueError, match=text):
        cpu_local_response_norm(x, 3, alpha, 0.75, k, 1)
    with pytest.raises(ValueError, match=text):  # the kernels' device: CUDA, else interpreted
        local_response_norm(x.to("cuda" if torch.cuda.is_available() else "cpu"), 3, alpha,
                            0.75, k, 1)


def test_cpu_lrn_beta_zero_is_the_identity():
    # s ** 0 = 1 even where the window holds inf or NaN; the gradient is dy, and NaN where
    # x = +-inf (torch's x * 0 for the square's term)
    x = torch.tensor([1.0, float("inf"), 2.0, float("nan"), -3.0, 0.5], dtype=torch.float64)
    x = x.view(1, 6, 1, 1).requires_grad_()
    y = cpu_local_response_norm(x, 3, 1.0, 0.0, 2.0, 2)
    dy = torch.arange(6.0, dtype=torch.float64).view(1, 6, 1, 1) + 1
    (dx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().clone().requires_grad_()
    yr = lrn_reference(xr, 3, 1.0, 0.0, 2.0, 2)
    (dxr,) = torch.autograd.grad(yr, xr, dy)
    torch.testing.assert_close(y, yr, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(dx, dxr, equal_nan=True, rtol=0, atol=0)
    assert torch.isnan(dx).sum() == 2  # the inf and the NaN


def test_eager_group_lrn_keeps_windows_inside_towers():
    x = torch.randn(1, 8, 2, 2, dtype=torch.float64)
    y = eager_local_response_norm(x, 5, 1.0, 0.75, 2.0, 2)
    x2 = x.clone()
    x2[:, :4] *= 10  # tower A only
    y2 = eager_local_response_norm(x2, 5, 1.0, 0.75, 2.0, 2)
    assert torch.equal(y[:, 4:], y2[:, 4:])
    assert not torch.allclose(y[:, :4] * 10, y2[:, :4])


def test_model_cpu_path_equals_eager():
    """kernels='auto' on CPU (fused LRN) and kernels='eager' give one network, one gradient."""
    torch.manual_seed(0)
    cfg = AlexNetConfig.from_name("tiny", image_size=128, dropout=0.0)
    fast = AlexNet(cfg, kernels="auto").double()
    ref = AlexNet(cfg, kernels="eager").double()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 128, 128, dtype=torch.float64)
    y = torch.tensor([1, 7])
    losses = []
    for model in (fast, ref):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        losses.append(loss.detach())
    assert_close(losses[0], losses[1], torch.float64)
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-12, msg=name)
