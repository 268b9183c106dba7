"""Ahead-of-time compilation of every kernel for sm_80 and sm_90, no GPU needed.

Each kernel module's ``aot_specs()`` lists its kernels x autotune configs x dtypes with the
arguments (and 16-divisibility hints) its launcher really passes. A spec passes when it compiles
for the arch, ptxas reports zero spill bytes, and a ``uses_dot`` spec contains tensor-core
instructions (``mma.sync`` on sm_80, ``wgmma``/``mma`` on sm_90).

Which tests run by default (``pytest``, i.e. ``-m "not slow"``): among the specs a default
``fit`` runs (``compile_report.in_default_fit``: channels_last convs in TF32/bf16/fp16, LRN and
pooling), per kernel, dtype and arch the one config with the largest tile (product of its
BLOCK_* constexprs), the likeliest to spill, counting conv1's small-channel lists apart. The
remaining configs, and the exact-fp32 convs a default fit does not run, are marked ``slow``
(``pytest -m slow tests/test_compile.py``); together the two are the exhaustive sweep that
``python -m kernels.compile_report --all`` prints.

Compilation runs in worker processes with the interpreter off (see kernels._aot), all of the
session's selected specs at once, cached by Triton in ~/.triton/cache.

The bottom half tests the harness itself: the PTX and workload parsing on small hand-written
snippets and shapes, and small probe kernels defined here: a tensor-core matmul, an elementwise
kernel, a kernel that must spill, and a tl.dot too small for the GPU. They are exposed through
``aot_specs()`` below so workers load them as they load a kernel module.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import triton
import triton.language as tl

from kernels import compile_report
from kernels._aot import (
    ARCHS,
    KERNEL_MODULES,
    CompileResult,
    PtxStats,
    SpecRef,
    compile_specs,
    ptx_stats,
    spec_refs,
)
from kernels._common import KernelSpec
from kernels.compile_report import GPUS, blocks_per_sm, in_default_fit, modelled_us, workload

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------
# Probe kernels for the harness tests
# ----------------------------------------------------------------------------------------------


@triton.jit
def _probe_matmul(a_ptr, b_ptr, c_ptr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr):
    # one (BLOCK_M, BLOCK_K) @ (BLOCK_K, BLOCK_N) tile, row-major, fp32 accumulator
    rm = tl.arange(0, BLOCK_M)
    rn = tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a = tl.load(a_ptr + rm[:, None] * BLOCK_K + rk[None, :])
    b = tl.load(b_ptr + rk[:, None] * BLOCK_N + rn[None, :])
    c = tl.dot(a, b, input_precision="ieee")
    tl.store(c_ptr + rm[:, None] * BLOCK_N + rn[None, :], c.to(c_ptr.dtype.element_ty))


@triton.jit
def _probe_add(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) + tl.load(y_ptr + offs, mask=mask),
             mask=mask)


@triton.jit
def _probe_register_hog(x_ptr, y_ptr, BLOCK: tl.constexpr):
    # the whole block stays live across the reduction: BLOCK / 32 values per thread of one warp
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    tl.store(y_ptr + offs, x / tl.sum(x * x, axis=0))


def _matmul_spec(name, dtype, bm, bn, bk, uses_dot) -> KernelSpec:
    ptr = "*" + dtype
    return KernelSpec(name=name, fn=_probe_matmul,
                      signature={"a_ptr": ptr, "b_ptr": ptr, "c_ptr": ptr, "BLOCK_M": "constexpr",
                                 "BLOCK_N": "constexpr", "BLOCK_K": "constexpr"},
                      constexprs={"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk},
                      divisible=("a_ptr", "b_ptr", "c_ptr"), num_warps=4, num_stages=1,
                      uses_dot=uses_dot)


def aot_specs() -> list[KernelSpec]:
    """The probes, in the same form as a kernel module's (workers import this file by name)."""
    return [
        _matmul_spec("probe_matmul[64x64x32, fp16]", "fp16", 64, 64, 32, uses_dot=True),
        # exact fp32 has no tensor-core instruction: FMAs, so a uses_dot promise is broken
        _matmul_spec("probe_matmul[64x64x32, fp32-ieee]", "fp32", 64, 64, 32, uses_dot=True),
        # tl.dot needs K >= 16 for fp16 on the GPU; the interpreter would accept it
        _matmul_spec("probe_matmul[64x64x8, fp16]", "fp16", 64, 64, 8, uses_dot=True),
        KernelSpec(name="probe_add[BLOCK=1024, fp32]", fn=_probe_add,
                   signature={"x_ptr": "*fp32", "y_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32",
                              "BLOCK": "constexpr"},
                   constexprs={"BLOCK": 1024}, divisible=("x_ptr", "y_ptr", "out_ptr", "n"),
                   num_warps=4, num_stages=1),
        KernelSpec(name="probe_register_hog[BLOCK=16384 w1, fp32]", fn=_probe_register_hog,
                   signature={"x_ptr": "*fp32", "y_ptr": "*fp32", "BLOCK": "constexpr"},
                   constexprs={"BLOCK": 16384}, divisible=("x_ptr", "y_ptr"), num_warps=1,
                   num_stages=1),
    ]


