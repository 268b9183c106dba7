"""Local response normalisation across channels, forward and backward in Triton.

``local_response_norm(input, size, alpha, beta, k, groups)`` equals
``F.local_response_norm(input, size, alpha, beta, k)`` applied to each of ``groups`` equal
channel slices (``groups=2``: each of AlexNet's two towers normalises only its own channels):

    input (N, C, *) -> output (N, C, *)        (trailing dims are flattened to S)
    s_c = k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} x_j^2    (zero padded,
          the window clipped to the channel group, the sum always divided by size)
    y_c = x_c / s_c^beta

Conventions: ``alpha`` follows ``torch.nn.functional`` and is divided by ``size``. The paper
(Krizhevsky et al. 2012, section 3.3) writes its formula without that division and gives
n=5, k=2, alpha=1e-4, beta=0.75, so the paper's layer is
``local_response_norm(x, 5, alpha=5 * 1e-4, beta=0.75, k=2.0)``. Krizhevsky's cuda-convnet code
does divide by n, i.e. it trained with ``alpha=1e-4`` in torch terms.

Kernels:

- forward (one program per BLOCK elements, in the output's memory order): one pass over the
  channel window (``size`` loads per element, neighbours hit the cache), writes y and, when a
  gradient is needed, the scale s (fp32; fp64 for fp64 input).
- backward: ``dx_i = dy_i / D_i + 2 x_i (alpha / size) sum_c g_c``, c over the channels whose
  window holds i, ``D = s^beta`` and ``g_c = -dy_c ((x_c / D_c) / D_c) (beta s_c^(beta-1))``:
  the factors of PyTorch's own autograd graph for ``F.local_response_norm``, so NaN and inf in
  the input or the gradient land where they land in PyTorch (``0 * inf`` included). From x, the
  saved s and dy, no atomics, as a sweep over channels: one program per BLOCK pixels x BLOCK_C
  channels of one group, whose loop takes one channel per step: it loads that channel's x, dy
  and s (``BWD_LOADS_PER_STEP`` = 3 global loads per element and step, the one loop holding
  every load: the compile report checks the PTX against it), computes ``g`` and ``dy / D``
  once (one log2 and two exp2 per element), and writes dx of the channel ``size // 2`` behind,
  from the last ``size`` terms kept in registers. Every window sum is added up anew in
  ascending channel order (no running sum that subtracts the channel leaving: ``inf - inf``
  would be NaN), the order of the previous gather and of the forward. Global loads per element:
  3 when BLOCK_C covers the group; else the ``size - 1`` channels around a chunk's edges are
  loaded by both chunks: at most ``3 (1 + (size - 1) / BLOCK_C)``.

Powers: ``s^e`` is ``exp2(e * log2 s)``, which equals ``torch.pow`` on s in (0, inf] and NaN,
with ``s^0 = 1`` (NaN included) and ``s^1 = s`` taken exactly. ``k > 0`` and ``alpha >= 0`` keep
every finite s positive; so k <= 0 and alpha < 0 are refused (where torch.pow would need the
sign of s and whether beta is an integer). ``beta = 0`` is the identity, as in PyTorch.

Layout: the kernels take strides for every pointer, so contiguous NCHW, channels_last, strided,
expanded (stride 0) and offset views work without a copy (trailing dims that cannot be flattened
to one stride are copied by ``reshape``). The forward's lanes walk the memory order: with NCHW
neighbouring lanes are neighbouring pixels, with channels_last neighbouring channels, so every
load is coalesced. The backward's lanes are pixels in both: coalesced in NCHW; in channels_last
one load reads a channel of BLOCK pixels ``C`` elements apart, and the next channel steps find
the rest of each sector in the cache (not yet timed on a GPU). The output (and the saved scale)
takes the input's layout when the input is dense and its trailing dims merge, else NCHW.

Precision: float32, float16 and bfloat16 in, the same dtype out, arithmetic in fp32; float64
in fp64 (for ``torch.autograd.gradcheck``). The scale costs one extra fp32 tensor the size of
the input while a gradient is needed; :func:`kernels.lrn_max_pool2d` recomputes it instead.
Not yet timed on a GPU; every autotune config compiles ahead of time for sm_80 and sm_90 (see
``aot_specs``).

PyTorch integration: a ``torch.library`` custom operator (``lightning_alexnet::lrn`` and its
backward ``lightning_alexnet::lrn_backward``) with a fake implementation and an autograd rule,
so ``torch.compile(fullgraph=True)`` traces through it. Autocast: no cast rule on purpose -- the
op runs in its input's dtype (fp32 math inside), as max-pooling does under autocast; under
``bf16-mixed`` it reads and writes the convolution's bf16 output, half the traffic of fp32.

Refused, with a clear error:
- ``TypeError``: input not a tensor.
- ``RuntimeError``: a CPU tensor without ``TRITON_INTERPRET=1``, or a CUDA tensor with it.
- ``NotImplementedError``: dtype other than float32/float16/bfloat16/float64; a device other
  than CUDA or CPU; double backward.
- ``ValueError``: a tensor (input, gradient or saved scale) whose memory span reaches 2**31
  elements (int32 offsets, the library's one error for it); input with fewer than 3 dims;
  size not a positive int; alpha, beta or k not finite real numbers; alpha < 0; k <= 0;
  groups not a positive int or not dividing C.
"""

