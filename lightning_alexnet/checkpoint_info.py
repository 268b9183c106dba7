"""What a checkpoint must know to classify an image without its training folder.

``fit`` stores, under ``checkpoint["lightning_alexnet"]``, the class names (the training
folder's sorted class folders) and the preprocessing the network was trained with: the
resize and crop sides, ``pixel_scale`` and the mean subtracted (the training set's mean image
on the [0, 255] scale, or its mean RGB colour with ``mean_image: false``). It also notes the
data root, for the ``show`` commands that look at the training and validation images again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

KEY = "lightning_alexnet"


@dataclass
class DataInfo:
    """Class names and preprocessing of a trained network (see the module docstring)."""

    classes: list[str]
    resize_size: int
    crop_size: int
    pixel_scale: float
    mean: np.ndarray  # (S, S, 3) mean image, or (3,) mean colour, on [0, 255]
    root: str  # the training data's root folder when it was saved

    @classmethod
    def from_datamodule(cls, dm: Any) -> DataInfo:
        hp, stats = dm.hparams, dm.load_stats()
        return cls(list(dm.classes), hp.resize_size, hp.crop_size, float(hp.pixel_scale),
                   stats.mean if hp.mean_image else stats.channel_mean, str(dm.root))

    def to_dict(self) -> dict[str, Any]:
        # plain types and a tensor: loadable with torch.load(weights_only=True)
        return {"classes": self.classes, "resize_size": self.resize_size,
                "crop_size": self.crop_size, "pixel_scale": self.pixel_scale,
                "mean": torch.from_numpy(np.asarray(self.mean, np.float32)), "root": self.root}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataInfo:
        return cls(list(d["classes"]), int(d["resize_size"]), int(d["crop_size"]),
                   float(d["pixel_scale"]), np.asarray(d["mean"], np.float32), str(d["root"]))


def save(checkpoint: dict[str, Any], trainer: Any, loaded: DataInfo | None = None) -> None:
    """``on_save_checkpoint``: record the Trainer's ImageFolderDataModule in ``checkpoint``;
    without one, keep what the module was loaded with (``loaded``), if anything."""
    dm = getattr(trainer, "datamodule", None) if trainer is not None else None
    if dm is not None and hasattr(dm, "classes") and hasattr(dm, "load_stats"):
        checkpoint[KEY] = DataInfo.from_datamodule(dm).to_dict()
    elif loaded is not None:
        checkpoint[KEY] = loaded.to_dict()


def load(checkpoint: dict[str, Any]) -> DataInfo | None:
    """The :class:`DataInfo` stored in ``checkpoint``; None when it was saved without one."""
    return DataInfo.from_dict(checkpoint[KEY]) if KEY in checkpoint else None