# ----------------------------------------------------------------------------------------------
# Which specs run by default
# ----------------------------------------------------------------------------------------------


def _kernel_and_dtype(name: str) -> tuple[str, str]:
    kernel, _, rest = name.partition("[")
    return kernel, rest.rstrip("]").split(",")[-1].strip()


def _tile(spec: KernelSpec) -> int:
    """The product of the spec's BLOCK sizes (dgrad's BLOCK_N_TAIL adds columns to BLOCK_N)."""
    blocks = dict(spec.constexprs)
    if "BLOCK_N_TAIL" in blocks:
        blocks["BLOCK_N"] += blocks.pop("BLOCK_N_TAIL")
    return math.prod(v for k, v in blocks.items() if k.startswith("BLOCK") and isinstance(v, int))


def _default_subset(specs: list[tuple[SpecRef, KernelSpec]]) -> set[SpecRef]:
    """Per (kernel, dtype, config list) that a default fit runs: the largest tile (first one on
    ties). conv1's 3 input channels take their own lists (``SMALL_CIN``), so count apart."""
    best: dict[tuple[str, str, bool], tuple[int, SpecRef]] = {}
    for ref, spec in specs:
        if not in_default_fit(spec.name):
            continue
        key = (*_kernel_and_dtype(spec.name), spec.constexprs.get("CG_IN", 16) < 16)
        if key not in best or _tile(spec) > best[key][0]:
            best[key] = (_tile(spec), ref)
    return {ref for _, ref in best.values()}


_KERNEL_SPECS = spec_refs(KERNEL_MODULES)
_DEFAULT = _default_subset(_KERNEL_SPECS)
_CASES = [
    pytest.param(ref, arch, spec.uses_dot, id=f"{ref.name}-sm{arch}",
                 marks=() if ref in _DEFAULT else pytest.mark.slow)
    for ref, spec in _KERNEL_SPECS
    for arch in ARCHS if arch >= spec.min_arch
]
_PROBES = {ref.name: ref for ref, _ in spec_refs((__name__,))}


@pytest.fixture(scope="session")
def compiled(request) -> dict[tuple[SpecRef, int], CompileResult]:
    """Every (spec, arch) the session selected from this file, compiled at once, in parallel."""
    wanted = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.module is sys.modules[__name__] and "ref" in params:
            wanted.append((params["ref"], params["arch"]))
    wanted += [(ref, arch) for ref in _PROBES.values() for arch in ARCHS]
    wanted = list(dict.fromkeys(wanted))
    return dict(zip(wanted, compile_specs(wanted)))


