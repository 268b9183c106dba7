"""Autotune tables: every kernel's GPU configurations and the pruners that pick among them.

One file for the tuning, beside the kernels it tunes, each table labelled with the layer shapes
it serves (AlexNet at batch 128: conv1 (128, 3, 224, 224) 11x11 /4; conv2 (128, 96, 27, 27) 5x5
g2; conv3-5 (128, 256|384, 13, 13) 3x3; the LRN/pool maps after conv1 (128, 96, 55, 55), conv2
(128, 256, 27, 27) and conv5 (128, 256, 13, 13)). The op modules take their autotuners' config
lists from here; ``aot_specs`` in each op module compiles every config listed here for sm_80
and sm_90 (``python -m kernels.compile_report``).

Under the interpreter (``TRITON_INTERPRET=1``) multi-config autotuning fails without a GPU, so
:func:`autotune_configs` hands each autotuner one interpreter config instead.
"""

from __future__ import annotations

import triton

from kernels._common import INTERPRET


def autotune_configs(gpu: list[triton.Config], interpret: triton.Config) -> list[triton.Config]:
    """Multi-config autotune fails without a GPU: the interpreter gets one configuration."""
    return [interpret] if INTERPRET else gpu


# ----------------------------------------------------------------------------------------------
# conv2d_relu: implicit-GEMM tiles (conv1-conv5, channels_last)
# ----------------------------------------------------------------------------------------------

def _config(block_m: int, block_n: int, block_k: int, warps: int, stages: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k},
        num_warps=warps,
        num_stages=stages,
    )


def _configs(*tiles: tuple[int, int, int, int, int]) -> list[triton.Config]:
    """Configs from (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) tuples."""
    return [_config(*tile) for tile in tiles]


