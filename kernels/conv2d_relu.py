"""2-D convolution + bias + ReLU, fused, forward and backward in Triton.

``conv2d_relu(input, weight, bias, stride, padding, dilation, groups)`` equals
``F.relu(F.conv2d(input, weight, bias, stride, padding, dilation, groups))``:

    input  (N, C_in, H, W) or unbatched (C_in, H, W)
    weight (C_out, C_in / groups, KH, KW)
    bias   (C_out,) or None
    output (N, C_out, OH, OW) or (C_out, OH, OW),  OH = (H + 2 * pad_h - KH) // stride_h + 1

padding is an int, a pair, "valid" or "same" (stride 1; an even kernel puts the extra row
bottom/right, as torch does); dilation must be 1.

Kernels, all implicit GEMMs with an fp32 accumulator (groups on grid axis 2):

- forward: M = N*OH*OW, N = C_out/g, K = KH*KW*C_in/g. Bias and ReLU are applied to the fp32
  accumulator before the down-cast and the store. The K index runs over (kh, kw, c) with the
  channel fastest, flattened, so conv1's 3 input channels fill a 16-wide K block (K = 363 is
  padded to a multiple of BLOCK_K by masked loads) instead of wasting 13 of 16 lanes per tap.
- input gradient (dgrad): M = N*H*W, N = C_in/g, K = KH*KW*C_out/g, a gather: for input pixel h
  and tap kh the output row is (h + pad - kh) / stride when that divides evenly and is in range.
  No atomics, no zero-inserted copy of the gradient. Skipped when the input needs no gradient
  (conv1's image).
- weight gradient (wgrad): M = KH*KW*C_in/g, N = C_out/g, K = N*OH*OW, with a deterministic
  split-K: each split of ``WGRAD_SPLIT_PIXELS`` output pixels writes an fp32 partial
  [SPLIT, C_out, C_in/g, KH, KW]; a second Triton kernel sums the partials in a fixed order.
  The bias gradient (sum of the masked gradient over N, OH, OW) is fused into the same kernel.
- The ReLU mask in backward comes from the saved output: the gradient is dropped where
  ``y <= 0`` (as torch's ``threshold_backward``).

Layout: every kernel takes strides, so contiguous NCHW, channels_last and strided views all work
without a copy. **channels_last is the fast layout** (input, weight and output gradient, i.e.
``model.to(memory_format=torch.channels_last)``): the K index has the channel fastest, so with unit channel stride (which the JIT specialises to a constant) and
16-divisible channel counts the loads along K are contiguous and vectorise. NCHW inputs gather
with stride H*W along K. The output takes channels_last when the input is channels_last, else
contiguous NCHW.

Precision: fp32, fp16 and bf16 in, the same dtype out, fp32 accumulation. fp32 inputs use exact
IEEE products (no TF32) unless the caller allowed TF32 for matmuls with
``torch.backends.cuda.matmul.allow_tf32 = True`` (``torch.set_float32_matmul_precision("high")``);
cuDNN's own default (``torch.backends.cudnn.allow_tf32 = True``) is *not* followed, since that
would silently lower fp32 precision. Indices are int32: each tensor must hold < 2**31 elements.

Speed, honestly: Triton convolutions usually do not beat cuDNN on NVIDIA GPUs (PyTorch Inductor
keeps its Triton conv templates off on CUDA for that reason). The value here is the fused
epilogue, the Triton backward and a kernel one can read and change. dgrad with stride s > 1
wastes about 1 - 1/s^2 of its K loop on masked taps (only conv1 has stride 4, and it needs no
dgrad). Exact fp32 has no tensor-core instruction: ``tl.dot`` becomes FMAs with smaller tiles,
several times slower than fp16/bf16 or TF32 (cuDNN's exact fp32 pays the same). The function
does not follow ``torch.autocast``: cast the tensors yourself. Not yet run on a GPU here: every
autotune config the pruner keeps was compiled ahead of time for sm_80 and sm_90 at all five
AlexNet convolution shapes (see ``aot_specs``), with no register spills; none has been timed.
conv1's 3 input channels get smaller tiles (``SMALL_CIN``): its scalar gathers need more
registers.

Not supported (clear errors): dilation != 1, double backward, bfloat16 under the interpreter
(its ``tl.dot`` multiplies the raw bf16 bits). When only the bias needs a gradient the weight
gradient is still computed (the bias sum is fused into its kernel).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from kernels._common import (
    INTERPRET,
    SUPPORTED_DTYPES,
    TORCH_TO_TRITON,
    KernelSpec,
    autotune_configs,
    check_same_device,
    check_same_dtype,
    check_tensor,
    device_context,
    pair,
)

# Output pixels (GEMM K) per weight-gradient split. Conv1 at batch 128 has 387k output pixels:
# 48 splits keep ~50x more programs busy than one serial K loop. Tests shrink it to exercise
# several splits on tiny shapes.
WGRAD_SPLIT_PIXELS = 8192

_SUM_BLOCK = 1024


def _config(block_m: int, block_n: int, block_k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k},
        num_warps=warps,
        num_stages=stages,
    )


# GPU configs for sm_80/sm_90. Every one is compiled ahead of time for both at every AlexNet
# layer shape it is kept for (``aot_specs``): ptxas -v reports no register spills. At most 4
# warps: Inductor's non-1x1 conv template miscompiled with 8 (pytorch#173068).
# Layout: spill-free as compiled is for channels_last, the layout the model runs on CUDA. NCHW
# inputs take the same configs through the strided gather, which is correct but not checked
# ahead of time: an sm_90 review found 13 of 24 fp16 conv2/conv3 configs spilling there (up to
# 7.4 KB) and no cp.async; for speed, use channels_last.
# Tensor-core configs: fp16, bf16, and fp32 with TF32 allowed.
FWD_CONFIGS = [
    _config(128, 128, 32, 4, 3),
    _config(128, 64, 32, 4, 3),
    _config(64, 128, 32, 4, 3),
    _config(64, 64, 32, 4, 4),
]
DGRAD_CONFIGS = [
    _config(64, 128, 32, 4, 3),
    _config(128, 64, 32, 4, 3),
    _config(64, 64, 32, 4, 4),
    _config(64, 64, 64, 4, 3),
]
# (128x128x32 sat at 254-255 registers with Triton 3.8/3.9 and spills with 3.7 on sm_80: dropped.)
WGRAD_CONFIGS = [
    _config(128, 64, 32, 4, 3),
    _config(64, 128, 32, 4, 3),
    _config(64, 64, 32, 4, 4),
]
# TF32 operands take 4 bytes: tiles above this spill (on sm_80, and the forward on sm_90).
TF32_MAX_TILE = 128 * 64

# Exact fp32 (input_precision="ieee") has no tensor-core instruction: tl.dot becomes FMAs with the
# accumulator and operands in registers, so the tiles are smaller (the tensor-core lists spill
# up to 6 KiB there).
FWD_FP32_CONFIGS = [
    _config(64, 64, 16, 4, 2),
    _config(64, 64, 16, 4, 3),
    _config(128, 64, 16, 4, 2),
    _config(64, 128, 16, 4, 2),
]
# (64x64x16 with 3 stages spilled 8 bytes on sm_90 with Triton 3.9 at conv2-5: dropped.)
DGRAD_FP32_CONFIGS = [
    _config(64, 64, 16, 4, 2),
    _config(32, 64, 32, 4, 2),
    _config(32, 32, 32, 4, 3),
]
WGRAD_FP32_CONFIGS = [
    _config(64, 64, 16, 4, 2),
    _config(64, 64, 16, 4, 3),
    _config(32, 64, 32, 4, 2),
    _config(32, 32, 32, 4, 3),
]

# Fewer input channels per group than one 16-wide MMA K step (conv1's 3): every element of the
# gathered x tile (forward and weight gradient) decodes its own tap and loads one scalar, so
# addresses and masks need several times the registers of conv2-5 and the tiles above spill
# (0.1-2.4 KB). The autotuner gets these instead (fp32: smaller still, TF32: at most 64x64).
SMALL_CIN = 16
FWD_SMALL_CIN_CONFIGS = [
    _config(64, 128, 32, 4, 3),
    _config(64, 64, 32, 4, 4),
    _config(64, 64, 16, 4, 3),
    _config(32, 64, 32, 4, 3),
]
# (128x64x32 sat at 255 registers with Triton 3.8/3.9 and spills 44 B with 3.7 on sm_90: dropped.)
WGRAD_SMALL_CIN_CONFIGS = [
    _config(64, 64, 64, 4, 3),
    _config(64, 32, 32, 4, 3),
    _config(32, 64, 32, 4, 3),
]
TF32_SMALL_CIN_MAX_TILE = 64 * 64
# and BLOCK_K at most 32: Triton 3.6 spills conv1's TF32 wgrad at 64x64x64 on sm_80 (12 B).
TF32_SMALL_CIN_MAX_K = 32
FWD_SMALL_CIN_FP32_CONFIGS = [
    _config(64, 32, 16, 4, 3),
    _config(32, 64, 16, 4, 3),
    _config(32, 32, 32, 4, 3),
]
WGRAD_SMALL_CIN_FP32_CONFIGS = [
    _config(32, 32, 16, 4, 3),
    _config(32, 32, 32, 4, 3),
    _config(32, 32, 32, 4, 2),
]


def _tile(c: triton.Config) -> tuple:
    return (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps,
            c.num_stages)


def _union(*lists: list[triton.Config]) -> list[triton.Config]:
    out = {}
    for c in (c for configs in lists for c in configs):
        out.setdefault(_tile(c), c)
    return list(out.values())


def _make_pruner(regular: list[triton.Config], small_cin: list[triton.Config] | None):
    """The autotuner's early_config_prune for one kernel and path: by shape (``CG_IN``) and
    precision, keep the configs that compile without register spills (see ``aot_specs``)."""
    regular_tiles = {_tile(c) for c in regular}
    small_tiles = {_tile(c) for c in (small_cin if small_cin is not None else regular)}

    def prune(configs, named_args, **kwargs):
        small = kwargs["CG_IN"] < SMALL_CIN
        tiles = small_tiles if small else regular_tiles
        max_tile = TF32_SMALL_CIN_MAX_TILE if small and small_cin is not None else TF32_MAX_TILE
        max_k = TF32_SMALL_CIN_MAX_K if small and small_cin is not None else float("inf")
        if kwargs["INPUT_PRECISION"] != "tf32":
            max_tile = max_k = float("inf")
        return [c for c in configs if _tile(c) in tiles
                and c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= max_tile
                and c.kwargs["BLOCK_K"] <= max_k]

    return prune


# kernel -> path -> (every config the autotuner holds, its pruner). dgrad's x side is its GEMM
# N (C_in), not a gather, so it keeps one list for every shape.
_TUNING = {
    kernel: {
        path: (_union(regular, small or []), _make_pruner(regular, small))
        for path, regular, small in lists
    }
    for kernel, lists in {
        "fwd": [("mma", FWD_CONFIGS, FWD_SMALL_CIN_CONFIGS),
                ("fma", FWD_FP32_CONFIGS, FWD_SMALL_CIN_FP32_CONFIGS)],
        "dgrad": [("mma", DGRAD_CONFIGS, None), ("fma", DGRAD_FP32_CONFIGS, None)],
        "wgrad": [("mma", WGRAD_CONFIGS, WGRAD_SMALL_CIN_CONFIGS),
                  ("fma", WGRAD_FP32_CONFIGS, WGRAD_SMALL_CIN_FP32_CONFIGS)],
    }.items()
}
# The interpreter runs one program at a time with numpy: one small config (tl.dot needs 16).
INTERPRET_CONFIG = _config(32, 16, 16, 4, 1)


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _conv_fwd_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, y_ptr,
    # sizes; channels per group are constexpr (fixed per layer, and folding them into the K
    # decoding keeps conv1's C_in=3 gathers from spilling registers)
    N, CG_IN: tl.constexpr, H, W, CG_OUT: tl.constexpr, OH, OW,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_yn, stride_yc, stride_yh, stride_yw,
    # op parameters
    KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr, PAD_W: tl.constexpr, HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    # tiling
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # (N, C_in, H, W) x (C_out, C_in/g, KH, KW) -> relu(conv + bias) (N, C_out, OH, OW)
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    M = N * OH * OW
    K = KH * KW * CG_IN

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < CG_OUT
    # GEMM row -> output pixel (n, oh, ow); its window starts at (ih0, iw0)
    ow = offs_m % OW
    oh = (offs_m // OW) % OH
    n = offs_m // (OW * OH)
    ih0 = oh * STRIDE_H - PAD_H
    iw0 = ow * STRIDE_W - PAD_W
    x_rows = n * stride_xn + g * CG_IN * stride_xc + ih0 * stride_xh + iw0 * stride_xw
    co = g * CG_OUT + offs_n

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        # GEMM column -> tap (kh, kw, c), channel fastest. tl.dot needs K >= 16: conv1's
        # 3 channels x 121 taps are one flat K, padded to BLOCK_K by the mask.
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        c = offs_k % CG_IN
        kw = (offs_k // CG_IN) % KW
        kh = offs_k // (CG_IN * KW)
        ih = ih0[:, None] + kh[None, :]
        iw = iw0[:, None] + kw[None, :]
        a_mask = (mask_m[:, None] & mask_k[None, :]
                  & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))  # zero padding
        a_offs = x_rows[:, None] + (c * stride_xc + kh * stride_xh + kw * stride_xw)[None, :]
        a = tl.load(x_ptr + a_offs, mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K)
        b_offs = (co[None, :] * stride_wo
                  + (c * stride_wc + kh * stride_wh + kw * stride_ww)[:, None])
        b = tl.load(w_ptr + b_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)  # (BLOCK_M, BLOCK_N) fp32

    # epilogue on the fp32 accumulator, before the down-cast
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    acc = tl.maximum(acc, 0.0)
    y_offs = (n * stride_yn + oh * stride_yh + ow * stride_yw)[:, None] + (co * stride_yc)[None, :]
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _conv_dgrad_kernel(
    # pointers
    dy_ptr, y_ptr, w_ptr, dx_ptr,
    # sizes; channels per group are constexpr (fixed per layer, and folding them into the K
    # decoding keeps conv1's C_in=3 gathers from spilling registers)
    N, CG_IN: tl.constexpr, H, W, CG_OUT: tl.constexpr, OH, OW,
    # strides (dy and y share one layout)
    stride_yn, stride_yc, stride_yh, stride_yw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # op parameters
    KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr, PAD_W: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    # tiling
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # dy (N, C_out, OH, OW), masked by y > 0, x weight -> dx (N, C_in, H, W)
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    M = N * H * W
    K = KH * KW * CG_OUT

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < CG_IN
    # GEMM row -> input pixel (n, h, w)
    iw = offs_m % W
    ih = (offs_m // W) % H
    n = offs_m // (W * H)
    dy_rows = n * stride_yn + g * CG_OUT * stride_yc
    c = g * CG_IN + offs_n

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        # GEMM column -> tap (kh, kw, co), output channel fastest
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        co = offs_k % CG_OUT
        kw = (offs_k // CG_OUT) % KW
        kh = offs_k // (CG_OUT * KW)
        # the tap reaches output row oh iff ih + pad - kh == oh * stride with 0 <= oh < OH
        oh_s = (ih + PAD_H)[:, None] - kh[None, :]
        ow_s = (iw + PAD_W)[:, None] - kw[None, :]
        oh = oh_s // STRIDE_H
        ow = ow_s // STRIDE_W
        a_mask = (mask_m[:, None] & mask_k[None, :]
                  & (oh_s >= 0) & (ow_s >= 0) & (oh < OH) & (ow < OW))
        if STRIDE_H > 1:
            a_mask = a_mask & (oh_s % STRIDE_H == 0)
        if STRIDE_W > 1:
            a_mask = a_mask & (ow_s % STRIDE_W == 0)
        a_offs = dy_rows[:, None] + co[None, :] * stride_yc + oh * stride_yh + ow * stride_yw
        dy = tl.load(dy_ptr + a_offs, mask=a_mask, other=0.0)
        y = tl.load(y_ptr + a_offs, mask=a_mask, other=0.0)
        a = tl.where(y <= 0, 0.0, dy).to(dy_ptr.dtype.element_ty)  # ReLU mask from saved y
        b_offs = ((g * CG_OUT + co) * stride_wo + kh * stride_wh + kw * stride_ww)[:, None] \
            + (offs_n * stride_wc)[None, :]  # weight channels count within the group
        b = tl.load(w_ptr + b_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    dx_offs = ((n * stride_dxn + ih * stride_dxh + iw * stride_dxw)[:, None]
               + (c * stride_dxc)[None, :])
    tl.store(dx_ptr + dx_offs, acc.to(dx_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _conv_wgrad_kernel(
    # pointers (dw_part: fp32 [SPLIT, DW_NUMEL], db_part: fp32 [SPLIT, C_OUT])
    x_ptr, dy_ptr, y_ptr, dw_part_ptr, db_part_ptr,
    # sizes (channels per group), pixels per split, partial strides
    N, CG_IN: tl.constexpr, H, W, CG_OUT: tl.constexpr, OH, OW, PIX_PER_SPLIT, DW_NUMEL, C_OUT,
    # strides (dy and y share one layout; dw_* is the weight gradient's layout)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_yn, stride_yc, stride_yh, stride_yw,
    stride_dwo, stride_dwc, stride_dwh, stride_dww,
    # op parameters
    KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr, PAD_W: tl.constexpr, HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    # tiling
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # x (N, C_in, H, W)^T x masked dy (N, C_out, OH, OW) -> partial dW (C_out, C_in/g, KH, KW)
    # for the pixels [split * PIX_PER_SPLIT, (split + 1) * PIX_PER_SPLIT)
    pid = tl.program_id(0)
    split = tl.program_id(1)
    g = tl.program_id(2)
    M = KH * KW * CG_IN
    P = N * OH * OW
    num_pid_m = tl.cdiv(M, BLOCK_M)
    pid_m = pid % num_pid_m
    pid_n = pid // num_pid_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < CG_OUT
    # GEMM row -> tap (kh, kw, c), channel fastest
    c = offs_m % CG_IN
    kw = (offs_m // CG_IN) % KW
    kh = offs_m // (CG_IN * KW)
    x_rows = (g * CG_IN + c) * stride_xc + kh * stride_xh + kw * stride_xw
    co = g * CG_OUT + offs_n

    p_lo = split * PIX_PER_SPLIT
    p_hi = tl.minimum(p_lo + PIX_PER_SPLIT, P)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for p0 in range(p_lo, p_hi, BLOCK_K):
        # GEMM K -> output pixel (n, oh, ow)
        offs_k = p0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < p_hi
        ow = offs_k % OW
        oh = (offs_k // OW) % OH
        n = offs_k // (OW * OH)
        ih = kh[:, None] + (oh * STRIDE_H - PAD_H)[None, :]
        iw = kw[:, None] + (ow * STRIDE_W - PAD_W)[None, :]
        a_mask = (mask_m[:, None] & mask_k[None, :]
                  & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))
        a_offs = x_rows[:, None] + (n * stride_xn + (oh * STRIDE_H - PAD_H) * stride_xh
                                    + (ow * STRIDE_W - PAD_W) * stride_xw)[None, :]
        a = tl.load(x_ptr + a_offs, mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K)
        b_offs = ((n * stride_yn + oh * stride_yh + ow * stride_yw)[:, None]
                  + (co * stride_yc)[None, :])
        b_mask = mask_k[:, None] & mask_n[None, :]
        dy = tl.load(dy_ptr + b_offs, mask=b_mask, other=0.0)
        y = tl.load(y_ptr + b_offs, mask=b_mask, other=0.0)
        b = tl.where(y <= 0, 0.0, dy).to(dy_ptr.dtype.element_ty)  # (BLOCK_K, BLOCK_N)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        if HAS_BIAS:
            db += tl.sum(b.to(tl.float32), axis=0)

    dw_offs = (split * DW_NUMEL + c * stride_dwc + kh * stride_dwh + kw * stride_dww)[:, None] \
        + (co * stride_dwo)[None, :]
    tl.store(dw_part_ptr + dw_offs, acc, mask=mask_m[:, None] & mask_n[None, :])
    if HAS_BIAS:
        # every row tile saw the same dy columns; the first one writes the bias partial
        tl.store(db_part_ptr + split * C_OUT + co, db, mask=mask_n & (co * 0 + pid_m == 0))  # a vector mask: Triton 3.9's interpreter rejects a scalar one


@triton.jit
def _split_sum_kernel(
    part_ptr, out_ptr,  # part: fp32 [SPLIT, NUMEL] -> out: [NUMEL] in out's dtype
    NUMEL, SPLIT,
    BLOCK: tl.constexpr,
):
    # deterministic second pass of the split-K: the splits are added in order 0..SPLIT-1
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(0, SPLIT):
        acc += tl.load(part_ptr + s * NUMEL + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


_SHAPE_KEY = ["N", "CG_IN", "H", "W", "CG_OUT", "OH", "OW",
              "KH", "KW", "STRIDE_H", "STRIDE_W", "PAD_H", "PAD_W"]


def _autotuned(fn, kernel: str, key: list[str]) -> dict:
    """One autotuner per instruction path: "mma" (tensor cores) and "fma" (exact fp32). The
    interpreter gets its one config, unpruned."""
    return {
        path: triton.autotune(
            autotune_configs(configs, INTERPRET_CONFIG), key=key,
            prune_configs_by=None if INTERPRET else {"early_config_prune": prune},
        )(fn)
        for path, (configs, prune) in _TUNING[kernel].items()
    }


_conv_fwd = _autotuned(_conv_fwd_kernel, "fwd", _SHAPE_KEY + ["stride_xc", "HAS_BIAS"])
_conv_dgrad = _autotuned(_conv_dgrad_kernel, "dgrad", _SHAPE_KEY + ["stride_yc", "stride_wc"])
_conv_wgrad = _autotuned(_conv_wgrad_kernel, "wgrad",
                         _SHAPE_KEY + ["PIX_PER_SPLIT", "stride_xc", "HAS_BIAS"])


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """One call's shapes; channel counts are per group."""

    n: int
    cg_in: int
    h: int
    w: int
    cg_out: int
    oh: int
    ow: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]  # top/left padding (bottom/right follow from oh, ow)
    groups: int

    def sizes(self) -> dict:
        return dict(N=self.n, CG_IN=self.cg_in, H=self.h, W=self.w,
                    CG_OUT=self.cg_out, OH=self.oh, OW=self.ow)

    def op_params(self) -> dict:
        return dict(KH=self.kh, KW=self.kw, STRIDE_H=self.stride[0], STRIDE_W=self.stride[1],
                    PAD_H=self.padding[0], PAD_W=self.padding[1])


