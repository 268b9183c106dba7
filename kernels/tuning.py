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

import os

import triton

from kernels._common import INTERPRET
from kernels._conv_tma import dgrad_tma_boxes, fwd_tma_boxes, tma_usable, with_boxes

# Configurations compiled ahead of time (spill-free, see ``aot_specs``) but not yet run on a GPU:
# the autotuners leave them out unless LIGHTNING_ALEXNET_UNVERIFIED=1. The GPU report's parity
# stage sets it, so that every one of them is checked against PyTorch before it is made a default.
UNVERIFIED_ENV = "LIGHTNING_ALEXNET_UNVERIFIED"


class UnverifiedSettingError(ValueError):
    """LIGHTNING_ALEXNET_UNVERIFIED holds something else than 0 or 1 (raised on import)."""


def _unverified_enabled() -> bool:
    value = os.environ.get(UNVERIFIED_ENV, "0")
    if value not in ("0", "1"):
        raise UnverifiedSettingError(f"{UNVERIFIED_ENV}={value!r}: set it to 1 (also autotune over the "
                         f"configurations not yet checked on a GPU) or 0 / unset (do not)")
    return value == "1"


UNVERIFIED = _unverified_enabled()


def autotune_configs(gpu: list[triton.Config], interpret: triton.Config) -> list[triton.Config]:
    """Multi-config autotune fails without a GPU: the interpreter gets one configuration."""
    return [interpret] if INTERPRET else gpu


def with_unverified(verified: list[triton.Config],
                    unverified: list[triton.Config]) -> list[triton.Config]:
    """``verified``, plus ``unverified`` when LIGHTNING_ALEXNET_UNVERIFIED=1 (see above)."""
    return verified + unverified if UNVERIFIED else verified


# ----------------------------------------------------------------------------------------------
# conv2d_relu: implicit-GEMM tiles (conv1-conv5, channels_last)
# ----------------------------------------------------------------------------------------------

def _config(block_m: int, block_n: int, block_k: int, warps: int, stages: int,
            tail: int | None = None) -> triton.Config:
    """``tail``: dgrad's BLOCK_N_TAIL (its second accumulator's columns, 0 for none); the other
    kernels have no such parameter (None)."""
    kwargs = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k}
    if tail is not None:
        kwargs["BLOCK_N_TAIL"] = tail
    return triton.Config(kwargs, num_warps=warps, num_stages=stages)


def _configs(*tiles: tuple[int, int, int, int, int]) -> list[triton.Config]:
    """Configs from (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages) tuples."""
    return [_config(*tile) for tile in tiles]


