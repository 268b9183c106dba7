"""``python -m lightning_alexnet predict``: classify image files with a trained checkpoint.

The checkpoint carries everything prediction needs (see :mod:`checkpoint_info`): the network,
its class names and its preprocessing (mean image, resize and crop sides, pixel scale). No
training folder is read. Each image gets the paper's validation view -- the central square,
resized, its centre crop -- and its top-5 classes with probabilities, printed as a table and,
with ``--output``, written to CSV or JSON (one row per image). Class names that are ImageNet
WordNet ids are shown with their words (``tench (n01440764)``).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentParser
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader

from lightning_alexnet import files as files_lib
from lightning_alexnet.checkpoint_info import DataInfo
from lightning_alexnet.dataset import ImageFolderDataset, SkippedFiles
from lightning_alexnet.errors import UserError
from lightning_alexnet.files import IMAGE_EXTENSIONS
from lightning_alexnet.imagenet_classes import readable, synset_words
from lightning_alexnet.module import AlexNetModule, check_not_legacy
from lightning_alexnet.ops import Kernels

PROG = "python -m lightning_alexnet"


def fail(message: str) -> NoReturn:
    """A user error: one line on stderr, exit status 1, no traceback."""
    raise SystemExit(f"error: {message}")


# --- the checkpoint and its data -------------------------------------------------------------


def load_module(ckpt_path: str, kernels: Kernels = "auto") -> AlexNetModule:
    """The trained module of ``ckpt_path`` in eval mode, with its :class:`DataInfo`."""
    path = Path(ckpt_path)
    if not path.is_file():
        fail(f"checkpoint {ckpt_path} does not exist (pass --ckpt_path with a .ckpt file that "
             f"fit wrote, e.g. runs/lightning_logs/version_0/checkpoints/last.ckpt)")
    try:
        module = AlexNetModule.load_from_checkpoint(path, map_location="cpu", kernels=kernels)
    except Exception as e:  # noqa: BLE001 -- any unloadable file is a user error here
        _fail_if_legacy(path)
        fail(f"cannot load checkpoint {ckpt_path}: {type(e).__name__}: {str(e)[:300]}")
    if module.data_info is None:
        fail(f"checkpoint {ckpt_path} does not record its class names and preprocessing (it was "
             f"saved by an older version or trained without ImageFolderDataModule): train it "
             f"again with `python -m lightning_alexnet fit`")
    return module.eval()


def _fail_if_legacy(path: Path) -> None:
    """After a failed load: the reason, when the checkpoint predates ``--model.network``."""
    try:  # memory-mapped: only the pickled metadata is read
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        check_not_legacy(ckpt.get("hyper_parameters") or {}, f"checkpoint {path}")
    except UserError as e:
        fail(str(e))
    except Exception:  # noqa: BLE001, S110 -- not readable this way: the caller's message says so
        pass


def loader(info: DataInfo, samples: list[tuple[str, Any]], batch_size: int = 64,
           num_workers: int = 2) -> DataLoader:
    """Batches ``(x, target, skipped)`` of ``samples`` as the checkpoint's network saw validation
    images: the central square resized to ``info.resize_size``, its centre crop, minus the
    training mean, times ``pixel_scale``. Unreadable files are left out and named in
    ``skipped`` (:class:`~lightning_alexnet.dataset.Batch`)."""
    dataset = ImageFolderDataset(samples, "predict", info.resize_size, info.crop_size, info.mean,
                                 scale=info.pixel_scale)
    # finished float batches from the workers: there is no datamodule to finish them
    return DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                      collate_fn=functools.partial(dataset.collate, finish=dataset.transform))


def image_files(root: str) -> list[str]:
    """The image files to classify: ``root`` itself when it is a file, else the files under it
    with an image extension (the others are named as skipped)."""
    path = Path(root)
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        fail(f"--data.predict_root {root} does not exist: pass an image file or a folder of images")
    try:
        files = files_lib.image_files(path)
        others = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names
                  if not f.startswith(".") and not f.lower().endswith(IMAGE_EXTENSIONS)]
    except OSError as e:
        fail(f"cannot read --data.predict_root {root}: {e}")
    if others:
        more = f" (and {len(others) - 5} more)" if len(others) > 5 else ""
        print(f"skipped {len(others)} file(s) without an image extension: "
              f"{', '.join(others[:5])}{more}", file=sys.stderr)
    if not files:
        fail(f"--data.predict_root {root} contains no image files "
             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
    return files


# --- the writer ------------------------------------------------------------------------------


class PredictionWriter(BasePredictionWriter):
    """Prints each image's top-5 (from ``predict_step``) as its batch finishes and streams the
    rows to ``output`` (``.csv``: ``path, class1, prob1, ..., class5, prob5``, plus ``nameK``
    columns when the classes are WordNet ids; ``.json``: a list of ``{"path", "top5": [{"class",
    "prob"[, "name"]}]}``). Probabilities are written in full precision. The batches' unreadable
    files are named in one warning at the end and kept in :attr:`unreadable`."""

    def __init__(self, output: str | None = None, classes: list[str] | None = None,
                 echo: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.output = Path(output) if output else None
        if self.output is not None and self.output.suffix.lower() not in (".csv", ".json"):
            fail(f"--output {output}: the file name must end in .csv or .json")
        self.wordnet = any(c in synset_words() for c in classes or [])
        self.top = min(5, len(classes)) if classes else 5  # fewer columns with fewer classes
        self.echo, self.count = echo, 0
        self._file = self._csv = None
        self.skipped, self.unreadable = SkippedFiles("predict"), []

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.count = 0
        if self.output is None:
            return
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.output, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            fail(f"cannot write --output {self.output}: {e}")
        if self.output.suffix.lower() == ".json":
            self._file.write("[")
            return
        self._csv = csv.writer(self._file)
        header = ["path"]
        for k in range(1, self.top + 1):
            header += [f"class{k}", f"prob{k}"] + ([f"name{k}"] if self.wordnet else [])
        self._csv.writerow(header)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch,
                           batch_idx, dataloader_idx=0) -> None:
        self.skipped.add(batch.skipped)
        for row in prediction:
            if self.echo:
                print(row["path"])
                for k, (name, p) in enumerate(row["top5"], 1):
                    print(f"  {k}. {p:7.2%}  {readable(name)}")
            if self._csv is not None:
                cells = [row["path"]]
                for name, p in row["top5"]:
                    cells += [name, repr(float(p))] + ([readable(name)] if self.wordnet else [])
                self._csv.writerow(cells)
            elif self._file is not None:
                top5 = [{"class": name, "prob": float(p)} | ({"name": readable(name)} if self.wordnet else {})
                        for name, p in row["top5"]]
                self._file.write(("," if self.count else "") + "\n  "
                                 + json.dumps({"path": row["path"], "top5": top5}))
            self.count += 1

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.unreadable = self.skipped.report()
        if self._file is not None:
            if self._csv is None:
                self._file.write("\n]\n")
            self._file.close()
            self._file = self._csv = None

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._file is not None:  # a run that failed half way: close what was written
            self._file.close()
            self._file = self._csv = None


# --- the command -----------------------------------------------------------------------------


def parser() -> ArgumentParser:
    p = ArgumentParser(prog=f"{PROG} predict", description=(
        "Classify image files with a checkpoint that fit wrote: the top-5 classes and their "
        "probabilities per image, printed and optionally written to CSV or JSON. The class "
        "names and preprocessing come from the checkpoint; no training folder is needed."))
    p.add_argument("--ckpt_path", type=str, required=True, help="checkpoint (.ckpt) written by fit")
    p.add_argument("--data.predict_root", type=str, required=True,
                   help="an image file, or a folder whose image files (recursively) are classified")
    p.add_argument("--output", type=str, default=None,
                   help="also write the predictions to this .csv or .json file")
    p.add_argument("--data.batch_size", type=int, default=64, help="images per batch")
    p.add_argument("--data.num_workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--model.kernels", type=Kernels, default="auto",
                   help="layer implementations (see fit --help)")
    p.add_argument("--trainer.accelerator", type=str, default="auto", help="cpu, gpu or auto")
    return p


def main(args: list[str]) -> list[dict[str, Any]]:
    """Run ``predict`` with ``args`` (the words after ``predict``); returns the rows."""
    cfg = parser().parse_args(args)
    if cfg.data.batch_size < 1 or cfg.data.num_workers < 0:
        fail(f"--data.batch_size must be >= 1 and --data.num_workers >= 0, got "
             f"{cfg.data.batch_size} and {cfg.data.num_workers}")
    module = load_module(cfg.ckpt_path, cfg.model.kernels)
    files = image_files(cfg.data.predict_root)
    info = module.data_info
    writer = PredictionWriter(cfg.output, info.classes)
    batches = loader(info, [(f, f) for f in files], cfg.data.batch_size, cfg.data.num_workers)
    try:
        trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=[writer])
    except Exception as e:  # noqa: BLE001 -- Lightning's message names the accelerator problem
        fail(f"--trainer.accelerator {cfg.trainer.accelerator}: {e}")
    rows = [r for batch in trainer.predict(module, batches) for r in batch]
    skipped = writer.unreadable
    if not rows:
        fail(f"none of the {len(files)} image file(s) under {cfg.data.predict_root} could be read: "
             + "; ".join(skipped[:5]))
    note = f"; skipped {len(skipped)} unreadable file(s)" if skipped else ""
    where = f"; wrote {cfg.output}" if cfg.output else ""
    print(f"classified {len(rows)} image(s) with {cfg.ckpt_path} "
          f"({len(info.classes)} classes){note}{where}")
    return rows
