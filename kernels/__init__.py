"""Triton kernels for AlexNet's slow ops, forward and backward, as drop-in functions.

Each function mirrors its ``torch.nn.functional`` counterpart and is differentiable:

- :func:`conv2d_relu` -- ``F.relu(F.conv2d(...))``, implicit GEMM with bias + ReLU fused
- :func:`local_response_norm` -- ``F.local_response_norm`` per channel group
- :func:`max_pool2d` -- ``F.max_pool2d``
- :func:`lrn_max_pool2d` -- ``F.max_pool2d(local_response_norm(...))`` in one pass

They run on CUDA tensors, or on CPU tensors under ``TRITON_INTERPRET=1`` (set before this
package is imported).
"""

from kernels.conv2d_relu import conv2d_relu
from kernels.lrn import local_response_norm
from kernels.lrn_max_pool2d import lrn_max_pool2d
from kernels.max_pool2d import max_pool2d

__all__ = ["conv2d_relu", "local_response_norm", "lrn_max_pool2d", "max_pool2d"]
