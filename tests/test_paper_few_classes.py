"""The paper preset with few classes (issue 14): the paper's bias of 1 on fc6/fc7 makes fc8's
logits jump at every update when each class is a large share of the batch; the preset uses
Caffe's 0.1 below 1,000 classes, and fit says so. Measured at a 64-pixel crop."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from test_cli import COMMON, make_tree

from lightning_alexnet.cli import main
from lightning_alexnet.model import AlexNet, AlexNetConfig
from lightning_alexnet.module import AlexNetModule

# the paper's network on top of COMMON's tiny one, field by field
PAPER_NETWORK = ["--model.network.conv_channels", "[96, 256, 384, 384, 256]",
                 "--model.network.fc_features", "[4096, 4096]", "--model.network.dropout", "0.5",
                 "--model.network.init", "paper", "--model.network.bias_init", "null"]


def logit_jumps(bias_init: float, num_classes: int = 10, steps: int = 2, batch: int = 16):
    """Largest per-class change of the mean logit (over fixed probe images) after each SGD step
    of the paper's recipe, and fc7's squared output norm at init."""
    torch.manual_seed(0)
    net = AlexNet(AlexNetConfig.from_name("paper", num_classes=num_classes, image_size=64,
                                          bias_init=bias_init), kernels="eager")
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    probe = torch.randn(8, 3, 64, 64) * 60  # mean-subtracted pixels on the paper's [0, 255] scale
    fc7 = {}
    hook = net.classifier.relu7.register_forward_hook(lambda m, i, o: fc7.update(h=o.detach()))
    net.eval()
    before = net(probe).detach()
    hook.remove()
    jumps = []
    for _ in range(steps):
        net.train()
        x, y = torch.randn(batch, 3, 64, 64) * 60, torch.randint(0, num_classes, (batch,))
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
        net.eval()
        after = net(probe).detach()
        jumps.append((after - before).mean(0).abs().max().item())
        before = after
    return jumps, fc7["h"].pow(2).sum(1).mean().item()


def test_paper_bias_makes_fc8_logits_jump_with_few_classes():
    jumps, norm = logit_jumps(1.0)
    assert norm > 2000  # the bias dominates fc7: ~4,096 units of ~1
    assert max(jumps) > 5.0, jumps  # measured ~20-50 per step
    jumps, norm = logit_jumps(0.1)
    assert norm < 200  # a hundredfold smaller
    assert max(jumps) < 1.0, jumps  # measured ~0.1


def test_preset_keeps_the_paper_bias_for_imagenet_class_counts():
    paper = AlexNetConfig.from_name("paper", image_size=64)
    assert AlexNetModule(replace(paper, num_classes=1000)).config.bias_init == 1.0
    assert AlexNetModule(replace(paper, num_classes=1000)).config_note is None
    few = AlexNetModule(replace(paper, num_classes=10))
    assert few.config.bias_init == 0.1 and "bias_init 0.1" in few.config_note
    assert AlexNetModule(replace(paper, num_classes=10, bias_init=1.0)).config.bias_init == 1.0
    tiny = AlexNetConfig.from_name("tiny", num_classes=10, image_size=64)
    assert AlexNetModule(tiny).config_note is None


@pytest.mark.parametrize("extra, noted", [([], True), (["--model.network.bias_init", "1"], False)])
def test_fit_says_what_the_preset_changed(tmp_path, monkeypatch, caplog, extra, noted):
    root = make_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        cli = main(["fit", *COMMON, *PAPER_NETWORK, "--data.root", str(root),
                    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                    "--trainer.limit_val_batches", "1", *extra])
    lines = [r.getMessage() for r in caplog.records if "paper preset with 3 classes" in r.getMessage()]
    assert len(lines) == int(noted)
    assert cli.model.config.bias_init == (0.1 if noted else 1.0)
