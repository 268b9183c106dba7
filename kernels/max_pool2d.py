"""2-D max pooling, forward and backward in Triton (AlexNet's overlapping 3x3 / stride 2).

``max_pool2d(input, kernel_size, stride, padding)`` equals ``F.max_pool2d`` with the same
arguments:

    input (N, C, H, W) or unbatched (C, H, W) -> (N, C, OH, OW),  OH = (H + 2 pad_h - KH) // SH + 1

Semantics as in PyTorch (its CPU and CUDA kernels: ``val > max || isnan(val)``): padding never
wins; the first maximum in row-major window order wins and receives the gradient; a NaN wins
over any number, so of several NaNs in a window the last one is the argmax and the output is
NaN; a window whose in-bounds taps are all -inf gives -inf and its first in-bounds tap gets the
gradient. NaN and inf in the gradient go to the argmax only, as in PyTorch.

Kernels (one program per BLOCK elements, enumerated in the output's memory order):

- forward: reads the KH*KW taps of each output pixel, writes the max and a compact argmax, the
  tap's offset ``kh * KW + kw`` inside its window (int8 while KH*KW <= 127, as Inductor stores
  it; int32 beyond), 8x smaller than torch's int64 indices.
- backward, a gather with no atomics: each input pixel visits only the output windows that
  contain it (ceil(KH/SH) x ceil(KW/SW) candidates, 2x2 for 3x3 / 2), compares their stored
  argmax with its own offset and sums the matching gradients in fp32, then casts once.

Layout: strides for every pointer (input, output, argmax, gradients), so contiguous NCHW,
channels_last, strided, expanded (stride 0) and offset views work without a copy. Both dense
layouts are fast (lanes walk the output's memory order, so loads and stores are coalesced in
either). The output, the argmax and the input gradient are channels_last when the input is,
else contiguous NCHW.

float32, float16 and bfloat16 (compared in fp32, which is exact; gradients summed in fp32), and
float64 (fp64 throughout, for ``torch.autograd.gradcheck``). Not yet timed on a GPU; every
autotune config compiles ahead of time for sm_80 and sm_90 (see ``aot_specs``).

PyTorch integration: a ``torch.library`` custom operator (``lightning_alexnet::max_pool2d`` and
``lightning_alexnet::max_pool2d_backward``) with a fake implementation and an autograd rule, so
``torch.compile(fullgraph=True)`` traces through it. Autocast: no cast rule on purpose -- the op
runs in its input's dtype, as ``F.max_pool2d`` does under autocast (a max is exact in any dtype).

Refused, with a clear error:
- ``TypeError``: input not a tensor.
- ``RuntimeError``: a CPU tensor without ``TRITON_INTERPRET=1``, or a CUDA tensor with it.
- ``NotImplementedError``: dtype other than float32/float16/bfloat16/float64; a device other
  than CUDA or CPU; dilation != 1; ceil_mode=True; return_indices=True; double backward.
- ``ValueError``: a tensor (input, gradient or argmax) whose memory span reaches 2**31
  elements (int32 offsets, the library's one error for it); input not 3-D or 4-D; zero
  channels or spatial size; kernel_size, stride, padding or dilation not an int or a pair of
  ints; kernel_size or stride < 1; padding < 0 or more than half the kernel; an output size
  below 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels._common import (
    TORCH_TO_TRITON,
    KernelSpec,
    autotune_configs,
    check_int32_span,
    check_tensor_or_float64,
    device_context,
    pair,
    refuse_double_backward,
    triton_acc,
)
from kernels.lrn import kernel_spec

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
    ACC: tl.constexpr,
    # tiling
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    n, c, oh, ow = nchw_index(i, C, OH, OW, CHANNELS_LAST)
    x_plane = x_ptr + n * stride_xn + c * stride_xc
    best = tl.full([BLOCK], float("-inf"), dtype=ACC)
    arg = tl.full([BLOCK], -1, dtype=tl.int32)
    for kh in tl.static_range(KH):
        h = oh * SH - PH + kh
        for kw in tl.static_range(KW):
            w = ow * SW - PW + kw
            ok = mask & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            v = tl.load(x_plane + h * stride_xh + w * stride_xw, mask=ok, other=float("-inf"))
            best, arg = take_max(v.to(ACC), best, arg, kh * KW + kw, ok)
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
    PH: tl.constexpr, PW: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr,
    # tiling
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    n, c, h, w = nchw_index(i, C, H, W, CHANNELS_LAST)
    dx = routed_grad(dy_ptr, arg_ptr, n, c, h, w, mask, OH, OW,
                     stride_dyn, stride_dyc, stride_dyh, stride_dyw,
                     stride_an, stride_ac, stride_ah, stride_aw,
                     KH, KW, SH, SW, PH, PW, ACC, BLOCK)
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


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is (and is not also plain contiguous), as torch's pooling picks."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def pool_outputs(x: torch.Tensor, geo: PoolGeometry, save_arg: bool):
    """Empty (N, C, OH, OW) output in x's format and its argmax (or an empty placeholder).
    Real and fake ops share it (and :mod:`kernels.lrn_max_pool2d`)."""
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


def _pool_forward(x, y, arg, geo: PoolGeometry, save_arg: bool) -> None:
    """Writes the max of each window of x (N, C, H, W) to y and its window offset to arg."""
    _, c, h, w = x.shape
    check_int32_span(input=x, output=y)
    if y.numel() == 0:
        return
    def grid(meta):
        return (triton.cdiv(y.numel(), meta["BLOCK"]),)
    with device_context(x):
        _pool_fwd[grid](x, y, arg if save_arg else y, y.numel(), c, h, w, *geo.out,
                        *x.stride(), *y.stride(), **geo.constexprs(), SAVE_ARG=save_arg,
                        CHANNELS_LAST=memory_format(x) == torch.channels_last,
                        ACC=triton_acc(x.dtype))


def _pool_backward(dy, arg, dx, geo: PoolGeometry) -> None:
    _, c, h, w = dx.shape
    check_int32_span(grad_output=dy, argmax=arg, grad_input=dx)
    if dx.numel() == 0:
        return
    def grid(meta):
        return (triton.cdiv(dx.numel(), meta["BLOCK"]),)
    with device_context(dy):
        _pool_bwd[grid](dy, arg, dx, dx.numel(), c, h, w, *geo.out,
                        *dy.stride(), *arg.stride(), *dx.stride(), **geo.constexprs(),
                        CHANNELS_LAST=memory_format(dx) == torch.channels_last,
                        ACC=triton_acc(dy.dtype))


# ----------------------------------------------------------------------------------------------
# Custom operators and autograd
# ----------------------------------------------------------------------------------------------


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


@torch.library.custom_op("lightning_alexnet::max_pool2d", mutates_args=())
def max_pool2d_op(x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int],
                  save_arg: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) -> y (N, C, OH, OW) and the argmax window offsets (empty unless save_arg)."""
    geo = geometry(x.shape, kernel, stride, padding)
    y, arg = pool_outputs(x, geo, save_arg)
    _pool_forward(x, y, arg, geo, save_arg)
    return y, arg


