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

Speed: decoding runs in ``num_workers`` DataLoader processes (kept alive between epochs). A
worker decodes (JPEG at reduced scale when it still covers ``resize_size``), exports Pillow's own
4-byte pixels, resizes the central square with torch's vectorised uint8 kernel (~5x Pillow's) and
slices the crop, mirrored or not: uint8 out, with the crop's parameters (:class:`RawBatch`).
The float work -- mean image, colour noise, ten crops (:class:`FloatTransform`) -- runs batched
on the GPU after a pinned, non-blocking copy a third the size of float32's
(``on_after_batch_transfer``), or in the workers when training on the CPU (``finish``).
``use_cache`` reads the central squares from a uint8 memory-mapped array written once by
``prepare(cache=True)`` and skips decoding. Figures: ``bench/results/data.md``.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, default_collate

from lightning_alexnet import stats as stats_lib
from lightning_alexnet import synthetic
from lightning_alexnet.errors import UserPathError, UserValueError
from lightning_alexnet.model import channels_last_on

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_DIR = ".lightning_alexnet"


# --- files ------------------------------------------------------------------------------------


def decode_rgbx(path: str, size: int) -> torch.Tensor:
    """Decode ``path`` to RGB, keep the central square, scale it to ``size``: uint8 (S, S, 4),
    channels last, the fourth channel padding (Pillow's own RGB layout, and the one torch's
    vectorised uint8 resize and 4-byte-pixel copies are fastest with)."""
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
        square = im.crop((left, top, left + side, top + side))
        # Pillow stores RGB as 4 bytes per pixel: exporting RGBX is a plain copy (RGB repacks)
        rgbx = np.frombuffer(square.tobytes("raw", "RGBX"), np.uint8).reshape(side, side, 4)
    with warnings.catch_warnings():  # the bytes are read-only; nothing below writes to them
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(rgbx)
    if side == size:
        return t
    # antialiased bilinear like Pillow's, ~5x faster: (1, 4, side, side) channels-last in and out
    t = torch.nn.functional.interpolate(t[None].permute(0, 3, 1, 2), size=(size, size),
                                        mode="bilinear", antialias=True)
    return t[0].permute(1, 2, 0)


