"""Test-wide setup.

The Triton kernels run on CPU under Triton's interpreter, which must be switched on before
``kernels`` (and so ``@triton.jit``) is first imported: this file is imported by pytest before
any test module.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
