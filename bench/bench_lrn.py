"""Benchmark local_response_norm (AlexNet's LRN, two towers) after conv1 and conv2.

    python bench/bench_lrn.py                          # CUDA: batch 128, fp16 + fp32
    python bench/bench_lrn.py --device cpu --quick     # smoke test: eager + compile

Providers: triton (kernels.local_response_norm), eager (F.local_response_norm on each tower's
channel slice, lightning_alexnet.ops.eager_local_response_norm), compile (torch.compile of eager).
Paper constants in torch's convention: size 5, alpha 5e-4, beta 0.75, k 2, groups 2; NCHW input.
GB/s counts the tensors an LRN cannot avoid: forward reads x and writes y; backward reads x and
dy and writes dx; full is both. Extra saved tensors (Triton's fp32 scale) are not counted.
"""

from __future__ import annotations

import torch
from _common import Case, Op, bytes_of, run

from lightning_alexnet.ops import eager_local_response_norm

PARAMS = {"size": 5, "alpha": 5e-4, "beta": 0.75, "k": 2.0, "groups": 2}
LAYERS = {"lrn1": (96, 55), "lrn2": (256, 27)}  # after conv1, after conv2: (C, H)
QUICK = {"lrn1": (16, 11), "lrn2": (32, 7)}


def eager(x, size, alpha, beta, k, groups):
    return eager_local_response_norm(x, size, alpha, beta, k, groups)


def triton_fn():
    from kernels import local_response_norm

    return local_response_norm


def case(layer: str, n: int, c: int, h: int) -> Case:
    shape = (n, c, h, h)

    def make(device, dtype):
        return {"inputs": [torch.randn(shape, device=device, dtype=dtype)], "kwargs": PARAMS}

    def work(mode, dtype):
        fwd, bwd = bytes_of(dtype, shape, shape), bytes_of(dtype, shape, shape, shape)
        return {"forward": fwd, "backward": bwd, "full": fwd + bwd}[mode]

    return Case(layer, "x".join(map(str, shape)), make, work)


def cases(args):
    table = QUICK if args.quick else LAYERS
    return [case(name, args.batch, c, h) for name, (c, h) in table.items()]


OP = Op(name="lrn", unit="GB/s", eager=eager, triton=triton_fn, cases=cases)

if __name__ == "__main__":
    run(OP)
