"""The built-in default data set: ten classes of drawn shapes, generated once and cached.

``shapes10-v1`` is an image-folder tree of JPEG files, ``train/<class>/*.jpg`` (300 per class)
and ``val/<class>/*.jpg`` (50 per class), 160x160 pixels. Every image is drawn from its own
seed, so two generations give the same bytes. Position, size, rotation, the shape's colour and
the background (a two-colour gradient with pixel noise) are drawn at random and independently
of the class: colour or brightness alone does not give the class away, the shape does.

The set lives in ``$LIGHTNING_ALEXNET_DATA/shapes10-v1`` (default
``~/.cache/lightning_alexnet/shapes10-v1``). It is written to a temporary folder that is renamed
into place when complete, so an interrupted generation is never mistaken for a finished one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

NAME = "shapes10-v1"
CLASSES = ("circle", "crescent", "cross", "frame", "hstripes", "ring", "square", "star",
           "triangle", "vstripes")
SIZE = 160  # image side in pixels
PER_CLASS = {"train": 300, "val": 50}
SEED = 0
_SUPERSAMPLE = 2  # shapes are drawn at 2x and downsampled: smooth edges
MANIFEST = "dataset.json"


def default_root() -> Path:
    """Where the built-in set lives: ``$LIGHTNING_ALEXNET_DATA/shapes10-v1``."""
    base = os.environ.get("LIGHTNING_ALEXNET_DATA") or Path.home() / ".cache" / "lightning_alexnet"
    return Path(base).expanduser() / NAME


def _polygon(cx: float, cy: float, radii: list[float], angles: np.ndarray) -> list[tuple]:
    return [(cx + r * math.cos(a), cy + r * math.sin(a)) for r, a in zip(radii, angles)]


def _rotated_rect(cx, cy, half_w, half_h, theta) -> list[tuple[float, float]]:
    """Corners of a half_w x half_h (half sizes) rectangle centred at (cx, cy), rotated by theta."""
    c, s = math.cos(theta), math.sin(theta)
    corners = ((-half_w, -half_h), (half_w, -half_h), (half_w, half_h), (-half_w, half_h))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners]


def draw_mask(shape: str, rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    """A size x size 'L' mask (255 = shape) of one ``shape`` at a random place, scale, rotation."""
    big = size * _SUPERSAMPLE
    r = rng.uniform(0.22, 0.40) * big  # "radius": the shape spans 44-80 % of the side
    slack = max(0.0, 0.48 * big - r)
    cx, cy = big / 2 + rng.uniform(-1, 1, 2) * min(slack, 0.15 * big)
    # Shapes whose class depends on orientation (stripes' direction, square vs. diamond, plus
    # vs. x) turn by at most 20 degrees; the others by any angle.
    small_turn = math.radians(rng.uniform(-20, 20))
    any_turn = rng.uniform(0, 2 * math.pi)
    mask = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(mask)
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "ring":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ri = r * 0.6
        d.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)
    elif shape == "crescent":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        ox, oy = cx + 0.5 * r * math.cos(any_turn), cy + 0.5 * r * math.sin(any_turn)
        d.ellipse((ox - r, oy - r, ox + r, oy + r), fill=0)
    elif shape in ("square", "frame"):
        h = r / math.sqrt(2) * 1.15
        d.polygon(_rotated_rect(cx, cy, h, h, small_turn), fill=255)
        if shape == "frame":
            d.polygon(_rotated_rect(cx, cy, 0.6 * h, 0.6 * h, small_turn), fill=0)
    elif shape == "triangle":
        d.polygon(_polygon(cx, cy, [r] * 3, any_turn + np.arange(3) * 2 * math.pi / 3), fill=255)
    elif shape == "star":
        angles = any_turn + np.arange(10) * math.pi / 5
        d.polygon(_polygon(cx, cy, [r, 0.45 * r] * 5, angles), fill=255)
    elif shape == "cross":
        arm = 0.3 * r
        d.polygon(_rotated_rect(cx, cy, r, arm, small_turn), fill=255)
        d.polygon(_rotated_rect(cx, cy, arm, r, small_turn), fill=255)
    elif shape in ("hstripes", "vstripes"):
        # four bars filling a square of side ~1.6 r; bars run along x (h) or y (v)
        n, h = 4, r * 0.8
        pitch = 2 * h / n
        for k in range(n):
            offset = -h + pitch * (k + 0.5)
            ox, oy = (0.0, offset) if shape == "hstripes" else (offset, 0.0)
            c, s = math.cos(small_turn), math.sin(small_turn)
            bx, by = cx + ox * c - oy * s, cy + ox * s + oy * c
            hw, hh = (h, pitch * 0.3) if shape == "hstripes" else (pitch * 0.3, h)
            d.polygon(_rotated_rect(bx, by, hw, hh, small_turn), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose one of {CLASSES}")
    return mask.resize((size, size), Image.BOX)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def draw_image(shape: str, rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    """One RGB image: a random gradient background with pixel noise, and the shape on top."""
    mask = np.asarray(draw_mask(shape, rng, size), dtype=np.float32)[..., None] / 255.0
    # background: linear gradient between two random colours in a random direction
    c0, c1 = rng.uniform(0, 255, (2, 3))
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    t = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None] + 0.5).clip(0, 1)[..., None]
    background = (1 - t) * c0.astype(np.float32) + t * c1.astype(np.float32)  # (S, S, 3)
    # foreground: a random colour that differs from the background by at least 60 grey levels
    # in luma, so the shape is visible; lighter or darker than the background at random.
    bg_luma = _luma(background.mean((0, 1)))
    while True:
        fg = rng.uniform(0, 255, 3)
        if abs(_luma(fg) - bg_luma) >= 60:
            break
    image = (1 - mask) * background + mask * fg.astype(np.float32)
    image += 8 * rng.standard_normal(image.shape, dtype=np.float32)
    return Image.fromarray(image.clip(0, 255).round().astype(np.uint8))


def _write_class(folder: Path, shape: str, n: int, size: int, seed_prefix: tuple[int, ...]) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        rng = np.random.default_rng([*seed_prefix, i])  # one seed per image: order-free
        draw_image(shape, rng, size).save(folder / f"{shape}_{i:04d}.jpg", quality=90)


def generate(root: Path, per_class: dict[str, int] | None = None, size: int = SIZE,
             seed: int = SEED, workers: int | None = None) -> None:
    """Write the tree under ``root``; deterministic in ``seed``, whatever ``workers`` is."""
    per_class = per_class or PER_CLASS
    jobs = [(root / split / shape, shape, n, size, (seed, split_id, class_id))
            for split_id, (split, n) in enumerate(per_class.items())
            for class_id, shape in enumerate(CLASSES)]
    workers = min(len(jobs), os.cpu_count() or 1) if workers is None else workers
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_class, *zip(*jobs)))
    else:
        for job in jobs:
            _write_class(*job)
    manifest = {"name": NAME, "classes": list(CLASSES), "per_class": per_class, "size": size,
                "seed": seed}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1))


def ensure(root: str | Path | None = None) -> Path:
    """The built-in set's folder, generated first if absent. Idempotent and atomic."""
    root = Path(root) if root is not None else default_root()
    if (root / MANIFEST).is_file():
        return root
    if root.exists():
        raise FileExistsError(
            f"{root} exists but holds no {MANIFEST}: not a finished {NAME} set; remove it or set "
            f"LIGHTNING_ALEXNET_DATA to another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    total = sum(PER_CLASS.values()) * len(CLASSES)
    print(f"generating the built-in data set {NAME} ({total} images) in {root} ...",
          file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}.partial-", dir=root.parent))
    try:
        shutil.rmtree(tmp)  # generate() creates the folders itself
        generate(tmp)
        try:
            tmp.rename(root)
        except OSError:
            if not (root / MANIFEST).is_file():  # not a concurrent generation that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"generated {NAME} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return root