def decode_center(path: str, size: int) -> np.ndarray:
    """:func:`decode_rgbx` as an (S, S, 3) uint8 array (for statistics and the crop cache)."""
    return np.ascontiguousarray(decode_rgbx(path, size)[..., :3].numpy())


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
        raise UserPathError(f"split folder {split_dir} does not exist: expected "
                                f"{split_dir}/<class>/<image files>")
    classes = sorted(e.name for e in os.scandir(split_dir)
                     if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserValueError(f"split folder {split_dir} has no class folders: expected "
                         f"{split_dir}/<class>/<image files>")
    return classes


def scan_split(split_dir: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, class index) of every image in ``split_dir``, whose classes must be in ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for name in find_classes(split_dir):
        if name not in index:
            shown = f"{classes[:10]}{' ...' if len(classes) > 10 else ''}"
            raise UserValueError(f"class {name!r} of {split_dir} has no folder in the training set "
                             f"({len(classes)} classes: {shown})")
        files = _image_files(split_dir / name)
        if not files:
            raise UserValueError(f"class folder {split_dir / name} contains no image files "
                             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        samples += [(f, index[name]) for f in files]
    return samples


# --- datasets ---------------------------------------------------------------------------------


class RawBatch(NamedTuple):
    """A batch as the DataLoader workers leave it for the GPU: uint8 pixels and the per-image
    augmentation parameters. :class:`FloatTransform` (run by the DataModule's
    ``on_after_batch_transfer``, after the copy) turns it into the network's float input.
    ``batch[0]`` / ``batch[1]`` are the pixels / targets, as in a finished ``(x, y)`` batch."""

    # uint8 (N, C, C, K) channels-last crops, mirrored where flipped (ten-crop test: the central
    # squares, (N, S, S, K)); K = 4 from image files (the fourth channel padding), 3 from the cache
    pixels: torch.Tensor
    target: torch.Tensor | list[str]  # class indices (int64), or the files' paths for predict
    params: torch.Tensor  # float32 (N, 6): crop row, crop column, flipped (0/1), PCA alpha 1-3
    ten_crop: bool  # pixels are the central squares; the transform cuts the ten crops


class FloatTransform:
    """Float conversion, mean-image subtraction, PCA colour noise, ``pixel_scale`` and ten-crop
    cutting for a :class:`RawBatch`, on whatever device it is on: on the GPU after the copy
    (batched, the copy a third of float32's), or in the DataLoader workers for CPU training.

    Args:
        mean: (S, S, 3) mean image on the [0, 255] scale.
        pca_basis: (3, 3) colour offset per unit alpha (column k: ``255 * lambda_k * p_k``).
        crop_size: Side C of the crops.
        scale: ``pixel_scale``.
        channels_last: Crops out in channels_last layout (same values); None = where the network
            runs so (:func:`~lightning_alexnet.model.channels_last_on`: on CUDA), so that it
            needs no copy. Ten-crop batches (5-D) stay contiguous.
    """

    def __init__(self, mean: np.ndarray, pca_basis: np.ndarray, crop_size: int, scale: float = 1.0,
                 channels_last: bool | None = None):
        mean = np.asarray(mean, np.float32)
        if mean.ndim != 3 or mean.shape[0] != mean.shape[1] or mean.shape[2] != 3:
            raise ValueError(f"mean must be an (S, S, 3) image, got shape {mean.shape}")
        self.mean = torch.from_numpy(np.ascontiguousarray(mean.transpose(2, 0, 1)))  # (3, S, S)
        self.pca_basis = torch.from_numpy(np.asarray(pca_basis, np.float32) * np.float32(scale))
        self.crop_size, self.scale = crop_size, float(scale)
        self.channels_last = channels_last
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if device not in self._on:  # copied once per device: mean, mirrored mean, basis
            mean = self.mean.to(device)
            self._on[device] = (mean, mean.flip(-1).contiguous(), self.pca_basis.to(device))
        return self._on[device]

    def finish_crops(self, pixels: torch.Tensor, params: torch.Tensor,
                     gather: bool | None = None) -> torch.Tensor:
        """float32 (N, 3, C, C): each uint8 crop (N, C, C, K) minus the window of the mean image
        it was cut from (mirrored where flipped), times ``scale``, plus its colour offset.
        ``gather``: whole-batch tensor ops (one indexed read of the mean; no host sync: the
        default off the CPU); else image by image while it is in cache (~5x faster on a CPU).
        channels_last or NCHW as :attr:`channels_last` says."""
        cl = self.channels_last
        fmt = (torch.channels_last if (channels_last_on(pixels.device) if cl is None else cl)
               else torch.contiguous_format)
        mean, mean_flipped, basis = self._constants(pixels.device)
        x = pixels[..., :3].permute(0, 3, 1, 2)  # (N, 3, C, C) uint8 view
        offsets = params[:, 3:] @ basis.T  # (N, 3): one RGB offset per image (zero: no noise)
        c, s = self.crop_size, mean.shape[-1]
        if gather if gather is not None else pixels.device.type != "cpu":
            ar = torch.arange(c, device=x.device)
            rows = params[:, 0, None].long() + ar  # (N, C)
            cols = params[:, 1, None].long() + torch.where(params[:, 2, None] > 0.5, c - 1 - ar, ar)
            window = mean[:, rows[:, :, None], cols[:, None, :]]  # (3, N, C, C)
            out = torch.empty(x.shape, device=x.device, memory_format=fmt)
            torch.sub(x, window.transpose(0, 1), out=out)
            if self.scale != 1.0:
                out.mul_(self.scale)
            return out.add_(offsets[:, :, None, None])
        # numpy: its uint8 - float32 over these strides is ~2x torch's on one CPU thread
        out = np.empty(x.shape, np.float32)
        xs, m, mf, offsets = x.numpy(), mean.numpy(), mean_flipped.numpy(), offsets.numpy()
        noise = bool(offsets.any())
        for k, (i, j, flip) in enumerate(params[:, :3].int().tolist()):
            window = mf[:, i:i + c, s - j - c:s - j] if flip else m[:, i:i + c, j:j + c]
            image = out[k]
            np.subtract(xs[k], window, out=image)
            if self.scale != 1.0:
                image *= np.float32(self.scale)
            if noise:
                image += offsets[k, :, None, None]
        return torch.from_numpy(out).contiguous(memory_format=fmt)

    def __call__(self, batch: RawBatch) -> tuple[torch.Tensor, torch.Tensor | list[str]]:
        pixels, params = batch.pixels, batch.params
        if pixels.dtype != torch.uint8 or pixels.ndim != 4 or pixels.shape[-1] not in (3, 4):
            raise ValueError(f"RawBatch.pixels must be uint8 (N, H, W, 3 or 4), got {pixels.dtype} "
                             f"{tuple(pixels.shape)}")
        if not batch.ten_crop:
            return self.finish_crops(pixels, params), batch.target
        mean = self._constants(pixels.device)[0]
        x = torch.sub(pixels[..., :3].permute(0, 3, 1, 2), mean)  # (N, 3, S, S)
        if self.scale != 1.0:
            x.mul_(self.scale)
        c, s = self.crop_size, x.shape[-1]
        corners = [(0, 0), (0, s - c), (s - c, 0), (s - c, s - c), ((s - c) // 2, (s - c) // 2)]
        five = torch.stack([x[..., i:i + c, j:j + c] for i, j in corners], 1)  # (N, 5, 3, C, C)
        return torch.cat([five, five.flip(-1)], 1), batch.target


class ImageFolderDataset(Dataset):
    """Images of one split, cut for ``mode`` in ``train``, ``val``, ``test``, ``predict``.

    Items are ``(pixels, target, params)`` (see :class:`RawBatch`; ``target`` the class index,
    or the file's path for ``predict``); an unreadable file gives ``(None, message, None)``,
    which :meth:`collate` drops. :attr:`transform` finishes collated batches; with
    :attr:`finish_in_workers`, :meth:`collate` does.
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
        basis = np.zeros((3, 3), np.float32)
        if eigvecs is not None and eigvals is not None:  # colour offset per unit alpha on [0, 255]
            basis = (255.0 * np.asarray(eigvecs) * np.asarray(eigvals)[None, :]).astype(np.float32)
        mean = np.broadcast_to(np.asarray(mean, np.float32), (resize_size, resize_size, 3))
        self.transform = FloatTransform(mean, basis, crop_size, scale)
        self.finish_in_workers = False  # collate returns finished (x, y) batches (CPU training)
        self.pca_noise = pca_noise if mode == "train" else 0.0
        self.random_crop, self.hflip = random_crop, hflip
        self.ten_crop = ten_crop and mode == "test"
        self.cache_path, self.cache_ok = cache if cache is not None else (None, None)
        self._cache = None  # opened lazily in each worker process

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        """The uint8 (S, S, K) central square of sample ``index``: from the file (K = 4, see
        :func:`decode_rgbx`) or the cache (K = 3)."""
        path = self.samples[index][0]
        if self.cache_path is None:
            return decode_rgbx(path, self.resize_size)
        if not self.cache_ok[index]:
            raise OSError("was unreadable when the crop cache was written")
        if self._cache is None:
            self._cache = np.load(self.cache_path, mmap_mode="r")
        with warnings.catch_warnings():  # a read-only memory map: only read below
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(self._cache[index])

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        try:
            image = self.load(index)
        except Exception as e:  # noqa: BLE001 -- any unreadable file is skipped and reported
            return None, f"{path}: {stats_lib.describe_error(e)}", None
        params = torch.zeros(6)
        if self.ten_crop:
            return image.contiguous(), target, params
        s, c = self.resize_size, self.crop_size
        i = j = (s - c) // 2
        flip = False
        if self.mode == "train":
            r = torch.rand(3)  # torch's RNG: seeded per DataLoader worker, unlike numpy's
            if self.random_crop:
                i, j = int(r[0] * (s - c + 1)), int(r[1] * (s - c + 1))
            flip = self.hflip and bool(r[2] < 0.5)
            if self.pca_noise > 0:
                params[3:] = torch.randn(3) * self.pca_noise
        crop = image[i:i + c, j:j + c]
        params[0], params[1], params[2] = i, j, float(flip)
        return crop.flip(1) if flip else crop.contiguous(), target, params

    def collate(self, items: list) -> tuple[RawBatch | tuple, list[str]]:
        """Stack the readable items; returns ``(batch, skipped_messages)``, the batch a
        :class:`RawBatch`, or finished ``(x, y)`` with :attr:`finish_in_workers`."""
        good = [it for it in items if it[0] is not None]
        skipped = [it[1] for it in items if it[0] is None]
        if not good:
            return RawBatch(torch.empty(0, 0, 0, 3, dtype=torch.uint8), [], torch.empty(0, 6),
                            self.ten_crop), skipped
        targets = [it[1] for it in good]
        y = targets if isinstance(targets[0], str) else torch.tensor(targets, dtype=torch.int64)
        if self.finish_in_workers:
            pixels, params = torch.stack([it[0] for it in good]), torch.stack([it[2] for it in good])
            return self.transform(RawBatch(pixels, y, params, self.ten_crop)), skipped
        # default_collate stacks straight into shared memory in a worker: no copy to hand it over
        pixels, params = default_collate([(it[0], it[2]) for it in good])
        return RawBatch(pixels, y, params, self.ten_crop), skipped

    def example(self, index: int) -> tuple[torch.Tensor, int | str]:
        """Item ``index`` as the network sees it: float (3, C, C), or (10, 3, C, C) ten crops."""
        item = self[index]
        if item[0] is None:
            raise OSError(item[1])
        x, y = self.transform(RawBatch(item[0][None], [item[1]], item[2][None], self.ten_crop))
        return x[0], y[0]


class SkippingDataLoader(DataLoader):
    """A DataLoader (with :meth:`ImageFolderDataset.collate`) that yields its batches and, at
    the end of each pass, logs how many unreadable files were skipped and which;
    ``skipped`` keeps the last pass's."""

    skipped: list[str] = []  # replaced by each pass's own list

    def __iter__(self):
        skipped: list[str] = []  # this pass's; a pass left unfinished reports when collected
        self.skipped = skipped
        try:
            for batch, bad in super().__iter__():
                skipped += bad
                if len(batch[0]):  # a batch of only unreadable files is dropped whole
                    yield batch
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
            n = {s: len(_image_files(Path(root) / s)) for s in ("train", "val")}
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
            raise UserValueError("predict needs --data.predict_root: a folder of images to classify")
        if not Path(root).is_dir():
            raise UserPathError(f"predict_root {root} does not exist or is not a folder")
        files = _image_files(Path(root))
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

    def _loader(self, split: str, batch_size: int, shuffle: bool = False) -> SkippingDataLoader:
        if split not in self.datasets:
            self.setup({"train": "fit", "val": "validate"}.get(split, split))
        workers = self.hparams.num_workers
        self.datasets[split].finish_in_workers = self.finish_in_workers()
        return SkippingDataLoader(
            self.datasets[split], batch_size=batch_size, shuffle=shuffle, num_workers=workers,
            collate_fn=self.datasets[split].collate, persistent_workers=workers > 0,
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

    def finish_in_workers(self) -> bool:
        """Whether the loaders yield finished float batches (see ``finish``)."""
        if self.hparams.finish != "auto":
            return self.hparams.finish == "workers"
        trainer = self.trainer
        if trainer is not None:
            return trainer.strategy.root_device.type == "cpu"
        return not torch.cuda.is_available()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # on the training device (the GPU): uint8 crops -> the network's float input
        if isinstance(batch, RawBatch):
            return self.transform(batch)
        return batch

    def transform(self, batch: RawBatch) -> tuple[torch.Tensor, torch.Tensor | list[str]]:
        """Finish a :class:`RawBatch` from this module's loaders: ``(x, target)`` with ``x``
        float32 (N, 3, C, C), or (N, 10, 3, C, C) for ten-crop test batches. Lightning calls it
        after the copy to the device; outside a Trainer, with ``finish="device"``, call it on each
        batch yourself."""
        if not self.datasets:
            raise RuntimeError("transform needs the statistics: call setup(stage) first")
        return next(iter(self.datasets.values())).transform(batch)
