"""The command line, end to end on a small image-folder tree."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_image_tree, run_cli

from lightning_alexnet.cli import main

COMMON = [
    "--config", "tiny",
    "--data.resize_size", "72", "--data.crop_size", "64",
    "--data.batch_size", "8", "--data.num_workers", "0",
    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]


def make_tree(root: Path, classes=("disc", "bar", "ring"), per_class=(6, 3)) -> Path:
    """A learnable-looking image-folder tree of small JPEGs."""
    return make_image_tree(root, classes, per_class)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short fit; returns (workdir, data root, best checkpoint, fit's logged val metrics)."""
    work = tmp_path_factory.mktemp("run")
    root = make_tree(work / "data")
    import os

    cwd = os.getcwd()
    os.chdir(work)
    try:
        cli = main(["fit", *COMMON, "--data.root", str(root), "--trainer.max_epochs", "2"])
    finally:
        os.chdir(cwd)
    best = cli.trainer.checkpoint_callback.best_model_path
    return work, root, Path(work, best), float(cli.trainer.checkpoint_callback.best_model_score)


def test_fit_writes_checkpoints_and_logs(trained):
    _work, _, best, score = trained
    assert best.exists() and best.suffix == ".ckpt"
    assert (best.parent / "last.ckpt").exists()
    assert (best.parent.parent / "metrics.csv").exists()
    assert 0.0 <= score <= 1.0


def test_validate_reproduces_logged_error(trained):
    _work, root, best, score = trained
    cli = main(["validate", *COMMON, "--data.root", str(root), "--ckpt_path", str(best)])
    assert cli.trainer.callback_metrics["val/top1_error"].item() == pytest.approx(score, abs=1e-6)


def test_resume_from_last_checkpoint(trained, tmp_path, monkeypatch):
    _work, root, best, _ = trained
    monkeypatch.chdir(tmp_path)
    last = best.parent / "last.ckpt"
    cli = main(["fit", *COMMON, "--data.root", str(root), "--trainer.max_epochs", "3",
                "--ckpt_path", str(last)])
    assert cli.trainer.current_epoch == 3  # resumed after epoch 2, ran one more


def test_summary_line_printed(tmp_path, caplog, monkeypatch):
    root = make_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO"):
        cli = main(["fit", *COMMON, "--data.root", str(root), "--trainer.max_epochs", "1"])
    lines = [r.getMessage() for r in caplog.records if "best val/top1_error=" in r.getMessage()]
    assert len(lines) == 1
    best = cli.trainer.checkpoint_callback
    assert f"best val/top1_error={float(best.best_model_score):.4f}" in lines[0]
    assert "val/top5_error=" in lines[0] and best.best_model_path in lines[0]


def test_help_explains_options():
    out = subprocess.run([sys.executable, "-m", "lightning_alexnet", "fit", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "usage: python -m lightning_alexnet" in out
    for flag in ("--model.network.lrn_alpha", "--model.network.towers", "--model.kernels",
                 "--data.root", "--ckpt_path"):
        assert flag in out
    assert "the paper's two towers" in out  # docstrings become help text


def test_print_config_round_trips(tmp_path, capsys):
    # through main([...]) as typed (the subprocess path is tested by the exit-code tests)
    code, out, err = run_cli(capsys, "fit", "--config", "paper", "--print_config")
    assert code == 0, err
    assert yaml.safe_load(out)["model"]["network"]["fc_features"] == [4096, 4096]
    assert "batch_size: 128" in out
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(out)
    code, again, err = run_cli(capsys, "fit", "--config", str(cfg), "--print_config")
    assert code == 0 and again == out, err


def test_impossible_network_is_named(tmp_path, capsys):
    root = make_tree(tmp_path / "data")
    with pytest.raises(SystemExit) as e:
        main(["fit", *COMMON, "--data.root", str(root), "--model.network.towers", "3",
              "--trainer.max_epochs", "1"])
    assert e.value.code == 2
    assert "error: towers must be 1 or 2, got 3" in capsys.readouterr().err