# ----------------------------------------------------------------------------------------------
# Every kernel spec x arch
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ref", "arch", "uses_dot"), _CASES)
def test_kernel_compiles_without_spills(compiled, ref, arch, uses_dot):
    r = compiled[(ref, arch)]
    assert r.ok, f"{ref.name} does not compile for sm_{arch}:\n{r.error}"
    assert r.registers is not None and 0 < r.registers <= 255, r.ptxas_log
    assert r.spills == 0, (f"{ref.name} spills on sm_{arch}: {r.spill_stores} B stores, "
                           f"{r.spill_loads} B loads, {r.registers} registers")
    if uses_dot:
        expected = ("mma",) if arch == 80 else ("wgmma", "mma")
        assert r.mma in expected, f"{ref.name}: no tensor-core instruction for sm_{arch}"


def test_every_kernel_module_has_specs():
    names = {_kernel_and_dtype(spec.name)[0] for _, spec in _KERNEL_SPECS}
    for prefix in ("conv2d_relu_fwd", "conv2d_relu_dgrad", "conv2d_relu_wgrad", "lrn_fwd",
                   "lrn_bwd", "max_pool2d_fwd", "max_pool2d_bwd", "lrn_max_pool2d_fwd",
                   "lrn_max_pool2d_bwd"):
        assert prefix in names, f"no aot spec for {prefix}; have {sorted(names)}"
    dtypes = {_kernel_and_dtype(spec.name)[1] for _, spec in _KERNEL_SPECS}
    assert {"fp32", "fp16", "bf16"} <= dtypes, dtypes


def test_default_fit_scope_is_what_fit_runs():
    """The report's default scope: every conv layer's fwd and wgrad (conv1's packed ones, not
    the general kernels' conv1 configs) and dgrad but conv1's, in TF32, bf16 and fp16 with the
    split-K sum, every LRN/pool spec, and no exact-fp32 GEMM."""
    fit = {_kernel_and_dtype(spec.name) + (spec.name.partition("[")[2].split(",")[0],)
           for _, spec in _KERNEL_SPECS if in_default_fit(spec.name)}
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        for dtype in ("fp32-tf32", "fp16", "bf16"):
            runs = {"fwd": layer != "conv1", "fwd_packed": layer == "conv1",
                    "dgrad": layer != "conv1", "wgrad": layer != "conv1",
                    "wgrad_packed": layer == "conv1"}
            for kernel, expected in runs.items():
                assert ((f"conv2d_relu_{kernel}", dtype, layer) in fit) == expected, \
                    (kernel, dtype, layer)
        for dtype in ("fp32", "fp16", "bf16"):  # the sum writes dW in the weight's dtype
            assert ("conv2d_relu_split_sum", dtype, f"{layer} dW") in fit
    assert not any(k in compile_report._CONV_GEMMS and d == "fp32" for k, d, _ in fit)
    assert ("conv2d_relu_fwd_packed", "fp32", "conv1") not in fit  # exact fp32: TF32 runs
    assert ("conv2d_relu_wgrad_packed", "fp32", "conv1") not in fit
    assert not in_default_fit("conv2d_relu_fwd[conv1, BM=64 BN=64 BK=16 w4 s3, fp16]")
    others = {(k, d) for k, d, _ in fit if not k.startswith("conv2d_relu")}
    assert len(others) == 6 * 3, sorted(others)  # 3 kernels x fwd/bwd x 3 dtypes
    assert not in_default_fit("conv2d_relu_dgrad[conv3, BM=64 BN=64 BK=16 w4 s2, fp32]")
    assert in_default_fit("conv2d_relu_dgrad[conv3, BM=64 BN=64 BK=32 w4 s4, fp32-tf32]")
    # the gated configurations are not what a default fit runs: the report counts them apart
    gated = "conv2d_relu_fwd[conv3, BM=128 BN=64 BK=32 w4 s3 tma unverified, fp16]"
    assert compile_report.is_gated(gated) and not in_default_fit(gated)
    assert not compile_report.is_gated("conv2d_relu_fwd[conv3, BM=128 BN=64 BK=32 w4 s3, fp16]")
    assert all(not in_default_fit(spec.name) for _, spec in _KERNEL_SPECS
               if "unverified" in spec.name)


