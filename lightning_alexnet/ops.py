"""The one seam between the network and its kernels.

Each layer of :class:`~lightning_alexnet.model.AlexNet` that the Triton kernels replace is a
module here with a ``kernels`` attribute:

- ``"triton"``: the ``kernels`` package (CUDA tensors, or CPU under ``TRITON_INTERPRET=1``);
  an input it cannot take raises -- nothing falls back to eager.
- ``"eager"``: the ``torch.nn.functional`` reference ops, exactly.
- ``"auto"``: Triton on CUDA tensors; on CPU the CPU path below.

CPU path: eager PyTorch's LRN is a chain of seven ops that dominates a CPU training step.
:func:`cpu_local_response_norm` computes the same function as one autograd node with a
hand-written backward (Caffe's formulation), saving only the input and the scale, and the
paper's beta = 3/4 power as sqrt/rsqrt. Its arguments are the Triton kernels' (alpha >= 0 and
k > 0, so the scale is positive and ``s ** -beta`` equals ``torch.pow``; beta = 0 is the
identity, as in PyTorch); anything else raises the same ``ValueError``. Measured on 2 CPU
cores (batch 32, paper model): eager LRN ~29 img/s, this path ~35 img/s, no LRN at all
~41 img/s. (``torch.compile`` of the same formulas was slower inside the full training step
here: ~21 img/s.)
"""

from __future__ import annotations

import os
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor

# The kernel choice, declared here once for the model, the module and the CLI (whose parser
# takes its values from the Literal); :func:`check_kernels` is its one validation.
Kernels = Literal["auto", "triton", "eager"]
KERNEL_CHOICES: tuple[str, ...] = get_args(Kernels)


def check_kernels(kernels: str) -> Kernels:
    """``kernels`` when it is one of :data:`KERNEL_CHOICES`, else a ValueError naming it."""
    if kernels not in KERNEL_CHOICES:
        raise ValueError(f"kernels must be 'auto', 'triton' or 'eager', got {kernels!r}")
    return kernels


def _use_triton(kernels: Kernels, x: torch.Tensor) -> bool:
    return kernels == "triton" or (kernels == "auto" and x.is_cuda)


def check_kernels_device(kernels: Kernels, device: torch.device) -> None:
    """Raise before any work when ``kernels`` cannot run on ``device`` (the first batch would)."""
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"  # as kernels/_common.py reads it
    if kernels == "triton" and device.type == "cpu" and not interpret:
        raise ValueError("kernels='triton' on the CPU needs Triton's interpreter (TRITON_INTERPRET=1, "
                         "slow, for testing): use --model.kernels auto (the fast CPU path) or a GPU")
    if kernels == "triton" or (kernels == "auto" and device.type == "cuda"):
        _triton_kernels()  # imported now: a bad LIGHTNING_ALEXNET_UNVERIFIED stops the run here


def _triton_kernels():
    try:
        import kernels
    except ImportError as e:  # e.g. no triton on this platform
        raise RuntimeError(
            f"kernels='triton' needs the Triton kernels, which failed to import: {e}"
        ) from e
    except ValueError as e:  # kernels.tuning's UnverifiedSettingError: the user's environment
        if type(e).__name__ != "UnverifiedSettingError":
            raise
        raise ValueError(str(e)) from None
    return kernels


# --- CPU path: LRN as one autograd node --------------------------------------------------


