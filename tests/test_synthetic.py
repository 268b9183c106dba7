"""The built-in shapes data set: deterministic, balanced, atomic, and not a colour test."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from lightning_alexnet import synthetic
from lightning_alexnet.data import ImageFolderDataModule

SMALL = {"train": 3, "val": 2}

# --- reference: a colour-only classifier, which must stay near chance --------------------------


def nearest_mean_colour_accuracy(per_class: int, seed: int) -> float:
    """Fit class means of (mean RGB, mean brightness spread) on half, score on the other half."""
    feats, labels = [], []
    for c, shape in enumerate(synthetic.CLASSES):
        for i in range(per_class):
            a = np.asarray(synthetic.draw_image(shape, np.random.default_rng([seed, c, i])), np.float64)
            feats.append(np.concatenate([a.mean((0, 1)), a.std((0, 1))]))
            labels.append(c)
    feats, labels = np.array(feats), np.array(labels)
    fit = np.arange(len(labels)) % 2 == 0
    centres = np.stack([feats[fit & (labels == c)].mean(0) for c in range(len(synthetic.CLASSES))])
    guess = np.argmin(((feats[~fit, None] - centres[None]) ** 2).sum(-1), 1)
    return float((guess == labels[~fit]).mean())


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.jpg"))}


# --- tests ------------------------------------------------------------------------------------


def test_generation_is_deterministic_and_balanced(tmp_path):
    synthetic.generate(tmp_path / "a", SMALL, workers=1)
    synthetic.generate(tmp_path / "b", SMALL, workers=2)  # parallel: same bytes
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert a == b and len(a) == 10 * 5
    for split, n in SMALL.items():
        for shape in synthetic.CLASSES:
            assert len(list((tmp_path / "a" / split / shape).glob("*.jpg"))) == n
    other = tmp_path / "c"
    synthetic.generate(other, SMALL, seed=1, workers=1)
    assert tree_digest(other) != a  # the seed matters


def test_images_have_the_documented_size_and_a_large_shape():
    rng = np.random.default_rng(0)
    for shape in synthetic.CLASSES:
        for _ in range(5):
            mask = np.asarray(synthetic.draw_mask(shape, rng)) > 127
            assert mask.shape == (synthetic.SIZE, synthetic.SIZE)
            rows, cols = np.nonzero(mask)
            extent = max(rows.max() - rows.min(), cols.max() - cols.min()) / synthetic.SIZE
            assert 0.25 <= extent <= 0.85, (shape, extent)  # big enough to survive a crop
            assert rows.min() > 0 and cols.min() > 0 and rows.max() < synthetic.SIZE - 1  # inside
    assert synthetic.draw_image("star", rng).size == (synthetic.SIZE, synthetic.SIZE)


def test_colour_alone_does_not_give_the_class_away():
    accuracy = nearest_mean_colour_accuracy(per_class=25, seed=7)
    assert accuracy < 0.25  # chance is 0.10; a shape-blind colour classifier stays near it


def test_unknown_shape_is_named():
    with pytest.raises(ValueError, match="unknown shape 'blob'"):
        synthetic.draw_mask("blob", np.random.default_rng(0))


@pytest.fixture()
def small_spec(monkeypatch):
    monkeypatch.setattr(synthetic, "PER_CLASS", SMALL)


def test_ensure_generates_once_then_reuses(tmp_path, monkeypatch, small_spec):
    monkeypatch.setenv("LIGHTNING_ALEXNET_DATA", str(tmp_path / "cache"))
    root = synthetic.ensure()
    assert root == tmp_path / "cache" / synthetic.NAME and (root / synthetic.MANIFEST).is_file()
    digest = tree_digest(root)

    def fail(*a, **k):
        raise AssertionError("generated twice")

    monkeypatch.setattr(synthetic, "generate", fail)
    assert synthetic.ensure() == root and tree_digest(root) == digest


def test_interrupted_generation_leaves_nothing_to_reuse(tmp_path, monkeypatch, small_spec):
    root = tmp_path / synthetic.NAME
    real = synthetic.generate

    def interrupted(path, *a, **k):
        real(path, {"train": 1, "val": 0}, workers=1)
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure(root)
    assert list(tmp_path.iterdir()) == []  # neither the set nor the partial folder
    monkeypatch.setattr(synthetic, "generate", real)
    assert (synthetic.ensure(root) / synthetic.MANIFEST).is_file()


def test_unfinished_folder_in_the_way_is_named(tmp_path):
    (tmp_path / synthetic.NAME).mkdir()
    with pytest.raises(FileExistsError, match=f"{tmp_path / synthetic.NAME} exists but holds no"):
        synthetic.ensure(tmp_path / synthetic.NAME)


def test_datamodule_without_root_uses_the_built_in_set(tmp_path, monkeypatch, small_spec, caplog):
    monkeypatch.setenv("LIGHTNING_ALEXNET_DATA", str(tmp_path))
    with caplog.at_level("INFO"):
        dm = ImageFolderDataModule(resize_size=64, crop_size=56, num_workers=0, batch_size=10)
    assert dm.root == tmp_path / synthetic.NAME
    assert dm.classes == sorted(synthetic.CLASSES) and dm.num_classes == 10
    assert f"at {tmp_path / synthetic.NAME}" in caplog.text and "30 train + 20 val" in caplog.text
    dm.setup("fit")
    x, y, skipped = next(iter(dm.val_dataloader()))  # finished in the workers: a Batch
    assert skipped == ()
    assert x.shape == (10, 3, 56, 56) and y.tolist() == [0] * 2 + [1] * 2 + [2] * 2 + [3] * 2 + [4] * 2
