"""Ahead-of-time compilation of every kernel for sm_80 and sm_90, no GPU needed.

Each kernel module's ``aot_specs()`` lists its kernels x autotune configs x dtypes with the
arguments (and 16-divisibility hints) its launcher really passes. A spec passes when it compiles
for the arch, ptxas reports zero spill bytes, and a ``uses_dot`` spec contains tensor-core
instructions (``mma.sync`` on sm_80, ``wgmma``/``mma`` on sm_90).

Which tests run by default (``pytest``, i.e. ``-m "not slow"``): per kernel, dtype and arch the
one config with the largest tile (product of its BLOCK_* constexprs), the likeliest to spill.
The remaining configs are marked ``slow`` (``pytest -m slow tests/test_compile.py``); together
the two are the exhaustive sweep that ``python -m kernels.compile_report`` also prints.

Compilation runs in worker processes with the interpreter off (see kernels._aot), all of the
session's selected specs at once, cached by Triton in ~/.triton/cache.

The bottom half tests the harness itself with small probe kernels defined here: a tensor-core
matmul, an elementwise kernel, a kernel that must spill, and a tl.dot too small for the GPU.
They are exposed through ``aot_specs()`` below so workers load them as they load a kernel module.
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

from kernels._aot import (
    ARCHS,
    KERNEL_MODULES,
    CompileResult,
    SpecRef,
    compile_specs,
    spec_refs,
)
from kernels._common import KernelSpec

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
    return math.prod(v for k, v in spec.constexprs.items()
                     if k.startswith("BLOCK") and isinstance(v, int))


def _default_subset(specs: list[tuple[SpecRef, KernelSpec]]) -> set[SpecRef]:
    """Per (kernel, dtype): the largest tile (first one on ties)."""
    best: dict[tuple[str, str], tuple[int, SpecRef]] = {}
    for ref, spec in specs:
        key = _kernel_and_dtype(spec.name)
        if key not in best or _tile(spec) > best[key][0]:
            best[key] = (_tile(spec), ref)
    return {ref for _, ref in best.values()}


_KERNEL_SPECS = spec_refs(KERNEL_MODULES)
_DEFAULT = _default_subset(_KERNEL_SPECS)
_CASES = [
    pytest.param(ref, arch, spec.uses_dot, id=f"{ref.name}-sm{arch}",
                 marks=() if ref in _DEFAULT else pytest.mark.slow)
    for ref, spec in _KERNEL_SPECS
    for arch in ARCHS
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
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        return done, md

    done, md = run("probe_add")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "probe_add" in done.stdout and "| probe_add |" in md.read_text()
    done, _ = run("probe_register_hog")
    assert done.returncode == 1 and "SPILL" in done.stdout, done.stdout + done.stderr