# GPU configs for sm_80/sm_90. Every one is compiled ahead of time for both at every AlexNet
# layer shape it is kept for (``aot_specs``): ptxas -v reports no register spills. At most 4
# warps: Inductor's non-1x1 conv template miscompiled with 8 (pytorch#173068).
# Layout: spill-free as compiled is for channels_last, the layout the model runs on CUDA. NCHW
# inputs take the same configs through the strided gather, which is correct but not checked
# ahead of time: an sm_90 review found 13 of 24 fp16 conv2/conv3 configs spilling there (up to
# 7.4 KB) and no cp.async; for speed, use channels_last.
# Tensor-core configs: fp16, bf16, and fp32 with TF32 allowed. The forward and wgrad lists serve
# conv2-conv5 (C_in per group >= SMALL_CIN: 48, 256, 192, 192); dgrad's serve conv2-conv5 (conv1's
# image needs no gradient).
FWD_CONFIGS = _configs(
    (128, 128, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (64, 64, 32, 4, 4),
)
DGRAD_CONFIGS = _configs(
    (64, 128, 32, 4, 3), (128, 64, 32, 4, 3), (64, 64, 32, 4, 4), (64, 64, 64, 4, 3),
)
# (128x128x32 sat at 254-255 registers with Triton 3.8/3.9 and spills with 3.7 on sm_80: dropped.)
WGRAD_CONFIGS = _configs((128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (64, 64, 32, 4, 4))
# Spill with TF32 operands on sm_80 (Triton 3.9) once the backward reads the masked gradient
# alone: dgrad 64x64x64 s3 (conv3 8 B, conv4 12 B), wgrad 128x64x32 s3 (conv3 4 B) and
# 64x64x32 s4 (conv2 4 B; with 3 stages too, at 96 registers). The pruner leaves them to
# fp16/bf16, so TF32's wgrad on conv2-5 autotunes over one tile, 64x128x32.
DGRAD_TF32_DROP = ((64, 64, 64, 4, 3),)
WGRAD_TF32_DROP = ((128, 64, 32, 4, 3), (64, 64, 32, 4, 4))
# TF32 operands take 4 bytes: tiles above this spill (on sm_80, and the forward on sm_90).
TF32_MAX_TILE = 128 * 64

# Exact fp32 (input_precision="ieee") has no tensor-core instruction: tl.dot becomes FMAs with the
# accumulator and operands in registers, so the tiles are smaller (the tensor-core lists spill
# up to 6 KiB there). conv2-conv5, as above.
FWD_FP32_CONFIGS = _configs(
    (64, 64, 16, 4, 2), (64, 64, 16, 4, 3), (128, 64, 16, 4, 2), (64, 128, 16, 4, 2),
)
# (64x64x16 with 3 stages spilled 8 bytes on sm_90 with Triton 3.9 at conv2-5: dropped.)
DGRAD_FP32_CONFIGS = _configs((64, 64, 16, 4, 2), (32, 64, 32, 4, 2), (32, 32, 32, 4, 3))
WGRAD_FP32_CONFIGS = _configs(
    (64, 64, 16, 4, 2), (64, 64, 16, 4, 3), (32, 64, 32, 4, 2), (32, 32, 32, 4, 3),
)

# Fewer input channels per group than one 16-wide MMA K step (conv1's 3): every element of the
# gathered x tile (forward and weight gradient) decodes its own tap and loads one scalar, so
# addresses and masks need several times the registers of conv2-5 and the tiles above spill
# (0.1-2.4 KB). The autotuner gets these instead (fp32: smaller still, TF32: at most 64x64):
# conv1's forward and weight gradient when the packed kernels below cannot take them.
SMALL_CIN = 16
FWD_SMALL_CIN_CONFIGS = _configs(
    (64, 128, 32, 4, 3), (64, 64, 32, 4, 4), (64, 64, 16, 4, 3), (32, 64, 32, 4, 3),
)
# (128x64x32 sat at 255 registers with Triton 3.8/3.9 and spills 44 B with 3.7 on sm_90: dropped.)
# conv1's weight gradient is 363 taps x 96 channels: BLOCK_N = 32 divides C_out (BLOCK_N = 64
# issued 128 columns for 96, 71% of the tile: dropped) and M = 363 pads to 384 (95%) with 64 or
# 128 rows. (128x32x64 spills 212-244 B.)
WGRAD_SMALL_CIN_CONFIGS = _configs((64, 32, 64, 4, 3), (64, 32, 32, 4, 3), (128, 32, 32, 4, 3))
TF32_SMALL_CIN_MAX_TILE = 64 * 64
# and BLOCK_K at most 32: Triton 3.6 spills conv1's TF32 wgrad at 64x64x64 on sm_80 (12 B).
TF32_SMALL_CIN_MAX_K = 32
FWD_SMALL_CIN_FP32_CONFIGS = _configs((64, 32, 16, 4, 3), (32, 64, 16, 4, 3), (32, 32, 32, 4, 3))
WGRAD_SMALL_CIN_FP32_CONFIGS = _configs((32, 32, 16, 4, 3), (32, 32, 32, 4, 3), (32, 32, 32, 4, 2))

# conv1's own forward (_conv_fwd_packed_kernel, C_in <= PACKED_CIN): the input packed once per
# call into zero-bordered rows of interleaved pixels (kernels._conv2d_relu_args._Packing), so a
# K block is groups of PACKED_VEC contiguous, aligned elements and needs no bounds mask: the
# loads vectorise (8 bytes in fp16/bf16, 16 in fp32) and pipeline. BLOCK_K = PACKED_BLOCK_K (the
# smallest tl.dot takes) keeps K's padding to 400 of 396 for conv1; BLOCK_N = 32 divides
# C_out = 96 (no wasted N), with the N tiles of one M tile launched next to each other so they
# share its input rows in L2.
PACKED_CIN = 4
PACKED_VEC = 4
PACKED_BLOCK_K = 16
FWD_PACKED_CONFIGS = _configs(
    (128, 32, PACKED_BLOCK_K, 4, 4), (256, 32, PACKED_BLOCK_K, 4, 4),
    (128, 32, PACKED_BLOCK_K, 4, 3), (64, 32, PACKED_BLOCK_K, 4, 4),
)
# (64x32 and 128x32 with 2 stages spill 8-24 B on sm_90 since the tail loop: 1 stage; exact
# fp32 multiplies on FMAs, the copies have little to hide.)
FWD_PACKED_FP32_CONFIGS = _configs(
    (64, 32, PACKED_BLOCK_K, 4, 1), (128, 32, PACKED_BLOCK_K, 4, 1),
    (32, 32, PACKED_BLOCK_K, 4, 3),
)

# conv1's weight gradient on the packed input (_conv_wgrad_packed_kernel): M = the 368 packed K
# elements (363 taps) x N = 96 channels, K = pixels. BLOCK_N = 32 divides C_out; 64 rows pad M
# to 384 (95%). (64x32x32 and 128x32x32, and 2 stages, fit 6-8 blocks per SM in fp16/bf16 and
# so launch under 2 waves of an H100 with the launcher's 88 splits; 2 stages do not pipeline.)
WGRAD_PACKED_CONFIGS = _configs((64, 32, 64, 4, 3), (64, 32, 64, 4, 4))
WGRAD_PACKED_FP32_CONFIGS = _configs((32, 32, 32, 4, 3), (64, 32, 16, 4, 2), (32, 32, 16, 4, 3))
# conv1's packed kernels -> path -> configs (no pruner: one shape)
PACKED_TUNING = {
    "fwd_packed": {"mma": FWD_PACKED_CONFIGS, "fma": FWD_PACKED_FP32_CONFIGS},
    "wgrad_packed": {"mma": WGRAD_PACKED_CONFIGS, "fma": WGRAD_PACKED_FP32_CONFIGS},
}

def _tile(c: triton.Config) -> tuple:
    return (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps,
            c.num_stages)


def _union(*lists: list[triton.Config]) -> list[triton.Config]:
    out = {}
    for c in (c for configs in lists for c in configs):
        out.setdefault(_tile(c), c)
    return list(out.values())


def _make_pruner(regular: list[triton.Config], small_cin: list[triton.Config] | None,
                 tf32_drop: tuple[tuple, ...] = ()):
    """The autotuner's early_config_prune for one kernel and path: by shape (``CG_IN``) and
    precision, keep the configs that compile without register spills (see ``aot_specs``);
    ``tf32_drop``: regular-path tiles that spill with TF32 operands only."""
    regular_tiles = {_tile(c) for c in regular}
    small_tiles = {_tile(c) for c in (small_cin if small_cin is not None else regular)}

    def prune(configs, named_args, **kwargs):
        small = kwargs["CG_IN"] < SMALL_CIN
        tiles = small_tiles if small else regular_tiles
        max_tile = TF32_SMALL_CIN_MAX_TILE if small and small_cin is not None else TF32_MAX_TILE
        max_k = TF32_SMALL_CIN_MAX_K if small and small_cin is not None else float("inf")
        drop = set() if small else set(tf32_drop)
        if kwargs["INPUT_PRECISION"] != "tf32":
            max_tile, max_k, drop = float("inf"), float("inf"), set()
        return [c for c in configs if _tile(c) in tiles and _tile(c) not in drop
                and c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"] <= max_tile
                and c.kwargs["BLOCK_K"] <= max_k]

    return prune


# kernel -> path -> (every config the autotuner holds, its pruner). dgrad's x side is its GEMM
# N (C_in), not a gather, so it keeps one list for every shape.
CONV_TUNING = {
    kernel: {
        path: (_union(regular, small or []), _make_pruner(regular, small, drop))
        for path, regular, small, drop in lists
    }
    for kernel, lists in {
        "fwd": [("mma", FWD_CONFIGS, FWD_SMALL_CIN_CONFIGS, ()),
                ("fma", FWD_FP32_CONFIGS, FWD_SMALL_CIN_FP32_CONFIGS, ())],
        "dgrad": [("mma", DGRAD_CONFIGS, None, DGRAD_TF32_DROP),
                  ("fma", DGRAD_FP32_CONFIGS, None, ())],
        "wgrad": [("mma", WGRAD_CONFIGS, WGRAD_SMALL_CIN_CONFIGS, WGRAD_TF32_DROP),
                  ("fma", WGRAD_FP32_CONFIGS, WGRAD_SMALL_CIN_FP32_CONFIGS, ())],
    }.items()
}
# The interpreter runs one program at a time with numpy: one small config (tl.dot needs 16).
CONV_INTERPRET_CONFIG = _config(32, 16, 16, 4, 1)

# The backward's ReLU-mask pass (_relu_grad_kernel, conv1-5's outputs): a (pixels x channels)
# tile per step; and the split-sum kernel's block (wgrad partials, bias partials).
RELU_GRAD_BLOCK_P = 64
RELU_GRAD_BLOCK_C = 32  # divides AlexNet's 96, 256 and 384 output channels
RELU_GRAD_LAUNCH = triton.Config({}, num_warps=4, num_stages=1)
SUM_BLOCK = 1024


# ----------------------------------------------------------------------------------------------
# Element-wise ops: one program per BLOCK output elements
# ----------------------------------------------------------------------------------------------

def _blocks(*blocks: tuple[int, int]) -> list[triton.Config]:
    """Element-wise configs from (BLOCK, warps) pairs; one stage (no loop to pipeline)."""
    return [triton.Config({"BLOCK": block}, num_warps=warps, num_stages=1)
            for block, warps in blocks]


# local_response_norm, forward and backward (conv1's and conv2's output, (128, 96, 55, 55) and
# (128, 256, 27, 27), when LRN runs on its own). Memory-bound: 4 elements per thread (8 made the
# backward take 128 registers in the sm_90 compile), three granularities.
LRN_CONFIGS = _blocks((256, 2), (512, 4), (1024, 8))
# max_pool2d, forward and backward (pool5: (128, 256, 13, 13) -> (128, 256, 6, 6), 3x3 / 2).
POOL_CONFIGS = _blocks((256, 4), (512, 4), (1024, 8))
# lrn_max_pool2d (after conv1: (128, 96, 55, 55) -> (128, 96, 27, 27); after conv2: (128, 256,
# 27, 27) -> (128, 256, 13, 13)). More work per element than plain LRN or pooling (9 taps x 5
# channels forward): 1-2 elements per thread (2 takes ~115 registers in the sm_90 compile, no
# spills).
LRN_POOL_FWD_CONFIGS = _blocks((128, 4), (256, 4), (256, 8))
# The backward computes every channel's term (no skip where the routed gradient is 0, see
# kernels.lrn_max_pool2d): 2 elements per thread spilled 8 bytes on sm_90, so 1 per thread.
LRN_POOL_BWD_CONFIGS = _blocks((64, 2), (128, 4), (256, 8))
# Under the interpreter each program is numpy on the whole block: large blocks, few programs.
ELEMENTWISE_INTERPRET_CONFIG = triton.Config({"BLOCK": 1024}, num_warps=4, num_stages=1)


def elementwise_autotune(fn, configs: list[triton.Config], key: list[str]):
    """The autotuner of an element-wise kernel over ``configs`` (its one interpreter config
    under ``TRITON_INTERPRET=1``)."""
    return triton.autotune(autotune_configs(configs, ELEMENTWISE_INTERPRET_CONFIG), key=key)(fn)
