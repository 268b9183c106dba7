"""The paper's input pipeline (section 2 and 4.1) as a LightningDataModule over image folders.

Layout: ``root/train/<class>/**/*.jpg`` and ``root/val/<class>/...`` (a ``root/test`` folder,
when present, is used by ``test`` instead of ``val``); class index = sorted folder names.

Every image: decoded (JPEG at 1/2, 1/4 or 1/8 scale when that still covers ``resize_size``,
via Pillow's ``draft``), converted to RGB (grayscale, CMYK, palette, RGBA -- alpha dropped --,
PNG...), the central square of the shorter side kept and scaled to ``resize_size`` (smaller
images are scaled up). Pixels stay on the [0, 255] scale and the training set's mean image is
subtracted (``pixel_scale`` multiplies the result, 1 by default).

- train: a random ``crop_size`` crop, a horizontal flip with probability 1/2, and PCA colour
  noise: every pixel gets ``255 * P @ (alpha * lambda)`` added, ``alpha ~ N(0, pca_noise)`` per
  image and epoch, ``P``/``lambda`` the eigenvectors/eigenvalues of the RGB covariance of the
  training pixels on the [0, 1] scale (so the offset is the paper's formula on [0, 1], then
  brought to [0, 255]).
- val / predict: the centre crop.
- test: ten crops (N, 10, 3, crop, crop), in the order top-left, top-right, bottom-left,
  bottom-right, centre, then the same five mirrored; ``x[:, 4]`` is the centre crop.

Unreadable files (corrupt, truncated, not images) are skipped, never fatal: the collate function
drops them and names them in the batch (a batch of only unreadable files is empty, and the
LightningModule's steps skip it); under a Trainer, ``on_after_batch_transfer`` adds them up and
each pass ends with one warning that counts and names them.

Speed: decoding runs in ``num_workers`` DataLoader processes (kept alive between epochs). A
worker decodes (JPEG at reduced scale when it still covers ``resize_size``), exports Pillow's own
4-byte pixels, resizes the central square with torch's vectorised uint8 kernel (~5x Pillow's) and
slices the crop, mirrored or not: uint8 out, with the crop's parameters (:class:`RawBatch`).
The float work -- mean image, colour noise, ten crops (:class:`FloatTransform`) -- runs batched
on the GPU after a pinned, non-blocking copy a third the size of float32's
(``on_after_batch_transfer``), or in the workers when training on the CPU (``finish``).
``use_cache`` reads the central squares from a uint8 memory-mapped array written once by
``prepare(cache=True)`` and skips decoding. Figures: ``bench/results/data.md``.

The pipeline reads in one direction, one module per step: :mod:`~lightning_alexnet.files`
(files and classes) -> :mod:`~lightning_alexnet.dataset` (decode, crop, uint8 batches) ->
:mod:`~lightning_alexnet.transform` (the float work) -> this module (the DataModule, which
builds each of them once from the statistics and the options).
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lightning_alexnet import stats as stats_lib
from lightning_alexnet import synthetic
from lightning_alexnet.dataset import Batch, ImageFolderDataset, SkippedFiles, decode_center
from lightning_alexnet.errors import UserPathError, UserValueError
from lightning_alexnet.files import (
    CACHE_DIR,
    IMAGE_EXTENSIONS,
    find_classes,
    image_files,
    scan_split,
)
from lightning_alexnet.transform import FloatTransform, RawBatch, from_statistics

log = logging.getLogger(__name__)

# The split and the length of a Trainer's pass (its own count: limit_*_batches applied) per stage
PASSES = {
    RunningStage.TRAINING: ("train", "num_training_batches"),
    RunningStage.SANITY_CHECKING: ("val", "num_sanity_val_batches"),
    RunningStage.VALIDATING: ("val", "num_val_batches"),
    RunningStage.TESTING: ("test", "num_test_batches"),
    RunningStage.PREDICTING: ("predict", "num_predict_batches"),
}


# --- the DataModule ---------------------------------------------------------------------------


class ImageFolderDataModule(pl.LightningDataModule):
    """The paper's input pipeline over an image-folder tree, or the built-in shapes data set.

    Args:
        root: Folder with ``train/<class>/*`` and ``val/<class>/*`` image files (JPEG, PNG, ...;
            any colour mode, converted to RGB). None: the built-in data set ``shapes10-v1``
            (generated once into ``$LIGHTNING_ALEXNET_DATA``, default
            ``~/.cache/lightning_alexnet``).
        batch_size: Images per batch for training and validation (the paper: 128).
        num_workers: DataLoader worker processes decoding in parallel with training (0: in the
            main process). Also the process count of ``prepare``.
        resize_size: The shorter side is scaled to this, then the central square is kept (the
            paper: 256). Smaller images are scaled up.
        crop_size: Side of the crops fed to the network (the paper: 224).
        mean_image: Subtract the training set's mean image (the paper); False: subtract only its
            mean RGB colour. Pixels are on the [0, 255] scale either way.
        pca_noise: Standard deviation of the PCA colour noise's alpha (the paper: 0.1; 0: off).
            Eigenvalues are those of the RGB covariance on the [0, 1] scale; the offset is
            multiplied by 255 to match the pixels.
        random_crop: Random crops for training; False: the centre crop.
        hflip: Random horizontal flips for training.
        ten_crop_test: ``test`` batches hold the paper's ten crops per image (N, 10, 3, C, C):
            four corners and centre, then their mirror images. False: the centre crop.
        test_batch_size: Images per ``test`` batch; default ``batch_size // 10`` with ten crops
            (the same number of crops as a training batch), else ``batch_size``.
        use_cache: Read the central crops from the uint8 memory-mapped cache that ``prepare
            --cache`` writes (built on first use when missing) instead of decoding image files.
        predict_root: Folder whose image files (recursively) ``predict`` classifies.
        stats_dir: Where statistics and crop caches are kept; default ``<root>/.lightning_alexnet``.
        pixel_scale: Multiply the mean-subtracted pixels (and the colour noise) by this: 1 keeps
            the paper's [0, 255] scale, for its N(0, 0.01) initialisation; about 1/64 gives unit
            variance, for He-initialised narrow networks.
        pin_memory: Pin batches in page-locked memory for fast, non-blocking copies to the GPU
            (only when CUDA is available).
        finish: Where the uint8 crops become float input (mean image, colour noise, ten crops):
            ``device`` -- after the copy, batched on the training device (``on_after_batch_transfer``;
            the copy is a third of float32's); ``workers`` -- in the DataLoader workers (right for
            CPU training, where the main process is busy training); ``auto`` -- ``device`` when the
            Trainer's device (outside a Trainer: CUDA if available) is not the CPU, else ``workers``.
    """

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 128,
        num_workers: int = 4,
        resize_size: int = 256,
        crop_size: int = 224,
        mean_image: bool = True,
        pca_noise: float = 0.1,
        random_crop: bool = True,
        hflip: bool = True,
        ten_crop_test: bool = True,
        test_batch_size: int | None = None,
        use_cache: bool = False,
        predict_root: str | None = None,
        stats_dir: str | None = None,
        pixel_scale: float = 1.0,
        pin_memory: bool = True,
        finish: Literal["auto", "device", "workers"] = "auto",
    ) -> None:
        super().__init__()
        sizes = {"batch_size": batch_size, "resize_size": resize_size, "crop_size": crop_size}
        for name, value in sizes.items():
            if value < 1:
                raise UserValueError(f"{name} must be positive, got {value}")
        if test_batch_size is not None and test_batch_size < 1:
            raise UserValueError(f"test_batch_size must be positive, got {test_batch_size}")
        if num_workers < 0:
            raise UserValueError(f"num_workers must be >= 0, got {num_workers}")
        if crop_size > resize_size:
            raise UserValueError(f"crop_size ({crop_size}) must not exceed resize_size ({resize_size})")
        if pixel_scale <= 0:
            raise UserValueError(f"pixel_scale must be positive, got {pixel_scale}")
        if pca_noise < 0:
            raise UserValueError(f"pca_noise must be >= 0, got {pca_noise}")
        if finish not in ("auto", "device", "workers"):
            raise UserValueError(f"finish must be auto, device or workers, got {finish!r}")
        self.save_hyperparameters()
        if root is None:
            root = synthetic.ensure()
            n = {s: len(image_files(Path(root) / s)) for s in ("train", "val")}
            rank_zero_info(f"built-in data set {synthetic.NAME} at {root}: "
                           f"{len(synthetic.CLASSES)} classes, {n['train']} train + {n['val']} val JPEG images "
                           f"({synthetic.SIZE}x{synthetic.SIZE})")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise UserPathError(f"data root {self.root} does not exist or is not a folder: pass "
                                f"--data.root DIR with DIR/train/<class>/<images> and DIR/val/<class>/<images>")
        self.classes: list[str] = find_classes(self.root / "train")
        val = self.root / "val"
        unknown = sorted(set(find_classes(val)) - set(self.classes)) if val.is_dir() else []
        if unknown:  # before any statistics are computed
            raise UserValueError(f"class {unknown[0]!r} of {val} has no folder in the training set "
                                 f"{self.root / 'train'}: every val class must also be a train class")
        self.num_classes: int = len(self.classes)
        self.stats_dir = Path(stats_dir).expanduser() if stats_dir else self.root / CACHE_DIR
        self.stats: stats_lib.Statistics | None = None
        self._samples: dict[str, list] = {}
        self._keys: dict[str, str] = {}
        self.datasets: dict[str, ImageFolderDataset] = {}
        self.float_transform: FloatTransform | None = None  # built from the statistics in setup
        self.skipped: dict[RunningStage, SkippedFiles] = {}  # the unreadable files of each pass

    # --- files, keys, caches --------------------------------------------------------------

    def split_dir(self, split: str) -> Path:
        if split == "test" and not (self.root / "test").is_dir():
            split = "val"  # the paper reports on the validation set
        return self.root / split

    def samples(self, split: str) -> list[tuple[str, int]]:
        """(path, class index) of every image of ``split`` (train, val or test), scanned once."""
        if split not in self._samples:
            self._samples[split] = scan_split(self.split_dir(split), self.classes)
        return self._samples[split]

    def key(self, split: str) -> str:
        """Hash of the split's files (paths, sizes, mtimes) and ``resize_size``."""
        if split not in self._keys:
            files = [p for p, _ in self.samples(split)]
            self._keys[split] = stats_lib.cache_key(self.root, files, self.hparams.resize_size)
        return self._keys[split]

    def stats_path(self) -> Path:
        return self.stats_dir / f"stats-{self.key('train')}.npz"

    def cache_paths(self, split: str) -> tuple[Path, Path]:
        """(crops .npy, readable-mask .npy) of ``split``'s crop cache."""
        stem = self.stats_dir / f"crops-{self.split_dir(split).name}-{self.key(split)}"
        return stem.with_suffix(".npy"), Path(f"{stem}-ok.npy")

    def _make_stats_dir(self) -> None:
        try:
            self.stats_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise PermissionError(f"cannot create the statistics folder {self.stats_dir} ({e}); "
                                  f"pass --data.stats_dir with a writable folder") from e

    def _report_unreadable(self, split: str, failed: list[str]) -> None:
        if failed:
            more = f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
            log.warning(f"{len(failed)} unreadable image file(s) in {self.split_dir(split)}, "
                        f"skipped: " + "; ".join(failed[:10]) + more)

    def compute_stats(self) -> stats_lib.Statistics:
        """Stream the training images once and cache the statistics (see :mod:`stats`)."""
        self._make_stats_dir()
        path = self.stats_path()
        old = [p.name for p in self.stats_dir.glob("stats-*.npz") if p != path]
        if old:
            rank_zero_info(f"training set or resize_size changed since {', '.join(old)} was "
                           f"computed: computing new statistics")
        files = [p for p, _ in self.samples("train")]
        rank_zero_info(f"computing training-set statistics over {len(files)} images -> {path}")
        result, failed = stats_lib.compute(files, self.hparams.resize_size, decode_center,
                                           self.hparams.num_workers)
        self._report_unreadable("train", failed)
        result.save(path)
        return result

    def load_stats(self) -> stats_lib.Statistics:
        """The cached statistics of the current training files, computed first when missing."""
        if self.stats is None:
            path = self.stats_path()
            self.stats = stats_lib.Statistics.load(path) if path.is_file() else self.compute_stats()
        return self.stats

    def build_cache(self, split: str) -> None:
        """Write ``split``'s central crops as an (N, S, S, 3) uint8 ``.npy`` (memory-mappable)."""
        self._make_stats_dir()
        crops_path, ok_path = self.cache_paths(split)
        if crops_path.is_file() and ok_path.is_file():
            return
        stale = [p for p in self.stats_dir.glob(f"crops-{self.split_dir(split).name}-*.npy")
                 if not p.name.endswith("-ok.npy") and ".tmp-" not in p.name]
        if stale:
            gb = sum(p.stat().st_size for p in stale) / 1e9
            log.warning(f"{split} changed since the crop cache(s) {', '.join(map(str, stale))} "
                        f"were written ({gb:.1f} GB): they are no longer used; delete them")
        files = [p for p, _ in self.samples(split)]
        s = self.hparams.resize_size
        tmp = crops_path.with_name(crops_path.name + f".tmp-{os.getpid()}.npy")
        crops = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                          shape=(len(files), s, s, 3))
        ok = np.ones(len(files), bool)
        total, failed = stats_lib.Accumulator(s), []
        for start, acc, images, failures in stats_lib.stream(
                files, s, decode_center, self.hparams.num_workers, keep_images=True,
                desc=f"crop cache ({self.split_dir(split).name})"):
            crops[start:start + len(images)] = images
            total.merge(acc)
            for k, msg in failures:
                ok[start + k] = False
                failed.append(msg)
        crops.flush()
        del crops
        self._report_unreadable(split, failed)
        np.save(ok_path, ok)
        os.replace(tmp, crops_path)  # last: the crops file existing means the cache is complete
        rank_zero_info(f"wrote the crop cache {crops_path} ({len(files)} images)")
        if split == "train" and not self.stats_path().is_file():
            total.finish().save(self.stats_path())  # the same pass gave the statistics

    def prepare(self, cache: bool = False) -> None:
        """Compute and cache the training-set statistics; with ``cache``, also write the uint8
        crop caches of the train, val (and test) splits."""
        if cache:
            for split in dict.fromkeys(["train", "val", "test"]):
                if self.split_dir(split).is_dir():
                    self.build_cache(split)
        stats = self.load_stats()
        rank_zero_info(f"statistics of {stats.count} training images at {self.stats_path()}: "
                       f"mean RGB {np.round(stats.channel_mean, 2).tolist()}, eigenvalues "
                       f"(RGB covariance, [0, 1] scale) {np.round(stats.eigvals, 5).tolist()}")

    # --- Lightning hooks ----------------------------------------------------------------------

    def prepare_data(self) -> None:
        # one process per node: statistics (and crop caches) written before setup reads them
        if self.hparams.use_cache:
            for split in ("train", "val"):
                self.build_cache(split)
        self.load_stats()

    def _transform(self) -> FloatTransform:
        """The one float transform of every split, built once from the statistics."""
        if self.float_transform is None:
            hp, st = self.hparams, self.load_stats()
            mean = st.mean if hp.mean_image else st.channel_mean
            self.float_transform = from_statistics(mean, st.eigvals, st.eigvecs, hp.resize_size,
                                                   hp.crop_size, hp.pixel_scale)
        return self.float_transform

    def _dataset(self, split: str, mode: str) -> ImageFolderDataset:
        hp = self.hparams
        transform = self._transform()
        if mode == "predict":
            samples = self._predict_samples()
        else:
            samples = self.samples(split)
        cache = None
        if hp.use_cache and mode != "predict":
            self.build_cache(split)
            crops_path, ok_path = self.cache_paths(split)
            cache = (str(crops_path), np.load(ok_path))
        return ImageFolderDataset(
            samples, mode, hp.resize_size, hp.crop_size, pca_noise=hp.pca_noise,
            random_crop=hp.random_crop, hflip=hp.hflip, ten_crop=hp.ten_crop_test, cache=cache,
            transform=transform)

    def _predict_samples(self) -> list[tuple[str, str]]:
        root = self.hparams.predict_root
        if root is None:
            raise UserValueError("predict needs --data.predict_root: a folder of images to classify")
        if not Path(root).is_dir():
            raise UserPathError(f"predict_root {root} does not exist or is not a folder")
        files = image_files(Path(root))
        if not files:
            raise UserValueError(f"predict_root {root} contains no image files "
                             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        return [(f, f) for f in files]

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.datasets["train"] = self._dataset("train", "train")
        if stage in ("fit", "validate"):
            self.datasets["val"] = self._dataset("val", "val")
        if stage == "test":
            self.datasets["test"] = self._dataset("test", "test")
            if self.split_dir("test").name != "test":
                rank_zero_info(f"no test/ folder in {self.root}: test evaluates on val/ "
                               f"({len(self.datasets['test'])} images)")
        if stage == "predict":
            self.datasets["predict"] = self._dataset("predict", "predict")

    def _loader(self, split: str, batch_size: int, shuffle: bool = False) -> DataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(split, split))
        workers, dataset = self.hparams.num_workers, self.datasets[split]
        finish = self._transform() if self.finish_in_workers() else None
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
            collate_fn=functools.partial(dataset.collate, finish=finish),
            persistent_workers=workers > 0,
            pin_memory=self.hparams.pin_memory and torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        hp = self.hparams
        size = hp.test_batch_size or hp.batch_size
        if hp.test_batch_size is None and hp.ten_crop_test:
            size = max(1, hp.batch_size // 10)  # ten crops per image
        return self._loader("test", size)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", self.hparams.batch_size)

    def finish_in_workers(self) -> bool:
        """Whether the loaders yield finished float batches (see ``finish``)."""
        if self.hparams.finish != "auto":
            return self.hparams.finish == "workers"
        trainer = self.trainer
        if trainer is not None:
            return trainer.strategy.root_device.type == "cpu"
        return not torch.cuda.is_available()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # on the training device (the GPU): the module gets (x, target), the float input
        if isinstance(batch, RawBatch | Batch):
            self._count_skipped(batch.skipped, dataloader_idx)
            return self.transform(batch) if isinstance(batch, RawBatch) else batch[:2]
        return batch

    def _count_skipped(self, skipped: tuple[str, ...], dataloader_idx: int) -> None:
        """Add a batch's unreadable files to its pass's, and report them after the pass's last
        batch (by the Trainer's count of its batches)."""
        trainer = self.trainer
        if trainer is None or trainer.state.stage not in PASSES:
            return  # outside a Trainer: each batch names its own (``batch.skipped``)
        split, length = PASSES[trainer.state.stage]
        tally = self.skipped.setdefault(trainer.state.stage, SkippedFiles(split))
        tally.add(skipped)
        length = getattr(trainer, length)
        if tally.batches >= (length[dataloader_idx] if isinstance(length, list) else length):
            tally.report()

    def teardown(self, stage: str) -> None:
        for tally in self.skipped.values():  # a pass cut short (max_steps): report it now
            tally.report()

    def on_exception(self, exception: BaseException) -> None:
        for tally in self.skipped.values():  # a run stopped by an error calls no teardown
            tally.report()

    def transform(self, batch: RawBatch) -> tuple[torch.Tensor, torch.Tensor | list[str]]:
        """Finish a :class:`RawBatch` from this module's loaders: ``(x, target)`` with ``x``
        float32 (N, 3, C, C), or (N, 10, 3, C, C) for ten-crop test batches. Lightning calls it
        after the copy to the device; outside a Trainer, with ``finish="device"``, call it on each
        batch yourself (``batch.skipped`` names the batch's unreadable files)."""
        if self.float_transform is None:
            raise RuntimeError("transform needs the statistics: call setup(stage) first")
        return self.float_transform(batch)
