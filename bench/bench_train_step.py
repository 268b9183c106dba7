"""Whole training steps of AlexNet: images/s for each kernel provider.

Providers: ``eager`` (torch.nn.functional ops), ``auto`` (Triton kernels on CUDA, the fused CPU
LRN path on CPU), ``compile`` (``torch.compile`` of the eager network). One step is forward,
cross-entropy, backward and an SGD update, timed after a burn-in.

    python bench/bench_train_step.py                         # CUDA if present, else CPU
    python bench/bench_train_step.py --device cpu --batch 32 --preset paper --steps 5

Appends to ``bench/results/train_step.csv`` and rewrites ``bench/results/train_step.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import append_csv, device_name, git_revision

from lightning_alexnet import AlexNet, AlexNetConfig

RESULTS = Path(__file__).parent / "results"
FIELDS = ["date", "git", "device", "torch", "preset", "towers", "lrn", "batch", "provider",
          "ms_median", "ms_p20", "ms_p80", "images_per_s"]


def time_steps(provider: str, args: argparse.Namespace, device: torch.device) -> list[float]:
    cfg = AlexNetConfig.from_name(args.preset, towers=args.towers, lrn=args.lrn)
    torch.manual_seed(0)
    model = AlexNet(cfg, kernels="eager" if provider == "compile" else provider).to(device)
    step_model = torch.compile(model) if provider == "compile" else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(args.batch, 3, cfg.image_size, cfg.image_size, device=device)
    y = torch.randint(0, cfg.num_classes, (args.batch,), device=device)

    def step() -> None:
        loss = F.cross_entropy(step_model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):  # burn-in: autotuning, compilation, allocator
        step()
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="paper", choices=["paper", "tiny"])
    parser.add_argument("--towers", type=int, default=2, choices=[1, 2])
    parser.add_argument("--lrn", type=lambda s: s.lower() in ("1", "true", "yes"), default=True)
    parser.add_argument("--batch", type=int, default=None, help="default: 128 on CUDA, 32 on CPU")
    parser.add_argument("--providers", default="eager,auto,compile")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    args.batch = args.batch or (128 if device.type == "cuda" else 32)

    stamp = dict(date=datetime.datetime.now().isoformat(timespec="seconds"), git=git_revision(),
                 device=device_name(device), torch=torch.__version__, preset=args.preset,
                 towers=args.towers, lrn=args.lrn, batch=args.batch)
    rows = []
    for provider in args.providers.split(","):
        times = time_steps(provider, args, device)
        q = statistics.quantiles(times, n=5) if len(times) > 1 else [times[0]] * 4
        median = statistics.median(times)
        rows.append({**stamp, "provider": provider, "ms_median": round(median, 1),
                     "ms_p20": round(q[0], 1), "ms_p80": round(q[3], 1),
                     "images_per_s": round(args.batch / median * 1e3, 1)})
        print(f"{provider:8s} {median:9.1f} ms/step  {rows[-1]['images_per_s']:8.1f} img/s", flush=True)

    csv_path = RESULTS / "train_step.csv"
    append_csv(csv_path, FIELDS, rows)
    with csv_path.open() as f:
        all_rows = list(csv.DictReader(f))
    lines = ["# Training step (forward + backward + SGD)", "",
             "Appended by `bench/bench_train_step.py`; one row per run and provider.", "",
             "| " + " | ".join(FIELDS) + " |", "|" + "---|" * len(FIELDS)]
    lines += ["| " + " | ".join(str(r[k]) for k in FIELDS) + " |" for r in all_rows]
    (RESULTS / "train_step.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {csv_path} and {RESULTS / 'train_step.md'}")


if __name__ == "__main__":
    main()
