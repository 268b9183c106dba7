"""The network of Krizhevsky, Sutskever & Hinton (NIPS 2012), layer for layer.

Two towers, as on the paper's two GTX 580s, are expressed on one device as grouped
convolutions (conv2, conv4, conv5: ``groups=2``) and LRN windows kept inside each tower's
channels; conv3 and the fully-connected layers see both towers, as in the paper's figure 2.

    input 3x224x224
    conv1  96 11x11 /4 pad 2 -> 96x55x55,  ReLU, LRN, max-pool 3/2 -> 96x27x27
    conv2 256  5x5  pad 2 g2 -> 256x27x27, ReLU, LRN, max-pool 3/2 -> 256x13x13
    conv3 384  3x3  pad 1    -> 384x13x13, ReLU
    conv4 384  3x3  pad 1 g2 -> 384x13x13, ReLU
    conv5 256  3x3  pad 1 g2 -> 256x13x13, ReLU, max-pool 3/2 -> 256x6x6
    fc6 4096, ReLU, dropout 0.5
    fc7 4096, ReLU, dropout 0.5
    fc8 1000 (softmax in the loss)
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from lightning_alexnet.ops import (
    Conv2dReLU,
    Kernels,
    LocalResponseNormMaxPool2d,
    MaxPool2d,
    check_kernels,
)


def channels_last_on(device: torch.device | str) -> bool:
    """Whether AlexNet runs channels_last on ``device``: on CUDA yes -- the conv kernel's fast
    layout (its loads along the channel dimension are contiguous, see ``kernels.conv2d_relu``)
    and cuDNN's for tensor-core convolutions; elsewhere PyTorch's default NCHW, unchanged."""
    return torch.device(device).type == "cuda"


@dataclass(frozen=True)
class AlexNetConfig:
    """Everything that shapes the network. Presets by name: :meth:`from_name`.

    LRN constants follow ``torch.nn.functional.local_response_norm``, which divides ``alpha``
    by ``lrn_size``; the paper's alpha = 1e-4 is written without that division, so the
    paper's layer is ``lrn_alpha = 5 * 1e-4``. (cuda-convnet's code divides, i.e. it trained
    with ``lrn_alpha = 1e-4`` in these terms.)
    """

    num_classes: int = 1000
    image_size: int = 224  # square input side; conv1's padding 2 gives 55x55 at 224
    conv_channels: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)
    fc_features: tuple[int, int] = (4096, 4096)
    towers: int = 2  # 2: conv2/4/5 grouped and LRN inside each tower; 1: one tower
    lrn: bool = True
    lrn_size: int = 5
    lrn_alpha: float = 5e-4  # torch convention: paper's 1e-4 times lrn_size
    lrn_beta: float = 0.75
    lrn_k: float = 2.0
    dropout: float = 0.5
    init: Literal["paper", "kaiming"] = "paper"  # paper: weights N(0, 0.01)
    weight_std: float = 0.01
    bias_init: float = 1.0  # conv2, conv4, conv5, fc6, fc7 (others 0); Caffe used 0.1

    def __post_init__(self) -> None:
        if self.towers not in (1, 2):
            raise ValueError(f"towers must be 1 or 2, got {self.towers}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if any(c <= 0 or c % self.towers for c in self.conv_channels):
            raise ValueError(
                f"conv_channels must be positive and divisible by towers={self.towers}, "
                f"got {self.conv_channels}"
            )
        if self.feature_size < 1:
            raise ValueError(f"image_size={self.image_size} is too small for the network")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init not in ("paper", "kaiming"):
            raise ValueError(f"init must be 'paper' or 'kaiming', got {self.init!r}")

    @property
    def map_sizes(self) -> tuple[int, int, int, int]:
        """Spatial sides: conv1 output, after pool1, after pool2, after pool5."""
        conv1 = (self.image_size + 2 * 2 - 11) // 4 + 1
        pool1 = (conv1 - 3) // 2 + 1
        pool2 = (pool1 - 3) // 2 + 1
        pool5 = (pool2 - 3) // 2 + 1
        return conv1, pool1, pool2, pool5

    @property
    def feature_size(self) -> int:
        return self.map_sizes[-1]

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> AlexNetConfig:
        """A named preset (``paper``, ``tiny``) with any field overridden by keyword."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - fields
        if unknown:
            raise ValueError(f"unknown AlexNetConfig field(s) {sorted(unknown)}")
        return dataclasses.replace(PRESETS[name], **overrides)


