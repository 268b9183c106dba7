"""Local response normalisation followed by max pooling, fused, forward and backward in Triton.

``lrn_max_pool2d(input, size, alpha, beta, k, groups, kernel_size, stride, padding)`` equals
``F.max_pool2d(local_response_norm(input, size, alpha, beta, k, groups), kernel_size, stride,
padding)``: AlexNet's ``conv -> ReLU -> LRN -> max-pool 3/2`` after conv1 and conv2.

    input (N, C, H, W) -> (N, C, OH, OW),  OH = (H + 2 pad - KH) // SH + 1

Only 4-D input: a 3-D input is (N, C, L) to ``local_response_norm`` (as in PyTorch) but one
image (C, H, W) to ``max_pool2d``, so the composition would normalise over H; pass
``input.unsqueeze(0)`` for one image.

LRN constants follow ``torch.nn.functional`` (alpha divided by size); see :mod:`kernels.lrn` for
the paper's and cuda-convnet's conventions, the power's domain and the backward's factors.
Pooling semantics are :mod:`kernels.max_pool2d`'s (first maximum wins, NaN propagates and the
last NaN of a window gets the gradient, as in PyTorch).

Kernels:

- forward (one program per BLOCK output elements, in memory order): per output pixel, the LRN
  value of each of its KH*KW taps is computed from the ``size``-channel window of the input
  (neighbouring loads hit the cache) and only the running max and its window offset are kept.
  It reads the conv output once and writes the pooled map (4x smaller for 3x3 / 2) and an int8
  argmax: the LRN map itself never reaches memory.
- backward: a sweep over channels, as :mod:`kernels.lrn`'s backward: one program per BLOCK
  input pixels x BLOCK_C channels of one group, one channel per step. Step j loads the input
  x_j (once per element), which completes the scale window of channel a = j - (size-1)//2:
  its scale is summed from the ``size`` inputs kept in registers (once per channel, the
  forward's sum in the forward's order), and the pooled gradient reaching a's LRN output is
  routed through the stored argmax (a gather over the ceil(K/S)^2 candidate windows: their
  argmax, and the gradient of those that picked this pixel; no atomics). Its term enters a
  window of ``size`` terms, and dx of channel j - (size - 1) is written. Global loads per element
  and step: ``bwd_loads_per_step`` = 1 + 2 ceil(KH/SH) ceil(KW/SW), 9 for AlexNet's 3x3 / 2
  (checked in the PTX by the compile report); per element, that when BLOCK_C covers the group,
  else the halo: x of the ``2 (size - 1)`` and the gathers of the ``size - 1`` channels around a
  chunk's edges are loaded by both chunks. Only the input and the argmax are saved (the input
  is the conv output that autograd keeps anyway). Every channel's term is computed, also where
  the routed gradient is 0: PyTorch's composition gives NaN there when the input holds inf or
  NaN (``0 * (inf / inf)``), and so does this kernel.

The price of never storing the LRN map: overlapping windows recompute the LRN of a pixel up to
ceil(K/S)^2 times in forward, and the backward sums each scale again (``size`` multiply-adds
per element, no extra loads); AlexNet's LRN/pool layers are memory bound, so arithmetic is the
cheap side of that trade. Not yet timed on a GPU; every autotune config compiles ahead of time
for sm_80 and sm_90 (see ``aot_specs``).

Layout: strides for every pointer (input, output, argmax, gradients); strided, expanded and
offset views work without a copy. The forward's lanes walk the memory order, so its loads are
coalesced in NCHW and channels_last alike; the backward's lanes are pixels: coalesced in NCHW,
while in channels_last one load reads a channel of BLOCK pixels ``C`` elements apart and the
next channel steps find the rest of each sector in the cache (not yet timed on a GPU). Outputs
and the input gradient are channels_last when the input is, else NCHW. float32, float16,
bfloat16 in and out with fp32 arithmetic; float64 in fp64.

PyTorch integration: a ``torch.library`` custom operator (``lightning_alexnet::lrn_max_pool2d``
and ``lightning_alexnet::lrn_max_pool2d_backward``) with a fake implementation and an autograd
rule, so ``torch.compile(fullgraph=True)`` traces through it. Autocast: no cast rule on purpose
-- the op runs in its input's dtype with fp32 math inside, like :mod:`kernels.lrn`.

Refused, with a clear error:
- ``TypeError``: input not a tensor.
- ``RuntimeError``: a CPU tensor without ``TRITON_INTERPRET=1``, or a CUDA tensor with it.
- ``NotImplementedError``: dtype other than float32/float16/bfloat16/float64; a device other
  than CUDA or CPU; double backward.
- ``ValueError``: a tensor (input, gradient or argmax) whose memory span reaches 2**31
  elements (int32 offsets, the library's one error for it); input not 4-D (3-D included,
  see above); the LRN arguments :func:`kernels.local_response_norm` refuses (size,
  alpha < 0, k <= 0, non-finite constants, groups); the pooling arguments
  :func:`kernels.max_pool2d` refuses (zero channels or spatial size, kernel_size/stride/padding
  malformed or out of range, an output size below 1).
"""

