"""Local response normalisation followed by max pooling, fused, forward and backward in Triton.

``lrn_max_pool2d(input, size, alpha, beta, k, groups, kernel_size, stride, padding)`` equals
``F.max_pool2d(local_response_norm(input, size, alpha, beta, k, groups), kernel_size, stride,
padding)``: AlexNet's ``conv -> ReLU -> LRN -> max-pool 3/2`` after conv1 and conv2.

    input (N, C, H, W) or unbatched (C, H, W) -> (N, C, OH, OW),  OH = (H + 2 pad - KH) // SH + 1

LRN constants follow ``torch.nn.functional`` (alpha divided by size); see :mod:`kernels.lrn` for
the paper's and cuda-convnet's conventions. Pooling semantics are :mod:`kernels.max_pool2d`'s
(first maximum wins, NaN propagates as in PyTorch).

Kernels (one program per BLOCK elements, enumerated in memory order):

- forward: per output pixel, the LRN value of each of its KH*KW taps is computed from the
  ``size``-channel window of the input (neighbouring loads hit the cache) and only the running
  max and its window offset are kept. It reads the conv output once and writes the pooled map
  (4x smaller for 3x3 / 2) and an int8 argmax: the LRN map itself never reaches memory.
- backward: per input pixel, the pooled gradient is routed to the LRN output through the stored
  argmax (a gather over ceil(K/S)^2 candidate windows, no atomics), and the LRN backward
  (Caffe's formulation) is applied with the scale recomputed from the saved input, for the
  ``size`` channels whose window holds the pixel. Only the input and the argmax are saved (the
  input is the conv output that autograd keeps anyway); channels whose routed gradient is 0
  (about 3 in 4 for 3x3 / 2) skip the scale's loads.

The price of never storing the LRN map: overlapping windows recompute the LRN of a pixel up to
ceil(K/S)^2 times in forward and the backward recomputes each scale once per channel of its
window (``size`` times); AlexNet's LRN/pool layers are memory bound, so arithmetic is the cheap
side of that trade. Not yet timed on a GPU; every autotune config compiles ahead of time for
sm_80 and sm_90 (see ``aot_specs``).

Layout: strides everywhere; contiguous NCHW and channels_last are both fast (lanes walk the
memory order), strided views work without a copy. Outputs and the input gradient are
channels_last when the input is, else NCHW. fp32, fp16, bf16 in and out, fp32 arithmetic.
Offsets are int32 (< 2**31 elements). No dilation, ceil_mode or double backward.
"""

from __future__ import annotations

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
)
from kernels.lrn import check_index_range, check_lrn_params, kernel_spec, lrn_scale
from kernels.max_pool2d import (
    PoolGeometry,
    check_pool_args,
    memory_format,
    nchw_index,
    routed_grad,
    take_max,
)

