"""2-D convolution + bias + ReLU, fused, forward and backward in Triton.

``conv2d_relu(input, weight, bias, stride, padding, dilation, groups)`` equals
``F.relu(F.conv2d(input, weight, bias, stride, padding, dilation, groups))``:

    input  (N, C_in, H, W) or unbatched (C_in, H, W); N = 0 gives an empty output
    weight (C_out, C_in / groups, KH, KW)
    bias   (C_out,) or None
    output (N, C_out, OH, OW) or (C_out, OH, OW),  OH = (H + 2 * pad_h - KH) // stride_h + 1

padding is an int, a pair, "valid" or "same" (stride 1; an even kernel puts the extra row
bottom/right, as torch does); dilation must be 1.

Kernels: implicit GEMMs with an fp32 accumulator (fp64 for fp64), forward, the backward's
ReLU-mask pass, input gradient (dgrad) and weight gradient (wgrad, a deterministic split-K),
and conv1's packed forward and weight gradient; :mod:`kernels._conv2d_relu_kernels` describes each. Tuning tables and
pruners: :mod:`kernels.tuning`; the call's geometry, argument checks and the kernels' arguments:
:mod:`kernels._conv2d_relu_args`.

NaN and inf as in PyTorch: the fused ReLU keeps NaN (``relu(NaN) = NaN``, ``inf - inf = NaN``),
and padding taps multiply as zeros (``0 * inf = NaN``, as torch's float64 convolution). One
exception is handled off the fast path: when the weight holds inf or NaN (a diverged run), the
dgrad GEMM would multiply it by the zeros that stand for taps reaching no output, which torch
never forms, so the input gradient then takes a slower exact route (``_conv_input_grad_
nonfinite``: the kernel on the finite weights plus counts of the non-finite products). Every
backward with an input gradient checks the weight for that on the host (one device sync),
except while a CUDA graph is being captured (no sync is allowed there): under CUDA graphs an
inf/NaN weight gives NaN in the input gradient also at border pixels torch leaves finite.

Layout: every kernel takes strides, so contiguous NCHW, channels_last, strided, offset and
0-stride (expanded) views of the input, weight and output gradient all work without a copy;
the bias is made contiguous (C_out elements), and an output gradient whose strides differ from
the output's is copied into the output's layout. **channels_last is the fast layout** (input,
weight and output gradient, i.e. ``model.to(memory_format=torch.channels_last)``): the K index
has the channel fastest, so with unit channel stride (which the JIT specialises to a constant)
and 16-divisible channel counts the loads along K are contiguous and vectorise. NCHW inputs
gather with stride H*W along K. The output takes channels_last when the input is
channels_last, else contiguous NCHW.

Precision follows PyTorch's: fp32, fp16, bf16 and fp64 in, the same dtype out. fp32 runs on
TF32 tensor cores exactly when cuDNN would (``torch.backends.cudnn.allow_tf32``, True by
default; ``torch.backends.cudnn.conv.fp32_precision`` on torch >= 2.9), else exact IEEE FMAs.
With TF32 the weight gradient rounds its input tile to TF32 (nearest, ties to even) in
registers before the MMA; the other operands go to the tensor cores as they are.
Under ``torch.autocast`` (CUDA, or CPU under the interpreter) the floating inputs are cast to
the autocast dtype (bf16 or fp16; fp64 is left alone, as torch does) and the output has that
dtype; gradients flow back through the casts. fp64 accumulates in fp64 without tensor cores,
for ``torch.autograd.gradcheck`` (its wgrad tile spills a few bytes on sm_90: not a fast path).

torch.compile: the forward and backward are ``torch.library`` custom operators
(``torch.ops.lightning_alexnet.conv2d_relu`` and ``conv2d_relu_backward``) with fake
implementations, an autograd formula and an autocast rule, so ``torch.compile`` traces a model
that calls them without graph breaks (tested with the eager and aot_eager backends).

Indices are int32: the memory span each view reaches (not only its element count), the output
and the input gradient must stay below 2**31 elements; beyond, a ValueError.

Speed, honestly: Triton convolutions usually do not beat cuDNN on NVIDIA GPUs (PyTorch Inductor
keeps its Triton conv templates off on CUDA for that reason). The value here is the fused
epilogue, the Triton backward and a kernel one can read and change. dgrad with stride s > 1
wastes about 1 - 1/s^2 of its K loop on masked taps (only conv1 has stride 4, and it needs no
dgrad). Exact fp32 has no tensor-core instruction: ``tl.dot`` becomes FMAs with smaller tiles,
several times slower than fp16/bf16 or TF32 (cuDNN's exact fp32 pays the same). Not yet run on
a GPU here: every autotune config the pruner keeps was compiled ahead of time for sm_80 and
sm_90 at all five AlexNet convolution shapes (see ``aot_specs``); none has been timed. A few
configs outside ``pytest tests/test_compile.py``'s default set spill 4-12 bytes: on sm_80 with
TF32, dgrad 64x64x64 (conv3, conv4) and wgrad 64x128x32 (conv2); on sm_90, exact-fp32 dgrad
64x64x16 with 3 stages (conv3, conv5). ``python -m kernels.compile_report`` lists them.
On sm_90 with LIGHTNING_ALEXNET_UNVERIFIED=1, conv2-5's forward and dgrad may also read the
weight by TMA (compiled for sm_90 only, never run; :mod:`kernels._conv_tma`).
conv1's forward and weight gradient run its packed kernels (8-byte ``cp.async`` in fp16/bf16,
16-byte in fp32, pipelined, with async wgmma on sm_90; 98.6% of the forward's K is useful; the
input is packed once per forward and once per backward). Where the packed copies would pass
2**31 elements or a window row is shorter than 16 elements, a C_in <= 4 convolution takes the
general kernels, which gather 3-channel taps with scalar loads and smaller tiles
(``SMALL_CIN``).
The backward's ReLU-mask pass reads dy and y and writes g once (about 3 activation-sized
transfers), so dgrad and wgrad each read one gradient tensor instead of two.

Refused, with a clear error (exactly these):

- NotImplementedError: dilation != 1; double backward (differentiating the gradient again);
  a dtype other than float32/float16/bfloat16/float64; bfloat16 under the interpreter (its
  ``tl.dot`` multiplies the raw bf16 bits); a device other than CUDA or CPU.
- RuntimeError: a CPU tensor without ``TRITON_INTERPRET=1``, or a CUDA tensor with it.
- ValueError: tensors on different devices or of different dtypes (after autocast); input not
  3-D/4-D, weight not 4-D or with a zero size, an input with no channels; bias not (C_out,);
  groups not a positive int dividing both channel counts; channels not matching the weight;
  stride not positive; padding negative, an unknown string, or 'same' with stride > 1; an
  empty output (OH or OW <= 0); a view spanning, or an output/input gradient holding,
  2**31 elements or more; weight-gradient partials of 2**31 elements or more.
- TypeError: an input, weight or bias that is not a tensor.

When only the bias needs a gradient, only the ReLU-mask pass runs (it produces the bias sum).
"""

