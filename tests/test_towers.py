"""The two towers on two processes (gloo, CPU) against the one-process grouped model.

Reference: the one-device :class:`AlexNet` (grouped conv2/4/5) in one process on the whole batch.
Under test: ``towers.parallelize`` in 2 processes (one tower each) or 4 (2 towers x 2
data-parallel replicas, each replica half the batch), real ``torch.distributed`` processes.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lightning_alexnet import towers
from lightning_alexnet.model import AlexNet, AlexNetConfig

SIZE = 64  # tiny preset at 64x64: maps 15 -> 7 -> 3 -> 1
BATCH = 8  # per data-parallel replica
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
STEPS = 2  # the second step uses the momentum buffers


def tiny_config(dropout: float = 0.0) -> AlexNetConfig:
    return AlexNetConfig.from_name("tiny", image_size=SIZE, dropout=dropout)


def batch(dp: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH * dp, 3, SIZE, SIZE, generator=g)
    return x, torch.randint(0, 10, (BATCH * dp,), generator=g)


def sgd(params) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def train_steps(model, x, y, after_backward=lambda: None) -> list[dict]:
    """STEPS SGD steps; per step: logits, loss, every gradient, the parameters after the step."""
    opt, out = sgd(model.parameters()), []
    for step in range(STEPS):
        torch.manual_seed(100 + step)  # dropout masks
        opt.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        after_backward()
        grads = {n: _full(p.grad) for n, p in model.named_parameters()}
        opt.step()
        params = {n: _full(p.detach()) for n, p in model.named_parameters()}
        out.append({"logits": logits.detach().clone(), "loss": loss.detach(), "grads": grads,
                    "params": params})
    return out


def _full(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


# --- the processes -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, dropout: float, out_dir: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        dp = world // towers.TOWERS
        mesh = init_device_mesh("cpu", (dp, towers.TOWERS),
                                mesh_dim_names=("data_parallel", "tensor_parallel"))
        torch.manual_seed(0)
        model = towers.parallelize(AlexNet(tiny_config(dropout)), mesh["tensor_parallel"])
        x, y = batch(dp)
        rows = slice(mesh["data_parallel"].get_local_rank() * BATCH, None)
        x, y = x[rows][:BATCH], y[rows][:BATCH]
        steps = train_steps(model, x, y,
                            lambda: towers.average_gradients(model.parameters(), mesh["data_parallel"]))
        torch.save({"steps": steps, "x_rows": rows.start}, Path(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_towers(world: int, tmp_path: Path, dropout: float = 0.0) -> list[dict]:
    """Train in ``world`` processes; each rank's results."""
    # fork: the children inherit the imported modules (spawn re-imports torch and Lightning per
    # process, ~10 s on 2 busy cores); one intra-op thread each, as in DataLoader workers
    mp.start_processes(_worker, args=(world, _free_port(), dropout, str(tmp_path)), nprocs=world,
                       start_method="fork")
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]


def reference(dp: int, dropout: float = 0.0) -> list[dict]:
    torch.manual_seed(0)
    model = AlexNet(tiny_config(dropout))
    return train_steps(model, *batch(dp))


# --- equivalence ---------------------------------------------------------------------------------


def assert_steps_match(got: list[dict], want: list[dict], rows: int) -> None:
    tol = dict(rtol=1.3e-5, atol=1e-6)  # float32 (tests/tolerances.py)
    for step, (g, w) in enumerate(zip(got, want)):
        # logits sum 256 products: atol scaled as in tests/tolerances.py
        torch.testing.assert_close(g["logits"], w["logits"][rows:rows + BATCH], rtol=1.3e-5,
                                   atol=1.6e-4,
                                   msg=lambda m: f"step {step} logits: {m}")
        assert set(g["grads"]) == set(w["grads"])
        for name in w["grads"]:
            torch.testing.assert_close(g["grads"][name], w["grads"][name], **tol,
                                       msg=lambda m: f"step {step} grad {name}: {m}")
            torch.testing.assert_close(g["params"][name], w["params"][name], **tol,
                                       msg=lambda m: f"step {step} param {name}: {m}")


@pytest.mark.parametrize("world", [2, pytest.param(4, id="2x2")])
def test_towers_match_one_process(world, tmp_path):
    """Dropout off: logits, loss, every gradient and the parameters after two SGD steps
    (momentum, weight decay) equal the one-process grouped model's on the whole batch."""
    dp = world // 2
    want = reference(dp)
    ranks = run_towers(world, tmp_path)
    for got in ranks:
        assert_steps_match(got["steps"], want, got["x_rows"])
    for step, w in enumerate(want):  # each replica's loss is its half's mean
        replicas = torch.stack([r["steps"][step]["loss"] for r in ranks[::2]])
        torch.testing.assert_close(replicas.mean(), w["loss"], rtol=1.3e-5, atol=0)
    # the test can tell a wrong gradient from a right one: steps really change the weights
    assert not torch.equal(want[0]["params"]["features.conv3.weight"],
                           want[1]["params"]["features.conv3.weight"])
