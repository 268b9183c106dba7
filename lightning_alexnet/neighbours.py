"""Image retrieval by fc7 activations, as in the paper's Figure 4 (right).

The 4096-d activations of the last hidden layer (fc7, after its ReLU) of every training image
are computed batch by batch (with a progress bar) into a float16 memory-mapped ``.npy`` next to
the data's statistics, keyed by the checkpoint (path, size, mtime) and the training files
(paths, sizes, mtimes, resize side): a second run reads them back. Retrieval scans that array
in chunks, so memory stays bounded (about 2 * ``CHUNK`` * 4096 floats) whatever the data size.
ImageNet's 1.28 million training images take 10.5 GB on disk.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lightning_alexnet import stats as stats_lib
from lightning_alexnet.dataset import readable_batches
from lightning_alexnet.module import AlexNetModule

CHUNK = 16384  # training features compared with the queries at a time


@torch.no_grad()
def fc7(module: AlexNetModule, x: torch.Tensor) -> torch.Tensor:
    """(N, 3, C, C) -> (N, F) activations of fc7 after its ReLU (``module`` in eval mode)."""
    net = module.model
    hidden = net.classifier[: list(dict(net.classifier.named_children())).index("relu7") + 1]
    return hidden(torch.flatten(net.features(x.to(module.device)), 1))


def checkpoint_key(ckpt_path: str) -> str:
    st = os.stat(ckpt_path)
    text = f"{Path(ckpt_path).resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def features(module: AlexNetModule, batches, count: int, path: Path,
             desc: str = "fc7 features") -> tuple[np.ndarray, np.ndarray]:
    """``(feats, ok)``: float16 (count, F) fc7 activations of the loader's images (finished
    batches, see :func:`~lightning_alexnet.dataset.readable_batches`; targets: the row index
    of each image) memory-mapped from ``path``, computed first when missing;
    ``ok[i]`` is False for a file that could not be read (its row is zero)."""
    ok_path = path.with_name(path.stem + "-ok.npy")
    if path.is_file() and ok_path.is_file():
        return np.load(path, mmap_mode="r"), np.load(ok_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width = module.model.classifier.fc7.out_features
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}.npy")
    feats = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(count, width))
    ok = np.zeros(count, bool)
    for x, rows in readable_batches(tqdm(batches, total=len(batches), desc=desc, unit="batch")):
        feats[rows.numpy()] = fc7(module, x).float().cpu().numpy().astype(np.float16)
        ok[rows.numpy()] = True
    feats.flush()
    del feats
    np.save(ok_path, ok)
    os.replace(tmp, path)  # last: the features file existing means it is complete
    return np.load(path, mmap_mode="r"), ok


def cache_path(stats_dir: Path, ckpt_path: str, root: Path, files: list[str], size: int) -> Path:
    """``<stats_dir>/fc7-<checkpoint key>-<training files key>.npy``."""
    return stats_dir / f"fc7-{checkpoint_key(ckpt_path)}-{stats_lib.cache_key(root, files, size)}.npy"


def nearest(queries: np.ndarray, feats: np.ndarray, ok: np.ndarray, k: int = 6
            ) -> tuple[np.ndarray, np.ndarray]:
    """``(index, distance)``, each (Q, k): the ``k`` rows of ``feats`` (readable ones only)
    nearest to each query in Euclidean distance, nearest first, scanned ``CHUNK`` rows at a time."""
    # the queries rounded as the stored features were: an identical image is at distance 0
    q = torch.from_numpy(np.asarray(queries).astype(feats.dtype).astype(np.float32))
    best_d = torch.full((len(q), 0), float("inf"))
    best_i = torch.zeros((len(q), 0), dtype=torch.long)
    for start in range(0, len(feats), CHUNK):
        block = torch.from_numpy(np.asarray(feats[start:start + CHUNK], np.float32))
        d = torch.cdist(q[None].double(), block[None].double())[0].float()  # (Q, chunk)
        d[:, ~torch.from_numpy(np.asarray(ok[start:start + CHUNK]))] = float("inf")
        idx = torch.arange(start, start + len(block)).expand(len(q), -1)
        d, idx = torch.cat([best_d, d], 1), torch.cat([best_i, idx], 1)
        best_d, order = d.topk(min(k, d.shape[1]), dim=1, largest=False)
        best_i = idx.gather(1, order)
    return best_i.numpy(), best_d.numpy()
