"""2-D convolution + bias + ReLU, fused, forward and backward in Triton.

``conv2d_relu(input, weight, bias, stride, padding, dilation, groups)`` equals
``F.relu(F.conv2d(input, weight, bias, stride, padding, dilation, groups))``:

    input  (N, C_in, H, W) or unbatched (C_in, H, W); N = 0 gives an empty output
    weight (C_out, C_in / groups, KH, KW)
    bias   (C_out,) or None
    output (N, C_out, OH, OW) or (C_out, OH, OW),  OH = (H + 2 * pad_h - KH) // stride_h + 1

padding is an int, a pair, "valid" or "same" (stride 1; an even kernel puts the extra row
bottom/right, as torch does); dilation must be 1.

Kernels, all implicit GEMMs with an fp32 accumulator (fp64 for fp64; groups on grid axis 2):

- forward: M = N*OH*OW, N = C_out/g, K = KH*KW*C_in/g. Bias and ReLU are applied to the fp32
  accumulator before the down-cast and the store. The K index runs over (kh, kw, c) with the
  channel fastest, flattened, so a few input channels still fill a 16-wide K block.
- conv1's forward (groups = 1, C_in <= 4) has its own kernel: the input is packed once per call
  into a zero-bordered channels-last buffer (N, HP, WP, 4) (the padding becomes the border) and
  the weight into (C_out, KH, KWC), a window row of KW taps x 4 channels padded to KWC, a
  multiple of 16 (conv1: 44 -> 48). A K block is then 16 contiguous, 16-aligned elements of one
  input row with no bounds mask, so the loads vectorise to 16 bytes and pipeline through
  ``cp.async``; the padding taps are zeroed in registers (their weight is 0, but 0 * inf is NaN).
  BLOCK_N = 32 divides C_out = 96. Cost: one extra pass over the image (write 4/3 of it).
- ReLU mask (one elementwise pass, first in backward): g = dy masked by the saved output, and
  the bias gradient as fp32 partial sums over fixed pixel splits, summed in a fixed order by
  the split-sum kernel. Both GEMMs below read g alone, never the output. The mask is torch's
  ``threshold_backward``: the gradient is dropped where ``y <= 0`` and kept where y is NaN (not
  ``grad * (y > 0)``).
- input gradient (dgrad): M = N*H*W, N = C_in/g, K = KH*KW*C_out/g, a gather: for input pixel h
  and tap kh the output row is (h + pad - kh) / stride when that divides evenly and is in range.
  No atomics, no zero-inserted copy of the gradient. Skipped when the input needs no gradient
  (conv1's image).
- weight gradient (wgrad): M = KH*KW*C_in/g, N = C_out/g, K = N*OH*OW, with a deterministic
  split-K: each split of output pixels writes an fp32 partial [SPLIT, C_out, C_in/g, KH, KW]; a
  second Triton kernel sums the partials in a fixed order. The split count comes from the GPU's
  SM count and the shape (``WGRAD_WAVES`` waves of programs with the largest tile; 132 SMs
  assumed under the interpreter): at batch 128 on 132 SMs conv1-5 get 88, 14, 5, 5, 10 splits.
  For a given GPU and shape the result is bit-identical run to run.

NaN and inf as in PyTorch: the fused ReLU keeps NaN (``relu(NaN) = NaN``, ``inf - inf = NaN``),
and padding taps multiply as zeros (``0 * inf = NaN``, as torch's float64 convolution). One
exception is handled off the fast path: when the weight holds inf or NaN (a diverged run), the
dgrad GEMM would multiply it by the zeros that stand for taps reaching no output, which torch
never forms, so the input gradient then takes a slower exact route (``_conv_input_grad_
nonfinite``: the kernel on the finite weights plus counts of the non-finite products). Every
backward with an input gradient checks the weight for that on the host (one device sync),
except while a CUDA graph is being captured (no sync is allowed there): under CUDA graphs an
inf/NaN weight gives NaN in the input gradient also at border pixels torch leaves finite.

Layout: every kernel takes strides, so contiguous NCHW, channels_last, strided, offset and
0-stride (expanded) views of the input, weight and output gradient all work without a copy;
the bias is made contiguous (C_out elements), and an output gradient whose strides differ from
the output's is copied into the output's layout. **channels_last is the fast layout** (input,
weight and output gradient, i.e. ``model.to(memory_format=torch.channels_last)``): the K index
has the channel fastest, so with unit channel stride (which the JIT specialises to a constant)
and 16-divisible channel counts the loads along K are contiguous and vectorise. NCHW inputs
gather with stride H*W along K. The output takes channels_last when the input is
channels_last, else contiguous NCHW.

Precision follows PyTorch's: fp32, fp16, bf16 and fp64 in, the same dtype out. fp32 runs on
TF32 tensor cores exactly when cuDNN would (``torch.backends.cudnn.allow_tf32``, True by
default; ``torch.backends.cudnn.conv.fp32_precision`` on torch >= 2.9), else exact IEEE FMAs.
Under ``torch.autocast`` (CUDA, or CPU under the interpreter) the floating inputs are cast to
the autocast dtype (bf16 or fp16; fp64 is left alone, as torch does) and the output has that
dtype; gradients flow back through the casts. fp64 accumulates in fp64 without tensor cores,
for ``torch.autograd.gradcheck`` (its wgrad tile spills a few bytes on sm_90: not a fast path).

torch.compile: the forward and backward are ``torch.library`` custom operators
(``torch.ops.lightning_alexnet.conv2d_relu`` and ``conv2d_relu_backward``) with fake
implementations, an autograd formula and an autocast rule, so ``torch.compile`` traces a model
that calls them without graph breaks (tested with the eager and aot_eager backends).

Indices are int32: the memory span each view reaches (not only its element count), the output
and the input gradient must stay below 2**31 elements; beyond, a ValueError.

Speed, honestly: Triton convolutions usually do not beat cuDNN on NVIDIA GPUs (PyTorch Inductor
keeps its Triton conv templates off on CUDA for that reason). The value here is the fused
epilogue, the Triton backward and a kernel one can read and change. dgrad with stride s > 1
wastes about 1 - 1/s^2 of its K loop on masked taps (only conv1 has stride 4, and it needs no
dgrad). Exact fp32 has no tensor-core instruction: ``tl.dot`` becomes FMAs with smaller tiles,
several times slower than fp16/bf16 or TF32 (cuDNN's exact fp32 pays the same). Not yet run on
a GPU here: every autotune config the pruner keeps was compiled ahead of time for sm_80 and
sm_90 at all five AlexNet convolution shapes (see ``aot_specs``); none has been timed. A few
configs outside ``pytest tests/test_compile.py``'s default set spill 4-12 bytes: on sm_80 with
TF32, dgrad 64x64x64 (conv3, conv4) and wgrad 128x64x32 (conv3); on sm_90, exact-fp32 dgrad
64x64x16 with 3 stages (conv3, conv5). ``python -m kernels.compile_report`` lists them. conv1's forward runs its packed kernel (16-byte ``cp.async``, pipelined);
its weight gradient still gathers 3-channel taps with scalar loads and smaller tiles
(``SMALL_CIN``), as does the generic forward when the packed copy would pass 2**31 elements.
The backward's ReLU-mask pass reads dy and y and writes g once (about 3 activation-sized
transfers), so dgrad and wgrad each read one gradient tensor instead of two.

Refused, with a clear error (exactly these):

- NotImplementedError: dilation != 1; double backward (differentiating the gradient again);
  a dtype other than float32/float16/bfloat16/float64; bfloat16 under the interpreter (its
  ``tl.dot`` multiplies the raw bf16 bits); a device other than CUDA or CPU.
- RuntimeError: a CPU tensor without ``TRITON_INTERPRET=1``, or a CUDA tensor with it.
- ValueError: tensors on different devices or of different dtypes (after autocast); input not
  3-D/4-D, weight not 4-D or with a zero size, an input with no channels; bias not (C_out,);
  groups not a positive int dividing both channel counts; channels not matching the weight;
  stride not positive; padding negative, an unknown string, or 'same' with stride > 1; an
  empty output (OH or OW <= 0); a view spanning, or an output/input gradient holding,
  2**31 elements or more; weight-gradient partials of 2**31 elements or more.
- TypeError: an input, weight or bias that is not a tensor.

When only the bias needs a gradient, only the ReLU-mask pass runs (it produces the bias sum).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from kernels._common import (
    INT32_SPAN_LIMIT,
    INTERPRET,
    TORCH_TO_TRITON,
    KernelSpec,
    autotune_configs,
    check_int32_span,
    check_same_device,
    check_same_dtype,
    check_tensor_or_float64,
    device_context,
    pair,
)

# Weight-gradient split-K: the output pixels (GEMM K) are cut into splits so that the wgrad grid
# fills WGRAD_WAVES waves of the GPU's SMs even with the largest tile (conv3-5 at batch 128 have
# only 21,632 pixels but 28-54 tiles per split), each split at least WGRAD_MIN_SPLIT_PIXELS long.
# WGRAD_SPLIT_PIXELS, when set, fixes the pixels per split instead (tests shrink it to exercise
# several splits on tiny shapes).
WGRAD_SPLIT_PIXELS: int | None = None
WGRAD_WAVES = 2
WGRAD_MIN_SPLIT_PIXELS = 256
# SMs assumed where none is queried: the interpreter, and the AOT specs (an H100 SXM's 132).
ASSUMED_SMS = 132

# The backward's ReLU-mask pass (_relu_grad_kernel): a (pixels x channels) tile per step, and
# enough pixel splits for RELU_GRAD_WAVES programs per SM (it is bandwidth-bound).
RELU_GRAD_BLOCK_P = 64
RELU_GRAD_BLOCK_C = 32  # divides AlexNet's 96, 256 and 384 output channels
RELU_GRAD_WAVES = 4
_RELU_GRAD_LAUNCH = triton.Config({}, num_warps=4, num_stages=1)

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

# conv1's own forward (_conv_fwd_packed_kernel, C_in <= PACKED_CIN): the input packed into a
# zero-bordered (N, HP, WP, 4) buffer, so a K block is 16 contiguous, 16-aligned elements of one
# input row and needs no bounds mask: the loads vectorise and pipeline. BLOCK_K = 16 divides a
# row's 12 taps x 4 channels; BLOCK_N = 32 divides C_out = 96 (no wasted N), with the N tiles of
# one M tile launched next to each other so they share its input rows in L2.
PACKED_CIN = 4
FWD_PACKED_CONFIGS = [
    _config(128, 32, 16, 4, 4),
    _config(256, 32, 16, 4, 4),
    _config(128, 32, 16, 4, 3),
    _config(64, 32, 16, 4, 4),
]
FWD_PACKED_FP32_CONFIGS = [
    _config(64, 32, 16, 4, 2),
    _config(128, 32, 16, 4, 2),
    _config(32, 32, 16, 4, 3),
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

    if x_ptr.dtype.element_ty == tl.float64:  # fp64 accumulates in fp64 (gradcheck)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
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

    # epilogue on the fp32 accumulator, before the down-cast (the launcher passes a contiguous
    # bias). ReLU as torch's: NaN stays NaN (tl.maximum's default maxNum would drop it)
    if HAS_BIAS:
        acc += tl.load(b_ptr + co, mask=mask_n, other=0.0).to(acc.dtype)[None, :]
    acc = tl.where(acc < 0, 0.0, acc)
    y_offs = (n * stride_yn + oh * stride_yh + ow * stride_yw)[:, None] + (co * stride_yc)[None, :]
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _conv_fwd_packed_kernel(
    # pointers (xp: the packed input, see _pack_input; wp: the packed weight (C_out, KH * KWC))
    xp_ptr, wp_ptr, b_ptr, y_ptr,
    # sizes
    N, OH, OW, C_OUT: tl.constexpr,
    # strides (xp is contiguous (N, HP, WP, CP): its pixel and channel strides are CP and 1)
    stride_xpn, stride_xph,
    stride_yn, stride_yc, stride_yh, stride_yw,
    # op parameters: KWC = a row of taps x CP channels, padded to a multiple of BLOCK_K;
    # KW_CP = the real KW * CP of it (the rest are padding taps)
    KH: tl.constexpr, KWC: tl.constexpr, KW_CP: tl.constexpr, CP: tl.constexpr,
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr, HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    # tiling
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # packed x (N, HP, WP, CP) x packed w (C_out, KH, KWC) -> relu(conv + bias) (N, C_out, OH, OW)
    # 1-D grid, N tiles fastest: the C_out / BLOCK_N programs of one M tile run together
    num_pid_n: tl.constexpr = (C_OUT + BLOCK_N - 1) // BLOCK_N
    pid_m = tl.program_id(0) // num_pid_n
    pid_n = tl.program_id(0) % num_pid_n
    M = N * OH * OW

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < C_OUT
    # rows and channels past the end repeat valid ones (unmasked loads; the store masks them)
    m = offs_m % M
    co = offs_n % C_OUT
    ow = m % OW
    oh = (m // OW) % OH
    n = m // (OW * OH)
    # the window of output pixel (oh, ow) starts at packed (oh * STRIDE_H, ow * STRIDE_W): the
    # zero border stands for the padding
    x_rows = n * stride_xpn + oh * (STRIDE_H * stride_xph) + ow * (STRIDE_W * CP)
    w_rows = co * (KH * KWC)

    if xp_ptr.dtype.element_ty == tl.float64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, KH * KWC, BLOCK_K):
        # K = (kh, kw, c): BLOCK_K divides KWC, so a block stays in one row kh of the window
        kh = k0 // KWC
        offs_j = k0 - kh * KWC + tl.arange(0, BLOCK_K)  # (kw, c) within the row, contiguous
        a = tl.load(xp_ptr + x_rows[:, None] + (kh * stride_xph + offs_j)[None, :])
        if KW_CP < KWC:
            # padding taps read real pixels of the next window: their weight is 0, but
            # 0 * inf would be NaN, so they are zeroed here
            a = tl.where((offs_j < KW_CP)[None, :], a, 0.0)
        b = tl.load(wp_ptr + w_rows[None, :] + (k0 + tl.arange(0, BLOCK_K))[:, None])
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)  # (BLOCK_M, BLOCK_N)

    # epilogue as _conv_fwd_kernel's: bias and NaN-keeping ReLU on the accumulator
    if HAS_BIAS:
        acc += tl.load(b_ptr + co).to(acc.dtype)[None, :]
    acc = tl.where(acc < 0, 0.0, acc)
    y_offs = (n * stride_yn + oh * stride_yh + ow * stride_yw)[:, None] + (co * stride_yc)[None, :]
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _conv_dgrad_kernel(
    # pointers (g: the output gradient already masked by the ReLU, see _relu_grad_kernel)
    g_ptr, w_ptr, dx_ptr,
    # sizes; channels per group are constexpr (fixed per layer, and folding them into the K
    # decoding keeps conv1's C_in=3 gathers from spilling registers)
    N, CG_IN: tl.constexpr, H, W, CG_OUT: tl.constexpr, OH, OW,
    # strides
    stride_gn, stride_gc, stride_gh, stride_gw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # op parameters
    KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr, PAD_W: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    # tiling
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # masked dy (N, C_out, OH, OW) x weight -> dx (N, C_in, H, W)
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
    g_rows = n * stride_gn + g * CG_OUT * stride_gc
    c = g * CG_IN + offs_n

    if g_ptr.dtype.element_ty == tl.float64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
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
        a_offs = g_rows[:, None] + co[None, :] * stride_gc + oh * stride_gh + ow * stride_gw
        a = tl.load(g_ptr + a_offs, mask=a_mask, other=0.0)
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
    # pointers (g: the masked output gradient; dw_part: fp32 [SPLIT, DW_NUMEL], fp64 for fp64)
    x_ptr, g_ptr, dw_part_ptr,
    # sizes (channels per group), pixels per split, partial stride
    N, CG_IN: tl.constexpr, H, W, CG_OUT: tl.constexpr, OH, OW, PIX_PER_SPLIT, DW_NUMEL,
    # strides (dw_* is the weight gradient's layout)
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_gn, stride_gc, stride_gh, stride_gw,
    stride_dwo, stride_dwc, stride_dwh, stride_dww,
    # op parameters
    KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr, PAD_W: tl.constexpr, INPUT_PRECISION: tl.constexpr,
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
    if x_ptr.dtype.element_ty == tl.float64:  # the partials are fp64 too
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
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
        b_offs = ((n * stride_gn + oh * stride_gh + ow * stride_gw)[:, None]
                  + (co * stride_gc)[None, :])
        b = tl.load(g_ptr + b_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)  # b: (BLOCK_K, BLOCK_N)

    dw_offs = (split * DW_NUMEL + c * stride_dwc + kh * stride_dwh + kw * stride_dww)[:, None] \
        + (co * stride_dwo)[None, :]
    tl.store(dw_part_ptr + dw_offs, acc, mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _relu_grad_kernel(
    # pointers (db_part: fp32 [SPLIT, C], fp64 for fp64)
    dy_ptr, y_ptr, g_ptr, db_part_ptr,
    # sizes: C = all output channels, pixels per split
    N, C, OH, OW, PIX_PER_SPLIT,
    # strides (dy and y share one layout)
    stride_yn, stride_yc, stride_yh, stride_yw,
    stride_gn, stride_gc, stride_gh, stride_gw,
    # op parameters
    HAS_BIAS: tl.constexpr,
    # tiling
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    # dy, y (N, C, OH, OW) -> g = dy masked by the ReLU (N, C, OH, OW), and the bias gradient's
    # partial sum over the pixels [split * PIX_PER_SPLIT, (split + 1) * PIX_PER_SPLIT).
    # One pass, so neither GEMM of the backward reads y: torch's threshold_backward drops the
    # gradient where y <= 0 and keeps it where y is NaN (not ``dy * (y > 0)``).
    split = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    p_lo = split * PIX_PER_SPLIT
    p_hi = tl.minimum(p_lo + PIX_PER_SPLIT, N * OH * OW)
    if dy_ptr.dtype.element_ty == tl.float64:
        db = tl.zeros((BLOCK_C,), dtype=tl.float64)
    else:
        db = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        ow = offs_p % OW
        oh = (offs_p // OW) % OH
        n = offs_p // (OW * OH)
        mask = (offs_p < p_hi)[:, None] & mask_c[None, :]
        offs = (n * stride_yn + oh * stride_yh + ow * stride_yw)[:, None] \
            + (offs_c * stride_yc)[None, :]
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0)
        y = tl.load(y_ptr + offs, mask=mask, other=0.0)
        g = tl.where(y <= 0, 0.0, dy).to(dy_ptr.dtype.element_ty)  # (BLOCK_P, BLOCK_C)
        g_offs = (n * stride_gn + oh * stride_gh + ow * stride_gw)[:, None] \
            + (offs_c * stride_gc)[None, :]
        tl.store(g_ptr + g_offs, g, mask=mask)
        if HAS_BIAS:
            db += tl.sum(g.to(db.dtype), axis=0)
    if HAS_BIAS:
        tl.store(db_part_ptr + split * C + offs_c, db, mask=mask_c)


@triton.jit
def _split_sum_kernel(
    part_ptr, out_ptr,  # part: fp32 (fp64) [SPLIT, NUMEL] -> out: [NUMEL] in out's dtype
    NUMEL, SPLIT,
    BLOCK: tl.constexpr,
):
    # deterministic second pass of the split-K: the splits are added in order 0..SPLIT-1
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < NUMEL
    acc = tl.zeros((BLOCK,), dtype=part_ptr.dtype.element_ty)
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
_conv_fwd_packed = {
    path: triton.autotune(autotune_configs(configs, INTERPRET_CONFIG),
                          key=["N", "OH", "OW", "C_OUT", "stride_xpn", "stride_xph", "KH", "KWC",
                               "KW_CP", "STRIDE_H", "STRIDE_W", "HAS_BIAS"])(_conv_fwd_packed_kernel)
    for path, configs in (("mma", FWD_PACKED_CONFIGS), ("fma", FWD_PACKED_FP32_CONFIGS))
}
_conv_dgrad = _autotuned(_conv_dgrad_kernel, "dgrad", _SHAPE_KEY + ["stride_gc", "stride_wc"])
_conv_wgrad = _autotuned(_conv_wgrad_kernel, "wgrad", _SHAPE_KEY + ["PIX_PER_SPLIT", "stride_xc"])


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


def _check_args(x, weight, bias, stride, padding, dilation, groups):
    """Validate a conv2d_relu call (all but the dtypes, which autocast may still change: see
    ``_check_dtypes``). Return the stride pair, the padding as (top, bottom, left, right) and
    whether the input is unbatched."""
    check_tensor_or_float64(x, "input")
    check_tensor_or_float64(weight, "weight")
    if bias is not None:
        check_tensor_or_float64(bias, "bias")
    check_same_device(input=x, weight=weight, bias=bias)
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
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride!r}")
            # torch puts the odd extra row bottom/right
            pads = ((kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2)
        else:
            raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
    else:
        ph, pw = pair(padding, "padding")
        if ph < 0 or pw < 0:
            raise ValueError(f"padding must be non-negative, got {padding!r}")
        pads = (ph, ph, pw, pw)
    oh = (h + pads[0] + pads[1] - kh) // sh + 1
    ow = (w + pads[2] + pads[3] - kw) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(
            f"output size would be {oh}x{ow} for input {h}x{w}, kernel {kh}x{kw}, "
            f"stride {(sh, sw)}, padding {padding!r}"
        )
    # int32 offsets: the views read (by their span), and the dense tensors written
    check_int32_span(input=x, weight=weight)
    for name, numel in (("input gradient", x.numel()), ("output", n * c_out * oh * ow)):
        if numel >= INT32_SPAN_LIMIT:
            raise ValueError(
                f"the {name} would hold {numel} elements; the kernels index with int32 "
                "(< 2**31): split the batch"
            )
    return (sh, sw), pads, unbatched


def _check_dtypes(x, weight, bias) -> None:
    """The dtypes the kernels run in (after any autocast cast)."""
    check_same_dtype(input=x, weight=weight, bias=bias)
    if INTERPRET and x.dtype == torch.bfloat16:
        raise NotImplementedError(
            f"input.dtype={x.dtype} is not supported under TRITON_INTERPRET=1: the interpreter's "
            "tl.dot multiplies the raw bits of bfloat16 (triton#11584); use float32/float16 "
            "or a GPU"
        )


def _geometry(x: torch.Tensor, weight: torch.Tensor, stride, padding) -> _Geometry:
    """A checked batched call's geometry; padding is (top, bottom, left, right)."""
    n, c_in, h, w = x.shape
    c_out, cg_in, kh, kw = weight.shape
    top, bottom, left, right = padding
    oh = (h + top + bottom - kh) // stride[0] + 1
    ow = (w + left + right - kw) // stride[1] + 1
    groups = c_in // cg_in
    return _Geometry(n, cg_in, h, w, c_out // groups, oh, ow, kh, kw, (stride[0], stride[1]),
                     (top, left), groups)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is stored that way (and not also plain contiguous), else NCHW."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _conv_allows_tf32() -> bool:
    """Whether cuDNN would use TF32 for an fp32 convolution now (PyTorch's default: yes).

    torch >= 2.9 keeps it in ``torch.backends.cudnn.conv.fp32_precision`` ("none" defers to
    ``torch.backends.cudnn`` and then ``torch.backends``; the legacy flag
    ``torch.backends.cudnn.allow_tf32`` sets it too); older torch has the flag alone."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        return bool(torch.backends.cudnn.allow_tf32)
    for level in (conv, torch.backends.cudnn, torch.backends):
        precision = getattr(level, "fp32_precision", "none")
        if precision != "none":
            return precision == "tf32"
    return False


def _input_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and _conv_allows_tf32():
        return "tf32"
    return "ieee"  # exact fp32/fp64; fp16/bf16 products are exact in fp32 anyway


def _path(dtype: torch.dtype) -> str:
    """"mma" (tensor-core tiles) for fp16, bf16 and TF32; "fma" for exact fp32 and fp64."""
    if dtype in (torch.float16, torch.bfloat16) or _input_precision(dtype) == "tf32":
        return "mma"
    return "fma"


def _round_up(value: int, multiple: int) -> int:
    return triton.cdiv(value, multiple) * multiple


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


@dataclass(frozen=True)
class _Packing:
    """conv1's packed layout: input (N, HP, WP, CP) with the padding as a zero border, weight
    (C_out, KH, KWC); a row of the window is KWC = KW * CP elements padded to a multiple of 16
    (the smallest BLOCK_K), WP a multiple of 4 so every row starts 16-element aligned."""

    hp: int
    wp: int
    kwc: int
    cp: int = PACKED_CIN

    @staticmethod
    def of(geo: _Geometry) -> _Packing:
        kwc = _round_up(geo.kw * PACKED_CIN, 16)
        hp = (geo.oh - 1) * geo.stride[0] + geo.kh
        wp = _round_up((geo.ow - 1) * geo.stride[1] + kwc // PACKED_CIN, 4)
        return _Packing(hp, wp, kwc)

    def fits(self, geo: _Geometry) -> bool:
        """Whether conv1's path takes this call (it packs one group of at most CP channels)."""
        return (geo.groups == 1 and geo.cg_in <= self.cp
                and geo.n * self.hp * self.wp * self.cp < INT32_SPAN_LIMIT)


