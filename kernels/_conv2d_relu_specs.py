"""Ahead-of-time compile specs of the convolution kernels at AlexNet's layer shapes: what
``python -m kernels.compile_report`` compiles for sm_80/sm_90, built with the launchers' own
argument builders (:mod:`kernels._conv2d_relu_args`) and the autotuner's pruners, so what is
compiled is what runs.
"""

from __future__ import annotations

import torch
import triton

from kernels._common import KernelSpec, kernel_spec
from kernels._conv1_packed_kernels import _conv_fwd_packed_kernel, _conv_wgrad_packed_kernel
from kernels._conv2d_relu_args import (
    ASSUMED_SMS,
    _bias_dtype,
    _dgrad_args,
    _fwd_args,
    _fwd_packed_args,
    _Geometry,
    _Packing,
    _relu_grad_args,
    _relu_grad_pixels_per_split,
    _wgrad_args,
    _wgrad_max_splits,
    _wgrad_packed_args,
    _wgrad_packed_split,
)
from kernels._conv2d_relu_kernels import (
    _conv_dgrad_kernel,
    _conv_fwd_kernel,
    _conv_wgrad_kernel,
    _relu_grad_kernel,
    _split_sum_kernel,
)
from kernels.tuning import (
    CONV_TUNING,
    CONV_UNVERIFIED,
    PACKED_TUNING,
    RELU_GRAD_LAUNCH,
    SUM_BLOCK,
    TMA_CONFIGS,
    _union,
    is_unverified,
)

# The forward and dgrad configs that read the weight by TMA compile for sm_90 (and later) only;
# their names end in TMA_NOTE (not run on a GPU yet: kernels.tuning's UNVERIFIED gate).
TMA_ARCH = 90
TMA_NOTE = "tma unverified"

# AlexNet's convolutions (Krizhevsky et al. 2012, torchvision's channel counts) at batch 128:
# name -> (input NCHW, weight, stride, padding, groups, input needs a gradient)
ALEXNET_CONVS = {
    "conv1": ((128, 3, 224, 224), (96, 3, 11, 11), 4, 2, 1, False),
    "conv2": ((128, 96, 27, 27), (256, 48, 5, 5), 1, 2, 2, True),
    "conv3": ((128, 256, 13, 13), (384, 256, 3, 3), 1, 1, 1, True),
    "conv4": ((128, 384, 13, 13), (384, 192, 3, 3), 1, 1, 2, True),
    "conv5": ((128, 384, 13, 13), (256, 192, 3, 3), 1, 1, 2, True),
}


