"""conv1's own kernels, on its input packed once per call (``_Packing`` in
:mod:`kernels._conv2d_relu_args`; the layout in :mod:`kernels._conv2d_relu_kernels`'s
docstring): the forward (bias + ReLU epilogue as the general forward's) and the weight gradient,
the same GEMM transposed, split over output pixels like the general wgrad.
"""

from __future__ import annotations

import triton
import triton.language as tl

from kernels.tuning import CONV_INTERPRET_CONFIG, PACKED_TUNING, autotune_configs


@triton.jit
def _conv_fwd_packed_kernel(
    # pointers (xp: the packed rows, xt: the windows' tails, see _pack_input; wp: the packed
    # weight (C_out, KH * BODY + TK); b: the bias in fp32, fp64 for fp64)
    xp_ptr, xt_ptr, wp_ptr, b_ptr, y_ptr,
    # sizes
    N, OH, OW, C_OUT: tl.constexpr,
    # strides (xp (N, HP, WPC) is contiguous: a pixel is CP elements, a channel 1)
    stride_xpn, stride_xph,
    stride_yn, stride_yc, stride_yh, stride_yw,
    # op parameters: BODY = the first elements of each window row read from xp (a multiple of
    # BLOCK_K), TK = each window's tail elements in xt (a multiple of BLOCK_K)
    KH: tl.constexpr, BODY: tl.constexpr, TK: tl.constexpr, CP: tl.constexpr,
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr, HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    # tiling
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # packed x (N, HP, WPC) + tails (M, TK) x packed w (C_out, KP) -> relu(conv + bias)
    # (N, C_out, OH, OW); K = KH rows of BODY elements, then the TK tail elements
    tl.static_assert(BODY % BLOCK_K == 0 and TK % BLOCK_K == 0)
    # 1-D grid, N tiles fastest: the C_out / BLOCK_N programs of one M tile run together
    num_pid_n: tl.constexpr = (C_OUT + BLOCK_N - 1) // BLOCK_N
    pid_m = tl.program_id(0) // num_pid_n
    pid_n = tl.program_id(0) % num_pid_n
    M = N * OH * OW
    KP: tl.constexpr = KH * BODY + TK

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < C_OUT
    # rows and channels past the end repeat valid ones (unmasked loads; the store masks them)
    m = offs_m % M
    co = offs_n % C_OUT
    ow = m % OW
    oh = (m // OW) % OH
    n = m // (OW * OH)
    # the window of output pixel (oh, ow) starts at packed row oh * STRIDE_H, element
    # ow * STRIDE_W * CP (a multiple of 4): the zero border stands for the padding
    x_rows = n * stride_xpn + oh * (STRIDE_H * stride_xph) + ow * (STRIDE_W * CP)
    w_rows = co * KP

    if xp_ptr.dtype.element_ty == tl.float64:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, KH * BODY, BLOCK_K):
        # BLOCK_K divides BODY: a block is contiguous elements of one window row kh, aligned
        # to 4, all of them real taps (no mask, nothing to zero)
        kh = k0 // BODY
        a_offs = kh * stride_xph + (k0 - kh * BODY) + offs_k
        a = tl.load(xp_ptr + x_rows[:, None] + a_offs[None, :])
        b = tl.load(wp_ptr + w_rows[None, :] + (k0 + offs_k)[:, None])
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)  # (BLOCK_M, BLOCK_N)
    for t0 in range(0, TK, BLOCK_K):
        # the rest of every window row, copied per output pixel with zeros as padding
        a = tl.load(xt_ptr + (m * TK)[:, None] + (t0 + offs_k)[None, :])
        b = tl.load(wp_ptr + w_rows[None, :] + (KH * BODY + t0 + offs_k)[:, None])
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    # epilogue as _conv_fwd_kernel's: bias and NaN-keeping ReLU on the accumulator
    if HAS_BIAS:
        acc += tl.load(b_ptr + co).to(acc.dtype)[None, :]
    acc = tl.where(acc < 0, 0.0, acc)
    y_offs = (n * stride_yn + oh * stride_yh + ow * stride_yw)[:, None] + (co * stride_yc)[None, :]
    tl.store(y_ptr + y_offs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _conv_wgrad_packed_kernel(
    # pointers (xp: conv1's packed rows, its windows' tails TAIL0 elements further in the same
    # buffer, see _pack_input; g: the masked output gradient; dw_part: fp32 [SPLIT, C_OUT * KP],
    # fp64 for fp64)
    xp_ptr, g_ptr, dw_part_ptr,
    # sizes, pixels per split, where the tails start
    N, OH, OW, C_OUT: tl.constexpr, PIX_PER_SPLIT, TAIL0,
    # strides (xp's rows as in _conv_fwd_packed_kernel)
    stride_xpn, stride_xph,
    stride_gn, stride_gc, stride_gh, stride_gw,
    # op parameters: the packed K as in _conv_fwd_packed_kernel (KH rows of BODY, then TK)
    KH: tl.constexpr, BODY: tl.constexpr, TK: tl.constexpr, CP: tl.constexpr,
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    # tiling
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # packed x^T (KP, pixels) x masked dy (pixels, C_out) -> partial packed dW^T (KP, C_out)
    # for the pixels [split * PIX_PER_SPLIT, (split + 1) * PIX_PER_SPLIT); the launcher unpacks
    # it to (C_out, C_in, KH, KW). The forward's im2col, transposed: a GEMM row is a K element
    # of the packed layout, contiguous with its neighbours in runs of 4 (the tap gathers of
    # _conv_wgrad_kernel are 2-byte loads in fp16, which cannot be copied asynchronously)
    KB: tl.constexpr = KH * BODY
    KP: tl.constexpr = KB + TK
    num_pid_m: tl.constexpr = (KP + BLOCK_M - 1) // BLOCK_M
    pid_m = tl.program_id(0) % num_pid_m
    pid_n = tl.program_id(0) // num_pid_m
    split = tl.program_id(1)
    P = N * OH * OW

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < KP
    mask_n = offs_n < C_OUT
    # GEMM row -> where K element k of a pixel's window lies: row kh, element j of the packed
    # rows (k < KB), or element k - KB of the pixel's tail
    body = offs_m < KB
    in_tail = (offs_m >= KB).to(tl.int32)
    kh = offs_m // BODY
    row_offs = tl.where(body, kh * stride_xph + (offs_m - kh * BODY), TAIL0 + (offs_m - KB))

    p_lo = split * PIX_PER_SPLIT
    p_hi = tl.minimum(p_lo + PIX_PER_SPLIT, P)
    if xp_ptr.dtype.element_ty == tl.float64:
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
        # the pixel's window (body rows) or its tail: a 0/1 blend, as a select of two
        # broadcast tensors hides the runs of 4 from the compiler (2-byte loads)
        x_win = n * stride_xpn + oh * (STRIDE_H * stride_xph) + ow * (STRIDE_W * CP)
        x_cols = x_win[None, :] + in_tail[:, None] * (offs_k * TK - x_win)[None, :]
        a = tl.load(xp_ptr + row_offs[:, None] + x_cols,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)  # (BLOCK_M, BLOCK_K)
        b_offs = ((n * stride_gn + oh * stride_gh + ow * stride_gw)[:, None]
                  + (offs_n * stride_gc)[None, :])
        b = tl.load(g_ptr + b_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)  # (BLOCK_M, BLOCK_N)

    dw_offs = split * (C_OUT * KP) + (offs_n * KP)[None, :] + offs_m[:, None]
    tl.store(dw_part_ptr + dw_offs, acc, mask=mask_m[:, None] & mask_n[None, :])


_conv_fwd_packed = {
    path: triton.autotune(autotune_configs(configs, CONV_INTERPRET_CONFIG),
                          key=["N", "OH", "OW", "C_OUT", "stride_xpn", "stride_xph", "KH", "BODY",
                               "TK", "CP", "STRIDE_H", "STRIDE_W", "HAS_BIAS"],
                          )(_conv_fwd_packed_kernel)
    for path, configs in PACKED_TUNING["fwd_packed"].items()
}
_conv_wgrad_packed = {
    path: triton.autotune(autotune_configs(configs, CONV_INTERPRET_CONFIG),
                          key=["N", "OH", "OW", "C_OUT", "PIX_PER_SPLIT", "stride_xpn",
                               "stride_xph", "stride_gc", "KH", "BODY", "TK", "CP", "STRIDE_H",
                               "STRIDE_W"],
                          )(_conv_wgrad_packed_kernel)
    for path, configs in PACKED_TUNING["wgrad_packed"].items()
}