# The forward's and dgrad's TMA configs (the weight through a descriptor, kernels._conv_tma):
# sm_90 only, marked unverified; one of each compiled by default
_TMA_SPECS = {ref.name: (ref, spec) for ref, spec in _KERNEL_SPECS if spec.min_arch}
_TMA_CHECKED = ["conv2d_relu_fwd[conv3, BM=128 BN=64 BK=32 w4 s3 tma unverified, fp16]",
                "conv2d_relu_dgrad[conv2, BM=128 BN=32+16 BK=32 w4 s3 tma unverified, bf16]"]


def test_tma_specs_are_for_sm90_and_marked_unverified():
    assert set(_TMA_CHECKED) <= set(_TMA_SPECS)
    for name, (_, spec) in _TMA_SPECS.items():
        assert spec.min_arch == 90 and spec.constexprs["USE_TMA"] is True, name
        assert " tma unverified," in name and spec.signature["w_desc"].startswith("tensordesc<")
    kernels = {_kernel_and_dtype(name)[0] for name in _TMA_SPECS}
    assert kernels == {"conv2d_relu_fwd", "conv2d_relu_dgrad"}
    assert not any(arch < 90 for case in _CASES for ref, arch, _ in [case.values]
                   if ref.name in _TMA_SPECS)
    fwd = _TMA_SPECS[_TMA_CHECKED[0]][1]
    assert fwd.signature["w_desc"] == "tensordesc<fp16[64, 32]>"  # [BLOCK_N, BLOCK_K]
    dgrad = _TMA_SPECS[_TMA_CHECKED[1]][1]  # [BLOCK_K, BLOCK_N] and the tail's 16 columns
    assert (dgrad.signature["w_desc"], dgrad.signature["wt_desc"]) == (
        "tensordesc<bf16[32, 32]>", "tensordesc<bf16[32, 16]>")


@pytest.mark.parametrize(("ref", "arch"), [(_TMA_SPECS[n][0], 90) for n in _TMA_CHECKED],
                         ids=_TMA_CHECKED)
def test_tma_specs_copy_the_weight_by_tma_and_overlap(compiled, ref, arch):
    r = compiled[(ref, arch)]
    assert r.ok, r.error
    assert r.spills == 0 and r.mma == "wgmma"
    assert r.stats.tma > 0 and r.stats.cp_async_wait >= 1 and r.stats.wgmma_wait >= 1


# ----------------------------------------------------------------------------------------------
# PTX parsing and the workload model, on hand-written snippets and shapes
# ----------------------------------------------------------------------------------------------

_PTX_SM90 = """
.version 8.7
.target sm_90a
.visible .entry k(
	.param .u64 k_param_0
)
{
	.reg .b32 	%r<9>;
	ld.param.b64 	%rd1, [k_param_0];
	// ld.global.b32 in a comment is not an instruction
	@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
	@!%p2 ld.global.L1::evict_last.v2.b16 { %rs1, %rs2 }, [ %rd2 + 0 ];
	ld.global.nc.b16 	%rs3, [%rd3];
	ld.global.nc.b16 	%rs4, [%rd4];
	cp.async.cg.shared.global [ %r5 + 0 ], [ %rd5 + 0 ], 0x10, %r6;
	cp.async.ca.shared.global [ %r7 + 0 ], [ %rd6 + 0 ], 4, %r8;
	cp.async.commit_group;
$L__BB0_2:
	cp.async.wait_group 	2;
	wgmma.fence.sync.aligned;
	wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%f1}, %rd7, %rd8, p, 1, 1, 0, 1;
	wgmma.commit_group.sync.aligned;
	wgmma.wait_group.sync.aligned 1;
	st.global.v4.b32 [ %rd9 + 0 ], { %r1, %r2, %r3, %r4 };
	cp.async.wait_group 	0;
	wgmma.wait_group.sync.aligned 0;
	ret;
}
"""


