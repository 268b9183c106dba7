"""The network's whole configuration reaches the module (issue 11): ``AlexNetModule`` takes one
``AlexNetConfig``, every field is ``--model.network.<field>`` on the command line, the preset
files hold the presets, and checkpoints carry the config (and older ones are refused, named)."""

import dataclasses
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from conftest import run_cli as run
from test_cli import COMMON, make_tree
from torch.utils.data import DataLoader, TensorDataset

from lightning_alexnet.cli import CONFIG_DIR, main
from lightning_alexnet.model import AlexNet, AlexNetConfig
from lightning_alexnet.module import AlexNetModule
from lightning_alexnet.predict import load_module

SIZE = 64
FROM_DATA = {"num_classes", "image_size"}  # linked from the data on the command line

# every field unlike the tiny preset's (lrn stays on, so that its constants matter)
NETWORK = {"conv_channels": [48, 128, 192, 192, 128], "fc_features": [512, 512], "towers": 1,
           "lrn": True, "lrn_size": 3, "lrn_alpha": 1e-4, "lrn_beta": 0.5, "lrn_k": 1.5,
           "dropout": 0.1, "init": "paper", "weight_std": 0.02, "bias_init": 0.5}
FLAGS = [a for k, v in NETWORK.items()
         for a in (f"--model.network.{k}", str(v).lower() if isinstance(v, bool) else str(v))]
ONE_STEP = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
            "--trainer.limit_val_batches", "1"]




def expected(num_classes: int = 3) -> AlexNetConfig:
    return AlexNetConfig(num_classes=num_classes, image_size=SIZE, **NETWORK)


# --- the preset files ------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_preset_file_holds_the_presets_network(preset):
    network = yaml.safe_load((CONFIG_DIR / f"{preset}.yaml").read_text())["model"]["network"]
    fields = {f.name for f in dataclasses.fields(AlexNetConfig)}
    assert set(network) == fields - FROM_DATA  # every field written out, the data's left out
    from_file = dataclasses.asdict(AlexNetConfig(**network))
    from_name = dataclasses.asdict(AlexNetConfig.from_name(preset))
    for key in FROM_DATA:
        del from_file[key], from_name[key]
    assert from_file == from_name


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_preset_name_fills_model_network(preset, tmp_path, capsys):
    code, out, _ = run(capsys, "fit", "--config", preset, "--print_config")
    network = yaml.safe_load(out)["model"]["network"]
    assert code == 0
    preset_fields = dataclasses.asdict(AlexNetConfig.from_name(preset))
    assert network == {k: list(v) if isinstance(v, tuple) else v
                       for k, v in preset_fields.items() if k not in FROM_DATA}


def test_readme_one_tower_without_lrn_flags(capsys):
    code, out, _ = run(capsys, "fit", "--config", "paper", "--data.root", "DIR",
                       "--model.network.towers", "1", "--model.network.lrn", "false",
                       "--print_config")
    network = yaml.safe_load(out)["model"]["network"]
    assert code == 0
    assert (network["towers"], network["lrn"], network["conv_channels"]) == (
        1, False, [96, 256, 384, 384, 256])