from __future__ import annotations

import math

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
    refuse_double_backward,
    strides,
    triton_acc,
)
from kernels._lrn_pool import (
    PoolGeometry,
    check_arg_for_backward,
    check_lrn_params,
    check_pool_args,
    geometry,
    grad_input_like,
    lanes_if,
    launch_sweep,
    lrn_grad_input,
    lrn_grad_push,
    lrn_scale,
    nchw_index,
    pool_outputs,
    pow_pos,
    routed_grad,
    sweep_program,
    take_max,
    window_scale,
    zeros_window,
)
from kernels.tuning import (
    LRN_POOL_BWD_CONFIGS,
    LRN_POOL_FWD_CONFIGS,
    elementwise_autotune,
    sweep_autotune,
)

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
    ACC: tl.constexpr,
    # tiling
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    n, c, oh, ow = nchw_index(i, C, OH, OW, CHANNELS_LAST)
    g_lo = (c // C_GROUP) * C_GROUP
    best = tl.full([BLOCK], float("-inf"), dtype=ACC)
    arg = tl.full([BLOCK], -1, dtype=tl.int32)
    for kh in tl.static_range(KH):
        h = oh * SH - PH + kh
        for kw in tl.static_range(KW):
            w = ow * SW - PW + kw
            ok = mask & (h >= 0) & (h < H) & (w >= 0) & (w < W)
            x_pix = x_ptr + n * stride_xn + h * stride_xh + w * stride_xw
            scale = lrn_scale(x_pix, c, g_lo, ok, C_GROUP, stride_xc, SIZE, ALPHA, K, ACC, BLOCK)
            x = tl.load(x_pix + c * stride_xc, mask=ok, other=0.0).to(ACC)
            v = x / pow_pos(scale, BETA)  # LRN output at (n, c, h, w)
            best, arg = take_max(v, best, arg, kh * KW + kw, ok)
    out = n * stride_yn + c * stride_yc + oh * stride_yh + ow * stride_yw
    tl.store(y_ptr + out, best.to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_ARG:
        tl.store(arg_ptr + out, arg.to(arg_ptr.dtype.element_ty), mask=mask)


def bwd_loads_per_step(kernel: tuple[int, int], stride: tuple[int, int]) -> int:
    """Global loads per element per channel step of the backward: the input once, and per
    candidate pooling window (ceil(K/S) per axis) its argmax and, where it picked this pixel, its
    gradient. The compile report checks the PTX against it."""
    return 1 + 2 * math.prod(-(-k // s) for k, s in zip(kernel, stride))


@triton.jit
def _lrn_max_pool2d_bwd_kernel(
    x_ptr, dy_ptr, arg_ptr, dx_ptr,
    # sizes: H * W, channels per group, groups
    S, C_GROUP, GROUPS, H, W, OH, OW,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_dyn, stride_dyc, stride_dyh, stride_dyw,
    stride_an, stride_ac, stride_ah, stride_aw,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # op params
    SIZE: tl.constexpr, ALPHA: tl.constexpr, BETA: tl.constexpr, K: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    PH: tl.constexpr, PW: tl.constexpr, ACC: tl.constexpr,
    # tiling: pixels per program, channels per program
    BLOCK: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n, g_lo, c_lo, c_hi, p, mask = sweep_program(S, C_GROUP, GROUPS, BLOCK, BLOCK_C)
    h, w = p // W, p % W
    g_hi = g_lo + C_GROUP
    x_pix = x_ptr + n * stride_xn + h * stride_xh + w * stride_xw
    dx_pix = dx_ptr + n * stride_dxn + h * stride_dxh + w * stride_dxw
    # Three channels per step j, each SIZE//2 or (SIZE-1)//2 behind the last: the input x_j
    # enters the window xw of the SIZE inputs j-SIZE+1 .. j, which is channel a's scale window
    # (a = j - (SIZE-1)//2); a's term enters tw, the terms of a-SIZE+1 .. a, which is the sum
    # channel c = a - SIZE//2 = j - SIZE + 1 needs. The gradient reaching a's LRN output is the
    # pooled gradient routed through the argmax.
    A: tl.constexpr = (SIZE - 1) // 2
    LAG: tl.constexpr = SIZE // 2
    xw = zeros_window(SIZE, ACC, BLOCK)
    tw = zeros_window(SIZE, ACC, BLOCK)
    qd = zeros_window(LAG + 1, ACC, BLOCK)  # g / D of channels a-LAG .. a
    a_lo = tl.maximum(c_lo - A, g_lo)  # the first channel whose term a written channel needs
    for j in range(tl.maximum(c_lo - (SIZE - 1), g_lo), c_hi + SIZE - 1):
        x = tl.load(x_pix + j * stride_xc, mask=lanes_if(j < g_hi, mask), other=0.0).to(ACC)
        xw = xw[1:] + (x,)
        a = j - A
        ok = lanes_if(a < g_hi, lanes_if(a >= a_lo, mask))
        ga = routed_grad(dy_ptr, arg_ptr, n, a, h, w, ok, OH, OW,
                         stride_dyn, stride_dyc, stride_dyh, stride_dyw,
                         stride_an, stride_ac, stride_ah, stride_aw,
                         KH, KW, SH, SW, PH, PW, ACC, BLOCK)
        # outside [a_lo, g_hi) nothing is routed and s = 1: past the group x = 0 too, a zero
        # term; before a_lo a term only the unwritten channels below c_lo would sum
        sa = tl.where(ok, window_scale(xw, SIZE, ALPHA, K), 1.0)
        tw, qd = lrn_grad_push(tw, qd, ga, xw[LAG], sa, BETA)
        c = j - (SIZE - 1)
        dx = lrn_grad_input(tw, qd[0], xw[0], ALPHA, SIZE)
        tl.store(dx_pix + c * stride_dxc, dx.to(dx_ptr.dtype.element_ty),
                 mask=lanes_if(c >= c_lo, mask))


_KEY = ["numel", "C", "H", "W", "C_GROUP"]
_fused_fwd = elementwise_autotune(_lrn_max_pool2d_fwd_kernel, LRN_POOL_FWD_CONFIGS, _KEY)
_fused_bwd = sweep_autotune(_lrn_max_pool2d_bwd_kernel, LRN_POOL_BWD_CONFIGS,
                            ["S", "C_GROUP", "W"])


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _fwd_args(x, y, arg, params: tuple, geo: PoolGeometry, save_arg: bool) -> dict:
    """_lrn_max_pool2d_fwd_kernel's arguments by name, for the launch and for ``aot_specs``."""
    size, alpha, beta, k, groups = params
    _, c, h, w = x.shape
    return dict(x_ptr=x, y_ptr=y, arg_ptr=arg if save_arg else y, numel=y.numel(), C=c, H=h, W=w,
                OH=geo.out[0], OW=geo.out[1], C_GROUP=c // groups, **strides("x", x),
                **strides("y", y), SIZE=size, ALPHA=alpha, BETA=beta, K=k, **geo.constexprs(),
                SAVE_ARG=save_arg, CHANNELS_LAST=memory_format(x) == torch.channels_last,
                ACC=triton_acc(x.dtype))


def _bwd_args(x, dy, arg, dx, params: tuple, geo: PoolGeometry) -> dict:
    """_lrn_max_pool2d_bwd_kernel's arguments by name, for the launch and for ``aot_specs``."""
    size, alpha, beta, k, groups = params
    _, c, h, w = x.shape
    return dict(x_ptr=x, dy_ptr=dy, arg_ptr=arg, dx_ptr=dx, S=h * w, C_GROUP=c // groups,
                GROUPS=groups, H=h, W=w, OH=geo.out[0], OW=geo.out[1], **strides("x", x),
                **strides("dy", dy), **strides("a", arg), **strides("dx", dx), SIZE=size,
                ALPHA=alpha, BETA=beta, K=k, **geo.constexprs(), ACC=triton_acc(x.dtype))


def _fused_forward(x, y, arg, params: tuple, geo: PoolGeometry, save_arg: bool) -> None:
    """Writes the pooled LRN of x (N, C, H, W) to y and the argmax window offsets to arg."""
    check_int32_span(input=x, output=y)
    if y.numel() == 0:
        return
    launch_elementwise(_fused_fwd, _fwd_args(x, y, arg, params, geo, save_arg))


def _fused_backward(x, dy, arg, dx, params: tuple, geo: PoolGeometry) -> None:
    check_int32_span(input=x, grad_output=dy, argmax=arg, grad_input=dx)
    if dx.numel() == 0:
        return
    launch_sweep(_fused_bwd, _bwd_args(x, dy, arg, dx, params, geo), x.shape[0], params[4])


# ----------------------------------------------------------------------------------------------
# Custom operators and autograd
# ----------------------------------------------------------------------------------------------


@torch.library.custom_op("lightning_alexnet::lrn_max_pool2d", mutates_args=())
def lrn_max_pool2d_op(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
                      groups: int, kernel: list[int], stride: list[int], padding: list[int],
                      save_arg: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) -> pooled LRN (N, C, OH, OW) and the argmax (empty unless save_arg)."""
    geo = geometry(x.shape, kernel, stride, padding)
    y, arg = pool_outputs(x, geo, save_arg)
    _fused_forward(x, y, arg, (size, alpha, beta, k, groups), geo, save_arg)
    return y, arg


@lrn_max_pool2d_op.register_fake
def _(x, size, alpha, beta, k, groups, kernel, stride, padding, save_arg):
    return pool_outputs(x, geometry(x.shape, kernel, stride, padding), save_arg)


@torch.library.custom_op("lightning_alexnet::lrn_max_pool2d_backward", mutates_args=())
def lrn_max_pool2d_backward_op(x: torch.Tensor, grad_output: torch.Tensor, arg: torch.Tensor,
                               size: int, alpha: float, beta: float, k: float, groups: int,
                               kernel: list[int], stride: list[int],
                               padding: list[int]) -> torch.Tensor:
    channels_last = memory_format(x) == torch.channels_last
    dx = grad_input_like(x, x.shape[2], x.shape[3], channels_last)
    _fused_backward(x, grad_output, arg, dx, (size, alpha, beta, k, groups),
                    geometry(x.shape, kernel, stride, padding))
    return dx


@lrn_max_pool2d_backward_op.register_fake
def _(x, grad_output, arg, size, alpha, beta, k, groups, kernel, stride, padding):
    channels_last = memory_format(x) == torch.channels_last
    return grad_input_like(x, x.shape[2], x.shape[3], channels_last)


def _fused_setup_context(ctx, inputs, output):
    x, *params, _ = inputs
    ctx.save_for_backward(x, output[1])
    ctx.params = params  # size, alpha, beta, k, groups, kernel, stride, padding


def _fused_grad(ctx, grad_y, _grad_arg):
    x, arg = ctx.saved_tensors
    check_arg_for_backward(arg, "lightning_alexnet::lrn_max_pool2d")
    dx = lrn_max_pool2d_backward_op(x, grad_y, arg, *ctx.params)
    return dx, *([None] * 9)


lrn_max_pool2d_op.register_autograd(_fused_grad, setup_context=_fused_setup_context)
lrn_max_pool2d_backward_op.register_autograd(refuse_double_backward("lrn_max_pool2d"))


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
        input: (N, C, H, W), float32/float16/bfloat16/float64, any layout (one image:
            ``input.unsqueeze(0)``; 3-D input is refused, see the module docstring).
        size, alpha, beta, k, groups: as :func:`kernels.local_response_norm` (torch convention;
            the paper's layer: ``5, 5e-4, 0.75, 2.0``, groups=2 for the two towers).
        kernel_size, stride, padding: as :func:`kernels.max_pool2d` (AlexNet: 3, 2, 0).
    """
    check_tensor_or_float64(input, "input")
    if input.dim() != 4:
        hint = (" (a 3-D input is (N, C, L) to local_response_norm but (C, H, W) to max_pool2d;"
                " pass input.unsqueeze(0) for one image)") if input.dim() == 3 else ""
        raise ValueError(f"lrn_max_pool2d expects (N, C, H, W) input, got shape "
                         f"{tuple(input.shape)}{hint}")
    check_lrn_params(size, alpha, beta, k, groups, input.shape[1])
    geo = check_pool_args(input, kernel_size, stride, padding)
    check_int32_span(input=input)
    save_arg = torch.is_grad_enabled() and input.requires_grad
    y, _ = lrn_max_pool2d_op(input, size, float(alpha), float(beta), float(k), groups,
                             list(geo.kernel), list(geo.stride), list(geo.padding), save_arg)
    return y  # N = 0: empty result, nothing launched


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compile specs
# ----------------------------------------------------------------------------------------------


# The compile report checks each backward spec's PTX against this (kernel -> its constexprs ->
# global loads per element and channel step).
LOAD_BOUNDS = {"lrn_max_pool2d_bwd": lambda c: bwd_loads_per_step((c["KH"], c["KW"]),
                                                                  (c["SH"], c["SW"]))}


def aot_specs() -> list[KernelSpec]:
    """Forward and backward x GPU config x dtype after conv1: (128, 96, 55, 55) ->
    (128, 96, 27, 27), paper LRN constants, two towers, pool 3x3 / 2, NCHW."""
    geo = PoolGeometry((3, 3), (2, 2), (0, 0), (27, 27))
    params = (5, 5e-4, 0.75, 2.0, 2)  # paper LRN constants, two towers
    specs = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.empty(128, 96, 55, 55, dtype=dtype, device="meta")
        y = torch.empty(128, 96, 27, 27, dtype=dtype, device="meta")
        arg = torch.empty_like(y, dtype=geo.arg_dtype())
        fwd = _fwd_args(x, y, arg, params, geo, True)
        bwd = _bwd_args(x, y, arg, x, params, geo)
        label = TORCH_TO_TRITON[dtype]
        specs += block_specs("lrn_max_pool2d", "conv1 55x55x96 b128 g2", label,
                             (("fwd", _lrn_max_pool2d_fwd_kernel, fwd, LRN_POOL_FWD_CONFIGS),
                              ("bwd", _lrn_max_pool2d_bwd_kernel, bwd, LRN_POOL_BWD_CONFIGS)))
    return specs
