"""The one tolerance table of the test suite, keyed by dtype.

References are computed in float64; a kernel result in ``dtype`` is compared after casting the
reference to float64. ``reduce_dim`` scales the absolute tolerance for outputs that are sums of
many products (the K of a convolution's GEMM), as rounding error grows with sqrt(K)..K.
"""

import torch

# dtype: (rtol, atol per unit of reduction)
RESOLUTION = {
    torch.float64: (1e-10, 1e-12),
    torch.float32: (1.3e-5, 1e-6),
    torch.float16: (1e-3, 1e-4),
    torch.bfloat16: (1.6e-2, 1e-3),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, reduce_dim: int = 1):
    """Compare a kernel result with a float64 reference at ``dtype``'s resolution."""
    rtol, atol = RESOLUTION[dtype]
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=rtol, atol=atol * max(1, reduce_dim) ** 0.5 * 10,
        equal_nan=True,
    )
