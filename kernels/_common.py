"""What every kernel op shares: argument checks, layout helpers, the int32 span guard and the
ahead-of-time spec builder.

Every public kernel function validates its arguments here before anything is launched, so the
error messages read the same across ops and always name the value the caller passed. Autotune
tables live in :mod:`kernels.tuning`; the pieces LRN and pooling share, in
:mod:`kernels._lrn_pool`.

Where kernels run:
- CUDA tensors: compiled Triton kernels (autotuned over ``configs`` on sm_80/sm_90).
- CPU tensors: only under Triton's interpreter, i.e. ``TRITON_INTERPRET=1`` set *before*
  ``kernels`` is first imported (``@triton.jit`` reads it at decoration time).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

# Read once: @triton.jit decides at import time whether a kernel is interpreted.
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

TORCH_TO_TRITON = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
}


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """An int or a pair of ints, as torch.nn.functional accepts them, as a checked pair."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def check_tensor(x: Any, name: str) -> torch.Tensor:
    """Type, dtype and device checks shared by every launcher."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(
            f"{name}.dtype={x.dtype} is not supported; use one of "
            f"{', '.join(str(d) for d in SUPPORTED_DTYPES)}"
        )
    if x.device.type == "cuda":
        if INTERPRET:
            raise RuntimeError(
                f"{name} is on {x.device} but TRITON_INTERPRET=1 is set: unset it to run the "
                "compiled kernels on the GPU"
            )
    elif x.device.type == "cpu":
        if not INTERPRET:
            raise RuntimeError(
                f"{name} is a CPU tensor: the Triton kernels run on CUDA tensors, or on CPU only "
                "under the interpreter (set TRITON_INTERPRET=1 before importing kernels). "
                "For a fast CPU path use lightning_alexnet's kernels='auto' or 'eager'."
            )
    else:
        raise NotImplementedError(f"{name}.device={x.device} is not supported (cuda or cpu)")
    return x


def check_same_device(**tensors: torch.Tensor | None) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        listing = ", ".join(f"{n} on {d}" for n, d in devices.items())
        raise ValueError(f"all tensors must be on one device, got {listing}")


def check_same_dtype(**tensors: torch.Tensor | None) -> None:
    dtypes = {name: t.dtype for name, t in tensors.items() if t is not None}
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{n}.dtype={d}" for n, d in dtypes.items())
        raise ValueError(f"all tensors must have one dtype, got {listing}")


def device_context(x: torch.Tensor):
    """Launch on the tensor's own GPU (Triton launches on the *current* device)."""
    if x.device.type == "cuda":
        return torch.cuda.device(x.device)
    return contextlib.nullcontext()


def launch_elementwise(tuner, args: dict) -> None:
    """An autotuned element-wise kernel, one program per BLOCK of its ``numel`` outputs, with its
    arguments by name, on the device of its first tensor argument."""
    def grid(meta):
        return (triton.cdiv(args["numel"], meta["BLOCK"]),)

    first = next(v for v in args.values() if isinstance(v, torch.Tensor))
    with device_context(first):
        tuner[grid](**args)


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last when x is stored that way (and not also plain contiguous), else NCHW: the
    layout torch's convolution and pooling give their outputs."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def strides(prefix: str, t: torch.Tensor, dims: str = "nchw") -> dict[str, int]:
    """A kernel's stride arguments by name: ``strides("x", x)`` -> stride_xn, stride_xc, ..."""
    return {f"stride_{prefix}{d}": s for d, s in zip(dims, t.stride())}


@dataclass(frozen=True)
class KernelSpec:
    """One kernel in one configuration and dtype, for ahead-of-time compilation.

    ``signature`` maps every argument of the ``@triton.jit`` function, in order, to a Triton type
    string (``"*fp32"``, ``"i32"``, ``"fp32"``, or ``"constexpr"``); ``constexprs`` gives the value
    of each ``constexpr`` argument; ``divisible`` names the pointer/int arguments the launcher
    really sees as multiples of 16 (the JIT adds ``tt.divisibility=16`` for them).
    """

    name: str  # e.g. "conv2d_relu_fwd[conv2, BM=128 BN=128 BK=32, fp16]"
    fn: Callable
    signature: dict[str, str]
    constexprs: dict[str, Any]
    divisible: tuple[str, ...] = ()
    num_warps: int = 4
    num_stages: int = 3
    uses_dot: bool = False  # conv kernels: must compile to mma/wgmma