from __future__ import annotations

import torch
import triton

from kernels._common import (
    INT32_SPAN_LIMIT,
    device_context,
    memory_format,
    refuse_double_backward,
)
from kernels._conv1_packed_kernels import _conv_fwd_packed, _conv_wgrad_packed
from kernels._conv2d_relu_args import (
    _bias_dtype,
    _check_args,
    _check_dtypes,
    _dgrad_args,
    _fwd_args,
    _fwd_packed_args,
    _gemm_programs,
    _Geometry,
    _geometry,
    _new_output,
    _pack_input,
    _pack_weight,
    _Packing,
    _path,
    _relu_grad_args,
    _relu_grad_pixels_per_split,
    _sm_count,
    _tma_wanted,
    _unpack_weight,
    _wgrad_args,
    _wgrad_max_splits,
    _wgrad_packed_args,
    _wgrad_packed_split,
    _wgrad_splits,
)
from kernels._conv2d_relu_kernels import (
    _conv_dgrad,
    _conv_fwd,
    _conv_wgrad,
    _relu_grad_kernel,
    _split_sum_kernel,
)
from kernels._conv2d_relu_specs import (  # noqa: F401 (kernels._aot and compile_report read them here)
    ALEXNET_CONVS,
    aot_specs,
)
from kernels.tuning import (
    CONV_INTERPRET_CONFIG,
    CONV_TUNING,
    PACKED_TUNING,
    RELU_GRAD_BLOCK_C,
    RELU_GRAD_LAUNCH,
    SUM_BLOCK,
    autotune_configs,
)