PRESETS: dict[str, AlexNetConfig] = {
    # The paper's network: 60,965,224 parameters with two towers, 62,378,344 with one.
    "paper": AlexNetConfig(),
    # Same eight layers, towers, LRN and overlapping pooling, narrow enough to train in
    # minutes on two CPU cores. Narrow nets start slowly from N(0, 0.01) (He init here, with
    # unit-variance inputs), and dropout 0.5 on 256-wide layers halves the learning speed.
    "tiny": AlexNetConfig(
        num_classes=10,
        conv_channels=(32, 64, 96, 96, 64),
        fc_features=(256, 256),
        dropout=0.2,
        init="kaiming",
        bias_init=0.1,
    ),
}


class AlexNet(nn.Module):
    """AlexNet as in the paper; ``forward`` maps (N, 3, S, S) images to (N, num_classes) logits."""

    def __init__(self, config: AlexNetConfig | None = None, kernels: Kernels = "auto") -> None:
        super().__init__()
        self.config = cfg = config or AlexNetConfig()
        c1, c2, c3, c4, c5 = cfg.conv_channels
        f6, f7 = cfg.fc_features
        g = cfg.towers
        lrn = {"size": cfg.lrn_size, "alpha": cfg.lrn_alpha, "beta": cfg.lrn_beta, "k": cfg.lrn_k,
               "groups": g}

        def norm_pool() -> nn.Module:
            return LocalResponseNormMaxPool2d(**lrn, kernel_size=3, stride=2) if cfg.lrn else MaxPool2d(3, 2)

        # (N, 3, 224, 224) -> (N, 256, 6, 6)
        self.features = nn.Sequential(OrderedDict(
            conv1=Conv2dReLU(3, c1, 11, stride=4, padding=2),  # each tower sees all 3 channels
            norm_pool1=norm_pool(),
            conv2=Conv2dReLU(c1, c2, 5, padding=2, groups=g),
            norm_pool2=norm_pool(),
            conv3=Conv2dReLU(c2, c3, 3, padding=1),  # crosses towers
            conv4=Conv2dReLU(c3, c4, 3, padding=1, groups=g),
            conv5=Conv2dReLU(c4, c5, 3, padding=1, groups=g),
            pool5=MaxPool2d(3, 2),
        ))
        # (N, 256 * 6 * 6) -> (N, num_classes); every FC layer crosses towers
        self.classifier = nn.Sequential(OrderedDict(
            fc6=nn.Linear(c5 * cfg.feature_size**2, f6),
            relu6=nn.ReLU(inplace=True),
            drop6=nn.Dropout(cfg.dropout),
            fc7=nn.Linear(f6, f7),
            relu7=nn.ReLU(inplace=True),
            drop7=nn.Dropout(cfg.dropout),
            fc8=nn.Linear(f7, cfg.num_classes),
        ))
        self.set_kernels(kernels)
        self.reset_parameters()

    def set_kernels(self, kernels: Kernels) -> None:
        """Choose the implementation of conv+ReLU, LRN and max-pool for every layer."""
        self.kernels = kernels = check_kernels(kernels)
        for m in self.modules():
            if hasattr(m, "kernels") and m is not self:
                m.kernels = kernels

    def to_layout_of(self, device: torch.device | str) -> AlexNet:
        """Weights in the layout the network runs in on ``device`` (:func:`channels_last_on`);
        ``.to(device)`` keeps it. The Lightning module calls it before the move to the GPU."""
        if channels_last_on(device):
            self.to(memory_format=torch.channels_last)
        return self

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Paper: weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6, fc7, 0 elsewhere."""
        ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
        layers = {**dict(self.features.named_children()), **dict(self.classifier.named_children())}
        for name, m in layers.items():
            if not isinstance(m, (nn.Conv2d, nn.Linear)):
                continue
            if self.config.init == "paper":
                nn.init.normal_(m.weight, 0.0, self.config.weight_std)
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu" if name != "fc8" else "linear")
            nn.init.constant_(m.bias, self.config.bias_init if name in ones else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.image_size
        if x.dim() != 4 or x.shape[1:] != (3, s, s):
            raise ValueError(f"AlexNet expects input of shape (N, 3, {s}, {s}), got {tuple(x.shape)}")
        if channels_last_on(x.device):  # a no-op for the DataModule's batches, already so
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))
