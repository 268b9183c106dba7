"""``python -m lightning_alexnet fit|validate|test|prepare|predict|show``: fit, validate and test
are LightningCLI's; predict (``predict.py``) and show (``show.py``) are this package's own.

``--config`` takes a YAML file or the name of a preset shipped in ``lightning_alexnet/configs``
(``tiny``: the quick CPU run on the built-in data; ``paper``: the paper's recipe).
"""

from __future__ import annotations

import sys
from argparse import SUPPRESS
from pathlib import Path

from jsonargparse import ArgumentParser
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningCLI
from pytorch_lightning.utilities import rank_zero_info

from lightning_alexnet.data import ImageFolderDataModule
from lightning_alexnet.module import AlexNetModule
from lightning_alexnet.towers import TowersStrategy  # noqa: F401 (registers --trainer.strategy towers)

CONFIG_DIR = Path(__file__).parent / "configs"
PROG = "python -m lightning_alexnet"


class FitSummary(Callback):
    """At the end of ``fit``, one line: the best validation errors and the best checkpoint."""

    def __init__(self) -> None:
        self.history: list[tuple[float, float]] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        m = trainer.callback_metrics
        if not trainer.sanity_checking and "val/top1_error" in m:
            self.history.append((float(m["val/top1_error"]), float(m.get("val/top5_error", float("nan")))))

    def on_fit_end(self, trainer, pl_module) -> None:
        if not self.history:
            rank_zero_info("fit finished without a validation epoch: no best val/top1_error")
            return
        top1, top5 = min(self.history, key=lambda e: e[0])  # first minimum, as ModelCheckpoint keeps
        ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        rank_zero_info(
            f"best val/top1_error={top1:.4f} val/top5_error={top5:.4f} best checkpoint: {ckpt or '(none saved)'}"
        )


class AlexNetCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(FitSummary, "fit_summary")
        parser.set_defaults({
            "lr_monitor.logging_interval": "epoch",
            "checkpoint.monitor": "val/top1_error",
            "checkpoint.mode": "min",
            "checkpoint.save_last": True,
            "checkpoint.filename": "epoch{epoch:03d}-top1err{val/top1_error:.4f}",
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.crop_size", "model.image_size")


def _trainer_defaults() -> dict:
    loggers = [{"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}]
    try:
        import tensorboard  # noqa: F401

        # its own tree: two loggers in one folder would number their versions apart
        loggers.append({"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                        "init_args": {"save_dir": "runs/tensorboard"}})
    except ImportError:
        pass
    return {
        "logger": loggers,
        "max_epochs": 90,
    }


def _resolve_config_names(args: list[str]) -> list[str]:
    """``--config tiny`` -> the shipped ``configs/tiny.yaml``; paths pass through."""
    out = list(args)
    for i, a in enumerate(out):
        value = None
        if a == "--config" and i + 1 < len(out):
            i, value = i + 1, out[i + 1]
        elif a.startswith("--config="):
            value = a.split("=", 1)[1]
            out[i] = "--config"
            out.insert(i + 1, value)
            i += 1
        if value is not None and not Path(value).exists() and (CONFIG_DIR / f"{value}.yaml").exists():
            out[i] = str(CONFIG_DIR / f"{value}.yaml")
    return out


def prepare(args: list[str]) -> None:
    """``prepare``: compute and cache the training-set statistics (and optionally the crops)."""
    parser = ArgumentParser(prog=f"{PROG} prepare", description=(
        "Stream the training images once and cache next to the data the mean image and the "
        "RGB covariance eigenpairs (used for mean subtraction and PCA colour noise)."))
    parser.add_argument("--config", action="config", help="YAML file (its data: section is used)")
    parser.add_class_arguments(ImageFolderDataModule, "data")
    parser.add_argument("--cache", type=bool, default=False,
                        help="also write the 256x256 central crops as a uint8 memory-mapped array")
    for ignored in ("trainer", "model", "seed_everything", "checkpoint", "lr_monitor", "fit_summary", "optimizer", "lr_scheduler", "ckpt_path"):
        parser.add_argument(f"--{ignored}", type=object, default=None, help=SUPPRESS)  # other sections of a --config
    cfg = parser.parse_args(args)
    datamodule = parser.instantiate_classes(cfg).data
    datamodule.prepare(cache=cfg.cache)


DESCRIPTION = """AlexNet (Krizhevsky, Sutskever & Hinton, 2012) with PyTorch Lightning.

Subcommands: fit, validate, test (Lightning's), prepare (compute and cache the training-set
statistics), predict (classify image files with a checkpoint: top-5 table, CSV or JSON) and
show (pictures of a run: filters, predictions, neighbours, curves, confusion); each has --help.
--config takes a YAML file or the name of a shipped preset: tiny (the quick CPU run on the
built-in data) or paper (the paper's recipe)."""


def main(args: ArgsType = None) -> AlexNetCLI | None:
    """Run the command line; ``args`` (a list) replaces ``sys.argv[1:]`` when given."""
    if args is None:
        sys.argv[1:] = _resolve_config_names(sys.argv[1:])
        argv = sys.argv[1:]
    else:
        args = argv = _resolve_config_names([str(a) for a in args])
    if argv and argv[0] == "prepare":
        prepare(argv[1:])
        return None
    if argv and argv[0] in ("predict", "show"):  # their own commands: see predict.py, show.py
        if argv[0] == "predict":
            from lightning_alexnet.predict import main as command
        else:
            from lightning_alexnet.show import main as command
        command(argv[1:])
        return None
    return AlexNetCLI(
        AlexNetModule,
        ImageFolderDataModule,
        seed_everything_default=0,
        trainer_defaults=_trainer_defaults(),
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": PROG, "description": DESCRIPTION},
        args=args,
    )
