"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) with PyTorch Lightning and Triton kernels."""

from lightning_alexnet.data import ImageFolderDataModule
from lightning_alexnet.model import PRESETS, AlexNet, AlexNetConfig
from lightning_alexnet.module import AlexNetModule

__all__ = ["PRESETS", "AlexNet", "AlexNetConfig", "AlexNetModule", "ImageFolderDataModule"]
