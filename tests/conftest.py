"""Test-wide setup.

The Triton kernels run on CPU under Triton's interpreter, which must be switched on before
``kernels`` (and so ``@triton.jit``) is first imported: this file is imported by pytest before
any test module.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


# With a GPU, the kernel tests run compiled on it (``make gpu-report``'s first stage): their
# tensors are created on the default device, which is CUDA for these modules when one exists.
KERNEL_TEST_MODULES = {
    "test_conv2d_relu", "test_conv2d_relu_edge", "test_custom_ops", "test_lrn",
    "test_max_pool2d", "test_lrn_max_pool2d", "test_convergence",
}


@pytest.fixture(autouse=True)
def _kernel_tests_on_the_gpu(request):
    name = request.module.__name__.rsplit(".", 1)[-1]
    if torch.cuda.is_available() and name in KERNEL_TEST_MODULES:
        with torch.device("cuda"):
            yield
    else:
        yield
