"""The two towers on two processes (gloo, CPU) against the one-process grouped model.

Reference: the one-device :class:`AlexNet` (grouped conv2/4/5) in one process on the whole batch.
Under test: ``towers.parallelize`` in 2 processes (one tower each) or 4 (2 towers x 2
data-parallel replicas, each replica half the batch), real ``torch.distributed`` processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lightning_alexnet import towers
from lightning_alexnet.model import AlexNet, AlexNetConfig
from lightning_alexnet.module import AlexNetModule

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
        stored = {n: p.detach().to_local().clone() for n, p in model.named_parameters()}
        x, y = batch(dp)
        start = mesh["data_parallel"].get_local_rank() * BATCH  # this replica's images
        def average() -> None:
            towers.average_gradients(model.parameters(), mesh["data_parallel"])

        steps = train_steps(model, x[start:start + BATCH], y[start:start + BATCH], average)
        tower = mesh["tensor_parallel"].get_local_rank()
        # the module's metrics, synchronised as under the strategy: images counted once
        module = AlexNetModule(AlexNetConfig.from_name("tiny", num_classes=10, image_size=SIZE))
        module._device_mesh = mesh
        module.configure_model()
        metric = module.val_metrics["val/top1_error"]
        metric.update(steps[0]["logits"], y[start:start + BATCH])
        metric.sync()
        counted = int(metric.tp.sum() + metric.fn.sum())
        torch.save({"steps": steps, "x_rows": start, "stored": stored, "tower": tower,
                    "counted": counted}, Path(out_dir, f"rank{rank}.pt"))
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


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """float32 rtol (tests/tolerances.py); atol 2e-5 of the tensor's largest entry: the sums
    (batch, K) run in another order on two processes, and after a step the round-off of the
    first carries into the second step's gradients."""
    atol = max(1e-6, 2e-5 * want.abs().max().item())
    torch.testing.assert_close(got, want, rtol=1.3e-5, atol=atol, msg=lambda m: f"{what}: {m}")


def assert_steps_match(got: list[dict], want: list[dict], rows: int) -> None:
    for step, (g, w) in enumerate(zip(got, want)):
        assert_close(g["logits"], w["logits"][rows:rows + BATCH], f"step {step} logits")
        assert set(g["grads"]) == set(w["grads"]) == set(w["params"])
        for name in w["grads"]:
            assert_close(g["grads"][name], w["grads"][name], f"step {step} grad {name}")
            assert_close(g["params"][name], w["params"][name], f"step {step} param {name}")


@pytest.mark.parametrize("world", [2, pytest.param(4, id="2x2")])
def test_towers_match_one_process(world, tmp_path):
    """Dropout off: logits, loss, every gradient and the parameters after two SGD steps
    (momentum, weight decay) equal the one-process grouped model's on the whole batch."""
    dp = world // 2
    want = reference(dp)
    ranks = run_towers(world, tmp_path)
    for got in ranks:
        assert_steps_match(got["steps"], want, got["x_rows"])
        assert got["counted"] == BATCH * dp  # metrics sync over the replicas, not the towers
    # each rank stores its tower only: half of every layer (fc7's bias, 256 numbers, whole)
    torch.manual_seed(0)
    init = dict(AlexNet(tiny_config()).named_parameters())
    for got in ranks:
        t, stored = got["tower"], got["stored"]
        total = sum(v.numel() for v in init.values())
        assert sum(v.numel() for v in stored.values()) == (total + 256) // 2
        for name, half in [("features.conv1.weight", slice(16 * t, 16 * t + 16)),
                           ("features.conv4.weight", slice(48 * t, 48 * t + 48)),
                           ("classifier.fc6.weight", slice(128 * t, 128 * t + 128))]:
            torch.testing.assert_close(stored[name], init[name][half])
        fc7 = init["classifier.fc7.weight"][:, 128 * t:128 * t + 128]  # row-parallel: columns
        torch.testing.assert_close(stored["classifier.fc7.weight"], fc7)
    for step, w in enumerate(want):  # each replica's loss is its half's mean
        replicas = torch.stack([r["steps"][step]["loss"] for r in ranks[::2]])
        torch.testing.assert_close(replicas.mean(), w["loss"], rtol=1.3e-5, atol=0)
    # the test can tell a wrong gradient from a right one: steps really change the weights
    assert not torch.equal(want[0]["params"]["features.conv3.weight"],
                           want[1]["params"]["features.conv3.weight"])


def test_dropout_drops_each_neuron_once_as_one_process(tmp_path):
    """Dropout 0.5 on: with the same seed the two towers draw the one-process masks (fc6's
    sharded output: each rank its columns of one full mask), so everything matches again."""
    want = reference(1, dropout=0.5)
    for got in run_towers(2, tmp_path, dropout=0.5):
        assert_steps_match(got["steps"], want, 0)
    off = reference(1)  # the masks did act
    assert not torch.allclose(off[0]["logits"], want[0]["logits"], atol=1e-3)


