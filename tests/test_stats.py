"""Training-set statistics: mean image, RGB covariance eigenpairs, the keyed cache."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from lightning_alexnet import stats
from lightning_alexnet.data import ImageFolderDataModule
from lightning_alexnet.dataset import decode_center

# --- reference: images whose statistics are known before they are drawn ----------------------
#
# Four colours; image k gives pixel p the colour (base[p] + k) mod 4, where base holds each
# colour equally often. So every image holds each colour on exactly a quarter of its pixels
# (pixel covariance = the palette's covariance) and, over four images, every pixel takes each
# colour once (mean image = the palette's mean everywhere).

PALETTE = np.array([[200, 30, 40], [20, 180, 60], [90, 90, 250], [240, 230, 10]], np.uint8)
SIZE = 16


def palette_images(rng) -> list[np.ndarray]:
    base = rng.permutation(np.repeat(np.arange(4), SIZE * SIZE // 4)).reshape(SIZE, SIZE)
    return [PALETTE[(base + k) % 4] for k in range(4)]


def expected_stats() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean RGB on [0, 255], eigenvalues descending, eigenvectors) of the palette, float64."""
    p = PALETTE.astype(np.float64)
    cov = np.cov(p.T / 255.0, bias=True)
    vals, vecs = np.linalg.eigh(cov)
    return p.mean(0), vals[::-1], vecs[:, ::-1]


def write_tree(root, images_per_class: dict[str, list[np.ndarray]], split="train", ext="png"):
    for name, images in images_per_class.items():
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(images):
            Image.fromarray(a).save(root / split / name / f"{i}.{ext}")
    return root


def assert_eigvecs_match(actual, expected):
    for k in range(3):  # each column up to sign
        sign = np.sign(actual[:, k] @ expected[:, k])
        np.testing.assert_allclose(actual[:, k] * sign, expected[:, k], atol=1e-9)


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-worker-pool"])
def test_statistics_match_a_known_colour_distribution(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(stats, "CHUNK", 3)  # several chunks, so the pool path merges partial sums
    rng = np.random.default_rng(0)
    files = []
    for rep in range(3):  # 12 lossless images, each set of four with the known statistics
        for k, a in enumerate(palette_images(rng)):
            files.append(str(tmp_path / f"{rep}_{k}.png"))
            Image.fromarray(a).save(files[-1])
    result, failed = stats.compute(files, SIZE, decode_center, workers=workers)
    mean_rgb, vals, vecs = expected_stats()
    assert failed == [] and result.count == 12
    np.testing.assert_allclose(result.mean, np.broadcast_to(mean_rgb, (SIZE, SIZE, 3)), atol=1e-4)
    np.testing.assert_allclose(result.eigvals, vals, rtol=1e-9, atol=1e-12)
    assert_eigvecs_match(result.eigvecs, vecs)


def test_accumulator_equals_direct_float64_computation():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8)
    acc = stats.Accumulator(8)
    half = stats.Accumulator(8)
    for i, a in enumerate(images):
        (acc if i < 4 else half).add(a)
    acc.merge(half)
    result = acc.finish()
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    vals, vecs = np.linalg.eigh(np.cov(pixels.T, bias=True))
    np.testing.assert_allclose(result.mean, images.mean(0), rtol=1e-6)
    np.testing.assert_allclose(result.eigvals, vals[::-1], rtol=1e-9)
    assert_eigvecs_match(result.eigvecs, vecs[:, ::-1])


def test_no_readable_image_is_an_error():
    with pytest.raises(ValueError, match="no readable training image"):
        stats.Accumulator(4).finish()


def test_unreadable_files_are_reported_not_fatal(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(PALETTE[np.zeros((SIZE, SIZE), int)]).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    result, failed = stats.compute([str(good), str(bad)], SIZE, decode_center)
    assert result.count == 1
    assert len(failed) == 1 and failed[0].startswith(f"{bad}: not an image Pillow can read")


# --- the cache next to the data ---------------------------------------------------------------


def small_tree(root):
    rng = np.random.default_rng(2)
    imgs = palette_images(rng)
    write_tree(root, {"a": imgs[:2], "b": imgs[2:]})
    write_tree(root, {"a": imgs[:1], "b": imgs[1:2]}, split="val")
    return root


def datamodule(root, **kw):
    return ImageFolderDataModule(str(root), resize_size=SIZE, crop_size=12, num_workers=0, **kw)


def test_statistics_cached_next_to_the_data_and_reused(tmp_path, monkeypatch):
    root = small_tree(tmp_path)
    dm = datamodule(root)
    dm.prepare()
    path = dm.stats_path()
    assert path.parent == root / ".lightning_alexnet" and path.is_file()
    _, vals, _ = expected_stats()
    np.testing.assert_allclose(dm.stats.eigvals, vals, rtol=1e-9)

    def fail(*a, **k):
        raise AssertionError("statistics recomputed although the data did not change")

    monkeypatch.setattr(stats, "compute", fail)
    again = datamodule(root).load_stats()
    np.testing.assert_array_equal(again.mean, dm.stats.mean)


def test_changed_training_set_is_detected(tmp_path, caplog):
    root = small_tree(tmp_path)
    first = datamodule(root)
    first.prepare()
    # overwrite one training image with another colour and a later mtime
    changed = root / "train" / "a" / "0.png"
    Image.fromarray(np.full((SIZE, SIZE, 3), 7, np.uint8)).save(changed)
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with caplog.at_level(logging.INFO):
        second = datamodule(root)
        second.prepare()
    assert second.stats_path() != first.stats_path()
    assert "changed since stats-" in caplog.text
    assert not np.allclose(second.stats.mean, first.stats.mean)


def test_resize_size_is_part_of_the_key(tmp_path):
    root = small_tree(tmp_path)
    a = ImageFolderDataModule(str(root), resize_size=16, crop_size=8, num_workers=0)
    b = ImageFolderDataModule(str(root), resize_size=12, crop_size=8, num_workers=0)
    assert a.stats_path() != b.stats_path()
    assert b.load_stats().mean.shape == (12, 12, 3)


def test_unwritable_stats_dir_is_named(tmp_path):
    root = small_tree(tmp_path / "data")
    blocker = tmp_path / "file"
    blocker.write_text("")
    dm = datamodule(root, stats_dir=str(blocker / "sub"))
    with pytest.raises(PermissionError, match=f"cannot create the statistics folder {blocker / 'sub'}"):
        dm.prepare()