# Weight-gradient split-K (see kernels._conv2d_relu_args._wgrad_splits): when set, WGRAD_SPLITS
# asks for that many splits of the output pixels (tests set it to exercise several splits on
# tiny shapes; the count is lowered where a split would be empty); None leaves the count to the
# SM count, the shape and each config's tile.
WGRAD_SPLITS: int | None = None


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _conv_forward(x, weight, bias, geo: _Geometry) -> torch.Tensor:
    # (N, C_in, H, W) -> (N, C_out, OH, OW); bias contiguous
    y = _new_output(x, geo)
    if y.numel() == 0:
        return y
    pk = _Packing.of(geo)
    if pk.fits(geo):  # conv1
        rows, tail = _pack_input(x, geo, pk)
        b = None if bias is None else bias.to(_bias_dtype(bias.dtype))
        args, consts = _fwd_packed_args(rows, tail, _pack_weight(weight, geo, pk), b, y, geo, pk)

        def grid(meta):  # 1-D: M tiles x N tiles, N fastest
            return (triton.cdiv(geo.n * geo.oh * geo.ow, meta["BLOCK_M"])
                    * triton.cdiv(geo.cg_out, meta["BLOCK_N"]),)

        with device_context(x):
            _conv_fwd_packed[_path(x.dtype)][grid](**args, **consts)
        return y
    _launch_gemm(_conv_fwd, x, _fwd_args(x, weight, bias, y, geo, tma=_tma_wanted(x)),
                 geo.n * geo.oh * geo.ow, geo.cg_out, geo.groups)
    return y


def _launch_gemm(tuners: dict, x, args_consts, rows: int, cols: int, groups: int) -> None:
    """An autotuned GEMM kernel (forward or dgrad) on x's device and instruction path, over a
    (rows / BLOCK_M x cols / columns per program, groups) grid; a program computes BLOCK_N
    columns, plus BLOCK_N_TAIL for dgrad's two-accumulator tiles. With a weight descriptor
    (``w_desc``, sm_90 and the UNVERIFIED gate) the "mma_tma" autotuner, whose TMA configs
    read the weight through it."""
    args, consts = args_consts
    path = "mma_tma" if args["w_desc"] is not None else _path(x.dtype)
    sms = _sm_count(x.device)

    def grid(meta):  # a persistent config (PERSISTENT > 0) launches fewer programs
        per_program = meta["BLOCK_N"] + meta.get("BLOCK_N_TAIL", 0)
        tiles = triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(cols, per_program)
        return (_gemm_programs(tiles, groups, sms, meta.get("PERSISTENT", 0)), groups)

    with device_context(x):
        tuners[path][grid](**args, **consts)


def _conv_input_grad(g, weight, x, geo: _Geometry) -> torch.Tensor:
    # masked dy (N, C_out, OH, OW) -> dx (N, C_in, H, W), in the input's memory format
    if not _weight_is_finite(weight):
        return _conv_input_grad_nonfinite(g, weight, x, geo)
    return _dgrad(g, weight, x, geo)


def _weight_is_finite(weight: torch.Tensor) -> bool:
    # one host sync per backward; none is allowed while a CUDA graph is captured, so there
    # the check is skipped (documented: inf/NaN weights then give NaN at border pixels of dx)
    if weight.is_cuda and torch.cuda.is_current_stream_capturing():
        return True
    return bool(torch.isfinite(weight).all())


def _dgrad(g, weight, x, geo: _Geometry) -> torch.Tensor:
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=memory_format(x))
    if dx.numel() == 0:  # H or W is 0 and padding alone made the output
        return dx
    _launch_gemm(_conv_dgrad, x, _dgrad_args(g, weight, dx, geo, tma=_tma_wanted(x)),
                 geo.n * geo.h * geo.w, geo.cg_in, geo.groups)
    return dx


