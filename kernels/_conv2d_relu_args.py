"""One conv2d_relu call's geometry and its kernels' arguments (private to
:mod:`kernels.conv2d_relu`).

- the argument checks of :func:`kernels.conv2d_relu` and the checked call's shapes
  (``_Geometry``);
- the instruction path: TF32 exactly when cuDNN would use it, "mma" (tensor-core tiles) or "fma"
  (exact fp32, fp64);
- conv1's packed layout (``_Packing``) and the packing copies;
- how many splits the weight gradient and the ReLU-mask pass get (from the SM count);
- one builder per kernel (``_fwd_args``, ...) of its arguments by name, used both by the
  launchers and by ``aot_specs``, so what is compiled ahead of time is what is launched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton

from kernels._common import (
    INT32_SPAN_LIMIT,
    INTERPRET,
    check_int32_span,
    check_same_device,
    check_same_dtype,
    check_tensor_or_float64,
    memory_format,
    pair,
    strides,
)
from kernels._conv_tma import TMA_MIN_CAPABILITY, weight_desc
from kernels.tuning import (
    PACKED_BLOCK_K,
    PACKED_CIN,
    PACKED_VEC,
    RELU_GRAD_BLOCK_C,
    RELU_GRAD_BLOCK_P,
    UNVERIFIED,
)

# Weight-gradient split-K: the output pixels (GEMM K) are cut into splits, chosen per tile by
# the autotuner's grid (_wgrad_splits), so that every config's grid fills WGRAD_WAVES waves of
# the GPU, a wave being SMs x WGRAD_RESIDENT programs: conv3-5 at batch 128 have only 21,632
# pixels but 27-216 tiles per split. WGRAD_RESIDENT (by operand bytes, fp64 as 4) bounds the
# programs an SM holds at once for every kept 4-warp tensor-core wgrad config (by registers and
# shared memory, in the compile report: fp16/bf16 3-6 on sm_90, 3-5 on sm_80; TF32 2-4 and 2-3),
# so each gets >= WGRAD_WAVES waves whatever its occupancy; each split is at least
# WGRAD_MIN_SPLIT_PIXELS long. Those configs' tiles are at most WGRAD_RESIDENT_TILE; a larger
# one (the gated 8-warp 128x128 and 256x64) holds more accumulator in more threads, so fewer of
# its programs fit an SM: the count scales down with the tile's area (half for those), which the
# grid function can see where it cannot see num_warps. kernels.conv2d_relu.WGRAD_SPLITS, when
# set, asks for a split count instead.
WGRAD_WAVES = 2
WGRAD_RESIDENT = {2: 6, 4: 4}
WGRAD_RESIDENT_TILE = 128 * 64
WGRAD_MIN_SPLIT_PIXELS = 256
# SMs assumed where none is queried: the interpreter, and the AOT specs (an H100 SXM's 132).
ASSUMED_SMS = 132

# The backward's ReLU-mask pass: enough pixel splits for RELU_GRAD_WAVES programs per SM (it
# is bandwidth-bound; its tile is in kernels.tuning).
RELU_GRAD_WAVES = 4


@dataclass(frozen=True)
class _Geometry:
    """One call's shapes; channel counts are per group."""

    n: int
    cg_in: int
    h: int
    w: int
    cg_out: int
    oh: int
    ow: int
    kh: int
    kw: int
    stride: tuple[int, int]
    padding: tuple[int, int]  # top/left padding (bottom/right follow from oh, ow)
    groups: int

    def sizes(self) -> dict:
        return {"N": self.n, "CG_IN": self.cg_in, "H": self.h, "W": self.w,
                "CG_OUT": self.cg_out, "OH": self.oh, "OW": self.ow}

    def op_params(self) -> dict:
        return {"KH": self.kh, "KW": self.kw, "STRIDE_H": self.stride[0],
                "STRIDE_W": self.stride[1], "PAD_H": self.padding[0], "PAD_W": self.padding[1]}


