"""Inputs in the memory layouts the pooling kernels must accept."""

import torch


def as_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """A leaf tensor holding x's values (``(*batch, C, H, W)``) in the given memory layout."""
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "noncontig":  # every other channel and a column offset of a larger buffer
        *batch, c, h, w = x.shape
        big = torch.zeros(*batch, 2 * c, h, w + 3, dtype=x.dtype)
        view = big[..., ::2, :, 1 : x.shape[-1] + 1]
        view.copy_(x)
        x = view
    return x.detach().requires_grad_()