# --- bad input: one clear error before any process is started ------------------------------------


@pytest.mark.parametrize("devices", [1, 3])
def test_odd_device_count_is_refused(devices):
    import pytorch_lightning as pl

    message = f"even number of devices.*= {devices}; set --trainer.devices"
    with pytest.raises(ValueError, match=message):
        pl.Trainer(accelerator="cpu", devices=devices, strategy="towers")


def test_one_tower_model_is_refused_before_launch(monkeypatch):
    import pytorch_lightning as pl
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    from lightning_alexnet.module import AlexNetModule

    def must_not_launch(*args, **kwargs):
        raise AssertionError("processes were started")

    monkeypatch.setattr(_SubprocessScriptLauncher, "_call_children_scripts", must_not_launch)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="towers", logger=False)
    with pytest.raises(ValueError, match="towers=1; use --model.network.towers 2"):
        config = AlexNetConfig.from_name("tiny", towers=1, num_classes=4, image_size=SIZE)
        trainer.fit(AlexNetModule(config))


def test_odd_widths_are_refused():
    with pytest.raises(ValueError, match="divisible by towers=2, got .*63"):  # the config itself
        AlexNetConfig.from_name("tiny", conv_channels=(32, 64, 96, 96, 63))
    config = AlexNetConfig.from_name("tiny", fc_features=(256, 255))  # fine for one device
    message = r"fc_features must all be divisible by 2, got \(256, 255\)"
    with pytest.raises(ValueError, match=message):
        towers.check_config(config)


def test_loader_workers_seeded_by_data_parallel_rank(monkeypatch):
    """Lightning seeds DataLoader workers by global rank; the two ranks of a tower pair must
    draw the same crops, so the strategy seeds them by data-parallel rank (here 1 of a 2x2
    mesh, global rank 3)."""
    from functools import partial

    from lightning_fabric.utilities.seed import pl_worker_init_function
    from torch.utils.data import DataLoader

    class Mesh:  # the data-parallel coordinate of global rank 3 in a (2, 2) mesh
        def __getitem__(self, name):
            assert name == "data_parallel"
            return self

        def get_local_rank(self):
            return 1

    monkeypatch.setenv("PL_SEED_WORKERS", "1")
    strategy = towers.TowersStrategy()
    strategy._device_mesh = Mesh()
    loader = strategy.process_dataloader(DataLoader(range(4), num_workers=1))
    assert isinstance(loader.worker_init_fn, partial)
    assert loader.worker_init_fn.func is pl_worker_init_function
    assert loader.worker_init_fn.keywords == {"rank": 1}


# --- the command line: fit on two processes, checkpoints across the two layouts -----------------

