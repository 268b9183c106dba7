"""The LIGHTNING_ALEXNET_UNVERIFIED gate (kernels.tuning): configurations compiled ahead of time
but never run on a GPU (the conv kernels' 8-warp tiles) are left out of the autotuners unless
it is set, are always compiled by ``aot_specs`` (named "unverified"), and are pruned by the
same rules as the rest when it is set.
"""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import triton

from kernels import tuning

conv_mod = importlib.import_module("kernels.conv2d_relu")
ROOT = Path(__file__).resolve().parent.parent
KERNELS = ("fwd", "dgrad", "wgrad")

# What the autotuners hold, read in a fresh process (the gate is read once, at import) with the
# interpreter off, so that each autotuner holds its GPU config list rather than the interpreter's
# one config (importing and building autotuners needs no GPU).
_PROBE = """
import json
from kernels import _conv2d_relu_kernels as k, tuning
held = {name: {path: [tuning._tile(c) for c in tuner.configs] for path, tuner in tuners.items()}
        for name, tuners in (("fwd", k._conv_fwd), ("dgrad", k._conv_dgrad),
                             ("wgrad", k._conv_wgrad))}
print(json.dumps({"unverified": tuning.UNVERIFIED, "held": held}))
"""


def autotuner_configs(gate: str | None) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT)}
    env.pop(tuning.UNVERIFIED_ENV, None)
    if gate is not None:
        env[tuning.UNVERIFIED_ENV] = gate
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    return done


def gated_tiles(kernel: str, path: str = "mma") -> set:
    return {tuple(tuning._tile(c)) for c in tuning.CONV_UNVERIFIED[kernel][path]}


@pytest.mark.parametrize("gate", [None, "1"])
def test_autotuners_hold_the_gated_configs_only_when_the_gate_is_set(gate):
    done = autotuner_configs(gate)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["unverified"] is (gate == "1")
    for kernel in KERNELS:
        held = {tuple(t) for t in out["held"][kernel]["mma"]}
        gated = gated_tiles(kernel)
        assert gated, kernel  # there are gated configs on the tensor-core path
        if gate == "1":
            assert gated <= held, (kernel, gated - held)
        else:
            assert not gated & held, (kernel, gated & held)
        # the verified configs are there either way, at most 4 warps
        verified = held - gated
        assert verified and all(t[3] <= 4 for t in verified), (kernel, verified)
    for kernel in ("fwd", "dgrad"):  # the weight-descriptor autotuner holds the same pointer
        # configs: the persistent ones too, with the gate only
        persistent = {t for t in gated_tiles(kernel) if "persistent" in t}
        held = {tuple(t) for t in out["held"][kernel]["mma_tma"] if "persistent" in t}
        assert persistent and held == (persistent if gate == "1" else set()), kernel


def test_a_bad_gate_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(tuning.UNVERIFIED_ENV, "yes")
    with pytest.raises(ValueError, match=r"LIGHTNING_ALEXNET_UNVERIFIED='yes': set it to 1"):
        tuning._unverified_enabled()
    for value, enabled in (("1", True), ("0", False)):
        monkeypatch.setenv(tuning.UNVERIFIED_ENV, value)
        assert tuning._unverified_enabled() is enabled
    monkeypatch.delenv(tuning.UNVERIFIED_ENV)
    assert tuning._unverified_enabled() is False


def test_a_bad_gate_value_stops_the_import():
    done = autotuner_configs("yes")
    assert done.returncode != 0
    assert "LIGHTNING_ALEXNET_UNVERIFIED='yes': set it to 1" in done.stderr


def test_with_unverified_follows_the_gate(monkeypatch):
    verified, unverified = tuning.FWD_CONFIGS, tuning.FWD_8WARP_CONFIGS
    monkeypatch.setattr(tuning, "UNVERIFIED", False)
    assert tuning.with_unverified(verified, unverified) == verified
    monkeypatch.setattr(tuning, "UNVERIFIED", True)
    assert tuning.with_unverified(verified, unverified) == verified + unverified


def never_run(c) -> bool:
    """8 warps (pytorch#173068: Inductor's conv template with its flattened tap loop
    miscompiled with 8) or a persistent grid (forward, dgrad): not yet run on a GPU."""
    return c.num_warps > 4 or c.kwargs.get("PERSISTENT", 0) > 0


def test_the_gated_configs_are_the_8_warp_and_persistent_ones():
    for kernel in KERNELS:
        for path in ("mma", "fma"):
            configs, _ = tuning.CONV_TUNING[kernel][path]
            every = tuning._union(configs, tuning.CONV_UNVERIFIED[kernel][path])
            assert {tuning._tile(c) for c in every if never_run(c)} == gated_tiles(kernel, path)
            assert all(tuning.is_unverified(kernel, path, c) == never_run(c) for c in every)
    for kernel in ("fwd", "dgrad"):
        assert any(c.kwargs.get("PERSISTENT") for c in tuning.CONV_UNVERIFIED[kernel]["mma"])


