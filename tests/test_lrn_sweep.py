"""The LRN and LRN + pool backwards as channel sweeps: every chunking of the channels gives the
same bits, each element is loaded as often as the docstrings state (counted under the
interpreter), and the compile report holds each sweep's PTX to the loads its docstring states."""

import math

import numpy as np
import pytest
import torch
from layouts import with_specials
from test_lrn import ref_lrn
from test_lrn_max_pool2d import ref_lrn_pool
from tolerances import assert_close

from kernels import compile_report
from kernels._aot import CompileResult, PtxStats
from kernels._common import INTERPRET
from kernels._lrn_pool import launch_sweep
from kernels.lrn import _bwd_args as lrn_bwd_args
from kernels.lrn import _lrn_bwd_kernel, lrn_op
from kernels.lrn_max_pool2d import _bwd_args as fused_bwd_args
from kernels.lrn_max_pool2d import (
    _lrn_max_pool2d_bwd_kernel,
    bwd_loads_per_step,
    lrn_max_pool2d_op,
)
from kernels.max_pool2d import PoolGeometry

F64 = torch.float64
# (BLOCK pixels, BLOCK_C channels): chunks of 1 channel (all halo), chunks smaller than the
# window, chunks that do not divide the group, one chunk per group; several pixel blocks or one
TILES = [(16, 1), (64, 2), (16, 3), (1024, 64)]


