"""The layout the network runs in: channels_last on CUDA (weights and activations, end to end),
PyTorch's default NCHW elsewhere. What a CPU can check: the decision given a device, that each
piece honours it, and that both layouts give the same numbers."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightning_alexnet import AlexNet, AlexNetConfig
from lightning_alexnet import model as model_lib
from lightning_alexnet.module import AlexNetModule
from lightning_alexnet.transform import FloatTransform, RawBatch

CL = torch.channels_last


def conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dim() == 4]


@pytest.mark.parametrize("device, expected", [("cuda", True), (torch.device("cuda", 1), True),
                                              ("cpu", False), ("meta", False)])
def test_channels_last_only_on_cuda(device, expected):
    assert model_lib.channels_last_on(device) is expected


def test_to_layout_of_a_cuda_device_makes_every_conv_weight_channels_last():
    model = AlexNet(AlexNetConfig.from_name("tiny"))
    assert all(not w.is_contiguous(memory_format=CL) for w in conv_weights(model))
    model.to_layout_of("cpu")  # CPU: unchanged
    assert all(w.is_contiguous() and not w.is_contiguous(memory_format=CL)
               for w in conv_weights(model))
    params = list(model.parameters())
    model.to_layout_of(torch.device("cuda"))  # the decision alone; no GPU needed to convert
    assert len(conv_weights(model)) == 5
    assert all(w.is_contiguous(memory_format=CL) for w in conv_weights(model))
    assert all(a is b for a, b in zip(params, model.parameters()))  # same Parameters: optimisers


def test_the_module_takes_the_layout_of_the_trainer_device():
    module = AlexNetModule(AlexNetConfig.from_name("tiny", num_classes=10), kernels="eager")
    module.setup("fit")  # no Trainer, on the CPU: unchanged
    assert all(not w.is_contiguous(memory_format=CL) for w in conv_weights(module.model))
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda")))
    module.setup("fit")
    assert all(w.is_contiguous(memory_format=CL) for w in conv_weights(module.model))


def layouts_seen(model: AlexNet, x: torch.Tensor) -> list[bool]:
    """Whether each feature layer's input was channels_last (and not also NCHW-contiguous)."""
    seen = []
    hooks = [m.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=CL)
                                    and not args[0].is_contiguous()))
        for m in model.features]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def test_the_forward_runs_channels_last_end_to_end_where_chosen(monkeypatch):
    # eager ops as on CUDA (cuDNN keeps the layout; so do the Triton kernels, whose outputs take
    # the input's). ``auto``'s CPU LRN path is CPU-only and NCHW.
    model = AlexNet(AlexNetConfig.from_name("tiny"), kernels="eager").eval()
    x = torch.randn(2, 3, 224, 224)
    assert not any(layouts_seen(model, x))  # CPU: NCHW throughout, as before
    # pretend this CPU is a CUDA device: the input is converted, every layer keeps the layout
    monkeypatch.setattr(model_lib, "channels_last_on", lambda device: True)
    assert all(layouts_seen(model.to_layout_of("cpu"), x))


@pytest.mark.parametrize("kernels", ["eager", "auto"])
def test_both_layouts_give_the_same_logits_and_gradients(kernels):
    torch.manual_seed(0)
    nchw = AlexNet(AlexNetConfig.from_name("tiny"), kernels=kernels).double().eval()
    cl = AlexNet(AlexNetConfig.from_name("tiny"), kernels=kernels).double().eval()
    cl.load_state_dict(nchw.state_dict())
    cl.to(memory_format=CL)
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    out_nchw, out_cl = nchw(x), cl(x.contiguous(memory_format=CL))
    torch.testing.assert_close(out_cl, out_nchw, rtol=1e-10, atol=1e-12)
    out_nchw.square().sum().backward()
    out_cl.square().sum().backward()
    for (name, a), b in zip(nchw.named_parameters(), cl.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12, msg=name)


def raw_batch(n=6, s=20, c=16, k=4, seed=0) -> tuple[FloatTransform, RawBatch]:
    g = torch.Generator().manual_seed(seed)
    mean = np.random.default_rng(seed).uniform(0, 255, (s, s, 3))
    basis = np.random.default_rng(seed + 1).normal(0, 5, (3, 3))
    pixels = torch.randint(0, 256, (n, c, c, k), dtype=torch.uint8, generator=g)
    params = torch.zeros(n, 6)
    params[:, 0] = torch.randint(0, s - c + 1, (n,), generator=g)
    params[:, 1] = torch.randint(0, s - c + 1, (n,), generator=g)
    params[:, 2] = torch.arange(n) % 2  # flipped and not
    params[:, 3:] = torch.randn(n, 3, generator=g) * 0.1
    return (mean, basis, c), RawBatch(pixels, torch.arange(n), params, False)


@pytest.mark.parametrize("gather", [True, False])
@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_float_transform_emits_channels_last_with_the_same_values(gather, scale):
    (mean, basis, c), batch = raw_batch()
    auto = FloatTransform(mean, basis, c, scale)  # on the CPU: NCHW, as before
    forced = FloatTransform(mean, basis, c, scale, channels_last=True)
    off = FloatTransform(mean, basis, c, scale, channels_last=False)
    ref = auto.finish_crops(batch.pixels, batch.params, gather=gather)
    x = forced.finish_crops(batch.pixels, batch.params, gather=gather)
    assert ref.is_contiguous() and not ref.is_contiguous(memory_format=CL)
    assert x.is_contiguous(memory_format=CL) and not x.is_contiguous()
    assert torch.equal(x, ref)  # same arithmetic per element: bit for bit
    assert torch.equal(off.finish_crops(batch.pixels, batch.params, gather=gather), ref)
    y, target = forced(batch)  # the __call__ that on_after_batch_transfer runs
    assert y.is_contiguous(memory_format=CL) and torch.equal(target, batch.target)


def test_float_transform_decides_by_the_batch_device(monkeypatch):
    (mean, basis, c), batch = raw_batch()
    monkeypatch.setattr("lightning_alexnet.transform.channels_last_on", lambda device: True)
    x, _ = FloatTransform(mean, basis, c)(batch)  # as on CUDA
    assert x.is_contiguous(memory_format=CL) and not x.is_contiguous()