def _pack_input(x, geo: _Geometry, pk: _Packing) -> torch.Tensor:
    # (N, C_in <= 4, H, W) -> zeros (N, HP, WP, 4) with the image at (pad_top, pad_left); rows
    # and columns no window reaches are left out
    xp = x.new_zeros((geo.n, pk.hp, pk.wp, pk.cp))
    top, left = geo.padding
    rows, cols = min(geo.h, pk.hp - top), min(geo.w, pk.wp - left)
    if rows > 0 and cols > 0:
        xp[:, top:top + rows, left:left + cols, :geo.cg_in] = \
            x[:, :, :rows, :cols].permute(0, 2, 3, 1)
    return xp


def _pack_weight(weight, pk: _Packing) -> torch.Tensor:
    # (C_out, C_in, KH, KW) -> zeros (C_out, KH * KWC), tap (kh, kw, c) at kh * KWC + kw * 4 + c
    c_out, c_in, kh, kw = weight.shape
    wp = weight.new_zeros((c_out, kh, pk.kwc // pk.cp, pk.cp))
    wp[:, :, :kw, :c_in] = weight.permute(0, 2, 3, 1)
    return wp.reshape(c_out, kh * pk.kwc)


def _fwd_packed_args(xp, wp, bias, y, geo: _Geometry, pk: _Packing) -> tuple[dict, dict]:
    """Runtime arguments and op constexprs of _conv_fwd_packed_kernel, in signature order."""
    args = dict(xp_ptr=xp, wp_ptr=wp, b_ptr=wp if bias is None else bias, y_ptr=y, N=geo.n,
                OH=geo.oh, OW=geo.ow, C_OUT=geo.cg_out, stride_xpn=xp.stride(0),
                stride_xph=xp.stride(1), **_strides("y", y))
    consts = {"KH": geo.kh, "KWC": pk.kwc, "KW_CP": geo.kw * pk.cp, "CP": pk.cp,
              "STRIDE_H": geo.stride[0], "STRIDE_W": geo.stride[1], "HAS_BIAS": bias is not None,
              "INPUT_PRECISION": _input_precision(xp.dtype)}
    return args, consts


def _dgrad_args(g, weight, dx, geo: _Geometry) -> tuple[dict, dict]:
    args = dict(g_ptr=g, w_ptr=weight, dx_ptr=dx, **geo.sizes(), **_strides("g", g),
                **_strides("w", weight, "ochw"), **_strides("dx", dx))
    consts = dict(**geo.op_params(), INPUT_PRECISION=_input_precision(g.dtype))
    return args, consts


def _wgrad_args(x, g, dw, dw_part, pix_per_split, geo) -> tuple[dict, dict]:
    args = dict(x_ptr=x, g_ptr=g, dw_part_ptr=dw_part, **geo.sizes(),
                PIX_PER_SPLIT=pix_per_split, DW_NUMEL=dw.numel(), **_strides("x", x),
                **_strides("g", g), **_strides("dw", dw, "ochw"))
    consts = dict(**geo.op_params(), INPUT_PRECISION=_input_precision(x.dtype))
    return args, consts


def _relu_grad_args(dy, y, g, db_part, pix_per_split, has_bias) -> tuple[dict, dict]:
    n, c, oh, ow = y.shape
    args = dict(dy_ptr=dy, y_ptr=y, g_ptr=g, db_part_ptr=db_part, N=n, C=c, OH=oh, OW=ow,
                PIX_PER_SPLIT=pix_per_split, **_strides("y", y), **_strides("g", g))
    consts = {"HAS_BIAS": has_bias, "BLOCK_P": RELU_GRAD_BLOCK_P, "BLOCK_C": RELU_GRAD_BLOCK_C}
    return args, consts


def _new_output(x, geo: _Geometry) -> torch.Tensor:
    # (N, C_out, OH, OW), in the input's memory format
    return torch.empty((geo.n, geo.cg_out * geo.groups, geo.oh, geo.ow), dtype=x.dtype,
                       device=x.device, memory_format=_memory_format(x))


def _conv_forward(x, weight, bias, geo: _Geometry) -> torch.Tensor:
    # (N, C_in, H, W) -> (N, C_out, OH, OW); bias contiguous
    y = _new_output(x, geo)
    if y.numel() == 0:
        return y
    pk = _Packing.of(geo)
    if pk.fits(geo):  # conv1
        args, consts = _fwd_packed_args(_pack_input(x, geo, pk), _pack_weight(weight, pk), bias,
                                        y, geo, pk)
        def grid(meta):  # 1-D: M tiles x N tiles, N fastest
            return (triton.cdiv(geo.n * geo.oh * geo.ow, meta["BLOCK_M"])
                    * triton.cdiv(geo.cg_out, meta["BLOCK_N"]),)

        with device_context(x):
            _conv_fwd_packed[_path(x.dtype)][grid](**args, **consts)
        return y
    args, consts = _fwd_args(x, weight, bias, y, geo)
    grid = lambda meta: (triton.cdiv(geo.n * geo.oh * geo.ow, meta["BLOCK_M"]),  # noqa: E731
                         triton.cdiv(geo.cg_out, meta["BLOCK_N"]), geo.groups)
    with device_context(x):
        _conv_fwd[_path(x.dtype)][grid](**args, **consts)
    return y


def _conv_input_grad(g, weight, x, geo: _Geometry) -> torch.Tensor:
    # masked dy (N, C_out, OH, OW) -> dx (N, C_in, H, W), in the input's memory format
    if not _weight_is_finite(weight):
        return _conv_input_grad_nonfinite(g, weight, x, geo)
    return _dgrad(g, weight, x, geo)


def _weight_is_finite(weight: torch.Tensor) -> bool:
    # one host sync per backward; none is allowed while a CUDA graph is captured, so there
    # the check is skipped (documented: inf/NaN weights then give NaN at border pixels of dx)
    if weight.is_cuda and torch.cuda.is_current_stream_capturing():
        return True
    return bool(torch.isfinite(weight).all())


def _dgrad(g, weight, x, geo: _Geometry) -> torch.Tensor:
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    if dx.numel() == 0:  # H or W is 0 and padding alone made the output
        return dx
    args, consts = _dgrad_args(g, weight, dx, geo)
    grid = lambda meta: (triton.cdiv(geo.n * geo.h * geo.w, meta["BLOCK_M"]),  # noqa: E731
                         triton.cdiv(geo.cg_in, meta["BLOCK_N"]), geo.groups)
    with device_context(x):
        _conv_dgrad[_path(x.dtype)][grid](**args, **consts)
    return dx


def _conv_input_grad_nonfinite(masked, weight, x, geo: _Geometry) -> torch.Tensor:
    """dgrad for a weight that holds inf or NaN (a diverged run), as torch computes it.

    The dgrad GEMM gives a tap that reaches no output pixel (border, stride) a zero operand, and
    0 * inf = NaN, while torch only ever adds the taps that exist. So: the finite part of the
    weight through the kernel, plus, per input pixel, whether an existing tap multiplies a
    non-finite weight into NaN, +inf or -inf -- counted by the same kernel on 0/1 indicators
    (exact: a zero operand adds nothing), then combined as IEEE addition would."""
    every = torch.ones_like(masked)

    def reaches(taps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # input pixels with an existing tap where both indicators are set
        return _dgrad(taps.to(x.dtype), weights.to(weight.dtype), x, geo) > 0

    pos_w, neg_w, nan_w = weight == float("inf"), weight == float("-inf"), weight.isnan()
    pos_g, neg_g, zero_g = masked > 0, masked < 0, masked == 0
    nan = reaches(every, nan_w) | reaches(zero_g, pos_w | neg_w)  # NaN * w, 0 * inf
    up = reaches(pos_g, pos_w) | reaches(neg_g, neg_w)  # +inf terms
    down = reaches(neg_g, pos_w) | reaches(pos_g, neg_w)  # -inf terms
    extra = torch.where(up, float("inf"), 0.0) + torch.where(down, float("-inf"), 0.0)
    extra = torch.where(nan, float("nan"), extra).to(x.dtype)
    finite = torch.where(torch.isfinite(weight), weight, torch.zeros_like(weight))
    return _dgrad(masked, finite, x, geo).add_(extra)


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return ASSUMED_SMS
    return _cuda_sm_count(torch.cuda.current_device() if device.index is None else device.index)


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


# The largest wgrad tile any config has: the fewest programs per split, so the split count
# below fills the waves whichever config the autotuner picks.
_WGRAD_TILES = [c for configs, _ in _TUNING["wgrad"].values() for c in configs]
_WGRAD_MAX_M = max(c.kwargs["BLOCK_M"] for c in _WGRAD_TILES)
_WGRAD_MAX_N = max(c.kwargs["BLOCK_N"] for c in _WGRAD_TILES)
_WGRAD_MAX_K = max(c.kwargs["BLOCK_K"] for c in _WGRAD_TILES)


def _wgrad_pixels_per_split(geo: _Geometry, sms: int) -> int:
    """Output pixels per weight-gradient split (see WGRAD_WAVES). A multiple of the largest
    BLOCK_K, so only the last K block of the last split is ragged. At batch 128 on 132 SMs:
    conv1 88 splits, conv2 14, conv3 5, conv4 5, conv5 10 (>= 264 programs each)."""
    if WGRAD_SPLIT_PIXELS is not None:
        return max(1, WGRAD_SPLIT_PIXELS)
    pixels = geo.n * geo.oh * geo.ow
    tiles = (triton.cdiv(geo.kh * geo.kw * geo.cg_in, _WGRAD_MAX_M)
             * triton.cdiv(geo.cg_out, _WGRAD_MAX_N) * geo.groups)
    split = min(triton.cdiv(WGRAD_WAVES * sms, tiles), max(1, pixels // WGRAD_MIN_SPLIT_PIXELS))
    return _round_up(triton.cdiv(pixels, split), _WGRAD_MAX_K)


def _relu_grad_pixels_per_split(pixels: int, c_out: int, sms: int) -> int:
    """Output pixels per program of the ReLU-mask pass (see RELU_GRAD_WAVES)."""
    split = min(triton.cdiv(RELU_GRAD_WAVES * sms, triton.cdiv(c_out, RELU_GRAD_BLOCK_C)),
                triton.cdiv(pixels, RELU_GRAD_BLOCK_P))
    return _round_up(triton.cdiv(pixels, split), RELU_GRAD_BLOCK_P)


def _split_sum(part: torch.Tensor, out: torch.Tensor) -> None:
    """out (dense, any strides) <- sum over part's first axis, in storage order."""
    split, numel = part.shape
    _split_sum_kernel[(triton.cdiv(numel, _SUM_BLOCK),)](part, out, numel, split, BLOCK=_SUM_BLOCK)


def _relu_grad(dy, y, has_bias: bool):
    """dy, y (N, C_out, OH, OW), dy in y's strides -> (dy masked by the ReLU in y's strides,
    the bias gradient (C_out,) or None). Deterministic: fixed splits, summed in order."""
    n, c_out, oh, ow = y.shape
    g = torch.empty_strided(y.shape, y.stride(), dtype=y.dtype, device=y.device)
    pix_per_split = _relu_grad_pixels_per_split(n * oh * ow, c_out, _sm_count(y.device))
    split = triton.cdiv(n * oh * ow, pix_per_split)
    acc_dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    db_part = torch.empty((split, c_out), dtype=acc_dtype, device=y.device) if has_bias else g
    args, consts = _relu_grad_args(dy, y, g, db_part, pix_per_split, has_bias)
    db = torch.empty((c_out,), dtype=y.dtype, device=y.device) if has_bias else None
    with device_context(y):
        _relu_grad_kernel[(split, triton.cdiv(c_out, RELU_GRAD_BLOCK_C))](
            **args, **consts, num_warps=_RELU_GRAD_LAUNCH.num_warps,
            num_stages=_RELU_GRAD_LAUNCH.num_stages)
        if has_bias:
            _split_sum(db_part, db)
    return g, db


def _conv_weight_grad(x, g, weight, geo: _Geometry) -> torch.Tensor:
    # x (N, C_in, H, W), masked dy (N, C_out, OH, OW) -> dW like weight
    dw = torch.empty_like(weight)  # weight's strides when it is dense, else contiguous
    pixels = geo.n * geo.oh * geo.ow
    pix_per_split = _wgrad_pixels_per_split(geo, _sm_count(x.device))
    split = triton.cdiv(pixels, pix_per_split)
    if split * dw.numel() >= INT32_SPAN_LIMIT:
        raise ValueError(
            f"weight-gradient partials would hold {split} x {dw.numel()} elements (int32 "
            f"indexing); set kernels.conv2d_relu.WGRAD_SPLIT_PIXELS (now {WGRAD_SPLIT_PIXELS}) "
            f"above {pix_per_split} pixels per split"
        )
    # fp32 partials (fp64 for fp64), one row per split, in dW's storage order
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dw_part = torch.empty((split, dw.numel()), dtype=acc_dtype, device=x.device)
    args, consts = _wgrad_args(x, g, dw, dw_part, pix_per_split, geo)
    grid = lambda meta: (triton.cdiv(geo.kh * geo.kw * geo.cg_in, meta["BLOCK_M"])  # noqa: E731
                         * triton.cdiv(geo.cg_out, meta["BLOCK_N"]), split, geo.groups)
    with device_context(x):
        _conv_wgrad[_path(x.dtype)][grid](**args, **consts)
        _split_sum(dw_part, dw)
    return dw


# ----------------------------------------------------------------------------------------------
# Custom operators (torch.library): autograd, autocast, torch.compile
# ----------------------------------------------------------------------------------------------

# The forward and the backward are PyTorch custom operators, opaque to torch.compile (it traces
# through them without graph breaks; their fake implementations give the output shapes and
# layouts). The forward's autograd formula calls the backward operator; differentiating that
# again (double backward) raises NotImplementedError.


@torch.library.custom_op("lightning_alexnet::conv2d_relu", mutates_args=())
def _conv2d_relu_op(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    stride: list[int], padding: list[int]) -> torch.Tensor:
    # input (N, C_in, H, W), checked by conv2d_relu; padding (top, bottom, left, right)
    _check_dtypes(input, weight, bias)
    geo = _geometry(input, weight, stride, padding)
    if bias is not None:
        bias = bias.contiguous()  # the kernel reads it as b_ptr + channel
    return _conv_forward(input, weight, bias, geo)


@_conv2d_relu_op.register_fake
def _conv2d_relu_fake(input, weight, bias, stride, padding):
    _check_dtypes(input, weight, bias)
    return _new_output(input, _geometry(input, weight, stride, padding))


@torch.library.custom_op("lightning_alexnet::conv2d_relu_backward", mutates_args=())
def _conv2d_relu_backward_op(
    grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, output: torch.Tensor,
    stride: list[int], padding: list[int], needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # -> (d input, d weight, d bias); an empty (0,) tensor for each one not in ``needs``
    geo = _geometry(input, weight, stride, padding)
    need_x, need_w, need_b = needs
    if grad.stride() != output.stride():  # the kernels read grad with the output's strides
        grad = torch.empty_like(output).copy_(grad)
    dx = dw = db = None
    if geo.n == 0:  # empty batch: nothing to launch, sums over no pixels are zero
        dx = torch.empty_like(input) if need_x else None
        dw = torch.zeros_like(weight) if need_w else None
        db = weight.new_zeros(weight.shape[0]) if need_b else None
    else:
        # one pass applies the ReLU mask (and sums the bias gradient); the GEMMs read only g
        g, db = _relu_grad(grad, output, has_bias=need_b)
        if need_x:
            dx = _conv_input_grad(g, weight, input, geo)
        if need_w:
            dw = _conv_weight_grad(input, g, weight, geo)
    return _none_to_empty(input, dx if need_x else None, dw if need_w else None, db)


@_conv2d_relu_backward_op.register_fake
def _conv2d_relu_backward_fake(grad, input, weight, output, stride, padding, needs):
    need_x, need_w, need_b = needs
    dx = torch.empty(input.shape, dtype=input.dtype, device=input.device,
                     memory_format=_memory_format(input)) if need_x else None
    dw = torch.empty_like(weight) if need_w else None
    db = weight.new_empty(weight.shape[0]) if need_b else None
    return _none_to_empty(input, dx, dw, db)


def _none_to_empty(like: torch.Tensor, *grads):
    # a custom operator returns tensors: an empty one stands for "no gradient"
    return tuple(like.new_empty(0) if g is None else g for g in grads)


def _setup_context(ctx, inputs, output):
    input, weight, _, stride, padding = inputs
    ctx.save_for_backward(input, weight, output)
    ctx.stride, ctx.padding = stride, padding


def _backward(ctx, grad):
    input, weight, output = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:3])
    grads = _conv2d_relu_backward_op(grad, input, weight, output, ctx.stride, ctx.padding, needs)
    return (*(g if need else None for g, need in zip(grads, needs)), None, None)


def _no_double_backward(ctx, *grads):
    raise NotImplementedError(
        "conv2d_relu: double backward (differentiating its gradient again, e.g. after "
        "torch.autograd.grad(..., create_graph=True)) is not supported"
    )


_conv2d_relu_op.register_autograd(_backward, setup_context=_setup_context)
_conv2d_relu_backward_op.register_autograd(
    _no_double_backward, setup_context=lambda ctx, inputs, output: None)

# Autocast rule: torch.library.register_autocast casts to one fixed dtype, while autocast's dtype
# is the user's choice (bf16 or fp16): this kernel reads it at each call, casts the floating
# tensors on that device (float64 stays, as torch's autocast leaves it) and runs the op with
# autocast off.
_LIB = torch.library.Library("lightning_alexnet", "FRAGMENT")


def _autocast_rule(device_type: str, key: str):
    def kernel(keyset, input, weight, bias, stride, padding):
        dtype = torch.get_autocast_dtype(device_type)

        def cast(t):
            eligible = (t is not None and t.device.type == device_type and t.is_floating_point()
                        and t.dtype != torch.float64)
            return t.to(dtype) if eligible else t

        with torch._C._ExcludeDispatchKeyGuard(
                torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))):
            return _conv2d_relu_op(cast(input), cast(weight), cast(bias), stride, padding)

    return kernel


for _device_type, _key in (("cuda", "AutocastCUDA"), ("cpu", "AutocastCPU")):
    _LIB.impl("conv2d_relu", _autocast_rule(_device_type, _key), _key, with_keyset=True)


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
    Returns (N, C_out, OH, OW) (or (C_out, OH, OW)) in input's dtype (the autocast dtype under
    ``torch.autocast``), channels_last when the input is channels_last. Differentiable (Triton
    backward; no double backward). Fast layout: channels_last. padding may be an int, a pair,
    'valid' or 'same'; dilation must be 1. See the module docstring for what is refused.
    """
    stride, pads, unbatched = _check_args(input, weight, bias, stride, padding, dilation, groups)
    x = input.unsqueeze(0) if unbatched else input
    y = _conv2d_relu_op(x, weight, bias, list(stride), list(pads))
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
    declared = {name for name, p in params.items()
                if p.annotation in (tl.constexpr, "tl.constexpr")}
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
        pix_per_split = _wgrad_pixels_per_split(geo, ASSUMED_SMS)
        split = triton.cdiv(n * oh * ow, pix_per_split)
        relu_pix = _relu_grad_pixels_per_split(n * oh * ow, c_out, ASSUMED_SMS)
        for dtype, precision, label in variants:
            def empty(*shape, fmt=torch.channels_last, dt=dtype):
                return torch.empty(shape, dtype=dt, device="meta", memory_format=fmt)

            x, w, y = empty(*x_shape), empty(*w_shape), empty(n, c_out, oh, ow)
            b = empty(c_out, fmt=torch.contiguous_format)
            dw_part = empty(split, w.numel(), fmt=torch.contiguous_format, dt=torch.float32)
            db_part = empty(triton.cdiv(n * oh * ow, relu_pix), c_out, fmt=torch.contiguous_format,
                            dt=torch.float32)
            tensor_cores = precision == "tf32" or dtype != torch.float32
            kernels = [
                ("fwd", _conv_fwd_kernel, _fwd_args(x, w, b, y, geo)),
                ("dgrad", _conv_dgrad_kernel, _dgrad_args(y, w, x, geo)),
                ("wgrad", _conv_wgrad_kernel, _wgrad_args(x, y, w, dw_part, pix_per_split, geo)),
            ]
            pk = _Packing.of(geo)
            if pk.fits(geo):  # conv1's own forward
                xp = empty(n, pk.hp, pk.wp, pk.cp, fmt=torch.contiguous_format)
                wp = empty(c_out, kh * pk.kwc, fmt=torch.contiguous_format)
                packed = _fwd_packed_args(xp, wp, b, y, geo, pk)
                kernels.append(("fwd_packed", _conv_fwd_packed_kernel, packed))
            for kname, fn, (args, consts) in kernels:
                if kname == "dgrad" and not x_grad:
                    continue
                consts = {**consts, "INPUT_PRECISION": precision}
                if kname == "fwd_packed":  # every config compiles without spills
                    kept = FWD_PACKED_CONFIGS if tensor_cores else FWD_PACKED_FP32_CONFIGS
                else:
                    configs, prune = _TUNING[kname]["mma" if tensor_cores else "fma"]
                    kept = prune(configs, {}, **args, **consts)
                for cfg in kept:
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
                args, consts = _relu_grad_args(y, y, y, db_part, relu_pix, True)
                specs.append(_spec(f"conv2d_relu_relu_grad[{layer}, {label}]", _relu_grad_kernel,
                                   args, consts, _RELU_GRAD_LAUNCH, uses_dot=False))
    return specs