# --- every field from the command line, into the model and its checkpoint --------------------


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    """One short fit of the tiny config with every network field changed by a flag:
    (data root, best checkpoint, the fit's module, its weights at the start of fit)."""
    work = tmp_path_factory.mktemp("custom")
    root = make_tree(work / "data")
    at_start = {}
    original = AlexNetModule.on_fit_start

    def record(self):
        at_start.update({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        original(self)

    AlexNetModule.on_fit_start = record
    cwd = os.getcwd()
    os.chdir(work)
    try:
        cli = main(["fit", *COMMON, "--data.root", str(root), *ONE_STEP, *FLAGS])
    finally:
        os.chdir(cwd)
        AlexNetModule.on_fit_start = original
    best = Path(work, cli.trainer.checkpoint_callback.best_model_path)
    return root, best, cli.model, at_start


def test_every_field_reaches_the_model(custom_run):
    _, _, module, at_start = custom_run
    assert module.config == expected()
    f, c = module.model.features, module.model.classifier
    assert [getattr(f, f"conv{i}").out_channels for i in range(1, 6)] == NETWORK["conv_channels"]
    assert f.conv2.groups == f.conv4.groups == 1  # one tower
    assert (c.fc6.out_features, c.fc7.out_features, c.fc8.out_features) == (512, 512, 3)
    lrn = f.norm_pool1
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k, lrn.groups) == (3, 1e-4, 0.5, 1.5, 1)
    assert c.drop6.p == c.drop7.p == 0.1
    # paper init with weight_std 0.02 (tiny's is He's: std sqrt(2 / fan_in) = 0.074 for conv1)
    assert abs(at_start["features.conv1.weight"].std().item() - 0.02) < 0.002
    assert torch.all(at_start["features.conv2.bias"] == 0.5)
    assert torch.all(at_start["features.conv3.bias"] == 0.0)


def test_checkpoint_carries_every_field(custom_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root, best, _, _ = custom_run
    hparams = torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert AlexNetConfig(**hparams["network"]) == expected()
    assert AlexNetModule.load_from_checkpoint(best, map_location="cpu").config == expected()
    assert load_module(str(best)).config == expected()  # predict's and show's loader
    # validate without any network option: the checkpoint's network, weights loaded
    cli = main(["validate", "--data.root", str(root), "--ckpt_path", str(best),
                "--data.num_workers", "0", "--trainer.accelerator", "cpu",
                "--trainer.enable_progress_bar", "false", "--trainer.logger", "false"])
    assert cli.model.config == expected()
    assert 0.0 <= cli.trainer.callback_metrics["val/top1_error"].item() <= 1.0


def test_print_config_shows_every_field(tmp_path, capsys):
    code, out, _ = run(capsys, "fit", *COMMON, "--data.root", str(tmp_path), *FLAGS,
                       "--print_config")
    assert code == 0 and yaml.safe_load(out)["model"]["network"] == NETWORK


def test_print_config_with_checkpoint_shows_its_network(custom_run, capsys):
    root, best, _, _ = custom_run
    code, out, _ = run(capsys, "validate", "--data.root", str(root), "--ckpt_path", str(best),
                       "--print_config")
    network = yaml.safe_load(out)["model"]["network"]
    assert code == 0 and {k: network[k] for k in NETWORK} == NETWORK


def test_network_options_contradicting_the_checkpoint_are_one_error(custom_run, capsys):
    root, best, _, _ = custom_run
    code, _, err = run(capsys, "validate", "--data.root", str(root), "--ckpt_path", str(best),
                    "--model.network.lrn_alpha", "5e-4", "--model.network.fc_features", "[512,256]")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert "--model.network.lrn_alpha 0.0005 asked, the checkpoint has 0.0001" in err
    assert "--model.network.fc_features [512, 256] asked, the checkpoint has [512, 512]" in err
    # the tiny preset file's network counts as asked too: each differing field is named
    code, _, err = run(capsys, "validate", *COMMON, "--data.root", str(root),
                       "--ckpt_path", str(best))
    assert code == 2 and "--model.network.towers 2 asked, the checkpoint has 1" in err
    assert "--model.network.init kaiming asked, the checkpoint has paper" in err


def test_given_dropout_and_agreeing_fields_take_effect(custom_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root, best, _, _ = custom_run
    cli = main(["validate", "--data.root", str(root), "--ckpt_path", str(best), *FLAGS,
                "--model.network.dropout", "0.3", "--data.num_workers", "0",
                "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                "--trainer.logger", "false"])
    assert cli.model.config == dataclasses.replace(expected(), dropout=0.3)
    assert cli.model.model.classifier.drop6.p == 0.3


# --- checkpoints from before --model.network --------------------------------------------------


@pytest.fixture(scope="module")
def legacy(custom_run, tmp_path_factory):
    """The custom run's checkpoint with hyperparameters as they were saved before the change."""
    _, best, _, _ = custom_run
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    hp = ckpt["hyper_parameters"]
    ckpt["hyper_parameters"] = {
        "preset": "tiny", "num_classes": 3, "towers": 1, "lrn": None, "bias_init": None,
        "dropout": None, "image_size": SIZE, "kernels": "auto", "lr": hp["lr"],
        "momentum": hp["momentum"], "weight_decay": hp["weight_decay"],
        "lr_factor": hp["lr_factor"], "lr_patience": hp["lr_patience"], "ensemble": None,
        "_instantiator": "pytorch_lightning.cli.instantiate_module"}
    path = tmp_path_factory.mktemp("legacy") / "old.ckpt"
    torch.save(ckpt, path)
    bare = path.with_name("old_python.ckpt")  # as a module built in Python saved it
    ckpt["hyper_parameters"].pop("_instantiator")
    torch.save(ckpt, bare)
    return path, bare


OLDER = "was written by an older lightning_alexnet"


def test_legacy_checkpoint_is_refused_by_the_cli(custom_run, legacy, capsys):
    root, _, _, _ = custom_run
    code, _, err = run(capsys, "validate", "--data.root", str(root), "--ckpt_path", str(legacy[0]))
    assert code == 2 and OLDER in err and "train it again" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2


@pytest.mark.parametrize("which", [0, 1])
def test_legacy_checkpoint_is_refused_by_predict(custom_run, legacy, capsys, which):
    root, _, _, _ = custom_run
    with pytest.raises(SystemExit) as e:
        main(["predict", "--data.num_workers", "0", "--trainer.accelerator", "cpu",
              "--ckpt_path", str(legacy[which]), "--data.predict_root", str(root / "val")])
    assert OLDER in str(e.value) and "train it again" in str(e.value)


def test_legacy_checkpoint_is_refused_when_loaded_from_python(legacy):
    with pytest.raises(ValueError, match=OLDER):
        AlexNetModule.load_from_checkpoint(legacy[1], map_location="cpu")


def test_legacy_ensemble_member_is_refused(legacy):
    module = AlexNetModule(AlexNetConfig(num_classes=3, image_size=SIZE, **NETWORK),
                           ensemble=[str(legacy[0])])
    with pytest.raises(ValueError, match=f"ensemble checkpoint .*old.ckpt.* {OLDER}"):
        module.setup("test")


# --- from Python ----------------------------------------------------------------------------


def test_python_built_module_checkpoint_loads_with_weights_only(tmp_path):
    config = AlexNetConfig.from_name("tiny", num_classes=7, image_size=SIZE, lrn_alpha=1e-4)
    module = AlexNetModule(config)
    x, y = torch.randn(8, 3, SIZE, SIZE), torch.randint(0, 7, (8,))
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    trainer.fit(module, loader, loader)
    path = tmp_path / "python.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert saved["network"]["lrn_alpha"] == 1e-4
    loaded = AlexNetModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert loaded.config == module.config == config.resolved()
    fc8 = loaded.model.classifier.fc8.weight
    torch.testing.assert_close(fc8, module.model.classifier.fc8.weight)


def member_checkpoint(path: Path, config: AlexNetConfig) -> str:
    member = AlexNetModule(config)
    torch.save({"state_dict": member.state_dict(), "hyper_parameters": dict(member.hparams)}, path)
    return str(path)


def test_ensemble_member_is_built_from_its_own_network(tmp_path):
    tiny = AlexNetConfig.from_name("tiny", num_classes=7, image_size=SIZE)
    path = member_checkpoint(tmp_path / "m.ckpt", dataclasses.replace(tiny, lrn_alpha=1e-4))
    module = AlexNetModule(tiny, ensemble=[path])
    module.setup("test")
    assert module.model.features.norm_pool1.alpha == 5e-4
    assert module.ensemble_models[0].features.norm_pool1.alpha == 1e-4


def test_ensemble_member_of_other_classes_is_named(tmp_path):
    tiny = AlexNetConfig.from_name("tiny", num_classes=7, image_size=SIZE)
    path = member_checkpoint(tmp_path / "five.ckpt", dataclasses.replace(tiny, num_classes=5))
    with pytest.raises(ValueError, match="five.ckpt.* does not fit this network: its "
                                         "num_classes is 5, this network's 7"):
        AlexNetModule(tiny, ensemble=[path]).setup("test")


def test_module_takes_a_mapping_of_the_fields():
    config = AlexNetConfig.from_name("tiny", num_classes=7, image_size=SIZE)
    fields = dataclasses.asdict(config)
    fields["conv_channels"] = list(fields["conv_channels"])  # as YAML and JSON give them
    assert AlexNetModule(fields).config == config
    with pytest.raises(ValueError, match=r"conv_channels must have 5 values, got \[1, 2\]"):
        AlexNetModule({**fields, "conv_channels": [1, 2]})


def test_bias_init_none_is_the_paper_rule_for_the_network_too():
    paper = AlexNetConfig.from_name("paper", image_size=SIZE)
    assert paper.bias_init is None
    assert dataclasses.replace(paper, num_classes=1000).resolved().bias_init == 1.0
    assert dataclasses.replace(paper, num_classes=999).resolved().bias_init == 0.1
    assert dataclasses.replace(paper, num_classes=10, bias_init=1.0).resolved().bias_init == 1.0
    net = AlexNet(dataclasses.replace(paper, num_classes=10))  # AlexNet alone follows it too
    assert torch.all(net.classifier.fc6.bias == 0.1) and torch.all(net.classifier.fc8.bias == 0)
