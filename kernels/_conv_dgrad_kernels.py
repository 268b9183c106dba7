"""The conv input-gradient (dgrad) kernel of :mod:`kernels.conv2d_relu`, apart from
:mod:`kernels._conv2d_relu_kernels` (which has the layouts, the program order and the other
kernels in its docstring, and re-exports this one with its autotuners)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _conv_dgrad_tile(
    g_ptr, w_ptr, dx_ptr, w_desc, wt_desc,
    N, CG_IN: tl.constexpr, H, W, CG_OUT: tl.constexpr, OH, OW,
    stride_gn, stride_gc, stride_gh, stride_gw,
    stride_wo, stride_wc, stride_wh, stride_ww,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    PAD_H: tl.constexpr, PAD_W: tl.constexpr, INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_N_TAIL: tl.constexpr, USE_TMA: tl.constexpr,
    # which tile: (BLOCK_M rows, BLOCK_N + BLOCK_N_TAIL columns) of group g's GEMM
    pid_m, pid_n, g,
):
    # one input-gradient tile of _conv_dgrad_kernel (its arguments, in its order, then the
    # tile's indices)
    M = N * H * W
    K = KH * KW * CG_OUT

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * (BLOCK_N + BLOCK_N_TAIL) + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < CG_IN
    # GEMM row -> input pixel (n, h, w)
    iw = offs_m % W
    ih = (offs_m // W) % H
    n = offs_m // (W * H)
    g_rows = n * stride_gn + g * CG_OUT * stride_gc
    dx_rows = n * stride_dxn + ih * stride_dxh + iw * stride_dxw

    acc_dtype = tl.float64 if g_ptr.dtype.element_ty == tl.float64 else tl.float32
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
    if BLOCK_N_TAIL > 0:  # the tail columns right after offs_n
        offs_t = pid_n * (BLOCK_N + BLOCK_N_TAIL) + BLOCK_N + tl.arange(0, BLOCK_N_TAIL)
        mask_t = offs_t < CG_IN
        acc_t = tl.zeros((BLOCK_M, BLOCK_N_TAIL), dtype=acc_dtype)
    for k0 in range(0, K, BLOCK_K):
        # GEMM column -> tap (kh, kw, co), output channel fastest
        if CG_OUT % BLOCK_K == 0:
            # the block lies in one tap (conv2-5): kh, kw are scalars, so the bounds test
            # below is one per row (BLOCK_M), not one per element, and no K mask is needed
            kh = k0 // (CG_OUT * KW)
            kw = (k0 // CG_OUT) % KW
            co = k0 % CG_OUT + tl.arange(0, BLOCK_K)
            mask_k = tl.full((BLOCK_K,), 1, tl.int1)
            oh_s = (ih + PAD_H)[:, None] - kh  # (BLOCK_M, 1)
            ow_s = (iw + PAD_W)[:, None] - kw
        else:
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            co = offs_k % CG_OUT
            kw = (offs_k // CG_OUT) % KW
            kh = offs_k // (CG_OUT * KW)
            oh_s = (ih + PAD_H)[:, None] - kh[None, :]  # (BLOCK_M, BLOCK_K)
            ow_s = (iw + PAD_W)[:, None] - kw[None, :]
        # the tap reaches output row oh iff ih + pad - kh == oh * stride with 0 <= oh < OH
        oh = oh_s // STRIDE_H
        ow = ow_s // STRIDE_W
        tap_ok = mask_m[:, None] & (oh_s >= 0) & (ow_s >= 0) & (oh < OH) & (ow < OW)
        if STRIDE_H > 1:
            tap_ok = tap_ok & (oh_s % STRIDE_H == 0)
        if STRIDE_W > 1:
            tap_ok = tap_ok & (ow_s % STRIDE_W == 0)
        a_mask = tap_ok & mask_k[None, :]
        a_offs = g_rows[:, None] + co[None, :] * stride_gc + oh * stride_gh + ow * stride_gw
        a = tl.load(g_ptr + a_offs, mask=a_mask, other=0.0)
        if USE_TMA:
            # a [BLOCK_K, BLOCK_N] box: the K block's output channels (one tap's: the pruner
            # keeps TMA where CG_OUT % BLOCK_K == 0) x input channels from the tap's first;
            # columns past the tap's C_in/g read the next tap's (or TMA's zeros past the row):
            # they only reach output columns the store masks
            tl.static_assert(CG_OUT % BLOCK_K == 0, "TMA dgrad needs K blocks within a tap")
            w_row = g * CG_OUT + k0 % CG_OUT
            w_col = (kh * KW + kw) * CG_IN + pid_n * (BLOCK_N + BLOCK_N_TAIL)
            b = w_desc.load([w_row, w_col])
        else:
            # weight rows of this K block; its channels count within the group
            w_rows = (g * CG_OUT + co) * stride_wo + kh * stride_wh + kw * stride_ww
            b = tl.load(w_ptr + w_rows[:, None] + (offs_n * stride_wc)[None, :],
                        mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
        if BLOCK_N_TAIL > 0:  # the same A tile against the tail columns
            if USE_TMA:
                b_t = wt_desc.load([w_row, w_col + BLOCK_N])
            else:
                b_t = tl.load(w_ptr + w_rows[:, None] + (offs_t * stride_wc)[None, :],
                              mask=mask_k[:, None] & mask_t[None, :], other=0.0)
            acc_t = tl.dot(a, b_t, acc_t, input_precision=INPUT_PRECISION)

    dx_offs = dx_rows[:, None] + ((g * CG_IN + offs_n) * stride_dxc)[None, :]
    tl.store(dx_ptr + dx_offs, acc.to(dx_ptr.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])
    if BLOCK_N_TAIL > 0:
        dx_offs = dx_rows[:, None] + ((g * CG_IN + offs_t) * stride_dxc)[None, :]
        tl.store(dx_ptr + dx_offs, acc_t.to(dx_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_t[None, :])


@triton.jit
def _conv_dgrad_kernel(
    # pointers (g: the output gradient already masked by the ReLU, see _relu_grad_kernel);
    # w_desc, wt_desc: the weight as (C_out, KH*KW*C_in/g) TMA descriptors, boxes BLOCK_N and
    # BLOCK_N_TAIL columns wide (None, None without TMA)
    g_ptr, w_ptr, dx_ptr, w_desc, wt_desc,
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
    # tiling: a program computes BLOCK_N + BLOCK_N_TAIL columns (input channels) in two
    # accumulators sharing each A tile (BLOCK_N_TAIL = 0: one accumulator); USE_TMA: the weight
    # tiles through w_desc/wt_desc; PERSISTENT > 0: a persistent grid of about PERSISTENT
    # programs per SM (the launcher's), each looping over tiles (0: one program per tile)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_N_TAIL: tl.constexpr, USE_TMA: tl.constexpr = False, PERSISTENT: tl.constexpr = 0,
):
    # masked dy (N, C_out, OH, OW) x weight -> dx (N, C_in, H, W)
    # grid (M tiles x N tiles, groups), N tiles fastest (see the module docstring); persistent:
    # (programs, groups), program p taking tiles p, p + programs, ... in that order
    num_pid_n: tl.constexpr = (CG_IN + BLOCK_N + BLOCK_N_TAIL - 1) // (BLOCK_N + BLOCK_N_TAIL)
    if PERSISTENT > 0:
        g = tl.program_id(1)
        num_tiles = tl.cdiv(N * H * W, BLOCK_M) * num_pid_n
        for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
            _conv_dgrad_tile(
                g_ptr, w_ptr, dx_ptr, w_desc, wt_desc, N, CG_IN, H, W, CG_OUT, OH, OW,
                stride_gn, stride_gc, stride_gh, stride_gw,
                stride_wo, stride_wc, stride_wh, stride_ww,
                stride_dxn, stride_dxc, stride_dxh, stride_dxw,
                KH, KW, STRIDE_H, STRIDE_W, PAD_H, PAD_W, INPUT_PRECISION,
                BLOCK_M, BLOCK_N, BLOCK_K, BLOCK_N_TAIL, USE_TMA,
                tile // num_pid_n, tile % num_pid_n, g,
            )
    else:
        pid_m = tl.program_id(0) // num_pid_n
        pid_n = tl.program_id(0) % num_pid_n
        g = tl.program_id(1)
        _conv_dgrad_tile(
            g_ptr, w_ptr, dx_ptr, w_desc, wt_desc, N, CG_IN, H, W, CG_OUT, OH, OW,
            stride_gn, stride_gc, stride_gh, stride_gw, stride_wo, stride_wc, stride_wh, stride_ww,
            stride_dxn, stride_dxc, stride_dxh, stride_dxw,
            KH, KW, STRIDE_H, STRIDE_W, PAD_H, PAD_W, INPUT_PRECISION,
            BLOCK_M, BLOCK_N, BLOCK_K, BLOCK_N_TAIL, USE_TMA, pid_m, pid_n, g,
        )