def test_ptx_stats_reads_widths_async_copies_and_waits():
    st = ptx_stats(_PTX_SM90)
    assert st.ld_global == {16: 1, 4: 1, 2: 2}  # v4.b32, v2.b16, two scalar b16; not ld.param
    assert st.cp_async == {16: 1, 4: 1}  # hex and decimal copy sizes
    assert st.tma == 0
    assert st.cp_async_wait == 2 and st.wgmma_wait == 1  # the deepest waits, not the drains
    assert st.pipelined and st.widest_load == 16 and st.narrowest_load == 2


def test_ptx_stats_without_async_copies_or_with_tma():
    st = ptx_stats(".target sm_80\n\tld.global.b32 %r1, [%rd1];\n\tret;\n")
    assert st == PtxStats(ld_global={4: 1}, cp_async={}, tma=0, cp_async_wait=None,
                          wgmma_wait=None)
    assert not st.pipelined and st.narrowest_load == 4
    assert ptx_stats("\tret;\n").narrowest_load == 0
    # a drain-only wait: copies issued, nothing in flight while the MMA runs
    assert not ptx_stats("\tcp.async.cg.shared.global [%r1], [%rd1], 16;\n"
                         "\tcp.async.wait_group 0;\n").pipelined
    tma = ptx_stats("\tcp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx"
                    "::bytes [%r1], [%rd1, {%r2, %r3}], [%r4];\n")
    assert tma.tma == 1 and tma.pipelined and tma.cp_async == {}
    with pytest.raises(ValueError, match="no operand type"):
        ptx_stats("\tld.global.v4 %r1, [%rd1];\n")


def _conv_consts(bm, bn, bk):
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}


