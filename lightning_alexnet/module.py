"""The paper's recipe as a LightningModule.

SGD (momentum 0.9, weight decay 5e-4, lr 0.01 at batch 128), cross-entropy, the learning rate
divided by 10 whenever validation top-1 error stops improving; top-1 and top-5 *error* rates
(torchmetrics, micro-averaged) per stage, as the paper reports them.
"""

from __future__ import annotations

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
from lightning_alexnet.model import AlexNet, AlexNetConfig
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


# The paper's bias of 1 on conv2/4/5 and fc6/fc7 was set for ImageNet's 1,000 classes. It puts a
# large shared component in every fc7 output (|h7|^2 ~ 5,700 for the 4,096 units at init), so
# each SGD step on fc8 shifts every class's logit by about lr * |h7|^2 times that class's
# share of the batch minus its predicted probability -- a per-step jump of ~1 logit with 1,000
# classes, ~5 with 100 and ~30 with 10 (measured at batch 32-128): with few classes training
# diverges to one predicted class (measured at a 64-pixel crop, tests/test_paper_few_classes.py).
# Caffe's bias 0.1 shrinks |h7|^2 a hundredfold.
PAPER_BIAS_MIN_CLASSES = 1000
FEW_CLASSES_BIAS = 0.1


def network_config(preset: str, num_classes: int, image_size: int, towers: int | None = None,
                   lrn: bool | None = None, bias_init: float | None = None,
                   dropout: float | None = None) -> tuple[AlexNetConfig, str | None]:
    """The network the module's options describe, and a note when the preset was adapted to a
    small class count (the ``paper`` preset's bias, see ``PAPER_BIAS_MIN_CLASSES``)."""
    overrides = {"towers": towers, "lrn": lrn, "bias_init": bias_init, "dropout": dropout}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    note = None
    if preset == "paper" and bias_init is None and num_classes < PAPER_BIAS_MIN_CLASSES:
        overrides["bias_init"] = FEW_CLASSES_BIAS
        note = (f"paper preset with {num_classes} classes (< {PAPER_BIAS_MIN_CLASSES}): bias_init "
                f"{FEW_CLASSES_BIAS} (Caffe's) instead of the paper's 1, whose fc8 updates "
                f"diverge with few classes; --model.bias_init 1 restores it")
    try:
        config = AlexNetConfig.from_name(preset, num_classes=num_classes, image_size=image_size,
                                         **overrides)
    except ValueError as e:  # an unknown preset or an impossible option: the user's to fix
        raise UserValueError(str(e)) from None
    return config, note


class AlexNetModule(pl.LightningModule):
    """AlexNet (Krizhevsky et al., 2012) trained with the paper's recipe.

    Args:
        preset: Network preset: ``paper`` (the exact network, 60,965,224 parameters with two
            towers) or ``tiny`` (the same eight layers, narrow, for quick CPU runs).
        num_classes: Number of classes; linked from the data when run from the command line.
        towers: Override the preset: 2 = the paper's two towers (grouped conv2/4/5, LRN inside
            a tower), 1 = one tower.
        lrn: Override the preset: local response normalisation after conv1 and conv2.
        bias_init: Override the preset: initial bias of conv2, conv4, conv5, fc6, fc7 (paper 1,
            Caffe 0.1). Default: the preset's; ``paper`` with fewer than 1,000 classes uses 0.1
            (the paper's 1 makes fc8's logits jump at each update when classes are few).
        dropout: Override the preset: dropout probability on fc6 and fc7.
        image_size: Side of the square input crop; linked from the data's crop size.
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
        preset: str = "paper",
        num_classes: int = 1000,
        towers: int | None = None,
        lrn: bool | None = None,
        bias_init: float | None = None,
        dropout: float | None = None,
        image_size: int = 224,
        kernels: Kernels = "auto",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        lr_factor: float = 0.1,
        lr_patience: int = 3,
        ensemble: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config, self.config_note = network_config(
            preset, num_classes, image_size, towers, lrn, bias_init, dropout)
        self.model = AlexNet(self.config, kernels=kernels)
        # test/predict's ensemble members (loaded in setup): submodules, so they move with this
        # one, but not this network's weights: kept out of its state dict (saved and loaded)
        self.ensemble_models = nn.ModuleList()
        self.register_state_dict_post_hook(_drop_members)
        self.register_load_state_dict_post_hook(_members_not_missing)
        self.data_info: checkpoint_info.DataInfo | None = None  # set from a loaded checkpoint

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
        if not len(x):  # every file of the batch was unreadable: Lightning skips the step on None
            return None
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.train_metrics.update(logits.detach(), y)
        self.log("train/loss", loss, prog_bar=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = self._unpack(batch)
        if not len(x):  # every file of the batch was unreadable
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
        loader), as a module with this one's network options loads it: a member trained with
        other options fails, named. (``load_from_checkpoint`` would rebuild the member's own
        options, and needs Lightning's version key, which a bare state dict lacks.)"""
        try:
            ckpt = pl_load(path, map_location="cpu", weights_only=False)
        except FileNotFoundError:
            raise UserPathError(f"ensemble checkpoint {path!r} does not exist") from None
        network = ("preset", "num_classes", "towers", "lrn", "bias_init", "dropout", "image_size",
                   "kernels")
        member = AlexNetModule(**{k: self.hparams[k] for k in network})
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
