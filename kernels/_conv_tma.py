"""The conv2-5 forward's and dgrad's weight through a TMA descriptor (Hopper, sm_90+).

Hopper's Tensor Memory Accelerator copies a box of a tensor, described once on the host, from
global to shared memory in one asynchronous instruction (``cp.async.bulk.tensor``): no
per-thread addresses, masks or registers, and zeros past the tensor's edges. The kernels read
the weight (the GEMM's B) that way in their ``USE_TMA`` configs; the activations (A, the
implicit-im2col gather with its padding masks) stay on pointers (``cp.async``).

- Descriptor: Triton's host-side ``TensorDescriptor`` (triton.tools.tensor_descriptor; Triton
  >= 3.4, so every version pyproject admits; no allocator needed, that is for descriptors made
  on the device), an extra kernel argument (``w_desc``; dgrad also ``wt_desc``), over the weight
  (C_out, C_in/g, KH, KW) stored channels_last as its (C_out, KH*KW*C_in/g) rows, in the
  kernels' K order (kh, kw, c). Built by the launchers (kernels._conv2d_relu_args) only on an
  sm_90+ GPU with the tensor-core path and LIGHTNING_ALEXNET_UNVERIFIED=1 (kernels.tuning's
  gate: these configs have not run on a GPU).
- Boxes: part of the descriptor's type, so of the compiled kernel, and set per config by the
  autotuner's ``pre_hook`` (:func:`fwd_tma_boxes`, :func:`dgrad_tma_boxes`). Forward: [BLOCK_N,
  BLOCK_K] at (g*C_out/g + n0, k0), transposed in the kernel into a K-major B, which Hopper's
  TF32 wgmma can read from shared memory (4-byte operands). dgrad: [BLOCK_K, BLOCK_N] at (the
  K block's output channels, tap * C_in/g + n0), where a K block lies in one tap (C_out/g %
  BLOCK_K == 0); its tail columns (BLOCK_N_TAIL) through a second descriptor of that width.
  dgrad's B is N-major, which Hopper's TF32 wgmma cannot read from shared memory (K-major
  only): its pointer configs copy B transposed in 4-byte pieces and still overlap (wgmma wait
  1-2 in the compile report), the TMA ones did not (wait 0), so TF32 dgrad keeps the pointer
  configs (:func:`tma_usable`); fp16/bf16 wgmma reads either order.
- What TMA needs, and what happens otherwise: a 16-byte aligned base, every stride but the last
  16-byte aligned, the last 1, a box's inner extent >= 16 bytes (every config's is). Where the
  weight does not meet it (not channels_last-contiguous, a storage offset, KH*KW*C_in/g *
  itemsize not a multiple of 16, fp64) :func:`weight_desc` gives None, the launcher keeps the
  plain autotuner and the pointer configs run: a choice of configuration, the same numbers. No
  copy is made to meet it: the model runs channels_last, a copy would cost a launch and up to
  1.7 MB per call, and an NCHW call is slow in the activations' gather anyway.
"""

from __future__ import annotations

import torch
import triton
from triton.tools.tensor_descriptor import TensorDescriptor

TMA_ALIGN = 16  # bytes: the base and every stride but the last
TMA_MIN_CAPABILITY = 9  # sm_90
_UNSET_BOX = (16, 16)  # until a config's pre_hook sets its own


def weight_desc(weight: torch.Tensor, geo) -> TensorDescriptor | None:
    """The weight's (C_out, KH*KW*C_in/g) rows as a TMA descriptor (``geo``: the call's
    kernels._conv2d_relu_args._Geometry), or None where TMA cannot read it in place (see the
    module docstring). The descriptor points at the weight itself: no copy."""
    k = geo.kh * geo.kw * geo.cg_in
    rows = weight.permute(0, 2, 3, 1)
    if (weight.dtype not in (torch.float16, torch.bfloat16, torch.float32)
            or not rows.is_contiguous() or weight.data_ptr() % TMA_ALIGN
            or k * weight.element_size() % TMA_ALIGN):
        return None
    return TensorDescriptor(rows.reshape(weight.shape[0], k), [weight.shape[0], k], [k, 1],
                            list(_UNSET_BOX))


def fwd_tma_boxes(nargs: dict) -> None:
    """pre_hook: the forward reads [BLOCK_N, BLOCK_K] boxes of the weight's rows."""
    if nargs["w_desc"] is not None:
        nargs["w_desc"].block_shape = [nargs["BLOCK_N"], nargs["BLOCK_K"]]


def dgrad_tma_boxes(nargs: dict) -> None:
    """pre_hook: dgrad reads [BLOCK_K, BLOCK_N] boxes of the weight's rows, and [BLOCK_K,
    BLOCK_N_TAIL] ones for its tail columns (without a tail, a box like the first: unused)."""
    if nargs["w_desc"] is not None:
        block_k, tail = nargs["BLOCK_K"], nargs["BLOCK_N_TAIL"]
        nargs["w_desc"].block_shape = [block_k, nargs["BLOCK_N"]]
        nargs["wt_desc"].block_shape = [block_k, tail or nargs["BLOCK_N"]]


def with_boxes(c: triton.Config, boxes, use_tma: bool) -> triton.Config:
    """``c`` with the descriptors' pre_hook ``boxes``, reading the weight by TMA (``use_tma``)
    or by pointers (a pointer config beside TMA ones: its descriptor argument keeps one type)."""
    kwargs = {**c.kwargs, "USE_TMA": True} if use_tma else dict(c.kwargs)
    return triton.Config(kwargs, num_warps=c.num_warps, num_stages=c.num_stages, pre_hook=boxes)


def tma_usable(configs: list[triton.Config], args: dict) -> list[triton.Config]:
    """The pruner's first step: leave out the TMA configs where the launcher built no
    descriptor (``w_desc`` None) and, for dgrad's (they have ``BLOCK_N_TAIL``), with TF32
    (no wgmma overlap, see above) or where a K block spans two taps (C_out/g % BLOCK_K != 0)."""
    def usable(c):
        if not c.kwargs.get("USE_TMA"):
            return True
        if args.get("w_desc") is None:
            return False
        return "BLOCK_N_TAIL" not in c.kwargs or (
            args["INPUT_PRECISION"] != "tf32" and args["CG_OUT"] % c.kwargs["BLOCK_K"] == 0)

    return [c for c in configs if usable(c)]
