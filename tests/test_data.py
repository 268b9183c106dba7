"""The input pipeline: decoding, crops, flips, PCA noise, ten crops, bad input, skip-and-count."""

import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_alexnet import stats
from lightning_alexnet.data import ImageFolderDataModule
from lightning_alexnet.dataset import Batch, ImageFolderDataset, decode_center, readable_batches
from lightning_alexnet.transform import RawBatch

S, C = 20, 14  # resize and crop sizes of the small trees below

# --- reference: direct numpy slicing of the mean-subtracted central square ---------------------


def centred(image: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 image minus the mean, as (3, S, S) float64."""
    return (image.astype(np.float64) - mean).transpose(2, 0, 1)


def ten_crops_reference(image, mean, c):
    """The paper's ten crops by direct slicing, in the documented order."""
    x = centred(image, mean)
    s = x.shape[-1]
    o = (s - c) // 2
    windows = [(0, 0), (0, s - c), (s - c, 0), (s - c, s - c), (o, o)]
    five = [x[:, i:i + c, j:j + c] for i, j in windows]
    return np.stack(five + [f[:, :, ::-1] for f in five])


def write_images(folder, arrays, ext="png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(folder / f"{i:03d}.{ext}")


def make_tree(root, classes=("a", "b", "c"), n_train=4, n_val=2, size=S, seed=0):
    """Random lossless S x S images: decoding is the identity, so content is checkable."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for name in classes:
            write_images(root / split / name, rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
    return root


def dm_for(root, **kw):
    kw = {"resize_size": S, "crop_size": C, "num_workers": 0, "batch_size": 4, **kw}
    return ImageFolderDataModule(str(root), **kw)


def raw(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# --- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("w,h", [(40, 30), (30, 40), (20, 20), (7, 5)],
                         ids=["landscape", "portrait", "square-same-size", "smaller-than-S-upscaled"])
def test_decode_center_is_shorter_side_resize_then_central_crop(tmp_path, w, h):
    rng = np.random.default_rng(0)
    # smooth content, so the one-pass box resize and the two-step reference agree closely
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) * 255 // (w + h)], -1)
    a = (a + rng.integers(0, 3, a.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    out = decode_center(str(tmp_path / "x.png"), S)
    # reference: shorter side to S, then the central S x S
    scale = S / min(w, h)
    big = Image.fromarray(a).resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    left, top = (big.width - S) // 2, (big.height - S) // 2
    ref = np.asarray(big.crop((left, top, left + S, top + S)), np.float64)
    assert out.shape == (S, S, 3) and out.dtype == np.uint8
    assert np.abs(out - ref).mean() < 6.0  # sub-pixel placement differs, content the same
    if (w, h) == (S, S):
        np.testing.assert_array_equal(out, a)


def test_draft_decodes_large_jpegs_at_reduced_scale(tmp_path):
    a = np.zeros((400, 600, 3), np.uint8)
    a[:, :300] = (250, 10, 10)
    a[:, 300:] = (10, 10, 250)
    Image.fromarray(a).save(tmp_path / "big.jpg", quality=95)
    out = decode_center(str(tmp_path / "big.jpg"), 50)  # 400 -> 50: decoded at 1/8 scale
    assert out.shape == (50, 50, 3)
    np.testing.assert_allclose(out[:, :20].mean((0, 1)), (250, 10, 10), atol=12)
    np.testing.assert_allclose(out[:, 30:].mean((0, 1)), (10, 10, 250), atol=12)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16"])
def test_every_colour_mode_is_converted_to_rgb(tmp_path, mode):
    rgb = np.zeros((S, S, 3), np.uint8)
    rgb[..., 0], rgb[..., 1] = 200, 100
    if mode == "I;16":  # 16-bit grey is scaled to 8 bits, not clipped
        im = Image.fromarray(np.full((S, S), 40000, np.uint16))
        expected = np.full((S, S, 3), 40000 >> 8)
    elif mode in ("L", "LA"):  # grey stays grey, in three channels
        im = Image.fromarray(rgb).convert(mode)
        expected = np.repeat(np.asarray(im.convert("L"))[..., None], 3, -1)
    else:  # an adaptive palette holds the two colours exactly (the default web palette does not)
        im = Image.fromarray(rgb).convert(mode, palette=Image.Palette.ADAPTIVE)
        expected = rgb
    ext = "jpg" if mode == "CMYK" else "png"
    im.save(tmp_path / f"x.{ext}", quality=100) if ext == "jpg" else im.save(tmp_path / f"x.{ext}")
    out = decode_center(str(tmp_path / f"x.{ext}"), S)
    assert out.shape == (S, S, 3) and out.dtype == np.uint8
    np.testing.assert_allclose(out.astype(float), expected, atol=3)


# --- batches: shapes, crops, flips, PCA noise, ten crops --------------------------------------


@pytest.fixture()
def tree(tmp_path):
    return make_tree(tmp_path / "data")


def test_batch_shapes_and_types_for_every_stage(tree, tmp_path):
    write_images(tmp_path / "pred" / "deep" / "er", np.zeros((3, 30, 25, 3), np.uint8), ext="jpg")
    dm = dm_for(tree, predict_root=str(tmp_path / "pred"), finish="device")
    assert dm.classes == ["a", "b", "c"] and dm.num_classes == 3
    for stage in ("fit", "test", "predict"):
        dm.setup(stage)
    raw_batch = next(iter(dm.train_dataloader()))  # workers: uint8 crops
    assert raw_batch.pixels.shape == (4, C, C, 4) and raw_batch.pixels.dtype == torch.uint8
    assert raw_batch.params.shape == (4, 6) and not raw_batch.ten_crop
    x, y = dm.on_after_batch_transfer(raw_batch, 0)  # on the device: the network's input
    assert x.shape == (4, 3, C, C) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.is_contiguous()
    x, y = dm.transform(next(iter(dm.val_dataloader())))
    assert x.shape == (4, 3, C, C) and y.tolist() == [0, 0, 1, 1]
    raw_batch = next(iter(dm.test_dataloader()))  # batch_size // 10 = 0 -> 1 image of ten crops
    assert raw_batch.pixels.shape == (1, S, S, 4) and raw_batch.ten_crop
    x, y = dm.transform(raw_batch)
    assert x.shape == (1, 10, 3, C, C)
    x, paths = dm.transform(next(iter(dm.predict_dataloader())))
    assert x.shape == (3, 3, C, C) and len(paths) == 3 and all("/deep/er/" in p for p in paths)
    plain = dm_for(tree, ten_crop_test=False, finish="device")
    plain.setup("test")
    assert plain.transform(next(iter(plain.test_dataloader())))[0].shape == (4, 3, C, C)
    assert dm.on_after_batch_transfer((x, paths), 0) == (x, paths)  # finished batches pass


@pytest.mark.parametrize("workers", [0, 2])
def test_finishing_in_the_workers_gives_the_device_batches(tree, workers):
    on_device = dm_for(tree, finish="device", num_workers=workers)
    in_workers = dm_for(tree, finish="workers", num_workers=workers)
    assert not on_device.finish_in_workers() and in_workers.finish_in_workers()
    for stage, loader in (("validate", "val_dataloader"), ("test", "test_dataloader")):
        on_device.setup(stage)
        in_workers.setup(stage)
        finished = list(getattr(in_workers, loader)())
        raw_batches = list(getattr(on_device, loader)())
        assert all(isinstance(b, RawBatch) for b in raw_batches) and len(finished) == len(raw_batches)
        assert all(isinstance(b, Batch) for b in finished)
        for batch, raw_batch in zip(finished, raw_batches):
            x, y = in_workers.on_after_batch_transfer(batch, 0)  # what the module gets
            x_ref, y_ref = on_device.on_after_batch_transfer(raw_batch, 0)
            torch.testing.assert_close(x, x_ref, rtol=0, atol=0)
            assert torch.equal(y, y_ref)


def test_finish_auto_follows_the_trainer_device(tree):
    import pytorch_lightning as pl

    dm = dm_for(tree)
    assert dm.finish_in_workers() == (not torch.cuda.is_available())  # outside a Trainer
    dm.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert dm.finish_in_workers()
    with pytest.raises(ValueError, match="finish must be auto, device or workers, got 'gpu'"):
        dm_for(tree, finish="gpu")


def test_val_is_the_centre_crop_minus_the_mean_image(tree):
    dm = dm_for(tree)
    dm.setup("validate")
    ds = dm.datasets["val"]
    mean = dm.stats.mean.astype(np.float64)
    o = (S - C) // 2
    for i in (0, 3, 5):
        x, _ = ds.example(i)
        ref = centred(raw(ds.samples[i][0]), mean)[:, o:o + C, o:o + C]
        np.testing.assert_allclose(x.numpy(), ref, atol=1e-4)


def test_mean_image_false_subtracts_the_mean_colour(tree):
    dm = dm_for(tree, mean_image=False)
    dm.setup("validate")
    x, _ = dm.datasets["val"].example(0)
    o = (S - C) // 2
    ref = centred(raw(dm.datasets["val"].samples[0][0]), dm.stats.mean.astype(np.float64).mean((0, 1)))
    np.testing.assert_allclose(x.numpy(), ref[:, o:o + C, o:o + C], atol=1e-4)


def test_ten_crops_match_direct_slicing(tree):
    dm = dm_for(tree)
    dm.setup("test")
    ds = dm.datasets["test"]
    for i in (0, 4):
        x, _ = ds.example(i)
        ref = ten_crops_reference(raw(ds.samples[i][0]), dm.stats.mean.astype(np.float64), C)
        assert x.shape == (10, 3, C, C)
        np.testing.assert_allclose(x.numpy(), ref, atol=1e-4)
    # x[:, 4] is the single centre crop validation uses
    dm.setup("validate")
    np.testing.assert_array_equal(ds.example(0)[0][4].numpy(), dm.datasets["val"].example(0)[0].numpy())


def find_window(x: np.ndarray, full: np.ndarray) -> tuple[int, int, bool]:
    """(row, col, flipped) of the crop ``x`` (3, c, c) inside ``full`` (3, S, S)."""
    c, s = x.shape[-1], full.shape[-1]
    for i in range(s - c + 1):
        for j in range(s - c + 1):
            w = full[:, i:i + c, j:j + c]
            for flipped, cand in ((False, w), (True, w[:, :, ::-1])):
                if np.allclose(x, cand, atol=1e-4):
                    return i, j, flipped
    raise AssertionError("crop not found in the mean-subtracted image")


def train_dataset(dm):
    dm.setup("fit")
    return dm.datasets["train"]


def test_random_crops_and_flips_cover_the_image(tree):
    ds = train_dataset(dm_for(tree, pca_noise=0.0))
    full = centred(raw(ds.samples[0][0]), ds.transform.mean.numpy().transpose(1, 2, 0).astype(np.float64))
    torch.manual_seed(0)
    seen = [find_window(ds.example(0)[0].numpy(), full) for _ in range(60)]
    rows, cols, flips = zip(*seen)
    assert set(rows) == set(range(S - C + 1)) and set(cols) == set(range(S - C + 1))
    assert 15 <= sum(flips) <= 45


def test_a_batch_of_mixed_crops_and_flips_is_finished_image_by_image(tree):
    ds = train_dataset(dm_for(tree, pca_noise=0.1))
    torch.manual_seed(2)
    batch = ds.collate([ds[k] for k in range(12)])
    assert not batch.skipped and set(batch.params[:, 2].tolist()) == {0.0, 1.0}  # both kinds present
    x, y = ds.transform(batch)
    mean = ds.transform.mean.numpy().transpose(1, 2, 0).astype(np.float64)
    basis = ds.transform.pca_basis.numpy().astype(np.float64)
    for k in range(12):
        i, j, flip, *alpha = batch.params[k].tolist()
        window = centred(raw(ds.samples[k][0]), mean)[:, int(i):int(i) + C, int(j):int(j) + C]
        ref = (window[:, :, ::-1] if flip else window) + (basis @ alpha)[:, None, None]
        np.testing.assert_allclose(x[k].numpy(), ref, atol=1e-3)
        assert y[k] == ds.samples[k][1]


@pytest.mark.parametrize("pca_noise,pixel_scale", [(0.1, 1.0), (0.0, 1.0), (0.1, 0.25)])
def test_the_batched_and_per_image_paths_agree(tree, pca_noise, pixel_scale):
    ds = train_dataset(dm_for(tree, pca_noise=pca_noise, pixel_scale=pixel_scale))
    torch.manual_seed(7)
    batch = ds.collate([ds[k % 12] for k in range(20)])
    gathered = ds.transform.finish_crops(batch.pixels, batch.params, gather=True)
    sliced = ds.transform.finish_crops(batch.pixels, batch.params, gather=False)
    assert gathered.shape == (20, 3, C, C) and gathered.is_contiguous() and sliced.is_contiguous()
    torch.testing.assert_close(gathered, sliced, rtol=1e-6, atol=1e-4)


def test_the_module_names_an_unfinished_batch(tree):
    from lightning_alexnet.model import AlexNetConfig
    from lightning_alexnet.module import AlexNetModule

    ds = train_dataset(dm_for(tree))
    batch = ds.collate([ds[0], ds[1]])
    module = AlexNetModule(AlexNetConfig.from_name("tiny", num_classes=3), kernels="eager")
    with pytest.raises(TypeError, match="got a RawBatch .* on_after_batch_transfer"):
        module.training_step(batch, 0)


@pytest.mark.parametrize("random_crop,hflip", [(False, True), (True, False), (False, False)])
def test_crop_and_flip_switches(tree, random_crop, hflip):
    ds = train_dataset(dm_for(tree, pca_noise=0.0, random_crop=random_crop, hflip=hflip))
    full = centred(raw(ds.samples[1][0]), ds.transform.mean.numpy().transpose(1, 2, 0).astype(np.float64))
    torch.manual_seed(1)
    seen = {find_window(ds.example(1)[0].numpy(), full) for _ in range(30)}
    o = (S - C) // 2
    if not random_crop:
        assert {(i, j) for i, j, _ in seen} == {(o, o)}
    else:
        assert len({(i, j) for i, j, _ in seen}) > 5
    assert {f for *_, f in seen} == ({False, True} if hflip else {False})


def test_augmentation_is_deterministic_under_a_seed(tree):
    ds = train_dataset(dm_for(tree))
    torch.manual_seed(3)
    a = [ds.example(i)[0] for i in range(6)]
    torch.manual_seed(3)
    b = [ds.example(i)[0] for i in range(6)]
    torch.manual_seed(4)
    c = [ds.example(i)[0] for i in range(6)]
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_pca_noise_is_one_offset_per_image_with_the_papers_statistics(tree):
    sigma = 0.1
    ds = train_dataset(dm_for(tree, pca_noise=sigma, random_crop=False, hflip=False))
    clean = ImageFolderDataset(ds.samples, "train", S, C, ds.transform.mean.numpy().transpose(1, 2, 0), pca_noise=0.0, random_crop=False, hflip=False)
    base = clean.example(2)[0].numpy().astype(np.float64)
    torch.manual_seed(0)
    offsets = []
    for _ in range(3000):
        d = ds.example(2)[0].numpy().astype(np.float64) - base  # (3, C, C): the same RGB offset everywhere
        offsets.append(d[:, 0, 0])
        if len(offsets) <= 5:
            np.testing.assert_allclose(d, d[:, :1, :1] * np.ones_like(d), atol=1e-3)
    offsets = np.array(offsets)  # (n, 3) on the [0, 255] scale
    full = dm_for(tree).load_stats()
    # expected: offset = 255 * P (alpha * lambda), alpha ~ N(0, sigma): along eigenvector k the
    # offset has standard deviation 255 * sigma * lambda_k and mean 0
    along = offsets @ full.eigvecs
    expected_std = 255 * sigma * full.eigvals
    np.testing.assert_allclose(along.std(0), expected_std, rtol=0.06)
    assert np.all(np.abs(along.mean(0)) < 4 * expected_std / np.sqrt(len(offsets)))
    np.testing.assert_allclose(np.corrcoef(along.T), np.eye(3), atol=0.08)


def test_pixel_scale_scales_everything(tree):
    a = dm_for(tree, pca_noise=0.1)
    b = dm_for(tree, pca_noise=0.1, pixel_scale=0.25)
    da, db = train_dataset(a), train_dataset(b)
    torch.manual_seed(5)
    xa = da.example(0)[0]
    torch.manual_seed(5)
    xb = db.example(0)[0]
    torch.testing.assert_close(xb, xa * 0.25, rtol=1e-5, atol=1e-5)


# --- the crop cache ---------------------------------------------------------------------------


def test_crop_cache_gives_the_same_batches_as_decoding(tree, monkeypatch):
    monkeypatch.setattr(stats, "CHUNK", 5)  # several chunks: the 2-process pool writes the cache
    plain = dm_for(tree)
    cached = dm_for(tree, use_cache=True, num_workers=2)
    cached.prepare(cache=True)
    crops_path, ok_path = cached.cache_paths("train")
    assert crops_path.is_file() and np.load(ok_path).all()
    assert np.load(crops_path, mmap_mode="r").shape == (12, S, S, 3)
    for stage, split in (("validate", "val"), ("test", "test")):
        plain.setup(stage)
        cached.setup(stage)
        for i in range(len(plain.datasets[split])):
            torch.testing.assert_close(cached.datasets[split].example(i)[0], plain.datasets[split].example(i)[0])
    torch.testing.assert_close(torch.from_numpy(cached.stats.mean), torch.from_numpy(plain.load_stats().mean))


# --- bad input --------------------------------------------------------------------------------


def test_missing_root_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"data root {tmp_path / 'nope'} does not exist"):
        dm_for(tmp_path / "nope")


def test_empty_root_names_the_missing_train_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"split folder {tmp_path / 'train'} does not exist"):
        dm_for(tmp_path)


def test_train_folder_without_classes_is_named(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match=f"split folder {tmp_path / 'train'} has no class folders"):
        dm_for(tmp_path)


def test_class_folder_without_images_is_named(tree):
    (tree / "train" / "d").mkdir()
    (tree / "train" / "d" / "notes.txt").write_text("no images here")
    dm = dm_for(tree)
    with pytest.raises(ValueError, match=f"class folder {tree / 'train' / 'd'} contains no image files"):
        dm.setup("fit")


def test_val_class_missing_from_train_is_named(tree):
    write_images(tree / "val" / "zebra", np.zeros((1, S, S, 3), np.uint8))
    with pytest.raises(ValueError, match=f"class 'zebra' of {tree / 'val'} has no folder in the training set"):
        dm_for(tree)  # at construction, before any statistics


def test_predict_root_errors(tree, tmp_path):
    with pytest.raises(ValueError, match="predict needs --data.predict_root"):
        dm_for(tree).setup("predict")
    with pytest.raises(FileNotFoundError, match=f"predict_root {tmp_path / 'gone'} does not exist"):
        dm_for(tree, predict_root=str(tmp_path / "gone")).setup("predict")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"predict_root {tmp_path / 'empty'} contains no image files"):
        dm_for(tree, predict_root=str(tmp_path / "empty")).setup("predict")


@pytest.mark.parametrize("kw,message", [
    ({"crop_size": 30}, "crop_size (30) must not exceed resize_size (20)"),
    ({"batch_size": 0}, "batch_size must be positive, got 0"),
    ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
    ({"pca_noise": -0.1}, "pca_noise must be >= 0, got -0.1"),
    ({"pixel_scale": 0.0}, "pixel_scale must be positive, got 0.0"),
])
def test_bad_arguments_are_named(tree, kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dm_for(tree, **kw)


def corrupt_tree(root, size=S):
    """The small tree plus three unreadable training files and one unreadable val file."""
    make_tree(root, n_train=6, size=size)
    (root / "train" / "a" / "text.jpg").write_text("this is not a JPEG")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 90).save(root / "train" / "b" / "full.jpg")
    data = (root / "train" / "b" / "full.jpg").read_bytes()
    (root / "train" / "b" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "train" / "b" / "full.jpg").unlink()
    (root / "train" / "c" / "empty.png").write_bytes(b"")
    (root / "val" / "a" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return root


def tiny_module(num_classes):
    from lightning_alexnet.model import AlexNetConfig
    from lightning_alexnet.module import AlexNetModule

    config = AlexNetConfig.from_name("tiny", num_classes=num_classes, image_size=64)
    return AlexNetModule(config, kernels="eager")


def fit_tiny(dm, module=None, **trainer_options):
    """The Trainer that fitted ``module`` (default the tiny AlexNet: 64-pixel crops, eager) on
    ``dm`` on the CPU."""
    import pytorch_lightning as pl

    module = module or tiny_module(dm.num_classes)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, **trainer_options)
    trainer.fit(module, datamodule=dm)
    return trainer


def test_the_loaders_are_plain_dataloaders(tree):
    from torch.utils.data import DataLoader

    dm = dm_for(tree, predict_root=str(tree / "val"))
    for stage in ("fit", "test", "predict"):
        dm.setup(stage)
    for split in ("train", "val", "test", "predict"):
        assert type(getattr(dm, f"{split}_dataloader")()) is DataLoader


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_files_are_skipped_counted_and_named(tmp_path, caplog, workers):
    root = corrupt_tree(tmp_path / "data")
    dm = dm_for(root, num_workers=workers, batch_size=5)
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()  # the statistics pass reports them first, and carries on
        assert "3 unreadable image file(s)" in caplog.text and "truncated.jpg" in caplog.text
        dm.setup("fit")
        for epoch in range(2):  # outside a Trainer, each batch names its own
            batches = list(dm.train_dataloader())
            labels = torch.cat([b.target for b in batches])
            assert len(labels) == 18  # 21 files, 3 unreadable
            assert sorted(p.split("/")[-1].split(":")[0] for b in batches for p in b.skipped) == [
                "empty.png", "text.jpg", "truncated.jpg"]
        val = list(dm.val_dataloader())
        skipped = [p for b in val for p in b.skipped]
        assert sum(len(b.target) for b in val) == 6 and len(skipped) == 1 and "bad.png" in skipped[0]


def test_a_trainer_run_names_them_once_per_pass(tmp_path, caplog):
    root = corrupt_tree(tmp_path / "data", size=72)
    dm = dm_for(root, batch_size=5, resize_size=72, crop_size=64)
    dm.prepare_data()  # the statistics pass names them too
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        # the sanity check, cut short after val's first batch (which holds bad.png), reports its
        # own pass; then two epochs of train and val
        fit_tiny(dm, max_epochs=2, num_sanity_val_steps=1)
    assert caplog.text.count("train: skipped 3 unreadable image file(s) in this pass") == 2
    for name in ("text.jpg", "truncated.jpg", "empty.png"):
        assert name in caplog.text
    assert "truncated" in caplog.text.lower() and "not an image Pillow can read" in caplog.text
    assert caplog.text.count("val: skipped 1 unreadable image file(s) in this pass") == 3
    reports = [m.split(" unreadable")[0] for m in caplog.messages if "in this pass" in m]
    assert reports[0] == "val: skipped 1"  # the sanity check's, before any training


def test_a_batch_of_only_unreadable_files_is_empty_and_stepped_over(tmp_path):
    root = make_tree(tmp_path / "data", classes=("a", "b"), n_train=2, n_val=2, size=72)
    for bad in ("train/a/0_bad.jpg", "val/a/0_bad.jpg", "val/a/1_bad.jpg"):
        (root / bad).write_text("nope")
    dm = dm_for(root, batch_size=2, resize_size=72, crop_size=64)
    dm.setup("validate")
    batches = list(dm.val_dataloader())
    # val/a: 000.png, 001.png, 0_bad.jpg, 1_bad.jpg; val/b: 000.png, 001.png
    assert [len(b.target) for b in batches] == [2, 0, 2]  # [bad, bad] is empty
    assert [len(b.skipped) for b in batches] == [0, 2, 0] and batches[1].x.shape == (0, 3, 64, 64)
    # one image a batch: the bad file's batch is empty; the step skips it, no update
    dm = dm_for(root, batch_size=1, resize_size=72, crop_size=64)
    module, updates = tiny_module(dm.num_classes), []

    def weights():
        return torch.cat([p.detach().flatten() for p in module.parameters()])

    module.on_train_batch_start = lambda batch, i: updates.append([len(batch[0]), weights()])
    module.on_train_batch_end = lambda out, batch, i: updates[-1].append(weights())
    trainer = fit_tiny(dm, module, max_epochs=1)
    assert sorted(n for n, _, _ in updates) == [0, 1, 1, 1, 1]  # 5 training batches, 1 empty
    assert all(torch.equal(before, after) == (n == 0) for n, before, after in updates)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])  # val's 2 empty batches unscored
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]  # ten crops, 2 empty batches
    assert np.isfinite(tested["test/loss"]) and "test/top1_error_10crop" in tested


def test_readable_batches_drop_empty_ones_and_name_each_pass(tmp_path, caplog):
    root = make_tree(tmp_path / "data", classes=("a", "b"), n_train=1, n_val=2)
    for bad in ("-0bad.jpg", "-1bad.jpg"):  # sorted first: val's first batch is [bad, bad]
        (root / "val" / "a" / bad).write_text("nope")
    dm = dm_for(root, batch_size=2, finish="workers")
    dm.setup("validate")
    message = "val: skipped 2 unreadable image file(s) in this pass"
    with caplog.at_level(logging.WARNING):
        batches = list(readable_batches(dm.val_dataloader(), "val"))
        assert [len(y) for _, y in batches] == [2, 2] and caplog.text.count(message) == 1
        assert "-0bad.jpg" in caplog.text and "-1bad.jpg" in caplog.text
        early = readable_batches(dm.val_dataloader(), "val")
        x, y = next(early)  # past the empty batch
        assert len(x) == 2
        assert y.tolist() == [0, 0] and caplog.text.count(message) == 1  # not yet
        early.close()  # stopped early: the pass reports what it saw
    assert caplog.text.count(message) == 2


def test_stale_crop_cache_is_not_used_and_named(tree, caplog):
    first = dm_for(tree, use_cache=True)
    first.prepare(cache=True)
    old, _ = first.cache_paths("val")
    write_images(tree / "val" / "a" / "new", np.zeros((1, S, S, 3), np.uint8))  # val changed
    second = dm_for(tree, use_cache=True)
    with caplog.at_level(logging.WARNING):
        second.setup("validate")
    assert second.cache_paths("val")[0] != old
    assert f"val changed since the crop cache(s) {old}" in caplog.text
    assert len(second.datasets["val"]) == 7 and second.datasets["val"][6][0] is not None


def test_cached_unreadable_files_are_skipped(tmp_path):
    root = corrupt_tree(tmp_path / "data")
    dm = dm_for(root, use_cache=True, batch_size=25)
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    skipped = [m for b in batches for m in b.skipped]
    assert sum(len(b.target) for b in batches) == 18 and len(skipped) == 3
    assert all("unreadable when the crop cache was written" in m for m in skipped)


def test_an_unfinished_pass_reports_its_own_count(tmp_path, caplog):
    root = corrupt_tree(tmp_path / "data", size=72)
    # 2 batches of 20 and 1 of the 21 files; max_steps stops after the first, which holds at
    # least 2 of the 3 unreadable files: the pass is reported when the run ends
    dm = dm_for(root, batch_size=20, resize_size=72, crop_size=64)
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
        caplog.clear()
        fit_tiny(dm, max_steps=1, limit_val_batches=0)
    reports = re.findall(r"train: skipped (\d) unreadable image file\(s\) in this pass", caplog.text)
    assert reports in (["2"], ["3"])


@pytest.mark.parametrize("finish", ["device", "workers"])
def test_a_trainer_gets_float_batches_either_way(tmp_path, finish):
    import pytorch_lightning as pl

    from lightning_alexnet.model import AlexNetConfig
    from lightning_alexnet.module import AlexNetModule

    root = make_tree(tmp_path / "data", n_train=4, n_val=2, size=72)
    dm = ImageFolderDataModule(str(root), resize_size=72, crop_size=64, batch_size=4, num_workers=0,
                               finish=finish)
    config = AlexNetConfig.from_name("tiny", num_classes=3, image_size=64)
    module = AlexNetModule(config, kernels="eager")
    seen = []
    module.on_train_batch_start = lambda batch, i: seen.append((batch[0].dtype, tuple(batch[0].shape)))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    assert seen == [(torch.float32, (4, 3, 64, 64))] * 2  # finished by the hook or by the workers
    assert "val/top1_error" in trainer.callback_metrics