def _same_bits(got: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's NaN notes in the interpreter
@pytest.mark.parametrize("size,groups", [(7, 1), (4, 2)])  # odd and even windows
def test_lrn_backward_is_the_same_for_every_chunking(size, groups):
    torch.manual_seed(0)
    shape, (alpha, beta, k) = (2, 10, 3, 7), (2.0, 0.75, 1.0)
    x = with_specials(torch.randn(shape, dtype=F64) * 3, seed=0, fraction=0.03)
    dy = torch.randn(shape, dtype=F64)
    _, scale = lrn_op(x, size, alpha, beta, k, groups, True)
    grads = []
    for block, block_c in TILES:
        dx = torch.empty_like(x)
        args = lrn_bwd_args(*(t.view(2, 10, 21) for t in (x, scale, dy, dx)),
                            (size, alpha, beta, groups))
        launch_sweep(_lrn_bwd_kernel, {**args, "BLOCK": block, "BLOCK_C": block_c}, 2, groups)
        grads.append(dx)
    for dx in grads[1:]:
        _same_bits(dx, grads[0])
    xr = x.clone().requires_grad_()
    ref_lrn(xr, size, alpha, beta, k, groups).backward(dy)
    assert_close(grads[0], xr.grad, F64)  # NaN and inf where PyTorch has them
    assert grads[0].isnan().any() and not grads[0].isnan().all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
# 4 and 8 channels per group (the second, 9 s under the interpreter, with the slow tests)
@pytest.mark.parametrize("size,groups", [(5, 2), pytest.param(6, 1, marks=pytest.mark.slow)])
def test_fused_backward_is_the_same_for_every_chunking(size, groups):
    torch.manual_seed(0)
    lrn = (size, 2.0, 0.75, 1.0, groups)
    x = with_specials(torch.randn(1, 8, 5, 5, dtype=F64) * 3, seed=0, fraction=0.03)
    geo = PoolGeometry((3, 3), (2, 2), (0, 0), (2, 2))
    _, arg = lrn_max_pool2d_op(x, *lrn, [3, 3], [2, 2], [0, 0], True)
    dy = torch.randn(1, 8, 2, 2, dtype=F64)
    grads = []
    for block, block_c in ((32, 1), (16, 3), (32, 64)):  # the interpreter is slow here
        dx = torch.empty_like(x)
        args = fused_bwd_args(x, dy, arg, dx, lrn, geo)
        launch_sweep(_lrn_max_pool2d_bwd_kernel, {**args, "BLOCK": block, "BLOCK_C": block_c}, 1,
                     groups)
        grads.append(dx)
    for dx in grads[1:]:
        _same_bits(dx, grads[0])
    xr = x.clone().requires_grad_()
    ref_lrn_pool(xr, *lrn).backward(dy)
    assert_close(grads[0], xr.grad, F64)
    assert grads[0].isnan().any() and not grads[0].isnan().all()


# --- how often each element is loaded, counted under the interpreter ---------------------------


@pytest.fixture
def loaded_addresses(monkeypatch):
    """The address of every element a kernel's masked loads read (active lanes only), as the
    interpreter runs them on CPU tensors."""
    if not INTERPRET:
        pytest.skip("counts the interpreter's loads; on a GPU the compile report's PTX check "
                    "covers the same bound")
    from triton.runtime import interpreter

    seen = []
    load = interpreter.InterpreterBuilder.create_masked_load

    def counting(self, ptrs, mask, *args):
        seen.append(np.asarray(ptrs.data)[np.asarray(mask.data, dtype=bool)].ravel())
        return load(self, ptrs, mask, *args)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_masked_load", counting)
    return seen


def _loads_per_element(seen: list, t: torch.Tensor) -> np.ndarray:
    """How many times each element of contiguous t was loaded."""
    addresses = np.concatenate(seen).astype(np.int64)
    offsets = addresses - t.data_ptr()
    offsets = offsets[(offsets >= 0) & (offsets < t.numel() * t.element_size())]
    return np.bincount(offsets // t.element_size(), minlength=t.numel())


@pytest.mark.parametrize("block_c", [48, 2])
def test_lrn_backward_loads_each_element_once_per_chunk(loaded_addresses, block_c):
    # two towers of 48 channels, size 5: a chunk covering the group loads each element of x, dy
    # and the scale exactly once; chunks of 2 load the 4 channels around each edge again
    size, groups = 5, 2
    x, dy = torch.randn(1, 96, 8), torch.randn(1, 96, 8)
    _, scale = lrn_op(x, size, 2.0, 0.75, 1.0, groups, True)
    dx = torch.empty_like(x)
    args = lrn_bwd_args(x, scale, dy, dx, (size, 2.0, 0.75, groups))
    loaded_addresses.clear()  # the forward's loads
    launch_sweep(_lrn_bwd_kernel, {**args, "BLOCK": 16, "BLOCK_C": block_c}, 1, groups)
    for t in (x, dy, scale):
        counts = _loads_per_element(loaded_addresses, t)
        assert counts.min() >= 1  # every element, none skipped
        assert counts.max() == (1 if block_c >= 48 else 1 + math.ceil((size - 1) / block_c))
        assert counts.mean() <= 1 + (size - 1) / block_c


def test_fused_backward_loads_each_input_once(loaded_addresses):
    lrn, groups = (5, 2.0, 0.75, 1.0, 2), 2
    x = torch.randn(2, 16, 9, 9)
    geo = PoolGeometry((3, 3), (2, 2), (0, 0), (4, 4))
    _, arg = lrn_max_pool2d_op(x, *lrn, [3, 3], [2, 2], [0, 0], True)
    dy, dx = torch.randn(2, 16, 4, 4), torch.empty_like(x)
    args = fused_bwd_args(x, dy, arg, dx, lrn, geo)
    loaded_addresses.clear()
    launch_sweep(_lrn_max_pool2d_bwd_kernel, {**args, "BLOCK": 32, "BLOCK_C": 8}, 2, groups)
    assert (_loads_per_element(loaded_addresses, x) == 1).all()
    assert (_loads_per_element(loaded_addresses, dy) == 1).all()  # by the pixel it picked
    # each argmax by the input pixels of its window (3x3 / 2: 9), once per channel
    assert _loads_per_element(loaded_addresses, arg).max() == 9


# --- the compile report's check of the loads per element --------------------------------------

_LRN_BWD = "lrn_bwd[conv1 55x55x96 b128 g2, BLOCK=256 BLOCK_C=64 w4, fp16]"


def _result(name: str, ld_global: dict) -> CompileResult:
    stats = PtxStats(ld_global=ld_global, cp_async={}, tma=0, cp_async_wait=None,
                     wgmma_wait=None)
    return CompileResult(name=name, arch=90, ok=True, stats=stats, num_warps=4)


def test_stated_bounds():
    bounds = compile_report.load_bounds()
    assert bounds["lrn_bwd"]({}) == 3  # x, dy and the saved scale
    consts = {"KH": 3, "KW": 3, "SH": 2, "SW": 2}
    assert bounds["lrn_max_pool2d_bwd"](consts) == 9  # x, 4 argmaxes, 4 gradients
    assert bwd_loads_per_step((2, 2), (2, 2)) == 3 and bwd_loads_per_step((3, 2), (1, 2)) == 7


def test_load_check_counts_per_element_a_thread_owns():
    consts = {_LRN_BWD: {"BLOCK": 256, "BLOCK_C": 64}}  # 256 / 128 threads: 2 elements each
    within = _result(_LRN_BWD, {4: 2, 2: 4})  # 6 loads, 3 per element
    over = _result(_LRN_BWD, {4: 3, 2: 4})  # 3.5 per element
    bounds = {"lrn_bwd": lambda c: 3}
    lines, short = compile_report.load_targets([within], consts, bounds)
    expected = "- lrn_bwd: global loads per element and channel step <= 3: 1/1 specs (PTX: 3-3)"
    assert lines == [expected] and short == []
    lines, short = compile_report.load_targets([within, over], consts, bounds)
    assert "1/2 specs (PTX: 3-3.5)" in lines[0] and short == [over]


def test_sweep_workload_counts_programs_per_chunk():
    name = "lrn_max_pool2d_bwd[conv1 55x55x96 b128 g2, BLOCK=64 BLOCK_C=32 w2, fp32]"
    load = compile_report.workload(name, {"BLOCK": 64, "BLOCK_C": 32, "KH": 3, "KW": 3, "SH": 2,
                                          "SW": 2, "PH": 0, "PW": 0})
    assert load.blocks == 128 * 2 * 2 * math.ceil(55 * 55 / 64)  # towers x chunks of 32 of 48
    assert load.tile_efficiency == pytest.approx(3025 / 3072)


def test_report_checks_the_ptx(monkeypatch, capsys):
    argv = ["--kernel", _LRN_BWD, "--arch", "90", "--jobs", "1"]
    assert compile_report.main(argv) == 0
    out = capsys.readouterr().out
    assert "- lrn_bwd: global loads per element and channel step <= 3: 1/1 specs (PTX: 3-3)" in out
    # a bound below what the PTX issues fails the report
    monkeypatch.setattr(compile_report, "load_bounds", lambda modules: {"lrn_bwd": lambda c: 2})
    assert compile_report.main(argv) == 1
    out = capsys.readouterr().out
    assert "0/1 specs" in out and f"LOADS: {_LRN_BWD} sm_90 -- 3 global loads" in out