def _window_sum(t: torch.Tensor, size: int, groups: int) -> torch.Tensor:
    """Sum over a window of ``size`` channels (c - size//2 .. c + (size-1)//2), zero padded,
    inside each of ``groups`` channel slices. (N, C, H, W) -> (N, C, H, W).

    One new tensor, then shifted slices added in place: every extra temporary of a conv1-sized
    map (> 32 MB, past glibc's mmap threshold) costs fresh pages on each call."""
    n, c, h, w = t.shape
    cg = c // groups
    src = t.reshape(n * groups, cg, h, w)
    out = src.clone()
    for d in range(-(size // 2), (size - 1) // 2 + 1):  # out[c] += t[c + d] where in range
        if d and abs(d) < cg:
            lo, hi = max(0, -d), cg - max(0, d)
            out[:, lo:hi].add_(src[:, lo + d:hi + d])
    return out.reshape(n, c, h, w)


def _neg_pow_(s: torch.Tensor, beta: float) -> torch.Tensor:
    """s ** -beta as a new tensor, for s in (0, inf] or NaN; the paper's beta = 3/4 as
    rsqrt(s * sqrt(s)), which vectorises (pow does not). s ** 0 = 1, NaN included (torch.pow)."""
    if beta == 0:
        return torch.ones_like(s)
    if beta == 0.75:
        return torch.sqrt(s).mul_(s).rsqrt_()
    return torch.log(s).mul_(-beta).exp_()


def _lrn_forward(x, size: int, alpha: float, beta: float, k: float, groups: int):
    scale = _window_sum(x * x, size, groups).mul_(alpha / size).add_(k)  # k + a/n sum x^2
    return _neg_pow_(scale, beta).mul_(x), scale


def _lrn_backward(x, scale, dy, size: int, alpha: float, beta: float, groups: int):
    # Caffe's formulation: dx_c = dy_c s_c^-b - (2ab/n) x_c sum_{j: c in window(j)} dy_j x_j s_j^(-b-1)
    scale_pow = _neg_pow_(scale, beta)
    if beta == 0:  # torch.pow's backward at exponent 0 is zeros: only the square's x * 0 stays
        return dy * scale_pow + (x * 0.0) * 2.0
    t = (dy * x).mul_(scale_pow).div_(scale)
    if size % 2 == 0:  # the transposed window of an even size is the mirrored one
        acc = _window_sum(t.flip(1), size, groups).flip(1)
    else:
        acc = _window_sum(t, size, groups)
    del t
    return acc.mul_(x).mul_(-2.0 * alpha * beta / size).addcmul_(dy, scale_pow)


class _CPULocalResponseNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size, alpha, beta, k, groups):
        y, scale = _lrn_forward(x, size, alpha, beta, k, groups)
        ctx.save_for_backward(x, scale)
        ctx.params = (size, alpha, beta, groups)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, scale = ctx.saved_tensors
        return _lrn_backward(x, scale, dy, *ctx.params), None, None, None, None, None


def cpu_local_response_norm(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int
) -> torch.Tensor:
    """``F.local_response_norm`` per channel group as one autograd node (any device)."""
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) input, got shape {tuple(x.shape)}")
    if x.shape[1] % groups:
        raise ValueError(f"groups={groups} does not divide the {x.shape[1]} channels")
    if alpha < 0:  # the same domain as kernels.local_response_norm: a positive scale
        raise ValueError(f"alpha must be >= 0 (the kernels need a positive scale), got {alpha!r}")
    if k <= 0:
        raise ValueError(f"k must be > 0 (the kernels need a positive scale), got {k!r}")
    return _CPULocalResponseNorm.apply(x, size, alpha, beta, k, groups)


def eager_local_response_norm(
    x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int
) -> torch.Tensor:
    """The reference: ``F.local_response_norm`` on each of ``groups`` channel slices."""
    if groups == 1:
        return F.local_response_norm(x, size, alpha, beta, k)
    return torch.cat([F.local_response_norm(t, size, alpha, beta, k) for t in x.chunk(groups, 1)], 1)


# --- the modules the network is built from ------------------------------------------------


class Conv2dReLU(nn.Conv2d):
    """``relu(conv2d(x))``; the Triton kernel fuses bias and ReLU into the GEMM epilogue."""

    kernels: Kernels = "auto"  # set by AlexNet.set_kernels, which validates it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if isinstance(weight, DTensor):  # the towers strategy (towers.py): this rank's tower
            weight, bias = weight.to_local(), bias.to_local()
        if _use_triton(self.kernels, x):
            return _triton_kernels().conv2d_relu(
                x, weight, bias, self.stride, self.padding, self.dilation, self.groups
            )
        return F.relu(self._conv_forward(x, weight, bias), inplace=True)


class LocalResponseNormMaxPool2d(nn.Module):
    """LRN (windows inside each of ``groups`` towers) then overlapping max-pool, fused in Triton."""

    kernels: Kernels = "auto"  # set by AlexNet.set_kernels, which validates it

    def __init__(self, size: int, alpha: float, beta: float, k: float, groups: int,
                 kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lrn = (self.size, self.alpha, self.beta, self.k, self.groups)
        if _use_triton(self.kernels, x):
            return _triton_kernels().lrn_max_pool2d(
                x, *lrn, kernel_size=self.kernel_size, stride=self.stride
            )
        if self.kernels == "eager":
            x = eager_local_response_norm(x, *lrn)
        else:
            x = cpu_local_response_norm(x, *lrn)
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
                f"groups={self.groups}, kernel_size={self.kernel_size}, stride={self.stride}")


class MaxPool2d(nn.Module):
    """Overlapping max-pool (3x3, stride 2 in AlexNet)."""

    kernels: Kernels = "auto"  # set by AlexNet.set_kernels, which validates it

    def __init__(self, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _use_triton(self.kernels, x):
            return _triton_kernels().max_pool2d(x, self.kernel_size, self.stride)
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"