def _conv_input_grad_nonfinite(masked, weight, x, geo: _Geometry) -> torch.Tensor:
    """dgrad for a weight that holds inf or NaN (a diverged run), as torch computes it.

    The dgrad GEMM gives a tap that reaches no output pixel (border, stride) a zero operand, and
    0 * inf = NaN, while torch only ever adds the taps that exist. So: the finite part of the
    weight through the kernel, plus, per input pixel, whether an existing tap multiplies a
    non-finite weight into NaN, +inf or -inf -- counted by the same kernel on 0/1 indicators
    (exact: a zero operand adds nothing), then combined as IEEE addition would."""
    every = torch.ones_like(masked)

    def reaches(taps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # input pixels with an existing tap where both indicators are set
        return _dgrad(taps.to(x.dtype), weights.to(weight.dtype), x, geo) > 0

    pos_w, neg_w, nan_w = weight == float("inf"), weight == float("-inf"), weight.isnan()
    pos_g, neg_g, zero_g = masked > 0, masked < 0, masked == 0
    nan = reaches(every, nan_w) | reaches(zero_g, pos_w | neg_w)  # NaN * w, 0 * inf
    up = reaches(pos_g, pos_w) | reaches(neg_g, neg_w)  # +inf terms
    down = reaches(neg_g, pos_w) | reaches(pos_g, neg_w)  # -inf terms
    extra = torch.where(up, float("inf"), 0.0) + torch.where(down, float("-inf"), 0.0)
    extra = torch.where(nan, float("nan"), extra).to(x.dtype)
    finite = torch.where(torch.isfinite(weight), weight, torch.zeros_like(weight))
    return _dgrad(masked, finite, x, geo).add_(extra)


def _split_sum(part: torch.Tensor, out: torch.Tensor) -> None:
    """out (dense, any strides) <- sum over part's first axis, in storage order."""
    split, numel = part.shape
    _split_sum_kernel[(triton.cdiv(numel, SUM_BLOCK),)](part, out, numel, split, BLOCK=SUM_BLOCK)


def _relu_grad(dy, y, has_bias: bool):
    """dy, y (N, C_out, OH, OW), dy in y's strides -> (dy masked by the ReLU in y's strides,
    the bias gradient (C_out,) or None). Deterministic: fixed splits, summed in order."""
    n, c_out, oh, ow = y.shape
    g = torch.empty_strided(y.shape, y.stride(), dtype=y.dtype, device=y.device)
    pix_per_split = _relu_grad_pixels_per_split(n * oh * ow, c_out, _sm_count(y.device))
    split = triton.cdiv(n * oh * ow, pix_per_split)
    acc_dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
    db_part = torch.empty((split, c_out), dtype=acc_dtype, device=y.device) if has_bias else g
    args, consts = _relu_grad_args(dy, y, g, db_part, pix_per_split, has_bias)
    db = torch.empty((c_out,), dtype=y.dtype, device=y.device) if has_bias else None
    with device_context(y):
        _relu_grad_kernel[(split, triton.cdiv(c_out, RELU_GRAD_BLOCK_C))](
            **args, **consts, num_warps=RELU_GRAD_LAUNCH.num_warps,
            num_stages=RELU_GRAD_LAUNCH.num_stages)
        if has_bias:
            _split_sum(db_part, db)
    return g, db


def _conv_weight_grad(x, g, weight, geo: _Geometry) -> torch.Tensor:
    # x (N, C_in, H, W), masked dy (N, C_out, OH, OW) -> dW like weight
    pk = _Packing.of(geo)
    if pk.fits(geo):  # conv1: on the packed input, as its forward
        return _conv_weight_grad_packed(x, g, weight, geo, pk)
    dw = torch.empty_like(weight)  # weight's strides when it is dense, else contiguous
    path, sms = _path(x.dtype), _sm_count(x.device)
    # each config's grid has its own split count: the partials have rows for the most
    # splits any config the autotuner may run launches, and the sum reads the launched ones
    configs = autotune_configs(CONV_TUNING["wgrad"][path][0], CONV_INTERPRET_CONFIG)
    rows = _wgrad_max_splits(geo, sms, configs, x.element_size(), WGRAD_SPLITS)
    if rows * dw.numel() >= INT32_SPAN_LIMIT:
        raise ValueError(
            f"weight-gradient partials would hold {rows} x {dw.numel()} elements (int32 "
            f"indexing); set kernels.conv2d_relu.WGRAD_SPLITS (now {WGRAD_SPLITS}) below "
            f"{INT32_SPAN_LIMIT // dw.numel()} splits"
        )
    # fp32 partials (fp64 for fp64), one row per split, in dW's storage order
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dw_part = torch.empty((rows, dw.numel()), dtype=acc_dtype, device=x.device)
    args, consts = _wgrad_args(x, g, dw, dw_part, geo)
    launched = []  # the split count of each grid built; the last one is the launch that counts

    def grid(meta):  # (M tiles x N tiles, splits, groups)
        splits = _wgrad_splits(geo, sms, meta["BLOCK_M"], meta["BLOCK_N"], meta["BLOCK_K"],
                               x.element_size(), WGRAD_SPLITS)
        launched.append(splits)
        return (triton.cdiv(geo.kh * geo.kw * geo.cg_in, meta["BLOCK_M"])
                * triton.cdiv(geo.cg_out, meta["BLOCK_N"]), splits, geo.groups)

    with device_context(x):
        _conv_wgrad[path][grid](**args, **consts)
        _split_sum(dw_part[:launched[-1]], dw)
    return dw


def _conv_weight_grad_packed(x, g, weight, geo: _Geometry, pk: _Packing) -> torch.Tensor:
    # conv1: the input packed again (as the forward packed it), packed dW^T (KP, C_out) in
    # fp32 partials per pixel split, summed in order, unpacked to dW like weight
    configs = autotune_configs(PACKED_TUNING["wgrad_packed"][_path(x.dtype)], CONV_INTERPRET_CONFIG)
    split, pix_per_split = _wgrad_packed_split(geo, _sm_count(x.device), configs,
                                               x.element_size(), WGRAD_SPLITS)
    if split * geo.cg_out * pk.kp >= INT32_SPAN_LIMIT:
        raise ValueError(
            f"weight-gradient partials would hold {split} x {geo.cg_out * pk.kp} elements "
            f"(int32 indexing); set kernels.conv2d_relu.WGRAD_SPLITS (now {WGRAD_SPLITS}) below "
            f"{INT32_SPAN_LIMIT // (geo.cg_out * pk.kp)} splits"
        )
    rows, _ = _pack_input(x, geo, pk)
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    dw_part = torch.empty((split, geo.cg_out * pk.kp), dtype=acc_dtype, device=x.device)
    dwp = torch.empty((geo.cg_out, pk.kp), dtype=weight.dtype, device=x.device)
    args, consts = _wgrad_packed_args(rows, g, dw_part, pix_per_split, geo, pk)
    grid = lambda meta: (triton.cdiv(pk.kp, meta["BLOCK_M"])
                         * triton.cdiv(geo.cg_out, meta["BLOCK_N"]), split)
    with device_context(x):
        _conv_wgrad_packed[_path(x.dtype)][grid](**args, **consts)
        _split_sum(dw_part, dwp)
    dw = torch.empty_like(weight)
    return dw.copy_(_unpack_weight(dwp, geo.cg_in, geo, pk))


# ----------------------------------------------------------------------------------------------
# Custom operators (torch.library): autograd, autocast, torch.compile
# ----------------------------------------------------------------------------------------------

# The forward and the backward are PyTorch custom operators, opaque to torch.compile (it traces
# through them without graph breaks; their fake implementations give the output shapes and
# layouts). The forward's autograd formula calls the backward operator; differentiating that
# again (double backward) raises NotImplementedError.


@torch.library.custom_op("lightning_alexnet::conv2d_relu", mutates_args=())
def _conv2d_relu_op(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    stride: list[int], padding: list[int]) -> torch.Tensor:
    # input (N, C_in, H, W), checked by conv2d_relu; padding (top, bottom, left, right)
    _check_dtypes(input, weight, bias)
    geo = _geometry(input, weight, stride, padding)
    if bias is not None:
        bias = bias.contiguous()  # the kernel reads it as b_ptr + channel
    return _conv_forward(input, weight, bias, geo)


@_conv2d_relu_op.register_fake
def _conv2d_relu_fake(input, weight, bias, stride, padding):
    _check_dtypes(input, weight, bias)
    return _new_output(input, _geometry(input, weight, stride, padding))


@torch.library.custom_op("lightning_alexnet::conv2d_relu_backward", mutates_args=())
def _conv2d_relu_backward_op(
    grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, output: torch.Tensor,
    stride: list[int], padding: list[int], needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # -> (d input, d weight, d bias); an empty (0,) tensor for each one not in ``needs``
    geo = _geometry(input, weight, stride, padding)
    need_x, need_w, need_b = needs
    if grad.stride() != output.stride():  # the kernels read grad with the output's strides
        grad = torch.empty_like(output).copy_(grad)
    dx = dw = db = None
    if geo.n == 0:  # empty batch: nothing to launch, sums over no pixels are zero
        dx = torch.empty_like(input) if need_x else None
        dw = torch.zeros_like(weight) if need_w else None
        db = weight.new_zeros(weight.shape[0]) if need_b else None
    else:
        # one pass applies the ReLU mask (and sums the bias gradient); the GEMMs read only g
        g, db = _relu_grad(grad, output, has_bias=need_b)
        if need_x:
            dx = _conv_input_grad(g, weight, input, geo)
        if need_w:
            dw = _conv_weight_grad(input, g, weight, geo)
    return _none_to_empty(input, dx if need_x else None, dw if need_w else None, db)


@_conv2d_relu_backward_op.register_fake
def _conv2d_relu_backward_fake(grad, input, weight, output, stride, padding, needs):
    need_x, need_w, need_b = needs
    dx = torch.empty(input.shape, dtype=input.dtype, device=input.device,
                     memory_format=memory_format(input)) if need_x else None
    dw = torch.empty_like(weight) if need_w else None
    db = weight.new_empty(weight.shape[0]) if need_b else None
    return _none_to_empty(input, dx, dw, db)


def _none_to_empty(like: torch.Tensor, *grads):
    # a custom operator returns tensors: an empty one stands for "no gradient"
    return tuple(like.new_empty(0) if g is None else g for g in grads)


def _setup_context(ctx, inputs, output):
    input, weight, _, stride, padding = inputs
    ctx.save_for_backward(input, weight, output)
    ctx.stride, ctx.padding = stride, padding


def _backward(ctx, grad):
    input, weight, output = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:3])
    grads = _conv2d_relu_backward_op(grad, input, weight, output, ctx.stride, ctx.padding, needs)
    return (*(g if need else None for g, need in zip(grads, needs)), None, None)


