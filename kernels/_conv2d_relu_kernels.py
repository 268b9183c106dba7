"""The Triton kernels of :mod:`kernels.conv2d_relu` and their autotuners.

Private: :mod:`kernels.conv2d_relu` launches them (its module docstring has the layouts,
precision and what is refused); their config lists and pruners are in :mod:`kernels.tuning`,
their arguments are built in :mod:`kernels._conv2d_relu_args`. Every kernel's signature is in
one order: pointers, sizes, strides, op parameters, tiling.

Kernels, all implicit GEMMs with an fp32 accumulator (fp64 for fp64; groups on grid axis 2):

- forward: M = N*OH*OW, N = C_out/g, K = KH*KW*C_in/g. Bias and ReLU are applied to the fp32
  accumulator before the down-cast and the store. The K index runs over (kh, kw, c) with the
  channel fastest, flattened, so a few input channels still fill a 16-wide K block. Where
  BLOCK_K divides the channels (conv3-5 forward, conv2-5 dgrad) a K block lies in one tap
  (kh, kw): the tap is two scalars and the padding test one per row of the tile (BLOCK_M
  pixels) instead of one per element, with no K mask; otherwise each element decodes its tap.
- program order (forward and dgrad): a 1-D grid over (M tiles x N tiles) per group, N tiles
  fastest, so the few N tiles of one M tile (1-6 at AlexNet's channel counts) run next to
  each other and read its A rows (the gathered activations, the large operand) from L2; the
  weight (B, at most 1.7 MB per layer) stays in L2 anyway. This is the grouped ("swizzled")
  order with the whole N extent as the group. A persistent forward or dgrad (config
  PERSISTENT > 0, not yet run on a GPU: behind kernels.tuning's gate) launches about
  PERSISTENT programs per SM instead, each taking every programs-th tile of that order; a
  tile's code (``_conv_fwd_tile``, ``_conv_dgrad_tile``) and so its result are the same
  either way.
- the weight through TMA (forward and dgrad, ``USE_TMA`` configs, Hopper): B is copied from a
  host-side descriptor (``w_desc``, of the channels_last weight's (C_out, KH*KW*C_in/g) rows)
  instead of ``w_ptr``; see :mod:`kernels._conv_tma` for the boxes, what TMA needs of the
  weight and what runs when the weight does not meet it (the pointer configs).
- conv1's forward (groups = 1, C_in <= 4, window rows of >= 16 elements) has its own kernel on
  the input packed once per call (``_Packing``): zero-bordered rows of interleaved pixels
  (N, HP, WPC) with the padding as the border, C_in channels per pixel (3 for conv1; 4 where
  the stride would misalign the rows), and a small im2col copy of each window's tail. A window
  row of KW taps x C channels is contiguous: its first BODY elements (a multiple of 16; conv1:
  32 of 33) are K blocks read straight from the rows, 4-aligned (8-byte loads in fp16/bf16,
  16-byte in fp32), the rest of every row (conv1: 11 elements per window) comes from the
  tail, zero-padded to 16. K = 11 x 32 + 16 = 368 for conv1's 363 taps (98.6%). No K block
  holds an element of another window, so nothing is masked or zeroed in registers: the tiles
  go to shared memory by ``cp.async`` and the MMAs overlap (wgmma ``wait_group`` 1). The
  weight is packed to (C_out, KP) in the same K order, the bias widened to fp32 (8-byte
  loads). BLOCK_N = 32 divides C_out = 96. Cost: one extra pass over the image (rows: about
  the image; the tail: 16 elements per output pixel).
- conv1's weight gradient (``_conv_wgrad_packed_kernel``) is the same GEMM transposed, on the
  input packed again: M = the KP packed K elements, N = C_out, K = output pixels, split as
  wgrad below. Its x tile is runs of 4 contiguous elements along M (8-byte ``cp.async`` in
  fp16/bf16, where the general wgrad's tap gathers are 2-byte loads that cannot be copied
  asynchronously, which kept its wgmma from overlapping). The launcher unpacks the summed
  (C_out, KP) gradient to (C_out, C_in, KH, KW).
- ReLU mask (one elementwise pass, first in backward): g = dy masked by the saved output, and
  the bias gradient as fp32 partial sums over fixed pixel splits, summed in a fixed order by
  the split-sum kernel. Both GEMMs below read g alone, never the output. The mask is torch's
  ``threshold_backward``: the gradient is dropped where ``y <= 0`` and kept where y is NaN (not
  ``grad * (y > 0)``).
- input gradient (dgrad, in :mod:`kernels._conv_dgrad_kernels`, re-exported here): M = N*H*W,
  N = C_in/g, K = KH*KW*C_out/g, a gather: for input pixel h
  and tap kh the output row is (h + pad - kh) / stride when that divides evenly and is in range.
  No atomics, no zero-inserted copy of the gradient. Skipped when the input needs no gradient
  (conv1's image). A program computes BLOCK_N + BLOCK_N_TAIL columns: with a tail, two
  accumulators share each A tile, so conv2's 48 input channels per group take one 32 + 16
  program instead of a 64-wide tile (25% wasted) or three 16-wide ones (A loaded three times).
- weight gradient (wgrad): M = KH*KW*C_in/g, N = C_out/g, K = N*OH*OW, with a deterministic
  split-K: each split of output pixels writes an fp32 partial [SPLIT, C_out, C_in/g, KH, KW]; a
  second Triton kernel sums the partials in a fixed order. The split count is the grid's axis 1,
  chosen per config from its tile, the GPU's SM count and the shape (``WGRAD_WAVES`` waves of
  ``WGRAD_RESIDENT`` programs per SM; 132 SMs assumed under the interpreter; see
  ``_wgrad_splits``): at batch 128 on 132 SMs conv1-5 get 132, 21, 8, 10, 15 splits with 64x64
  fp16 tiles. The kernel derives its pixel range from ``tl.num_programs(1)``. For a given GPU, shape
  and config the result is bit-identical run to run. With TF32 the x tile is rounded to TF32
  in registers (nearest, ties to even), which on sm_90 also keeps its copy 16 bytes wide.

Tile loops that look alike but index differently (named per the project's no-duplicates rule):
``_conv_fwd_kernel`` ~ ``_conv_dgrad_kernel`` (the same prologue -- program ids, tile offsets,
masks, a flat GEMM row decoded to a pixel -- over output pixels x C_out for the forward and
input pixels x C_in for dgrad; their K loops decode (kh, kw, c_in) and (kh, kw, c_out) and
gather forwards vs backwards through the stride); ``_conv_fwd_kernel`` ~ ``_conv_wgrad_kernel``
(the same input-tap gather, taps on the GEMM columns vs the rows); ``_conv_fwd_kernel`` ~
``_conv_fwd_packed_kernel`` (the bias + NaN-keeping ReLU epilogue and store; the packed one
reads unmasked rows of its packed buffer); ``_conv_fwd_kernel`` ~ ``_conv_fwd_tile`` and
``_conv_dgrad_kernel`` ~ ``_conv_dgrad_tile`` (the kernel's parameters repeated: a jitted helper
takes no structs).
"""

