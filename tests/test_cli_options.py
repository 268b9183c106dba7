"""The command line does what it says (issue 14): options that win over a checkpoint's, user
errors in one or two lines, outputs where the user asked and nowhere else."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli as run
from test_cli import COMMON, make_tree

from lightning_alexnet.cli import main


def infos(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two one-epoch fits (seeds 0 and 1) under --trainer.default_root_dir D --name NAME."""
    work = tmp_path_factory.mktemp("work")
    root = make_tree(work / "data")
    out = work / "out"
    cwd = os.getcwd()
    os.chdir(work)
    try:
        clis = [main(["fit", *COMMON, "--data.root", str(root), "--trainer.max_epochs", "1",
                      "--seed_everything", str(seed), "--trainer.default_root_dir", str(out),
                      "--name", f"seed{seed}"]) for seed in (0, 1)]
    finally:
        os.chdir(cwd)
    ckpts = [Path(c.trainer.checkpoint_callback.best_model_path) for c in clis]
    return work, root, out, ckpts


def test_fit_writes_under_default_root_dir_and_name(runs):
    work, _, out, (a, b) = runs
    assert not (work / "runs").exists()  # nothing under ./runs
    run0 = out / "seed0" / "version_0"
    assert a.parent == run0 / "checkpoints" and a.exists()
    for f in ("checkpoints/last.ckpt", "metrics.csv", "config.yaml"):
        assert (run0 / f).is_file(), f
    assert b.parent == out / "seed1" / "version_0" / "checkpoints"


def test_fit_final_line_says_where_outputs_went(tmp_path, monkeypatch, caplog):
    root = make_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        main(["fit", *COMMON, "--data.root", str(root), "--trainer.max_epochs", "1",
              "--trainer.limit_train_batches", "1"])
    lines = infos(caplog)
    assert next(m for m in lines if m.startswith("fit:")).startswith("fit: one cpu device")
    assert lines[-1] == ("fit done: outputs went to runs/lightning_logs/version_0 "
                         "(checkpoints/, metrics.csv, config.yaml)")
    assert (tmp_path / "runs/lightning_logs/version_0/checkpoints/last.ckpt").is_file()


def test_validate_and_test_log_into_the_evaluated_run(runs, tmp_path, monkeypatch, caplog):
    _, root, out, (a, _) = runs
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        main(["validate", *COMMON, "--data.root", str(root), "--ckpt_path", str(a)])
        main(["test", *COMMON, "--data.root", str(root), "--ckpt_path", str(a)])
    run0 = a.parent.parent
    assert (run0 / "validate/version_0/metrics.csv").is_file()
    assert (run0 / "test/version_0/metrics.csv").is_file()
    assert sorted(p.name for p in (out / "seed0").iterdir()) == ["version_0"]  # no new version
    assert list(tmp_path.iterdir()) == []  # nothing in the working folder
    assert infos(caplog)[-1] == f"test done: outputs went to {run0.resolve()}/test/version_0 (metrics.csv, config.yaml)"
    assert f"no test/ folder in {root}: test evaluates on val/ (9 images)" in infos(caplog)


