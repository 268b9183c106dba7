"""The network against the paper's numbers (DESIGN section 3)."""

import pytest
import torch
from torch import nn

from lightning_alexnet import AlexNet, AlexNetConfig


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("towers, expected", [(2, 60_965_224), (1, 62_378_344)])
def test_paper_parameter_count(towers, expected):
    assert n_params(AlexNet(AlexNetConfig.from_name("paper", towers=towers))) == expected


def test_paper_layer_shapes_and_neurons():
    model = AlexNet(AlexNetConfig.from_name("paper")).eval()
    x = torch.randn(1, 3, 224, 224)
    shapes = {}
    with torch.no_grad():
        for name, layer in model.features.named_children():
            x = layer(x)
            shapes[name] = tuple(x.shape[1:])
        logits = model.classifier(torch.flatten(x, 1))
    assert shapes == {
        "conv1": (96, 55, 55),
        "norm_pool1": (96, 27, 27),
        "conv2": (256, 27, 27),
        "norm_pool2": (256, 13, 13),
        "conv3": (384, 13, 13),
        "conv4": (384, 13, 13),
        "conv5": (256, 13, 13),
        "pool5": (256, 6, 6),
    }
    assert logits.shape == (1, 1000)
    # the paper's neuron counts for conv2..conv5 (conv1's 253,440 is a misprint of 290,400)
    neurons = [c * h * w for c, h, w in (shapes[k] for k in ("conv1", "conv2", "conv3", "conv4", "conv5"))]
    assert neurons == [290_400, 186_624, 64_896, 64_896, 43_264]


def test_two_towers_are_grouped_where_the_paper_splits():
    model = AlexNet(AlexNetConfig.from_name("paper"))
    f = model.features
    assert [f.conv1.groups, f.conv2.groups, f.conv3.groups, f.conv4.groups, f.conv5.groups] == [1, 2, 1, 2, 2]
    assert f.conv2.weight.shape == (256, 48, 5, 5)  # each tower sees only its own 48 maps
    assert f.conv3.weight.shape == (384, 256, 3, 3)  # conv3 crosses towers
    assert f.norm_pool1.groups == 2 and f.norm_pool2.groups == 2


def test_tower_independence():
    """Perturbing tower A's conv1 maps must not change tower B's conv2 output."""
    model = AlexNet(AlexNetConfig.from_name("tiny")).eval()
    f = model.features
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        h = f.norm_pool1(f.conv1(x))
        half = h.shape[1] // 2
        h2 = h.clone()
        h2[:, :half] += torch.randn_like(h2[:, :half])
        out, out2 = f.conv2(h), f.conv2(h2)
    c2 = out.shape[1] // 2
    assert torch.equal(out[:, c2:], out2[:, c2:])
    assert not torch.equal(out[:, :c2], out2[:, :c2])


def test_paper_initialisation():
    torch.manual_seed(0)
    model = AlexNet(AlexNetConfig.from_name("paper"))
    layers = {**dict(model.features.named_children()), **dict(model.classifier.named_children())}
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        w, b = layers[name].weight, layers[name].bias
        assert abs(w.std().item() - 0.01) < 0.001, name
        assert abs(w.mean().item()) < 0.001, name
        expected_bias = 1.0 if name in {"conv2", "conv4", "conv5", "fc6", "fc7"} else 0.0
        assert torch.all(b == expected_bias), name
    caffe = AlexNet(AlexNetConfig.from_name("paper", bias_init=0.1))
    assert torch.all(caffe.features.conv2.bias == 0.1)


def test_lrn_constants_follow_the_paper():
    cfg = AlexNetConfig.from_name("paper")
    # torch divides alpha by the size; the paper's alpha = 1e-4 is written without the division
    assert (cfg.lrn_size, cfg.lrn_alpha / cfg.lrn_size, cfg.lrn_beta, cfg.lrn_k) == (5, 1e-4, 0.75, 2.0)


def test_dropout_after_fc6_and_fc7():
    model = AlexNet(AlexNetConfig.from_name("paper"))
    names = [n for n, _ in model.classifier.named_children()]
    assert names == ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
    assert model.classifier.drop6.p == 0.5 and model.classifier.drop7.p == 0.5


def test_no_lrn_option_uses_plain_pooling():
    model = AlexNet(AlexNetConfig.from_name("tiny", lrn=False))
    assert type(model.features.norm_pool1).__name__ == "MaxPool2d"


def test_presets_and_overrides():
    cfg = AlexNetConfig.from_name("paper", towers=1, num_classes=10)
    assert (cfg.towers, cfg.num_classes, cfg.conv_channels) == (1, 10, (96, 256, 384, 384, 256))
    with pytest.raises(ValueError, match="unknown preset 'resnet'"):
        AlexNetConfig.from_name("resnet")
    with pytest.raises(ValueError, match="unknown AlexNetConfig field"):
        AlexNetConfig.from_name("paper", widht=3)
    with pytest.raises(ValueError, match="towers must be 1 or 2, got 3"):
        AlexNetConfig.from_name("paper", towers=3)
    with pytest.raises(ValueError, match="image_size=32 is too small"):
        AlexNetConfig.from_name("tiny", image_size=32)


def test_forward_rejects_wrong_shape():
    model = AlexNet(AlexNetConfig.from_name("tiny"))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, 224, 224\), got \(2, 3, 200, 200\)"):
        model(torch.randn(2, 3, 200, 200))
    with pytest.raises(ValueError, match="kernels must be 'auto', 'triton' or 'eager', got 'cuda'"):
        model.set_kernels("cuda")


@pytest.mark.parametrize("image_size", [224, 128])
def test_tiny_preset_forward(image_size):
    model = AlexNet(AlexNetConfig.from_name("tiny", image_size=image_size))
    assert model(torch.randn(3, 3, image_size, image_size)).shape == (3, 10)
