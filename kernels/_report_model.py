"""The compile report's model of each kernel at AlexNet's batch-128 shapes: grid, tile
efficiency, occupancy and a roofline time against published GPU peaks (used by
:mod:`kernels.compile_report`; not a measurement).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass

from kernels import tuning


def split_name(name: str) -> tuple[str, str, str]:
    """'conv2d_relu_fwd[conv2, BM=64 BN=64 BK=16 w4 s2, fp32]' -> (kernel, config, dtype)."""
    kernel, _, rest = name.partition("[")
    parts = [p.strip() for p in rest.rstrip("]").split(",")] if rest else []
    if len(parts) >= 2:
        return kernel, ", ".join(parts[:-1]), parts[-1]
    return kernel, ", ".join(parts), ""


@dataclass(frozen=True)
class Gpu:
    """Published peaks, dense (no sparsity), from NVIDIA's datasheets: "NVIDIA H100 Tensor Core
    GPU" (SXM5: 989.4 TFLOPS bf16/fp16, 494.7 TF32, 66.9 fp32, 3.35 TB/s HBM3, 132 SMs) and
    "NVIDIA A100 Tensor Core GPU" (SXM4 80 GB: 312 bf16/fp16, 156 TF32, 19.5 fp32, 2,039 GB/s
    HBM2e, 108 SMs). Shared memory per SM from the CUDA programming guide's table of compute
    capabilities (sm_90: 228 KB, sm_80: 164 KB, 1 KB of it reserved per block)."""

    name: str
    sms: int
    shared_per_sm: int  # bytes
    tflops: dict  # spec dtype label -> dense TFLOP/s of the instruction path it compiles to
    tb_per_s: float


GPUS = {
    90: Gpu("H100 SXM5", 132, 228 * 1024,
            {"fp16": 989.4, "bf16": 989.4, "fp32-tf32": 494.7, "fp32": 66.9}, 3.35),
    80: Gpu("A100 SXM4 80GB", 108, 164 * 1024,
            {"fp16": 312.0, "bf16": 312.0, "fp32-tf32": 156.0, "fp32": 19.5}, 2.039),
}


@dataclass(frozen=True)
class Workload:
    """One launch at batch 128. GEMM kernels count multiply-adds, elementwise ones elements."""

    blocks: int  # programs in the grid
    useful: int  # MACs the math needs (elements for elementwise kernels)
    issued: int  # MACs the tiles compute, padding included (lanes for elementwise kernels)
    macs: int  # MACs timed against the compute peak (0: memory-bound kernel)
    bytes: int  # compulsory DRAM traffic: each operand read once, each result written once

    @property
    def tile_efficiency(self) -> float:
        return self.useful / self.issued


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _padded(size: int, block: int) -> int:
    return _cdiv(size, block) * block


def _elem_bytes(dtype: str) -> int:
    return 2 if dtype in ("fp16", "bf16") else 4


def _conv_workload(kernel: str, layer: str, dtype: str, consts: dict, sms: int) -> Workload:
    # the layer table, geometry and split rules the launchers use (private module of the op)
    conv = importlib.import_module("kernels._conv2d_relu_args")
    specs = importlib.import_module("kernels._conv2d_relu_specs")

    (n, c_in, h, w), (c_out, cg_in, kh, kw), stride, pad, groups, _ = specs.ALEXNET_CONVS[layer]
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    cg_out, es = c_out // groups, _elem_bytes(dtype)
    geo = conv._Geometry(n, cg_in, h, w, cg_out, oh, ow, kh, kw, (stride, stride), (pad, pad),
                         groups)
    x, wt, y = n * c_in * h * w, c_out * cg_in * kh * kw, n * c_out * oh * ow
    pix = n * oh * ow
    macs = pix * cg_out * kh * kw * cg_in * groups  # one forward's multiply-adds
    if kernel == "conv2d_relu_split_sum":  # the most splits a tensor-core config launches
        blocks = _cdiv(wt, consts["BLOCK"])
        splits = conv._wgrad_max_splits(geo, sms, tuning.CONV_TUNING["wgrad"]["mma"][0], es)
        return Workload(blocks, wt, blocks * consts["BLOCK"], 0, splits * wt * 4 + wt * es)
    if kernel == "conv2d_relu_relu_grad":  # dy, y -> masked dy, and fp32 bias partials
        per_prog = conv._relu_grad_pixels_per_split(pix, c_out, sms)
        blocks = _cdiv(pix, per_prog) * _cdiv(c_out, tuning.RELU_GRAD_BLOCK_C)
        issued = _cdiv(pix, per_prog) * per_prog * _padded(c_out, tuning.RELU_GRAD_BLOCK_C)
        return Workload(blocks, y, issued, 0, 3 * y * es + _cdiv(pix, per_prog) * c_out * 4)
    bm, bn, bk = consts["BLOCK_M"], consts["BLOCK_N"], consts["BLOCK_K"]
    if kernel in ("conv2d_relu_wgrad", "conv2d_relu_wgrad_packed"):
        # (KH*KW*Cg_in) x Cg_out, K = pixels, split in chunks as the launcher's grid splits
        gm, gn, x_read, part = kh * kw * cg_in, cg_out, x, wt
        split = conv._wgrad_splits(geo, sms, bm, bn, bk, es)
        if kernel == "conv2d_relu_wgrad_packed":  # conv1: KP packed rows, its rows and tails
            pk = conv._Packing.of(geo)
            gm, x_read, part = pk.kp, pk.tail0 + pix * pk.tk, c_out * pk.kp
        per_split = conv._wgrad_split_pixels(pix, split, bk)
        k_issued = (split - 1) * per_split + _padded(pix - (split - 1) * per_split, bk)
        blocks = _cdiv(gm, bm) * _cdiv(gn, bn) * split * groups
        issued = _padded(gm, bm) * _padded(gn, bn) * k_issued * groups
        traffic = (x_read + y) * es + split * part * 4  # x and the masked dy; fp32 partials
    elif kernel == "conv2d_relu_fwd_packed":  # conv1: K = KH body rows + the windows' tails
        pk = conv._Packing.of(geo)
        gm, gn, gk = pix, cg_out, pk.kp
        blocks = _cdiv(gm, bm) * _cdiv(gn, bn)
        issued = _padded(gm, bm) * _padded(gn, bn) * _padded(gk, bk)
        # packed rows and tails, packed weight, output, and the fp32 bias
        traffic = (n * pk.hp * pk.wpc + pix * pk.tk + c_out * gk + y) * es + c_out * 4
    else:  # forward: pixels x Cg_out x (taps*Cg_in); dgrad: input pixels x Cg_in x (taps*Cg_out)
        gemm = kernel.removeprefix("conv2d_relu_")
        gm, gn = (pix, cg_out) if gemm == "fwd" else (n * h * w, cg_in)
        # as the kernel issues and the pruner models it (dgrad: BLOCK_N + BLOCK_N_TAIL columns);
        # a persistent config launches fewer programs, each looping over tiles
        tiles = _cdiv(gm, bm) * _cdiv(gn, bn + consts.get("BLOCK_N_TAIL", 0))
        blocks = conv._gemm_programs(tiles, groups, sms, consts.get("PERSISTENT", 0)) * groups
        issued = tuning.conv_gemm_macs(gemm, geo.sizes() | geo.op_params(), consts)[1] * groups
        traffic = ((x + wt + y) * es + c_out * es if kernel == "conv2d_relu_fwd"
                   else (y + wt + x) * es)  # dgrad reads the masked dy, writes dx
    return Workload(blocks, macs, issued, issued, traffic)


_SHAPE_TAG = re.compile(r"(\d+)x(\d+)x(\d+) b(\d+)(?: g(\d+))?")  # g: channel groups


def _elementwise_workload(kernel: str, config: str, dtype: str, consts: dict) -> Workload:
    """LRN, pooling and LRN + pooling: one program per BLOCK elements of the grid's tensor
    (the output forward, the input gradient backward); int8 window offsets saved for pooling.
    The LRN backwards sweep channels instead (``BLOCK_C`` in the config): one program per BLOCK
    pixels x BLOCK_C channels of one of the tag's ``g`` channel groups."""
    tag = _SHAPE_TAG.search(config)
    if tag is None:
        raise ValueError(f"{kernel}[{config}]: no 'HxWxC bN' input shape in the spec name")
    h, w, c, n = (int(v) for v in tag.groups()[:4])
    x, es = n * c * h * w, _elem_bytes(dtype)
    if kernel.startswith("lrn_") and "max_pool2d" not in kernel:
        grid_elems = x
        traffic = x * (2 * es + 4) if kernel == "lrn_fwd" else x * (3 * es + 4)  # fp32 scale
    else:
        oh = (h + 2 * consts["PH"] - consts["KH"]) // consts["SH"] + 1
        ow = (w + 2 * consts["PW"] - consts["KW"]) // consts["SW"] + 1
        y = n * c * oh * ow
        fused_bwd = kernel == "lrn_max_pool2d_bwd"  # recomputes the LRN from x
        grid_elems = y if kernel.endswith("_fwd") else x
        traffic = x * es + y * (es + 1) + (x * es if fused_bwd else 0)
    if "BLOCK_C" in consts:  # lanes: the pixels padded to BLOCK, for every channel
        groups = int(tag.group(5) or 1)
        pixel_blocks = _cdiv(h * w, consts["BLOCK"])
        blocks = n * groups * _cdiv(c // groups, consts["BLOCK_C"]) * pixel_blocks
        return Workload(blocks, grid_elems, n * c * pixel_blocks * consts["BLOCK"], 0, traffic)
    blocks = _cdiv(grid_elems, consts["BLOCK"])
    return Workload(blocks, grid_elems, blocks * consts["BLOCK"], 0, traffic)


def workload(name: str, consts: dict, sms: int = GPUS[90].sms) -> Workload:
    """The model of one spec, from its name (layer or shape tag) and its constexprs, launched on
    a GPU with ``sms`` SMs (the conv launchers size their split-K and ReLU-mask grids by it)."""
    kernel, config, dtype = split_name(name)
    if kernel.startswith("conv2d_relu"):
        return _conv_workload(kernel, config.split(",")[0].split()[0], dtype, consts, sms)
    if kernel.startswith(("lrn", "max_pool2d")):
        return _elementwise_workload(kernel, config, dtype, consts)
    raise ValueError(f"no workload model for kernel {kernel!r}")


def blocks_per_sm(gpu: Gpu, registers: int, shared: int, warps: int) -> int:
    """Resident blocks per SM by CUDA's occupancy limits: 64K registers allocated per warp in
    units of 256, 2,048 threads, 32 blocks, shared memory (plus 1 KB reserved per block)."""
    per_warp = _padded(registers * 32, 256)
    by_regs = (65536 // per_warp) // warps
    by_shared = gpu.shared_per_sm // (shared + 1024)
    return min(32, 2048 // (32 * warps), by_regs, by_shared)


def modelled_us(gpu: Gpu, dtype: str, load: Workload) -> tuple[float, str]:
    """Roofline time in µs: the slower of issued MACs at the dtype's peak and compulsory
    bytes at HBM bandwidth; which of the two bounds it."""
    compute = 2 * load.macs / (gpu.tflops[dtype] * 1e12) if load.macs else 0.0
    memory = load.bytes / (gpu.tb_per_s * 1e12)
    return max(compute, memory) * 1e6, "compute" if compute > memory else "memory"