def test_evaluation_without_checkpoint_writes_nothing(tmp_path, monkeypatch, caplog):
    root = make_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        main(["validate", *COMMON, "--data.root", str(root)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    assert infos(caplog)[-1].startswith("validate done: no files are written")


def test_ensemble_given_with_ckpt_path_really_averages(runs, capsys):
    _, root, _, (a, b) = runs
    args = ["test", *COMMON, "--data.root", str(root), "--ckpt_path", str(a),
            "--data.ten_crop_test", "false", "--trainer.logger", "false"]
    alone = main(args).trainer.callback_metrics["test/loss"].item()
    cli = main([*args, "--model.ensemble", f"[{a}]"])  # A with itself: A's probabilities
    assert len(cli.model.ensemble_models) == 1
    assert cli.trainer.callback_metrics["test/loss"].item() == pytest.approx(alone, rel=1e-5)
    pair = main([*args, "--model.ensemble", f"[{b}]"]).trainer.callback_metrics["test/loss"].item()
    pb = torch.load(b, weights_only=True)["state_dict"]["model.classifier.fc8.weight"]
    pa = torch.load(a, weights_only=True)["state_dict"]["model.classifier.fc8.weight"]
    assert not torch.equal(pa, pb) and pair != pytest.approx(alone, rel=1e-4)


def test_recipe_options_take_effect_when_resuming(runs, tmp_path, monkeypatch, caplog):
    _, root, _, (a, _) = runs
    last = a.parent / "last.ckpt"
    common = ["fit", *COMMON, "--data.root", str(root), "--trainer.max_epochs", "2",
              "--trainer.limit_train_batches", "1", "--trainer.default_root_dir", str(tmp_path),
              "--ckpt_path", str(last)]
    with caplog.at_level("INFO"):
        cli = main([*common, "--model.lr", "0.05", "--model.kernels", "eager"])
    assert cli.model.hparams.lr == 0.05 and cli.model.model.kernels == "eager"
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.05
    assert "resuming with lr=0.05 (checkpoint: 0.01)" in infos(caplog)
    cli = main(common)  # not given: the checkpoint's optimizer state
    assert cli.trainer.optimizers[0].param_groups[0]["lr"] == 0.01


def test_print_config_shows_the_checkpoint_network(runs, capsys):
    _, root, _, (a, _) = runs
    code, out, _ = run(capsys, "validate", "--data.root", str(root), "--ckpt_path", str(a),
                       "--model.kernels", "eager", "--print_config")
    assert code == 0
    assert yaml.safe_load(out)["model"]["network"]["conv_channels"] == [32, 64, 96, 96, 64]
    assert "crop_size: 64" in out and "kernels: eager" in out


@pytest.mark.parametrize("extra, says", [
    (["--model.network.towers", "1"], "--model.network.towers 1 asked, the checkpoint has 2"),
    (["--model.network.conv_channels", "[96,256,384,384,256]"],
     ("--model.network.conv_channels [96, 256, 384, 384, 256] asked, the checkpoint has "
      "[32, 64, 96, 96, 64]")),
    (["--data.crop_size", "96", "--data.resize_size", "100"],
     "crop size 96 asked (--data.crop_size), the checkpoint was trained on 64-pixel crops"),
    (["--model.ensemble", "[missing.ckpt]"], "ensemble checkpoint missing.ckpt does not exist"),
])
def test_options_contradicting_the_checkpoint_are_errors(runs, capsys, extra, says):
    _, root, _, (a, _) = runs
    code, _, err = run(capsys, "test", *COMMON, "--data.root", str(root), "--ckpt_path", str(a), *extra)
    assert code == 2 and says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2


def test_checkpoint_of_other_classes_is_an_error(runs, tmp_path, capsys):
    _, _, _, (a, _) = runs
    other = make_tree(tmp_path / "other", classes=("a", "b", "c", "d"))
    code, _, err = run(capsys, "validate", *COMMON, "--data.root", str(other), "--ckpt_path", str(a))
    assert code == 2 and "trained on 3 classes" in err and "has 4" in err


def _bad_roots(tmp: Path) -> dict:
    (tmp / "empty").mkdir()
    (tmp / "notrain/val/a").mkdir(parents=True)
    extra = make_tree(tmp / "extra")
    shutil.copytree(extra / "val/disc", extra / "val/zebra")
    return {"missing": (tmp / "nope", "data root"), "empty": (tmp / "empty", "train does not exist"),
            "notrain": (tmp / "notrain", "train does not exist"),
            "extra": (extra, "class 'zebra' of")}


@pytest.mark.parametrize("case", ["missing", "empty", "notrain", "extra"])
def test_bad_data_root_is_one_error(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    root, says = _bad_roots(tmp_path)[case]
    code, _, err = run(capsys, "fit", *COMMON, "--data.root", str(root))
    assert code == 2, err
    assert err.startswith("error: ") and says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, says", [
    (["fit", "--config", "tinyy"], "--config tinyy: no such file and no preset of that name; presets: paper, tiny"),
    (["fit", "--config", "tiny", "--model.lrr", "0.1"], "--model.lrr 0.1 (did you mean --model.lr?)"),
    (["validate", "--config", "tiny", "--ckpt_path", "missing.ckpt"], "checkpoint missing.ckpt does not exist"),
])
def test_user_errors_print_two_lines(tmp_path, monkeypatch, capsys, args, says):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *args)
    assert code == 2 and says in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2 and "--help" in err.splitlines()[1]
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_ALEXNET_DEBUG", "0")  # restored after: --debug sets it to 1
    with pytest.raises(FileNotFoundError, match="data root"):
        main(["fit", *COMMON, "--data.root", str(tmp_path / "nope"), "--debug"])