def kernel_spec(name: str, fn, args: dict, config: triton.Config,
                uses_dot: bool = False) -> KernelSpec:
    """A KernelSpec from a kernel's launch arguments by name (runtime and constexpr, any order;
    those with a default in the kernel's signature may be left out) and one config, typed as Triton's JIT specialises them: arguments declared ``tl.constexpr``,
    bools and ints equal to 1 become constants; tensors are 16-byte aligned pointers; other ints
    are i32 (i64 beyond) and noted as divisible when they are multiples of 16."""
    params = inspect.signature(fn.fn).parameters  # fn.fn: the Python function, JIT or interpreted
    declared = {p for p, v in params.items() if v.annotation in (tl.constexpr, "tl.constexpr")}
    defaults = {p: v.default for p, v in params.items() if v.default is not inspect.Parameter.empty}
    args = {**defaults, **args, **config.kwargs}  # as the JIT binds them
    if sorted(args) != sorted(fn.arg_names):
        raise AssertionError(f"{name}: spec arguments {list(args)} != kernel's {fn.arg_names}")
    signature, constexprs, divisible = {}, {}, []
    for arg in fn.arg_names:
        value = args[arg]
        if arg in declared or isinstance(value, bool) or (isinstance(value, int) and value == 1):
            signature[arg], constexprs[arg] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            elem = "i8" if value.dtype == torch.int8 else TORCH_TO_TRITON[value.dtype]
            signature[arg] = "*" + elem
            divisible.append(arg)
        else:
            signature[arg] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                divisible.append(arg)
    return KernelSpec(name=name, fn=fn, signature=signature, constexprs=constexprs,
                      divisible=tuple(divisible), num_warps=config.num_warps,
                      num_stages=config.num_stages, uses_dot=uses_dot)


def block_specs(op: str, where: str, label: str, kernels) -> list[KernelSpec]:
    """The specs of element-wise kernels, one per config: ``kernels`` holds (kind, kernel,
    arguments by name, configs) tuples; each spec is named ``{op}_{kind}[{where}, BLOCK=...
    w{warps}, {label}]`` (with every tile parameter, e.g. ``BLOCK=128 BLOCK_C=64 w4``)."""
    def tile(cfg):
        return " ".join(f"{k}={v}" for k, v in cfg.kwargs.items())

    return [kernel_spec(f"{op}_{kind}[{where}, {tile(cfg)} w{cfg.num_warps}, {label}]", fn, args,
                        cfg)
            for kind, fn, args, configs in kernels for cfg in configs]


# float64 acceptance, the int32 span guard and the double-backward refusal, for every op.

INT32_SPAN_LIMIT = 2**31


def check_tensor_or_float64(x: Any, name: str) -> torch.Tensor:
    """``check_tensor`` that also accepts float64, for kernels that accumulate it in fp64."""
    if isinstance(x, torch.Tensor) and x.dtype == torch.float64:
        check_tensor(x.new_empty((), dtype=torch.float32), name)  # the device checks alone
        return x
    if isinstance(x, torch.Tensor) and x.dtype not in SUPPORTED_DTYPES:
        raise NotImplementedError(
            f"{name}.dtype={x.dtype} is not supported; use one of "
            f"{', '.join(str(d) for d in (*SUPPORTED_DTYPES, torch.float64))}"
        )
    return check_tensor(x, name)


def check_int32_span(**tensors: torch.Tensor | None) -> None:
    """Refuse a tensor whose memory span (not element count: a strided view reaches further)
    does not fit the kernels' int32 offsets."""
    for name, t in tensors.items():
        if t is None or t.numel() == 0:
            continue
        span = 1 + sum((d - 1) * abs(s) for d, s in zip(t.shape, t.stride()))
        if span >= INT32_SPAN_LIMIT:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} and strides {t.stride()} spans {span} "
                f"elements; the kernels index with int32 (< 2**31): split the batch, or pass "
                "a contiguous tensor if this is a sparse view"
            )


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel computes in: float64 for float64 tensors, float32 for the rest."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def triton_acc(dtype: torch.dtype):
    """:func:`acc_dtype` as the Triton type a kernel's ``ACC: tl.constexpr`` takes."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def refuse_double_backward(op_name: str) -> Callable:
    """A ``register_autograd`` backward for a kernel's backward op: double backward raises the
    library's unsupported-feature error instead of a generic one."""

    def backward(ctx, *grads):
        raise NotImplementedError(
            f"double backward of {op_name} is not supported: its backward kernel is not "
            "differentiable (use the eager reference for higher-order gradients)"
        )

    return backward