def test_aot_specs_compile_every_gated_config_and_name_it():
    specs = [s for s in conv_mod.aot_specs() if s.uses_dot]
    for kernel in KERNELS:
        # the pointer configs' (the weight-descriptor ones, USE_TMA, have their own gate tests)
        mine = [s for s in specs if s.name.startswith(f"conv2d_relu_{kernel}[")
                and not s.constexprs.get("USE_TMA")]
        named = {tuning._tile(triton.Config(
                     {k: v for k, v in s.constexprs.items() if k.startswith(("BLOCK", "PERS"))},
                     num_warps=s.num_warps, num_stages=s.num_stages))
                 for s in mine if " unverified, " in s.name}
        assert named == gated_tiles(kernel), (kernel, gated_tiles(kernel) ^ named)
        # and the name says so exactly when the config is gated
        assert all((" unverified, " in s.name)
                   == (s.num_warps == 8 or s.constexprs.get("PERSISTENT", 0) > 0) for s in mine)


def layer_sizes(layer):
    (n, _, h, w), (c_out, cg_in, kh, kw), stride, pad, groups, _ = conv_mod.ALEXNET_CONVS[layer]
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    return {"N": n, "CG_IN": cg_in, "H": h, "W": w, "CG_OUT": c_out // groups, "OH": oh,
            "OW": ow, "KH": kh, "KW": kw}


def pruned_with_the_gate(kernel, layer, precision):
    configs, prune = tuning.CONV_TUNING[kernel]["mma"]
    every = tuning.with_unverified(configs, tuning.CONV_UNVERIFIED[kernel]["mma"])
    return {tuning._tile(c): c for c in prune(every, {}, **layer_sizes(layer),
                                               INPUT_PRECISION=precision)}


@pytest.mark.parametrize("precision", ["ieee", "tf32"])
@pytest.mark.parametrize("layer", ["conv2", "conv3", "conv4", "conv5"])
def test_gate_on_the_pruner_keeps_8_warps_where_the_tile_fits(monkeypatch, layer, precision):
    monkeypatch.setattr(tuning, "UNVERIFIED", True)
    sizes = layer_sizes(layer)
    for kernel in KERNELS:
        kept = pruned_with_the_gate(kernel, layer, precision)
        eight = [t for t in kept if t[3] == 8]
        assert eight, (kernel, layer, precision)  # every conv2-5 layer gets an 8-warp choice
        for tile, c in kept.items():
            if kernel == "wgrad":
                m, n = sizes["KH"] * sizes["KW"] * sizes["CG_IN"], sizes["CG_OUT"]
                assert tuning._tile_efficiency(c, m, n) >= tuning.WGRAD_MIN_TILE_EFFICIENCY
            else:
                useful, issued = tuning.conv_gemm_macs(kernel, sizes, c.kwargs)
                assert useful / issued >= tuning.MIN_TILE_EFFICIENCY, (kernel, tile)
        if precision == "tf32":  # no BLOCK_K = 64 256x64 tile (too much shared memory)
            assert not [t for t in eight if t[0] == 256 and t[2] == 64], (kernel, eight)
    # conv4's 192 output channels (forward) and input channels (dgrad): no 128-wide tile
    if layer == "conv4":
        for kernel in ("fwd", "dgrad"):
            assert all(t[1] == 64 for t in pruned_with_the_gate(kernel, layer, precision))



@pytest.mark.parametrize("path", ["mma", "mma_tma"])
@pytest.mark.parametrize("precision", ["ieee", "tf32"])
def test_gate_on_both_pruners_keep_the_persistent_dgrad_tiles_where_efficient(path, precision):
    # conv2's 48 input channels per group: the 256 x (32 + 16) one; conv3-5 (256, 192, 192):
    # the 64-wide ones (the "mma_tma" autotuner prunes its pointer configs alike)
    every = tuning.CONV_TUNING["dgrad"]["mma"][0] + tuning.CONV_UNVERIFIED["dgrad"]["mma"]
    prune = tuning.CONV_TUNING["dgrad"][path][1]
    for layer in ("conv2", "conv3", "conv4", "conv5"):
        kept = {tuning._tile(c) for c in prune(every, {}, **layer_sizes(layer),
                                                INPUT_PRECISION=precision)
                if c.kwargs.get("PERSISTENT")}
        if layer == "conv2":
            assert kept == {(256, 32, 32, 8, 3, 16, "persistent", 1)}, kept
        else:
            assert kept == {(256, 64, 32, 8, 3, "persistent", 1),
                            (128, 64, 32, 4, 3, "persistent", 2)}, (layer, kept)
