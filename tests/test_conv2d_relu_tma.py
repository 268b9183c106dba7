"""conv2d_relu with the weight read through a TMA descriptor (the forward's and dgrad's
``USE_TMA`` configs, Hopper) against F.relu(F.conv2d) in float64, under the interpreter.

The launcher builds descriptors only on an sm_90 GPU with LIGHTNING_ALEXNET_UNVERIFIED=1, and
the interpreter's autotuners hold one pointer config; so these tests ask the launcher for the
descriptors (``_tma_wanted``) and give the "mma_tma" autotuners one TMA config each, then check
that it ran. Also: which weights take a descriptor, and what the pruner keeps. On a GPU (the
kernel tests' CUDA run) the TMA runs need sm_90 or later.
"""

import importlib

import pytest
import torch
import triton
from test_conv2d_relu import check, make, reference
from tolerances import assert_close

from kernels import tuning
from kernels._conv2d_relu_args import _Geometry, _tma_wanted
from kernels._conv_tma import dgrad_tma_boxes, fwd_tma_boxes, weight_desc, with_boxes
from kernels.conv2d_relu import conv2d_relu

conv_mod = importlib.import_module("kernels.conv2d_relu")
args_mod = importlib.import_module("kernels._conv2d_relu_args")
kernels_mod = importlib.import_module("kernels._conv2d_relu_kernels")

# the interpreter's tiles (tl.dot needs 16), reading the weight by TMA
FWD_TMA = with_boxes(tuning._config(32, 16, 16, 4, 1), fwd_tma_boxes, True)
DGRAD_TMA = with_boxes(tuning._config(32, 16, 16, 4, 1, tail=0), dgrad_tma_boxes, True)
DGRAD_TMA_TAIL = with_boxes(tuning._config(32, 16, 16, 4, 1, tail=16), dgrad_tma_boxes, True)


@pytest.fixture
def tma(monkeypatch):
    """Descriptors for every launch; returns a function that installs the forward's and
    dgrad's TMA configs in the "mma_tma" autotuners (returned, to read ``best_config``)."""
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] < 9:
        major, minor = torch.cuda.get_device_capability()
        pytest.skip(f"TMA needs sm_90 or later; this GPU is sm_{major}{minor}")
    monkeypatch.setattr(conv_mod, "_tma_wanted", lambda x: True)
    monkeypatch.setattr(conv_mod, "WGRAD_SPLITS", 3)

    def use(fwd=FWD_TMA, dgrad=DGRAD_TMA):
        tuners = {"fwd": kernels_mod._conv_fwd["mma_tma"],
                  "dgrad": kernels_mod._conv_dgrad["mma_tma"]}
        for name, config in (("fwd", fwd), ("dgrad", dgrad)):
            if config is not None:
                monkeypatch.setattr(tuners[name], "configs", [config])
            monkeypatch.setattr(tuners[name], "best_config", None, raising=False)
        return tuners

    return use


def channels_last(*tensors):
    return [t.detach().to(memory_format=torch.channels_last).requires_grad_() for t in tensors]


TMA_CASES = [
    # x shape, w shape, stride, padding, groups, dgrad by TMA too
    # conv2-like: groups 2, 24 input channels per group (K blocks straddle taps), 20 output
    # channels per group: the second N tile's box holds 4 rows of the group and 12 of the next
    # group (group 0) or past C_out (group 1, zero-filled); stride 2. dgrad: C_out/g = 20 is not
    # a multiple of BLOCK_K, so only the forward reads by TMA here (the pruner's rule)
    pytest.param((1, 48, 6, 6), (40, 24, 3, 3), 2, 1, 2, False, id="groups2-cg24-cgout20"),
    # 40 input channels per group: dgrad's second program reads columns 32..47 of a tap whose
    # channels end at 40 (the rest are the next tap's, masked at the store); groups 2, pad 1
    pytest.param((1, 80, 5, 5), (64, 40, 3, 3), 1, 1, 2, True, id="groups2-cg40-cgout32"),
    # 5x5 pad 2 stride 2, one group, 16 channels: every K block lies in one tap
    pytest.param((2, 16, 6, 6), (16, 16, 5, 5), 2, 2, 1, True, id="5x5-pad2-stride2"),
]


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, groups, tma_dgrad", TMA_CASES)
def test_tma_configs_match_reference(tma, x_shape, w_shape, stride, padding, groups, tma_dgrad):
    tuners = tma(dgrad=DGRAD_TMA if tma_dgrad else None)
    x, w, b = make(x_shape, w_shape)
    x, w = channels_last(x, w)
    check(x, w, b, stride, padding, groups)
    assert tuners["fwd"].best_config is FWD_TMA  # the forward ran its TMA config
    if tma_dgrad:
        assert tuners["dgrad"].best_config is DGRAD_TMA