from __future__ import annotations

import triton
import triton.language as tl

from kernels._common import INTERPRET
from kernels._conv_dgrad_kernels import _conv_dgrad_kernel
from kernels.tuning import (
    CONV_INTERPRET_CONFIG,
    CONV_TUNING,
    DGRAD_INTERPRET_CONFIG,
    autotune_configs,
)


@triton.jit
def _conv_fwd_tile(
    x_ptr, w_ptr, b_ptr, y_ptr, w_desc,
    N, CG_IN: tl.constexpr, H, W, CG_OUT: tl.constexpr, OH, OW,
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_yn, stride_yc, stride_yh, stride_yw,
    KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr, PAD_W: tl.constexpr, HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    USE_TMA: tl.constexpr,
    # which tile: (BLOCK_M rows, BLOCK_N columns) of group g's GEMM
    pid_m, pid_n, g,
):
    # one output tile of _conv_fwd_kernel (its arguments, in its order, then the tile's indices)
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
        if CG_IN % BLOCK_K == 0:
            # the block lies in one tap (conv3-5): kh, kw are scalars, so the bounds test
            # below is one per row (BLOCK_M), not one per element, and no K mask is needed
            kh = k0 // (CG_IN * KW)
            kw = (k0 // CG_IN) % KW
            c = k0 % CG_IN + tl.arange(0, BLOCK_K)
            mask_k = tl.full((BLOCK_K,), 1, tl.int1)
            ih = ih0[:, None] + kh  # (BLOCK_M, 1)
            iw = iw0[:, None] + kw
        else:
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            c = offs_k % CG_IN
            kw = (offs_k // CG_IN) % KW
            kh = offs_k // (CG_IN * KW)
            ih = ih0[:, None] + kh[None, :]  # (BLOCK_M, BLOCK_K)
            iw = iw0[:, None] + kw[None, :]
        # zero padding
        a_mask = (mask_m[:, None] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)) & mask_k[None, :]
        a_offs = x_rows[:, None] + (c * stride_xc + kh * stride_xh + kw * stride_xw)[None, :]
        a = tl.load(x_ptr + a_offs, mask=a_mask, other=0.0)  # (BLOCK_M, BLOCK_K)
        if USE_TMA:
            # a [BLOCK_N, BLOCK_K] box of the weight's rows in (kh, kw, c) order, transposed
            # (K-major B); TMA zero-fills columns past K and rows past C_out; rows of the next
            # group (CG_OUT % BLOCK_N != 0) only reach columns the store masks
            b = w_desc.load([g * CG_OUT + pid_n * BLOCK_N, k0]).T
        else:
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
def _conv_fwd_kernel(
    # pointers; w_desc: the weight as a (C_out, KH*KW*C_in/g) TMA descriptor, or None
    x_ptr, w_ptr, b_ptr, y_ptr, w_desc,
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
    # tiling; USE_TMA: the weight tile through w_desc (Hopper's TMA), else through w_ptr;
    # PERSISTENT > 0: a persistent grid of about PERSISTENT programs per SM (the launcher's),
    # each looping over tiles (0: one program per tile)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    USE_TMA: tl.constexpr = False, PERSISTENT: tl.constexpr = 0,
):
    # (N, C_in, H, W) x (C_out, C_in/g, KH, KW) -> relu(conv + bias) (N, C_out, OH, OW)
    # grid (M tiles x N tiles, groups), N tiles fastest (see the module docstring); persistent:
    # (programs, groups), program p taking tiles p, p + programs, ... in that order
    num_pid_n: tl.constexpr = (CG_OUT + BLOCK_N - 1) // BLOCK_N
    if PERSISTENT > 0:
        g = tl.program_id(1)
        num_tiles = tl.cdiv(N * OH * OW, BLOCK_M) * num_pid_n
        for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
            _conv_fwd_tile(
                x_ptr, w_ptr, b_ptr, y_ptr, w_desc, N, CG_IN, H, W, CG_OUT, OH, OW,
                stride_xn, stride_xc, stride_xh, stride_xw,
                stride_wo, stride_wc, stride_wh, stride_ww,
                stride_yn, stride_yc, stride_yh, stride_yw,
                KH, KW, STRIDE_H, STRIDE_W, PAD_H, PAD_W, HAS_BIAS, INPUT_PRECISION,
                BLOCK_M, BLOCK_N, BLOCK_K, USE_TMA, tile // num_pid_n, tile % num_pid_n, g,
            )
    else:
        pid_m = tl.program_id(0) // num_pid_n
        pid_n = tl.program_id(0) % num_pid_n
        g = tl.program_id(1)
        _conv_fwd_tile(
            x_ptr, w_ptr, b_ptr, y_ptr, w_desc, N, CG_IN, H, W, CG_OUT, OH, OW,
            stride_xn, stride_xc, stride_xh, stride_xw, stride_wo, stride_wc, stride_wh, stride_ww,
            stride_yn, stride_yc, stride_yh, stride_yw,
            KH, KW, STRIDE_H, STRIDE_W, PAD_H, PAD_W, HAS_BIAS, INPUT_PRECISION,
            BLOCK_M, BLOCK_N, BLOCK_K, USE_TMA, pid_m, pid_n, g,
        )


@triton.jit
def _round_to_tf32(v):
    # fp32 -> the nearest TF32 value (10 mantissa bits, ties to even), still stored as fp32;
    # NaN stays NaN (a payload in the dropped bits alone would otherwise round to inf)
    bits = v.to(tl.uint32, bitcast=True)
    bits = (bits + (0xFFF + ((bits >> 13) & 1))) & 0xFFFFE000
    return tl.where(v != v, v, bits.to(tl.float32, bitcast=True))  # noqa: PLR0124 (NaN test)


@triton.jit
def _conv_wgrad_kernel(
    # pointers (g: the masked output gradient; dw_part: fp32 [SPLIT, DW_NUMEL], fp64 for fp64)
    x_ptr, g_ptr, dw_part_ptr,
    # sizes (channels per group), partial stride
    N, CG_IN: tl.constexpr, H, W, CG_OUT: tl.constexpr, OH, OW, DW_NUMEL,
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
    # for the pixels [split * per_split, (split + 1) * per_split): grid axis 1 is the split
    # count, chosen per tile by the launcher so that no split is empty (_wgrad_splits)
    pid = tl.program_id(0)
    split = tl.program_id(1)
    g = tl.program_id(2)
    M = KH * KW * CG_IN
    P = N * OH * OW
    per_split = tl.cdiv(tl.cdiv(P, tl.num_programs(1)), BLOCK_K) * BLOCK_K
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

    p_lo = split * per_split
    p_hi = tl.minimum(p_lo + per_split, P)
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
        if INPUT_PRECISION == "tf32":
            # Hopper's TF32 wgmma reads shared-memory operands only K-major, and channels_last
            # x is M-major: rounded in registers, x is an A operand there, so its copy stays
            # a 16-byte cp.async (the gradient, B, must stay in shared memory: 4-byte copies).
            # (Rounding after the gradient's load: before it, sm_80 spills 8 B at 128x64x32.)
            a = _round_to_tf32(a)
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
    for s in range(SPLIT):
        acc += tl.load(part_ptr + s * NUMEL + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


_SHAPE_KEY = ["N", "CG_IN", "H", "W", "CG_OUT", "OH", "OW",
              "KH", "KW", "STRIDE_H", "STRIDE_W", "PAD_H", "PAD_W"]


def _autotuned(fn, kernel: str, key: list[str]) -> dict:
    """One autotuner per instruction path: "mma" (tensor cores) and "fma" (exact fp32). The
    interpreter gets its one config, unpruned."""
    interpret = DGRAD_INTERPRET_CONFIG if kernel == "dgrad" else CONV_INTERPRET_CONFIG
    return {
        path: triton.autotune(
            autotune_configs(configs, interpret), key=key,
            prune_configs_by=None if INTERPRET else {"early_config_prune": prune},
        )(fn)
        for path, (configs, prune) in CONV_TUNING[kernel].items()
    }


_conv_fwd = _autotuned(_conv_fwd_kernel, "fwd", _SHAPE_KEY + ["stride_xc", "HAS_BIAS"])
_conv_dgrad = _autotuned(_conv_dgrad_kernel, "dgrad", _SHAPE_KEY + ["stride_gc", "stride_wc"])
_conv_wgrad = _autotuned(_conv_wgrad_kernel, "wgrad", _SHAPE_KEY + ["stride_xc"])
