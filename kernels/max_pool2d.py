"""2-D max pooling, forward and backward in Triton (AlexNet's overlapping 3x3 / stride 2).

``max_pool2d(input, kernel_size, stride, padding)`` equals ``F.max_pool2d`` with the same
arguments:

    input (N, C, H, W) or unbatched (C, H, W) -> (N, C, OH, OW),  OH = (H + 2 pad_h - KH) // SH + 1

Semantics as in PyTorch: padding is -inf; the first maximum in row-major window order wins and
receives the gradient; a NaN wins over any number (PyTorch's ``val > max || isnan(val)``, so of
several NaNs in a window the last one is the argmax) and the output is NaN.

Kernels (one program per BLOCK elements, enumerated in the output's memory order):

- forward: reads the KH*KW taps of each output pixel, writes the max and a compact argmax, the
  tap's offset ``kh * KW + kw`` inside its window (int8 while KH*KW <= 127, as Inductor stores
  it; int32 beyond), 8x smaller than torch's int64 indices.
- backward, a gather with no atomics: each input pixel visits only the output windows that
  contain it (ceil(KH/SH) x ceil(KW/SW) candidates, 2x2 for 3x3 / 2), compares their stored
  argmax with its own offset and sums the matching gradients in fp32, then casts once.

Layout: strides everywhere, so contiguous NCHW, channels_last and strided views work without a
copy. Both dense layouts are fast (lanes walk the output's memory order, so loads and stores are
coalesced in either). The output, the argmax and the input gradient are channels_last when the
input is, else contiguous NCHW.

fp32, fp16 and bf16 (compared in fp32, which is exact). Offsets are int32: every tensor must span
< 2**31 elements. Not supported (clear errors): dilation != 1, ceil_mode=True,
return_indices=True, double backward. Not yet timed on a GPU; every autotune config compiles
ahead of time for sm_80 and sm_90 (see ``aot_specs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from kernels._common import (
    TORCH_TO_TRITON,
    KernelSpec,
    autotune_configs,
    check_tensor,
    device_context,
    pair,
)
from kernels.lrn import check_index_range, kernel_spec

POOL_FWD_CONFIGS = [
    triton.Config({"BLOCK": 256}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 512}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 1024}, num_warps=8, num_stages=1),
]
POOL_BWD_CONFIGS = [
    triton.Config({"BLOCK": 256}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 512}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 1024}, num_warps=8, num_stages=1),
]
INTERPRET_CONFIG = triton.Config({"BLOCK": 1024}, num_warps=4, num_stages=1)


# ----------------------------------------------------------------------------------------------
# Triton kernels (the helpers are shared with kernels.lrn_max_pool2d)
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
    take = ok & ((v > best) | (v != v) | (arg < 0))
    return tl.where(take, v, best), tl.where(take, tap, arg)


@triton.jit
def routed_grad(
    dy_ptr, arg_ptr, n, c, h, w, ok, OH, OW,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_an, stride_ac, stride_ah, stride_aw,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, BLOCK: tl.constexpr,
):
    """fp32 sum of the pooled gradients whose window picked input pixel (n, c, h, w)."""
    acc = tl.zeros([BLOCK], dtype=tl.float32)
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
            acc += tl.load(dy_ptr + dy_off, mask=hit, other=0.0).to(tl.float32)
    return acc


@triton.jit
def _max_pool2d_fwd_kernel(
    x_ptr, y_ptr, arg_ptr,
    # sizes
    numel, C, H, W, OH, OW,
    # strides; y and arg share one layout
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc, stride_yh, stride_yw,
    # op params
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, SAVE_ARG: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    # tiling
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    n, c, oh, ow = nchw_index(i, C, OH, OW, CHANNELS_LAST)
    x_plane = x_ptr + n * stride_xn + c * stride_xc
    best = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
    arg = tl.full([BLOCK], -1, dtype=tl.int32)
    for kh in tl.static_range(KH):
        h = oh * SH - PH + kh
        for kw in tl.static_range(KW):
            w = ow * SW - PW + kw
            ok = mask & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            v = tl.load(x_plane + h * stride_xh + w * stride_xw, mask=ok, other=float("-inf"))
            best, arg = take_max(v.to(tl.float32), best, arg, kh * KW + kw, ok)
    out = n * stride_yn + c * stride_yc + oh * stride_yh + ow * stride_yw
    tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_ARG:
        tl.store(arg_ptr + out, arg.to(arg_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _max_pool2d_bwd_kernel(
    dy_ptr, arg_ptr, dx_ptr,
    # sizes
    numel, C, H, W, OH, OW,
    # strides
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_an, stride_ac, stride_ah, stride_aw,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # op params
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    # tiling
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    n, c, h, w = nchw_index(i, C, H, W, CHANNELS_LAST)
    dx = routed_grad(dy_ptr, arg_ptr, n, c, h, w, mask, OH, OW,
                     stride_dyn, stride_dyc, stride_dyh, stride_dyw,
                     stride_an, stride_ac, stride_ah, stride_aw,
                     KH, KW, SH, SW, PH, PW, BLOCK)
    out = n * stride_dxn + c * stride_dxc + h * stride_dxh + w * stride_dxw
    tl.store(dx_ptr + out, dx.to(dx_ptr.dtype.element_ty), mask=mask)


_KEY = ["numel", "C", "H", "W"]
_pool_fwd = triton.autotune(autotune_configs(POOL_FWD_CONFIGS, INTERPRET_CONFIG), key=_KEY)(
    _max_pool2d_fwd_kernel)
_pool_bwd = triton.autotune(autotune_configs(POOL_BWD_CONFIGS, INTERPRET_CONFIG), key=_KEY)(
    _max_pool2d_bwd_kernel)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolGeometry:
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    out: tuple[int, int]  # (OH, OW)

    def constexprs(self) -> dict:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        return dict(KH=kh, KW=kw, SH=sh, SW=sw, PH=ph, PW=pw)

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


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is (and is not also plain contiguous), as torch's pooling picks."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _pool_forward(x: torch.Tensor, geo: PoolGeometry, save_arg: bool):
    """(N, C, H, W) -> y (N, C, OH, OW) and the argmax window offsets (or None)."""
    n, c, h, w = x.shape
    fmt = memory_format(x)
    y = torch.empty((n, c, *geo.out), dtype=x.dtype, device=x.device, memory_format=fmt)
    arg = torch.empty_like(y, dtype=geo.arg_dtype()) if save_arg else y
    check_index_range(x, y)
    grid = lambda meta: (triton.cdiv(y.numel(), meta["BLOCK"]),)
    if y.numel() == 0:
        return y, (arg if save_arg else None)
    with device_context(x):
        _pool_fwd[grid](x, y, arg, y.numel(), c, h, w, *geo.out, *x.stride(), *y.stride(),
                        **geo.constexprs(), SAVE_ARG=save_arg,
                        CHANNELS_LAST=fmt == torch.channels_last)
    return y, (arg if save_arg else None)


def _pool_backward(dy: torch.Tensor, arg: torch.Tensor, x_shape, fmt, geo: PoolGeometry):
    n, c, h, w = x_shape
    dx = torch.empty(x_shape, dtype=dy.dtype, device=dy.device, memory_format=fmt)
    check_index_range(dy, dx)
    grid = lambda meta: (triton.cdiv(dx.numel(), meta["BLOCK"]),)
    if dx.numel() == 0:
        return dx
    with device_context(dy):
        _pool_bwd[grid](dy, arg, dx, dx.numel(), c, h, w, *geo.out,
                        *dy.stride(), *arg.stride(), *dx.stride(),
                        **geo.constexprs(), CHANNELS_LAST=fmt == torch.channels_last)
    return dx


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------


class _MaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, geo: PoolGeometry):
        y, arg = _pool_forward(x, geo, save_arg=ctx.needs_input_grad[0])
        ctx.save_for_backward(arg)
        ctx.geo, ctx.x_shape, ctx.fmt = geo, x.shape, memory_format(x)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        (arg,) = ctx.saved_tensors
        return _pool_backward(dy, arg, ctx.x_shape, ctx.fmt, ctx.geo), None


def check_unsupported(dilation, ceil_mode, return_indices) -> None:
    if pair(dilation, "dilation") != (1, 1):
        raise NotImplementedError(f"dilation={dilation!r} is not supported (only 1)")
    if ceil_mode:
        raise NotImplementedError(f"ceil_mode={ceil_mode!r} is not supported (only False)")
    if return_indices:
        raise NotImplementedError(
            f"return_indices={return_indices!r} is not supported: the kernel keeps a compact "
            "argmax inside each window, not torch's flat indices"
        )


def max_pool2d(
    input: torch.Tensor,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> torch.Tensor:
    """``F.max_pool2d`` with the same arguments (ints or pairs; stride defaults to kernel_size).

    Args:
        input: (N, C, H, W) or unbatched (C, H, W), float32/float16/bfloat16, any layout.
        kernel_size, stride, padding: as torch; padding at most half the kernel.
        dilation, ceil_mode, return_indices: only the defaults (1, False, False).
    """
    check_tensor(input, "input")
    check_unsupported(dilation, ceil_mode, return_indices)
    if input.dim() not in (3, 4):
        raise ValueError(f"max_pool2d expects (N, C, H, W) or (C, H, W) input, got shape "
                         f"{tuple(input.shape)}")
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    geo = check_pool_args(x, kernel_size, stride, padding)
    y = _MaxPool2d.apply(x, geo)  # N = 0: empty result, nothing launched
    return y.squeeze(0) if unbatched else y


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compile specs
# ----------------------------------------------------------------------------------------------


def _named(prefix: str, t: torch.Tensor, dims: str = "nchw") -> dict:
    return {f"stride_{prefix}{d}": s for d, s in zip(dims, t.stride())}


def aot_specs() -> list[KernelSpec]:
    """Forward and backward x GPU config x dtype for AlexNet's standalone pool (after conv5):
    (128, 256, 13, 13) -> (128, 256, 6, 6), 3x3 / 2, NCHW."""
    geo = PoolGeometry((3, 3), (2, 2), (0, 0), (6, 6))
    specs = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.empty(128, 256, 13, 13, dtype=dtype, device="meta")
        y = torch.empty(128, 256, 6, 6, dtype=dtype, device="meta")
        arg = torch.empty_like(y, dtype=geo.arg_dtype())
        label = TORCH_TO_TRITON[dtype]
        sizes = dict(C=256, H=13, W=13, OH=6, OW=6)
        fwd = dict(x_ptr=x, y_ptr=y, arg_ptr=arg, numel=y.numel(), **sizes,
                   **_named("x", x), **_named("y", y), **geo.constexprs(), SAVE_ARG=True,
                   CHANNELS_LAST=False)
        bwd = dict(dy_ptr=y, arg_ptr=arg, dx_ptr=x, numel=x.numel(), **sizes,
                   **_named("dy", y), **_named("a", arg), **_named("dx", x), **geo.constexprs(),
                   CHANNELS_LAST=False)
        for kname, fn, args, configs in (("fwd", _max_pool2d_fwd_kernel, fwd, POOL_FWD_CONFIGS),
                                         ("bwd", _max_pool2d_bwd_kernel, bwd, POOL_BWD_CONFIGS)):
            for cfg in configs:
                tag = f"BLOCK={cfg.kwargs['BLOCK']} w{cfg.num_warps}"
                name = f"max_pool2d_{kname}[pool5 13x13x256 b128, {tag}, {label}]"
                specs.append(kernel_spec(name, fn, args, cfg))
    return specs