@max_pool2d_op.register_fake
def _(x, kernel, stride, padding, save_arg):
    return pool_outputs(x, geometry(x.shape, kernel, stride, padding), save_arg)


@torch.library.custom_op("lightning_alexnet::max_pool2d_backward", mutates_args=())
def max_pool2d_backward_op(grad_output: torch.Tensor, arg: torch.Tensor, h: int, w: int,
                           channels_last: bool, kernel: list[int], stride: list[int],
                           padding: list[int]) -> torch.Tensor:
    dx = grad_input_like(grad_output, h, w, channels_last)
    _pool_backward(grad_output, arg, dx, geometry((h, w), kernel, stride, padding))
    return dx


@max_pool2d_backward_op.register_fake
def _(grad_output, arg, h, w, channels_last, kernel, stride, padding):
    return grad_input_like(grad_output, h, w, channels_last)


def _pool_setup_context(ctx, inputs, output):
    x, kernel, stride, padding, _ = inputs
    ctx.save_for_backward(output[1])
    ctx.shape = (x.shape[2], x.shape[3], memory_format(x) == torch.channels_last)
    ctx.geo = (kernel, stride, padding)


def _pool_grad(ctx, grad_y, _grad_arg):
    (arg,) = ctx.saved_tensors
    check_arg_for_backward(arg, "lightning_alexnet::max_pool2d")
    return max_pool2d_backward_op(grad_y, arg, *ctx.shape, *ctx.geo), None, None, None, None


max_pool2d_op.register_autograd(_pool_grad, setup_context=_pool_setup_context)
max_pool2d_backward_op.register_autograd(refuse_double_backward("max_pool2d"))


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
        input: (N, C, H, W) or unbatched (C, H, W), float32/float16/bfloat16/float64, any
            layout.
        kernel_size, stride, padding: as torch; padding at most half the kernel.
        dilation, ceil_mode, return_indices: only the defaults (1, False, False).
    """
    check_tensor_or_float64(input, "input")
    check_unsupported(dilation, ceil_mode, return_indices)
    if input.dim() not in (3, 4):
        raise ValueError(f"max_pool2d expects (N, C, H, W) or (C, H, W) input, got shape "
                         f"{tuple(input.shape)}")
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    geo = check_pool_args(x, kernel_size, stride, padding)
    check_int32_span(input=x)
    save_arg = torch.is_grad_enabled() and x.requires_grad
    y, _ = max_pool2d_op(x, list(geo.kernel), list(geo.stride), list(geo.padding), save_arg)
    return y.squeeze(0) if unbatched else y  # N = 0: empty result, nothing launched


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
        sizes = {"C": 256, "H": 13, "W": 13, "OH": 6, "OW": 6}
        fwd = dict(x_ptr=x, y_ptr=y, arg_ptr=arg, numel=y.numel(), **sizes,
                   **_named("x", x), **_named("y", y), **geo.constexprs(), SAVE_ARG=True,
                   CHANNELS_LAST=False, ACC=tl.float32)
        bwd = dict(dy_ptr=y, arg_ptr=arg, dx_ptr=x, numel=x.numel(), **sizes,
                   **_named("dy", y), **_named("a", arg), **_named("dx", x), **geo.constexprs(),
                   CHANNELS_LAST=False, ACC=tl.float32)
        for kname, fn, args, configs in (("fwd", _max_pool2d_fwd_kernel, fwd, POOL_FWD_CONFIGS),
                                         ("bwd", _max_pool2d_bwd_kernel, bwd, POOL_BWD_CONFIGS)):
            for cfg in configs:
                tag = f"BLOCK={cfg.kwargs['BLOCK']} w{cfg.num_warps}"
                name = f"max_pool2d_{kname}[pool5 13x13x256 b128, {tag}, {label}]"
                specs.append(kernel_spec(name, fn, args, cfg))
    return specs