from __future__ import annotations

import itertools
import math

import torch
import triton
import triton.language as tl

from kernels._common import (
    TORCH_TO_TRITON,
    KernelSpec,
    acc_dtype,
    block_specs,
    check_int32_span,
    check_tensor_or_float64,
    launch_elementwise,
    refuse_double_backward,
    strides,
    triton_acc,
)
from kernels._lrn_pool import (
    check_lrn_params,
    lanes_if,
    launch_sweep,
    lrn_grad_input,
    lrn_grad_push,
    lrn_scale,
    pow_pos,
    sweep_program,
    zeros_window,
)
from kernels.tuning import LRN_BWD_CONFIGS, LRN_CONFIGS, elementwise_autotune, sweep_autotune

# ----------------------------------------------------------------------------------------------
# Triton kernels (the device functions they call are in kernels._lrn_pool)
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
def _lrn_fwd_kernel(
    x_ptr, y_ptr, scale_ptr,
    # sizes: elements, channels, flattened trailing dims, channels per group
    numel, C, S, C_GROUP,
    # strides
    stride_xn, stride_xc, stride_xs,
    stride_yn, stride_yc, stride_ys,
    stride_sn, stride_sc, stride_ss,
    # op params
    SIZE: tl.constexpr, ALPHA: tl.constexpr, BETA: tl.constexpr, K: tl.constexpr,
    SAVE_SCALE: tl.constexpr, CHANNELS_LAST: tl.constexpr, ACC: tl.constexpr,
    # tiling
    BLOCK: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    n, c, s = _ncs_index(i, C, S, CHANNELS_LAST)
    g_lo = (c // C_GROUP) * C_GROUP  # the window stays inside [g_lo, g_lo + C_GROUP)
    x_pix = x_ptr + n * stride_xn + s * stride_xs
    scale = lrn_scale(x_pix, c, g_lo, mask, C_GROUP, stride_xc, SIZE, ALPHA, K, ACC, BLOCK)
    x = tl.load(x_pix + c * stride_xc, mask=mask, other=0.0).to(ACC)
    y = x / pow_pos(scale, BETA)
    tl.store(y_ptr + n * stride_yn + c * stride_yc + s * stride_ys,
             y.to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_SCALE:
        tl.store(scale_ptr + n * stride_sn + c * stride_sc + s * stride_ss, scale, mask=mask)


# Global loads per element per channel step of the backward (x, dy, the scale); the compile
# report checks the PTX against it (see the module docstring for the count per element).
BWD_LOADS_PER_STEP = 3


@triton.jit
def _lrn_bwd_kernel(
    x_ptr, scale_ptr, dy_ptr, dx_ptr,
    # sizes: trailing dims flattened, channels per group, groups
    S, C_GROUP, GROUPS,
    # strides
    stride_xn, stride_xc, stride_xs,
    stride_sn, stride_sc, stride_ss,
    stride_dyn, stride_dyc, stride_dys,
    stride_dxn, stride_dxc, stride_dxs,
    # op params
    SIZE: tl.constexpr, ALPHA: tl.constexpr, BETA: tl.constexpr, ACC: tl.constexpr,
    # tiling: pixels per program, channels per program
    BLOCK: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n, g_lo, c_lo, c_hi, p, mask = sweep_program(S, C_GROUP, GROUPS, BLOCK, BLOCK_C)
    x_pix = x_ptr + n * stride_xn + p * stride_xs
    s_pix = scale_ptr + n * stride_sn + p * stride_ss
    dy_pix = dy_ptr + n * stride_dyn + p * stride_dys
    dx_pix = dx_ptr + n * stride_dxn + p * stride_dxs
    LAG: tl.constexpr = SIZE // 2  # dx_c needs the terms of channels up to c + SIZE//2
    tw = zeros_window(SIZE, ACC, BLOCK)  # lrn_grad_push's terms of channels j-SIZE+1 .. j
    qd = zeros_window(LAG + 1, ACC, BLOCK)  # dy / D of channels j-LAG .. j
    qx = zeros_window(LAG + 1, ACC, BLOCK)  # x of channels j-LAG .. j
    # step j loads channel j (once per element: BWD_LOADS_PER_STEP loads) and writes c = j - LAG
    for j in range(tl.maximum(c_lo - (SIZE - 1) // 2, g_lo), c_hi + LAG):
        ok = lanes_if(j < g_lo + C_GROUP, mask)  # past the group: dy = x = 0, s = 1, a zero term
        x = tl.load(x_pix + j * stride_xc, mask=ok, other=0.0).to(ACC)
        dy = tl.load(dy_pix + j * stride_dyc, mask=ok, other=0.0).to(ACC)
        sc = tl.load(s_pix + j * stride_sc, mask=ok, other=1.0).to(ACC)
        tw, qd = lrn_grad_push(tw, qd, dy, x, sc, BETA)
        qx = qx[1:] + (x,)
        c = j - LAG
        dx = lrn_grad_input(tw, qd[0], qx[0], ALPHA, SIZE)
        tl.store(dx_pix + c * stride_dxc, dx.to(dx_ptr.dtype.element_ty),
                 mask=lanes_if(c >= c_lo, mask))


_lrn_fwd = elementwise_autotune(_lrn_fwd_kernel, LRN_CONFIGS, ["numel", "C", "S", "C_GROUP"])
_lrn_bwd = sweep_autotune(_lrn_bwd_kernel, LRN_BWD_CONFIGS, ["S", "C_GROUP"])


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def is_channels_last(t: torch.Tensor) -> bool:
    """Unit channel stride (channels_last / channels_last_3d as an (N, C, S) view). Only asked of
    the dense tensors the launchers allocate, where it decides the order lanes walk memory."""
    return t.shape[1] > 1 and t.stride(1) == 1


def _trailing_dims_merge(t: torch.Tensor) -> bool:
    """Whether t's dims 2.. view as one stride (so t.view(N, C, S) is free)."""
    dims = [(d, st) for d, st in zip(t.shape[2:], t.stride()[2:]) if d != 1]
    return all(st == d_in * st_in for (_, st), (d_in, st_in) in itertools.pairwise(dims))


def _output_like(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An empty (N, C, *) tensor in x's layout when x is dense and its trailing dims merge, else
    contiguous: what the kernels write (y, the scale, dx). Real and fake ops share it."""
    out = torch.empty_like(x, dtype=dtype)
    if not _trailing_dims_merge(out):
        out = torch.empty(x.shape, dtype=dtype, device=x.device)
    return out


def _as_ncs(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], t.shape[1], math.prod(t.shape[2:]))


def _lrn_outputs(x: torch.Tensor, save_scale: bool) -> tuple[torch.Tensor, torch.Tensor]:
    y = _output_like(x, x.dtype)
    scale = _output_like(x, acc_dtype(x.dtype)) if save_scale else \
        x.new_empty(0, dtype=acc_dtype(x.dtype))
    return y, scale


def _fwd_args(x3, y3, s3, params: tuple, save_scale: bool) -> dict:
    """_lrn_fwd_kernel's arguments by name, for the launch and for ``aot_specs``; (N, C, S)
    views, s3 = y3 when no scale is saved."""
    size, alpha, beta, k, groups = params
    _, c, s = x3.shape
    return dict(x_ptr=x3, y_ptr=y3, scale_ptr=s3, numel=y3.numel(), C=c, S=s, C_GROUP=c // groups,
                **strides("x", x3, "ncs"), **strides("y", y3, "ncs"), **strides("s", s3, "ncs"),
                SIZE=size, ALPHA=alpha, BETA=beta, K=k, SAVE_SCALE=save_scale,
                CHANNELS_LAST=is_channels_last(y3), ACC=triton_acc(x3.dtype))


def _bwd_args(x3, s3, dy3, dx3, params: tuple) -> dict:
    """_lrn_bwd_kernel's arguments by name, for the launch and for ``aot_specs``."""
    size, alpha, beta, groups = params
    _, c, s = x3.shape
    return dict(x_ptr=x3, scale_ptr=s3, dy_ptr=dy3, dx_ptr=dx3, S=s, C_GROUP=c // groups,
                GROUPS=groups, **strides("x", x3, "ncs"), **strides("s", s3, "ncs"),
                **strides("dy", dy3, "ncs"), **strides("dx", dx3, "ncs"), SIZE=size, ALPHA=alpha,
                BETA=beta, ACC=triton_acc(x3.dtype))


def _lrn_forward(x, y, scale, params: tuple, save_scale: bool) -> None:
    """Writes y and (when save_scale) the scale of x, all (N, C, *)."""
    x3, y3 = _as_ncs(x), _as_ncs(y)  # y and the scale merge by construction: views
    s3 = _as_ncs(scale) if save_scale else y3
    check_int32_span(input=x3, output=y3, scale=s3)
    if y3.numel() == 0:  # empty batch: nothing to launch
        return
    launch_elementwise(_lrn_fwd, _fwd_args(x3, y3, s3, params, save_scale))


def _lrn_backward(x, scale, dy, dx, params: tuple) -> None:
    x3, s3, dy3, dx3 = _as_ncs(x), _as_ncs(scale), _as_ncs(dy), _as_ncs(dx)
    check_int32_span(input=x3, scale=s3, grad_output=dy3, grad_input=dx3)
    if dx3.numel() == 0:
        return
    launch_sweep(_lrn_bwd, _bwd_args(x3, s3, dy3, dx3, params), dx3.shape[0], params[3])


# ----------------------------------------------------------------------------------------------
# Custom operators and autograd
# ----------------------------------------------------------------------------------------------


@torch.library.custom_op("lightning_alexnet::lrn", mutates_args=())
def lrn_op(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int,
           save_scale: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, *) -> y (N, C, *) and the scale (fp32/fp64; empty unless save_scale)."""
    y, scale = _lrn_outputs(x, save_scale)
    _lrn_forward(x, y, scale, (size, alpha, beta, k, groups), save_scale)
    return y, scale


@lrn_op.register_fake
def _(x, size, alpha, beta, k, groups, save_scale):
    return _lrn_outputs(x, save_scale)


@torch.library.custom_op("lightning_alexnet::lrn_backward", mutates_args=())
def lrn_backward_op(x: torch.Tensor, scale: torch.Tensor, grad_output: torch.Tensor, size: int,
                    alpha: float, beta: float, groups: int) -> torch.Tensor:
    dx = _output_like(x, x.dtype)
    _lrn_backward(x, scale, grad_output, dx, (size, alpha, beta, groups))
    return dx


@lrn_backward_op.register_fake
def _(x, scale, grad_output, size, alpha, beta, groups):
    return _output_like(x, x.dtype)


def _lrn_setup_context(ctx, inputs, output):
    x, size, alpha, beta, _, groups, _ = inputs
    ctx.save_for_backward(x, output[1])
    ctx.params = (size, alpha, beta, groups)


def _lrn_grad(ctx, grad_y, _grad_scale):
    x, scale = ctx.saved_tensors
    if scale.numel() != x.numel():
        raise RuntimeError("lightning_alexnet::lrn was called with save_scale=False, so it "
                           "cannot be differentiated; call kernels.local_response_norm")
    return lrn_backward_op(x, scale, grad_y, *ctx.params), None, None, None, None, None, None


lrn_op.register_autograd(_lrn_grad, setup_context=_lrn_setup_context)
lrn_backward_op.register_autograd(refuse_double_backward("local_response_norm"))


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
        input: (N, C, *) with at least 3 dims, float32/float16/bfloat16/float64, any layout.
        size: channels in the window (c - size//2 .. c + (size-1)//2, zero padded).
        alpha, beta, k: torch convention, ``s = k + alpha / size * sum x^2``, ``y = x / s^beta``;
            alpha >= 0 and k > 0. The paper's AlexNet layer is ``size=5, alpha=5e-4,
            beta=0.75, k=2.0``.
        groups: equal channel slices normalised independently (AlexNet's two towers: 2).
    """
    check_tensor_or_float64(input, "input")
    if input.dim() < 3:
        raise ValueError(
            f"local_response_norm expects input of 3 or more dims (N, C, *), got shape "
            f"{tuple(input.shape)}"
        )
    check_lrn_params(size, alpha, beta, k, groups, input.shape[1])
    check_int32_span(input=input)
    save_scale = torch.is_grad_enabled() and input.requires_grad
    y, _ = lrn_op(input, size, float(alpha), float(beta), float(k), groups, save_scale)
    return y


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compile specs
# ----------------------------------------------------------------------------------------------


# The compile report checks each backward spec's PTX against this (kernel -> its constexprs ->
# global loads per element and channel step).
LOAD_BOUNDS = {"lrn_bwd": lambda consts: BWD_LOADS_PER_STEP}


def aot_specs() -> list[KernelSpec]:
    """Forward and backward x GPU config x dtype for AlexNet's first LRN: conv1's output
    (128, 96, 55, 55) NCHW, paper constants, two towers; arguments as the launchers pass them."""
    shape, (size, alpha, beta, k, groups) = (128, 96, 55 * 55), (5, 5e-4, 0.75, 2.0, 2)
    specs = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = torch.empty(shape, dtype=dtype, device="meta")
        scale = torch.empty(shape, dtype=torch.float32, device="meta")
        label = TORCH_TO_TRITON[dtype]
        fwd = _fwd_args(x, x, scale, (size, alpha, beta, k, groups), True)
        bwd = _bwd_args(x, scale, x, x, (size, alpha, beta, groups))
        specs += block_specs("lrn", "conv1 55x55x96 b128 g2", label,
                             (("fwd", _lrn_fwd_kernel, fwd, LRN_CONFIGS),
                              ("bwd", _lrn_bwd_kernel, bwd, LRN_BWD_CONFIGS)))
    return specs
