"""``show filters|predictions|neighbours|curves|confusion`` through the command line."""

import re
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import WORDNET_CLASSES
from PIL import Image

from lightning_alexnet.cli import main
from lightning_alexnet.module import AlexNetModule
from lightning_alexnet.show import filter_grids

pytest.importorskip("matplotlib", reason="the show commands need the [show] extra (matplotlib)")


def show(capsys, *args) -> tuple[str, str]:
    main(["show", *map(str, args)])
    printed = capsys.readouterr()
    return printed.out, printed.err


def check_png(out: str, path, min_side: int = 200) -> Image.Image:
    assert out.strip().splitlines()[-1] == str(path)  # the path is the last line
    assert path.stat().st_size > 5_000
    image = Image.open(path)
    assert image.format == "PNG" and min(image.size) >= min_side
    assert np.asarray(image.convert("L")).std() > 10  # not a blank page
    return image


def test_filter_grid_layout_matches_conv1(tiny_run):
    _, _, ckpt = tiny_run
    module = AlexNetModule.load_from_checkpoint(ckpt, map_location="cpu")
    w = module.model.features.conv1.weight.detach()  # (32, 3, 11, 11), two towers of 16
    grids = filter_grids(w, towers=2, cols=8)
    assert len(grids) == 2 and grids[0].shape == (2 * 12 - 1, 8 * 12 - 1, 3)
    for tower, grid in enumerate(grids):
        for j in range(16):
            r, c = divmod(j, 8)
            kernel = w[tower * 16 + j].permute(1, 2, 0).double().numpy()
            want = (kernel - kernel.min()) / (kernel.max() - kernel.min())
            np.testing.assert_allclose(grid[r * 12:r * 12 + 11, c * 12:c * 12 + 11], want,
                                       atol=1e-6)
        assert (grid[11, :] == 1).all() and (grid[:, 11] == 1).all()  # white gaps


def test_show_filters(tiny_run, tmp_path, capsys):
    _, _, ckpt = tiny_run
    out, _ = show(capsys, "filters", "--ckpt_path", ckpt, "--out", tmp_path / "f.png")
    check_png(out, tmp_path / "f.png")


def test_show_predictions_default_out(tiny_run, capsys):
    _, run, ckpt = tiny_run
    out, _ = show(capsys, "predictions", "--ckpt_path", ckpt, "--data.num_workers", "0",
                  "--count", "3")
    check_png(out, run / "pictures" / "predictions.png")


def test_show_neighbours_finds_a_planted_copy(tiny_run, tmp_path, capsys):
    root, _, ckpt = tiny_run
    data = tmp_path / "data"
    shutil.copytree(root / "train", data / "train")
    shutil.copytree(root / "val", data / "val")
    query = data / "val" / WORDNET_CLASSES[2] / "0.jpg"  # one of the 3 queries
    planted = data / "train" / WORDNET_CLASSES[0] / "planted.jpg"  # filed under another class
    shutil.copy(query, planted)
    args = ["neighbours", "--ckpt_path", ckpt, "--data.root", data, "--data.num_workers", "0",
            "--count", "3", "--out", tmp_path / "n.png"]
    out, _ = show(capsys, *args)
    check_png(out, tmp_path / "n.png")
    line = next(t for t in out.splitlines() if t.startswith(f"{query}: "))
    hits = re.findall(r"(\S+) \(d=([0-9.e+-]+)\)", line.split(": ", 1)[1])
    # the copy is nearest; its distance is float16 rounding (the features are stored in fp16
    # and a batch of another size may round one unit apart), far below the next image's
    assert hits[0][0] == str(planted)
    assert float(hits[0][1]) < 0.01 * float(hits[1][1])
    assert len(re.findall(r"\(d=", line)) == 6
    cache = list((data / ".lightning_alexnet").glob("fc7-*.npy"))
    assert len([p for p in cache if not p.name.endswith("-ok.npy")]) == 1
    assert "computing" in out
    out, _ = show(capsys, *args)  # the second run reads the cached features
    assert "reading" in out and f"{query}: {planted} (d=" in out


def test_show_curves(tiny_run, tmp_path, capsys):
    _, run, _ = tiny_run
    out, _ = show(capsys, "curves", "--run", run, "--out", tmp_path / "c.png")
    check_png(out, tmp_path / "c.png")


def test_show_confusion_lists_pairs(tiny_run, tmp_path, capsys):
    _, _, ckpt = tiny_run
    out, _ = show(capsys, "confusion", "--ckpt_path", ckpt, "--data.num_workers", "0",
                  "--out", tmp_path / "m.png")
    check_png(out, tmp_path / "m.png")
    head = re.search(r"of (\d+) validation images, top-1 error ([0-9.]+)", out)
    assert head and int(head.group(1)) == 9
    pairs = re.findall(r"-> .*: (\d+) \(", out)
    wrong = round(float(head.group(2)) * 9)
    assert sum(map(int, pairs)) == wrong  # 3 classes: every confusion is listed


@pytest.mark.parametrize("case", ["no_run", "empty_run", "other_classes", "no_matplotlib"])
def test_show_bad_input(tiny_run, tmp_path, capsys, monkeypatch, case):
    root, _, ckpt = tiny_run
    if case == "no_run":
        args, match = ["curves", "--run", tmp_path / "nope"], "does not exist"
    elif case == "empty_run":
        args, match = ["curves", "--run", tmp_path], "holds no metrics.csv"
    elif case == "other_classes":
        (tmp_path / "val" / "dog").mkdir(parents=True)
        shutil.copy(next((root / "val" / WORDNET_CLASSES[0]).iterdir()), tmp_path / "val" / "dog")
        args = ["predictions", "--ckpt_path", ckpt, "--data.root", tmp_path]
        match = "class 'dog' of"
    else:
        monkeypatch.setitem(sys.modules, "matplotlib", None)
        args, match = ["filters", "--ckpt_path", ckpt], 'pip install -e ".[show]"'
    with pytest.raises(SystemExit) as e:
        show(capsys, *args)
    assert e.value.code != 0 and match in str(e.value.code)


def test_checkpoint_of_a_one_tower_network_draws_one_block():
    w = torch.randn(8, 3, 11, 11)
    (grid,) = filter_grids(w, towers=1, cols=4)
    assert grid.shape == (2 * 12 - 1, 4 * 12 - 1, 3)
    assert grid.min() == 0 and grid.max() == 1
