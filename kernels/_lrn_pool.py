"""The pieces LRN and max pooling share: the fused op :mod:`kernels.lrn_max_pool2d` is built from
the same device functions and host helpers as :mod:`kernels.lrn` and :mod:`kernels.max_pool2d`,
so each lives here once (no op module imports another).

- LRN (``@triton.jit`` device functions): the power ``s^e``, the scale over a channel window
  (loaded, or from inputs held in registers), and the backward's factors, as PyTorch's autograd
  graph factors them (see :mod:`kernels.lrn`); the backwards' channel sweep (each program's
  tile, the register windows, the launch grid); the argument checks.
- Pooling: the flat-index decoding, the running (max, argmax) over window taps, the gradient
  routed back through the stored argmax (see :mod:`kernels.max_pool2d`); the checked geometry,
  the outputs' allocation and layout.

Alike but kept apart (named per the project's no-duplicates rule): ``_max_pool2d_fwd_kernel``
~ ``_lrn_max_pool2d_fwd_kernel``, the same window loop over taps, the fused one taking the max
of LRN values recomputed at each tap; each op's forward ~ backward kernel signatures (the same
argument groups, the forward indexed by output pixel, the backward by input pixel with the
gradients' strides); ``local_response_norm`` ~ ``lrn_max_pool2d``'s signatures (the same LRN
arguments and defaults); ``_lrn_bwd_kernel`` ~ ``_lrn_max_pool2d_bwd_kernel``, the same sweep
(one channel per step, the helpers here), the fused one summing the scale from its inputs and
routing the gradient where the other loads both.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels._common import device_context, memory_format, pair

# ----------------------------------------------------------------------------------------------
# LRN
# ----------------------------------------------------------------------------------------------


@triton.jit
def pow_pos(s, E: tl.constexpr):
    """s ** E as torch.pow for s in (0, inf] or NaN: exp2(E log2 s), with s ** 0 = 1 (NaN too,
    where exp2(0 * log2 s) would be NaN at s = inf or NaN) and s ** 1 = s."""
    if E == 0.0:
        p = tl.full(s.shape, 1.0, s.dtype)
    elif E == 1.0:
        p = s
    else:
        p = tl.exp2(tl.full((), E, s.dtype) * tl.log2(s))
    return p


@triton.jit
def lrn_scale(x_pix, c, g_lo, ok, C_GROUP, stride_xc, SIZE: tl.constexpr, ALPHA: tl.constexpr,
              K: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """s = k + alpha/size * sum of x^2 over channels c - SIZE//2 .. c + (SIZE-1)//2 inside the
    group [g_lo, g_lo + C_GROUP); x_pix points at each lane's (n, pixel). (BLOCK,) in ACC."""
    sq = tl.zeros([BLOCK], dtype=ACC)
    for t in range(SIZE):
        cj = c + (t - SIZE // 2)
        ok_j = ok & (cj >= g_lo) & (cj < g_lo + C_GROUP)
        v = tl.load(x_pix + cj * stride_xc, mask=ok_j, other=0.0).to(ACC)
        sq += v * v
    return tl.full((), K, ACC) + tl.full((), ALPHA / SIZE, ACC) * sq


# The backward kernels sweep each program's pixels through the channels of one group, one
# channel per step, keeping the last few channels' values in registers as tuples (oldest first):
# every window sum is added up from scratch, in ascending channel order, never by subtracting
# the channel that leaves (inf - inf would be NaN where PyTorch has inf).


@triton.jit
def zeros_window(N: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """A window of N channels' (BLOCK,) values, all 0 (channels not reached yet)."""
    z = tl.zeros([BLOCK], dtype=ACC)
    win = ()
    for _ in tl.static_range(N):
        win = win + (z,)
    return win


@triton.jit
def window_sum(win, N: tl.constexpr):
    """0 + win[0] + ... + win[N-1], in that order (the order the forward's scale and PyTorch's
    reference add them in)."""
    acc = tl.zeros(win[0].shape, win[0].dtype)
    for i in tl.static_range(N):
        acc += win[i]
    return acc


@triton.jit
def window_scale(xw, SIZE: tl.constexpr, ALPHA: tl.constexpr, K: tl.constexpr):
    """lrn_scale from a window of the SIZE inputs x_{c - SIZE//2} .. x_{c + (SIZE-1)//2} held in
    registers (0 outside the group): the same sum in the same order."""
    sq = tl.zeros(xw[0].shape, xw[0].dtype)
    for i in tl.static_range(SIZE):
        sq += xw[i] * xw[i]
    return tl.full((), K, sq.dtype) + tl.full((), ALPHA / SIZE, sq.dtype) * sq


@triton.jit
def lrn_grad_push(tw, qd, dy, x, s, BETA: tl.constexpr):
    """One channel's share of the backward, as PyTorch's graph factors it (D = s^beta):
    pushes d loss / d s = -dy ((x / D) / D) (beta s^(beta-1)) (exactly 0 for beta = 0: torch.pow's
    backward returns zeros there) onto the window ``tw`` and dy / D onto the queue ``qd``."""
    d = pow_pos(s, BETA)
    if BETA == 0.0:
        g = tl.zeros(s.shape, s.dtype)
    else:
        g = -dy * ((x / d) / d) * (tl.full((), BETA, s.dtype) * pow_pos(s, BETA - 1.0))
    return tw[1:] + (g,), qd[1:] + (dy / d,)


@triton.jit
def lrn_grad_input(tw, dy_d, x, ALPHA: tl.constexpr, SIZE: tl.constexpr):
    """dx = dy / D + 2 x (alpha/size) acc, acc the sum of the window ``tw`` of lrn_grad_push's
    terms over the channels whose window holds this one; the square's gradient as torch's
    x * g + x * g."""
    g_sq = window_sum(tw, SIZE) * tl.full((), ALPHA / SIZE, dy_d.dtype)
    return dy_d + (x * g_sq + x * g_sq)


@triton.jit
def lanes_if(cond, mask):
    """mask where the scalar cond holds, else no lane: ``mask & cond`` (which Triton's
    interpreter turns into int32 for a block and a scalar)."""
    return tl.where(cond, mask, False)


@triton.jit
def sweep_program(S, C_GROUP, GROUPS, BLOCK: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile of a channel sweep: (n, the group's first channel, the first and
    one-past-last channel it writes, its BLOCK pixel indices, their mask). Programs are ordered
    pixel block fastest, then channel chunk, then (n, group), as sweep_grid launches them."""
    pid = tl.program_id(0)
    blocks = tl.cdiv(S, BLOCK)
    chunks = tl.cdiv(C_GROUP, BLOCK_C)
    p = (pid % blocks) * BLOCK + tl.arange(0, BLOCK)
    chunk = (pid // blocks) % chunks
    row = pid // (blocks * chunks)  # n * GROUPS + group
    g_lo = (row % GROUPS) * C_GROUP
    c_lo = g_lo + chunk * BLOCK_C
    c_hi = tl.minimum(c_lo + BLOCK_C, g_lo + C_GROUP)
    return row // GROUPS, g_lo, c_lo, c_hi, p, p < S


def launch_sweep(tuner, args: dict, batch: int, groups: int) -> None:
    """A channel-sweep backward kernel: one program per (n, group, BLOCK_C channels, BLOCK
    pixels), ``args`` by name (``S`` pixels, ``C_GROUP`` channels per group)."""
    def grid(meta):
        return (batch * groups * triton.cdiv(args["C_GROUP"], meta["BLOCK_C"])
                * triton.cdiv(args["S"], meta["BLOCK"]),)

    first = next(v for v in args.values() if isinstance(v, torch.Tensor))
    with device_context(first):
        tuner[grid](**args)


def check_lrn_params(size, alpha, beta, k, groups, channels: int) -> None:
    """The LRN arguments :func:`kernels.local_response_norm` and :func:`kernels.lrn_max_pool2d`
    take."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not real or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite real number, got {value!r}")
    # s = k + alpha/size * sum x^2 must stay positive: s ** -beta is taken through log2 s
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (the kernels need a positive scale), got {alpha!r}")
    if k <= 0:
        raise ValueError(f"k must be > 0 (the kernels need a positive scale), got {k!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if channels % groups:
        raise ValueError(f"groups={groups} must divide the {channels} input channels")

# ----------------------------------------------------------------------------------------------
# Max pooling
# ----------------------------------------------------------------------------------------------


@triton.jit
def nchw_index(i, C, H, W, CHANNELS_LAST: tl.constexpr):
    """Flat index in a tensor's memory order -> (n, c, h, w)."""
    if CHANNELS_LAST:  # (N, H, W, C) in memory
        c = i % C
        w = (i // C) % W
        h = (i // (C * W)) % H
    else:  # (N, C, H, W) in memory
        w = i % W
        h = (i // W) % H
        c = (i // (W * H)) % C
    return i // (C * H * W), c, h, w


@triton.jit
def take_max(v, best, arg, tap, ok):
    """Running (max, argmax) over window taps in row-major order: the first maximum wins, a NaN
    wins over anything (as torch), and the first in-bounds tap is taken even if it is -inf."""
    take = ok & ((v > best) | (v != v) | (arg < 0))  # noqa: PLR0124 (v != v: NaN)
    return tl.where(take, v, best), tl.where(take, tap, arg)


@triton.jit
def routed_grad(
    dy_ptr, arg_ptr, n, c, h, w, ok, OH, OW,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_an, stride_ac, stride_ah, stride_aw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    """Sum (in ACC) of the pooled gradients whose window picked input pixel (n, c, h, w)."""
    acc = tl.zeros([BLOCK], dtype=ACC)
    oh_last = (h + PH) // SH  # the last window starting at or above h
    ow_last = (w + PW) // SW
    for i in tl.static_range((KH + SH - 1) // SH):
        oh = oh_last - ((KH + SH - 1) // SH - 1) + i  # ascending, as torch accumulates
        h_tap = h - (oh * SH - PH)
        ok_h = ok & (oh >= 0) & (oh < OH) & (h_tap < KH)
        for j in tl.static_range((KW + SW - 1) // SW):
            ow = ow_last - ((KW + SW - 1) // SW - 1) + j
            w_tap = w - (ow * SW - PW)
            cand = ok_h & (ow >= 0) & (ow < OW) & (w_tap < KW)
            a_off = n * stride_an + c * stride_ac + oh * stride_ah + ow * stride_aw
            arg = tl.load(arg_ptr + a_off, mask=cand, other=-1).to(tl.int32)
            hit = cand & (arg == h_tap * KW + w_tap)
            dy_off = n * stride_dyn + c * stride_dyc + oh * stride_dyh + ow * stride_dyw
            acc += tl.load(dy_ptr + dy_off, mask=hit, other=0.0).to(ACC)
    return acc


@dataclass(frozen=True)
class PoolGeometry:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    out: tuple[int, int]  # (OH, OW)

    def constexprs(self) -> dict:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return {"KH": kh, "KW": kw, "SH": sh, "SW": sw, "PH": ph, "PW": pw}

    def arg_dtype(self) -> torch.dtype:
        return torch.int8 if self.kernel[0] * self.kernel[1] <= 127 else torch.int32


def check_pool_args(x: torch.Tensor, kernel_size, stride, padding) -> PoolGeometry:
    """torch.nn.functional's checks, with the value in every message. x: (N, C, H, W)."""
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None or (isinstance(stride, (tuple, list)) and not stride) \
        else pair(stride, "stride")
    padding = pair(padding, "padding")
    if min(kernel) < 1:
        raise ValueError(f"kernel_size must be positive, got {kernel_size!r}")
    if min(stride) < 1:
        raise ValueError(f"stride must be positive, got {stride!r}")
    if min(padding) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"pad should be at most half of effective kernel size, but got "
                         f"pad={padding!r}, kernel_size={kernel!r} and dilation=1")
    _, c, h, w = x.shape
    if min(c, h, w) < 1:
        raise ValueError(f"expected non-empty channel and spatial dims, got input of shape "
                         f"{tuple(x.shape)}")
    out = tuple((size + 2 * p - k) // s + 1
                for size, k, s, p in zip((h, w), kernel, stride, padding))
    if min(out) < 1:
        raise ValueError(f"input of shape {tuple(x.shape)} is too small for kernel_size={kernel}, "
                         f"stride={stride}, padding={padding}: output size {out}")
    return PoolGeometry(kernel, stride, padding, out)


def pool_outputs(x: torch.Tensor, geo: PoolGeometry, save_arg: bool):
    """Empty (N, C, OH, OW) output in x's format and its argmax (or an empty placeholder).
    Real and fake ops share it (max_pool2d and lrn_max_pool2d)."""
    n, c = x.shape[:2]
    y = torch.empty((n, c, *geo.out), dtype=x.dtype, device=x.device,
                    memory_format=memory_format(x))
    arg = torch.empty_like(y, dtype=geo.arg_dtype()) if save_arg else \
        y.new_empty(0, dtype=geo.arg_dtype())
    return y, arg


def grad_input_like(dy: torch.Tensor, h: int, w: int, channels_last: bool) -> torch.Tensor:
    """Empty (N, C, H, W) input gradient, channels_last when the input was."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((*dy.shape[:2], h, w), dtype=dy.dtype, device=dy.device,
                       memory_format=fmt)


def geometry(x_shape, kernel, stride, padding) -> PoolGeometry:
    """The checked geometry again from the op's int lists (the op schema has no dataclass)."""
    kernel, stride, padding = tuple(kernel), tuple(stride), tuple(padding)
    out = tuple((size + 2 * p - k) // s + 1
                for size, k, s, p in zip(x_shape[-2:], kernel, stride, padding))
    return PoolGeometry(kernel, stride, padding, out)


def check_arg_for_backward(arg: torch.Tensor, op_name: str) -> None:
    if arg.dim() != 4:
        raise RuntimeError(f"{op_name} was called with save_arg=False, so it cannot be "
                           f"differentiated; call its kernels.* function")
