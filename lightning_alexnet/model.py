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

from lightning_alexnet.errors import UserValueError
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


# The paper's bias of 1 on conv2/4/5 and fc6/fc7 was set for ImageNet's 1,000 classes. It puts a
# large shared component in every fc7 output (|h7|^2 ~ 5,700 for the 4,096 units at init), so
# each SGD step on fc8 shifts every class's logit by about lr * |h7|^2 times that class's
# share of the batch minus its predicted probability -- a per-step jump of ~1 logit with 1,000
# classes, ~5 with 100 and ~30 with 10 (measured at batch 32-128): with few classes training
# diverges to one predicted class (measured at a 64-pixel crop, tests/test_paper_few_classes.py).
# Caffe's bias 0.1 shrinks |h7|^2 a hundredfold. ``bias_init=None`` (the paper preset) picks
# between the two by the class count.
PAPER_BIAS_MIN_CLASSES = 1000
FEW_CLASSES_BIAS = 0.1


@dataclass(frozen=True)
class AlexNetConfig:
    """Everything that shapes the network. Presets by name: :meth:`from_name`; on the command
    line every field is ``--model.network.<field>``, and ``--config paper|tiny`` fills them all.

    LRN constants follow ``torch.nn.functional.local_response_norm``, which divides ``alpha``
    by ``lrn_size``; the paper's alpha = 1e-4 is written without that division, so the
    paper's layer is ``lrn_alpha = 5 * 1e-4``. (cuda-convnet's code divides, i.e. it trained
    with ``lrn_alpha = 1e-4`` in these terms.)

    Args:
        num_classes: Outputs of fc8; linked from the data's class count on the command line.
        image_size: Side of the square input crop (conv1's padding 2 gives 55x55 maps at 224);
            linked from ``--data.crop_size`` on the command line.
        conv_channels: Output channels of conv1 to conv5 (paper 96, 256, 384, 384, 256); each
            divisible by ``towers``.
        fc_features: Widths of fc6 and fc7 (paper 4096, 4096).
        towers: 2 = the paper's two towers (grouped conv2/4/5, LRN inside a tower), 1 = one
            tower.
        lrn: Local response normalisation after conv1 and conv2 (else max-pooling only).
        lrn_size: LRN window, in channels (paper 5).
        lrn_alpha: LRN alpha in torch's convention, divided by ``lrn_size`` (paper 5e-4 = 5 x
            the paper's 1e-4).
        lrn_beta: LRN exponent (paper 0.75).
        lrn_k: LRN additive constant (paper 2).
        dropout: Dropout probability on fc6 and fc7 (paper 0.5).
        init: Weight initialisation: ``paper`` = N(0, weight_std), ``kaiming`` = He normal.
        weight_std: Standard deviation of the ``paper`` initialisation's weights (0.01).
        bias_init: Initial bias of conv2, conv4, conv5, fc6 and fc7 (the others start at 0):
            the paper's 1, or Caffe's 0.1. None (the paper preset): 1 with 1,000 classes or
            more, 0.1 with fewer, where the paper's 1 makes fc8's logits jump at every update
            (``AlexNetConfig.resolved``).
    """

    num_classes: int = 1000
    image_size: int = 224
    conv_channels: tuple[int, int, int, int, int] = (96, 256, 384, 384, 256)
    fc_features: tuple[int, int] = (4096, 4096)
    towers: int = 2
    lrn: bool = True
    lrn_size: int = 5
    lrn_alpha: float = 5e-4
    lrn_beta: float = 0.75
    lrn_k: float = 2.0
    dropout: float = 0.5
    init: Literal["paper", "kaiming"] = "paper"
    weight_std: float = 0.01
    bias_init: float | None = None

    def __post_init__(self) -> None:
        # UserValueError (a ValueError): the command line builds this from the user's options
        # lists (a checkpoint's or a YAML file's) become tuples: the config stays hashable
        for name, length in (("conv_channels", 5), ("fc_features", 2)):
            values = tuple(getattr(self, name))
            if len(values) != length:
                raise UserValueError(f"{name} must have {length} values, got {list(values)}")
            object.__setattr__(self, name, values)
        if self.towers not in (1, 2):
            raise UserValueError(f"towers must be 1 or 2, got {self.towers}")
        if self.num_classes < 1:
            raise UserValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if any(c <= 0 or c % self.towers for c in self.conv_channels):
            raise UserValueError(
                f"conv_channels must be positive and divisible by towers={self.towers}, "
                f"got {self.conv_channels}"
            )
        if any(f <= 0 for f in self.fc_features):
            raise UserValueError(f"fc_features must be positive, got {self.fc_features}")
        if self.feature_size < 1:
            raise UserValueError(f"image_size={self.image_size} is too small for the network")
        if not 0.0 <= self.dropout < 1.0:
            raise UserValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.init not in ("paper", "kaiming"):
            raise UserValueError(f"init must be 'paper' or 'kaiming', got {self.init!r}")

    def resolved(self) -> AlexNetConfig:
        """This config with ``bias_init`` decided: when None, the paper's 1 with at least
        ``PAPER_BIAS_MIN_CLASSES`` classes, else ``FEW_CLASSES_BIAS`` (see the comment above)."""
        if self.bias_init is not None:
            return self
        few = self.num_classes < PAPER_BIAS_MIN_CLASSES
        return dataclasses.replace(self, bias_init=FEW_CLASSES_BIAS if few else 1.0)

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
            raise UserValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - fields
        if unknown:
            raise UserValueError(f"unknown AlexNetConfig field(s) {sorted(unknown)}")
        return dataclasses.replace(PRESETS[name], **overrides)


PRESETS: dict[str, AlexNetConfig] = {
    # The paper's network: 60,965,224 parameters with two towers, 62,378,344 with one; its
    # bias_init (None) is the paper's 1 with 1,000 classes, Caffe's 0.1 with fewer.
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
        self.config = cfg = (config or AlexNetConfig()).resolved()
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