# More work per element than plain LRN or pooling (9 taps x 5 channels forward): 1-2 elements
# per thread (2 takes ~115 registers in the sm_90 compile, no spills).
LRN_POOL_FWD_CONFIGS = [
    triton.Config({"BLOCK": 128}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 256}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 256}, num_warps=8, num_stages=1),
]
LRN_POOL_BWD_CONFIGS = [
    triton.Config({"BLOCK": 128}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 256}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 256}, num_warps=8, num_stages=1),
]
INTERPRET_CONFIG = triton.Config({"BLOCK": 1024}, num_warps=4, num_stages=1)


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _lrn_max_pool2d_fwd_kernel(
    x_ptr, y_ptr, arg_ptr,
    # sizes
    numel, C, H, W, OH, OW, C_GROUP,
    # strides; y and arg share one layout
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc, stride_yh, stride_yw,
    # op params: LRN, then pooling
    SIZE: tl.constexpr, ALPHA: tl.constexpr, BETA: tl.constexpr, K: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, SAVE_ARG: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    # tiling
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    n, c, oh, ow = nchw_index(i, C, OH, OW, CHANNELS_LAST)
    g_lo = (c // C_GROUP) * C_GROUP
    best = tl.full([BLOCK], float("-inf"), dtype=tl.float32)
    arg = tl.full([BLOCK], -1, dtype=tl.int32)
    for kh in tl.static_range(KH):
        h = oh * SH - PH + kh
        for kw in tl.static_range(KW):
            w = ow * SW - PW + kw
            ok = mask & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            x_pix = x_ptr + n * stride_xn + h * stride_xh + w * stride_xw
            scale = lrn_scale(x_pix, c, g_lo, ok, C_GROUP, stride_xc, SIZE, ALPHA, K, BLOCK)
            x = tl.load(x_pix + c * stride_xc, mask=ok, other=0.0).to(tl.float32)
            v = x * tl.exp2(-BETA * tl.log2(scale))  # LRN output at (n, c, h, w)
            best, arg = take_max(v, best, arg, kh * KW + kw, ok)
    out = n * stride_yn + c * stride_yc + oh * stride_yh + ow * stride_yw
    tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_ARG:
        tl.store(arg_ptr + out, arg.to(arg_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _lrn_max_pool2d_bwd_kernel(
    x_ptr, dy_ptr, arg_ptr, dx_ptr,
    # sizes
    numel, C, H, W, OH, OW, C_GROUP,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_an, stride_ac, stride_ah, stride_aw,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # op params
    SIZE: tl.constexpr, ALPHA: tl.constexpr, BETA: tl.constexpr, K: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    # tiling
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    n, c, h, w = nchw_index(i, C, H, W, CHANNELS_LAST)
    g_lo = (c // C_GROUP) * C_GROUP
    x_pix = x_ptr + n * stride_xn + h * stride_xh + w * stride_xw
    # sum over channels j whose window holds c (j = c - (SIZE-1)//2 .. c + SIZE//2) of
    # g_j x_j s_j^(-beta-1), g = the pooled gradient routed to the LRN output
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(SIZE):
        cj = c + (t - (SIZE - 1) // 2)
        ok = mask & (cj >= g_lo) & (cj < g_lo + C_GROUP)
        gj = routed_grad(dy_ptr, arg_ptr, n, cj, h, w, ok, OH, OW,
                         stride_dyn, stride_dyc, stride_dyh, stride_dyw,
                         stride_an, stride_ac, stride_ah, stride_aw,
                         KH, KW, SH, SW, PH, PW, BLOCK)
        need = ok & (gj != 0.0)  # most pixels are nobody's max: skip their scale
        sj = lrn_scale(x_pix, cj, g_lo, need, C_GROUP, stride_xc, SIZE, ALPHA, K, BLOCK)
        xj = tl.load(x_pix + cj * stride_xc, mask=need, other=0.0).to(tl.float32)
        acc += tl.where(need, gj * xj * tl.exp2((-BETA - 1.0) * tl.log2(sj)), 0.0)
    gc = routed_grad(dy_ptr, arg_ptr, n, c, h, w, mask, OH, OW,
                     stride_dyn, stride_dyc, stride_dyh, stride_dyw,
                     stride_an, stride_ac, stride_ah, stride_aw,
                     KH, KW, SH, SW, PH, PW, BLOCK)
    need = mask & (gc != 0.0)
    sc = lrn_scale(x_pix, c, g_lo, need, C_GROUP, stride_xc, SIZE, ALPHA, K, BLOCK)
    x = tl.load(x_pix + c * stride_xc, mask=mask, other=0.0).to(tl.float32)
    direct = tl.where(need, gc * tl.exp2(-BETA * tl.log2(sc)), 0.0)
    dx = direct - (2.0 * ALPHA * BETA / SIZE) * x * acc
    out = n * stride_dxn + c * stride_dxc + h * stride_dxh + w * stride_dxw
    tl.store(dx_ptr + out, dx.to(dx_ptr.dtype.element_ty), mask=mask)


_KEY = ["numel", "C", "H", "W", "C_GROUP"]
_fused_fwd = triton.autotune(autotune_configs(LRN_POOL_FWD_CONFIGS, INTERPRET_CONFIG), key=_KEY)(
    _lrn_max_pool2d_fwd_kernel)
_fused_bwd = triton.autotune(autotune_configs(LRN_POOL_BWD_CONFIGS, INTERPRET_CONFIG), key=_KEY)(
    _lrn_max_pool2d_bwd_kernel)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _lrn_consts(params: tuple) -> dict:
    size, alpha, beta, k, _ = params
    return dict(SIZE=size, ALPHA=alpha, BETA=beta, K=k)


def _fused_forward(x: torch.Tensor, params: tuple, geo: PoolGeometry, save_arg: bool):
    """(N, C, H, W) -> pooled LRN (N, C, OH, OW) and the argmax window offsets (or None)."""
    n, c, h, w = x.shape
    fmt = memory_format(x)
    y = torch.empty((n, c, *geo.out), dtype=x.dtype, device=x.device, memory_format=fmt)
    arg = torch.empty_like(y, dtype=geo.arg_dtype()) if save_arg else y
    check_index_range(x, y)
    if y.numel() == 0:
        return y, (arg if save_arg else None)
    grid = lambda meta: (triton.cdiv(y.numel(), meta["BLOCK"]),)
    with device_context(x):
        _fused_fwd[grid](x, y, arg, y.numel(), c, h, w, *geo.out, c // params[4],
                         *x.stride(), *y.stride(), **_lrn_consts(params), **geo.constexprs(),
                         SAVE_ARG=save_arg, CHANNELS_LAST=fmt == torch.channels_last)
    return y, (arg if save_arg else None)


def _fused_backward(x, dy, arg, params: tuple, geo: PoolGeometry) -> torch.Tensor:
    n, c, h, w = x.shape
    fmt = memory_format(x)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    check_index_range(dy, dx)
    if dx.numel() == 0:
        return dx
    grid = lambda meta: (triton.cdiv(dx.numel(), meta["BLOCK"]),)
    with device_context(x):
        _fused_bwd[grid](x, dy, arg, dx, dx.numel(), c, h, w, *geo.out, c // params[4],
                         *x.stride(), *dy.stride(), *arg.stride(), *dx.stride(),
                         **_lrn_consts(params), **geo.constexprs(),
                         CHANNELS_LAST=fmt == torch.channels_last)
    return dx


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------


class _LRNMaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, params: tuple, geo: PoolGeometry):
        y, arg = _fused_forward(x, params, geo, save_arg=ctx.needs_input_grad[0])
        ctx.save_for_backward(x, arg)
        ctx.params, ctx.geo = params, geo
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, arg = ctx.saved_tensors
        return _fused_backward(x, dy, arg, ctx.params, ctx.geo), None, None


def lrn_max_pool2d(
    input: torch.Tensor,
    size: int,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    groups: int = 1,
    kernel_size=3,
    stride=2,
    padding=0,
) -> torch.Tensor:
    """``F.max_pool2d(local_response_norm(input, size, alpha, beta, k, groups), kernel_size,
    stride, padding)`` in one pass each way.

    Args:
        input: (N, C, H, W) or unbatched (C, H, W), float32/float16/bfloat16, any layout.
        size, alpha, beta, k, groups: as :func:`kernels.local_response_norm` (torch convention;
            the paper's layer: ``5, 5e-4, 0.75, 2.0``, groups=2 for the two towers).
        kernel_size, stride, padding: as :func:`kernels.max_pool2d` (AlexNet: 3, 2, 0).
    """
    check_tensor(input, "input")
    if input.dim() not in (3, 4):
        raise ValueError(f"lrn_max_pool2d expects (N, C, H, W) or (C, H, W) input, got shape "
                         f"{tuple(input.shape)}")
    unbatched = input.dim() == 3
    x = input.unsqueeze(0) if unbatched else input
    check_lrn_params(size, alpha, beta, k, groups, x.shape[1])
    geo = check_pool_args(x, kernel_size, stride, padding)
    params = (size, float(alpha), float(beta), float(k), groups)
    y = _LRNMaxPool2d.apply(x, params, geo)  # N = 0: empty result, nothing launched
    return y.squeeze(0) if unbatched else y


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compile specs
# ----------------------------------------------------------------------------------------------


def _named(prefix: str, t: torch.Tensor) -> dict:
    return {f"stride_{prefix}{d}": s for d, s in zip("nchw", t.stride())}


def aot_specs() -> list[KernelSpec]:
    """Forward and backward x GPU config x dtype after conv1: (128, 96, 55, 55) ->
    (128, 96, 27, 27), paper LRN constants, two towers, pool 3x3 / 2, NCHW."""
    geo = PoolGeometry((3, 3), (2, 2), (0, 0), (27, 27))
    lrn = dict(SIZE=5, ALPHA=5e-4, BETA=0.75, K=2.0)
    specs = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.empty(128, 96, 55, 55, dtype=dtype, device="meta")
        y = torch.empty(128, 96, 27, 27, dtype=dtype, device="meta")
        arg = torch.empty_like(y, dtype=geo.arg_dtype())
        sizes = dict(C=96, H=55, W=55, OH=27, OW=27, C_GROUP=48)
        fwd = dict(x_ptr=x, y_ptr=y, arg_ptr=arg, numel=y.numel(), **sizes, **_named("x", x),
                   **_named("y", y), **lrn, **geo.constexprs(), SAVE_ARG=True, CHANNELS_LAST=False)
        bwd = dict(x_ptr=x, dy_ptr=y, arg_ptr=arg, dx_ptr=x, numel=x.numel(), **sizes,
                   **_named("x", x), **_named("dy", y), **_named("a", arg), **_named("dx", x),
                   **lrn, **geo.constexprs(), CHANNELS_LAST=False)
        label = TORCH_TO_TRITON[dtype]
        for kname, fn, args, configs in (
            ("fwd", _lrn_max_pool2d_fwd_kernel, fwd, LRN_POOL_FWD_CONFIGS),
            ("bwd", _lrn_max_pool2d_bwd_kernel, bwd, LRN_POOL_BWD_CONFIGS),
        ):
            for cfg in configs:
                tag = f"BLOCK={cfg.kwargs['BLOCK']} w{cfg.num_warps}"
                specs.append(kernel_spec(f"lrn_max_pool2d_{kname}[conv1 55x55x96 b128, {tag}, "
                                         f"{label}]", fn, args, cfg))
    return specs
