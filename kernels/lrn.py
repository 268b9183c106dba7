"""Local response normalisation across channels, forward and backward in Triton.

``local_response_norm(input, size, alpha, beta, k, groups)`` equals
``F.local_response_norm(input, size, alpha, beta, k)`` applied to each of ``groups`` equal
channel slices (``groups=2``: each of AlexNet's two towers normalises only its own channels):

    input (N, C, *) -> output (N, C, *)        (trailing dims are flattened to S)
    s_c = k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} x_j^2    (zero padded,
          the window clipped to the channel group, the sum always divided by size)
    y_c = x_c * s_c^-beta

Conventions: ``alpha`` follows ``torch.nn.functional`` and is divided by ``size``. The paper
(Krizhevsky et al. 2012, section 3.3) writes its formula without that division and gives
n=5, k=2, alpha=1e-4, beta=0.75, so the paper's layer is
``local_response_norm(x, 5, alpha=5 * 1e-4, beta=0.75, k=2.0)``. Krizhevsky's cuda-convnet code
does divide by n, i.e. it trained with ``alpha=1e-4`` in torch terms.

Kernels (one program per BLOCK elements, enumerated in the output's memory order):

- forward: one pass over the channel window (``size`` loads per element, neighbours hit the
  cache), writes y and, when a gradient is needed, the fp32 scale s.
- backward (Caffe's formulation, windows restricted to the group):
  ``dx_c = dy_c s_c^-beta - (2 alpha beta / size) x_c sum_j dy_j x_j s_j^(-beta-1)``, j over
  the channels whose window holds c (dy_j y_j / s_j), from x, the saved s and dy; no atomics.

Layout: the kernels take strides, so contiguous NCHW, channels_last and strided views work
without a copy (trailing dims that cannot be flattened to one stride are copied by
``reshape``). Both dense layouts are fast: with NCHW neighbouring lanes are neighbouring
pixels, with channels_last they are neighbouring channels, so every load is coalesced. The
output (and the saved scale) takes the input's layout when the input is dense, else NCHW.

Precision: fp32, fp16 and bf16 in, the same dtype out, all arithmetic in fp32, ``s^-beta`` as
``exp2(-beta * log2 s)``. The fp32 scale costs one extra fp32 tensor the size of the input
while a gradient is needed; :func:`kernels.lrn_max_pool2d` recomputes it instead. Offsets are
int32: every tensor must span < 2**31 elements. Not yet timed on a GPU; every autotune config
compiles ahead of time for sm_80 and sm_90 (see ``aot_specs``). Double backward is not
supported.
"""

from __future__ import annotations

import inspect
import math
import numbers

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

# Memory-bound, elementwise-like (sm_80 / sm_90): 4 elements per thread (8 made the backward
# take 128 registers in the sm_90 compile), three granularities.
LRN_FWD_CONFIGS = [
    triton.Config({"BLOCK": 256}, num_warps=2, num_stages=1),
    triton.Config({"BLOCK": 512}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 1024}, num_warps=8, num_stages=1),
]
LRN_BWD_CONFIGS = [
    triton.Config({"BLOCK": 256}, num_warps=2, num_stages=1),
    triton.Config({"BLOCK": 512}, num_warps=4, num_stages=1),
    triton.Config({"BLOCK": 1024}, num_warps=8, num_stages=1),
]
# Under the interpreter each program is numpy on the whole block: large blocks, few programs.
INTERPRET_CONFIG = triton.Config({"BLOCK": 1024}, num_warps=4, num_stages=1)