def test_workload_of_conv_layers():
    # conv2 forward: M = 128*27*27 = 93,312 = 729 x 128, N = 128 per group, K = 25*48 = 1,200
    fwd = workload("conv2d_relu_fwd[conv2, BM=128 BN=64 BK=32 w4 s3, fp16]",
                   _conv_consts(128, 64, 32))
    assert fwd.blocks == 729 * 2 * 2  # M tiles x N tiles x groups
    assert fwd.useful == 93312 * 128 * 1200 * 2
    assert fwd.issued == 93312 * 128 * 1216 * 2  # K padded to 38 x 32
    assert fwd.tile_efficiency == pytest.approx(1200 / 1216)
    x, w, y = 128 * 96 * 27 * 27, 256 * 48 * 25, 128 * 256 * 27 * 27
    assert fwd.bytes == 2 * (x + w + y + 256)
    # conv4 forward: N = 192 per group wastes a third of a 128-wide second N tile
    conv4 = workload("conv2d_relu_fwd[conv4, BM=64 BN=128 BK=32 w4 s3, bf16]",
                     _conv_consts(64, 128, 32))
    assert conv4.tile_efficiency == pytest.approx((21632 / 21632) * (192 / 256) * (1728 / 1728))
    # conv3 dgrad: the same MACs as its forward; M = 128*13*13 input pixels, N = 256, K = 9*384
    dgrad = workload("conv2d_relu_dgrad[conv3, BM=64 BN=64 BK=32 w4 s4, fp32-tf32]",
                     _conv_consts(64, 64, 32))
    assert dgrad.useful == 21632 * 384 * 9 * 256
    assert dgrad.issued == 21632 * 256 * 3456 and dgrad.blocks == 338 * 4
    # conv2 dgrad with two accumulators: 32 + 16 columns per program cover C_in = 48 per group
    tail = workload("conv2d_relu_dgrad[conv2, BM=128 BN=32+16 BK=32 w4 s3, fp16]",
                    {**_conv_consts(128, 32, 32), "BLOCK_N_TAIL": 16})
    assert tail.blocks == 729 * 1 * 2  # M tiles x one N tile x groups
    assert tail.issued == tail.useful == 93312 * 48 * (25 * 128) * 2
    # conv5 wgrad: M = 9*192, N = 128, K = 21,632 pixels split as the launcher's grid does for
    # this tile on 132 SMs: >= 2 x 132 x 6 programs over 14 x 2 x 2 tiles -> 29 splits of 768
    # pixels (a multiple of BLOCK_K), the last 128
    wgrad = workload("conv2d_relu_wgrad[conv5, BM=128 BN=64 BK=32 w4 s3, fp16]",
                     _conv_consts(128, 64, 32))
    assert wgrad.blocks == 14 * 2 * 29 * 2
    assert wgrad.issued == (14 * 128) * 128 * (768 * 28 + 128) * 2
    # on an A100's 108 SMs: >= 1,296 programs -> 24 splits of 928 (a multiple of 32), the last 288
    a100 = workload("conv2d_relu_wgrad[conv5, BM=128 BN=64 BK=32 w4 s3, fp16]",
                    _conv_consts(128, 64, 32), sms=108)
    assert a100.blocks == 14 * 2 * 24 * 2
    assert a100.issued == (14 * 128) * 128 * (928 * 23 + 288) * 2
    # the ReLU-mask pass (dy, y -> masked dy) and conv1's packed forward have their own models
    relu = workload("conv2d_relu_relu_grad[conv3, fp16]", {})
    assert relu.useful == 128 * 384 * 13 * 13 and relu.macs == 0
    packed = workload("conv2d_relu_fwd_packed[conv1, BM=128 BN=32 BK=16 w4 s4, fp16]",
                      _conv_consts(128, 32, 16))
    # K = 11*11*3 useful of 11 rows x 32 + a 16-element tail issued
    assert packed.useful == 128 * 55 * 55 * 96 * 363 and packed.issued == 387200 * 96 * 368
    assert packed.tile_efficiency == pytest.approx(363 / 368)
    # conv1's packed wgrad: M = the 368 packed K elements in 64-row tiles (384), N = 96 / 32,
    # K = 387,200 pixels in the launcher's 88 splits of 4,416 (the last 3,008)
    wpacked = workload("conv2d_relu_wgrad_packed[conv1, BM=64 BN=32 BK=64 w4 s3, bf16]",
                       _conv_consts(64, 32, 64))
    assert wpacked.blocks == 6 * 3 * 88 and wpacked.useful == packed.useful
    assert wpacked.issued == 384 * 96 * (4416 * 87 + 3008)
    # LRN forward: elementwise over conv1's output, fp32 scale saved
    lrn = workload("lrn_fwd[conv1 55x55x96 b128, BLOCK=1024 w4, bf16]", {"BLOCK": 1024})
    numel = 128 * 96 * 55 * 55
    assert lrn.blocks == -(-numel // 1024) and lrn.bytes == numel * (2 + 2 + 4)
    with pytest.raises(ValueError, match="no workload model"):
        workload("probe_add[BLOCK=1024, fp32]", {"BLOCK": 1024})


def test_occupancy_and_roofline():
    h100, a100 = GPUS[90], GPUS[80]
    assert blocks_per_sm(h100, 234, 49152, 4) == 2  # 234 regs -> 7,680 per warp: 8 warps
    assert blocks_per_sm(h100, 64, 32768, 4) == 6  # shared: 228 KB / 33 KB
    assert blocks_per_sm(a100, 64, 32768, 4) == 4  # 164 KB / 33 KB
    assert blocks_per_sm(h100, 32, 0, 4) == 16  # 2,048 threads
    fwd = workload("conv2d_relu_fwd[conv2, BM=128 BN=64 BK=32 w4 s3, fp16]",
                   _conv_consts(128, 64, 32))
    us, bound = modelled_us(h100, "fp16", fwd)
    assert bound == "compute" and us == pytest.approx(2 * fwd.issued / 989.4e12 * 1e6)
    lrn = workload("lrn_bwd[conv1 55x55x96 b128, BLOCK=1024 w4, fp32]", {"BLOCK": 1024})
    us, bound = modelled_us(a100, "fp32", lrn)
    assert bound == "memory" and us == pytest.approx(lrn.bytes / 2.039e12 * 1e6)


# ----------------------------------------------------------------------------------------------
# The harness itself
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHS)
def test_tensor_cores_detected(compiled, arch):
    fp16 = compiled[(_PROBES["probe_matmul[64x64x32, fp16]"], arch)]
    assert fp16.status == "ok", fp16.error
    assert fp16.mma == ("mma" if arch == 80 else "wgmma")
    assert fp16.shared > 0  # operands staged through shared memory for the MMA
    add = compiled[(_PROBES["probe_add[BLOCK=1024, fp32]"], arch)]
    assert add.status == "ok" and add.mma == "" and add.registers > 0
    # 16-byte aligned, 16-divisible fp32: 128-bit vector loads, no async copies (no loop)
    assert set(add.stats.ld_global) == {16} and add.stats.cp_async == {}, add.stats


