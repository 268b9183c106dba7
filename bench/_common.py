"""Shared machinery of the kernel benchmarks (bench_<op>.py): providers x modes x layers.

A bench script describes its op with :class:`Case`s (one per AlexNet layer) and three callables
per provider; :func:`run` times every (layer, provider, mode) and writes the results:

- providers: ``triton`` (kernels.*), ``eager`` (the torch.nn.functional reference),
  ``compile`` (``torch.compile`` of the eager reference);
- modes: ``forward``, ``backward`` (gradient of a fixed upstream gradient through a recorded
  graph), ``full`` (forward + backward);
- timing: CUDA -- ``triton.testing.do_bench`` (L2 flushed before each rep) after a burn-in,
  median and 20th/80th percentiles; CPU -- wall clock over ``--rep`` calls after the burn-in;
- throughput next to milliseconds: TFLOP/s for conv, GB/s for LRN and pooling;
- dtypes: ``fp32`` (exact: TF32 off), ``tf32`` (fp32 tensors, TF32 allowed), ``fp16``, ``bf16``;
- results appended to ``bench/results/<op>.csv`` as they are measured and rewritten as ``<op>.md``
  (and ``<op>.png`` when matplotlib is installed), every row with device, date, git revision,
  torch and triton.

The ``triton`` provider runs on CUDA tensors, or on CPU only when ``TRITON_INTERPRET=1`` was set
by the caller (the interpreter is for tests: expect seconds per call at ``--quick`` shapes).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:  # `python bench/bench_x.py` from anywhere
    sys.path.insert(0, str(ROOT))

PROVIDERS = ("triton", "eager", "compile")
MODES = ("forward", "backward", "full")
# "fp32" is exact fp32 (TF32 off for cuDNN, cuBLAS and the kernels); "tf32" is fp32 tensors with
# TF32 tensor-core math allowed (PyTorch's default for cuDNN convolutions)
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16,
          "bf16": torch.bfloat16}
FIELDS = ["date", "git", "device", "torch", "triton", "op", "layer", "shape", "dtype", "provider",
          "mode", "ms_median", "ms_p20", "ms_p80", "throughput", "unit"]


@dataclass
class Case:
    """One layer: how to build its tensors and how much work one call of each mode does."""

    layer: str  # "conv2"
    shape: str  # human-readable input/param shape, goes into the table
    make: Callable[[torch.device, torch.dtype], dict]  # -> {"inputs": [...], "kwargs": {...}}
    work: Callable[[str, torch.dtype], float]  # (mode, dtype) -> FLOPs or bytes per call
    grad_inputs: tuple[int, ...] = (0,)  # which inputs require grad


@dataclass
class Op:
    name: str  # file stem: results go to bench/results/<name>.csv
    unit: str  # "TFLOP/s" or "GB/s"
    eager: Callable  # fn(*inputs, **kwargs) -> tensor
    triton: Callable[[], Callable]  # imports kernels lazily, returns fn(*inputs, **kwargs)
    cases: Callable[[argparse.Namespace], list[Case]]
    extra_args: Callable[[argparse.ArgumentParser], None] = field(default=lambda p: None)


def bytes_of(dtype: torch.dtype, *shapes: tuple[int, ...]) -> float:
    elem = torch.tensor([], dtype=dtype).element_size()
    return float(sum(elem * torch.Size(s).numel() for s in shapes))


# ----------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def triton_version() -> str:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return "none"


# kernels.tuning.UNVERIFIED_ENV (spelled here: importing kernels is what fails on a bad value)
UNVERIFIED_ENV = "LIGHTNING_ALEXNET_UNVERIFIED"


@contextlib.contextmanager
def gate_checked():
    """Around the first import of the Triton kernels: a bad LIGHTNING_ALEXNET_UNVERIFIED, which
    kernels.tuning refuses on import (lightning_alexnet.ops passes the same text on), ends the
    script with that message in one line and exit status 2 instead of a traceback."""
    try:
        yield
    except ValueError as e:
        if not str(e).startswith(f"{UNVERIFIED_ENV}="):
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def allow_tf32(on: bool) -> None:
    """TF32 tensor-core math for fp32 convolutions and matmuls (cuDNN, cuBLAS, the kernels)."""
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def time_fn(fn: Callable[[], object], device: torch.device, args: argparse.Namespace,
            grad_to_none: list[torch.Tensor]) -> tuple[float, float, float]:
    """(median, p20, p80) milliseconds of fn(), after ``args.burn_in`` untimed calls."""
    for _ in range(args.burn_in):  # compile, autotune, allocator warm-up
        fn()
    if device.type == "cuda":
        import triton.testing

        torch.cuda.synchronize(device)
        q = triton.testing.do_bench(fn, warmup=args.warmup_ms, rep=args.rep_ms,
                                    grad_to_none=grad_to_none, quantiles=[0.5, 0.2, 0.8])
        return float(q[0]), float(q[1]), float(q[2])
    times = []
    for _ in range(args.rep):
        for t in grad_to_none:
            t.grad = None
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    if len(times) == 1:
        return times[0], times[0], times[0]
    q = statistics.quantiles(times, n=10, method="inclusive")  # deciles: q[1]=p20, q[7]=p80
    return statistics.median(times), q[1], q[7]


def mode_fn(fn: Callable, inputs: list, kwargs: dict, mode: str, grad_inputs) -> Callable:
    """The callable one timed call makes for ``mode``."""
    if mode == "forward":
        return lambda: fn(*inputs, **kwargs)
    out = fn(*inputs, **kwargs)
    dy = torch.randn_like(out)
    if mode == "backward":  # the graph is recorded once and kept
        return lambda: out.backward(dy, retain_graph=True)
    return lambda: fn(*inputs, **kwargs).backward(dy)


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def parse_args(op: Op, argv=None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=f"Benchmark {op.name}: providers x modes on "
                                "AlexNet's layers. See bench/README.md.")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if cuda else "cpu")
    p.add_argument("--dtype", choices=list(DTYPES), action="append",
                   help="repeatable (default: fp16 and fp32 on CUDA, fp32 on CPU)")
    p.add_argument("--provider", choices=PROVIDERS, action="append",
                   help="repeatable (default: all on CUDA; eager and compile on CPU, plus triton "
                        "when TRITON_INTERPRET=1 is set)")
    p.add_argument("--mode", choices=MODES, action="append", help="repeatable (default: all)")
    p.add_argument("--layer", action="append", help="only these layers, e.g. conv2 (repeatable)")
    p.add_argument("--batch", type=int, help="batch size (default 128 on CUDA, 2 on CPU)")
    p.add_argument("--quick", action="store_true",
                   help="tiny shapes (same kernel/stride/groups as each layer) and few reps: a "
                        "smoke test, not a measurement")
    p.add_argument("--burn-in", type=int, default=None, help="untimed calls first (default 3)")
    p.add_argument("--rep", type=int, default=None, help="CPU: timed calls (default 10)")
    p.add_argument("--warmup-ms", type=float, default=25.0, help="CUDA do_bench warmup (ms)")
    p.add_argument("--rep-ms", type=float, default=100.0, help="CUDA do_bench repetition (ms)")
    p.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    p.add_argument("--no-plot", action="store_true")
    op.extra_args(p)
    args = p.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not cuda:
        p.error("--device cuda: torch sees no CUDA device (this torch build: "
                f"{torch.__version__}); use --device cpu")
    on_cpu = args.device.type == "cpu"
    args.dtype = args.dtype or (["fp32"] if on_cpu else ["fp16", "fp32"])
    default_providers = ["triton", "eager", "compile"] if not on_cpu or interpreting() \
        else ["eager", "compile"]
    args.provider = args.provider or default_providers
    if "triton" in args.provider:
        if on_cpu and not interpreting():
            p.error("--provider triton on CPU needs the Triton interpreter: run with "
                    "TRITON_INTERPRET=1 (slow; use --quick)")
        if not on_cpu and interpreting():
            p.error("TRITON_INTERPRET=1 is set: unset it to time the compiled kernels on CUDA")
    args.mode = args.mode or list(MODES)
    args.batch = args.batch or (2 if on_cpu else 128)
    args.burn_in = args.burn_in if args.burn_in is not None else (1 if args.quick else 3)
    args.rep = args.rep if args.rep is not None else (3 if args.quick else 10)
    if args.quick:
        args.warmup_ms, args.rep_ms = 5.0, 20.0
    return args


def _provider_fn(op: Op, provider: str) -> Callable:
    if provider == "eager":
        return op.eager
    if provider == "triton":
        return op.triton()
    # static shapes, one graph per layer x dtype x grad mode; fail loudly instead of silently
    # running eager once dynamo's recompile limit is hit
    torch._dynamo.config.recompile_limit = 64
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    return torch.compile(op.eager, dynamic=False)


def run(op: Op, argv=None) -> list[dict]:
    args = parse_args(op, argv)
    device = args.device
    cases = [c for c in op.cases(args) if not args.layer or c.layer in args.layer]
    if not cases:
        raise SystemExit(f"no layer matches --layer {args.layer}")
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
           "git": git_revision(), "device": device_name(device), "torch": torch.__version__,
           "triton": triton_version()}
    label = env["device"] + (" (Triton interpreter)" if interpreting() and device.type == "cpu"
                             else "")
    print(f"{op.name} on {label}, batch {args.batch}{' (quick shapes)' if args.quick else ''}")
    rows, failures = [], []
    csv_path = args.results / f"{op.name}.csv"
    with gate_checked():
        fns = {p: _provider_fn(op, p) for p in args.provider}
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    # every layer in the first dtype before the next: a run cut short by its time limit (the
    # GPU report's) still covers all layers in the dtype asked for first
    for dname in args.dtype:
        for case in cases:
            dtype = DTYPES[dname]
            allow_tf32(dname == "tf32")
            torch.manual_seed(0)
            built = case.make(device, dtype)
            inputs, kwargs = built["inputs"], built.get("kwargs", {})
            for i in case.grad_inputs:
                inputs[i].requires_grad_(True)
            grads = [inputs[i] for i in case.grad_inputs]
            for provider in args.provider:
                for mode in args.mode:
                    try:
                        call = mode_fn(fns[provider], inputs, kwargs, mode, case.grad_inputs)
                        ms, p20, p80 = time_fn(call, device, args, grads)
                    except Exception as e:  # noqa: BLE001 -- report, keep timing the rest
                        failures.append(f"{case.layer} {dname} {provider} {mode}: "
                                        f"{type(e).__name__}: {str(e).splitlines()[0][:300]}")
                        print(f"  FAILED {failures[-1]}", file=sys.stderr)
                        continue
                    work = case.work(mode, dtype)
                    scale = 1e-9 if op.unit == "TFLOP/s" else 1e-6  # per ms -> T/s or G/s
                    row = dict(env, device=label, op=op.name, layer=case.layer, shape=case.shape,
                               dtype=dname, provider=provider, mode=mode, ms_median=f"{ms:.4f}",
                               ms_p20=f"{p20:.4f}", ms_p80=f"{p80:.4f}",
                               throughput=f"{work * scale / ms:.4g}", unit=op.unit)
                    rows.append(row)
                    append_csv(csv_path, FIELDS, [row])  # kept if the run is cut short
                    print(f"  {case.layer:6s} {dname} {provider:7s} {mode:8s} {ms:9.3f} ms "
                          f"[{p20:.3f}, {p80:.3f}]  {row['throughput']} {op.unit}", flush=True)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    write_results(op, rows, args, failures)
    if failures:
        print(f"{len(failures)} measurement(s) failed (listed above)", file=sys.stderr)
    return rows


def append_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Append ``rows`` to the CSV at ``path`` (header written when the file is new). A file
    written with other columns is rewritten with ``fields`` first (old rows keep their values,
    new columns empty), so a script that gained a column keeps its history."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old_rows = []
    if path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != fields:
                old_rows = list(reader)
                fields = fields + [c for c in reader.fieldnames or [] if c not in fields]
    new = not path.exists() or bool(old_rows) or path.stat().st_size == 0
    with path.open("w" if new else "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        if new:
            writer.writeheader()
        writer.writerows(old_rows + rows)


def write_results(op: Op, rows: list[dict], args: argparse.Namespace, failures: list[str]):
    """``<op>.md`` (this run's table) and ``<op>.png``; the CSV rows were appended as measured."""
    csv_path = args.results / f"{op.name}.csv"
    args.results.mkdir(parents=True, exist_ok=True)
    md_path = args.results / f"{op.name}.md"
    head = rows[0] if rows else {}
    quick = ", quick shapes (smoke test, not a measurement)" if args.quick else ""
    lines = [f"# {op.name}", "",
             (f"{head.get('device', '?')}, {head.get('date', '?')} UTC, "
              f"git {head.get('git', '?')}, torch {head.get('torch', '?')}, "
              f"triton {head.get('triton', '?')}, batch {args.batch}{quick}."),
             "",
             f"| layer | shape | dtype | mode | provider | ms (median) | ms p20-p80 | {op.unit} |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["layer"], r["dtype"], MODES.index(r["mode"]))):
        lines.append(f"| {r['layer']} | {r['shape']} | {r['dtype']} | {r['mode']} | "
                     f"{r['provider']} | {r['ms_median']} | {r['ms_p20']}-{r['ms_p80']} | "
                     f"{r['throughput']} |")
    if failures:
        lines += ["", "Failed:", *[f"- {f}" for f in failures]]
    md_path.write_text("\n".join(lines) + "\n")
    print(f"appended {len(rows)} rows to {csv_path}; wrote {md_path}")
    if not args.no_plot and rows:
        plot(op, rows, args.results / f"{op.name}.png")


def plot(op: Op, rows: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib, or the project's "
              "[bench] extra)")
        return
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        sel = [r for r in rows if r["mode"] == mode]
        groups = list(dict.fromkeys(f"{r['layer']}\n{r['dtype']}" for r in sel))
        providers = list(dict.fromkeys(r["provider"] for r in sel))
        width = 0.8 / len(providers)
        for j, prov in enumerate(providers):
            vals = {f"{r['layer']}\n{r['dtype']}": float(r["throughput"]) for r in sel
                    if r["provider"] == prov}
            ax.bar([i + j * width for i in range(len(groups))],
                   [vals.get(g, 0.0) for g in groups], width, label=prov)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))], groups)
        ax.set_title(f"{op.name} {mode}")
        ax.set_ylabel(op.unit)
        ax.legend()
    fig.suptitle(rows[0]["device"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
