"""``predict`` through the command line: table, CSV/JSON, classes from the checkpoint, bad input."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import WORDNET_CLASSES

from lightning_alexnet.cli import main
from lightning_alexnet.data import ImageFolderDataModule
from lightning_alexnet.imagenet_classes import readable, synset_words
from lightning_alexnet.module import AlexNetModule


def run(capsys, *args):
    main(["predict", "--data.num_workers", "0", "--trainer.accelerator", "cpu", *map(str, args)])
    return capsys.readouterr()


def expected_top5(root: Path, ckpt: Path) -> dict[str, list[tuple[str, float]]]:
    """The module's own predict_step on the validation images, preprocessed by the DataModule
    of the training folder (an independent path to the checkpoint's stored preprocessing)."""
    dm = ImageFolderDataModule(root=str(root), resize_size=72, crop_size=64, num_workers=0,
                               pixel_scale=0.015625)
    dm.setup("validate")
    module = AlexNetModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    out = {}
    with torch.no_grad():
        for i, (path, _) in enumerate(dm.samples("val")):
            x, _ = dm.datasets["val"].example(i)
            (row,) = module.predict_step((x[None], [path]), 0)
            out[path] = row["top5"]
    return out


def test_checkpoint_records_classes_and_preprocessing(tiny_run):
    _, _, ckpt = tiny_run
    info = torch.load(ckpt, map_location="cpu", weights_only=True)["lightning_alexnet"]
    assert info["classes"] == sorted(WORDNET_CLASSES)
    assert (info["resize_size"], info["crop_size"], info["pixel_scale"]) == (72, 64, 0.015625)
    assert info["mean"].shape == (72, 72, 3) and 0 < float(info["mean"].mean()) < 255


def test_predict_csv_matches_predict_step(tiny_run, tmp_path, capsys):
    root, _, ckpt = tiny_run
    out = tmp_path / "preds.csv"
    printed = run(capsys, "--ckpt_path", ckpt, "--data.predict_root", root / "val", "--output", out)
    want = expected_top5(root, ckpt)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == sorted(want)
    for r in rows:
        assert [r[f"class{k}"] for k in (1, 2, 3)] == [c for c, _ in want[r["path"]]]
        assert [float(r[f"prob{k}"]) for k in (1, 2, 3)] == pytest.approx(
            [p for _, p in want[r["path"]]], abs=1e-6)
        assert r["name1"] == readable(r["class1"])
    assert "class4" not in rows[0]  # 3 classes: the "top-5" has 3 entries
    lines = printed.out.strip().splitlines()
    assert lines[-1].startswith(f"classified {len(want)} image(s)") and str(out) in lines[-1]
    assert "tabby (n02123045)" in printed.out and "crane (n03126707)" in printed.out


def test_predict_json_needs_no_training_folder(tiny_run, tmp_path, capsys):
    root, _, ckpt = tiny_run
    images = tmp_path / "images"
    shutil.copytree(root / "val" / WORDNET_CLASSES[0], images)
    want = expected_top5(root, ckpt)
    moved = root.with_name("data-moved")
    root.rename(moved)  # the training folder is gone: everything must come from the checkpoint
    try:
        run(capsys, "--ckpt_path", ckpt, "--data.predict_root", images, "--output",
            tmp_path / "p.json")
    finally:
        moved.rename(root)
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == len(list(images.iterdir())) == 3
    for r in rows:
        ref = want[str(root / "val" / WORDNET_CLASSES[0] / Path(r["path"]).name)]
        assert [t["class"] for t in r["top5"]] == [c for c, _ in ref]
        assert [t["prob"] for t in r["top5"]] == pytest.approx([p for _, p in ref], abs=1e-6)
        assert r["top5"][0]["name"] == readable(r["top5"][0]["class"])


def test_predict_one_file_and_skipped_files_named(tiny_run, tmp_path, capsys, caplog):
    root, _, ckpt = tiny_run
    image = next((root / "val" / WORDNET_CLASSES[1]).iterdir())
    printed = run(capsys, "--ckpt_path", ckpt, "--data.predict_root", image)
    assert printed.out.splitlines()[0] == str(image)
    assert printed.out.strip().splitlines()[-1].startswith("classified 1 image(s)")

    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(image, folder / "good.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    printed = run(capsys, "--ckpt_path", ckpt, "--data.predict_root", folder)
    assert "notes.txt" in printed.err
    assert "skipped 1 unreadable file(s)" in printed.out.strip().splitlines()[-1]
    assert caplog.text.count("predict: skipped 1 unreadable image file(s) in this pass") == 1
    assert "broken.jpg: not an image Pillow can read" in caplog.text


def test_synset_table_is_complete():
    table = synset_words()
    assert len(table) == 1000 and all(k.startswith("n") and len(k) == 9 for k in table)
    assert table["n01440764"] == "tench, Tinca tinca"
    assert readable("n03126707") == "crane (n03126707)" and readable("cat") == "cat"


@pytest.mark.parametrize("case", ["missing_ckpt", "empty_folder", "only_broken", "bad_suffix",
                                  "no_record"])
def test_predict_bad_input(tiny_run, tmp_path, capsys, case):
    root, _, ckpt = tiny_run
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(next((root / "val" / WORDNET_CLASSES[0]).iterdir()), folder / "a.jpg")
    args = {"ckpt": ckpt, "root": folder, "extra": []}
    if case == "missing_ckpt":
        args["ckpt"], match = tmp_path / "nope.ckpt", "nope.ckpt does not exist"
    elif case == "empty_folder":
        (folder / "a.jpg").unlink()
        match = "contains no image files"
    elif case == "only_broken":
        (folder / "a.jpg").write_bytes(b"garbage")
        match = "none of the 1 image file"
    elif case == "bad_suffix":
        args["extra"], match = ["--output", tmp_path / "p.txt"], "must end in .csv or .json"
    else:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        del state["lightning_alexnet"]
        args["ckpt"] = tmp_path / "old.ckpt"
        torch.save(state, args["ckpt"])
        match = "does not record its class names"
    with pytest.raises(SystemExit) as e:
        run(capsys, "--ckpt_path", args["ckpt"], "--data.predict_root", args["root"], *args["extra"])
    assert e.value.code != 0 and match in str(e.value.code)


def test_predict_error_has_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "lightning_alexnet", "predict", "--ckpt_path",
                           str(tmp_path / "missing.ckpt"), "--data.predict_root", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: checkpoint")