def aot_specs(layers: tuple[str, ...] = tuple(ALEXNET_CONVS)) -> list[KernelSpec]:
    """Every kernel x GPU config x dtype for the named AlexNet convolutions (``ALEXNET_CONVS``),
    channels_last, with the arguments the launchers would pass (built on meta tensors).

    Only the configs the autotuner keeps for that shape and precision are emitted (the same
    pruner), so what is compiled here is what runs; the configs behind the
    LIGHTNING_ALEXNET_UNVERIFIED gate (``kernels.tuning.CONV_UNVERIFIED``) always, gate on or
    off, with "unverified" at the end of their config tag. fp32 comes twice: exact ("ieee", FMA configs,
    no tensor cores, so ``uses_dot=False``) and with TF32 allowed ("tf32", tensor-core configs).
    conv1's dgrad is left out: the image needs no gradient. The forward's and dgrad's TMA configs
    (the weight through a descriptor, ``TMA_CONFIGS``) come too, gate or not, for sm_90 only
    (``min_arch``), named with ``TMA_NOTE``, where the pruner keeps them for the layer.
    """
    unknown = [name for name in layers if name not in ALEXNET_CONVS]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; choose from {list(ALEXNET_CONVS)}")
    variants = [  # (dtype, input precision, label)
        (torch.float32, "ieee", "fp32"),
        (torch.float32, "tf32", "fp32-tf32"),
        (torch.float16, "ieee", "fp16"),
        (torch.bfloat16, "ieee", "bf16"),
    ]
    specs = []
    for layer in layers:
        x_shape, w_shape, stride, padding, groups, x_grad = ALEXNET_CONVS[layer]
        n, _, h, w_ = x_shape
        c_out, cg_in, kh, kw = w_shape
        oh, ow = (h + 2 * padding - kh) // stride + 1, (w_ + 2 * padding - kw) // stride + 1
        geo = _Geometry(n, cg_in, h, w_, c_out // groups, oh, ow, kh, kw, (stride, stride),
                        (padding, padding), groups)
        split = _wgrad_max_splits(geo, ASSUMED_SMS, CONV_TUNING["wgrad"]["mma"][0], 2)
        relu_pix = _relu_grad_pixels_per_split(n * oh * ow, c_out, ASSUMED_SMS)
        for dtype, precision, label in variants:
            def empty(*shape, fmt=torch.channels_last, dt=dtype):
                return torch.empty(shape, dtype=dt, device="meta", memory_format=fmt)

            x, w, y = empty(*x_shape), empty(*w_shape), empty(n, c_out, oh, ow)
            b = empty(c_out, fmt=torch.contiguous_format)
            dw_part = empty(split, w.numel(), fmt=torch.contiguous_format, dt=torch.float32)
            db_part = empty(triton.cdiv(n * oh * ow, relu_pix), c_out, fmt=torch.contiguous_format,
                            dt=torch.float32)
            tensor_cores = precision == "tf32" or dtype != torch.float32
            kernels = [
                ("fwd", _conv_fwd_kernel, _fwd_args(x, w, b, y, geo)),
                ("dgrad", _conv_dgrad_kernel, _dgrad_args(y, w, x, geo)),
                ("wgrad", _conv_wgrad_kernel, _wgrad_args(x, y, w, dw_part, geo)),
            ]
            if tensor_cores:  # where the weight takes a descriptor (not conv1's 363-wide rows)
                tma_kernels = [("fwd", _conv_fwd_kernel, _fwd_args(x, w, b, y, geo, tma=True)),
                               ("dgrad", _conv_dgrad_kernel, _dgrad_args(y, w, x, geo, tma=True))]
                kernels += [k for k in tma_kernels if k[2][0]["w_desc"] is not None]
            pk = _Packing.of(geo)
            if pk.fits(geo):  # conv1's own forward
                xp = empty(n, pk.hp, pk.wpc, fmt=torch.contiguous_format)
                xt = empty(n * oh * ow, pk.tk, fmt=torch.contiguous_format)
                wp = empty(c_out, pk.kp, fmt=torch.contiguous_format)
                b32 = empty(c_out, fmt=torch.contiguous_format, dt=_bias_dtype(dtype))
                packed = _fwd_packed_args(xp, xt, wp, b32, y, geo, pk)
                kernels.append(("fwd_packed", _conv_fwd_packed_kernel, packed))
                psplit, pix_per_split = _wgrad_packed_split(
                    geo, ASSUMED_SMS, PACKED_TUNING["wgrad_packed"]["mma"],
                    dtype.itemsize)
                wpart = empty(psplit, c_out * pk.kp, fmt=torch.contiguous_format,
                              dt=torch.float32)
                packed = _wgrad_packed_args(xp, y, wpart, pix_per_split, geo, pk)
                kernels.append(("wgrad_packed", _conv_wgrad_packed_kernel, packed))
            for kname, fn, (args, consts) in kernels:
                if kname == "dgrad" and not x_grad:
                    continue
                consts = {**consts, "INPUT_PRECISION": precision}
                tma = args.get("w_desc") is not None
                path = "mma" if tensor_cores else "fma"
                if kname in PACKED_TUNING:  # every config compiles without spills
                    kept = PACKED_TUNING[kname][path]
                elif tma:  # the TMA configs the pruner keeps (the pointer ones come above)
                    prune = CONV_TUNING[kname]["mma_tma"][1]
                    kept = prune(TMA_CONFIGS[kname], {}, **args, **consts)
                else:  # the gated configs too, whether the gate is on or not
                    configs, prune = CONV_TUNING[kname][path]
                    configs = _union(configs, CONV_UNVERIFIED[kname][path])
                    kept = prune(configs, {}, **args, **consts)
                for cfg in kept:
                    kw_ = cfg.kwargs
                    tail = f"+{kw_['BLOCK_N_TAIL']}" if kw_.get("BLOCK_N_TAIL") else ""
                    persistent = f" p{kw_['PERSISTENT']}" if kw_.get("PERSISTENT") else ""
                    gated = (kname not in PACKED_TUNING and not tma
                             and is_unverified(kname, path, cfg))
                    tag = (f"BM={kw_['BLOCK_M']} BN={kw_['BLOCK_N']}{tail} BK={kw_['BLOCK_K']} "
                           f"w{cfg.num_warps} s{cfg.num_stages}{persistent}"
                           + (f" {TMA_NOTE}" if tma else " unverified" if gated else ""))
                    specs.append(kernel_spec(f"conv2d_relu_{kname}[{layer}, {tag}, {label}]", fn,
                                             {**args, **consts}, cfg, uses_dot=tensor_cores,
                                             min_arch=TMA_ARCH if tma else 0))
            if precision == "ieee":
                sum_args = {"part_ptr": dw_part, "out_ptr": w, "NUMEL": w.numel(), "SPLIT": split}
                sum_cfg = triton.Config({"BLOCK": SUM_BLOCK}, num_warps=4, num_stages=1)
                specs.append(kernel_spec(f"conv2d_relu_split_sum[{layer} dW, {label}]",
                                         _split_sum_kernel, sum_args, sum_cfg))
                args, consts = _relu_grad_args(y, y, y, db_part, relu_pix, True)
                specs.append(kernel_spec(f"conv2d_relu_relu_grad[{layer}, {label}]",
                                         _relu_grad_kernel, {**args, **consts}, RELU_GRAD_LAUNCH))
    return specs