def test_dgrad_tail_accumulator_through_its_own_descriptor(tma):
    # conv2's 32 + 16 columns for 48 input channels per group: the tail box (16 columns) comes
    # from the second descriptor; 40 channels leave 8 of the tail's columns masked
    tuners = tma(dgrad=DGRAD_TMA_TAIL)
    for x_shape, w_shape in (((1, 96, 4, 4), (32, 48, 3, 3)), ((2, 40, 4, 4), (16, 40, 3, 3))):
        x, w, b = make(x_shape, w_shape)
        x, w = channels_last(x, w)
        groups = x_shape[1] // w_shape[1]
        check(x, w, b, 1, 1, groups)
        assert tuners["dgrad"].best_config is DGRAD_TMA_TAIL


def test_float16_through_tma(tma):
    tuners = tma()
    x, w, b = make((2, 16, 5, 5), (16, 16, 3, 3), dtype=torch.float16)
    x, w = channels_last(x, w)
    check(x, w, b, 1, 1, 1)
    assert tuners["fwd"].best_config is FWD_TMA and tuners["dgrad"].best_config is DGRAD_TMA


# the interpreter's numpy matmul warns about the NaN it makes, as intended
@pytest.mark.filterwarnings("ignore:invalid value encountered in matmul:RuntimeWarning")
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_special_values_stay_in_their_channels(tma, value):
    # group 1's first output channel holds the value: its rows sit right after group 0's 20 in
    # the weight, inside group 0's second N tile's box, which must not carry it into group 0;
    # an input pixel holds it too (a NaN/inf through the gather, as torch)
    tma(dgrad=None)
    x, w, b = make((1, 48, 5, 5), (40, 24, 3, 3))
    x, w, b = (t.detach().clone() for t in (x, w, b))
    w[20, 3, 1, 1] = value
    x[0, 30, 2, 2] = value
    x, w = channels_last(x, w)
    y = conv2d_relu(x, w, b, 1, 1, 1, 2)
    y_ref, _ = reference(x, w, b, 1, 1, 2, torch.zeros_like(y))
    assert_close(y, y_ref, torch.float32, reduce_dim=216)
    assert torch.isfinite(y[:, :20]).all()  # group 0 never sees either value
    assert not torch.isfinite(y[:, 20:]).all()  # group 1 does (the test can fail)


