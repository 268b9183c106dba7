"""The uint8 half of the input pipeline: files are decoded (:func:`decode_rgbx`), cropped and
flipped per image in the DataLoader workers (:class:`ImageFolderDataset`) and collated into a
:class:`~lightning_alexnet.transform.RawBatch` (or a finished :class:`Batch`) that a plain
``DataLoader`` yields. Unreadable files are dropped from their batch and named in its
``skipped``; :class:`SkippedFiles` adds them up over a pass and names them in one warning
(:func:`readable_batches` does both for loops outside a Trainer)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from lightning_alexnet import stats as stats_lib
from lightning_alexnet.transform import FloatTransform, RawBatch, from_statistics

log = logging.getLogger(__name__)


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


class Batch(NamedTuple):
    """A batch finished in the DataLoader workers: float input, targets and, as in
    :class:`RawBatch`, the batch's unreadable files."""

    x: torch.Tensor  # float32 (N, 3, C, C), or (N, 10, 3, C, C) ten crops
    target: torch.Tensor | list[str]  # class indices (int64), or the files' paths for predict
    skipped: tuple[str, ...] = ()


class ImageFolderDataset(Dataset):
    """Images of one split, cut for ``mode`` in ``train``, ``val``, ``test``, ``predict``.

    Items are ``(pixels, target, params)`` (see :class:`RawBatch`; ``target`` the class index,
    or the file's path for ``predict``); an unreadable file gives ``(None, message, None)``,
    which :meth:`collate` drops and names in the batch's ``skipped``. ``transform`` (the
    DataModule's one :class:`~lightning_alexnet.transform.FloatTransform`, or one built from
    ``mean``, ``eigvals``, ``eigvecs`` and ``scale``) finishes batches.
    """

    def __init__(self, samples: list[tuple[str, int | str]], mode: str, resize_size: int,
                 crop_size: int, mean: np.ndarray | None = None, eigvals: np.ndarray | None = None,
                 eigvecs: np.ndarray | None = None, pca_noise: float = 0.0,
                 random_crop: bool = True, hflip: bool = True, ten_crop: bool = False,
                 scale: float = 1.0, cache: tuple[str, np.ndarray] | None = None,
                 transform: FloatTransform | None = None):
        if mode not in ("train", "val", "test", "predict"):
            raise ValueError(f"mode must be train, val, test or predict, got {mode!r}")
        if (transform is None) == (mean is None):
            raise ValueError("pass either the mean image (with eigvals, eigvecs, scale) or a "
                             "transform built from them")
        self.samples, self.mode = samples, mode
        self.resize_size, self.crop_size = resize_size, crop_size
        if transform is None:
            transform = from_statistics(mean, eigvals, eigvecs, resize_size, crop_size, scale)
        self.transform = transform  # for :meth:`example`; the loaders' collate may be given it
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

    def collate(self, items: list, finish: FloatTransform | None = None) -> RawBatch | Batch:
        """Stack the readable items into a :class:`RawBatch`, or a :class:`Batch` finished by
        ``finish`` (in the workers: CPU training, predict); the unreadable ones are named in its
        ``skipped``. A batch of only unreadable files is empty (N = 0), for the step to skip."""
        good = [it for it in items if it[0] is not None]
        skipped = tuple(it[1] for it in items if it[0] is None)
        if good:
            targets = [it[1] for it in good]
            y = targets if isinstance(targets[0], str) else torch.tensor(targets, dtype=torch.int64)
            if finish is None:  # default_collate stacks into shared memory in a worker: no copy
                pixels, params = default_collate([(it[0], it[2]) for it in good])
            else:  # finished here: plain memory
                pixels, params = (torch.stack([it[0] for it in good]),
                                  torch.stack([it[2] for it in good]))
        else:
            y = [] if isinstance(self.samples[0][1], str) else torch.empty(0, dtype=torch.int64)
            side = self.resize_size if self.ten_crop else self.crop_size
            pixels, params = torch.empty(0, side, side, 3, dtype=torch.uint8), torch.empty(0, 6)
        batch = RawBatch(pixels, y, params, self.ten_crop, skipped)
        return batch if finish is None else Batch(*finish(batch), skipped)

    def example(self, index: int) -> tuple[torch.Tensor, int | str]:
        """Item ``index`` as the network sees it: float (3, C, C), or (10, 3, C, C) ten crops."""
        item = self[index]
        if item[0] is None:
            raise OSError(item[1])
        x, y = self.transform(RawBatch(item[0][None], [item[1]], item[2][None], self.ten_crop))
        return x[0], y[0]


class SkippedFiles:
    """The unreadable files of one pass over a split: :meth:`add` each batch's ``skipped``,
    :meth:`report` at the end of the pass (one warning that counts and names them)."""

    def __init__(self, split: str) -> None:
        self.split, self.messages, self.batches = split, [], 0

    def add(self, skipped: tuple[str, ...]) -> None:
        self.messages += skipped
        self.batches += 1

    def report(self) -> list[str]:
        """Warn about this pass's unreadable files, if any, and start the next pass; returns
        them."""
        messages, self.messages, self.batches = self.messages, [], 0
        if messages:
            more = f" (and {len(messages) - 5} more)" if len(messages) > 5 else ""
            log.warning(f"{self.split}: skipped {len(messages)} unreadable image file(s) in this "
                        f"pass: " + "; ".join(messages[:5]) + more)
        return messages


def readable_batches(batches: Iterable[Batch], split: str = "predict"
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor | list[str]]]:
    """``(x, target)`` of the finished batches that hold any image, for loops outside a Trainer;
    the pass's unreadable files are named in one warning when it ends (or is closed early)."""
    skipped = SkippedFiles(split)
    try:
        for x, target, names in batches:
            skipped.add(names)
            if len(x):
                yield x, target
    finally:
        skipped.report()