def _dgrad_configs(*tiles: tuple[int, ...]) -> list[triton.Config]:
    """dgrad configs from (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages[, BLOCK_N_TAIL]) tuples."""
    return [_config(*tile[:5], tail=tile[5] if len(tile) > 5 else 0) for tile in tiles]


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
#
# Forward and dgrad (issue 13): BLOCK_K 32 and 64, and the pruner keeps, per layer, only tiles
# that waste < 10% of their multiply-adds (MIN_TILE_EFFICIENCY): BLOCK_N = 128 leaves conv4's
# 192 output channels per group (and dgrad's 192 input channels of conv4-5) to the 64-wide
# tiles. Still at most 4 warps: the kernels' K loop is the flattened (kh, kw, channel) loop of
# the Inductor template that pytorch#173068 caught miscompiling with 8 (triton#1254), and no GPU
# here can show that 8 warps compute the right numbers.
FWD_CONFIGS = _configs(
    (128, 128, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (64, 64, 32, 4, 4),
    (128, 64, 64, 4, 3), (64, 128, 64, 4, 3), (64, 64, 64, 4, 4),
)
# dgrad's N is C_in per group: 48 (conv2), 256, 192, 192. For 48, a power-of-two BLOCK_N wastes
# 25% (64) or more, and BLOCK_N = 16 would load each A tile (the gathered dy, the operand with
# 25 taps x 128 channels per row) three times, once per 16 columns. So the last tiles carry two
# accumulators, 32 + 16 columns (BLOCK_N_TAIL), sharing each A tile: a program covers all 48
# channels, A is loaded once, and no MMA column is wasted. The pruner takes them only where no
# one-accumulator tile reaches MIN_TILE_EFFICIENCY (see _efficient).
DGRAD_CONFIGS = _dgrad_configs(
    (64, 128, 32, 4, 3), (128, 64, 32, 4, 3), (64, 64, 32, 4, 4), (64, 64, 64, 4, 3),
    (128, 64, 64, 4, 3), (64, 64, 64, 4, 4),
    (128, 32, 32, 4, 3, 16), (64, 32, 32, 4, 4, 16), (128, 32, 64, 4, 3, 16),
    (64, 32, 64, 4, 4, 16), (256, 32, 32, 4, 3, 16),
)
# (128x128x32 sat at 254-255 registers with Triton 3.8/3.9 and spills with 3.7 on sm_80: dropped.)
WGRAD_CONFIGS = _configs((128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (64, 64, 32, 4, 4))
# Spill with TF32 operands on sm_80 (Triton 3.9) once the backward reads the masked gradient
# alone: dgrad 64x64x64 s3 (conv3 8 B, conv4 12 B); wgrad 64x128x32 s3 (conv2 4 B, at 128
# registers, since wgrad rounds its x tile to TF32 in registers). The pruner leaves them to
# fp16/bf16, so TF32's wgrad on conv2-5 autotunes over 128x64x32 and 64x64x32. Forward and
# dgrad with TF32 keep BLOCK_K = 32: at 64 (4-byte operands) their tiles spill on sm_80
# (104-132 B at 128x64x64), sit at 254-255 registers or fill 96-144 KB of shared memory.
FWD_TF32_DROP = ((128, 64, 64, 4, 3), (64, 128, 64, 4, 3), (64, 64, 64, 4, 4))
DGRAD_TF32_DROP = ((64, 64, 64, 4, 3), (128, 64, 64, 4, 3), (64, 64, 64, 4, 4),
                   (128, 32, 64, 4, 3, 16), (64, 32, 64, 4, 4, 16))
WGRAD_TF32_DROP = ((64, 128, 32, 4, 3),)
# TF32 operands take 4 bytes: tiles above this spill (on sm_80, and the forward on sm_90).
TF32_MAX_TILE = 128 * 64

# conv2-5 forward and dgrad with the weight (the GEMM's B) through a TMA descriptor (sm_90+;
# kernels._conv_tma): every tile above with USE_TMA=True and a pre_hook that sets the
# descriptors' boxes from the tile. Extra entries of the "mma_tma" autotuners (below), which
# the launcher takes only where it built descriptors; never run on a GPU: UNVERIFIED.
FWD_TMA_CONFIGS = [with_boxes(c, fwd_tma_boxes, True) for c in FWD_CONFIGS]
DGRAD_TMA_CONFIGS = [with_boxes(c, dgrad_tma_boxes, True) for c in DGRAD_CONFIGS]

# 8 warps (issue 13: "up to 8 warps where the compiler allows it without spills"), for the larger
# tiles: 256 threads share the accumulator, so a 128x128 or 256x64 tile holds 64 fp32 values per
# thread, as 64x128 does with 4 warps. Behind the LIGHTNING_ALEXNET_UNVERIFIED gate (see above):
# the K loop is the flattened (kh, kw, channel) loop of the Inductor template that miscompiled
# with 8 warps (pytorch#173068, triton#1254), so the autotuner leaves them out until a GPU parity
# run has checked their numbers. ``aot_specs`` compiles them always; at every conv2-5 shape the
# pruner keeps them for, Triton 3.9: 0 spills on sm_80 and sm_90, 16-byte cp.async with
# wait_group 2 (3 with dgrad's two accumulators), wgmma wait_group >= 1 on sm_90 (README, "The
# Triton kernels"). The pruner keeps them only where their tile reaches the efficiency rules
# below, like the 4-warp ones (BLOCK_N = 128 leaves conv4's forward and dgrad to 256x64).
# (256x128x32 forward: 255 registers on sm_80, 236-254 on sm_90 in fp16/bf16, no headroom (as
# 4-warp wgrad 128x128x32 above): dropped.)
FWD_8WARP_CONFIGS = _configs(
    (128, 128, 64, 8, 3), (128, 128, 32, 8, 3), (256, 64, 64, 8, 3), (256, 64, 32, 8, 3),
)
DGRAD_8WARP_CONFIGS = _dgrad_configs(
    (128, 128, 64, 8, 3), (128, 128, 32, 8, 3), (256, 64, 64, 8, 3), (256, 64, 32, 8, 3),
    (256, 32, 64, 8, 3, 16), (256, 32, 32, 8, 3, 16),
)
WGRAD_8WARP_CONFIGS = _configs((128, 128, 32, 8, 3), (256, 64, 32, 8, 3), (128, 128, 64, 8, 3))
# With TF32 the 8-warp tiles may be twice TF32_MAX_TILE (the limit is per 4 warps, see
# _make_pruner), except 256 x 64 (and dgrad's 256 x (32 + 16)) with BLOCK_K = 64: three stages of
# 4-byte operands take 228-240 KB of shared memory on sm_90 (over its 227 KB per block), the
# forward's spills 44 B on sm_80 at conv2 (255 registers) and dgrad's sits at 244-250 registers.
# (128x128x64 fits: 192 KB on sm_90, 128 KB on sm_80, 158-228 registers.)
FWD_TF32_DROP += ((256, 64, 64, 8, 3),)
DGRAD_TF32_DROP += ((256, 64, 64, 8, 3), (256, 32, 64, 8, 3, 16))


def _persistent(programs_per_sm: int, configs: list[triton.Config]) -> list[triton.Config]:
    """``configs`` (forward or dgrad tiles) on a persistent grid: about ``programs_per_sm``
    programs per SM (the kernel's PERSISTENT), each looping over tiles."""
    return [triton.Config({**c.kwargs, "PERSISTENT": programs_per_sm}, num_warps=c.num_warps,
                          num_stages=c.num_stages) for c in configs]


# The forward and dgrad on a persistent grid (issue 13), also behind the gate: min(tiles, SMs x
# PERSISTENT / groups) programs per group, each taking every programs-th tile in the grid's N-fastest
# order (bit-identical to one program per tile). PERSISTENT is at most the programs an SM holds
# at once in the compile report (1-2 for the 8-warp tiles, 2-4 for 4-warp 128x64x32), so the
# grid is one wave and no SM waits on a second. dgrad: conv3-5 take the 64-wide tiles (BLOCK_N
# = 64 divides 256 and 192 input channels per group), conv2 the 256 x (32 + 16) one.
FWD_PERSISTENT_CONFIGS = (_persistent(1, _configs((128, 128, 64, 8, 3), (256, 64, 32, 8, 3)))
                          + _persistent(2, _configs((128, 64, 32, 4, 3))))
DGRAD_PERSISTENT_CONFIGS = (
    _persistent(1, _dgrad_configs((256, 64, 32, 8, 3), (256, 32, 32, 8, 3, 16)))
    + _persistent(2, _dgrad_configs((128, 64, 32, 4, 3)))
)

# Exact fp32 (input_precision="ieee") has no tensor-core instruction: tl.dot becomes FMAs with the
# accumulator and operands in registers, so the tiles are smaller (the tensor-core lists spill
# up to 6 KiB there). conv2-conv5, as above.
FWD_FP32_CONFIGS = _configs(
    (64, 64, 16, 4, 2), (64, 64, 16, 4, 3), (128, 64, 16, 4, 2), (64, 128, 16, 4, 2),
)
# (64x64x16 with 3 stages spilled 8 bytes on sm_90 with Triton 3.9 at conv2-5: dropped.)
DGRAD_FP32_CONFIGS = _dgrad_configs(
    (64, 64, 16, 4, 2), (32, 64, 32, 4, 2), (32, 32, 32, 4, 3),
    # conv2's 48 input channels per group, as in DGRAD_CONFIGS
    (64, 32, 16, 4, 2, 16), (32, 32, 32, 4, 2, 16),
)
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
    """(BLOCK_M, BLOCK_N, BLOCK_K, warps, stages), and BLOCK_N_TAIL when there is one, and
    ("persistent", PERSISTENT) for a persistent grid."""
    tail = c.kwargs.get("BLOCK_N_TAIL", 0)
    persistent = c.kwargs.get("PERSISTENT", 0)
    return (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps,
            c.num_stages) + ((tail,) if tail else ()) + (("persistent", persistent)
                                                          if persistent else ())


def _entry(c: triton.Config) -> tuple:
    """A config's identity in a list: its tile, and "tma" for a weight-descriptor config."""
    return _tile(c) + (("tma",) if c.kwargs.get("USE_TMA") else ())


# The pruner keeps the forward and dgrad configs whose tiles waste at most 10% of the
# multiply-adds they issue on the call's GEMM (issue 13's goal on every AlexNet layer).
MIN_TILE_EFFICIENCY = 0.9


def conv_gemm_macs(kernel: str, sizes: dict, tile: dict) -> tuple[int, int]:
    """(useful, issued) multiply-adds of one group's implicit GEMM for ``kernel`` ("fwd" or
    "dgrad") at the sizes of ``_conv_fwd_kernel``/``_conv_dgrad_kernel`` (N, CG_IN, H, W,
    CG_OUT, OH, OW, KH, KW) with the tile's BLOCK_M/N/K (and dgrad's BLOCK_N_TAIL): what the
    kernels issue, M, N and K each padded to the tile. Useful: the forward's products, so
    dgrad's taps that reach no output (stride > 1, borders) count as waste."""
    s = sizes
    taps = s["KH"] * s["KW"]
    useful = s["N"] * s["OH"] * s["OW"] * s["CG_OUT"] * taps * s["CG_IN"]
    if kernel == "fwd":  # output pixels x C_out, K = (kh, kw, c_in) flattened
        m, n, k = s["N"] * s["OH"] * s["OW"], s["CG_OUT"], taps * s["CG_IN"]
    elif kernel == "dgrad":  # input pixels x C_in, K = (kh, kw, c_out) flattened
        m, n, k = s["N"] * s["H"] * s["W"], s["CG_IN"], taps * s["CG_OUT"]
    else:
        raise ValueError(f"no GEMM model for conv kernel {kernel!r}; expected 'fwd' or 'dgrad'")
    cols = tile["BLOCK_N"] + tile.get("BLOCK_N_TAIL", 0)  # columns one program computes

    def padded(size, block):
        return -(-size // block) * block

    return useful, padded(m, tile["BLOCK_M"]) * padded(n, cols) * padded(k, tile["BLOCK_K"])


def _efficient(kernel: str, configs: list[triton.Config], sizes: dict) -> list[triton.Config]:
    """The configs reaching MIN_TILE_EFFICIENCY on this shape, single-accumulator tiles first:
    the two-accumulator ones (BLOCK_N_TAIL) only where no single one reaches it (conv2's 48
    input channels per group in dgrad). Where none reaches it (an odd channel count), the
    most efficient ones."""
    def efficiency(c):
        useful, issued = conv_gemm_macs(kernel, sizes, c.kwargs)
        return useful / issued

    for pool in ([c for c in configs if not c.kwargs.get("BLOCK_N_TAIL")], configs):
        kept = [c for c in pool if efficiency(c) >= MIN_TILE_EFFICIENCY]
        if kept:
            return kept
    best = max(map(efficiency, configs), default=None)
    return [c for c in configs if efficiency(c) == best]


def _union(*lists: list[triton.Config]) -> list[triton.Config]:
    out = {}
    for c in (c for configs in lists for c in configs):
        out.setdefault(_entry(c), c)
    return list(out.values())


def _make_pruner(regular: list[triton.Config], small_cin: list[triton.Config] | None,
                 tf32_drop: tuple[tuple, ...] = (), gemm: str | None = None):
    """The autotuner's early_config_prune for one kernel and path: by shape (``CG_IN``) and
    precision, keep the configs that compile without register spills (see ``aot_specs``);
    ``tf32_drop``: regular-path tiles that spill with TF32 operands only. ``gemm`` ("fwd",
    "dgrad"): of the regular-path ones, keep those efficient on the call's shape
    (``_efficient``; conv1's small-channel lists are sized for its own constraints)."""
    regular_tiles = {_entry(c) for c in regular}
    small_tiles = {_entry(c) for c in (small_cin if small_cin is not None else regular)}

    def prune(configs, named_args, **kwargs):
        configs = tma_usable(configs, {**named_args, **kwargs})
        small = kwargs["CG_IN"] < SMALL_CIN
        tiles = small_tiles if small else regular_tiles
        max_tile = TF32_SMALL_CIN_MAX_TILE if small and small_cin is not None else TF32_MAX_TILE
        max_k = TF32_SMALL_CIN_MAX_K if small and small_cin is not None else float("inf")
        drop = set() if small else set(tf32_drop)
        if kwargs["INPUT_PRECISION"] != "tf32":
            max_tile, max_k, drop = float("inf"), float("inf"), set()
        # (the TF32 tile limit is per 4 warps: 8 warps hold half as much of a tile each)
        kept = [c for c in configs if _entry(c) in tiles and _tile(c) not in drop
                and c.kwargs["BLOCK_M"] * (c.kwargs["BLOCK_N"] + c.kwargs.get("BLOCK_N_TAIL", 0))
                <= max_tile * c.num_warps / 4 and c.kwargs["BLOCK_K"] <= max_k]
        own_small_list = small and small_cin is not None
        return kept if gemm is None or own_small_list else _efficient(gemm, kept, kwargs)

    return prune


# wgrad on conv2-5 keeps the tiles that issue at most 1 / WGRAD_MIN_TILE_EFFICIENCY of its GEMM
# (M = KH*KW*Cg_in, N = Cg_out) with the padding to whole tiles (conv4's N = 192 drops BLOCK_N =
# 128: 75%; conv2's M = 1,200 keeps 64 and 128: 99% and 94%); where none does, the least
# wasteful. conv1's small-C_in tiles are chosen by hand.
WGRAD_MIN_TILE_EFFICIENCY = 0.9


def _tile_efficiency(c: triton.Config, m: int, n: int) -> float:
    bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
    return m * n / (triton.cdiv(m, bm) * bm * triton.cdiv(n, bn) * bn)


def _wgrad_efficient(prune):
    """``prune``, then (conv2-5) only the tiles efficient on this shape's GEMM."""
    def pruned(configs, named_args, **kwargs):
        kept = prune(configs, named_args, **kwargs)
        if kwargs["CG_IN"] < SMALL_CIN or not kept:
            return kept
        m, n = kwargs["KH"] * kwargs["KW"] * kwargs["CG_IN"], kwargs["CG_OUT"]
        best = max(_tile_efficiency(c, m, n) for c in kept)
        least = min(best, WGRAD_MIN_TILE_EFFICIENCY)
        return [c for c in kept if _tile_efficiency(c, m, n) >= least]

    return pruned


# kernel -> path -> the configs behind the LIGHTNING_ALEXNET_UNVERIFIED gate: the autotuner
# holds them only when it is set, ``aot_specs`` compiles them always (and names them so).
CONV_UNVERIFIED = {
    "fwd": {"mma": FWD_8WARP_CONFIGS + FWD_PERSISTENT_CONFIGS, "fma": []},
    "dgrad": {"mma": DGRAD_8WARP_CONFIGS + DGRAD_PERSISTENT_CONFIGS, "fma": []},
    "wgrad": {"mma": WGRAD_8WARP_CONFIGS, "fma": []},
}


def is_unverified(kernel: str, path: str, config: triton.Config) -> bool:
    """Whether ``config`` is one of ``kernel``'s gated configs on ``path`` (CONV_UNVERIFIED)."""
    return _entry(config) in {_entry(c) for c in CONV_UNVERIFIED[kernel][path]}


# kernel -> path -> (every config the autotuner holds, its pruner). dgrad's x side is its GEMM
# N (C_in), not a gather, so it keeps one list for every shape. The pruner knows the gated
# configs too, so that ``aot_specs`` prunes them as the autotuner would with the gate on.
CONV_TUNING = {
    kernel: {
        path: (_union(with_unverified(regular, CONV_UNVERIFIED[kernel][path]), small or []),
               _make_pruner(regular + CONV_UNVERIFIED[kernel][path], small, drop,
                            kernel if kernel in ("fwd", "dgrad") else None))
        for path, regular, small, drop in lists
    }
    for kernel, lists in {
        "fwd": [("mma", FWD_CONFIGS, FWD_SMALL_CIN_CONFIGS, FWD_TF32_DROP),
                ("fma", FWD_FP32_CONFIGS, FWD_SMALL_CIN_FP32_CONFIGS, ())],
        "dgrad": [("mma", DGRAD_CONFIGS, None, DGRAD_TF32_DROP),
                  ("fma", DGRAD_FP32_CONFIGS, None, ())],
        "wgrad": [("mma", WGRAD_CONFIGS, WGRAD_SMALL_CIN_CONFIGS, WGRAD_TF32_DROP),
                  ("fma", WGRAD_FP32_CONFIGS, WGRAD_SMALL_CIN_FP32_CONFIGS, ())],
    }.items()
}
CONV_TUNING["wgrad"] = {path: (configs, _wgrad_efficient(prune))
                        for path, (configs, prune) in CONV_TUNING["wgrad"].items()}
# "mma_tma": the tensor-core configs, each with the descriptors' pre_hook, and the TMA ones
# (behind the UNVERIFIED gate); the pruner knows every TMA config, gate or not (``aot_specs``).
TMA_CONFIGS = {"fwd": FWD_TMA_CONFIGS, "dgrad": DGRAD_TMA_CONFIGS}
for _kernel, (_regular, _small, _drop) in {
    "fwd": (FWD_CONFIGS, FWD_SMALL_CIN_CONFIGS, FWD_TF32_DROP),
    "dgrad": (DGRAD_CONFIGS, None, DGRAD_TF32_DROP),
}.items():
    _boxes = TMA_CONFIGS[_kernel][0].pre_hook
    CONV_TUNING[_kernel]["mma_tma"] = (
        [with_boxes(c, _boxes, False) for c in CONV_TUNING[_kernel]["mma"][0]]
        + with_unverified([], TMA_CONFIGS[_kernel]),
        _make_pruner(_regular + CONV_UNVERIFIED[_kernel]["mma"] + TMA_CONFIGS[_kernel], _small,
                     _drop, _kernel),
    )
# The interpreter runs one program at a time with numpy: one small config (tl.dot needs 16).
CONV_INTERPRET_CONFIG = _config(32, 16, 16, 4, 1)
DGRAD_INTERPRET_CONFIG = _config(32, 16, 16, 4, 1, tail=0)

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


# local_response_norm's forward (conv1's and conv2's output, (128, 96, 55, 55) and (128, 256,
# 27, 27), when LRN runs on its own). Memory-bound: 4 elements per thread, three granularities.
LRN_CONFIGS = _blocks((256, 2), (512, 4), (1024, 8))
# max_pool2d, forward and backward (pool5: (128, 256, 13, 13) -> (128, 256, 6, 6), 3x3 / 2).
POOL_CONFIGS = _blocks((256, 4), (512, 4), (1024, 8))
# lrn_max_pool2d (after conv1: (128, 96, 55, 55) -> (128, 96, 27, 27); after conv2: (128, 256,
# 27, 27) -> (128, 256, 13, 13)). More work per element than plain LRN or pooling (9 taps x 5
# channels forward): 1-2 elements per thread (2 takes ~115 registers in the sm_90 compile, no
# spills).
LRN_POOL_FWD_CONFIGS = _blocks((128, 4), (256, 4), (256, 8))
# Under the interpreter each program is numpy on the whole block: large blocks, few programs.
ELEMENTWISE_INTERPRET_CONFIG = triton.Config({"BLOCK": 1024}, num_warps=4, num_stages=1)


# The LRN and LRN + pool backwards sweep channels: one program per BLOCK pixels x BLOCK_C
# channels of one group (after conv1 48 channels per tower, after conv2 128), looping over its
# channels plus a halo of SIZE - 1 (the fused one 2 (SIZE - 1)) that neighbouring chunks also
# load; BLOCK_C >= the group's channels loads each element once. Smaller chunks give more
# programs (conv2's map has 187k pixel-rows of one tower) at the halo's price.
def _sweeps(*blocks: tuple[int, int, int]) -> list[triton.Config]:
    """Channel-sweep configs from (BLOCK pixels, BLOCK_C channels, warps); one stage."""
    return [triton.Config({"BLOCK": block, "BLOCK_C": block_c}, num_warps=warps, num_stages=1)
            for block, block_c, warps in blocks]


# A thread walks its chunk's channels one after the other, so BLOCK_C also sets how many
# dependent steps it makes: 16 (short threads, the halo adds up to 25% loads) to whole groups
# (conv1's 48 per tower, conv2's 128: each element loaded once). Not timed on a GPU yet.
# 1-2 elements per thread (32-40 registers on sm_90), the last SIZE channels' terms and the
# queues in registers.
LRN_BWD_CONFIGS = _sweeps((128, 16, 4), (128, 48, 4), (256, 64, 4), (256, 128, 8))
# The fused backward also keeps the SIZE inputs of the scale's window: 1 element per thread
# (40 registers).
LRN_POOL_BWD_CONFIGS = _sweeps((128, 16, 4), (64, 48, 2), (128, 64, 4), (256, 128, 8))
# Under the interpreter: a chunk of 4 channels, so the tests' groups of 4-12 channels run
# several chunks with their halos (and the groups of 3 and 4 one chunk).
SWEEP_INTERPRET_CONFIG = triton.Config({"BLOCK": 1024, "BLOCK_C": 4}, num_warps=4, num_stages=1)


def elementwise_autotune(fn, configs: list[triton.Config], key: list[str]):
    """The autotuner of an element-wise kernel over ``configs`` (its one interpreter config
    under ``TRITON_INTERPRET=1``)."""
    return triton.autotune(autotune_configs(configs, ELEMENTWISE_INTERPRET_CONFIG), key=key)(fn)


def sweep_autotune(fn, configs: list[triton.Config], key: list[str]):
    """The autotuner of a channel-sweep kernel over ``configs`` (under ``TRITON_INTERPRET=1``,
    its one interpreter config)."""
    return triton.autotune(autotune_configs(configs, SWEEP_INTERPRET_CONFIG), key=key)(fn)
