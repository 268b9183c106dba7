"""The float half of the input pipeline: a :class:`RawBatch` of uint8 crops (what
:mod:`~lightning_alexnet.dataset` yields) becomes the network's float input -- mean image,
PCA colour noise, ``pixel_scale``, ten crops -- on whatever device the batch is on."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from lightning_alexnet.model import channels_last_on


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
    skipped: tuple[str, ...] = ()  # the batch's unreadable files, "path: reason" (dropped above)


def mean_windows(params: torch.Tensor, crop: int, side: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each crop's window of the mean image lies: row, column and mirrored (N,) each, from
    :attr:`RawBatch.params`. A crop cut at column ``j`` and flipped is the mirrored mean's window
    at column ``side - crop - j``, so every window is a plain ``[row:row + crop, col:col + crop]``
    slice of the mean or of its mirror image (the one place both finishing paths get it from)."""
    rows, cols, mirrored = params[:, 0].long(), params[:, 1].long(), params[:, 2] > 0.5
    return rows, torch.where(mirrored, side - crop - cols, cols), mirrored


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
        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _constants(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._on:  # copied once per device: (3, 2, S, S) the mean and its mirror
            mean = self.mean.to(device)
            self._on[device] = (torch.stack([mean, mean.flip(-1)], 1), self.pca_basis.to(device))
        return self._on[device]

    def finish_crops(self, pixels: torch.Tensor, params: torch.Tensor,
                     gather: bool | None = None) -> torch.Tensor:
        """float32 (N, 3, C, C): each uint8 crop (N, C, C, K) minus the window of the mean image
        it was cut from (mirrored where flipped, see :func:`mean_windows`), times ``scale``, plus
        its colour offset. ``gather``: whole-batch tensor ops (one indexed read of the mean; no
        host sync: the default off the CPU); else image by image while it is in cache (~5x faster
        on a CPU). channels_last or NCHW as :attr:`channels_last` says."""
        cl = self.channels_last
        fmt = (torch.channels_last if (channels_last_on(pixels.device) if cl is None else cl)
               else torch.contiguous_format)
        means, basis = self._constants(pixels.device)
        x = pixels[..., :3].permute(0, 3, 1, 2)  # (N, 3, C, C) uint8 view
        offsets = params[:, 3:] @ basis.T  # (N, 3): one RGB offset per image (zero: no noise)
        c = self.crop_size
        rows, cols, mirrored = mean_windows(params, c, means.shape[-1])
        if gather if gather is not None else pixels.device.type != "cpu":
            ar = torch.arange(c, device=x.device)
            window = means[:, mirrored.long()[:, None, None], (rows[:, None] + ar)[:, :, None],
                           (cols[:, None] + ar)[:, None, :]]  # (3, N, C, C)
            out = torch.empty(x.shape, device=x.device, memory_format=fmt)
            torch.sub(x, window.transpose(0, 1), out=out)
            if self.scale != 1.0:
                out.mul_(self.scale)
            return out.add_(offsets[:, :, None, None])
        # numpy, not torch: its uint8 - float32 over these strides is faster on a CPU (64 crops
        # 224 of 256, one thread, medians of 7 interleaved, on the shared 2-core Xeon at load
        # 1.5-5: numpy 48-66 ms, the same slices in torch 93-183 ms, the gather above 268-492
        # ms), and the gather is kept for devices (no host sync)
        out = np.empty(x.shape, np.float32)
        xs, m, offsets = x.numpy(), means.numpy(), offsets.numpy()
        noise = bool(offsets.any())
        for k, (i, j, f) in enumerate(zip(rows.tolist(), cols.tolist(), mirrored.tolist())):
            image = out[k]
            np.subtract(xs[k], m[:, int(f), i:i + c, j:j + c], out=image)
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
        mean = self._constants(pixels.device)[0][:, 0]
        x = torch.sub(pixels[..., :3].permute(0, 3, 1, 2), mean)  # (N, 3, S, S)
        if self.scale != 1.0:
            x.mul_(self.scale)
        c, s = self.crop_size, x.shape[-1]
        corners = [(0, 0), (0, s - c), (s - c, 0), (s - c, s - c), ((s - c) // 2, (s - c) // 2)]
        five = torch.stack([x[..., i:i + c, j:j + c] for i, j in corners], 1)  # (N, 5, 3, C, C)
        return torch.cat([five, five.flip(-1)], 1), batch.target



def from_statistics(mean: np.ndarray, eigvals: np.ndarray | None, eigvecs: np.ndarray | None,
                    resize_size: int, crop_size: int, scale: float = 1.0) -> FloatTransform:
    """The :class:`FloatTransform` of a mean (an (S, S, 3) image, or an RGB colour spread over
    it) and the PCA eigenvalues/eigenvectors of the RGB covariance on the [0, 1] scale (None:
    no colour noise): column k of the basis is ``255 * lambda_k * p_k``."""
    mean = np.broadcast_to(np.asarray(mean, np.float32), (resize_size, resize_size, 3))
    basis = np.zeros((3, 3), np.float32)
    if eigvecs is not None and eigvals is not None:
        basis = (255.0 * np.asarray(eigvecs) * np.asarray(eigvals)[None, :]).astype(np.float32)
    return FloatTransform(mean, basis, crop_size, scale)
