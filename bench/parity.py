"""Parity sweep: every autotune configuration the pruner keeps, at every AlexNet layer, against
eager PyTorch in float64 -- what the CPU interpreter cannot check (bf16 ``tl.dot``, multi-stage
pipelines, Hopper MMA layouts run only on a GPU).

    python bench/parity.py --op conv2d_relu --layer conv2 --csv /tmp/parity.csv   # on a GPU
    TRITON_INTERPRET=1 python bench/parity.py --device cpu --quick --precision fp32 --op lrn ...

For each op (the bench scripts' ``OP``: its layers, inputs and eager reference) x layer x
precision (``bf16``, ``fp16``, ``fp32`` exact, ``tf32``; LRN and pooling have no TF32 path):

1. one call with every autotuner of the op's kernel module (``kernels.<op>``) wrapped: the wrapper
   records the configurations the pruner keeps for that call and runs the first one (no
   autotuning);
2. for each autotuner that ran and each configuration it kept: that configuration forced (the
   others on their first), forward and backward, and every output and gradient compared with
   the op's eager reference computed in float64 from the same (rounded) inputs.

Error of a tensor: max |out - ref| / max |ref| (the normalised max error). A configuration
passes when its error is within max(4 x eager PyTorch's own error at that precision,
``FLOOR[precision]``): at least as accurate as cuDNN / PyTorch, up to a small factor. One CSV
row per (configuration, tensor), appended as measured.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from pathlib import Path

import bench_conv2d_relu
import bench_lrn
import bench_lrn_max_pool2d
import bench_max_pool2d
import torch
from _common import allow_tf32, append_csv, gate_checked

OPS = {m.OP.name: m.OP for m in (bench_conv2d_relu, bench_lrn, bench_max_pool2d,
                                  bench_lrn_max_pool2d)}
PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
              "tf32": torch.float32}
TENSOR_CORE_OPS = {"conv2d_relu"}  # the only op with a TF32 path
# Error allowed whatever eager PyTorch achieves: a few units of the output's last place
# (fp16/bf16/TF32-rounded operands, fp32 sums).
FLOOR = {"fp32": 1e-5, "tf32": 5e-3, "fp16": 2e-3, "bf16": 1.6e-2}
FACTOR = 4.0
FIELDS = ["op", "layer", "shape", "precision", "autotuner", "config", "tensor", "error",
          "eager_error", "bound", "ok", "note"]


# ----------------------------------------------------------------------------------------------
# Forcing a configuration
# ----------------------------------------------------------------------------------------------


def autotuners(module) -> dict[str, object]:
    """The module's ``triton.autotune`` objects by name; dicts of them (one per instruction path,
    as in ``kernels.conv2d_relu``) as ``name[key]``."""
    from triton.runtime.autotuner import Autotuner

    found = {}
    for name, obj in vars(module).items():
        if isinstance(obj, Autotuner):
            found[name] = obj
        elif isinstance(obj, dict):
            found.update({f"{name}[{k}]": v for k, v in obj.items() if isinstance(v, Autotuner)})
    return found


def config_label(cfg) -> str:
    meta = " ".join(f"{k}={v}" for k, v in cfg.kwargs.items())
    return f"{meta} w{cfg.num_warps} s{cfg.num_stages}"


class ForcedConfigs(contextlib.AbstractContextManager):
    """Within the block, each autotuner in ``tuners`` runs one configuration per call, without
    benchmarking: ``force[name]`` if set, else the first the pruner keeps for that call.
    ``kept[name]`` is the pruner's list for the latest call of that autotuner."""

    def __init__(self, tuners: dict[str, object]):
        self.tuners, self.force, self.kept = tuners, {}, {}

    def __enter__(self):
        for name, tuner in self.tuners.items():
            tuner.run = self._wrap(name, tuner)  # an instance attribute shadows Autotuner.run
        return self

    def _wrap(self, name, tuner):
        original = type(tuner).run

        def run(*args, **kwargs):
            tuner.nargs = dict(zip(tuner.arg_names, args))
            configs = list(tuner.prune_configs(kwargs)) if len(tuner.configs) > 1 \
                else list(tuner.configs)
            self.kept[name] = configs
            chosen = self.force.get(name, configs[0])
            saved = tuner.configs
            tuner.configs = [chosen]  # one config: Autotuner.run launches it without timing
            try:
                return original(tuner, *args, **kwargs)
            finally:
                tuner.configs = saved

        return run

    def __exit__(self, *exc):
        for tuner in self.tuners.values():
            vars(tuner).pop("run", None)
            tuner.cache = {}
        return False


# ----------------------------------------------------------------------------------------------
# One op x layer x precision
# ----------------------------------------------------------------------------------------------


def normalised_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    if out.shape != ref.shape:
        return float("inf")
    diff = (out.double() - ref).abs().max().item() if out.numel() else 0.0
    scale = ref.abs().max().item() if ref.numel() else 0.0
    return diff / scale if scale > 0 else diff


