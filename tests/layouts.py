"""Inputs in the memory layouts the pooling kernels must accept."""

import pytest
import torch


def as_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """A leaf tensor holding x's values (``(*batch, C, H, W)``) in the given memory layout."""
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "noncontig":
        x = _strided(x)
    return x.detach().requires_grad_()


def _strided(x: torch.Tensor) -> torch.Tensor:
    """x's values at every other channel and a column offset of a larger buffer."""
    *batch, c, h, w = x.shape
    big = torch.zeros(*batch, 2 * c, h, w + 3, dtype=x.dtype, device=x.device)
    view = big[..., ::2, :, 1 : x.shape[-1] + 1]
    view.copy_(x.detach())
    return view


# --- awkward views and special values, shared by the LRN and pooling tests -----------------

VIEWS = ("strided", "offset", "expanded", "channels_last")
# (input view, gradient view) pairs: each view of the input, then of the upstream gradient
VIEW_CASES = [pytest.param(kind, "contiguous", id=f"x-{kind}") for kind in VIEWS] + [
    pytest.param("contiguous", kind, id=f"dy-{kind}") for kind in VIEWS[:3]]


def as_view(x: torch.Tensor, kind: str) -> torch.Tensor:
    """A tensor of x's shape (N, C, *) as an awkward view, detached:

    - "strided": every other channel and a column offset of a larger buffer;
    - "offset": a contiguous view at storage offset 3;
    - "expanded": stride 0 on the batch and last dims, repeating x[:1, ..., :1] (other values);
    - "channels_last" (4-D only), or "contiguous".
    """
    x = x.detach()
    if kind == "strided":
        return _strided(x)
    if kind == "offset":
        buf = torch.zeros(x.numel() + 3, dtype=x.dtype, device=x.device)
        view = buf[3:].view(x.shape)
        view.copy_(x)
        return view
    if kind == "expanded":
        return x[:1, ..., :1].expand(x.shape)
    if kind in ("channels_last", "contiguous"):
        return x.contiguous(memory_format=getattr(torch, kind.replace("contiguous",
                                                                       "contiguous_format")))
    raise ValueError(f"unknown view kind {kind!r}")


def with_specials(x: torch.Tensor, seed: int, fraction: float = 0.15) -> torch.Tensor:
    """x with NaN, +inf and -inf at random positions (about ``fraction`` of them, a third each)."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    pick = torch.rand(x.shape, generator=g, device=x.device)
    out = x.clone()
    out[pick < fraction] = float("nan")
    out[(pick >= fraction) & (pick < 2 * fraction)] = float("inf")
    out[(pick >= 2 * fraction) & (pick < 3 * fraction)] = float("-inf")
    return out


def check_against_reference(op, ref, x: torch.Tensor, dy_kind: str = "contiguous",
                            dy_specials: bool = False, reduce_dim: int = 1):
    """op(x) and its input gradient vs ref in float64 on the same values (NaN and inf in the
    same places), with the output gradient passed as a ``dy_kind`` view. Returns dx."""
    from tolerances import assert_close

    xk = x.detach().requires_grad_()
    xr = x.detach().double().requires_grad_()
    y, yr = op(xk), ref(xr)
    assert y.dtype == x.dtype and y.shape == yr.shape
    assert_close(y, yr, x.dtype, reduce_dim)
    g = torch.Generator(device=x.device).manual_seed(1)
    dy = torch.randn(yr.shape, dtype=torch.float64, generator=g, device=x.device)
    if dy_specials:
        dy = with_specials(dy, seed=2)
    dy = as_view(dy.to(x.dtype), dy_kind)
    y.backward(dy)
    yr.backward(dy.double())
    assert xk.grad.dtype == x.dtype and xk.grad.shape == x.shape
    assert_close(xk.grad, xr.grad, x.dtype, reduce_dim)
    return xk.grad, xr.grad
