"""The GPU report: one command on a machine with one NVIDIA GPU, under 8 minutes on an H100/H200.

    make gpu-report                                  # = PYTHONPATH=. python3 bench/gpu_report.py
    PYTHONPATH=. python3 bench/gpu_report.py --stages parity,kernels --ops conv2d_relu
    python3 bench/gpu_report.py --summary-only bench/results/NVIDIA-H100-80GB-HBM3

Needs torch with CUDA, triton, numpy and pytest (matplotlib for the pictures); not jsonargparse,
not the package installed: the checkout on PYTHONPATH is enough. Stages, each in its own
processes with a time limit (a stage that fails or runs out of time is recorded, the rest runs):

1. ``tests``: the kernel test files (tests/test_<kernel>*.py) under pytest, on this GPU;
2. ``parity`` (beside 1, in ``--jobs`` processes, one per op x layer): ``bench/parity.py``, every
   autotune configuration the pruner keeps at every AlexNet layer, bf16 / fp16 / fp32 / TF32,
   against eager PyTorch in float64, including those not yet run on a GPU (8 warps, TMA: the
   autotuners leave them out unless LIGHTNING_ALEXNET_UNVERIFIED=1, see kernels.tuning);
3. ``kernels``: ``bench/bench_<op>.py`` at batch 128 for conv2d_relu (conv1-5; bf16, tf32 and
   exact fp32), LRN, max-pool and LRN + max-pool (bf16, fp32): triton vs eager (cuDNN),
   forward / backward / full, then ``torch.compile`` in a job of its own (into ``compile/``);
   then conv2d_relu in bf16 once more with LIGHTNING_ALEXNET_UNVERIFIED=1 (into
   ``unverified/``), to show what those configurations gain;
4. ``train``: ``bench/bench_train_step.py``, the paper model at batch 128, ``eager`` / ``triton``
   then ``compile`` (into ``compile/``) in 32-true and bf16-mixed: images/s and peak memory.

The timed jobs (3 and 4) run one at a time, each alone on the GPU.

The pinned Triton: when ``.gpu/`` holds the archive ``bench/triton_carry.py pack`` writes (the
GPU machine this project borrows has Triton 3.6 and no network), it is unpacked and every job
but the ``torch.compile`` ones runs with it (``--triton``); ``torch.compile`` keeps the Triton
its torch was built with. Which Triton each row ran with is in the CSVs' ``triton`` column.

Everything lands in ``bench/results/<gpu name>/`` (``--out``): the scripts' CSV / markdown / PNG,
``parity.csv``, ``stages.csv``, ``logs/``, and ``report.md``; a one-screen summary with the ratios
against cuDNN is printed and saved as ``summary.txt``. Exit status: 0 when every stage passed,
1 when one failed or timed out, 2 when there is no GPU (or on bad arguments).
``--device cpu`` (with TRITON_INTERPRET=1 and ``--out``) runs the same machinery on the quick
shapes under Triton's interpreter, for testing the report itself: not a measurement.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import triton_carry

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
KERNEL_OPS = ("conv2d_relu", "lrn", "max_pool2d", "lrn_max_pool2d")
LAYERS = {  # as in the bench scripts' tables; parity runs one process per (op, layer)
    "conv2d_relu": ("conv1", "conv2", "conv3", "conv4", "conv5"),
    "lrn": ("lrn1", "lrn2"),
    "max_pool2d": ("pool1", "pool2", "pool5"),
    "lrn_max_pool2d": ("lrn_pool1", "lrn_pool2"),
}
STAGES = ("tests", "parity", "kernels", "train")
# Share of --budget-s per phase (tests and parity run side by side; the timed jobs of kernels
# and train one at a time, alone on the GPU), and within a phase; of an op's kernel share, the
# torch.compile job gets COMPILE_SHARE (it compiles a graph per layer, dtype and mode)
SHARE = {"tests+parity": 0.32, "kernels": 0.40, "train": 0.28}
KERNEL_SHARE = {"conv2d_relu": 0.42, "conv2d_relu-unverified": 0.13, "lrn": 0.15,
                "max_pool2d": 0.15, "lrn_max_pool2d": 0.15}
COMPILE_SHARE = 0.35
# torch.compile's timings (eager code compiled by Inductor, with the Triton torch was built
# with) land here, apart from the jobs that may run a carried Triton
COMPILE_DIR = "compile"
CARRY_NOTE = "triton.txt"  # which Triton the jobs ran with, when one was carried
PROBE_TIMEOUT_S = 180  # import, one small kernel and one op of this project, compiled
# kernels.tuning's gate (kernels.tuning.UNVERIFIED_ENV, spelled here so that --summary-only
# imports neither torch nor triton): parity checks the configurations behind it too, and the
# conv benchmark runs once more with them (bf16, Triton only) into <out>/unverified/.
UNVERIFIED_ENV = "LIGHTNING_ALEXNET_UNVERIFIED"
# parity jobs per precision (bench/parity.py's --precision) for these ops; one job per layer else
PARITY_SPLIT = {"conv2d_relu": ["bf16", "fp16", "fp32", "tf32"]}
PARITY_ORDER = ["bf16", None, "tf32", "fp16", "fp32"]  # None: one job for every precision

# Dense peaks per device (no sparsity): TFLOP/s by precision, memory TB/s. Sources: NVIDIA's
# datasheets as tabulated by glennklockwood.com/garden/processors/{h100,A100} (H100 SXM: FP32
# 66.9, TF32 494.7, BF16/FP16 989.4; A100: FP32 19.5, TF32 156, BF16/FP16 312), the H100 PCIe
# column of NVIDIA's H100 datasheet (51 / 756* / 1,513*, *with sparsity: halved here, 2.0 TB/s),
# NVIDIA's H200 announcement (the H100 SXM's Hopper die, HBM3e at 4.8 TB/s) and NVIDIA's A100
# datasheet for memory (40GB 1,555 GB/s; 80GB SXM 2,039 GB/s, PCIe 1,935 GB/s).
PEAKS = [  # (pattern on torch.cuda.get_device_name, label, {precision: TFLOP/s}, TB/s)
    (r"H200", "H200 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}, 4.8),
    (r"H100.*PCIe", "H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0},
     2.0),
    (r"H100", "H100 SXM", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}, 3.35),
    (r"A100.*80GB.*PCIe", "A100 PCIe 80GB",
     {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, 1.935),
    (r"A100.*80", "A100 SXM 80GB", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
     2.039),
    (r"A100", "A100 40GB", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}, 1.555),
]


def peak_of(device: str) -> tuple[str, dict, float] | None:
    """(label, TFLOP/s by precision, TB/s) for a device name, or None when not in the table."""
    for pattern, label, tflops, tbs in PEAKS:
        if re.search(pattern, device, re.IGNORECASE):
            return label, tflops, tbs
    return None


def triton_note(version: str) -> str:
    """'' when ``version`` is in pyproject.toml's Triton range, else a line saying it is not
    (kernels compiled by another Triton may spill or not pipeline: its figures are its own)."""
    pin = re.search(r'"triton>=([\d.]+),<([\d.]+)', (ROOT / "pyproject.toml").read_text())
    if pin is None or not version:
        return ""

    def key(v: str) -> tuple:
        return tuple(int(p) for p in re.findall(r"\d+", v)[:3])

    low, high = pin.groups()
    if key(low) <= key(version) < key(high):
        return ""
    return (f"note: Triton {version} is outside the range the compile report was checked with "
            f"(>={low},<{high}): its kernels may spill or not pipeline; these figures are "
            f"Triton {version}'s")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")


# ----------------------------------------------------------------------------------------------
# Running stages: processes with a shared deadline
# ----------------------------------------------------------------------------------------------


@dataclass
class Job:
    stage: str
    name: str  # log file stem
    argv: list[str]
    timeout: float
    env: dict = field(default_factory=dict)  # set in its environment, over child_env's
    carried: bool = True  # runs with the carried Triton, when there is one (not torch.compile)


def child_env(device: str, site: Path | None = None) -> dict:
    """The jobs' environment: the checkout on PYTHONPATH, after ``site`` (an unpacked carried
    Triton, whose in-tree NVIDIA backend is then the only one loaded) when given."""
    env = dict(os.environ)
    paths = ([str(site)] if site else []) + [str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]]
                                                 if env.get("PYTHONPATH") else []))
    if site:
        env["TRITON_BACKENDS_IN_TREE"] = "1"
    if device == "cuda":
        env.pop("TRITON_INTERPRET", None)  # compiled kernels
    return env


def run_jobs(jobs: list[Job], parallel: int, logs: Path, device: str,
             site: Path | None = None) -> dict[str, tuple]:
    """Run ``jobs``, at most ``parallel`` at a time; each is killed (with the processes it
    started) at its timeout, and every one by the phase's end (from the start: the sum of the
    timeouts when they run one at a time, else the longest). Jobs marked ``carried`` run with
    the Triton unpacked in ``site`` when given. Returns name -> (return code, or None when
    killed; seconds)."""
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, done = list(jobs), {}, {}
    envs = {True: child_env(device, site), False: child_env(device)}
    limits = [job.timeout for job in jobs]
    phase_end = time.monotonic() + (sum(limits) if parallel == 1 else max(limits))
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            log = (logs / f"{job.name}.log").open("w")
            proc = subprocess.Popen(job.argv, cwd=ROOT, env={**envs[job.carried], **job.env},
                                    stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            start = time.monotonic()
            running[job.name] = (job, proc, log, start, min(start + job.timeout, phase_end))
        for name, (job, proc, log, start, end) in list(running.items()):
            now = time.monotonic()
            if proc.poll() is None and now < end:
                continue
            elapsed = now - start
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # its compile workers too
                proc.wait()
                rc = None
            else:
                rc = proc.returncode
            log.close()
            done[name] = (rc, elapsed)
            del running[name]
            print(f"  {job.stage:8s} {name:28s} "
                  f"{'TIMED OUT' if rc is None else 'ok' if rc == 0 else f'exit {rc}'} "
                  f"({elapsed:.0f} s)", flush=True)
        time.sleep(0.2)
    return done


def has_xdist() -> bool:
    return importlib.util.find_spec("xdist") is not None


def plan(args: argparse.Namespace, out: Path) -> list[list[Job]]:
    """Phases of jobs: phase 1 (tests, parity) in parallel, then kernels, then train."""
    py, cpu = sys.executable, args.device == "cpu"
    budget = args.budget_s
    phase1, kernels, train = [], [], []
    t1 = budget * SHARE["tests+parity"]
    if "tests" in args.stages:
        files = sorted({str(f.relative_to(ROOT)) for op in args.ops
                        for f in (ROOT / "tests").glob(f"test_{op}*.py")})
        # every test shape compiles its kernels anew (channel counts and kernel sizes are
        # constexprs): with pytest-xdist (on the borrowed GPU machine) a quarter of the cores
        # compile side by side, beside parity's processes
        workers = args.jobs // 4 if has_xdist() else 1
        phase1.append(Job("tests", "tests", [py, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                                             *(["-n", str(workers)] if workers > 1 else []),
                                             *files], t1))
    if "parity" in args.stages:
        # one process per op x layer, and per precision for the convolutions: each of their
        # configurations compiles anew (about 30-40 per conv layer and precision, the gated
        # ones included), so they are spread over the cores. Started in PARITY_ORDER (the
        # later ones have less of the phase left): the convolutions in bf16, the quick LRN
        # and pooling jobs, then the convolutions' other precisions
        jobs = [(op, layer, precision) for op in args.ops for layer in LAYERS[op]
                for precision in (["fp32"] if cpu else PARITY_SPLIT.get(op, [None]))]
        for op, layer, precision in sorted(jobs, key=lambda j: PARITY_ORDER.index(j[2])):
            name = f"{layer}-{precision}" if precision and not cpu else layer
            phase1.append(Job(
                "parity", f"parity-{name}",
                [py, str(BENCH / "parity.py"), "--op", op, "--layer", layer,
                 "--csv", str(out / "parity" / f"{name}.csv"),
                 *(["--device", "cpu", "--quick"] if cpu else []),
                 *(["--precision", precision] if precision else [])],
                t1, env={UNVERIFIED_ENV: "1"}))
    if "kernels" in args.stages:
        common = (["--device", "cpu", "--quick", "--mode", "forward"] if cpu else
                  ["--batch", "128", "--burn-in", "2", "--warmup-ms", "5", "--rep-ms", "25"])
        for op in args.ops:
            dtypes = ["fp32"] if cpu else (["bf16", "tf32", "fp32"] if op == "conv2d_relu"
                                           else ["bf16", "fp32"])
            share = budget * SHARE["kernels"] * KERNEL_SHARE[op]
            script = [py, str(BENCH / f"bench_{op}.py"), *common,
                      *[a for d in dtypes for a in ("--dtype", d)]]
            kernels.append(Job("kernels", f"bench_{op}",
                               [*script, "--provider", "triton", "--provider", "eager",
                                "--results", str(out)], share * (1 - COMPILE_SHARE)))
            if not cpu:  # torch.compile with the Triton its torch was built with
                kernels.append(Job("kernels", f"bench_{op}-compile",
                                   [*script, "--provider", "compile",
                                    "--results", str(out / COMPILE_DIR)],
                                   share * COMPILE_SHARE, carried=False))
            if op == "conv2d_relu":  # the gated configurations too: Triton alone, one dtype
                kernels.append(Job("kernels", f"bench_{op}-unverified",
                                   [py, str(BENCH / f"bench_{op}.py"), *common,
                                    "--provider", "triton", "--dtype", dtypes[0],
                                    "--results", str(out / "unverified")],
                                   budget * SHARE["kernels"] * KERNEL_SHARE[f"{op}-unverified"],
                                   env={UNVERIFIED_ENV: "1"}))
    if "train" in args.stages:
        t = budget * SHARE["train"]
        runs = ([("eager,auto", 1.0)] if cpu else [("eager,triton", 0.45), ("compile", 0.55)])
        for providers, share in runs:
            extra = ["--device", "cpu", "--quick"] if cpu else ["--batch", "128"]
            compiled = providers == "compile"
            train.append(Job("train", f"train-{providers.replace(',', '-')}",
                             [py, str(BENCH / "bench_train_step.py"), *extra, "--providers",
                              providers, "--precision", "32-true,bf16-mixed",
                              "--results", str(out / COMPILE_DIR if compiled else out)],
                             t * share, carried=not compiled))
    return [phase for phase in (phase1, kernels, train) if phase]


# ----------------------------------------------------------------------------------------------
# The report, from the recorded CSVs
# ----------------------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def merge_parity(out: Path) -> None:
    rows = [r for p in sorted((out / "parity").glob("*.csv")) for r in read_csv(p)]
    if rows:
        with (out / "parity.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def precision_of(dtype: str) -> str:
    return {"fp16": "fp16", "bf16": "bf16", "tf32": "tf32"}.get(dtype, "fp32")


def kernel_table(rows: list[dict], modes: tuple[str, ...]) -> list[list[str]]:
    """Rows: op, layer, dtype, mode, ms triton / eager / compile, eager / triton (speed-up vs
    cuDNN; > 1: Triton faster), compile / triton, Triton's fraction of the device's peak."""
    by = {}
    for r in rows:  # the latest run of each measurement wins
        by[(r["op"], r["layer"], r["dtype"], r["mode"], r["provider"])] = r
    keys = sorted({k[:4] for k in by}, key=lambda k: (KERNEL_OPS.index(k[0])
                                                     if k[0] in KERNEL_OPS else 9, k[1], k[2],
                                                     modes.index(k[3]) if k[3] in modes else 9))
    table = []
    for op, layer, dtype, mode in keys:
        if mode not in modes:
            continue
        cell = {p: by.get((op, layer, dtype, mode, p)) for p in ("triton", "eager", "compile")}
        ms = {p: float(r["ms_median"]) if r else None for p, r in cell.items()}

        def ratio(p, ms=ms):
            return f"{ms[p] / ms['triton']:.2f}x" if ms[p] and ms["triton"] else "-"

        frac = "-"
        t = cell["triton"]
        peak = peak_of(t["device"]) if t else None
        if t and peak:
            value = float(t["throughput"])
            top = peak[1][precision_of(dtype)] if t["unit"] == "TFLOP/s" else peak[2] * 1e3
            frac = f"{100 * value / top:.0f}%"
        table.append([op, layer, dtype, mode] + [f"{ms[p]:.3f}" if ms[p] else "-"
                                                 for p in ("triton", "eager", "compile")]
                     + [ratio("eager"), ratio("compile"), frac])
    return table


def unverified_table(default: list[dict], unverified: list[dict]) -> list[list[str]]:
    """Rows: layer, dtype, mode, Triton ms by default and with the unverified configurations,
    default / unverified (> 1: they make it faster)."""
    base = {(r["layer"], r["dtype"], r["mode"]): float(r["ms_median"]) for r in default
            if r["provider"] == "triton"}
    table = []
    for r in unverified:
        key = (r["layer"], r["dtype"], r["mode"])
        ms, before = float(r["ms_median"]), base.get(key)
        table.append([*key, f"{before:.3f}" if before else "-", f"{ms:.3f}",
                      f"{before / ms:.2f}x" if before else "-"])
    return table


UNVERIFIED_HEADER = ["layer", "dtype", "mode", "triton ms", "with unverified ms", "speed-up"]


def train_table(rows: list[dict]) -> list[list[str]]:
    latest = {}
    for r in rows:
        latest[(r.get("precision") or "32-true", r["provider"])] = r
    table = []
    for (precision, provider), r in sorted(latest.items()):
        eager = latest.get((precision, "eager"))
        vs = (f"{float(r['images_per_s']) / float(eager['images_per_s']):.2f}x"
              if eager else "-")
        table.append([precision, provider, r["images_per_s"], r["ms_median"],
                      r.get("peak_mem_mb") or "-", vs, f"batch {r['batch']}, {r['preset']}"])
    return table


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(map(str, r)) + " |" for r in rows]]


def plain(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    return ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
            for r in [header, *rows]]


KERNEL_HEADER = ["op", "layer", "dtype", "mode", "triton ms", "cuDNN/eager ms", "compile ms",
                 "eager/triton", "compile/triton", "triton % peak"]
TRAIN_HEADER = ["precision", "provider", "img/s", "ms/step", "peak MB", "vs eager", "run"]


def build_report(out: Path) -> tuple[str, str]:
    """(report.md text, one-screen summary) from the CSVs recorded in ``out``."""
    stages = read_csv(out / "stages.csv")
    parity = read_csv(out / "parity.csv")
    # in time order ("YYYY-MM-DD HH:MM..."), so the latest measurement of each cell wins
    # whichever file holds it (torch.compile's moved to compile/; older runs' stayed beside)
    kernels = sorted((r for op in KERNEL_OPS for d in (out, out / COMPILE_DIR)
                      for r in read_csv(d / f"{op}.csv")), key=lambda r: r.get("date", ""))
    train = sorted(read_csv(out / "train_step.csv")
                   + read_csv(out / COMPILE_DIR / "train_step.csv"),
                   key=lambda r: r.get("date", ""))
    gated = unverified_table(read_csv(out / "conv2d_relu.csv"),
                             read_csv(out / "unverified" / "conv2d_relu.csv"))
    device = next((r["device"] for r in kernels + train if r.get("device")),
                  stages[0]["device"] if stages else "unknown device")
    peak = peak_of(device)
    peak_line = (f"peak used for '% peak': {peak[0]} (dense TFLOP/s {peak[1]}, {peak[2]} TB/s; "
                 "sources in bench/gpu_report.py)" if peak else
                 f"peak: '{device}' is not in bench/gpu_report.py's table; no % of peak")
    stage_rows = [[s["stage"], s["job"], s["status"], s["seconds"]] for s in stages]
    bad = [r for r in parity if r.get("ok") != "True"]
    parity_line = (f"parity: {len(parity)} checks (configuration x tensor), {len(bad)} failed"
                   if parity else "parity: no results")
    full = kernel_table(kernels, ("full",))
    # the Triton the kernels ran with last (torch.compile's rows may name another)
    version = next((r["triton"] for r in reversed(kernels + train)
                    if r.get("triton") and r["provider"] == "triton"), "")
    version_line = triton_note(version)
    carry = (out / CARRY_NOTE).read_text().strip() if (out / CARRY_NOTE).exists() else ""
    peak_line += "".join(f"\n{line}" for line in (carry, version_line) if line)
    summary = [f"GPU report: {device}", peak_line, "", *plain(["stage", "job", "status", "s"],
                                                           stage_rows), "", parity_line]
    summary += [f"  FAILED {r['op']} {r['layer']} {r['precision']} {r.get('autotuner', '')} "
                f"{r.get('config', '')} {r['tensor']} {r.get('note') or r.get('error')}"
                for r in bad[:5]]
    if len(bad) > 5:
        summary.append(f"  ... {len(bad) - 5} more in parity.csv")
    summary += ["", ("kernels, forward + backward (eager = cuDNN / PyTorch; ratio > 1: Triton "
                "faster):"), *(plain(KERNEL_HEADER, full) if full else ["  no results"])]
    summary += ["", f"conv2d_relu with {UNVERIFIED_ENV}=1 (8 warps, TMA; full):",
                *(plain(UNVERIFIED_HEADER, [r for r in gated if r[2] == "full"]) if gated
                  else ["  no results"])]
    tt = train_table(train)
    summary += ["", "training step (forward + backward + SGD):",
                *(plain(TRAIN_HEADER, tt) if tt else ["  no results"])]
    report = [f"# GPU report: {device}", "", "Made by `make gpu-report` (bench/gpu_report.py).",
              peak_line + ".", "", "## Stages", "", *markdown(["stage", "job", "status", "s"],
                                                               stage_rows),
              "", "## Parity (every kept autotune configuration vs float64)", "", parity_line + ".",
              ("Error = max |out - ref| / max |ref|; a check passes within max(4 x eager "
              "PyTorch's error, a floor per precision). All rows: `parity.csv`."), ""]
    report += markdown(list(bad[0]), [list(r.values()) for r in bad]) if bad else []
    report += ["", "## Kernels", "",
               ("Batch 128 on CUDA (shapes in `<op>.md`, plots in `<op>.png`); median ms, "
                "`triton.testing.do_bench` with the L2 cache flushed."), "",
               *markdown(KERNEL_HEADER, kernel_table(kernels, ("forward", "backward", "full"))),
               "", f"### conv2d_relu with {UNVERIFIED_ENV}=1", "",
               ("The autotuners also choose among the configurations not yet run on a GPU "
                "before this report (8 warps, TMA; parity above checks them). "
                "`unverified/conv2d_relu.csv`."), "",
               *(markdown(UNVERIFIED_HEADER, gated) if gated else ["No results."]),
               "", "## Training step", "", *markdown(TRAIN_HEADER, tt), ""]
    return "\n".join(report), "\n".join(summary)


def write_report(out: Path) -> str:
    merge_parity(out)
    report, summary = build_report(out)
    (out / "report.md").write_text(report)
    (out / "summary.txt").write_text(summary + "\n")
    return summary


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="output folder (default bench/results/<gpu name>)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated, from {', '.join(STAGES)}")
    p.add_argument("--ops", default=",".join(KERNEL_OPS),
                   help=f"kernels to cover, from {', '.join(KERNEL_OPS)}")
    p.add_argument("--budget-s", type=float, default=460.0,
                   help="wall-clock seconds shared out among the stages' time limits")
    p.add_argument("--jobs", type=int, default=min(16, os.cpu_count() or 1),
                   help="processes for the tests and the parity sweep (compiling is CPU-bound)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: the report's machinery on tiny shapes under TRITON_INTERPRET=1 "
                        "(testing only)")
    p.add_argument("--summary-only", type=Path, metavar="DIR",
                   help="rebuild report.md and the summary from the CSVs in DIR; no GPU needed")
    p.add_argument("--triton", metavar="ARCHIVE",
                   help="a Triton archive from bench/triton_carry.py pack to run the kernels "
                        "with, or 'machine' for the installed one (default: the archive in "
                        ".gpu/ when there is one)")
    args = p.parse_args(argv)
    for name, values, allowed in (("--stages", args.stages, STAGES),
                                  ("--ops", args.ops, KERNEL_OPS)):
        chosen = [v for v in values.split(",") if v]
        bad = [v for v in chosen if v not in allowed]
        if bad or not chosen:
            p.error(f"{name}: unknown or empty {bad or values!r}; choose from {', '.join(allowed)}")
        setattr(args, name[2:], chosen)
    if args.budget_s <= 0 or args.jobs < 1:
        p.error(f"--budget-s and --jobs must be positive, got {args.budget_s} and {args.jobs}")
    if args.device == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            p.error("--device cpu runs the kernels under Triton's interpreter: set "
                    "TRITON_INTERPRET=1")
        if args.out is None:
            p.error("--device cpu needs --out (its numbers are not measurements: keep them out "
                    "of bench/results)")
        args.stages = [s for s in args.stages if s != "tests"]  # pytest inside pytest: no
        if args.triton not in (None, "machine"):
            p.error("--triton: the carried Triton is for --device cuda (the CPU run uses the "
                    "installed one's interpreter)")
        args.triton = "machine"
    if args.triton is None and args.summary_only is None:
        try:
            found = triton_carry.find_archive()
        except ValueError as e:
            p.error(f"{e} (or pass --triton ARCHIVE / --triton machine)")
        args.triton = str(found) if found else "machine"
    args.triton = args.triton or "machine"  # (--summary-only runs nothing)
    if args.triton != "machine" and not Path(args.triton).is_file():
        p.error(f"--triton {args.triton}: no such file (make one with `python "
                "bench/triton_carry.py pack`, or pass --triton machine)")
    return args


def carried_triton(archive: Path) -> tuple[Path | None, str]:
    """Unpack ``archive`` and check that its Triton imports beside this torch and runs a kernel
    (``triton_carry.py probe``): (the folder to put first on the jobs' PYTHONPATH, a line for
    the report). On failure (None, why): the report then runs with the machine's Triton and
    says so."""
    site = Path(tempfile.gettempdir()) / f"lightning_alexnet-triton-{os.getuid()}"
    try:
        version = triton_carry.unpack(archive, site)  # says why in a SystemExit
    except SystemExit as e:
        return None, f"carried Triton NOT used: {str(e).removeprefix('error: ')}"
    try:
        check = subprocess.run([sys.executable, str(BENCH / "triton_carry.py"), "probe"],
                               env=child_env("cuda", site), check=False, capture_output=True,
                               text=True, cwd=ROOT, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return None, (f"carried Triton NOT used: {archive.name} failed its probe (no answer in "
                      f"{PROBE_TIMEOUT_S} s)")
    printed = check.stdout.strip().splitlines()
    if check.returncode or not printed or printed[-1] != version:
        why = (check.stderr.strip().splitlines() or printed or ["no output"])[-1][:300]
        return None, f"carried Triton NOT used: {archive.name} failed its probe ({why})"
    return site, (f"Triton {version} carried from {archive.name} ran every job but "
                  f"torch.compile's (see {COMPILE_DIR}/)")


def append_stage_rows(path: Path, rows: list[dict]) -> None:
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        if f.tell() == 0:
            writer.writeheader()
        writer.writerows(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summary_only is not None:
        if not args.summary_only.is_dir():
            print(f"--summary-only {args.summary_only}: no such folder", file=sys.stderr)
            return 2
        print(write_report(args.summary_only))
        return 0
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu-report: no CUDA GPU visible to torch {torch.__version__} (CUDA build: "
              f"{torch.version.cuda or 'none'}). It needs one NVIDIA GPU and the CUDA build of "
              "torch; to rebuild a report from recorded CSVs: --summary-only DIR",
              file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU (interpreter)"
    out = args.out or BENCH / "results" / slug(device)
    out.mkdir(parents=True, exist_ok=True)
    print(f"GPU report on {device} -> {out} (budget {args.budget_s:.0f} s)", flush=True)
    stages_csv = out / "stages.csv"
    stages_csv.unlink(missing_ok=True)
    (out / CARRY_NOTE).unlink(missing_ok=True)
    site, failed = None, False
    if args.triton != "machine":  # a row of the stage table, failed when it could not be used
        start = time.monotonic()
        site, note = carried_triton(Path(args.triton))
        (out / CARRY_NOTE).write_text(note + "\n")
        print(note, flush=True)
        failed = site is None
        append_stage_rows(stages_csv, [{"device": device, "stage": "setup", "job": "triton-carry",
                                        "status": "failed" if failed else "ok",
                                        "seconds": f"{time.monotonic() - start:.0f}"}])
    for phase in plan(args, out):
        timed = phase[0].stage in ("kernels", "train")  # alone on the GPU, one at a time
        results = run_jobs(phase, 1 if timed else args.jobs, out / "logs", args.device, site)
        rows = []
        for job in phase:
            rc, seconds = results[job.name]
            status = "timed out" if rc is None else "ok" if rc == 0 else f"exit {rc}"
            failed |= rc != 0
            rows.append({"device": device, "stage": job.stage, "job": job.name,
                         "status": status, "seconds": f"{seconds:.0f}"})
        append_stage_rows(stages_csv, rows)
    print()
    print(write_report(out))
    print(f"\nwrote {out / 'report.md'}; logs in {out / 'logs'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
