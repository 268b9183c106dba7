"""Benchmark the fused lrn_max_pool2d (LRN then 3x3/2 max-pool) after conv1 and conv2.

    python bench/bench_lrn_max_pool2d.py                          # CUDA: batch 128, fp16 + fp32
    python bench/bench_lrn_max_pool2d.py --device cpu --quick     # smoke test: eager + compile

Providers: triton (kernels.lrn_max_pool2d, one pass each way), eager (the two eager ops:
eager_local_response_norm then F.max_pool2d), compile (torch.compile of the two, which may fuse
them). Paper constants (size 5, alpha 5e-4, beta 0.75, k 2, groups 2); NCHW input.
GB/s counts what the fused op cannot avoid: forward reads x and writes the pooled y; backward
reads x and dy and writes dx; full is both. The unfused providers move more than this.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _common import Case, Op, bytes_of, run

from lightning_alexnet.ops import eager_local_response_norm

PARAMS = {"size": 5, "alpha": 5e-4, "beta": 0.75, "k": 2.0, "groups": 2}
LAYERS = {"lrn_pool1": (96, 55), "lrn_pool2": (256, 27)}  # (C, H) of the conv output
QUICK = {"lrn_pool1": (16, 11), "lrn_pool2": (32, 9)}


def eager(x, size, alpha, beta, k, groups):
    return F.max_pool2d(eager_local_response_norm(x, size, alpha, beta, k, groups), 3, 2)


def triton_fn():
    from kernels import lrn_max_pool2d

    return lambda x, size, alpha, beta, k, groups: lrn_max_pool2d(x, size, alpha, beta, k, groups,
                                                                  kernel_size=3, stride=2)


def case(layer: str, n: int, c: int, h: int) -> Case:
    oh = (h - 3) // 2 + 1
    x_shape, y_shape = (n, c, h, h), (n, c, oh, oh)

    def make(device, dtype):
        return {"inputs": [torch.randn(x_shape, device=device, dtype=dtype)], "kwargs": PARAMS}

    def work(mode, dtype):
        fwd = bytes_of(dtype, x_shape, y_shape)
        bwd = bytes_of(dtype, x_shape, y_shape, x_shape)
        return {"forward": fwd, "backward": bwd, "full": fwd + bwd}[mode]

    return Case(layer, f"{'x'.join(map(str, x_shape))} -> {oh}x{oh}", make, work)


def cases(args):
    table = QUICK if args.quick else LAYERS
    return [case(name, args.batch, c, h) for name, (c, h) in table.items()]


OP = Op(name="lrn_max_pool2d", unit="GB/s", eager=eager, triton=triton_fn, cases=cases)

if __name__ == "__main__":
    run(OP)
