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
drops them, and the loader logs each pass's count with the files' names.

Speed: decoding runs in ``num_workers`` DataLoader processes (kept alive between epochs) into
pinned memory. Per image: one decode, one antialiased resize of the central square (torch's
uint8 kernel, ~3x faster than Pillow's), then numpy slices and one float pass. On ~500x375
JPEGs the decode itself is about half the naive path's time, which caps the gain at about 1.5x
there (``bench/results/data.md``); images at least twice ``resize_size`` decode at reduced
scale (2x and more); ``use_cache`` reads the central crops from a uint8 memory-mapped array
written once by ``prepare(cache=True)`` and skips decoding (10x and more).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from lightning_alexnet import stats as stats_lib
from lightning_alexnet import synthetic

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_DIR = ".lightning_alexnet"


# --- files ------------------------------------------------------------------------------------


def decode_center(path: str, size: int) -> np.ndarray:
    """Decode ``path`` to RGB, keep the central square, scale it to ``size``: (S, S, 3) uint8."""
    with Image.open(path) as im:
        # JPEG only: libjpeg scales by 1/2, 1/4, 1/8 while decoding, keeping both sides >= size
        im.draft("RGB", (size, size))
        if im.mode in ("P", "PA", "LA", "RGBA"):  # drop alpha; palette transparency: RGBA first
            im = im.convert("RGBA")
        elif im.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: Pillow clips, we scale
            grey = np.asarray(im).astype(np.int64).clip(0, 65535) >> 8
            im = Image.fromarray(grey.astype(np.uint8))
        if im.mode != "RGB":
            im = im.convert("RGB")
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        square = np.asarray(im.crop((left, top, left + side, top + side)))  # (side, side, 3)
    if side == size:
        return square
    # Antialiased bilinear like Pillow's, but torch's uint8 channels-last kernel is ~3x faster.
    # (1, 3, side, side) channels-last view -> (1, 3, S, S) -> (S, S, 3)
    with warnings.catch_warnings():  # Pillow's buffer is read-only; interpolate only reads it
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(square).permute(2, 0, 1).unsqueeze(0)
    out = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", antialias=True)
    return out[0].permute(1, 2, 0).numpy()


def _image_files(folder: Path) -> list[str]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders ignored."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def find_classes(split_dir: Path) -> list[str]:
    """Sorted class folder names of ``split_dir``."""
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder {split_dir} does not exist: expected "
                                f"{split_dir}/<class>/<image files>")
    classes = sorted(e.name for e in os.scandir(split_dir)
                     if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ValueError(f"split folder {split_dir} has no class folders: expected "
                         f"{split_dir}/<class>/<image files>")
    return classes


def scan_split(split_dir: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, class index) of every image in ``split_dir``, whose classes must be in ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for name in find_classes(split_dir):
        if name not in index:
            shown = f"{classes[:10]}{' ...' if len(classes) > 10 else ''}"
            raise ValueError(f"class {name!r} of {split_dir} has no folder in the training set "
                             f"({len(classes)} classes: {shown})")
        files = _image_files(split_dir / name)
        if not files:
            raise ValueError(f"class folder {split_dir / name} contains no image files "
                             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        samples += [(f, index[name]) for f in files]
    return samples


# --- datasets ---------------------------------------------------------------------------------


class ImageFolderDataset(Dataset):
    """Images of one split, preprocessed for ``mode`` in ``train``, ``val``, ``test``, ``predict``.

    Items are ``(x, y)`` (``y`` the class index, or the file's path for ``predict``) with ``x``
    float32 (3, C, C), or (10, 3, C, C) for ``test`` with ``ten_crop``; an unreadable file
    gives ``(None, message)``, which :func:`collate` drops.
    """

    def __init__(self, samples: list[tuple[str, int | str]], mode: str, resize_size: int,
                 crop_size: int, mean: np.ndarray, eigvals: np.ndarray | None = None,
                 eigvecs: np.ndarray | None = None, pca_noise: float = 0.0,
                 random_crop: bool = True, hflip: bool = True, ten_crop: bool = False, scale: float = 1.0,
                 cache: tuple[str, np.ndarray] | None = None):
        if mode not in ("train", "val", "test", "predict"):
            raise ValueError(f"mode must be train, val, test or predict, got {mode!r}")
        self.samples, self.mode = samples, mode
        self.resize_size, self.crop_size = resize_size, crop_size
        mean = np.broadcast_to(np.asarray(mean, np.float32), (resize_size, resize_size, 3))
        self.mean = np.ascontiguousarray(mean.transpose(2, 0, 1))  # (3, S, S)
        self.mean_flipped = np.ascontiguousarray(self.mean[:, :, ::-1])  # read forwards on flips
        # colour offset per unit alpha on [0, 255]: column k = 255 * lambda_k * p_k
        self.pca_basis = None
        if pca_noise > 0 and mode == "train":
            self.pca_basis = (scale * 255.0 * eigvecs * eigvals[None, :]).astype(np.float32)
        self.pca_noise, self.scale = pca_noise, scale
        self.random_crop, self.hflip, self.ten_crop = random_crop, hflip, ten_crop
        self.cache_path, self.cache_ok = cache if cache is not None else (None, None)
        self._cache = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> np.ndarray:
        """The (S, S, 3) uint8 central crop of sample ``index``: from the cache or the file."""
        path = self.samples[index][0]
        if self.cache_path is None:
            return decode_center(path, self.resize_size)
        if not self.cache_ok[index]:
            raise OSError("was unreadable when the crop cache was written")
        if self._cache is None:
            self._cache = np.load(self.cache_path, mmap_mode="r")
        return self._cache[index]

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            image = self.load(index)
        except Exception as e:  # noqa: BLE001 -- any unreadable file is skipped and reported
            return None, f"{path}: {stats_lib.describe_error(e)}"
        s, c = self.resize_size, self.crop_size
        if self.mode == "test" and self.ten_crop:
            return self._ten_crops(image), target
        if self.mode == "train":
            r = torch.rand(3)  # torch's RNG: seeded per DataLoader worker, unlike numpy's
            i = j = (s - c) // 2
            if self.random_crop:
                i, j = int(r[0] * (s - c + 1)), int(r[1] * (s - c + 1))
            flip = self.hflip and bool(r[2] < 0.5)
        else:
            i = j = (s - c) // 2
            flip = False
        # uint8 (C, C, 3) window, mirrored if flipping -> (3, C, C) uint8 -> minus the same
        # window of the mean image, as float32 (mirrored mean read forwards: s - j - c)
        if flip:
            crop = image[i:i + c, j + c - 1:j - 1 if j > 0 else None:-1]
            mean = self.mean_flipped[:, i:i + c, s - j - c:s - j]
        else:
            crop, mean = image[i:i + c, j:j + c], self.mean[:, i:i + c, j:j + c]
        x = np.subtract(np.ascontiguousarray(crop.transpose(2, 0, 1)), mean, dtype=np.float32)
        if self.scale != 1.0:
            x *= self.scale
        if self.pca_basis is not None:
            alpha = torch.randn(3).numpy() * self.pca_noise
            x += (self.pca_basis @ alpha)[:, None, None]  # one RGB offset for the whole image
        return torch.from_numpy(x), target

    def _ten_crops(self, image: np.ndarray) -> torch.Tensor:
        s, c = self.resize_size, self.crop_size
        centred = np.subtract(image.transpose(2, 0, 1), self.mean, dtype=np.float32)  # (3, S, S)
        if self.scale != 1.0:
            centred = centred * np.float32(self.scale)
        corners = [(0, 0), (0, s - c), (s - c, 0), (s - c, s - c), ((s - c) // 2, (s - c) // 2)]
        five = np.stack([centred[:, i:i + c, j:j + c] for i, j in corners])  # (5, 3, C, C)
        return torch.from_numpy(np.concatenate([five, five[..., ::-1]]))  # (10, 3, C, C)


def collate(items: list) -> tuple:
    """Stack the readable items; returns ``(x, y_or_paths, skipped_messages)``."""
    good = [it for it in items if it[0] is not None]
    skipped = [it[1] for it in items if it[0] is None]
    if not good:
        return torch.empty(0), [], skipped
    x = torch.stack([it[0] for it in good])
    targets = [it[1] for it in good]
    y = targets if isinstance(targets[0], str) else torch.tensor(targets, dtype=torch.int64)
    return x, y, skipped


class SkippingDataLoader(DataLoader):
    """A DataLoader (with :func:`collate`) that yields ``(x, y)`` and, at the end of each pass,
    logs how many unreadable files were skipped and which; ``skipped`` keeps the last pass's."""

    skipped: list[str] = []  # replaced by each pass's own list

    def __iter__(self):
        skipped: list[str] = []  # this pass's; a pass left unfinished reports when collected
        self.skipped = skipped
        try:
            for x, y, bad in super().__iter__():
                skipped += bad
                if len(x):  # a batch of only unreadable files is dropped whole
                    yield x, y
        finally:
            if skipped:
                name = getattr(self.dataset, "mode", "data")
                more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
                log.warning(f"{name}: skipped {len(skipped)} unreadable image file(s) in this "
                            f"pass: " + "; ".join(skipped[:5]) + more)


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
    ) -> None:
        super().__init__()
        sizes = {"batch_size": batch_size, "resize_size": resize_size, "crop_size": crop_size}
        for name, value in sizes.items():
            if value < 1:
                raise ValueError(f"{name} must be positive, got {value}")
        if test_batch_size is not None and test_batch_size < 1:
            raise ValueError(f"test_batch_size must be positive, got {test_batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if crop_size > resize_size:
            raise ValueError(f"crop_size ({crop_size}) must not exceed resize_size ({resize_size})")
        if pixel_scale <= 0:
            raise ValueError(f"pixel_scale must be positive, got {pixel_scale}")
        if pca_noise < 0:
            raise ValueError(f"pca_noise must be >= 0, got {pca_noise}")
        self.save_hyperparameters()
        if root is None:
            root = synthetic.ensure()
            n = {s: len(_image_files(Path(root) / s)) for s in ("train", "val")}
            rank_zero_info(f"built-in data set {synthetic.NAME} at {root}: "
                           f"{len(synthetic.CLASSES)} classes, {n['train']} train + {n['val']} val JPEG images "
                           f"({synthetic.SIZE}x{synthetic.SIZE})")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"data root {self.root} does not exist or is not a folder")
        self.classes: list[str] = find_classes(self.root / "train")
        self.num_classes: int = len(self.classes)
        self.stats_dir = Path(stats_dir).expanduser() if stats_dir else self.root / CACHE_DIR
        self.stats: stats_lib.Statistics | None = None
        self._samples: dict[str, list] = {}
        self._keys: dict[str, str] = {}
        self.datasets: dict[str, ImageFolderDataset] = {}

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

    def _dataset(self, split: str, mode: str) -> ImageFolderDataset:
        hp, st = self.hparams, self.load_stats()
        mean = st.mean if hp.mean_image else st.channel_mean
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
            samples, mode, hp.resize_size, hp.crop_size, mean, st.eigvals, st.eigvecs,
            pca_noise=hp.pca_noise, random_crop=hp.random_crop, hflip=hp.hflip,
            ten_crop=hp.ten_crop_test, scale=hp.pixel_scale, cache=cache)

    def _predict_samples(self) -> list[tuple[str, str]]:
        root = self.hparams.predict_root
        if root is None:
            raise ValueError("predict needs --data.predict_root: a folder of images to classify")
        if not Path(root).is_dir():
            raise FileNotFoundError(f"predict_root {root} does not exist or is not a folder")
        files = _image_files(Path(root))
        if not files:
            raise ValueError(f"predict_root {root} contains no image files "
                             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        return [(f, f) for f in files]

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.datasets["train"] = self._dataset("train", "train")
        if stage in ("fit", "validate"):
            self.datasets["val"] = self._dataset("val", "val")
        if stage == "test":
            self.datasets["test"] = self._dataset("test", "test")
        if stage == "predict":
            self.datasets["predict"] = self._dataset("predict", "predict")

    def _loader(self, split: str, batch_size: int, shuffle: bool = False) -> SkippingDataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(split, split))
        workers = self.hparams.num_workers
        return SkippingDataLoader(
            self.datasets[split], batch_size=batch_size, shuffle=shuffle, num_workers=workers,
            collate_fn=collate, persistent_workers=workers > 0,
            pin_memory=self.hparams.pin_memory and torch.cuda.is_available())

    def train_dataloader(self) -> SkippingDataLoader:
        return self._loader("train", self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> SkippingDataLoader:
        return self._loader("val", self.hparams.batch_size)

    def test_dataloader(self) -> SkippingDataLoader:
        hp = self.hparams
        size = hp.test_batch_size or hp.batch_size
        if hp.test_batch_size is None and hp.ten_crop_test:
            size = max(1, hp.batch_size // 10)  # ten crops per image
        return self._loader("test", size)

    def predict_dataloader(self) -> SkippingDataLoader:
        return self._loader("predict", self.hparams.batch_size)