def forward_backward(fn, inputs, kwargs, grad_inputs, dtype: torch.dtype) -> list[torch.Tensor]:
    """[output, gradient of each input in grad_inputs] for a fixed upstream gradient, drawn in
    float64 and rounded to ``dtype`` (the case's), so the reference sees the same values."""
    leaves = [t.detach().clone().requires_grad_(i in grad_inputs) for i, t in enumerate(inputs)]
    y = fn(*leaves, **kwargs)
    g = torch.Generator(device=y.device).manual_seed(1)
    dy = torch.randn(y.shape, generator=g, device=y.device, dtype=torch.float64)
    dy = dy.to(dtype).to(y.dtype)
    y.backward(dy)
    if y.is_cuda:
        torch.cuda.synchronize(y.device)  # surface launch errors here
    return [y.detach()] + [leaves[i].grad for i in grad_inputs]


def tensor_names(op_name: str, n_inputs_with_grad: tuple[int, ...]) -> list[str]:
    names = {"conv2d_relu": ["input", "weight", "bias"]}.get(op_name, ["input"])
    return ["output"] + [f"grad_{names[i]}" for i in n_inputs_with_grad]


def sweep_case(op, case, precision: str, device: torch.device, module, emit) -> None:
    """Check every kept configuration of every autotuner ``case`` runs at ``precision``."""
    dtype = PRECISIONS[precision]
    allow_tf32(precision == "tf32")
    torch.manual_seed(0)
    built = case.make(device, dtype)
    inputs, kwargs, grads = built["inputs"], built.get("kwargs", {}), case.grad_inputs
    names = tensor_names(op.name, grads)
    base = {"op": op.name, "layer": case.layer, "shape": case.shape, "precision": precision}
    ref = forward_backward(op.eager, [t.double() for t in inputs], kwargs, grads, dtype)
    eager = forward_backward(op.eager, inputs, kwargs, grads, dtype)
    eager_err = [normalised_error(e, r) for e, r in zip(eager, ref)]
    tuners = autotuners(module)
    if not tuners:
        raise RuntimeError(f"no triton.autotune object found in {module.__name__}")
    fn = op.triton()
    with ForcedConfigs(tuners) as forced:
        forward_backward(fn, inputs, kwargs, grads, dtype)  # records what the pruner keeps
        kept = dict(forced.kept)
        for tuner, configs in kept.items():
            for cfg in configs:
                forced.force = {tuner: cfg}
                row = dict(base, autotuner=tuner, config=config_label(cfg))
                try:
                    outs = forward_backward(fn, inputs, kwargs, grads, dtype)
                except Exception as e:  # noqa: BLE001 -- recorded, the sweep goes on
                    emit(dict(row, tensor="*", ok=False,
                              note=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"))
                    continue
                for name, out, r, e_err in zip(names, outs, ref, eager_err):
                    err = normalised_error(out, r)
                    bound = max(FACTOR * e_err, FLOOR[precision])
                    emit(dict(row, tensor=name, error=f"{err:.3g}", eager_error=f"{e_err:.3g}",
                              bound=f"{bound:.3g}", ok=err <= bound, note=""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--op", choices=list(OPS), action="append", help="repeatable (default: all)")
    p.add_argument("--layer", action="append", help="only these layers (repeatable)")
    p.add_argument("--precision", choices=list(PRECISIONS), action="append",
                   help="repeatable (default: all; tf32 for conv2d_relu only)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--batch", type=int, default=None, help="default 128 (2 with --quick)")
    p.add_argument("--quick", action="store_true", help="the bench scripts' small shapes")
    p.add_argument("--csv", type=Path, required=True, help="rows are appended here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    args.batch = args.batch or (2 if args.quick else 128)
    failed = 0

    def emit(row: dict) -> None:
        nonlocal failed
        failed += not row["ok"]
        append_csv(args.csv, FIELDS, [row])
        if not row["ok"]:
            why = row.get("note") or f"error {row['error']} > bound {row['bound']}"
            print(f"  FAILED {row['op']} {row['layer']} {row['precision']} "
                  f"{row.get('autotuner', '')} {row.get('config', '')} {row['tensor']}: {why}",
                  file=sys.stderr, flush=True)

    for op_name in args.op or list(OPS):
        op = OPS[op_name]
        with gate_checked():
            module = importlib.import_module(f"kernels.{op_name}")
        for case in op.cases(args):
            if args.layer and case.layer not in args.layer:
                continue
            for precision in args.precision or list(PRECISIONS):
                if precision == "tf32" and op_name not in TENSOR_CORE_OPS:
                    continue
                before = failed
                try:
                    sweep_case(op, case, precision, device, module, emit)
                except Exception as e:  # noqa: BLE001 -- one case failing is a finding
                    emit({"op": op_name, "layer": case.layer, "shape": case.shape,
                          "precision": precision, "tensor": "*", "ok": False,
                          "note": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
                print(f"{op_name} {case.layer} {precision}: "
                      f"{'ok' if failed == before else f'{failed - before} failed'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
