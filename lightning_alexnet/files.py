"""Files and classes of an image-folder tree: ``root/<split>/<class>/**/<image file>``, class
index = position in the sorted class folder names. The first step of the input pipeline
(:mod:`~lightning_alexnet.dataset` decodes what it finds; :mod:`~lightning_alexnet.data` is the
DataModule)."""

from __future__ import annotations

import os
from pathlib import Path

from lightning_alexnet.errors import UserPathError, UserValueError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_DIR = ".lightning_alexnet"


def image_files(folder: Path) -> list[str]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders ignored."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def find_classes(split_dir: Path) -> list[str]:
    """Sorted class folder names of ``split_dir``."""
    if not split_dir.is_dir():
        raise UserPathError(f"split folder {split_dir} does not exist: expected "
                                f"{split_dir}/<class>/<image files>")
    classes = sorted(e.name for e in os.scandir(split_dir)
                     if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserValueError(f"split folder {split_dir} has no class folders: expected "
                         f"{split_dir}/<class>/<image files>")
    return classes


def scan_split(split_dir: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, class index) of every image in ``split_dir``, whose classes must be in ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for name in find_classes(split_dir):
        if name not in index:
            shown = f"{classes[:10]}{' ...' if len(classes) > 10 else ''}"
            raise UserValueError(f"class {name!r} of {split_dir} has no folder in the training set "
                             f"({len(classes)} classes: {shown})")
        files = image_files(split_dir / name)
        if not files:
            raise UserValueError(f"class folder {split_dir / name} contains no image files "
                             f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        samples += [(f, index[name]) for f in files]
    return samples
