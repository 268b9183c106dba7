"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) with PyTorch Lightning and Triton kernels."""

from lightning_alexnet.model import PRESETS, AlexNet, AlexNetConfig

__all__ = ["AlexNet", "AlexNetConfig", "PRESETS"]