@pytest.mark.parametrize("arch", ARCHS)
def test_exact_fp32_dot_breaks_a_tensor_core_promise(compiled, arch):
    r = compiled[(_PROBES["probe_matmul[64x64x32, fp32-ieee]"], arch)]
    assert r.ok and r.mma == "" and r.status == "NO-MMA"


@pytest.mark.parametrize("arch", ARCHS)
def test_register_hungry_kernel_spills(compiled, arch):
    r = compiled[(_PROBES["probe_register_hog[BLOCK=16384 w1, fp32]"], arch)]
    assert r.ok, r.error
    assert r.spill_stores > 0 and r.spill_loads > 0 and r.status == "SPILL", r.ptxas_log


@pytest.mark.parametrize("arch", ARCHS)
def test_too_small_dot_fails_for_the_gpu(compiled, arch):
    r = compiled[(_PROBES["probe_matmul[64x64x8, fp16]"], arch)]
    assert not r.ok and r.status == "ERROR"
    assert "K >= 16" in r.error, r.error


def test_errors_are_collected_per_spec():
    bad, good = _PROBES["probe_matmul[64x64x8, fp16]"], _PROBES["probe_add[BLOCK=1024, fp32]"]
    missing = SpecRef(__name__, 99, "no such spec")
    results = compile_specs([(bad, 80), (missing, 80), (good, 80)], jobs=2)
    assert [r.ok for r in results] == [False, False, True]
    assert "IndexError" in results[1].error


def test_ptxas_rerun_matches_tritons_cubin():
    """Our ptxas -v run uses Triton's flags: its register count equals the cubin's."""
    ref = _PROBES["probe_matmul[64x64x32, fp16]"]
    (r,) = compile_specs([(ref, 80)], jobs=2, keep_asm=True)
    assert r.ok, r.error
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(r.cubin)
        f.flush()
        usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", f.name],
                               capture_output=True, text=True, check=True).stdout
    assert f"REG:{r.registers} " in usage, (r.registers, usage)
    assert "mma.sync" in r.ptx and ".target sm_80" in r.ptx


def test_report_exit_status(tmp_path):
    """compile_report fails on a spill and passes on a clean kernel."""
    def run(kernel):
        md = tmp_path / f"{kernel}.md"
        cmd = [sys.executable, "-m", "kernels.compile_report", "--module", __name__, "--arch", "80",
               "--kernel", kernel, "--jobs", "1", "--markdown", str(md)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env,
                              check=False)
        return done, md

    done, md = run("probe_add")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "probe_add" in done.stdout and "| probe_add |" in md.read_text()
    text = md.read_text()
    assert f"Triton {triton.__version__}" in text and "| cp wait | wgmma wait |" in text
    done, _ = run("probe_register_hog")
    assert done.returncode == 1 and "SPILL" in done.stdout, done.stdout + done.stderr


