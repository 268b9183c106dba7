"""Benchmark conv2d_relu (conv + bias + ReLU) on AlexNet's five conv layers.

    python bench/bench_conv2d_relu.py                          # CUDA: batch 128, fp16 + fp32
    python bench/bench_conv2d_relu.py --dtype bf16 --layer conv2 --mode forward
    python bench/bench_conv2d_relu.py --device cpu --quick     # smoke test: eager + compile

Providers: triton (kernels.conv2d_relu), eager (F.relu(F.conv2d(...)), cuDNN on CUDA), compile
(torch.compile of eager). Inputs are channels_last, the kernel's fast layout, for every provider.
TFLOP/s counts 2 * N * C_out * OH * OW * C_in/groups * KH * KW per forward; backward is the
weight gradient plus (conv2..conv5) the input gradient, one forward's worth each; conv1's input
is the image and needs no gradient, as in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _common import Case, Op, run

# layer: (C_in, H, C_out, K, stride, padding, groups) -- the paper's network at 224x224
LAYERS = {
    "conv1": (3, 224, 96, 11, 4, 2, 1),
    "conv2": (96, 27, 256, 5, 1, 2, 2),
    "conv3": (256, 13, 384, 3, 1, 1, 1),
    "conv4": (384, 13, 384, 3, 1, 1, 2),
    "conv5": (384, 13, 256, 3, 1, 1, 2),
}
# --quick: the same kernel sizes, strides and groups with few channels and small maps
QUICK = {
    "conv1": (3, 35, 16, 11, 4, 2, 1),
    "conv2": (16, 9, 32, 5, 1, 2, 2),
    "conv3": (32, 5, 48, 3, 1, 1, 1),
    "conv4": (48, 5, 48, 3, 1, 1, 2),
    "conv5": (48, 5, 32, 3, 1, 1, 2),
}


def eager(x, w, b, stride, padding, groups):
    return F.relu(F.conv2d(x, w, b, stride, padding, 1, groups))


def triton_fn():
    from kernels import conv2d_relu

    return lambda x, w, b, stride, padding, groups: conv2d_relu(x, w, b, stride, padding, 1,
                                                                groups)


def case(layer: str, n: int, c_in, h, c_out, k, stride, pad, groups) -> Case:
    oh = (h + 2 * pad - k) // stride + 1
    fwd_flops = 2.0 * n * c_out * oh * oh * (c_in // groups) * k * k
    first = layer == "conv1"  # the image needs no gradient

    def make(device, dtype):
        x = torch.randn(n, c_in, h, h, device=device, dtype=dtype)
        w = torch.randn(c_out, c_in // groups, k, k, device=device, dtype=dtype)
        w = w * (2.0 / (c_in // groups * k * k)) ** 0.5  # He init: ReLU keeps about half alive
        b = torch.randn(c_out, device=device, dtype=dtype) * 0.1
        fmt = torch.channels_last
        return {"inputs": [x.to(memory_format=fmt), w.to(memory_format=fmt), b],
                "kwargs": {"stride": stride, "padding": pad, "groups": groups}}

    def work(mode, dtype):
        bwd = fwd_flops * (1 if first else 2)
        return {"forward": fwd_flops, "backward": bwd, "full": fwd_flops + bwd}[mode]

    shape = f"{n}x{c_in}x{h}x{h} * {c_out}x{c_in // groups}x{k}x{k} /{stride} p{pad} g{groups}"
    return Case(layer, shape, make, work, grad_inputs=(1, 2) if first else (0, 1, 2))


def cases(args):
    table = QUICK if args.quick else LAYERS
    return [case(name, args.batch, *p) for name, p in table.items()]


OP = Op(name="conv2d_relu", unit="TFLOP/s", eager=eager, triton=triton_fn, cases=cases)

if __name__ == "__main__":
    run(OP)