def test_triton_kernels_on_cpu_fail_before_data_setup(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    root = make_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        code, _, err = run(capsys, "fit", *COMMON, "--data.root", str(root), "--model.kernels",
                           "triton", "--trainer.devices", "2")
    assert code == 2 and "kernels='triton' on the CPU needs Triton's interpreter" in err
    assert not (root / ".lightning_alexnet").exists()  # no statistics computed
    assert any(m.startswith("fit: data parallel (ddp) over 2 devices") for m in infos(caplog))


def test_a_bad_unverified_setting_stops_a_triton_run_before_data_setup(tmp_path):
    root = make_tree(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "TRITON_INTERPRET": "1",
           "LIGHTNING_ALEXNET_UNVERIFIED": "yes"}
    proc = subprocess.run([sys.executable, "-m", "lightning_alexnet", "fit", *COMMON,
                           "--data.root", str(root), "--model.kernels", "triton"],
                          capture_output=True, text=True, cwd=tmp_path, check=False, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: LIGHTNING_ALEXNET_UNVERIFIED='yes': set it to 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (root / ".lightning_alexnet").exists()  # no statistics computed


def test_user_error_exit_code_from_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lightning_alexnet", "validate", "--config", "tiny",
                           "--data.root", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=tmp_path, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 2
    assert "error: data root" in proc.stderr and "Traceback" not in proc.stderr


def test_fit_without_logger_says_where_checkpoints_went(tmp_path, monkeypatch, caplog):
    root = make_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        main(["fit", *COMMON, "--data.root", str(root), "--trainer.logger", "false",
              "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
              "--trainer.default_root_dir", "out"])
    assert infos(caplog)[-1] == "fit done: checkpoints went to out/checkpoints (no logger: no metrics.csv)"
    assert (tmp_path / "out/checkpoints/last.ckpt").is_file()


def test_every_n_train_steps_writes_mid_epoch_last_checkpoint(tmp_path, monkeypatch):
    from lightning_alexnet.cli import Checkpoint

    saved = []
    original = Checkpoint._save_last_checkpoint

    def record(self, trainer, candidates):
        saved.append(trainer.global_step)
        original(self, trainer, candidates)

    monkeypatch.setattr(Checkpoint, "_save_last_checkpoint", record)
    root = make_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", *COMMON, "--data.root", str(root), "--trainer.max_epochs", "1",
                "--checkpoint.every_n_train_steps", "1"])
    assert saved[:2] == [1, 2]  # mid-epoch (3 steps per epoch), then at each step and epoch end
    assert Path(cli.trainer.checkpoint_callback.best_model_path).name.startswith("epoch000-top1err")


def test_prepare_reads_only_the_data_section_of_a_config(tmp_path, capsys, caplog):
    root = make_tree(tmp_path / "data")
    config = tmp_path / "run.yaml"  # every section fit takes; prepare reads data: only
    config.write_text(f"seed_everything: 1\ntrainer:\n  max_epochs: 1\n"
                      f"model:\n  network:\n    towers: 2\n"
                      f"data:\n  root: {root}\n  resize_size: 72\n  crop_size: 64\n"
                      f"  num_workers: 0\n  stats_dir: {tmp_path / 'ignored'}\n")
    stats = tmp_path / "stats"
    with caplog.at_level("INFO"):  # an option after --config wins over the file
        code, _, err = run(capsys, "prepare", "--config", str(config), "--data.stats_dir",
                           str(stats), "--cache", "true")
    assert code == 0, err
    assert len(list(stats.glob("stats-*.npz"))) == 1 and len(list(stats.glob("crops-val-*.npy"))) == 2
    assert not (tmp_path / "ignored").exists()
    assert any(m.startswith("statistics of 18 training images") for m in infos(caplog))
    config.write_text(f"model:\n  network:\n    towers: 2\n"
                      f"data:\n  root: {root}\n  crop_sise: 64\n")
    code, _, err = run(capsys, "prepare", "--config", str(config))
    assert code == 2 and "crop_sise" in err
