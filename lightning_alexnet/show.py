"""``python -m lightning_alexnet show filters|predictions|neighbours|curves|confusion``.

Pictures of a trained network, after the paper's figures, each one PNG (``--out``; by default
in a ``pictures/`` folder beside the run's ``checkpoints/``), its path printed last:

- ``filters``: conv1's kernels, each contrast-normalised to [0, 1] on its own, one block per
  tower (Figure 3).
- ``predictions``: validation images, each with its true class and its top-5 probabilities as
  bars, the true class's bar in red (Figure 4, left).
- ``neighbours``: validation query images and the six training images nearest to each in fc7
  space, Euclidean (Figure 4, right; see :mod:`neighbours`).
- ``curves``: loss, top-1 and top-5 error per epoch (train and validation) and the learning rate,
  from a run's ``metrics.csv``.
- ``confusion``: the validation confusion matrix (torchmetrics), rows normalised, with the most
  confused class pairs listed (also printed).

The images come from the data root recorded in the checkpoint (``--data.root`` to use another
copy), preprocessed as the checkpoint's network was trained. matplotlib is an optional
dependency: ``pip install -e ".[show]"``.
"""

from __future__ import annotations

import bisect
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import ArgumentParser, Namespace
from torchmetrics.classification import MulticlassConfusionMatrix

from lightning_alexnet import neighbours as nb
from lightning_alexnet.checkpoint_info import DataInfo
from lightning_alexnet.dataset import decode_center, readable_batches
from lightning_alexnet.files import CACHE_DIR, scan_split
from lightning_alexnet.imagenet_classes import readable
from lightning_alexnet.module import AlexNetModule
from lightning_alexnet.predict import PROG, fail, load_module, loader

