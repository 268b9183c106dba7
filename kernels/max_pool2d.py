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

import torch
import triton
import triton.language as tl

from kernels._common import (
    TORCH_TO_TRITON,
    KernelSpec,
    block_specs,
    check_int32_span,
    check_tensor_or_float64,
    launch_elementwise,
    memory_format,
    pair,
    refuse_double_backward,
    strides,
    triton_acc,
)
from kernels._lrn_pool import (
    PoolGeometry,
    check_arg_for_backward,
    check_pool_args,
    geometry,
    grad_input_like,
    nchw_index,
    pool_outputs,
    routed_grad,
    take_max,
)
from kernels.tuning import POOL_CONFIGS, elementwise_autotune

# ----------------------------------------------------------------------------------------------
# Triton kernels (the device functions they call are in kernels._lrn_pool)
# ----------------------------------------------------------------------------------------------


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
_pool_fwd = elementwise_autotune(_max_pool2d_fwd_kernel, POOL_CONFIGS, _KEY)
_pool_bwd = elementwise_autotune(_max_pool2d_bwd_kernel, POOL_CONFIGS, _KEY)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _fwd_args(x, y, arg, geo: PoolGeometry, save_arg: bool) -> dict:
    """_max_pool2d_fwd_kernel's arguments by name, for the launch and for ``aot_specs``."""
    _, c, h, w = x.shape
    return dict(x_ptr=x, y_ptr=y, arg_ptr=arg if save_arg else y, numel=y.numel(), C=c, H=h, W=w,
                OH=geo.out[0], OW=geo.out[1], **strides("x", x), **strides("y", y),
                **geo.constexprs(), SAVE_ARG=save_arg,
                CHANNELS_LAST=memory_format(x) == torch.channels_last, ACC=triton_acc(x.dtype))


def _bwd_args(dy, arg, dx, geo: PoolGeometry) -> dict:
    """_max_pool2d_bwd_kernel's arguments by name, for the launch and for ``aot_specs``."""
    _, c, h, w = dx.shape
    return dict(dy_ptr=dy, arg_ptr=arg, dx_ptr=dx, numel=dx.numel(), C=c, H=h, W=w,
                OH=geo.out[0], OW=geo.out[1], **strides("dy", dy), **strides("a", arg),
                **strides("dx", dx), **geo.constexprs(),
                CHANNELS_LAST=memory_format(dx) == torch.channels_last, ACC=triton_acc(dy.dtype))


def _pool_forward(x, y, arg, geo: PoolGeometry, save_arg: bool) -> None:
    """Writes the max of each window of x (N, C, H, W) to y and its window offset to arg."""
    check_int32_span(input=x, output=y)
    if y.numel() == 0:
        return
    launch_elementwise(_pool_fwd, _fwd_args(x, y, arg, geo, save_arg))


def _pool_backward(dy, arg, dx, geo: PoolGeometry) -> None:
    check_int32_span(grad_output=dy, argmax=arg, grad_input=dx)
    if dx.numel() == 0:
        return
    launch_elementwise(_pool_bwd, _bwd_args(dy, arg, dx, geo))


# ----------------------------------------------------------------------------------------------
# Custom operators and autograd
# ----------------------------------------------------------------------------------------------


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
        fwd, bwd = _fwd_args(x, y, arg, geo, True), _bwd_args(y, arg, x, geo)
        specs += block_specs("max_pool2d", "pool5 13x13x256 b128", label,
                             (("fwd", _max_pool2d_fwd_kernel, fwd, POOL_CONFIGS),
                              ("bwd", _max_pool2d_bwd_kernel, bwd, POOL_CONFIGS)))
    return specs