ROOT = Path(__file__).resolve().parents[1]
# One full batch per epoch (16 images), no augmentation, no dropout: a run's result does not
# depend on the order of the images, so the one- and two-device runs must agree.
FIT = [
    "--config", "tiny", "--data.resize_size", "72", "--data.crop_size", "64",
    "--data.batch_size", "16", "--data.num_workers", "0", "--data.random_crop", "false",
    "--data.hflip", "false", "--data.pca_noise", "0", "--model.network.dropout", "0",
    "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]
TOWERS_FLAGS = ["--trainer.devices", "2", "--trainer.strategy", "towers"]


def make_data(root: Path) -> Path:
    from test_cli import make_tree

    return make_tree(root, classes=("disc", "bar", "ring", "dot"), per_class=(4, 2))


def run_cli(args: list[str], cwd: Path, launcher: list[str] | None = None,
            expect: tuple[str, ...] = (), ckpt: bool = True) -> Path | None:
    """``python -m lightning_alexnet ARGS`` in ``cwd`` (or under ``launcher``), whose output
    holds ``expect``; its last.ckpt (when ``ckpt``)."""
    cmd = [*(launcher or [sys.executable]), "-m", "lightning_alexnet", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for text in ("Starting with 2 processes", *expect):
        assert text in done.stdout + done.stderr, text
    if not ckpt:
        return None
    (last,) = cwd.glob("runs/lightning_logs/version_*/checkpoints/last.ckpt")
    return last


def in_dir(cwd: Path, args: list[str]):
    from lightning_alexnet.cli import main

    old = os.getcwd()
    os.chdir(cwd)
    try:
        return main([str(a) for a in args])
    finally:
        os.chdir(old)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def assert_checkpoints_match(got: dict, want: dict) -> None:
    assert got["state_dict"].keys() == want["state_dict"].keys()
    for k, w in want["state_dict"].items():
        assert_close(got["state_dict"][k], w, k)
    got_opt, want_opt = got["optimizer_states"][0], want["optimizer_states"][0]
    assert got_opt["param_groups"] == want_opt["param_groups"]
    for i, w in want_opt["state"].items():
        assert_close(got_opt["state"][i]["momentum_buffer"], w["momentum_buffer"], f"momentum {i}")


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """A one-device fit of one epoch: (its folder, data root, last.ckpt)."""
    work = tmp_path_factory.mktemp("one")
    root = make_data(work / "data")
    cli = in_dir(work, ["fit", *FIT, "--data.root", root, "--trainer.max_epochs", "1"])
    return work, root, Path(work, cli.trainer.checkpoint_callback.last_model_path)


def test_cli_fit_on_two_processes_checkpoint_loads_in_one(one_device, tmp_path):
    """``fit --trainer.devices 2 --trainer.strategy towers`` trains as one device does; its
    checkpoint has the one-device format and ``test`` in one process reproduces the error the
    two processes logged (the test split is the validation folder here)."""
    _, root, one_ckpt = one_device
    last = run_cli(["fit", *FIT, *TOWERS_FLAGS, "--data.root", root, "--trainer.max_epochs", "1"],
                   tmp_path)
    ckpt, want = load(last), load(one_ckpt)
    assert_checkpoints_match(ckpt, want)  # same keys, shapes, weights and momentum
    logged = next(v for k, v in ckpt["callbacks"].items() if k.startswith("Checkpoint"))
    logged = float(logged["best_model_score"])  # val/top1_error of the two-process run

    test = in_dir(tmp_path, ["test", *FIT, "--data.root", root, "--ckpt_path", last])
    assert test.trainer.strategy.world_size == 1
    tested = test.trainer.callback_metrics["test/top1_error"].item()  # centre crops of val/
    assert tested == pytest.approx(logged, abs=1e-6)


def test_one_device_checkpoint_resumes_on_two_processes(one_device, tmp_path):
    """A one-device checkpoint resumes a two-process run (launched by torchrun), weights and
    momentum included: one more epoch lands where the one-device resume lands."""
    _, root, one_ckpt = one_device
    resume = ["fit", *FIT, "--data.root", root, "--trainer.max_epochs", "2",
              "--ckpt_path", one_ckpt]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(_free_port())]
    two = load(run_cli([*resume, *TOWERS_FLAGS], tmp_path, launcher=torchrun))
    (tmp_path / "one").mkdir()
    one = in_dir(tmp_path / "one", resume)
    assert two["epoch"] == one.trainer.current_epoch - 1 == 1
    one_last = Path(tmp_path / "one", one.trainer.checkpoint_callback.last_model_path)
    assert_checkpoints_match(two, load(one_last))
    # the resumed epoch did move the weights (so matching them tests the restored momentum)
    before = load(one_ckpt)["state_dict"]["model.features.conv3.weight"]
    assert not torch.allclose(two["state_dict"]["model.features.conv3.weight"], before, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "towers"])
def test_two_processes_step_over_a_batch_of_only_unreadable_files(strategy, tmp_path):
    """One image a batch, one of them unreadable: a process's batch is empty. Lightning cannot
    skip the step on one process only (it stops the run: "Skipping the `training_step` by
    returning None in distributed training is not supported"), so that process steps with zero
    gradients and the run goes on."""
    root = make_data(tmp_path / "data")
    (root / "train" / "disc" / "0_bad.jpg").write_text("not a JPEG")
    last = run_cli(["fit", *FIT, "--data.batch_size", "1", "--data.root", root,
                    "--trainer.max_epochs", "1", "--trainer.devices", "2",
                    "--trainer.strategy", strategy], tmp_path,
                   expect=("train: skipped 1 unreadable image file(s) in this pass",))
    # ddp: 17 files over 2 processes, 9 steps each; towers: both processes see every batch
    assert load(last)["global_step"] == {"ddp": 9, "towers": 17}[strategy]


@pytest.mark.slow
def test_a_process_whose_validation_files_are_all_unreadable_stays_in_step(tmp_path):
    """ddp's validation sampler gives process 1 every second file (classes and files in
    order): make those unreadable and process 1's every validation batch is empty. It still
    logs val/loss (weight 0) and the metrics, so the epoch-end syncs (the sanity check's
    too) do not wait for it forever; then `test` on two processes, whose test split is the same
    folder, likewise."""
    root = make_data(tmp_path / "data")
    for folder in sorted((root / "val").iterdir()):
        sorted(folder.iterdir())[1].write_text("not a JPEG")  # the second file of each class
    two = ["--data.batch_size", "1", "--data.root", root, "--trainer.devices", "2",
           "--trainer.strategy", "ddp"]
    last = run_cli(["fit", *FIT, *two, "--trainer.max_epochs", "1"], tmp_path,
                   expect=("val: skipped 4 unreadable image file(s) in this pass",))
    logged = float(next(v for k, v in load(last)["callbacks"].items()
                        if k.startswith("Checkpoint"))["best_model_score"])
    assert 0.0 <= logged <= 1.0  # val/top1_error over the 4 readable images
    run_cli(["test", *FIT, *two, "--ckpt_path", last], tmp_path,
            expect=("test: skipped 4 unreadable image file(s) in this pass",), ckpt=False)