COMMANDS = ("filters", "predictions", "neighbours", "curves", "confusion")
THUMB = 96  # side of the images drawn in the figures
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # where the network runs


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or a message saying what to install."""
    try:
        import matplotlib
    except ImportError:
        fail('the show commands draw with matplotlib, which is not installed: '
             'pip install -e ".[show]" (or pip install "matplotlib>=3.8")')
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return out


def default_out(ckpt_path: str, name: str) -> Path:
    """``<run>/pictures/<name>.png`` for ``<run>/checkpoints/x.ckpt``, else beside the file."""
    parent = Path(ckpt_path).parent
    run = parent.parent if parent.name == "checkpoints" else parent
    return run / "pictures" / f"{name}.png"


def short(name: str, width: int = 22) -> str:
    """A class label that fits under a thumbnail: ImageNet words, cut to ``width``."""
    label = readable(name)
    return label if len(label) <= width else label[: width - 1] + "…"


# --- data ------------------------------------------------------------------------------------


def split_samples(info: DataInfo, root: str | None, split: str) -> tuple[Path, list[tuple[str, int]]]:
    """(root, samples) of ``split`` under ``root`` (default: the checkpoint's), labelled with the
    checkpoint's classes."""
    base = Path(root or info.root).expanduser()
    if not (base / split).is_dir():
        hint = "" if root else " (the data root recorded in the checkpoint; pass --data.root)"
        fail(f"{base / split} does not exist{hint}: expected {base}/{split}/<class>/<images>")
    try:
        return base, scan_split(base / split, info.classes)
    except (ValueError, OSError) as e:
        fail(f"{e} -- the checkpoint knows {len(info.classes)} classes; is --data.root the folder "
             f"it was trained on?")


def spread(samples: list[tuple[str, int]], count: int) -> list[int]:
    """Indices of ``count`` samples spread over the classes: the first of evenly spaced classes,
    then the next ones, in a fixed order."""
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(samples):
        by_class.setdefault(label, []).append(i)
    classes = sorted(by_class)
    picked: list[int] = []
    for rank in range(max(len(v) for v in by_class.values())):
        step = len(classes) / min(len(classes), count)
        for c in [classes[int(j * step)] for j in range(min(len(classes), count))]:
            if rank < len(by_class[c]) and len(picked) < count:
                picked.append(by_class[c][rank])
    return picked


@torch.no_grad()
def probabilities(module: AlexNetModule, info: DataInfo, samples, args: Namespace
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(probs (N, K), rows (N,)) for the readable ``samples`` (rows index into them)."""
    rows = [(path, i) for i, (path, _) in enumerate(samples)]
    out, idx = [], []
    for x, r in readable_batches(loader(info, rows, args.data.batch_size, args.data.num_workers)):
        out.append(module(x.to(module.device)).softmax(-1).cpu())
        idx.append(r)
    if not out:
        fail("none of the images could be read")
    return torch.cat(out).numpy(), torch.cat(idx).numpy()


def thumbnail(path: str) -> np.ndarray:
    return decode_center(path, THUMB)


# --- the figures -----------------------------------------------------------------------------


def filter_grids(weight: torch.Tensor, towers: int, cols: int, pad: int = 1) -> list[np.ndarray]:
    """conv1's (C, 3, k, k) kernels as one (rows*(k+pad)-pad, cols*(k+pad)-pad, 3) RGB grid per
    tower (tower t: kernels t*C/towers onwards, row-major), each kernel scaled to [0, 1] over
    its own values; the gaps are white."""
    w = weight.detach().float().cpu()
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = ((w - lo) / (hi - lo).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()  # (C, k, k, 3)
    per, k = len(w) // towers, w.shape[1]
    rows = math.ceil(per / cols)
    grids = []
    for t in range(towers):
        grid = np.ones((rows * (k + pad) - pad, cols * (k + pad) - pad, 3), np.float32)
        for j in range(per):
            r, c = divmod(j, cols)
            grid[r * (k + pad):r * (k + pad) + k, c * (k + pad):c * (k + pad) + k] = w[t * per + j]
        grids.append(grid)
    return grids


def show_filters(args: Namespace) -> Path:
    module = load_module(args.ckpt_path).to(DEVICE)
    weight = module.model.features.conv1.weight
    towers = module.config.towers
    per = len(weight) // towers
    cols = 16 if per >= 32 else 8
    grids = filter_grids(weight, towers, cols)
    plt = pyplot()
    width = cols * 0.8
    height = towers * (width * grids[0].shape[0] / grids[0].shape[1] + 0.4) + 0.4
    fig, axes = plt.subplots(towers, 1, figsize=(width, height), squeeze=False,
                             layout="constrained")
    k = weight.shape[-1]
    for t, (ax, grid) in enumerate(zip(axes[:, 0], grids)):
        ax.imshow(grid, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        name = f"tower {t + 1}: kernels {t * per}-{(t + 1) * per - 1}" if towers > 1 else f"kernels 0-{per - 1}"
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"conv1: {len(weight)} kernels {k}x{k}x3, each scaled to [0, 1]", fontsize=10)
    return save(fig, args.out or default_out(args.ckpt_path, "filters"))


def show_predictions(args: Namespace) -> Path:
    module = load_module(args.ckpt_path).to(DEVICE)
    info = module.data_info
    _, samples = split_samples(info, args.data.root, "val")
    chosen = [samples[i] for i in spread(samples, args.count)]
    probs, rows = probabilities(module, info, chosen, args)
    cols = min(4, len(rows))
    grid_rows = math.ceil(len(rows) / cols)
    plt = pyplot()
    fig = plt.figure(figsize=(cols * 2.6, grid_rows * 3.6))
    spec = fig.add_gridspec(grid_rows * 2, cols, height_ratios=[1.6, 1.0] * grid_rows,
                            hspace=0.35, wspace=0.9)
    k = min(5, probs.shape[1])
    correct = 0
    for n, (p, r) in enumerate(zip(probs, rows)):
        path, label = chosen[r]
        top = np.argsort(-p)[:k]
        correct += int(top[0] == label)
        ax = fig.add_subplot(spec[2 * (n // cols), n % cols])
        ax.imshow(thumbnail(path))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(short(info.classes[label]), fontsize=9, fontweight="bold")
        bars = fig.add_subplot(spec[2 * (n // cols) + 1, n % cols])
        colours = ["tab:red" if c == label else "tab:blue" for c in top]
        bars.barh(range(k), p[top], color=colours)
        bars.set_yticks(range(k), [short(info.classes[c], 18) for c in top], fontsize=7)
        bars.invert_yaxis()
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"validation images: true class above, top-{k} probabilities below "
                 f"(true class in red); top-1 correct {correct}/{len(rows)}", fontsize=10)
    return save(fig, args.out or default_out(args.ckpt_path, "predictions"))


def show_neighbours(args: Namespace) -> Path:
    module = load_module(args.ckpt_path).to(DEVICE)
    info = module.data_info
    root, train = split_samples(info, args.data.root, "train")
    _, val = split_samples(info, args.data.root, "val")
    files = [p for p, _ in train]
    stats_dir = Path(args.data.stats_dir) if args.data.stats_dir else root / CACHE_DIR
    cache = nb.cache_path(stats_dir, args.ckpt_path, root, files, info.resize_size)
    rows = [(p, i) for i, p in enumerate(files)]
    print(f"fc7 features of {len(files)} training images: "
          f"{'reading' if cache.is_file() else 'computing'} {cache}")
    feats, ok = nb.features(module, loader(info, rows, args.data.batch_size, args.data.num_workers),
                            len(files), cache, desc="fc7 of the training images")
    queries = [val[i] for i in spread(val, args.count)]
    qrows = [(p, i) for i, (p, _) in enumerate(queries)]
    qfeats, qidx = [], []
    for x, r in readable_batches(loader(info, qrows, args.data.batch_size, args.data.num_workers)):
        qfeats.append(nb.fc7(module, x).cpu())
        qidx.append(r)
    if not qfeats:
        fail("none of the query images could be read")
    qidx = torch.cat(qidx).numpy()
    index, dist = nb.nearest(torch.cat(qfeats).numpy(), feats, ok, args.neighbours)
    for row, q in enumerate(qidx):
        print(f"{queries[q][0]}: " + ", ".join(f"{files[i]} (d={d:.4g})"
                                               for i, d in zip(index[row], dist[row])))
    plt = pyplot()
    cols = 1 + index.shape[1]
    fig, axes = plt.subplots(len(qidx), cols, figsize=(cols * 1.45, len(qidx) * 1.75), squeeze=False)
    for row, q in enumerate(qidx):
        path, label = queries[q]
        cells = [(path, f"query\n{short(info.classes[label], 16)}")]
        cells += [(files[i], f"{short(info.classes[train[i][1]], 16)}\nd={d:.3g}")
                  for i, d in zip(index[row], dist[row])]
        for ax, (p, title) in zip(axes[row], cells):
            ax.imshow(thumbnail(p))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=7)
        for side in axes[row, 0].spines.values():
            side.set_edgecolor("tab:red")
            side.set_linewidth(2)
    fig.suptitle(f"validation queries (left, red frame) and their {index.shape[1]} nearest "
                 f"training images by fc7 distance", fontsize=10)
    fig.tight_layout()
    return save(fig, args.out or default_out(args.ckpt_path, "neighbours"))


def read_metrics(run: str) -> tuple[Path, list[dict[str, str]]]:
    """The rows of the run's ``metrics.csv`` (``run`` the file, or a folder holding one)."""
    path = Path(run)
    if path.is_dir():
        found = sorted(path.rglob("metrics.csv"))
        if not found:
            fail(f"--run {run} holds no metrics.csv: pass a run folder that fit's CSVLogger wrote, "
                 f"e.g. runs/lightning_logs/version_0")
        if len(found) > 1:
            fail(f"--run {run} holds {len(found)} metrics.csv files ({', '.join(map(str, found[:4]))}"
                 f"{' ...' if len(found) > 4 else ''}): pass one run's folder")
        path = found[0]
    elif not path.is_file():
        fail(f"--run {run} does not exist: pass a run folder, e.g. runs/lightning_logs/version_0")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "epoch" not in rows[0]:
        fail(f"{path} has no logged epochs yet")
    return path, rows


def per_epoch(rows: list[dict[str, str]], column: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of ``column``, averaging an epoch's rows (steps) when there are several.
    A row without an epoch (LearningRateMonitor's, logged as an epoch starts) belongs to the
    epoch of the first row at or after its step that has one."""
    stepped = sorted((int(float(r["step"])), int(float(r["epoch"]))) for r in rows
                     if r.get("epoch") not in (None, "") and r.get("step") not in (None, ""))
    steps = [s for s, _ in stepped]
    sums: dict[int, list[float]] = {}
    for r in rows:
        if r.get(column) in (None, ""):
            continue
        if r.get("epoch") not in (None, ""):
            epoch = int(float(r["epoch"]))
        elif r.get("step") not in (None, "") and steps:
            at = bisect.bisect_left(steps, int(float(r["step"])))
            epoch = stepped[min(at, len(steps) - 1)][1]
        else:
            continue
        sums.setdefault(epoch, []).append(float(r[column]))
    epochs = sorted(sums)
    return [e + 1 for e in epochs], [sum(sums[e]) / len(sums[e]) for e in epochs]


def show_curves(args: Namespace) -> Path:
    path, rows = read_metrics(args.run)
    columns = set(rows[0])
    lr_columns = sorted(c for c in columns if c.startswith("lr-"))
    plt = pyplot()
    fig, (loss_ax, err_ax, lr_ax) = plt.subplots(1, 3, figsize=(14, 4))
    drawn = 0
    for ax, series in (
        (loss_ax, [("train/loss", "train (mean of steps)"), ("val/loss", "validation")]),
        (err_ax, [("train/top1_error", "train top-1"), ("train/top5_error", "train top-5"),
                  ("val/top1_error", "validation top-1"), ("val/top5_error", "validation top-5")]),
        (lr_ax, [(c, c.removeprefix("lr-")) for c in lr_columns]),
    ):
        for column, label in series:
            x, y = per_epoch(rows, column) if column in columns else ([], [])
            if x:
                style = "--" if column.startswith("train") else "-"
                ax.plot(x, y, style, marker="o", markersize=3, label=label)
                drawn += 1
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if not drawn:
        fail(f"{path} logs none of train/loss, val/loss, the error rates or the learning rate")
    loss_ax.set_title("cross-entropy loss")
    loss_ax.set_ylabel("loss")
    err_ax.set_title("error rate")
    err_ax.set_ylabel("error")
    err_ax.set_ylim(0, 1)
    lr_ax.set_title("learning rate")
    lr_ax.set_ylabel("lr")
    if lr_ax.lines:
        lr_ax.set_yscale("log")
    fig.suptitle(f"training curves: {path}", fontsize=10)
    fig.tight_layout()
    return save(fig, args.out or path.parent / "pictures" / "curves.png")


@torch.no_grad()
def confusion(module: AlexNetModule, info: DataInfo, samples, args: Namespace) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted (top-1), over the readable samples."""
    metric = MulticlassConfusionMatrix(len(info.classes))
    for x, y in readable_batches(loader(info, samples, args.data.batch_size, args.data.num_workers)):
        metric.update(module(x.to(module.device)).argmax(-1).cpu(), y)
    return metric.compute()


def confused_pairs(matrix: torch.Tensor, top: int) -> list[tuple[int, int, int]]:
    """The ``top`` largest off-diagonal cells as (true, predicted, count), count > 0."""
    off = matrix.clone()
    off.fill_diagonal_(0)
    counts, flat = off.flatten().topk(min(top, off.numel()))
    k = matrix.shape[1]
    return [(int(i) // k, int(i) % k, int(c)) for c, i in zip(counts, flat) if c > 0]


def show_confusion(args: Namespace) -> Path:
    module = load_module(args.ckpt_path).to(DEVICE)
    info = module.data_info
    _, samples = split_samples(info, args.data.root, "val")
    matrix = confusion(module, info, samples, args)
    total = int(matrix.sum())
    error = 1 - float(matrix.diag().sum()) / max(total, 1)
    pairs = confused_pairs(matrix, args.top)
    per_class = matrix.sum(1).clamp_min(1)
    lines = [f"{readable(info.classes[t])} -> {readable(info.classes[p])}: {c} "
             f"({c / float(per_class[t]):.0%} of {readable(info.classes[t])})" for t, p, c in pairs]
    print(f"most confused pairs (true -> predicted) of {total} validation images, "
          f"top-1 error {error:.4f}:")
    for line in lines or ["(none: every image is classified correctly)"]:
        print(f"  {line}")
    plt = pyplot()
    n = len(info.classes)
    side = min(14.0, 4 + 0.35 * n)
    fig, (ax, text_ax) = plt.subplots(1, 2, figsize=(side + 4.5, side),
                                      gridspec_kw={"width_ratios": [side, 4.5]})
    shown = ax.imshow((matrix / per_class[:, None]).numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 40:
        names = [short(c, 18) for c in info.classes]
        ax.set_xticks(range(n), names, rotation=90, fontsize=8)
        ax.set_yticks(range(n), names, fontsize=8)
    ax.set_title(f"validation confusion matrix, rows normalised ({total} images, "
                 f"top-1 error {error:.3f})", fontsize=10)
    text_ax.axis("off")
    listing = [f"{short(info.classes[t], 18)} -> {short(info.classes[p], 18)}: {c}"
               for t, p, c in pairs] or ["none"]
    text_ax.text(0, 1, "most confused (true -> predicted: count)\n\n" + "\n".join(listing),
                 va="top", fontsize=8, family="monospace", transform=text_ax.transAxes)
    fig.tight_layout()
    return save(fig, args.out or default_out(args.ckpt_path, "confusion"))


# --- the command -----------------------------------------------------------------------------


def _data_options(p: ArgumentParser, stats_dir: bool = False) -> None:
    p.add_argument("--data.root", type=str, default=None,
                   help="data folder with train/ and val/ (default: the one recorded in the checkpoint)")
    p.add_argument("--data.batch_size", type=int, default=64, help="images per batch")
    p.add_argument("--data.num_workers", type=int, default=2, help="DataLoader worker processes")
    if stats_dir:
        p.add_argument("--data.stats_dir", type=str, default=None,
                       help="where the fc7 features are cached (default <root>/.lightning_alexnet)")


def parser() -> ArgumentParser:
    p = ArgumentParser(prog=f"{PROG} show", description=(
        "Pictures of a trained network, one PNG each (its path printed last): filters, "
        "predictions, neighbours, curves, confusion. Needs matplotlib (pip install -e \".[show]\")."))
    sub = p.add_subcommands(dest="picture")
    helps = {
        "filters": "conv1's kernels as a grid, one block per tower (the paper's Figure 3)",
        "predictions": "validation images with their top-5 probabilities (Figure 4, left)",
        "neighbours": "validation images and their nearest training images in fc7 space (Figure 4, right)",
        "curves": "loss, top-1/top-5 error and learning rate per epoch, from a run's metrics.csv",
        "confusion": "the validation confusion matrix and the most confused class pairs",
    }
    for name in COMMANDS:
        c = ArgumentParser(description=helps[name])
        if name == "curves":
            c.add_argument("--run", type=str, required=True,
                           help="a run folder (e.g. runs/lightning_logs/version_0) or its metrics.csv")
        else:
            c.add_argument("--ckpt_path", type=str, required=True, help="checkpoint written by fit")
        if name in ("predictions", "neighbours", "confusion"):
            _data_options(c, stats_dir=name == "neighbours")
        if name == "predictions":
            c.add_argument("--count", type=int, default=8, help="validation images shown")
        if name == "neighbours":
            c.add_argument("--count", type=int, default=5, help="validation query images")
            c.add_argument("--neighbours", type=int, default=6, help="training images per query")
        if name == "confusion":
            c.add_argument("--top", type=int, default=10, help="confused pairs listed")
        c.add_argument("--out", type=str, default=None,
                       help="PNG file to write (default: <run>/pictures/<picture>.png)")
        sub.add_subcommand(name, c, help=helps[name])
    return p


def main(args: list[str]) -> Path:
    """Run ``show`` with ``args`` (the words after ``show``); returns the PNG written."""
    cfg = parser().parse_args(args)
    name = cfg.picture
    options: Any = cfg[name]
    for key in ("count", "neighbours", "top"):
        if key in options and options[key] < 1:
            fail(f"--{key} must be >= 1, got {options[key]}")
    if "data" in options and (options.data.batch_size < 1 or options.data.num_workers < 0):
        fail(f"--data.batch_size must be >= 1 and --data.num_workers >= 0, got "
             f"{options.data.batch_size} and {options.data.num_workers}")
    pyplot()  # say what to install before any work
    options.out = Path(options.out) if options.out else None
    out = {"filters": show_filters, "predictions": show_predictions, "neighbours": show_neighbours,
           "curves": show_curves, "confusion": show_confusion}[name](options)
    print(out)
    return out
