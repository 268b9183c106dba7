"""Triton kernels for AlexNet's slow ops, forward and backward, as drop-in functions.

Each function mirrors its ``torch.nn.functional`` counterpart and is differentiable:

- :func:`conv2d_relu` -- ``F.relu(F.conv2d(...))``, implicit GEMM with bias + ReLU fused
- :func:`local_response_norm` -- ``F.local_response_norm`` per channel group
- :func:`max_pool2d` -- ``F.max_pool2d``
- :func:`lrn_max_pool2d` -- ``F.max_pool2d(local_response_norm(...))`` in one pass

They run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (set before this
package is imported).

Layout: one module per op (``conv2d_relu``, ``lrn``, ``max_pool2d``, ``lrn_max_pool2d``), each
in the same order -- Triton kernels, launcher, custom operator with its autograd rule, public
function -- and none importing another. Beside them: ``tuning`` (every autotune table and
pruner, labelled with the layer shapes it serves), ``_common`` (argument checks, layout
helpers, the int32 span guard, the ahead-of-time spec builder), ``_lrn_pool`` (the device
functions and host helpers LRN and pooling share), ``_conv2d_relu_kernels``,
``_conv1_packed_kernels`` and ``_conv2d_relu_args`` (the convolution's Triton kernels, conv1's
kernels on its packed input; its geometry, argument builders and ahead-of-time specs), and ``_aot`` / ``compile_report`` (compilation for sm_80/sm_90 without
a GPU); ``_conv_tma`` (the convolution's weight through a TMA descriptor on sm_90).
"""

from kernels.conv2d_relu import conv2d_relu
from kernels.lrn import local_response_norm
from kernels.lrn_max_pool2d import lrn_max_pool2d
from kernels.max_pool2d import max_pool2d

__all__ = ["conv2d_relu", "local_response_norm", "lrn_max_pool2d", "max_pool2d"]