_conv2d_relu_op.register_autograd(_backward, setup_context=_setup_context)
_conv2d_relu_backward_op.register_autograd(refuse_double_backward("conv2d_relu"))

# Autocast rule: torch.library.register_autocast casts to one fixed dtype, while autocast's dtype
# is the user's choice (bf16 or fp16): this kernel reads it at each call, casts the floating
# tensors on that device (float64 stays, as torch's autocast leaves it) and runs the op with
# autocast off.
_LIB = torch.library.Library("lightning_alexnet", "FRAGMENT")


def _autocast_rule(device_type: str, key: str):
    def kernel(keyset, input, weight, bias, stride, padding):
        dtype = torch.get_autocast_dtype(device_type)

        def cast(t):
            eligible = (t is not None and t.device.type == device_type and t.is_floating_point()
                        and t.dtype != torch.float64)
            return t.to(dtype) if eligible else t

        with torch._C._ExcludeDispatchKeyGuard(
                torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))):
            return _conv2d_relu_op(cast(input), cast(weight), cast(bias), stride, padding)

    return kernel


for _device_type, _key in (("cuda", "AutocastCUDA"), ("cpu", "AutocastCPU")):
    _LIB.impl("conv2d_relu", _autocast_rule(_device_type, _key), _key, with_keyset=True)


# ----------------------------------------------------------------------------------------------
# Public function
# ----------------------------------------------------------------------------------------------


def conv2d_relu(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.relu(F.conv2d(input, weight, bias, stride, padding, dilation, groups))`` in Triton.

    input (N, C_in, H, W) or (C_in, H, W); weight (C_out, C_in/groups, KH, KW); bias (C_out,).
    Returns (N, C_out, OH, OW) (or (C_out, OH, OW)) in input's dtype (the autocast dtype under
    ``torch.autocast``), channels_last when the input is channels_last. Differentiable (Triton
    backward; no double backward). Fast layout: channels_last. padding may be an int, a pair,
    'valid' or 'same'; dilation must be 1. See the module docstring for what is refused.
    """
    stride, pads, unbatched = _check_args(input, weight, bias, stride, padding, dilation, groups)
    x = input.unsqueeze(0) if unbatched else input
    y = _conv2d_relu_op(x, weight, bias, list(stride), list(pads))
    return y.squeeze(0) if unbatched else y


# Ahead-of-time compile specs: ``aot_specs`` (imported above from kernels._conv2d_relu_args, for
# kernels._aot) builds them with the launchers' own argument builders.
