"""``python -m lightning_alexnet fit|validate|test|prepare|predict|show``: fit, validate and test
are LightningCLI's; predict (``predict.py``) and show (``show.py``) are this package's own.

``--config`` takes a YAML file or the name of a preset shipped in ``lightning_alexnet/configs``
(``tiny``: the quick CPU run on the built-in data; ``paper``: the paper's recipe).
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from argparse import ArgumentError
from pathlib import Path

import torch
import yaml
from jsonargparse import ArgumentParser
from jsonargparse._actions import _ActionPrintConfig
from jsonargparse._link_arguments import skip_apply_links
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import ArgsType, LightningCLI, SaveConfigCallback
from pytorch_lightning.strategies import DDPStrategy, ModelParallelStrategy
from pytorch_lightning.utilities import rank_zero_info

from lightning_alexnet.data import ImageFolderDataModule
from lightning_alexnet.errors import UserError, UserPathError, UserValueError
from lightning_alexnet.model import AlexNetConfig
from lightning_alexnet.module import AlexNetModule, check_not_legacy
from lightning_alexnet.ops import check_kernels_device
from lightning_alexnet.towers import TowersStrategy  # noqa: F401 (registers --trainer.strategy towers)

CONFIG_DIR = Path(__file__).parent / "configs"
PROG = "python -m lightning_alexnet"
DEBUG_ENV = "LIGHTNING_ALEXNET_DEBUG"  # =1: tracebacks for user errors too (as --debug)
RUNS = "runs"  # --trainer.default_root_dir's default: fit's runs go to runs/<name>/version_N
# --model.network fields a checkpoint's weights were trained (or initialised) with: given (on the
# command line or in a --config file) they must agree with the checkpoint; dropout, the other
# --model options (kernels, ensemble, the recipe) take effect over the checkpoint's values.
# num_classes and image_size come from the data, checked on their own.
NETWORK_FREE = ("dropout", "num_classes", "image_size")
RECIPE_OPTIONS = ("lr", "momentum", "weight_decay", "lr_factor", "lr_patience")


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


class Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``every_n_train_steps`` adds mid-epoch resume points.

    Lightning's own ``every_n_train_steps`` replaces the end-of-epoch saves, so the best
    checkpoint would be picked at a training step with the previous validation's score. Here the
    best checkpoints are still chosen at each validation, and every ``every_n_train_steps``
    optimizer steps ``last.ckpt`` is rewritten, so an interrupted epoch resumes from there.
    """

    def __init__(self, *args, every_n_train_steps: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise UserValueError(f"checkpoint.every_n_train_steps must be positive, got {every_n_train_steps}")
        self.resume_every_n_steps = every_n_train_steps or 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.resume_every_n_steps
        if n and trainer.global_step % n == 0 and not self._should_skip_saving_checkpoint(trainer):
            saved = self._last_global_step_saved
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_global_step_saved = saved  # else the validation at this step saves no best


class SaveRunConfig(SaveConfigCallback):
    """Writes ``config.yaml`` into the run's folder, and nothing when the command has no run
    folder (an evaluation without a checkpoint writes no files at all)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.logger is not None:
            super().setup(trainer, pl_module, stage)


def _read_checkpoint(path: str) -> dict:
    """The hyperparameters saved in a checkpoint of this package, or an error naming the file."""
    if not Path(path).is_file():
        raise UserPathError(f"checkpoint {path} does not exist: pass --ckpt_path with a .ckpt file "
                            f"(fit writes them to {RUNS}/<name>/version_N/checkpoints/)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file is the user's to replace
        raise UserValueError(f"checkpoint {path} cannot be read ({type(e).__name__}): "
                             f"is it a checkpoint written by fit?") from e
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if hparams:
        check_not_legacy(hparams, path)
    if not hparams or "network" not in hparams:
        raise UserValueError(f"{path} is not a checkpoint written by `{PROG} fit` "
                             f"(no AlexNetModule hyperparameters in it)")
    return {k: v for k, v in hparams.items() if not k.startswith("_")}


def _shown(value) -> str:
    """An option value as the command line writes it (a tuple as a list)."""
    return str(list(value)) if isinstance(value, tuple) else str(value)


def _describe_parallelism(trainer) -> str:
    """One phrase: the parallelism the Trainer runs."""
    strategy, n = trainer.strategy, trainer.world_size
    name = getattr(strategy, "strategy_name", type(strategy).__name__)
    if isinstance(strategy, ModelParallelStrategy) or hasattr(strategy, "tensor_parallel_size"):
        tp = getattr(strategy, "tensor_parallel_size", None) or getattr(strategy, "_tensor_parallel_size", "?")
        dp = getattr(strategy, "data_parallel_size", None) or getattr(strategy, "_data_parallel_size", "?")
        return f"{name} (tensor parallel {tp} x data parallel {dp}) over {n} devices"
    if isinstance(strategy, DDPStrategy):
        method = getattr(strategy, "_start_method", "popen")
        name = "ddp" if method == "popen" else f"ddp_{method}"
        return f"data parallel ({name}) over {n} devices, each holding the whole network"
    device = strategy.root_device
    return f"one {device.type} device ({name}), no parallelism" if n == 1 else f"{name} over {n} devices"


class AlexNetCLI(LightningCLI):
    def init_parser(self, **kwargs):
        # parse errors raise ArgumentError, which main() prints in two lines (not the whole usage)
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(Checkpoint, "checkpoint")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(FitSummary, "fit_summary")
        parser.add_argument("--name", type=str | None, default=None, help=(
            "Name of the run: fit writes to <default_root_dir>/<name>/version_N (default name "
            "lightning_logs); validate and test log there too when given."))
        parser.set_defaults({
            "lr_monitor.logging_interval": "epoch",
            "checkpoint.monitor": "val/top1_error",
            "checkpoint.mode": "min",
            "checkpoint.save_last": True,
            "checkpoint.filename": "epoch{epoch:03d}-top1err{val/top1_error:.4f}",
            "checkpoint.auto_insert_metric_name": False,
        })
        parser.link_arguments("data.num_classes", "model.network.num_classes",
                              apply_on="instantiate")
        parser.link_arguments("data.crop_size", "model.network.image_size")

    # --- what runs: the command line, then the checkpoint where the command line is silent ---

    def parse_arguments(self, parser, args: ArgsType) -> None:
        try:
            with _ActionPrintConfig.skip_print_config():  # printed once the checkpoint is merged
                # LightningCLI's own would warn that args and sys.argv are both given: main()
                # passes the command line itself, its preset names resolved
                self.config = parser.parse_args(args)
                # only what the command line and --config files set, without the defaults (nor
                # the values links derive, whose sources may be among them: --data.crop_size)
                with skip_apply_links():
                    self.given = parser.parse_args(args, defaults=False)
        except ArgumentError as e:
            raise UserValueError(self._explain(str(e))) from None

    def _explain(self, message: str) -> str:
        """The parser's message, first line, with the closest option when one was mistyped."""
        first = message.strip().splitlines()[0]
        options = {o for p in self._subcommand_parsers.values() for a in p._actions
                   for o in a.option_strings}
        for word in first.replace(",", " ").split():
            if word.startswith("--") and word not in options:
                close = difflib.get_close_matches(word, options, n=1)
                if close:
                    return f"{first} (did you mean {close[0]}?)"
        return first

    def _parse_ckpt_path(self) -> None:
        # Replaces LightningCLI's, which overwrites every --model option with the checkpoint's.
        sub = self.config.get("subcommand")
        if sub is None:
            return
        cfg, given = self.config[sub], self.given.get(sub) or {}
        path = cfg.get("ckpt_path")
        self.ckpt_hparams = None
        if path and not (path in ("last", "best", "hpc", "registry") and not Path(path).exists()):
            self.ckpt_hparams = _read_checkpoint(path)
            self._merge_checkpoint(path, cfg, given)
        for member in cfg.model.get("ensemble") or []:
            if not Path(member).is_file():
                raise UserPathError(f"ensemble checkpoint {member} does not exist: fix the path in "
                                    f"--model.ensemble")
        self._place_outputs(sub, cfg, given)
        _ActionPrintConfig.print_config_if_requested(self.parser, self.config)

    def _merge_checkpoint(self, path: str, cfg, given) -> None:
        hp, model = self.ckpt_hparams, cfg.model
        given_model = given.get("model") or {}
        given_crop = (given.get("data") or {}).get("crop_size")
        ckpt_fields = dict(hp["network"])
        asked = {k: v for k, v in dict(given_model.get("network") or {}).items()
                 if v is not None and k not in NETWORK_FREE}
        try:  # compared as built: bias_init None is the value it stands for
            ckpt_net = AlexNetConfig(**ckpt_fields).resolved()
            asked_net = AlexNetConfig(**{**ckpt_fields, **asked}).resolved()
        except (TypeError, ValueError) as e:
            raise UserValueError(f"--model.network with {path}: {e}") from None
        clashes = [f"--model.network.{k} {_shown(asked[k])} asked, the checkpoint has "
                   f"{_shown(getattr(ckpt_net, k))}"
                   for k in asked if getattr(asked_net, k) != getattr(ckpt_net, k)]
        image_size = ckpt_fields["image_size"]
        if given_crop is not None and given_crop != image_size:
            clashes.append(f"crop size {given_crop} asked (--data.crop_size), the checkpoint was "
                           f"trained on {image_size}-pixel crops")
        if clashes:
            raise UserValueError(f"{path} does not match the options: {'; '.join(clashes)}. Drop "
                                 f"those options (the checkpoint's are used) or give its values")
        # given recipe options win over the optimizer state restored on resume (see module)
        self.recipe_overrides = {k: given_model[k] for k in RECIPE_OPTIONS
                                 if given_model.get(k) is not None and given_model[k] != hp.get(k)}
        for key, value in hp.items():  # the checkpoint's recipe and options unless given
            if key in model and key != "network" and key not in given_model:
                model[key] = value
        for key, value in ckpt_fields.items():  # its network, but a given dropout
            if key != "dropout" or "dropout" not in (given_model.get("network") or {}):
                model.network[key] = value
        if given_crop is None:
            cfg.data.crop_size = image_size
            cfg.data.resize_size = max(cfg.data.resize_size, image_size)

    def _place_outputs(self, sub: str, cfg, given) -> None:
        """Loggers (and so checkpoints) under --trainer.default_root_dir and --name; validate and
        test log into the evaluated checkpoint's run, or write nothing without a checkpoint."""
        trainer, given_trainer = cfg.trainer, given.get("trainer") or {}
        loggers = trainer.logger
        ours = isinstance(loggers, list) and all(  # the defaults (also as --print_config writes them)
            getattr(lg, "class_path", "").endswith(("CSVLogger", "TensorBoardLogger"))
            and str(lg.init_args.save_dir) in (RUNS, f"{RUNS}/tensorboard") for lg in loggers)
        if not ours:
            return  # the user's own loggers
        root, name = trainer.default_root_dir, cfg.get("name")
        if sub != "fit" and name is None and "default_root_dir" not in given_trainer:
            ckpt = cfg.get("ckpt_path")
            if sub == "predict" or not (ckpt and Path(ckpt).is_file()):
                trainer.logger = False  # nothing to keep: metrics are printed
                return
            run = Path(ckpt).resolve().parent
            root, name = str(run.parent if run.name == "checkpoints" else run), sub
            loggers = loggers[:1]  # metrics.csv beside the run's own
        for lg in loggers:
            tb = lg.class_path.endswith("TensorBoardLogger")
            lg.init_args.save_dir = os.path.join(root, "tensorboard") if tb else root
            lg.init_args.name = name or "lightning_logs"
        trainer.logger = loggers

    # --- checks before any data is read, and where things go ---------------------------------

    def after_instantiate_classes(self) -> None:
        hp, data, trainer = getattr(self, "ckpt_hparams", None), self.datamodule, self.trainer
        if trainer.logger is None:  # --trainer.logger false: nothing for the lr monitor to log to
            trainer.callbacks[:] = [c for c in trainer.callbacks if not isinstance(c, LearningRateMonitor)]
        rank_zero_info(f"{self.subcommand}: {_describe_parallelism(trainer)}; "
                       f"{self._outputs(before=True)}")
        trained_on = hp["network"]["num_classes"] if hp else None
        if hp and trained_on != data.num_classes:
            raise UserValueError(
                f"the checkpoint was trained on {trained_on} classes, the data at "
                f"{data.root} has {data.num_classes}: pass the --data.root it was trained on")
        try:
            check_kernels_device(self.model.hparams.kernels, trainer.strategy.root_device)
        except ValueError as e:
            raise UserValueError(str(e)) from None
        overrides = getattr(self, "recipe_overrides", None)
        if overrides and self.subcommand == "fit":
            self.model.recipe_overrides = overrides
            rank_zero_info("resuming with " + ", ".join(f"{k}={v} (checkpoint: {hp.get(k)})"
                                                       for k, v in overrides.items()))

    def _outputs(self, before: bool = False) -> str:
        trainer, verb = self.trainer, "go" if before else "went"
        ckpt = trainer.checkpoint_callback
        ckpt_dir = ckpt.dirpath if ckpt is not None and self.subcommand == "fit" else None
        if trainer.logger is None:
            if ckpt_dir or (self.subcommand == "fit" and ckpt is not None):
                where = ckpt_dir or os.path.join(trainer.default_root_dir, "checkpoints")
                return f"checkpoints {verb} to {where} (no logger: no metrics.csv)"
            if self.subcommand == "predict":
                return "no files are written"
            return "no files are written (metrics are printed; --name NAME logs them to a run folder)"
        what = "metrics.csv, config.yaml"
        if self.subcommand == "fit" and ckpt is not None:
            what = (f"checkpoints in {ckpt_dir}, " if ckpt_dir and Path(ckpt_dir).parent != Path(trainer.log_dir)
                    else "checkpoints/, ") + what
        extra = [lg.log_dir for lg in trainer.loggers[1:] if getattr(lg, "log_dir", None)]
        tb = f"; TensorBoard: {extra[0]}" if extra else ""
        return f"outputs {verb} to {trainer.log_dir} ({what}){tb}"

    def _final_line(self) -> None:
        rank_zero_info(f"{self.subcommand} done: {self._outputs()}")

    after_fit = after_validate = after_test = _final_line



def _trainer_defaults() -> dict:
    loggers = [{"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": RUNS}}]
    try:
        import tensorboard  # noqa: F401

        # its own tree: two loggers in one folder would number their versions apart
        loggers.append({"class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                        "init_args": {"save_dir": f"{RUNS}/tensorboard"}})
    except ImportError:
        pass
    return {
        "logger": loggers,
        "default_root_dir": RUNS,
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
        if value is not None and not Path(value).exists():
            if not (CONFIG_DIR / f"{value}.yaml").exists():
                presets = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
                raise UserPathError(f"--config {value}: no such file and no preset of that name; "
                                    f"presets: {presets} (or the path of a YAML file)")
            out[i] = str(CONFIG_DIR / f"{value}.yaml")
    return out


def prepare(args: list[str]) -> None:
    """``prepare``: compute and cache the training-set statistics (and optionally the crops)."""
    parser = ArgumentParser(prog=f"{PROG} prepare", exit_on_error=False, description=(
        "Stream the training images once and cache next to the data the mean image and the "
        "RGB covariance eigenpairs (used for mean subtraction and PCA colour noise)."))
    parser.add_argument("--config", type=str, action="append", default=[],
                        help="a fit YAML file or preset: only its data: section is read")
    parser.add_class_arguments(ImageFolderDataModule, "data")
    parser.add_argument("--cache", type=bool, default=False,
                        help="also write the 256x256 central crops as a uint8 memory-mapped array")
    cfg = parser.parse_args(_with_data_sections(args))
    datamodule = parser.instantiate_classes(cfg).data
    datamodule.prepare(cache=cfg.cache)


def _with_data_sections(args: list[str]) -> list[str]:
    """``args`` with ``--data <section>`` after each ``--config FILE``: the file's ``data:``
    section, which the ``data`` group parses in place (options after it override it)."""
    out = list(args)
    for i in reversed(range(len(out) - 1)):
        if out[i] == "--config":
            try:
                section = (yaml.safe_load(Path(out[i + 1]).read_text()) or {}).get("data") or {}
            except (OSError, yaml.YAMLError, AttributeError) as e:
                raise UserValueError(f"--config {out[i + 1]}: cannot read a YAML mapping ({e})")
            out[i + 2:i + 2] = ["--data", json.dumps(section)]
    return out


DESCRIPTION = """AlexNet (Krizhevsky, Sutskever & Hinton, 2012) with PyTorch Lightning.

Subcommands: fit, validate, test (Lightning's), prepare (compute and cache the training-set
statistics), predict (classify image files with a checkpoint: top-5 table, CSV or JSON) and
show (pictures of a run: filters, predictions, neighbours, curves, confusion); each has --help.
--config takes a YAML file or the name of a shipped preset: tiny (the quick CPU run on the
built-in data) or paper (the paper's recipe)."""


def main(args: ArgsType = None) -> AlexNetCLI | None:
    """Run the command line; ``args`` (a list) replaces ``sys.argv[1:]`` when given.

    A user error (bad path, option or checkpoint) prints ``error: ...`` and a hint, and exits
    with status 2; ``--debug`` or ``LIGHTNING_ALEXNET_DEBUG=1`` shows its traceback.
    """
    argv = sys.argv[1:] if args is None else [str(a) for a in args]
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"  # also for the processes a multi-device run launches
    try:
        # sys.argv is left as given: a multi-device run relaunches it, and each process resolves
        # the preset names (and --debug) again, the same way
        argv = _resolve_config_names(argv)
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
            save_config_callback=SaveRunConfig,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"prog": PROG, "description": DESCRIPTION},
            args=argv,
        )
    except (UserError, ArgumentError) as e:
        if os.environ.get(DEBUG_ENV, "0") not in ("", "0"):
            raise
        sub = next((a for a in argv if a in ("fit", "validate", "test", "predict", "prepare", "show")), "fit")
        message = str(e).strip().splitlines()[0] if isinstance(e, ArgumentError) else str(e)
        sys.stderr.write(f"error: {message}\n"
                         f"(`{PROG} {sub} --help` lists every option; --debug shows the traceback)\n")
        raise SystemExit(2) from None
