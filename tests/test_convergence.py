"""One convergence test: the same tiny network trained a few steps with the Triton kernels and
with eager PyTorch, from one seed -- the losses agree at every step (STYLE 9)."""

import pytest
import torch
import torch.nn.functional as F

from lightning_alexnet import AlexNet, AlexNetConfig

STEPS = 3
# Same eight layers, two towers, LRN, overlapping pools; narrow and small so the interpreter
# runs it in seconds. 64x64 input: maps 15 -> 7 -> 3 -> 1.
CONFIG = AlexNetConfig.from_name(
    "tiny", image_size=64, conv_channels=(8, 16, 16, 16, 16), fc_features=(16, 16), dropout=0.0
)


def train(kernels: str) -> list[float]:
    torch.manual_seed(0)
    model = AlexNet(CONFIG, kernels=kernels)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 64, 64, generator=g)
    y = torch.randint(0, CONFIG.num_classes, (2,), generator=g)
    losses = []
    for _ in range(STEPS):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_triton_and_eager_losses_agree_at_every_step():
    eager = train("eager")
    triton = train("triton")
    assert eager[-1] < eager[0]  # it really trains, so agreement is not trivial
    assert triton == pytest.approx(eager, rel=1e-4, abs=1e-5)
