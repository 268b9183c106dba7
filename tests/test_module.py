"""The LightningModule: the paper's recipe, error metrics, ten-crop testing and ensembles."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_alexnet.model import AlexNetConfig
from lightning_alexnet.module import AlexNetModule, MulticlassError

SIZE = 64  # the tiny preset's smallest comfortable input: maps 15 -> 7 -> 3 -> 1


def tiny_module(**kw) -> AlexNetModule:
    return AlexNetModule(AlexNetConfig.from_name("tiny", num_classes=7, image_size=SIZE), **kw)


def trainer(**kw) -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, **kw)


def reference_errors(probs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Top-1 / top-5 error computed directly from averaged class probabilities."""
    top1 = (probs.argmax(-1) != y).double().mean().item()
    top5 = (~(probs.topk(5, -1).indices == y[:, None]).any(-1)).double().mean().item()
    return top1, top5


def test_error_metric_is_one_minus_accuracy():
    metric = MulticlassError(num_classes=3, top_k=1, average="micro")
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 3.0], [3.0, 0.0, 0.0]])
    metric.update(logits, torch.tensor([0, 1, 0, 2]))
    assert metric.compute().item() == pytest.approx(0.5)


def test_paper_optimiser():
    module = AlexNetModule(AlexNetConfig.from_name("tiny", num_classes=10))
    conf = module.configure_optimizers()
    opt = conf["optimizer"]
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.9, 5e-4)
    sched = conf["lr_scheduler"]
    assert isinstance(sched["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert sched["monitor"] == "val/top1_error" and sched["scheduler"].factor == 0.1


def test_fit_logs_the_paper_metrics():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, SIZE, SIZE), torch.randint(0, 7, (16,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    t = trainer(max_epochs=1)
    t.fit(tiny_module(), loader, loader)
    logged = set(t.callback_metrics)
    assert {"train/loss", "train/top1_error", "train/top5_error", "val/loss", "val/top1_error",
            "val/top5_error"} <= logged
    for k in ("val/top1_error", "val/top5_error"):
        assert 0.0 <= t.callback_metrics[k].item() <= 1.0


def test_ten_crop_and_centre_errors_match_direct_computation():
    torch.manual_seed(0)
    module = tiny_module().eval()
    n = 24
    x, y = torch.randn(n, 10, 3, SIZE, SIZE), torch.randint(0, 7, (n,))
    out = trainer().test(module, DataLoader(TensorDataset(x, y), batch_size=10), verbose=False)[0]

    with torch.no_grad():
        probs = module(x.flatten(0, 1)).softmax(-1).view(n, 10, -1)
    ten = reference_errors(probs.mean(1), y)
    centre = reference_errors(probs[:, 4], y)
    assert out["test/top1_error_10crop"] == pytest.approx(ten[0], abs=1e-6)
    assert out["test/top5_error_10crop"] == pytest.approx(ten[1], abs=1e-6)
    assert out["test/top1_error"] == pytest.approx(centre[0], abs=1e-6)
    assert out["test/top5_error"] == pytest.approx(centre[1], abs=1e-6)
    # the two protocols really differ on this data (so the test can tell them apart)
    assert ten != centre


def test_ensemble_averages_softmax(tmp_path):
    torch.manual_seed(0)
    member = tiny_module()
    path = tmp_path / "member.ckpt"
    torch.save({"state_dict": member.state_dict()}, path)
    torch.manual_seed(1)
    module = tiny_module(ensemble=[str(path)]).eval()
    n = 30
    x, y = torch.randn(n, 3, SIZE, SIZE), torch.randint(0, 7, (n,))
    out = trainer().test(module, DataLoader(TensorDataset(x, y), batch_size=16), verbose=False)[0]
    with torch.no_grad():
        probs = (module(x).softmax(-1) + member.eval()(x).softmax(-1)) / 2
    expected = reference_errors(probs, y)
    assert out["test/top1_error"] == pytest.approx(expected[0], abs=1e-6)
    assert out["test/top5_error"] == pytest.approx(expected[1], abs=1e-6)


def test_ensemble_members_move_with_the_module_but_stay_out_of_its_state_dict(tmp_path):
    path = tmp_path / "member.ckpt"
    torch.save({"state_dict": tiny_module().state_dict()}, path)
    module = tiny_module(ensemble=[str(path)])
    module.setup("test")
    assert len(module.ensemble_models) == 1
    module.to(torch.float64)
    assert module.ensemble_models[0].classifier.fc8.weight.dtype == torch.float64
    state = module.state_dict()
    assert state and not [k for k in state if k.startswith("ensemble_models.")]
    module.load_state_dict(state)  # strict: the members are not missing


def test_ensemble_member_of_another_network_is_named(tmp_path):
    path = tmp_path / "other.ckpt"
    other = AlexNetModule(AlexNetConfig.from_name("tiny", num_classes=5, image_size=SIZE))
    torch.save({"state_dict": other.state_dict()}, path)
    with pytest.raises(ValueError, match="ensemble checkpoint .*other.ckpt.* does not fit this network"):
        tiny_module(ensemble=[str(path)]).setup("test")


def test_ensemble_missing_checkpoint_is_named(tmp_path):
    module = tiny_module(ensemble=[str(tmp_path / "nope.ckpt")])
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        module.setup("test")


def test_an_empty_batch_with_several_processes_steps_with_zero_gradients():
    """With several processes Lightning cannot skip one process's step: the empty batch's loss
    is 0 and reaches every parameter, so the gradient all-reduce gets a (zero) gradient for
    each; with one process the step is skipped (None)."""
    from types import SimpleNamespace

    module = AlexNetModule(AlexNetConfig.from_name("tiny", num_classes=4, image_size=64))
    empty = (torch.zeros(0, 3, 64, 64), torch.zeros(0, dtype=torch.long))
    module._trainer = SimpleNamespace(world_size=1)
    assert module.training_step(empty, 0) is None
    module._trainer = SimpleNamespace(world_size=2)
    module.log_dict = lambda *args, **kwargs: None  # (what it logs: the next test)
    with torch.no_grad():
        next(module.parameters()).fill_(float("inf"))  # 0 * inf: the gradient stays 0
    loss = module.training_step(empty, 0)
    loss.backward()
    params = list(module.parameters())
    assert loss.ndim == 0 and len(params) == 16
    assert all(p.grad is not None and not p.grad.any() for p in params)


def test_an_empty_batch_with_several_processes_logs_what_a_batch_logs_with_no_weight():
    """So that every process takes part in the epoch-end syncs of val/loss, test/loss and the
    metrics (a process that never logged them would leave the others waiting)."""
    from types import SimpleNamespace

    module = AlexNetModule(AlexNetConfig.from_name("tiny", num_classes=4, image_size=64))
    logged = []
    module.log = lambda name, value, **kw: logged.append((name, float(value), kw))
    module.log_dict = lambda metrics, **kw: logged.append((sorted(metrics.keys()), kw))
    no_target = torch.zeros(0, dtype=torch.long)
    for world, expected in ((1, 0), (2, 1)):
        module._trainer = SimpleNamespace(world_size=world)
        logged.clear()
        module.validation_step((torch.zeros(0, 3, 64, 64), no_target), 0)
        assert len(logged) == 2 * expected
    assert logged[0] == ("val/loss", 0.0, {"sync_dist": True, "batch_size": 0})
    assert logged[1] == (sorted(module.val_metrics.keys()), {"prog_bar": True})
    logged.clear()
    module.test_step((torch.zeros(0, 10, 3, 64, 64), no_target), 0)  # ten crops
    assert [entry[0] for entry in logged] == [sorted(module.test_metrics_10crop.keys()),
                                              "test/loss", sorted(module.test_metrics.keys())]
    logged.clear()
    assert module.training_step((torch.zeros(0, 3, 64, 64), no_target), 0) is not None
    assert logged == [(sorted(module.train_metrics.keys()), {"on_step": False, "on_epoch": True})]