_INDEX_LIMIT = 2**31


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _ncs_index(i, C, S, CHANNELS_LAST: tl.constexpr):
    """Flat index in the output's memory order -> (n, c, s)."""
    if CHANNELS_LAST:  # (N, S, C) in memory
        c = i % C
        s = (i // C) % S
    else:  # (N, C, S) in memory
        s = i % S
        c = (i // S) % C
    return i // (C * S), c, s


@triton.jit
def lrn_scale(x_pix, c, g_lo, ok, C_GROUP, stride_xc, SIZE: tl.constexpr, ALPHA: tl.constexpr,
              K: tl.constexpr, BLOCK: tl.constexpr):
    """s = k + alpha/size * sum of x^2 over channels c - SIZE//2 .. c + (SIZE-1)//2 inside the
    group [g_lo, g_lo + C_GROUP); x_pix points at each lane's (n, pixel). fp32, (BLOCK,)."""
    sq = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(SIZE):
        cj = c + (t - SIZE // 2)
        ok_j = ok & (cj >= g_lo) & (cj < g_lo + C_GROUP)
        v = tl.load(x_pix + cj * stride_xc, mask=ok_j, other=0.0).to(tl.float32)
        sq += v * v
    return K + (ALPHA / SIZE) * sq


@triton.jit
def _lrn_fwd_kernel(
    x_ptr, y_ptr, scale_ptr,
    # sizes: elements, channels, flattened trailing dims, channels per group
    numel, C, S, C_GROUP,
    # strides; y and scale share one layout
    stride_xn, stride_xc, stride_xs,
    stride_yn, stride_yc, stride_ys,
    # op params
    SIZE: tl.constexpr, ALPHA: tl.constexpr, BETA: tl.constexpr, K: tl.constexpr,
    SAVE_SCALE: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    # tiling
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    n, c, s = _ncs_index(i, C, S, CHANNELS_LAST)
    g_lo = (c // C_GROUP) * C_GROUP  # the window stays inside [g_lo, g_lo + C_GROUP)
    x_pix = x_ptr + n * stride_xn + s * stride_xs
    scale = lrn_scale(x_pix, c, g_lo, mask, C_GROUP, stride_xc, SIZE, ALPHA, K, BLOCK)
    x = tl.load(x_pix + c * stride_xc, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.exp2(-BETA * tl.log2(scale))
    out = n * stride_yn + c * stride_yc + s * stride_ys
    tl.store(y_ptr + out, y.to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_SCALE:
        tl.store(scale_ptr + out, scale, mask=mask)


@triton.jit
def _lrn_bwd_kernel(
    x_ptr, scale_ptr, dy_ptr, dx_ptr,
    # sizes
    numel, C, S, C_GROUP,
    # strides; scale and dx share one layout
    stride_xn, stride_xc, stride_xs,
    stride_dyn, stride_dyc, stride_dys,
    stride_on, stride_oc, stride_os,
    # op params
    SIZE: tl.constexpr, ALPHA: tl.constexpr, BETA: tl.constexpr, CHANNELS_LAST: tl.constexpr,
    # tiling
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    n, c, s = _ncs_index(i, C, S, CHANNELS_LAST)
    g_lo = (c // C_GROUP) * C_GROUP
    x_pix = x_ptr + n * stride_xn + s * stride_xs
    dy_pix = dy_ptr + n * stride_dyn + s * stride_dys
    o_pix = n * stride_on + s * stride_os
    # sum over the channels j whose window holds c: j = c - (SIZE-1)//2 .. c + SIZE//2
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for t in range(SIZE):
        cj = c + (t - (SIZE - 1) // 2)
        ok = mask & (cj >= g_lo) & (cj < g_lo + C_GROUP)
        xj = tl.load(x_pix + cj * stride_xc, mask=ok, other=0.0).to(tl.float32)
        dyj = tl.load(dy_pix + cj * stride_dyc, mask=ok, other=0.0).to(tl.float32)
        sj = tl.load(scale_ptr + o_pix + cj * stride_oc, mask=ok, other=1.0)
        acc += dyj * xj * tl.exp2((-BETA - 1.0) * tl.log2(sj))  # dy_j * y_j / s_j
    x = tl.load(x_pix + c * stride_xc, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_pix + c * stride_dyc, mask=mask, other=0.0).to(tl.float32)
    sc = tl.load(scale_ptr + o_pix + c * stride_oc, mask=mask, other=1.0)
    dx = dy * tl.exp2(-BETA * tl.log2(sc)) - (2.0 * ALPHA * BETA / SIZE) * x * acc
    tl.store(dx_ptr + o_pix + c * stride_oc, dx.to(dx_ptr.dtype.element_ty), mask=mask)


_lrn_fwd = triton.autotune(
    autotune_configs(LRN_FWD_CONFIGS, INTERPRET_CONFIG), key=["numel", "C", "S", "C_GROUP"]
)(_lrn_fwd_kernel)
_lrn_bwd = triton.autotune(
    autotune_configs(LRN_BWD_CONFIGS, INTERPRET_CONFIG), key=["numel", "C", "S", "C_GROUP"]
)(_lrn_bwd_kernel)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def check_lrn_params(size, alpha, beta, k, groups, channels: int) -> None:
    """Argument checks shared with :func:`kernels.lrn_max_pool2d`."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if not real or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int, got {groups!r}")
    if channels % groups:
        raise ValueError(f"groups={groups} must divide the {channels} input channels")


def check_index_range(*tensors: torch.Tensor) -> None:
    """Kernels use int32 offsets: every tensor must span fewer than 2**31 elements."""
    for t in tensors:
        span = 1 + sum((d - 1) * abs(st) for d, st in zip(t.shape, t.stride()) if d > 0)
        if t.numel() and span >= _INDEX_LIMIT:
            raise ValueError(f"tensor of shape {tuple(t.shape)} spans {span} elements; "
                             f"the kernels index with int32 (< {_INDEX_LIMIT})")


def is_channels_last(t: torch.Tensor) -> bool:
    """Unit channel stride (channels_last / channels_last_3d as an (N, C, S) view). Only asked of
    the dense tensors the launchers allocate, where it decides the order lanes walk memory."""
    return t.shape[1] > 1 and t.stride(1) == 1


def _lrn_forward(x3: torch.Tensor, params: tuple, save_scale: bool):
    """(N, C, S) -> y (N, C, S) in x3's layout, and the fp32 scale (or None)."""
    size, alpha, beta, k, groups = params
    n, c, s = x3.shape
    y = torch.empty_like(x3)  # keeps a dense input's strides, else contiguous
    scale = torch.empty_like(y, dtype=torch.float32) if save_scale else y
    check_index_range(x3, y)
    grid = lambda meta: (triton.cdiv(y.numel(), meta["BLOCK"]),)
    if y.numel() == 0:  # empty batch: nothing to launch
        return y, (scale if save_scale else None)
    with device_context(x3):
        _lrn_fwd[grid](
            x3, y, scale, y.numel(), c, s, c // groups, *x3.stride(), *y.stride(),
            SIZE=size, ALPHA=float(alpha), BETA=float(beta), K=float(k),
            SAVE_SCALE=save_scale, CHANNELS_LAST=is_channels_last(y),
        )
    return y, (scale if save_scale else None)


def _lrn_backward(x3: torch.Tensor, scale: torch.Tensor, dy3: torch.Tensor, params: tuple):
    size, alpha, beta, _, groups = params
    n, c, s = x3.shape
    dx = torch.empty_like(scale, dtype=x3.dtype)  # scale's (dense) layout
    check_index_range(dy3)
    grid = lambda meta: (triton.cdiv(dx.numel(), meta["BLOCK"]),)
    if dx.numel() == 0:
        return dx
    with device_context(x3):
        _lrn_bwd[grid](
            x3, scale, dy3, dx, dx.numel(), c, s, c // groups,
            *x3.stride(), *dy3.stride(), *dx.stride(),
            SIZE=size, ALPHA=float(alpha), BETA=float(beta), CHANNELS_LAST=is_channels_last(dx),
        )
    return dx


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------


class _LocalResponseNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, params):
        shape = x.shape
        # (N, C, *) -> (N, C, S), a view when the trailing dims merge
        x3 = x.reshape(shape[0], shape[1], math.prod(shape[2:]))
        y3, scale = _lrn_forward(x3, params, save_scale=ctx.needs_input_grad[0])
        ctx.save_for_backward(x3, scale)
        ctx.params, ctx.shape = params, shape
        return y3.view(shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x3, scale = ctx.saved_tensors
        dy3 = dy.reshape(x3.shape)
        return _lrn_backward(x3, scale, dy3, ctx.params).view(ctx.shape), None


def local_response_norm(
    input: torch.Tensor,
    size: int,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
    groups: int = 1,
) -> torch.Tensor:
    """``F.local_response_norm(input, size, alpha, beta, k)`` on each of ``groups`` channel slices.

    Args:
        input: (N, C, *) with at least 3 dims, float32/float16/bfloat16.
        size: channels in the window (c - size//2 .. c + (size-1)//2, zero padded).
        alpha, beta, k: torch convention, ``s = k + alpha / size * sum x^2``, ``y = x / s^beta``.
            The paper's AlexNet layer is ``size=5, alpha=5e-4, beta=0.75, k=2.0``.
        groups: equal channel slices normalised independently (AlexNet's two towers: 2).
    """
    check_tensor(input, "input")
    if input.dim() < 3:
        raise ValueError(
            f"local_response_norm expects input of 3 or more dims (N, C, *), got shape "
            f"{tuple(input.shape)}"
        )
    check_lrn_params(size, alpha, beta, k, groups, input.shape[1])
    params = (size, float(alpha), float(beta), float(k), groups)
    return _LocalResponseNorm.apply(input, params)


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compile specs
# ----------------------------------------------------------------------------------------------


def kernel_spec(name: str, fn, args: dict, config: triton.Config) -> KernelSpec:
    """A KernelSpec from the launch arguments, typed as the JIT specialises them: tensors are
    16-byte aligned pointers, ints equal to 1 become constants, other ints note divisibility."""
    params = inspect.signature(fn.fn).parameters
    constexpr_args = {p for p, v in params.items()
                      if v.annotation in (tl.constexpr, "tl.constexpr")}
    args = {**args, **config.kwargs}
    if list(args) != fn.arg_names:
        raise AssertionError(f"{name}: spec arguments {list(args)} != kernel's {fn.arg_names}")
    signature, constexprs, divisible = {}, {}, []
    for arg, value in args.items():
        if arg in constexpr_args or (isinstance(value, int) and value == 1):
            signature[arg], constexprs[arg] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            elem = "i8" if value.dtype == torch.int8 else TORCH_TO_TRITON[value.dtype]
            signature[arg] = "*" + elem
            divisible.append(arg)
        else:
            signature[arg] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                divisible.append(arg)
    return KernelSpec(name=name, fn=fn, signature=signature, constexprs=constexprs,
                      divisible=tuple(divisible), num_warps=config.num_warps,
                      num_stages=config.num_stages)


def aot_specs() -> list[KernelSpec]:
    """Forward and backward x GPU config x dtype for AlexNet's first LRN: conv1's output
    (128, 96, 55, 55) NCHW, paper constants, two towers; arguments as the launchers pass them."""
    shape, groups = (128, 96, 55 * 55), 2
    ops = dict(SIZE=5, ALPHA=5e-4, BETA=0.75)
    specs = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.empty(shape, dtype=dtype, device="meta")
        scale = torch.empty(shape, dtype=torch.float32, device="meta")
        sizes = dict(numel=x.numel(), C=shape[1], S=shape[2], C_GROUP=shape[1] // groups)
        label = TORCH_TO_TRITON[dtype]
        fwd = dict(x_ptr=x, y_ptr=x, scale_ptr=scale, **sizes,
                   **dict(zip(("stride_xn", "stride_xc", "stride_xs"), x.stride())),
                   **dict(zip(("stride_yn", "stride_yc", "stride_ys"), x.stride())),
                   **ops, K=2.0, SAVE_SCALE=True, CHANNELS_LAST=False)
        bwd = dict(x_ptr=x, scale_ptr=scale, dy_ptr=x, dx_ptr=x, **sizes,
                   **dict(zip(("stride_xn", "stride_xc", "stride_xs"), x.stride())),
                   **dict(zip(("stride_dyn", "stride_dyc", "stride_dys"), x.stride())),
                   **dict(zip(("stride_on", "stride_oc", "stride_os"), x.stride())),
                   **ops, CHANNELS_LAST=False)
        for kname, fn, args, configs in (("fwd", _lrn_fwd_kernel, fwd, LRN_FWD_CONFIGS),
                                         ("bwd", _lrn_bwd_kernel, bwd, LRN_BWD_CONFIGS)):
            for cfg in configs:
                tag = f"BLOCK={cfg.kwargs['BLOCK']} w{cfg.num_warps}"
                specs.append(kernel_spec(f"lrn_{kname}[conv1 55x55x96 b128, {tag}, {label}]",
                                         fn, args, cfg))
    return specs
