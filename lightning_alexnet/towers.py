"""The paper's two towers on two devices: tensor parallelism through Lightning.

``--trainer.strategy towers`` (:class:`TowersStrategy`, over Lightning's
``ModelParallelStrategy``) arranges the processes in a device mesh ``(data_parallel,
tensor_parallel=2)``. Tensor-parallel rank *i* stores, computes and updates only tower *i*:

- conv1..conv5 (:class:`TowerConv2d`): every weight and bias is a DTensor sharded on its output
  channels, so rank *i* holds the kernels of tower *i* (conv1: 48 of 96). A ``groups=2``
  convolution of the one-device model is an ordinary convolution inside each tower, so conv1, 2,
  4 and 5 run on the rank's local tensors without communication (through :mod:`ops`: Triton on
  CUDA, the CPU path on CPU). conv3 reads both towers: its input is all-gathered over the
  channels, and the backward pass reduce-scatters the two towers' partial input gradients.
- fc6, fc7, fc8: PyTorch's stock tensor-parallel styles. fc6 is column-parallel and takes the
  tower-sharded conv5 output (all-gather forward, reduce-scatter backward); fc7 is row-parallel
  on fc6's sharded output (an all-reduce of the partial sums); fc8 is column-parallel on the
  replicated fc7 output (its input gradient is all-reduced) and all-gathers the logits.
- LRN windows stay inside a tower, as in the one-device model's ``groups=2``.

Every parameter stays a DTensor (gradient clipping needs one kind), so a checkpoint gathered on
rank 0 has the one-device model's keys and shapes: one checkpoint format for both layouts.

The data-parallel mesh dimension carries replicas of the tower pair: each sees different images
(Lightning's sampler uses that dimension only) and the gradients are averaged over it after
every backward pass; metrics are synchronised over it only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import timedelta
from functools import partial
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning_fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning_fabric.utilities.seed import pl_worker_init_function
from pytorch_lightning.strategies import ModelParallelStrategy, StrategyRegistry
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import (
    DTensor,
    Partial,
    Replicate,
    Shard,
    distribute_module,
    distribute_tensor,
)
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    RowwiseParallel,
    parallelize_module,
)
from torchmetrics import Metric

from lightning_alexnet.model import AlexNet, AlexNetConfig

TOWERS = 2  # the tensor-parallel size: one tower per device, as on the paper's two GTX 580s


def check_config(config: AlexNetConfig) -> None:
    """Raise a ValueError naming the value if ``config`` cannot be split into two towers."""
    if config.towers != TOWERS:
        raise ValueError(
            f"--trainer.strategy towers puts each of the paper's two towers on its own device, but "
            f"the model has towers={config.towers}; use --model.network.towers 2 (or another "
            f"strategy)")
    widths = {"conv_channels": config.conv_channels, "fc_features": config.fc_features}
    for name, values in widths.items():
        if any(v % TOWERS for v in values):
            raise ValueError(f"--trainer.strategy towers splits every layer in two halves: {name} "
                             f"must all be divisible by {TOWERS}, got {values}")


def gather_channels(x: torch.Tensor, mesh: DeviceMesh) -> torch.Tensor:
    """(N, C/2, H, W) tower-local maps -> (N, C, H, W) on both ranks: one all-gather forward.

    The consumer (conv3) is tower-local, so the gradient each rank gets is partial (its tower's
    kernels only): ``Partial()`` makes the backward one reduce-scatter back to the shards."""
    shards = DTensor.from_local(x, mesh, [Shard(1)], run_check=False)
    return shards.redistribute(mesh, [Replicate()]).to_local(grad_placements=[Partial()])


class TowerConv2d(ParallelStyle):
    """Shard a convolution over the tensor-parallel ranks by output channel (rank *i*: tower *i*).

    Args:
        gather_input: The layer reads both towers (conv3): all-gather its input first. Otherwise
            the input is the rank's own tower and the layer needs no communication.
    """

    def __init__(self, gather_input: bool = False) -> None:
        super().__init__()
        self.gather_input = gather_input

    @staticmethod
    def _partition(name: str, module: nn.Module, mesh: DeviceMesh) -> None:
        if not isinstance(module, nn.Conv2d):
            return
        for pname, p in list(module.named_parameters(recurse=False)):
            module.register_parameter(pname, nn.Parameter(distribute_tensor(p, mesh, [Shard(0)])))
        # groups=2 (one group per tower) becomes groups=1 on each rank; a conv reading both
        # towers (groups=1) stays groups=1 on the gathered input. ops.Conv2dReLU computes with
        # the local weight shards and these groups.
        module.groups = max(1, module.groups // mesh.size())

    @staticmethod
    def _gather(module: nn.Module, inputs: tuple, mesh: DeviceMesh) -> tuple:
        return (gather_channels(inputs[0], mesh), *inputs[1:])

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        return distribute_module(module, device_mesh, self._partition,
                                 self._gather if self.gather_input else None)


class TowerDropout(nn.Dropout):
    """Dropout on an activation sharded by feature over the tensor-parallel ranks, (N, F/2).

    Scheme: both ranks draw the mask of the *whole* (N, F) activation -- the same call, from
    the same RNG state (the strategy seeds every rank alike), that one process makes -- and
    each keeps its own half of the columns. So every neuron is dropped (or kept) exactly once,
    with probability p, and with the very mask one process draws from the same seed. (fc7's
    output is replicated on both ranks; there the plain ``nn.Dropout`` draws the same full mask
    on both.) The mask costs N * F random numbers per rank, small beside fc6's GEMM.
    """

    def __init__(self, p: float, mesh: DeviceMesh) -> None:
        super().__init__(p)
        self.mesh = mesh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        n, f = x.shape
        rank = self.mesh.get_local_rank()
        mask = F.dropout(x.new_ones(n, f * self.mesh.size()), self.p)  # 0 or 1 / (1 - p)
        return x * mask[:, rank * f:(rank + 1) * f]


def parallelize(model: AlexNet, mesh: DeviceMesh) -> AlexNet:
    """Turn the one-device ``model`` into this rank's tower, in place (``mesh``: 2 ranks)."""
    check_config(model.config)
    if mesh.size() != TOWERS:
        raise ValueError(f"the tensor-parallel mesh must have {TOWERS} ranks, got {mesh.size()}")
    parallelize_module(model, mesh, {
        "features.conv1": TowerConv2d(),
        "features.conv2": TowerConv2d(),
        "features.conv3": TowerConv2d(gather_input=True),
        "features.conv4": TowerConv2d(),
        "features.conv5": TowerConv2d(),
        # conv5's flattened output is channel-major, so its tower shard is a column block
        "classifier.fc6": ColwiseParallel(input_layouts=Shard(1)),
        "classifier.fc7": RowwiseParallel(),
        "classifier.fc8": ColwiseParallel(output_layouts=Replicate()),
    })
    for name in ("norm_pool1", "norm_pool2"):  # LRN windows inside the rank's one tower
        layer = model.features.get_submodule(name)
        if hasattr(layer, "groups"):
            layer.groups = max(1, layer.groups // TOWERS)
    model.classifier.drop6 = TowerDropout(model.config.dropout, mesh)
    for name in ("relu6", "relu7"):  # their inputs are views of DTensors' local tensors
        model.classifier.get_submodule(name).inplace = False
    return model


def is_parallelized(module: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in module.parameters())


def configure_towers(module: Any) -> None:
    """``configure_model`` of an :class:`~lightning_alexnet.module.AlexNetModule` under the
    strategy: shard ``module.model`` by tower and synchronise every metric over the
    data-parallel ranks only (the two ranks of a pair hold the same predictions). Idempotent."""
    if is_parallelized(module):
        return
    mesh = module.device_mesh
    parallelize(module.model, mesh["tensor_parallel"])
    dp_group = mesh["data_parallel"].get_group()
    for m in module.modules():
        if isinstance(m, Metric):
            m.process_group = dp_group


class _TowersLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher, which first checks that the model can be split in two towers:
    a bad configuration stops before any process is started."""

    def launch(self, function, *args: Any, trainer=None, **kwargs: Any) -> Any:
        module = trainer.lightning_module if trainer is not None else None
        if isinstance(getattr(module, "config", None), AlexNetConfig):
            check_config(module.config)
        return super().launch(function, *args, trainer=trainer, **kwargs)


class TowersStrategy(ModelParallelStrategy):
    """The paper's two towers on two devices (``--trainer.strategy towers``), times data
    parallelism.

    Tensor-parallel size 2; data-parallel size = (devices x nodes) / 2. Checkpoints are single
    files with full tensors, the one-device model's format.

    Args:
        process_group_backend: ``nccl`` on GPUs, ``gloo`` on CPUs by default.
        timeout: Timeout of the collectives.
    """

    def __init__(self, process_group_backend: str | None = None,
                 timeout: timedelta | None = default_pg_timeout) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=TOWERS,
                         save_distributed_checkpoint=False,
                         process_group_backend=process_group_backend, timeout=timeout)

    def _configure_launcher(self) -> None:
        world = self.num_processes * self.num_nodes
        if world % TOWERS:
            raise ValueError(
                f"--trainer.strategy towers puts each of the paper's two towers on its own "
                f"device, so it needs an even number of devices (2: the towers; 4: 2 towers x 2 "
                f"data-parallel replicas; ...), got {self.num_processes} device(s) x "
                f"{self.num_nodes} node(s) = {world}; set --trainer.devices to a multiple of 2")
        super()._configure_launcher()
        if self._launcher is not None:
            self._launcher = _TowersLauncher(self.cluster_environment, self.num_processes,
                                             self.num_nodes)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_processes * self.num_nodes // TOWERS
        super().setup_environment()

    def process_dataloader(self, dataloader: object) -> object:
        # Lightning seeds DataLoader workers by global rank; the two ranks of a tower pair must
        # draw the same crops, flips and colour noise, so seed them by data-parallel rank.
        dataloader = super().process_dataloader(dataloader)
        seeds_workers = int(os.environ.get("PL_SEED_WORKERS", "0"))
        if seeds_workers and getattr(dataloader, "worker_init_fn", 0) is None:
            rank = self.device_mesh["data_parallel"].get_local_rank()
            dataloader.worker_init_fn = partial(pl_worker_init_function, rank=rank)
        return dataloader

    def post_backward(self, closure_loss: torch.Tensor) -> None:
        super().post_backward(closure_loss)
        average_gradients(self.lightning_module.parameters(), self.device_mesh["data_parallel"])


def average_gradients(params: Iterable[nn.Parameter], dp_mesh: DeviceMesh) -> None:
    """Average the gradients over the data-parallel replicas in one all-reduce, after each
    backward pass. (Right under gradient accumulation too: averaging is linear.)"""
    if dp_mesh.size() == 1:
        return
    grads = [p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
             for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, group=dp_mesh.get_group())
    flat /= dp_mesh.size()
    for g, avg in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(avg)


if "towers" not in StrategyRegistry:
    StrategyRegistry.register(
        "towers", TowersStrategy,
        description="AlexNet's two towers on two devices (tensor parallel), times data parallel")