def test_a_kernel_whose_shared_memory_fits_no_sm_is_no_fit():
    # sm_90: 228 KB per SM, 1 KB reserved per block; a launch needing more fails on the GPU
    from types import SimpleNamespace

    def result(shared, arch=90):
        return SimpleNamespace(ok=True, status="ok", arch=arch, registers=128, shared=shared,
                               num_warps=8)

    assert compile_report.status(result(226 * 1024)) == "ok"
    assert compile_report.status(result(228 * 1024)) == "NO-FIT"
    assert compile_report.status(result(164 * 1024, arch=80)) == "NO-FIT"
    spilled = SimpleNamespace(**{**vars(result(228 * 1024)), "status": "SPILL"})
    assert compile_report.status(spilled) == "SPILL"


_EXACT_FP32 = "conv2d_relu_dgrad[conv3, BM=64 BN=64 BK=16 w4 s2, fp32]"


def test_report_on_dgrads_two_accumulator_tile(capsys):
    # conv2's dgrad (48 input channels per group) in one 32 + 16 column program: no wasted
    # MAC, and on sm_90 pipelined copies with the two wgmma chains overlapping
    name = "conv2d_relu_dgrad[conv2, BM=64 BN=32+16 BK=32 w4 s4, fp16]"
    assert compile_report.main(["--kernel", name, "--arch", "90", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("conv2d_relu_dgrad"))
    # columns: ... tensor cores, ld.global, cp.async (one or more words), TMA, cp wait,
    # wgmma wait, tile eff, blocks, per SM, waves, model µs, bound, status
    wgmma = row.index("wgmma")
    assert row[wgmma + 1] == "-" and row[wgmma + 2].startswith("16×")  # 16-byte cp.async
    cp_wait, wgmma_wait, eff, blocks = row[-9:-5]
    assert int(cp_wait) >= 1 and int(wgmma_wait) >= 1
    assert eff == "100%" and blocks == str(1458 * 2)  # M tiles x groups, one N tile each


def test_report_shows_a_tma_spec(capsys):
    # the README's TMA command on one spec: TMA copies, pipelined, wgmma overlapping
    assert compile_report.main(["--kernel", _TMA_CHECKED[0], "--arch", "90", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line.split() for line in out.splitlines() if line.startswith("conv2d_relu_fwd"))
    assert "unverified" in row
    tma, cp_wait, wgmma_wait = row[-10:-7]
    assert int(tma) > 0 and int(cp_wait) >= 1 and int(wgmma_wait) >= 1


@pytest.mark.slow
def test_readme_tma_report_command():
    # README, "Hopper TMA for the weight": every TMA spec compiles for sm_90 and meets the goals
    cmd = [sys.executable, "-m", "kernels.compile_report", "--arch", "90", "--kernel",
           "tma unverified"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False,
                          cwd=compile_report.ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("conv2d_relu_")]
    assert len(rows) == len(_TMA_SPECS) and all("tma unverified" in r for r in rows)
    assert all(r.rstrip().endswith("ok") for r in rows)
    overlap = next(line for line in done.stdout.splitlines() if "async wgmma overlap" in line)
    assert f"{len(rows)}/{len(rows)} specs" in overlap


def test_report_default_scope_leaves_out_exact_fp32(capsys):
    assert compile_report.main(["--kernel", _EXACT_FP32, "--arch", "80"]) == 2
    assert "no kernel spec matches" in capsys.readouterr().err


@pytest.mark.slow
def test_report_all_adds_exact_fp32(capsys):
    assert compile_report.main(["--all", "--kernel", _EXACT_FP32, "--arch", "80",
                                "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "conv2d_relu_dgrad  conv3, BM=64 BN=64 BK=16 w4 s2  fp32" in out
    assert "every shipped configuration" in out and "1 ok" in out