def _check_args(x, weight, bias, stride, padding, dilation, groups) -> tuple[_Geometry, bool]:
    """Validate a conv2d_relu call; return its geometry and whether the input is unbatched."""
    check_tensor(x, "input")
    check_tensor(weight, "weight")
    if bias is not None:
        check_tensor(bias, "bias")
    check_same_device(input=x, weight=weight, bias=bias)
    check_same_dtype(input=x, weight=weight, bias=bias)
    if INTERPRET and x.dtype == torch.bfloat16:
        raise NotImplementedError(
            f"input.dtype={x.dtype} is not supported under TRITON_INTERPRET=1: the interpreter's "
            "tl.dot multiplies the raw bits of bfloat16 (triton#11584); use float32/float16 "
            "or a GPU"
        )
    if x.dim() not in (3, 4):
        raise ValueError(f"input must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(
            f"weight must be (C_out, C_in/groups, KH, KW), got shape {tuple(weight.shape)}"
        )
    if any(s <= 0 for s in weight.shape):
        raise ValueError(f"weight must have positive sizes, got shape {tuple(weight.shape)}")
    if pair(dilation, "dilation") != (1, 1):
        raise NotImplementedError(f"dilation={dilation!r} is not supported; only dilation=1")
    sh, sw = pair(stride, "stride")
    if sh <= 0 or sw <= 0:
        raise ValueError(f"stride must be positive, got {stride!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
        raise ValueError(f"groups must be a positive int, got {groups!r}")

    unbatched = x.dim() == 3
    n, c_in, h, w = (1, *x.shape) if unbatched else x.shape
    c_out, cg_in, kh, kw = weight.shape
    if c_in == 0:
        raise ValueError(f"input must have at least one channel, got shape {tuple(x.shape)}")
    if c_in % groups or c_out % groups:
        raise ValueError(
            f"groups={groups} must divide in_channels={c_in} and out_channels={c_out}"
        )
    if cg_in * groups != c_in:
        raise ValueError(
            f"weight shape {tuple(weight.shape)} expects {cg_in * groups} input channels "
            f"with groups={groups}, but input has {c_in} (shape {tuple(x.shape)})"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")

    if isinstance(padding, str):
        if padding == "valid":
            ph = pw = 0
            oh, ow = h - kh + 1, w - kw + 1
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride!r}")
            ph, pw = (kh - 1) // 2, (kw - 1) // 2  # torch puts the odd extra row bottom/right
            oh, ow = h, w
        else:
            raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
    else:
        ph, pw = pair(padding, "padding")
        if ph < 0 or pw < 0:
            raise ValueError(f"padding must be non-negative, got {padding!r}")
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(
            f"output size would be {oh}x{ow} for input {h}x{w}, kernel {kh}x{kw}, "
            f"stride {(sh, sw)}, padding {padding!r}"
        )
    for name, numel in (("input", x.numel()), ("output", n * c_out * oh * ow)):
        if numel >= 2**31:
            raise NotImplementedError(
                f"{name} would hold {numel} elements; the kernels index with int32, "
                "split the batch below 2**31 elements"
            )
    geo = _Geometry(n, cg_in, h, w, c_out // groups, oh, ow, kh, kw, (sh, sw), (ph, pw), groups)
    return geo, unbatched


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is stored that way (and not also plain contiguous), else NCHW."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _input_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"  # exact fp32; fp16/bf16 products are exact in fp32 anyway


def _path(dtype: torch.dtype) -> str:
    return "fma" if dtype == torch.float32 and _input_precision(dtype) == "ieee" else "mma"


def _strides(prefix: str, t: torch.Tensor, dims: str = "nchw") -> dict:
    return {f"stride_{prefix}{d}": s for d, s in zip(dims, t.stride())}


def _fwd_args(x, weight, bias, y, geo: _Geometry) -> tuple[dict, dict]:
    """Runtime arguments and op constexprs of _conv_fwd_kernel, in signature order."""
    args = dict(x_ptr=x, w_ptr=weight, b_ptr=weight if bias is None else bias, y_ptr=y,
                **geo.sizes(), **_strides("x", x), **_strides("w", weight, "ochw"),
                **_strides("y", y))
    consts = dict(**geo.op_params(), HAS_BIAS=bias is not None,
                  INPUT_PRECISION=_input_precision(x.dtype))
    return args, consts


def _dgrad_args(dy, y, weight, dx, geo: _Geometry) -> tuple[dict, dict]:
    args = dict(dy_ptr=dy, y_ptr=y, w_ptr=weight, dx_ptr=dx, **geo.sizes(), **_strides("y", y),
                **_strides("w", weight, "ochw"), **_strides("dx", dx))
    consts = dict(**geo.op_params(), INPUT_PRECISION=_input_precision(dy.dtype))
    return args, consts


def _wgrad_args(x, dy, y, dw, dw_part, db_part, has_bias, pix_per_split, geo) -> tuple[dict, dict]:
    args = dict(x_ptr=x, dy_ptr=dy, y_ptr=y, dw_part_ptr=dw_part, db_part_ptr=db_part,
                **geo.sizes(), PIX_PER_SPLIT=pix_per_split, DW_NUMEL=dw.numel(),
                C_OUT=geo.cg_out * geo.groups, **_strides("x", x), **_strides("y", y),
                **_strides("dw", dw, "ochw"))
    consts = dict(**geo.op_params(), HAS_BIAS=has_bias, INPUT_PRECISION=_input_precision(x.dtype))
    return args, consts


def _conv_forward(x, weight, bias, geo: _Geometry) -> torch.Tensor:
    # (N, C_in, H, W) -> (N, C_out, OH, OW), in the input's memory format
    y = torch.empty((geo.n, geo.cg_out * geo.groups, geo.oh, geo.ow), dtype=x.dtype,
                    device=x.device, memory_format=_memory_format(x))
    if y.numel() == 0:
        return y
    args, consts = _fwd_args(x, weight, bias, y, geo)
    grid = lambda meta: (triton.cdiv(geo.n * geo.oh * geo.ow, meta["BLOCK_M"]),  # noqa: E731
                         triton.cdiv(geo.cg_out, meta["BLOCK_N"]), geo.groups)
    with device_context(x):
        _conv_fwd[_path(x.dtype)][grid](**args, **consts)
    return y


def _conv_input_grad(dy, y, weight, x, geo: _Geometry) -> torch.Tensor:
    # masked dy (N, C_out, OH, OW) -> dx (N, C_in, H, W), in the input's memory format
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    if dx.numel() == 0:  # H or W is 0 and padding alone made the output
        return dx
    args, consts = _dgrad_args(dy, y, weight, dx, geo)
    grid = lambda meta: (triton.cdiv(geo.n * geo.h * geo.w, meta["BLOCK_M"]),  # noqa: E731
                         triton.cdiv(geo.cg_in, meta["BLOCK_N"]), geo.groups)
    with device_context(x):
        _conv_dgrad[_path(x.dtype)][grid](**args, **consts)
    return dx


def _split_sum(part: torch.Tensor, out: torch.Tensor) -> None:
    """out (dense, any strides) <- sum over part's first axis, in storage order."""
    split, numel = part.shape
    _split_sum_kernel[(triton.cdiv(numel, _SUM_BLOCK),)](part, out, numel, split, BLOCK=_SUM_BLOCK)


def _conv_weight_grad(x, dy, y, weight, geo: _Geometry, has_bias: bool):
    # x (N, C_in, H, W), masked dy (N, C_out, OH, OW) -> dW like weight, db (C_out,) or None
    dw = torch.empty_like(weight)  # weight's strides when it is dense, else contiguous
    c_out = geo.cg_out * geo.groups
    pixels = geo.n * geo.oh * geo.ow
    pix_per_split = max(1, WGRAD_SPLIT_PIXELS)
    split = triton.cdiv(pixels, pix_per_split)
    if split * dw.numel() >= 2**31:
        raise NotImplementedError(
            f"weight-gradient partials would hold {split} x {dw.numel()} elements (int32 "
            f"indexing); raise kernels.conv2d_relu.WGRAD_SPLIT_PIXELS={WGRAD_SPLIT_PIXELS}"
        )
    # fp32 partials, one row per split, in dW's storage order
    dw_part = torch.empty((split, dw.numel()), dtype=torch.float32, device=x.device)
    db_part = (torch.empty((split, c_out), dtype=torch.float32, device=x.device)
               if has_bias else dw_part)  # unused without bias
    args, consts = _wgrad_args(x, dy, y, dw, dw_part, db_part, has_bias, pix_per_split, geo)
    grid = lambda meta: (triton.cdiv(geo.kh * geo.kw * geo.cg_in, meta["BLOCK_M"])  # noqa: E731
                         * triton.cdiv(geo.cg_out, meta["BLOCK_N"]), split, geo.groups)
    db = torch.empty((c_out,), dtype=x.dtype, device=x.device) if has_bias else None
    with device_context(x):
        _conv_wgrad[_path(x.dtype)][grid](**args, **consts)
        _split_sum(dw_part, dw)
        if has_bias:
            _split_sum(db_part, db)
    return dw, db


# ----------------------------------------------------------------------------------------------
# Autograd
# ----------------------------------------------------------------------------------------------


class _Conv2dReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geo: _Geometry):
        y = _conv_forward(x, weight, bias, geo)
        ctx.save_for_backward(x, weight, y)
        ctx.geo = geo
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        x, weight, y = ctx.saved_tensors
        geo = ctx.geo
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if dy.stride() != y.stride():  # the kernels read dy with y's strides
            dy = torch.empty_like(y).copy_(dy)
        dx = dw = db = None
        if geo.n == 0:  # empty batch: nothing to launch, sums over no pixels are zero
            dx = torch.empty_like(x) if need_x else None
            dw = torch.zeros_like(weight) if need_w else None
            if need_b:
                db = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
            return dx, dw, db, None
        if need_x:
            dx = _conv_input_grad(dy, y, weight, x, geo)
        if need_w or need_b:
            dw, db = _conv_weight_grad(x, dy, y, weight, geo, has_bias=need_b)
        return dx, dw if need_w else None, db, None


# ----------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------


def conv2d_relu(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.relu(F.conv2d(input, weight, bias, stride, padding, dilation, groups))`` in Triton.

    input (N, C_in, H, W) or (C_in, H, W); weight (C_out, C_in/groups, KH, KW); bias (C_out,).
    Returns (N, C_out, OH, OW) (or (C_out, OH, OW)) in input's dtype, channels_last when the
    input is channels_last. Differentiable (Triton backward). Fast layout: channels_last.
    padding may be an int, a pair, 'valid' or 'same'; dilation must be 1.
    """
    geo, unbatched = _check_args(input, weight, bias, stride, padding, dilation, groups)
    x = input.unsqueeze(0) if unbatched else input
    y = _Conv2dReLU.apply(x, weight, bias, geo)
    return y.squeeze(0) if unbatched else y


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compile specs
# ----------------------------------------------------------------------------------------------


def _triton_arg(value) -> tuple[str, bool]:
    """(type string, divisible by 16) as the JIT specialises a launch argument."""
    if isinstance(value, torch.Tensor):
        return "*" + TORCH_TO_TRITON[value.dtype], True  # torch allocations are 16-byte aligned
    if isinstance(value, bool):
        return "constexpr", False
    if value == 1:
        return "constexpr", False  # the JIT turns ints equal to 1 into constants
    kind = "i32" if -(2**31) <= value < 2**31 else "i64"
    return kind, value % 16 == 0


def _spec(name, fn, args: dict, consts: dict, config: triton.Config, uses_dot: bool) -> KernelSpec:
    signature, constexprs, divisible = {}, {}, []
    params = inspect.signature(fn.fn).parameters  # fn.fn: the Python function, JIT or interpreted
    declared = {name for name, p in params.items() if p.annotation in (tl.constexpr, "tl.constexpr")}
    for arg, value in args.items():
        kind, div = ("constexpr", False) if arg in declared else _triton_arg(value)
        signature[arg] = kind
        if kind == "constexpr":
            constexprs[arg] = value
        elif div:
            divisible.append(arg)
    for arg, value in {**consts, **config.kwargs}.items():
        signature[arg] = "constexpr"
        constexprs[arg] = value
    order = fn.arg_names
    if sorted(signature) != sorted(order):
        raise AssertionError(f"{name}: spec arguments {list(signature)} != kernel's {order}")
    signature = {arg: signature[arg] for arg in order}
    return KernelSpec(
        name=name, fn=fn, signature=signature, constexprs=constexprs, divisible=tuple(divisible),
        num_warps=config.num_warps, num_stages=config.num_stages, uses_dot=uses_dot,
    )


# AlexNet's convolutions (Krizhevsky et al. 2012, torchvision's channel counts) at batch 128:
# name -> (input NCHW, weight, stride, padding, groups, input needs a gradient)
ALEXNET_CONVS = {
    "conv1": ((128, 3, 224, 224), (96, 3, 11, 11), 4, 2, 1, False),
    "conv2": ((128, 96, 27, 27), (256, 48, 5, 5), 1, 2, 2, True),
    "conv3": ((128, 256, 13, 13), (384, 256, 3, 3), 1, 1, 1, True),
    "conv4": ((128, 384, 13, 13), (384, 192, 3, 3), 1, 1, 2, True),
    "conv5": ((128, 384, 13, 13), (256, 192, 3, 3), 1, 1, 2, True),
}


def aot_specs(layers: tuple[str, ...] = tuple(ALEXNET_CONVS)) -> list[KernelSpec]:
    """Every kernel x GPU config x dtype for the named AlexNet convolutions (``ALEXNET_CONVS``),
    channels_last, with the arguments the launchers would pass (built on meta tensors).

    Only the configs the autotuner keeps for that shape and precision are emitted (the same
    pruner), so what is compiled here is what runs. fp32 comes twice: exact ("ieee", FMA configs,
    no tensor cores, so ``uses_dot=False``) and with TF32 allowed ("tf32", tensor-core configs).
    conv1's dgrad is left out: the image needs no gradient.
    """
    unknown = [name for name in layers if name not in ALEXNET_CONVS]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; choose from {list(ALEXNET_CONVS)}")
    variants = [  # (dtype, input precision, label)
        (torch.float32, "ieee", "fp32"),
        (torch.float32, "tf32", "fp32-tf32"),
        (torch.float16, "ieee", "fp16"),
        (torch.bfloat16, "ieee", "bf16"),
    ]
    specs = []
    for layer in layers:
        x_shape, w_shape, stride, padding, groups, x_grad = ALEXNET_CONVS[layer]
        n, c_in, h, w_ = x_shape
        c_out, cg_in, kh, kw = w_shape
        oh, ow = (h + 2 * padding - kh) // stride + 1, (w_ + 2 * padding - kw) // stride + 1
        geo = _Geometry(n, cg_in, h, w_, c_out // groups, oh, ow, kh, kw, (stride, stride),
                        (padding, padding), groups)
        split = triton.cdiv(n * oh * ow, WGRAD_SPLIT_PIXELS)
        for dtype, precision, label in variants:
            def empty(*shape, fmt=torch.channels_last, dt=dtype):
                return torch.empty(shape, dtype=dt, device="meta", memory_format=fmt)

            x, w, y = empty(*x_shape), empty(*w_shape), empty(n, c_out, oh, ow)
            b = empty(c_out, fmt=torch.contiguous_format)
            dw_part = empty(split, w.numel(), fmt=torch.contiguous_format, dt=torch.float32)
            db_part = empty(split, c_out, fmt=torch.contiguous_format, dt=torch.float32)
            tensor_cores = precision == "tf32" or dtype != torch.float32
            kernels = [
                ("fwd", _conv_fwd_kernel, _fwd_args(x, w, b, y, geo)),
                ("dgrad", _conv_dgrad_kernel, _dgrad_args(y, y, w, x, geo)),
                ("wgrad", _conv_wgrad_kernel,
                 _wgrad_args(x, y, y, w, dw_part, db_part, True, WGRAD_SPLIT_PIXELS, geo)),
            ]
            for kname, fn, (args, consts) in kernels:
                if kname == "dgrad" and not x_grad:
                    continue
                consts = {**consts, "INPUT_PRECISION": precision}
                configs, prune = _TUNING[kname]["mma" if tensor_cores else "fma"]
                for cfg in prune(configs, {}, **args, **consts):
                    kw_ = cfg.kwargs
                    tag = (f"BM={kw_['BLOCK_M']} BN={kw_['BLOCK_N']} BK={kw_['BLOCK_K']} "
                           f"w{cfg.num_warps} s{cfg.num_stages}")
                    specs.append(_spec(f"conv2d_relu_{kname}[{layer}, {tag}, {label}]", fn, args,
                                       consts, cfg, uses_dot=tensor_cores))
            if precision == "ieee":
                sum_args = dict(part_ptr=dw_part, out_ptr=w, NUMEL=w.numel(), SPLIT=split)
                sum_cfg = triton.Config({"BLOCK": _SUM_BLOCK}, num_warps=4, num_stages=1)
                specs.append(_spec(f"conv2d_relu_split_sum[{layer} dW, {label}]",
                                   _split_sum_kernel, sum_args, {}, sum_cfg, uses_dot=False))
    return specs
