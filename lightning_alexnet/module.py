"""The paper's recipe as a LightningModule.

SGD (momentum 0.9, weight decay 5e-4, lr 0.01 at batch 128), cross-entropy, the learning rate
divided by 10 whenever validation top-1 error stops improving; top-1 and top-5 *error* rates
(torchmetrics, micro-averaged) per stage, as the paper reports them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.core.saving import pl_load
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightning_alexnet import checkpoint_info
from lightning_alexnet.errors import UserPathError, UserValueError
from lightning_alexnet.model import (
    FEW_CLASSES_BIAS,
    PAPER_BIAS_MIN_CLASSES,
    AlexNet,
    AlexNetConfig,
)
from lightning_alexnet.ops import Kernels


def _drop_members(module: nn.Module, state: dict[str, Any], prefix: str, metadata: Any) -> None:
    for key in [k for k in state if k.startswith(f"{prefix}ensemble_models.")]:
        del state[key]


def _members_not_missing(module: nn.Module, incompatible: Any) -> None:
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys
                                    if not k.startswith("ensemble_models.")]


class MulticlassError(MulticlassAccuracy):
    """1 - accuracy: the paper reports error rates."""

    def compute(self) -> torch.Tensor:
        return 1.0 - super().compute()


def error_metrics(num_classes: int, prefix: str, suffix: str = "") -> MetricCollection:
    metrics = {
        "top1_error": MulticlassError(num_classes, top_k=1, average="micro"),
        "top5_error": MulticlassError(num_classes, top_k=min(5, num_classes), average="micro"),
    }
    return MetricCollection(metrics, prefix=prefix, postfix=suffix)


def few_classes_note(network: AlexNetConfig) -> str | None:
    """One line when the paper preset's ``bias_init`` rule (``AlexNetConfig.resolved``) chose
    Caffe's bias for a small class count instead of the paper's; else None."""
    if network.bias_init is not None or network.num_classes >= PAPER_BIAS_MIN_CLASSES:
        return None
    return (f"paper preset with {network.num_classes} classes (< {PAPER_BIAS_MIN_CLASSES}): "
            f"bias_init {FEW_CLASSES_BIAS} (Caffe's) instead of the paper's 1, whose fc8 updates "
            f"diverge with few classes; --model.network.bias_init 1 restores it")


def check_not_legacy(hparams: Mapping[str, Any], what: str) -> None:
    """Refuse, naming ``what`` and the fix, the hyperparameters of a checkpoint saved before the
    network options became one AlexNetConfig (``preset``, ``towers``, ... instead of
    ``network``): they are not loaded."""
    if "network" not in hparams and "preset" in hparams:
        raise UserValueError(
            f"{what} was written by an older lightning_alexnet (network options preset/towers/"
            f"lrn/bias_init instead of one --model.network) and cannot be loaded: train it again "
            f"with `python -m lightning_alexnet fit` (e.g. --config tiny or --config paper)")


class AlexNetModule(pl.LightningModule):
    """AlexNet (Krizhevsky et al., 2012) trained with the paper's recipe.

    Args:
        network: The network, every field of :class:`~lightning_alexnet.model.AlexNetConfig`
            (``--model.network.<field>`` on the command line, where ``--config paper`` or
            ``--config tiny`` fills them all and the data sets ``num_classes`` and
            ``image_size``). Default: the paper's network.
        kernels: ``auto`` (Triton on CUDA, the fast CPU path on CPU), ``triton`` (the Triton
            kernels everywhere; CPU needs TRITON_INTERPRET=1), or ``eager`` (plain PyTorch).
        lr: Initial learning rate (paper 0.01 at batch 128).
        momentum: SGD momentum.
        weight_decay: L2 weight decay (paper 5e-4).
        lr_factor: Factor applied to the learning rate when validation top-1 error plateaus.
        lr_patience: Validation epochs without improvement before the learning rate drops.
        ensemble: Extra checkpoints for ``test`` and ``predict``: their softmax outputs are
            averaged with this model's (the paper's ensembles of CNNs).
    """

    def __init__(
        self,
        network: AlexNetConfig = AlexNetConfig(),  # noqa: B008 (frozen: one shared default is safe)
        kernels: Kernels = "auto",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_factor: float = 0.1,
        lr_patience: int = 3,
        ensemble: list[str] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(network, Mapping):  # its fields, as a checkpoint's hyperparameters hold them
            network = AlexNetConfig(**network)
        self.save_hyperparameters()
        # plain types, loadable with torch.load(weights_only=True) (the command line's are)
        self.hparams["network"] = dataclasses.asdict(network)
        self.config = network.resolved()  # bias_init decided (see AlexNetConfig.bias_init)
        self.config_note = few_classes_note(network)
        self.model = AlexNet(self.config, kernels=kernels)
        # test/predict's ensemble members (loaded in setup): submodules, so they move with this
        # one, but not this network's weights: kept out of its state dict (saved and loaded)
        self.ensemble_models = nn.ModuleList()
        self.register_state_dict_post_hook(_drop_members)
        self.register_load_state_dict_post_hook(_members_not_missing)
        self.data_info: checkpoint_info.DataInfo | None = None  # set from a loaded checkpoint

        num_classes = network.num_classes
        self.train_metrics = error_metrics(num_classes, "train/")
        self.val_metrics = error_metrics(num_classes, "val/")
        self.test_metrics = error_metrics(num_classes, "test/")
        self.test_metrics_10crop = error_metrics(num_classes, "test/", "_10crop")

    def configure_model(self) -> None:
        # --trainer.strategy towers: one tower per tensor-parallel rank (towers.py)
        if self.device_mesh is not None:
            from lightning_alexnet.towers import configure_towers

            configure_towers(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @staticmethod
    def _unpack(batch: Any) -> tuple[torch.Tensor, Any]:
        """``(x, target)`` of a batch whose first two items are those (``(x, y)``, or a loader's
        finished batch that also names its unreadable files)."""
        if batch[0].dtype == torch.uint8:  # the network takes float input only
            raise TypeError(
                "got a RawBatch (uint8 crops) from ImageFolderDataModule's loaders: give the Trainer "
                "the DataModule itself (trainer.fit(model, datamodule=dm)), whose "
                "on_after_batch_transfer turns it into float input, or call dm.transform(batch)")
        return batch[0], batch[1]

    def on_fit_start(self) -> None:
        if self.config_note:
            rank_zero_info(self.config_note)

    # --- training and validation ---------------------------------------------------------

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
                      ) -> torch.Tensor | None:
        x, y = self._unpack(batch)
        if not len(x):  # every file of the batch was unreadable
            if not self._several_processes():
                return None  # Lightning skips the step
            self._log_empty_batch(metrics=self.train_metrics, on_step=False, on_epoch=True)
            return self._zero_loss()
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_metrics.update(logits.detach(), y)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def _several_processes(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def _zero_loss(self) -> torch.Tensor:
        """0, reaching every trainable parameter: with several processes Lightning cannot skip
        one process's step, and the others' gradient all-reduce waits for every parameter's
        gradient. This process adds zeros to the sum the all-reduce divides by the number of
        processes, so that step's gradient is the others' scaled by their share of the
        processes; the optimizer steps here in step with them (momentum, weight decay)."""
        return sum((p.to_local() if hasattr(p, "to_local") else p).sum() * 0.0  # DTensor: local
                   for p in self.parameters() if p.requires_grad)

    def _log_empty_batch(self, loss: str | None = None, metrics: MetricCollection | None = None,
                         **options) -> None:
        """With several processes, what a step logs, for a batch of only unreadable files, with
        no weight: the ``loss`` key as 0 over a batch of 0 (its mean over the processes is then
        the others') and the ``metrics`` without an update. So every process takes part in
        their epoch-end syncs, where one that never logged them would leave the others waiting
        (a shard of only unreadable files). One process needs none of it."""
        if not self._several_processes():
            return
        if loss is not None:
            self.log(loss, torch.zeros((), device=self.device), sync_dist=True, batch_size=0)
        if metrics is not None:
            self.log_dict(metrics, **options)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = self._unpack(batch)
        if not len(x):  # every file of the batch was unreadable
            self._log_empty_batch("val/loss", self.val_metrics, prog_bar=True)
            return
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.val_metrics.update(logits, y)
        self.log_dict(self.val_metrics, prog_bar=True)

    # --- testing: single centre crop and the paper's ten crops, optionally an ensemble -----

    def setup(self, stage: str) -> None:
        if self.hparams.ensemble and stage in ("fit", "validate"):
            raise UserValueError(f"--model.ensemble is used by test and predict, not {stage}: "
                                 f"drop it or run test")
        # before the Trainer moves (and wraps) the model: the fast layout of the target device
        device = self.trainer.strategy.root_device if self._trainer is not None else self.device
        self.model.to_layout_of(device)
        if stage in ("test", "predict") and self.hparams.ensemble and not self.ensemble_models:
            for path in self.hparams.ensemble:
                self.ensemble_models.append(self._load_member(path).to_layout_of(device))

    def _load_member(self, path: str) -> AlexNet:
        """The network of the checkpoint ``path`` (local, URL or fsspec path: Lightning's
        loader), built from the checkpoint's own network config (its LRN constants, say, shape
        the outputs but not the weights); a bare state dict, which has none, is loaded into this
        module's network. A member of other classes or crop size, or whose weights do not fit,
        fails, named."""
        try:
            ckpt = pl_load(path, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise UserPathError(f"ensemble checkpoint {path!r} does not exist") from None
        hparams = ckpt.get("hyper_parameters") or {}
        check_not_legacy(hparams, f"ensemble checkpoint {path!r}")
        member = AlexNetModule(hparams.get("network", self.hparams.network),
                               kernels=self.hparams.kernels)
        for key in ("num_classes", "image_size"):
            mine, theirs = getattr(self.config, key), getattr(member.config, key)
            if theirs != mine:
                raise UserValueError(f"ensemble checkpoint {path!r} does not fit this network: "
                                     f"its {key} is {theirs}, this network's {mine}")
        try:
            member.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            raise UserValueError(f"ensemble checkpoint {path!r} does not fit this network: "
                                 f"{str(e).splitlines()[0]} ...") from e
        return member.model.to(self.device).eval()

    def _probs(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax averaged over this model and the ensemble members."""
        probs = self(x).softmax(-1)
        for member in self.ensemble_models:
            probs = probs + member(x).softmax(-1)
        return probs / (1 + len(self.ensemble_models))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = self._unpack(batch)
        if not len(x):  # every file of the batch was unreadable
            if x.dim() == 5:
                self._log_empty_batch(metrics=self.test_metrics_10crop)
            self._log_empty_batch("test/loss", self.test_metrics)
            return
        if x.dim() == 5:  # (N, 10, 3, S, S): four corners + centre, then their mirrors
            n, crops = x.shape[:2]
            probs = self._probs(x.flatten(0, 1)).view(n, crops, -1)
            self.test_metrics_10crop.update(probs.mean(1), y)
            self.log_dict(self.test_metrics_10crop)
            centre = probs[:, 4]
        else:
            centre = self._probs(x)
        self.log("test/loss", F.nll_loss(centre.clamp_min(1e-12).log(), y), sync_dist=True)
        self.test_metrics.update(centre, y)
        self.log_dict(self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Any]]:
        x, paths = self._unpack(batch)
        if not len(x):  # every file of the batch was unreadable
            return []
        probs = self._probs(x)
        top = probs.topk(min(5, probs.shape[-1]), dim=-1)
        if self.data_info is not None:  # the classes it was trained on, whatever the datamodule
            classes = self.data_info.classes
        else:
            classes = getattr(self.trainer.datamodule, "classes", None) if self._trainer else None
        out = []
        for path, p, i in zip(paths, top.values.tolist(), top.indices.tolist()):
            names = [classes[j] for j in i] if classes else i
            out.append({"path": path, "top5": list(zip(names, p))})
        return out

    # --- class names and preprocessing travel in the checkpoint (see checkpoint_info) ---

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint_info.save(checkpoint, self._trainer, self.data_info)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a legacy checkpoint without an instantiator gets here, built with the default network
        check_not_legacy(checkpoint.get("hyper_parameters") or {}, "the checkpoint")
        self.data_info = checkpoint_info.load(checkpoint)
        # On resume, recipe options given for this run (the CLI sets recipe_overrides) win over
        # the optimizer and scheduler state restored from the checkpoint.
        new = getattr(self, "recipe_overrides", None) or {}
        for state in checkpoint.get("optimizer_states", []):
            for group in state["param_groups"]:
                group.update({k: new[k] for k in ("lr", "momentum", "weight_decay") if k in new})
        for state in checkpoint.get("lr_schedulers", []):
            state.update({name: new[k] for k, name in (("lr_factor", "factor"), ("lr_patience", "patience"))
                          if k in new})

    # --- the paper's optimiser ------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.SGD(
            self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=hp.lr_factor, patience=hp.lr_patience
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val/top1_error", "interval": "epoch"},
        }
