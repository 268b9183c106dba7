"""The conv forward and input gradient (dgrad) on a persistent grid (``PERSISTENT`` > 0, behind
the LIGHTNING_ALEXNET_UNVERIFIED gate): fewer programs than tiles, each looping over tiles in the
grid's N-fastest order, against PyTorch in float64 and bit-identical to one program per tile (on
CPU under the interpreter).
"""

import importlib

import pytest
import torch
import torch.nn.functional as F
import triton
from tolerances import assert_close

from kernels import tuning
from kernels._report_model import workload

conv_mod = importlib.import_module("kernels.conv2d_relu")
args_mod = importlib.import_module("kernels._conv2d_relu_args")
kernels_mod = importlib.import_module("kernels._conv2d_relu_kernels")

# the interpreter's tile (tl.dot needs 16 on the GPU)
TILE = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16}


def inputs(x_shape, w_shape, dtype, channels_last, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, w, b = (torch.randn(shape, generator=g, dtype=torch.float64, device="cpu")
               for shape in (x_shape, w_shape, w_shape[:1]))
    w, b = w / (w_shape[1] * 9) ** 0.5, b * 0.5
    # on the GPU the conftest makes CUDA the default device
    x, w, b = (t.to(torch.get_default_device(), dtype) for t in (x, w, b))
    if channels_last:
        x, w = x.to(memory_format=torch.channels_last), w.to(memory_format=torch.channels_last)
    return x, w, b


def launch(x, w, b, stride, padding, groups, programs):
    """_conv_fwd_kernel itself on (programs, groups) programs: ``programs=None`` one per tile
    (PERSISTENT = 0), else that many looping over the tiles (PERSISTENT = 1)."""
    checked_stride, pads, _ = args_mod._check_args(x, w, b, stride, padding, 1, groups)
    geo = args_mod._geometry(x, w, checked_stride, pads)
    y = args_mod._new_output(x, geo)
    args, consts = args_mod._fwd_args(x, w, b, y, geo)
    tiles = (triton.cdiv(geo.n * geo.oh * geo.ow, TILE["BLOCK_M"])
             * triton.cdiv(geo.cg_out, TILE["BLOCK_N"]))
    grid = (tiles if programs is None else programs, groups)
    kernels_mod._conv_fwd_kernel[grid](**args, **consts, **TILE,
                                       PERSISTENT=0 if programs is None else 1)
    return y, tiles


CASES = [
    # x shape, w shape, stride, padding, groups, layout: 2 N tiles per M tile (20 or 18
    # channels per group), 6-8 tiles per group
    pytest.param((1, 8, 8, 8), (40, 4, 3, 3), 1, 1, 2, True, id="groups2-pad1"),
    pytest.param((1, 6, 13, 10), (20, 6, 3, 3), 2, 2, 1, False, id="stride2-pad2-nchw"),
    pytest.param((2, 32, 7, 7), (36, 16, 3, 3), (2, 1), 1, 2, True, id="channels16-groups2",
                 marks=pytest.mark.slow),  # 7 s under the interpreter
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups, channels_last", CASES)
def test_persistent_forward_matches_reference_and_one_program_per_tile(
        x_shape, w_shape, stride, padding, groups, channels_last):
    dtype = torch.float32  # exact fp32 products (conftest turns TF32 off)
    x, w, b = inputs(x_shape, w_shape, dtype, channels_last)
    y_ref = F.relu(F.conv2d(x.double(), w.double(), b.double(), stride, padding, 1, groups))
    y_tiles, tiles = launch(x, w, b, stride, padding, groups, None)
    assert tiles >= 6
    for programs in (1, 3, tiles - 1):  # every program loops; uneven shares; one takes two
        y = launch(x, w, b, stride, padding, groups, programs)[0]
        assert_close(y, y_ref, dtype, reduce_dim=w_shape[1] * w_shape[2] * w_shape[3])
        assert torch.equal(y, y_tiles), programs  # the same tiles, the same sums: bit-identical
    assert 0.1 < (y_ref == 0).double().mean().item() < 0.9  # the ReLU mask is exercised


def test_persistent_forward_in_float64():
    x, w, b = inputs((1, 8, 6, 7), (24, 4, 3, 3), torch.float64, channels_last=True)
    y_ref = F.relu(F.conv2d(x, w, b, 1, 1, 1, 2))
    y = launch(x, w, b, 1, 1, 2, 2)[0]
    assert_close(y, y_ref, torch.float64, reduce_dim=36)


def _on_one_sm(monkeypatch, tuners: dict, config: triton.Config):
    """Every autotuner in ``tuners`` holds ``config`` alone and the GPU has 1 SM; returns the
    list the launcher's ``_gemm_programs`` calls are recorded in, and the real function."""
    for tuner in tuners.values():
        monkeypatch.setattr(tuner, "configs", [config])
    monkeypatch.setattr(conv_mod, "_sm_count", lambda device: 1)
    launched = []
    real = args_mod._gemm_programs
    monkeypatch.setattr(conv_mod, "_gemm_programs", lambda *a: launched.append(a) or real(*a))
    return launched, real


def test_launcher_runs_a_persistent_config_on_few_sms(monkeypatch):
    # the public function with a persistent config and 1 SM: one program per group walks every
    # tile (the launcher's grid, as on a GPU with PERSISTENT programs per SM)
    persistent = triton.Config({**TILE, "PERSISTENT": 1}, num_warps=4, num_stages=1)
    launched, real = _on_one_sm(monkeypatch, kernels_mod._conv_fwd, persistent)
    x, w, b = inputs((2, 8, 9, 9), (40, 4, 3, 3), torch.float32, channels_last=True)
    y = conv_mod.conv2d_relu(x, w, b, 1, 1, 1, 2)
    assert launched == [(triton.cdiv(2 * 81, 16) * 2, 2, 1, 1)]
    assert real(*launched[0]) == 1
    y_ref = F.relu(F.conv2d(x.double(), w.double(), b.double(), 1, 1, 1, 2))
    assert_close(y, y_ref, torch.float32, reduce_dim=36)


def test_gemm_programs():
    assert args_mod._gemm_programs(500, 2, 132, 0) == 500  # one per tile
    assert args_mod._gemm_programs(500, 2, 132, 1) == 66  # 132 programs over 2 groups
    assert args_mod._gemm_programs(500, 1, 132, 2) == 264
    assert args_mod._gemm_programs(50, 1, 132, 2) == 50  # never more programs than tiles


def test_report_models_a_persistent_forward_as_its_programs():
    specs = {s.name: s for s in conv_mod.aot_specs(("conv3", "conv4"))}
    for name, spec in specs.items():
        if not name.startswith("conv2d_relu_fwd[") or "fp16" not in name:
            continue
        p = spec.constexprs.get("PERSISTENT", 0)
        assert (f" p{p} " in name) == (p > 0), name
        layer = name.split("[")[1].split(",")[0]
        groups = conv_mod.ALEXNET_CONVS[layer][4]
        tiles = (triton.cdiv(128 * 13 * 13, spec.constexprs["BLOCK_M"])
                 * triton.cdiv(conv_mod.ALEXNET_CONVS[layer][1][0] // groups,
                               spec.constexprs["BLOCK_N"]))
        for sms in (132, 108):
            load = workload(name, spec.constexprs, sms)
            expected = min(tiles, triton.cdiv(sms * p, groups)) if p else tiles
            assert load.blocks == expected * groups, (name, sms)
            if p:  # the same MACs issued as one program per tile
                assert load.blocks < tiles * groups
                assert load.issued == workload(name, {**spec.constexprs, "PERSISTENT": 0}).issued


def test_persistent_configs_are_gated_and_compiled():
    gated = {tuning._tile(c) for c in tuning.CONV_UNVERIFIED["fwd"]["mma"]}
    persistent = {tuning._tile(c) for c in tuning.FWD_PERSISTENT_CONFIGS}
    assert persistent and persistent <= gated
    names = [s.name for s in conv_mod.aot_specs(("conv3",))]
    for c in tuning.FWD_PERSISTENT_CONFIGS:
        k = c.kwargs
        tag = (f"BM={k['BLOCK_M']} BN={k['BLOCK_N']} BK={k['BLOCK_K']} w{c.num_warps} "
               f"s{c.num_stages} p{k['PERSISTENT']} unverified, fp16]")
        assert f"conv2d_relu_fwd[conv3, {tag}" in names


# ----------------------------------------------------------------------------------------------
# dgrad: dx = conv2d_input(g), g the (already ReLU-masked) output gradient
# ----------------------------------------------------------------------------------------------

def dgrad_launch(g, w, x_like, stride, padding, groups, programs, tail=0):
    """_conv_dgrad_kernel itself on (programs, groups) programs (``programs=None``: one per tile,
    PERSISTENT = 0), BLOCK_N (+ BLOCK_N_TAIL = ``tail``) input channels per program."""
    checked_stride, pads, _ = args_mod._check_args(x_like, w, None, stride, padding, 1, groups)
    geo = args_mod._geometry(x_like, w, checked_stride, pads)
    dx = torch.full_like(x_like, float("nan"))  # every element must be written
    args, consts = args_mod._dgrad_args(g, w, dx, geo)
    tiles = (triton.cdiv(geo.n * geo.h * geo.w, TILE["BLOCK_M"])
             * triton.cdiv(geo.cg_in, TILE["BLOCK_N"] + tail))
    grid = (tiles if programs is None else programs, groups)
    kernels_mod._conv_dgrad_kernel[grid](**args, **consts, **TILE, BLOCK_N_TAIL=tail,
                                         PERSISTENT=0 if programs is None else 1)
    return dx, tiles


# (the default set keeps the tail case, which has groups, a stride and masked columns; the two
# others, 8-10 s each under the interpreter, run with the slow tests)
DGRAD_CASES = [
    # x shape, w shape, stride, padding, groups, layout, BLOCK_N_TAIL
    # conv1-like: 3 channels, stride 4, 5x5 taps (12 output channels: K blocks span taps),
    # NCHW strides
    pytest.param((1, 3, 11, 11), (12, 3, 5, 5), 4, 2, 1, False, 0, id="stride4-pad2-nchw",
                 marks=pytest.mark.slow),  # 10 s
    # conv2-like: 5x5 pad 2, groups 2 (16 output channels per group: a K block in one tap)
    pytest.param((1, 40, 6, 5), (32, 20, 5, 5), 1, 2, 2, True, 0, id="5x5-pad2-groups2",
                 marks=pytest.mark.slow),  # 8.5 s
    # two accumulators, 16 + 16 columns over 56 channels per group: the second program's tail
    # is partly masked; stride (2, 1)
    pytest.param((1, 112, 6, 5), (32, 56, 3, 3), (2, 1), 1, 2, True, 16, id="tail-groups2"),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups, channels_last, tail",
                         DGRAD_CASES)
def test_persistent_dgrad_matches_reference_and_one_program_per_tile(
        x_shape, w_shape, stride, padding, groups, channels_last, tail):
    dtype = torch.float32  # exact fp32 products (conftest turns TF32 off)
    x, w, _ = inputs(x_shape, w_shape, dtype, channels_last)
    y_shape = F.conv2d(x, w, None, stride, padding, 1, groups).shape
    g = torch.randn(y_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = g.to(x.device, dtype)
    if channels_last:
        g = g.to(memory_format=torch.channels_last)
    dx_ref = torch.nn.grad.conv2d_input(x.shape, w.double(), g.double(), stride, padding, 1,
                                        groups)
    dx_tiles, tiles = dgrad_launch(g, w, x, stride, padding, groups, None, tail)
    assert tiles >= 4
    reduce_dim = w_shape[0] // groups * w_shape[2] * w_shape[3]
    assert_close(dx_tiles, dx_ref, dtype, reduce_dim=reduce_dim)
    for programs in sorted({1, 3, tiles - 1}):  # all loop; uneven shares; one takes two
        dx = dgrad_launch(g, w, x, stride, padding, groups, programs, tail)[0]
        assert_close(dx, dx_ref, dtype, reduce_dim=reduce_dim)
        assert torch.equal(dx, dx_tiles), programs  # the same tiles, the same sums


def test_persistent_dgrad_in_float64():
    x, w, _ = inputs((1, 8, 6, 7), (24, 4, 3, 3), torch.float64, channels_last=True)
    g = torch.randn((1, 24, 3, 4), generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64).to(x.device)
    dx_ref = torch.nn.grad.conv2d_input(x.shape, w, g, 2, 1, 1, 2)
    dx = dgrad_launch(g, w, x, 2, 1, 2, 2)[0]
    assert_close(dx, dx_ref, torch.float64, reduce_dim=12 * 9)


def test_launcher_runs_a_persistent_dgrad_config_on_few_sms(monkeypatch):
    # the public function's backward with a persistent dgrad config (two accumulators) and 1
    # SM: one program per group walks every dgrad tile
    persistent = triton.Config({**TILE, "BLOCK_N_TAIL": 16, "PERSISTENT": 1}, num_warps=4,
                               num_stages=1)
    launched, real = _on_one_sm(monkeypatch, kernels_mod._conv_dgrad, persistent)
    x, w, b = inputs((1, 80, 6, 6), (40, 40, 3, 3), torch.float32, channels_last=True)
    dy = torch.randn((1, 40, 6, 6), generator=torch.Generator().manual_seed(3),
                     dtype=torch.float64)
    x64, w64, b64 = (t.double().detach().requires_grad_() for t in (x, w, b))
    F.relu(F.conv2d(x64, w64, b64, 1, 1, 1, 2)).backward(dy)
    x.requires_grad_()
    conv_mod.conv2d_relu(x, w, b, 1, 1, 1, 2).backward(dy.to(x.device, x.dtype))
    # dgrad's grid: 40 input channels per group take a 16 + 16 program and a second, partly
    # masked one, for each of the ceil(36 / 16) M tiles
    dgrad_tiles = triton.cdiv(36, 16) * 2
    assert (dgrad_tiles, 2, 1, 1) in launched
    assert real(dgrad_tiles, 2, 1, 1) == 1
    assert_close(x.grad, x64.grad, torch.float32, reduce_dim=20 * 9)


def test_report_models_a_persistent_dgrad_as_its_programs():
    specs = {s.name: s for s in conv_mod.aot_specs(("conv2", "conv3", "conv4"))}
    seen = set()
    for name, spec in specs.items():
        if not name.startswith("conv2d_relu_dgrad[") or "fp16" not in name:
            continue
        c = spec.constexprs
        p = c.get("PERSISTENT", 0)
        assert (f" p{p} " in name) == (p > 0), name
        layer = name.split("[")[1].split(",")[0]
        (n, _, h, w), (_, cg_in, _, _), _, _, groups, _ = conv_mod.ALEXNET_CONVS[layer]
        tiles = (triton.cdiv(n * h * w, c["BLOCK_M"])
                 * triton.cdiv(cg_in, c["BLOCK_N"] + c.get("BLOCK_N_TAIL", 0)))
        for sms in (132, 108):
            load = workload(name, c, sms)
            expected = min(tiles, triton.cdiv(sms * p, groups)) if p else tiles
            assert load.blocks == expected * groups, (name, sms)
            if p:  # the same MACs issued as one program per tile
                seen.add(layer)
                assert load.blocks < tiles * groups
                assert load.issued == workload(name, {**c, "PERSISTENT": 0}, sms).issued
    assert seen == {"conv2", "conv3", "conv4"}  # a persistent dgrad at every layer asked


def test_persistent_dgrad_configs_are_gated_and_compiled():
    gated = {tuning._tile(c) for c in tuning.CONV_UNVERIFIED["dgrad"]["mma"]}
    persistent = {tuning._tile(c) for c in tuning.DGRAD_PERSISTENT_CONFIGS}
    assert persistent and persistent <= gated
    assert any(c.kwargs["BLOCK_N_TAIL"] for c in tuning.DGRAD_PERSISTENT_CONFIGS)
    names = [s.name for s in conv_mod.aot_specs(("conv2", "conv3"))]
    for c in tuning.DGRAD_PERSISTENT_CONFIGS:
        k = c.kwargs
        tail = f"+{k['BLOCK_N_TAIL']}" if k["BLOCK_N_TAIL"] else ""
        layer = "conv2" if tail else "conv3"  # conv2's 48 channels take the 32 + 16 tile
        tag = (f"BM={k['BLOCK_M']} BN={k['BLOCK_N']}{tail} BK={k['BLOCK_K']} w{c.num_warps} "
               f"s{c.num_stages} p{k['PERSISTENT']} unverified, fp16]")
        assert f"conv2d_relu_dgrad[{layer}, {tag}" in names
