"""Whole training steps of AlexNet: images/s and peak memory per kernel provider and precision.

Providers: ``eager`` (torch.nn.functional ops; cuDNN on CUDA), ``auto`` (Triton kernels on CUDA,
the fused CPU LRN path on CPU), ``triton`` (the Triton kernels; CPU needs TRITON_INTERPRET=1),
``compile`` (``torch.compile`` of the eager network). Precisions: ``32-true`` (fp32; TF32
tensor cores for convolutions on CUDA, PyTorch's default; ``--no-tf32`` for exact fp32) and
``bf16-mixed`` (autocast to bf16, as ``--trainer.precision bf16-mixed``). One step is forward,
cross-entropy, backward and an SGD update, timed after a burn-in; the model and its input are in
the layout the network runs in on the device (channels_last on CUDA), as in ``fit``.

    python bench/bench_train_step.py                         # CUDA if present, else CPU
    python bench/bench_train_step.py --device cpu --batch 32 --preset paper --steps 5
    python bench/bench_train_step.py --precision 32-true,bf16-mixed --providers eager,triton
    python bench/bench_train_step.py --quick --results /tmp/r # smoke test: tiny preset, 2 steps

Appends to ``bench/results/train_step.csv`` and rewrites ``bench/results/train_step.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import RESULTS, append_csv, device_name, gate_checked, git_revision, triton_version

from lightning_alexnet import AlexNet, AlexNetConfig
from lightning_alexnet.model import channels_last_on

FIELDS = ["date", "git", "device", "torch", "triton", "preset", "towers", "lrn", "batch",
          "provider", "precision", "ms_median", "ms_p20", "ms_p80", "images_per_s", "peak_mem_mb"]
PROVIDERS = ("eager", "auto", "triton", "compile")
PRECISIONS = ("32-true", "bf16-mixed")


def time_steps(provider: str, precision: str, args: argparse.Namespace,
               device: torch.device) -> tuple[list[float], float | None]:
    """Milliseconds of ``args.steps`` timed steps, and the peak allocated MB (CUDA; else None)."""
    cfg = AlexNetConfig.from_name(args.preset, towers=args.towers, lrn=args.lrn)
    torch.manual_seed(0)
    model = AlexNet(cfg, kernels="eager" if provider == "compile" else provider)
    model = model.to_layout_of(device).to(device)
    step_model = torch.compile(model) if provider == "compile" else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, 3, cfg.image_size, cfg.image_size, device=device)
    if channels_last_on(device):  # as the DataModule hands it over
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, cfg.num_classes, (args.batch,), device=device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16-mixed"
                else contextlib.nullcontext())

    def step() -> None:
        with autocast:
            loss = F.cross_entropy(step_model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):  # burn-in: autotuning, compilation, allocator
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return times, peak


def row_of(stamp: dict, provider: str, precision: str, times: list[float], peak) -> dict:
    q = statistics.quantiles(times, n=5) if len(times) > 1 else [times[0]] * 4
    median = statistics.median(times)
    return {**stamp, "provider": provider, "precision": precision, "ms_median": round(median, 2),
            "ms_p20": round(q[0], 2), "ms_p80": round(q[3], 2),
            "images_per_s": round(stamp["batch"] / median * 1e3, 1),
            "peak_mem_mb": "" if peak is None else round(peak)}


def write_markdown(csv_path: Path, md_path: Path) -> None:
    with csv_path.open() as f:
        all_rows = list(csv.DictReader(f))
    lines = ["# Training step (forward + backward + SGD)", "",
             "Appended by `bench/bench_train_step.py`; one row per run, provider and precision.",
             "", "| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(str(r.get(k) or "") for k in FIELDS) + " |" for r in all_rows]
    md_path.write_text("\n".join(lines) + "\n")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    parser.add_argument("--towers", type=int, default=2, choices=[1, 2])
    parser.add_argument("--lrn", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--batch", type=int, default=None, help="default: 128 on CUDA, 32 on CPU")
    parser.add_argument("--providers", default="eager,auto,compile",
                        help=f"comma-separated, from {', '.join(PROVIDERS)}")
    parser.add_argument("--precision", default="32-true",
                        help=f"comma-separated, from {', '.join(PRECISIONS)}")
    parser.add_argument("--no-tf32", action="store_true",
                        help="exact fp32 convolutions and matmuls (TF32 off)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny preset, batch 4, 1 warm-up and 2 timed steps")
    parser.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    args = parser.parse_args(argv)
    args.providers = args.providers.split(",")
    args.precision = args.precision.split(",")
    for name, values, allowed in (("--providers", args.providers, PROVIDERS),
                                  ("--precision", args.precision, PRECISIONS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            parser.error(f"{name}: unknown {bad}; choose from {', '.join(allowed)}")
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device; use --device cpu")
    if args.quick:
        args.preset, args.warmup, args.steps = "tiny", 1, 2
        args.batch = args.batch or 4
    args.batch = args.batch or (128 if args.device.type == "cuda" else 32)
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    device = args.device
    if args.no_tf32:  # else PyTorch's defaults, as in `fit`: TF32 convolutions, fp32 matmuls
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    stamp = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "git": git_revision(),
             "device": device_name(device), "torch": torch.__version__,
             "triton": triton_version(), "preset": args.preset,
             "towers": args.towers, "lrn": args.lrn, "batch": args.batch}
    csv_path = args.results / "train_step.csv"
    rows = []
    for precision in args.precision:
        for provider in args.providers:
            with gate_checked():
                times, peak = time_steps(provider, precision, args, device)
            rows.append(row_of(stamp, provider, precision, times, peak))
            append_csv(csv_path, FIELDS, rows[-1:])  # kept even if a later provider fails
            mem = f"  {rows[-1]['peak_mem_mb']} MB peak" if peak is not None else ""
            print(f"{provider:8s} {precision:10s} {rows[-1]['ms_median']:9.1f} ms/step  "
                  f"{rows[-1]['images_per_s']:8.1f} img/s{mem}", flush=True)
    write_markdown(csv_path, args.results / "train_step.md")
    print(f"wrote {csv_path} and {args.results / 'train_step.md'}")
    return rows


if __name__ == "__main__":
    main()
