"""Training-set statistics: the mean image and the RGB covariance's eigenpairs, cached.

One streaming pass over the training images (decoded and centre-cropped exactly as the
loader does) accumulates, in float64, the per-pixel sum image, the RGB sum and the 3x3 sum of
outer products. Memory stays bounded whatever the data size: a worker pool decodes chunks of
images (a DataLoader's workers, at most two chunks per worker in flight) and returns
partial sums.

Scales: the mean image is on the [0, 255] pixel scale, the covariance (and so its eigenvalues)
on the [0, 1] scale, as ``DESIGN.md`` section 5 asks.

The result is cached as ``<stats_dir>/stats-<key>.npz`` where ``key`` hashes the sorted relative
paths, sizes and modification times of the training files and the resize size: a changed
training set gives a new key, so stale statistics are never reused.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import UnidentifiedImageError
from tqdm.auto import tqdm

CHUNK = 32  # images per task in the worker pool: partial sums per chunk, not per image
VERSION = 1  # bump when what is computed changes: old caches then get a new key

Decode = Callable[[str, int], np.ndarray]  # (path, size) -> (size, size, 3) uint8


@dataclass
class Statistics:
    """Mean image (S, S, 3) on [0, 255]; eigenvalues (3,) descending and eigenvectors (3, 3)
    as columns of the RGB covariance on [0, 1]; ``count`` images were read."""

    mean: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    count: int

    @property
    def channel_mean(self) -> np.ndarray:
        """(3,) mean RGB on [0, 255]."""
        return self.mean.mean((0, 1))

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npz")
        np.savez(tmp, mean=self.mean, eigvals=self.eigvals, eigvecs=self.eigvecs, count=self.count)
        os.replace(tmp, path)  # atomic: a reader never sees half a file

    @classmethod
    def load(cls, path: Path) -> Statistics:
        with np.load(path) as f:
            return cls(f["mean"], f["eigvals"], f["eigvecs"], int(f["count"]))


class Accumulator:
    """Running float64 sums over images; ``finish`` turns them into :class:`Statistics`."""

    def __init__(self, size: int) -> None:
        self.image_sum = np.zeros((size, size, 3))  # per-pixel sum on [0, 255]
        self.rgb_sum = np.zeros(3)  # over all pixels, [0, 1] scale
        self.outer_sum = np.zeros((3, 3))  # sum of x x^T over all pixels, [0, 1] scale
        self.count = 0

    def add(self, image: np.ndarray) -> None:
        """Add one (S, S, 3) uint8 image."""
        self.image_sum += image
        pixels = image.reshape(-1, 3).astype(np.float64) / 255.0  # (S*S, 3)
        self.rgb_sum += pixels.sum(0)
        self.outer_sum += pixels.T @ pixels
        self.count += 1

    def merge(self, other: Accumulator) -> None:
        self.image_sum += other.image_sum
        self.rgb_sum += other.rgb_sum
        self.outer_sum += other.outer_sum
        self.count += other.count

    def finish(self) -> Statistics:
        if self.count == 0:
            raise ValueError("no readable training image: cannot compute statistics")
        n_pixels = self.count * self.image_sum.shape[0] * self.image_sum.shape[1]
        mu = self.rgb_sum / n_pixels
        cov = self.outer_sum / n_pixels - np.outer(mu, mu)
        eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
        order = np.argsort(eigvals)[::-1]
        return Statistics(
            mean=(self.image_sum / self.count).astype(np.float32),
            eigvals=eigvals[order].clip(min=0.0),
            eigvecs=eigvecs[:, order],
            count=self.count,
        )


def describe_error(e: Exception) -> str:
    """Why a file could not be read, in a few words (the caller names the file)."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image Pillow can read (UnidentifiedImageError)"
    return f"{type(e).__name__}: {e}"


def cache_key(root: Path, files: Sequence[str], size: int) -> str:
    """Hash of the relative paths, sizes and mtimes of ``files`` (under ``root``) and ``size``."""
    h = hashlib.sha256(f"v{VERSION} size={size}\n".encode())
    for f in sorted(files):
        st = os.stat(f)
        h.update(f"{os.path.relpath(f, root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _decode_chunk(decode: Decode, paths: Sequence[str], size: int, keep: bool):
    """Worker task: partial sums over ``paths``; the images too when ``keep``."""
    acc = Accumulator(size)
    images = np.zeros((len(paths), size, size, 3), np.uint8) if keep else None
    failures = []
    for k, path in enumerate(paths):
        try:
            image = decode(path, size)
        except Exception as e:  # noqa: BLE001 -- unreadable files are reported by the caller, not fatal
            failures.append((k, f"{path}: {describe_error(e)}"))
            continue
        acc.add(image)
        if keep:
            images[k] = image
    return acc, images, failures


class _Chunks(torch.utils.data.Dataset):
    """Chunk ``i`` of ``files`` -> :func:`_decode_chunk`'s partial sums (a DataLoader item)."""

    def __init__(self, chunks: Sequence[Sequence[str]], size: int, decode: Decode, keep: bool):
        self.chunks, self.size, self.decode, self.keep = chunks, size, decode, keep

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int):
        return _decode_chunk(self.decode, self.chunks[i], self.size, self.keep)


def _as_is(item):
    return item


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def stream(files: Sequence[str], size: int, decode: Decode, workers: int = 0,
           keep_images: bool = False, desc: str = "statistics") -> Iterator[tuple]:
    """Decode ``files`` once, in order; yields ``(start, accumulator, images|None, failures)``
    per chunk, where failures are ``(index, message)``. A progress bar shows images/s and ETA.

    A DataLoader runs the chunks in its workers, in order (the crop cache is written row by
    row) with at most ``prefetch_factor=2`` chunks per worker in flight, so memory stays
    bounded even when writing is slower than decoding."""
    chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
    workers = workers if len(chunks) > 1 else 0
    loader = torch.utils.data.DataLoader(
        _Chunks(chunks, size, decode, keep_images), batch_size=None, collate_fn=_as_is,
        num_workers=workers, prefetch_factor=2 if workers else None,
        worker_init_fn=_one_thread if workers else None)
    with tqdm(total=len(files), desc=desc, unit="img", smoothing=0.1) as bar:
        for i, out in enumerate(loader):
            bar.update(len(chunks[i]))
            yield (i * CHUNK, *out)


def compute(files: Sequence[str], size: int, decode: Decode, workers: int = 0
            ) -> tuple[Statistics, list[str]]:
    """Statistics of ``files``, and the messages of the files that could not be read."""
    total = Accumulator(size)
    failed: list[str] = []
    for _, acc, _, failures in stream(files, size, decode, workers):
        total.merge(acc)
        failed += [msg for _, msg in failures]
    return total.finish(), failed
