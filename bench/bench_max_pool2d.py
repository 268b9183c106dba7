"""Benchmark max_pool2d (3x3, stride 2, overlapping) after conv1, conv2 and conv5.

    python bench/bench_max_pool2d.py                          # CUDA: batch 128, fp16 + fp32
    python bench/bench_max_pool2d.py --device cpu --quick     # smoke test: eager + compile

Providers: triton (kernels.max_pool2d), eager (F.max_pool2d), compile (torch.compile of eager);
NCHW input. GB/s counts the tensors a pool cannot avoid: forward reads x and writes y; backward
reads dy and writes dx; full is both. The saved argmax (Triton: int8 offsets, torch: int64
indices) is not counted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _common import Case, Op, bytes_of, run

LAYERS = {"pool1": (96, 55), "pool2": (256, 27), "pool5": (256, 13)}  # (C, H) of the input
QUICK = {"pool1": (16, 11), "pool2": (32, 9), "pool5": (32, 7)}


def eager(x, kernel_size, stride):
    return F.max_pool2d(x, kernel_size, stride)


def triton_fn():
    from kernels import max_pool2d

    return lambda x, kernel_size, stride: max_pool2d(x, kernel_size, stride)


def case(layer: str, n: int, c: int, h: int) -> Case:
    oh = (h - 3) // 2 + 1
    x_shape, y_shape = (n, c, h, h), (n, c, oh, oh)

    def make(device, dtype):
        return {"inputs": [torch.randn(x_shape, device=device, dtype=dtype)],
                "kwargs": {"kernel_size": 3, "stride": 2}}

    def work(mode, dtype):
        fwd = bwd = bytes_of(dtype, x_shape, y_shape)
        return {"forward": fwd, "backward": bwd, "full": fwd + bwd}[mode]

    return Case(layer, f"{'x'.join(map(str, x_shape))} -> {oh}x{oh}", make, work)


def cases(args):
    table = QUICK if args.quick else LAYERS
    return [case(name, args.batch, c, h) for name, (c, h) in table.items()]


OP = Op(name="max_pool2d", unit="GB/s", eager=eager, triton=triton_fn, cases=cases)

if __name__ == "__main__":
    run(OP)