def geometry(w, groups=1):
    c_out, cg_in, kh, kw = w.shape
    return _Geometry(1, cg_in, 8, 8, c_out // groups, 6, 6, kh, kw, (1, 1), (0, 0), groups)


def test_which_weights_take_a_descriptor():
    w = torch.randn(32, 16, 3, 3).to(memory_format=torch.channels_last)
    desc = weight_desc(w, geometry(w))
    assert desc is not None and list(desc.shape) == [32, 144] and list(desc.strides) == [144, 1]
    assert desc.base.data_ptr() == w.data_ptr()  # the weight in place, no copy
    assert weight_desc(w.half(), geometry(w)) is not None
    refused = {
        "NCHW": w.contiguous(),
        "fp64": w.double(),
        # a storage offset of one element: base 4 bytes off 16
        "misaligned": torch.empty(1 + w.numel()).as_strided(w.shape, w.stride(), 1),
        # 3x3x3 fp16 rows: 54 bytes, not a multiple of 16
        "odd rows": torch.randn(8, 3, 3, 3, dtype=torch.float16).to(
            memory_format=torch.channels_last),
    }
    for name, t in refused.items():
        assert weight_desc(t, geometry(t)) is None, name


def test_launcher_builds_descriptors_only_on_hopper_with_the_gate(monkeypatch):
    # never for CPU tensors (the interpreter), nor with the gate closed: the launcher keeps
    # its plain autotuners and pointer configs
    monkeypatch.setattr(args_mod, "UNVERIFIED", True)
    assert not _tma_wanted(torch.empty(1, device="cpu"))
    monkeypatch.setattr(args_mod, "UNVERIFIED", False)
    assert not _tma_wanted(torch.empty(1))  # the default device: CUDA on a GPU machine


def test_nchw_weight_runs_the_pointer_configs(tma):
    tuners = tma()
    x, w, b = make((1, 16, 5, 5), (16, 16, 3, 3))
    check(x, w, b, 1, 1, 1)  # NCHW weight: no descriptor, the "fma" tuner ran
    assert tuners["fwd"].best_config is None and tuners["dgrad"].best_config is None


def shape(cg_in, cg_out, kh=3, kw=3):
    return {"N": 128, "CG_IN": cg_in, "H": 13, "W": 13, "CG_OUT": cg_out, "OH": 13, "OW": 13,
            "KH": kh, "KW": kw, "STRIDE_H": 1, "STRIDE_W": 1, "PAD_H": 1, "PAD_W": 1,
            "INPUT_PRECISION": "ieee"}


def test_pruner_keeps_tma_configs_only_with_a_descriptor():
    configs, prune = tuning.CONV_TUNING["fwd"]["mma_tma"]
    everything = configs + tuning.TMA_CONFIGS["fwd"]
    desc = object()  # the pruner only asks whether there is one
    with_desc = prune(everything, {}, w_desc=desc, **shape(256, 384))
    assert any(c.kwargs.get("USE_TMA") for c in with_desc)
    assert any(not c.kwargs.get("USE_TMA") for c in with_desc)  # pointer configs compete
    without = prune(everything, {}, w_desc=None, **shape(256, 384))
    assert without and not any(c.kwargs.get("USE_TMA") for c in without)
    # conv1's 3 channels keep their own (pointer) list
    small = prune(everything, {}, w_desc=desc, **shape(3, 96, 11, 11))
    assert small and not any(c.kwargs.get("USE_TMA") for c in small)


def test_dgrad_pruner_keeps_tma_only_where_k_blocks_stay_in_a_tap():
    configs, prune = tuning.CONV_TUNING["dgrad"]["mma_tma"]
    everything = configs + tuning.TMA_CONFIGS["dgrad"]
    kept = prune(everything, {}, w_desc=object(), **shape(192, 96))  # 96 % 64 != 0
    tma = [c for c in kept if c.kwargs.get("USE_TMA")]
    assert tma and all(96 % c.kwargs["BLOCK_K"] == 0 for c in tma)
    assert any(c.kwargs["BLOCK_K"] == 64 for c in kept if not c.kwargs.get("USE_TMA"))
    # TF32: dgrad's N-major B kept wgmma from overlapping through TMA: pointer configs only
    tf32 = prune(everything, {}, w_desc=object(), **{**shape(192, 96), "INPUT_PRECISION": "tf32"})
    assert tf32 and not any(c.kwargs.get("USE_TMA") for c in tf32)
    fwd_configs, fwd_prune = tuning.CONV_TUNING["fwd"]["mma_tma"]
    fwd_tf32 = fwd_prune(fwd_configs + tuning.TMA_CONFIGS["fwd"], {}, w_desc=object(),
                         **{**shape(192, 96), "INPUT_PRECISION": "tf32"})
    assert any(c.kwargs.get("USE_TMA") for c in fwd_tf32)  # the forward's B is K-major


def test_tma_configs_are_behind_the_unverified_gate():
    for kernel, tma_configs in tuning.TMA_CONFIGS.items():
        listed = tuning.CONV_TUNING[kernel]["mma_tma"][0]
        assert any(c.kwargs.get("USE_TMA") for c in listed) == tuning.UNVERIFIED
        assert all(c.pre_hook is not None for c in listed + tma_configs)
        assert all(c.kwargs["USE_TMA"] for c in tma_configs)


def test_pre_hook_sets_the_box_from_the_tile():
    w = torch.randn(32, 16, 3, 3).to(memory_format=torch.channels_last)
    desc, tail = weight_desc(w, geometry(w)), weight_desc(w, geometry(w))
    FWD_TMA.pre_hook({"w_desc": desc, **FWD_TMA.kwargs})
    assert desc.block_shape == [16, 16]
    big = tuning.TMA_CONFIGS["fwd"][0]
    big.pre_hook({"w_desc": desc, **big.kwargs})
    assert desc.block_shape == [big.kwargs["BLOCK_N"], big.kwargs["BLOCK_K"]]
    DGRAD_TMA_TAIL.pre_hook({"w_desc": desc, "wt_desc": tail, **DGRAD_TMA_TAIL.kwargs})
    assert desc.block_shape == [16, 16] and tail.block_shape == [16, 16]
    cfg = triton.Config({**DGRAD_TMA_TAIL.kwargs, "BLOCK_K": 32}, pre_hook=DGRAD_TMA_TAIL.pre_hook)
    cfg.pre_hook({"w_desc": desc, "wt_desc": tail, **cfg.kwargs})
    assert desc.block_shape == [32, 16] and tail.block_shape == [32, 16]