def _check_args(x, weight, bias, stride, padding, dilation, groups):
    """Validate a conv2d_relu call (all but the dtypes, which autocast may still change: see
    ``_check_dtypes``). Return the stride pair, the padding as (top, bottom, left, right) and
    whether the input is unbatched."""
    check_tensor_or_float64(x, "input")
    check_tensor_or_float64(weight, "weight")
    if bias is not None:
        check_tensor_or_float64(bias, "bias")
    check_same_device(input=x, weight=weight, bias=bias)
    if x.dim() not in (3, 4):
        raise ValueError(f"input must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(
            f"weight must be (C_out, C_in/groups, KH, KW), got shape {tuple(weight.shape)}"
        )
    if any(s <= 0 for s in weight.shape):
        raise ValueError(f"weight must have positive sizes, got shape {tuple(weight.shape)}")
    if pair(dilation, "dilation") != (1, 1):
        raise NotImplementedError(f"dilation={dilation!r} is not supported; only dilation=1")
    sh, sw = pair(stride, "stride")
    if sh <= 0 or sw <= 0:
        raise ValueError(f"stride must be positive, got {stride!r}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
        raise ValueError(f"groups must be a positive int, got {groups!r}")

    unbatched = x.dim() == 3
    n, c_in, h, w = (1, *x.shape) if unbatched else x.shape
    c_out, cg_in, kh, kw = weight.shape
    if c_in == 0:
        raise ValueError(f"input must have at least one channel, got shape {tuple(x.shape)}")
    if c_in % groups or c_out % groups:
        raise ValueError(
            f"groups={groups} must divide in_channels={c_in} and out_channels={c_out}"
        )
    if cg_in * groups != c_in:
        raise ValueError(
            f"weight shape {tuple(weight.shape)} expects {cg_in * groups} input channels "
            f"with groups={groups}, but input has {c_in} (shape {tuple(x.shape)})"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},), got {tuple(bias.shape)}")

    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if (sh, sw) != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride={stride!r}")
            # torch puts the odd extra row bottom/right
            pads = ((kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2)
        else:
            raise ValueError(f"padding must be 'valid', 'same', an int or a pair, got {padding!r}")
    else:
        ph, pw = pair(padding, "padding")
        if ph < 0 or pw < 0:
            raise ValueError(f"padding must be non-negative, got {padding!r}")
        pads = (ph, ph, pw, pw)
    oh = (h + pads[0] + pads[1] - kh) // sh + 1
    ow = (w + pads[2] + pads[3] - kw) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(
            f"output size would be {oh}x{ow} for input {h}x{w}, kernel {kh}x{kw}, "
            f"stride {(sh, sw)}, padding {padding!r}"
        )
    # int32 offsets: the views read (by their span), and the dense tensors written
    check_int32_span(input=x, weight=weight)
    for name, numel in (("input gradient", x.numel()), ("output", n * c_out * oh * ow)):
        if numel >= INT32_SPAN_LIMIT:
            raise ValueError(
                f"the {name} would hold {numel} elements; the kernels index with int32 "
                "(< 2**31): split the batch"
            )
    return (sh, sw), pads, unbatched


def _check_dtypes(x, weight, bias) -> None:
    """The dtypes the kernels run in (after any autocast cast)."""
    check_same_dtype(input=x, weight=weight, bias=bias)
    if INTERPRET and x.dtype == torch.bfloat16:
        raise NotImplementedError(
            f"input.dtype={x.dtype} is not supported under TRITON_INTERPRET=1: the interpreter's "
            "tl.dot multiplies the raw bits of bfloat16 (triton#11584); use float32/float16 "
            "or a GPU"
        )


def _geometry(x: torch.Tensor, weight: torch.Tensor, stride, padding) -> _Geometry:
    """A checked batched call's geometry; padding is (top, bottom, left, right)."""
    n, c_in, h, w = x.shape
    c_out, cg_in, kh, kw = weight.shape
    top, bottom, left, right = padding
    oh = (h + top + bottom - kh) // stride[0] + 1
    ow = (w + left + right - kw) // stride[1] + 1
    groups = c_in // cg_in
    return _Geometry(n, cg_in, h, w, c_out // groups, oh, ow, kh, kw, (stride[0], stride[1]),
                     (top, left), groups)


def _conv_allows_tf32() -> bool:
    """Whether cuDNN would use TF32 for an fp32 convolution now (PyTorch's default: yes).

    torch >= 2.9 keeps it in ``torch.backends.cudnn.conv.fp32_precision`` ("none" defers to
    ``torch.backends.cudnn`` and then ``torch.backends``; the legacy flag
    ``torch.backends.cudnn.allow_tf32`` sets it too); older torch has the flag alone."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        return bool(torch.backends.cudnn.allow_tf32)
    for level in (conv, torch.backends.cudnn, torch.backends):
        precision = getattr(level, "fp32_precision", "none")
        if precision != "none":
            return precision == "tf32"
    return False


def _input_precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and _conv_allows_tf32():
        return "tf32"
    return "ieee"  # exact fp32/fp64; fp16/bf16 products are exact in fp32 anyway


def _path(dtype: torch.dtype) -> str:
    """"mma" (tensor-core tiles) for fp16, bf16 and TF32; "fma" for exact fp32 and fp64."""
    if dtype in (torch.float16, torch.bfloat16) or _input_precision(dtype) == "tf32":
        return "mma"
    return "fma"


def _round_up(value: int, multiple: int) -> int:
    return triton.cdiv(value, multiple) * multiple


def _tma_wanted(x: torch.Tensor) -> bool:
    """Whether the forward and dgrad launchers build weight descriptors (kernels._conv_tma):
    the tensor-core path on an sm_90+ GPU with LIGHTNING_ALEXNET_UNVERIFIED=1. Never under the
    interpreter (the tests launch the TMA configs themselves)."""
    return (UNVERIFIED and not INTERPRET and x.is_cuda and _path(x.dtype) == "mma"
            and torch.cuda.get_device_capability(x.device)[0] >= TMA_MIN_CAPABILITY)


def _fwd_args(x, weight, bias, y, geo: _Geometry, tma: bool = False) -> tuple[dict, dict]:
    """Runtime arguments and op constexprs of _conv_fwd_kernel, in signature order; with
    ``tma`` (see _tma_wanted), the weight's descriptor where it takes one (else None)."""
    args = dict(x_ptr=x, w_ptr=weight, b_ptr=weight if bias is None else bias, y_ptr=y,
                w_desc=weight_desc(weight, geo) if tma else None,
                **geo.sizes(), **strides("x", x), **strides("w", weight, "ochw"),
                **strides("y", y))
    consts = dict(**geo.op_params(), HAS_BIAS=bias is not None,
                  INPUT_PRECISION=_input_precision(x.dtype))
    return args, consts


@dataclass(frozen=True)
class _Packing:
    """conv1's packed layout. A window row is KW taps x ``cp`` channels of one zero-bordered
    input row, contiguous; its first ``body`` elements (a multiple of PACKED_BLOCK_K) are read
    straight from the packed rows, the rest of every row (the ``tail``) from a small im2col copy,
    so every K block is whole, aligned runs of real elements or zeros and the kernel needs
    neither a mask nor a fix-up in registers (which would keep the tensor cores from
    overlapping: the zeroed tile could not be copied to shared memory asynchronously).

    - rows: (N, HP, WPC), pixels interleaved (w, c) with ``cp`` channels each (C_in, or the
      fewest above it that make ``STRIDE_W * cp`` a multiple of PACKED_VEC, so every window row
      starts PACKED_VEC-aligned: 8-byte loads in fp16/bf16, 16-byte in fp32); the padding is
      the border; WPC a multiple of 16 (a 16-divisible stride for the JIT).
      conv1: 3 channels, stride 4: window rows at 12 * ow, body 32 of their 33 elements.
    - tail: (N * OH * OW, TK), the KH * (KW * cp - body) remaining elements of each output
      pixel's window, zero-padded to TK, a multiple of PACKED_BLOCK_K (conv1: 11 -> 16).
    - weight: (C_out, KP), KP = KH * body + TK, in the same K order (conv1: 352 + 16 = 368 for
      363 useful, 98.6%).
    """

    cp: int
    hp: int
    wpc: int
    body: int
    tk: int
    kp: int
    tail0: int  # where the tail starts in the packed buffer: after the N * HP * WPC rows

    @staticmethod
    def of(geo: _Geometry) -> _Packing:
        sh, sw = geo.stride
        cp = next((c for c in range(geo.cg_in, PACKED_CIN + 1) if sw * c % PACKED_VEC == 0),
                  geo.cg_in)  # (PACKED_CIN is a multiple of PACKED_VEC)
        body = geo.kw * cp // PACKED_BLOCK_K * PACKED_BLOCK_K
        tk = _round_up(geo.kh * (geo.kw * cp - body), PACKED_BLOCK_K)
        hp = (geo.oh - 1) * sh + geo.kh
        wpc = _round_up(((geo.ow - 1) * sw + geo.kw) * cp, 16)
        return _Packing(cp, hp, wpc, body, tk, geo.kh * body + tk, geo.n * hp * wpc)

    def fits(self, geo: _Geometry) -> bool:
        """Whether conv1's path takes this call: one group of at most PACKED_CIN channels whose
        window rows hold at least one body block (C_in = 3, 11x11: 33 elements)."""
        return (geo.groups == 1 and geo.cg_in <= PACKED_CIN and self.body > 0
                and self.tail0 + geo.n * geo.oh * geo.ow * self.tk < INT32_SPAN_LIMIT)


def _windows(rows: torch.Tensor, geo: _Geometry, pk: _Packing) -> torch.Tensor:
    # the packed rows (N, HP, WPC) as every output pixel's window (N, OH, OW, KH, KW * CP): a
    # strided view, no copy
    n, hp, wpc = rows.shape
    return rows.as_strided((n, geo.oh, geo.ow, geo.kh, geo.kw * pk.cp),
                           (hp * wpc, geo.stride[0] * wpc, geo.stride[1] * pk.cp, wpc, 1),
                           rows.storage_offset())


def _pack_input(x, geo: _Geometry, pk: _Packing) -> tuple[torch.Tensor, torch.Tensor]:
    # (N, C_in <= 4, H, W) -> rows (N, HP, WPC): zeros with the image at (pad_top, pad_left),
    # rows and columns no window reaches left out; and the tail (N * OH * OW, TK), right after
    # the rows in one buffer (the weight gradient reads both from the rows' pointer)
    flat = x.new_zeros(pk.tail0 + geo.n * geo.oh * geo.ow * pk.tk)
    rows = flat[:pk.tail0].view(geo.n, pk.hp, pk.wpc)
    wp = pk.wpc // pk.cp  # whole pixels per row
    pixels = rows[:, :, :wp * pk.cp].unflatten(2, (wp, pk.cp))
    top, left = geo.padding
    h, w = min(geo.h, pk.hp - top), min(geo.w, wp - left)
    if h > 0 and w > 0:
        pixels[:, top:top + h, left:left + w, :geo.cg_in] = x[:, :, :h, :w].permute(0, 2, 3, 1)
    tail = flat[pk.tail0:].view(geo.n * geo.oh * geo.ow, pk.tk)
    rest = geo.kh * (geo.kw * pk.cp - pk.body)
    if rest:
        tail[:, :rest] = _windows(rows, geo, pk)[..., pk.body:].reshape(-1, rest)
    return rows, tail


def _pack_weight(weight, geo: _Geometry, pk: _Packing) -> torch.Tensor:
    # (C_out, C_in, KH, KW) -> (C_out, KP): the body, tap (kh, kw, c) at kh * BODY + kw * CP + c,
    # then the tail in the same (kh, kw, c) order, zeros elsewhere
    c_out, c_in, kh, kw = weight.shape
    taps = weight.new_zeros((c_out, kh, kw, pk.cp))
    taps[..., :c_in] = weight.permute(0, 2, 3, 1)
    taps = taps.reshape(c_out, kh, kw * pk.cp)
    rest = kh * (kw * pk.cp - pk.body)
    wp = weight.new_zeros((c_out, pk.kp))
    wp[:, :kh * pk.body] = taps[..., :pk.body].reshape(c_out, -1)
    wp[:, kh * pk.body:kh * pk.body + rest] = taps[..., pk.body:].reshape(c_out, -1)
    return wp


def _unpack_weight(wp: torch.Tensor, c_in: int, geo: _Geometry, pk: _Packing) -> torch.Tensor:
    # _pack_weight's inverse: (C_out, KP) -> a (C_out, C_in, KH, KW) view
    c_out, kh, kw = wp.shape[0], geo.kh, geo.kw
    rest = kh * (kw * pk.cp - pk.body)
    taps = torch.cat([wp[:, :kh * pk.body].reshape(c_out, kh, pk.body),
                      wp[:, kh * pk.body:kh * pk.body + rest].reshape(c_out, kh, -1)], dim=2)
    return taps.view(c_out, kh, kw, pk.cp)[..., :c_in].permute(0, 3, 1, 2)


def _wgrad_packed_args(xp, g, dw_part, pix_per_split, geo: _Geometry,
                       pk: _Packing) -> tuple[dict, dict]:
    """Runtime arguments and op constexprs of _conv_wgrad_packed_kernel, in signature order
    (xp: the packed rows, with the tails after them in the same buffer)."""
    args = dict(xp_ptr=xp, g_ptr=g, dw_part_ptr=dw_part, N=geo.n, OH=geo.oh, OW=geo.ow,
                C_OUT=geo.cg_out, PIX_PER_SPLIT=pix_per_split, TAIL0=pk.tail0,
                stride_xpn=pk.hp * pk.wpc, stride_xph=pk.wpc, **strides("g", g))
    consts = {"KH": geo.kh, "BODY": pk.body, "TK": pk.tk, "CP": pk.cp,
              "STRIDE_H": geo.stride[0], "STRIDE_W": geo.stride[1],
              "INPUT_PRECISION": _input_precision(xp.dtype)}
    return args, consts


def _bias_dtype(dtype: torch.dtype) -> torch.dtype:
    """The packed forward's bias dtype: fp32, fp64 for fp64 (exact widenings)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fwd_packed_args(xp, xt, wp, bias, y, geo: _Geometry, pk: _Packing) -> tuple[dict, dict]:
    """Runtime arguments and op constexprs of _conv_fwd_packed_kernel, in signature order. The
    bias is read in fp32 (fp64 for fp64): 16-bit ones are widened by the launcher, so that each
    thread's pair of bias values is one 8-byte load."""
    args = dict(xp_ptr=xp, xt_ptr=xt, wp_ptr=wp, b_ptr=wp if bias is None else bias, y_ptr=y,
                N=geo.n, OH=geo.oh, OW=geo.ow, C_OUT=geo.cg_out, stride_xpn=pk.hp * pk.wpc,
                stride_xph=pk.wpc, **strides("y", y))
    consts = {"KH": geo.kh, "BODY": pk.body, "TK": pk.tk, "CP": pk.cp,
              "STRIDE_H": geo.stride[0], "STRIDE_W": geo.stride[1], "HAS_BIAS": bias is not None,
              "INPUT_PRECISION": _input_precision(xp.dtype)}
    return args, consts


def _dgrad_args(g, weight, dx, geo: _Geometry, tma: bool = False) -> tuple[dict, dict]:
    """As _fwd_args; two descriptors of the weight (boxes for BLOCK_N and BLOCK_N_TAIL)."""
    w_desc = weight_desc(weight, geo) if tma else None
    wt_desc = None if w_desc is None else weight_desc(weight, geo)
    args = dict(g_ptr=g, w_ptr=weight, dx_ptr=dx, w_desc=w_desc, wt_desc=wt_desc,
                **geo.sizes(), **strides("g", g),
                **strides("w", weight, "ochw"), **strides("dx", dx))
    consts = dict(**geo.op_params(), INPUT_PRECISION=_input_precision(g.dtype))
    return args, consts


def _wgrad_args(x, g, dw, dw_part, geo) -> tuple[dict, dict]:
    """The split count is not an argument: it is the grid's axis 1 (see _wgrad_splits)."""
    args = dict(x_ptr=x, g_ptr=g, dw_part_ptr=dw_part, **geo.sizes(), DW_NUMEL=dw.numel(),
                **strides("x", x), **strides("g", g), **strides("dw", dw, "ochw"))
    consts = dict(**geo.op_params(), INPUT_PRECISION=_input_precision(x.dtype))
    return args, consts


def _relu_grad_args(dy, y, g, db_part, pix_per_split, has_bias) -> tuple[dict, dict]:
    n, c, oh, ow = y.shape
    args = dict(dy_ptr=dy, y_ptr=y, g_ptr=g, db_part_ptr=db_part, N=n, C=c, OH=oh, OW=ow,
                PIX_PER_SPLIT=pix_per_split, **strides("y", y), **strides("g", g))
    consts = {"HAS_BIAS": has_bias, "BLOCK_P": RELU_GRAD_BLOCK_P, "BLOCK_C": RELU_GRAD_BLOCK_C}
    return args, consts


def _new_output(x, geo: _Geometry) -> torch.Tensor:
    # (N, C_out, OH, OW), in the input's memory format
    return torch.empty((geo.n, geo.cg_out * geo.groups, geo.oh, geo.ow), dtype=x.dtype,
                       device=x.device, memory_format=memory_format(x))


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return ASSUMED_SMS
    return _cuda_sm_count(torch.cuda.current_device() if device.index is None else device.index)


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _gemm_programs(tiles: int, groups: int, sms: int, persistent: int) -> int:
    """Grid axis 0 of the forward and dgrad GEMMs (axis 1: the groups): one program per tile,
    or for a persistent config (``persistent`` = its PERSISTENT > 0 programs per SM) enough
    programs for that many per SM over all groups, each looping over tiles."""
    if persistent <= 0:
        return tiles
    return min(tiles, triton.cdiv(sms * persistent, groups))


def _wgrad_split_pixels(pixels: int, splits: int, block_k: int) -> int:
    """Output pixels per split when the wgrad grid has ``splits`` splits: the kernel's own
    formula (from ``tl.num_programs(1)``), a multiple of BLOCK_K, so only the last split's last
    K block is ragged."""
    return _round_up(triton.cdiv(pixels, splits), block_k)


def _wgrad_splits(geo: _Geometry, sms: int, block_m: int, block_n: int, block_k: int,
                  elem_bytes: int, requested: int | None = None) -> int:
    """How many splits of the output pixels the wgrad grid of one BLOCK_M x BLOCK_N x BLOCK_K
    config with ``elem_bytes`` operands launches (its axis 1): enough programs for WGRAD_WAVES
    waves of ``sms`` SMs holding WGRAD_RESIDENT programs each (fewer for tiles over
    WGRAD_RESIDENT_TILE, in proportion), or ``requested``
    (WGRAD_SPLITS), then lowered to the count whose splits are all non-empty under the
    kernel's split length. At batch 128 on 132 SMs in fp16/bf16 (conv1-5): 64x64 tiles 132, 21,
    8, 10, 15 splits; 128x64 tiles 264, 40, 15, 19, 29; 64x128 tiles 264, 42, 15, 15, 30 (each
    >= 1,584 programs); TF32 two thirds of that (>= 1,056). The price: conv3-5's fp32 partials
    are 5-30 x dW (up to 53 MB), written once and read back by the split-sum."""
    pixels = geo.n * geo.oh * geo.ow
    if requested is None:
        tiles = (triton.cdiv(geo.kh * geo.kw * geo.cg_in, block_m)
                 * triton.cdiv(geo.cg_out, block_n) * geo.groups)
        area = max(WGRAD_RESIDENT_TILE, block_m * block_n)
        resident = max(1, WGRAD_RESIDENT[min(elem_bytes, 4)] * WGRAD_RESIDENT_TILE // area)
        requested = min(triton.cdiv(WGRAD_WAVES * resident * sms, tiles),
                        max(1, pixels // WGRAD_MIN_SPLIT_PIXELS))
    # with q = the split length for ``requested`` (<= it) splits, cdiv(pixels, q) splits have
    # the same length q under the kernel's formula, and the last one starts below ``pixels``
    return triton.cdiv(pixels, _wgrad_split_pixels(pixels, max(1, requested), block_k))


def _wgrad_max_splits(geo: _Geometry, sms: int, configs: list[triton.Config], elem_bytes: int,
                      requested: int | None = None) -> int:
    """The most splits any of ``configs`` launches: the rows of the partial buffer."""
    return max(_wgrad_splits(geo, sms, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"],
                             c.kwargs["BLOCK_K"], elem_bytes, requested) for c in configs)


def _wgrad_packed_split(geo: _Geometry, sms: int, configs: list[triton.Config], elem_bytes: int,
                        requested: int | None = None) -> tuple[int, int]:
    """conv1's packed wgrad: (splits, pixels per split), one count for all its configs (they
    share one tile), chosen as :func:`_wgrad_splits` chooses it; the kernel takes the split
    length as an argument, a multiple of the largest BLOCK_K."""
    pixels = geo.n * geo.oh * geo.ow
    block_k = max(c.kwargs["BLOCK_K"] for c in configs)
    per_split = _wgrad_split_pixels(pixels, _wgrad_max_splits(geo, sms, configs, elem_bytes,
                                                              requested), block_k)
    return triton.cdiv(pixels, per_split), per_split


def _relu_grad_pixels_per_split(pixels: int, c_out: int, sms: int) -> int:
    """Output pixels per program of the ReLU-mask pass (see RELU_GRAD_WAVES)."""
    split = min(triton.cdiv(RELU_GRAD_WAVES * sms, triton.cdiv(c_out, RELU_GRAD_BLOCK_C)),
                triton.cdiv(pixels, RELU_GRAD_BLOCK_P))
    return _round_up(triton.cdiv(pixels, split), RELU_GRAD_BLOCK_P)
