"""LRN, max-pool and fused LRN + max-pool as torch.library custom operators: torch.compile
traces through them without a graph break (same outputs and gradients as eager calls), their
fake implementations match the real ones, and autocast leaves them in the input's dtype."""

import pytest
import torch

from kernels import local_response_norm, lrn_max_pool2d, max_pool2d
from kernels.lrn import lrn_backward_op, lrn_op
from kernels.lrn_max_pool2d import lrn_max_pool2d_backward_op, lrn_max_pool2d_op
from kernels.max_pool2d import max_pool2d_backward_op, max_pool2d_op

# compiled on the GPU when there is one, else under the interpreter (tests/conftest.py)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
LRN = (3, 2.0, 0.75, 1.0, 2)  # size, alpha, beta, k, groups
POOL = ([3, 3], [2, 2], [1, 1])  # kernel, stride, padding


def lrn_and_pools(x):
    """The three ops as AlexNet uses them: LRN then pool, and the fused pair."""
    return max_pool2d(local_response_norm(x, *LRN), 3, 2) * 2 + lrn_max_pool2d(x, *LRN)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_compile_fullgraph_equals_eager(backend):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 7, device=DEVICE, requires_grad=True)
    y = lrn_and_pools(x)
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, dy)
    torch._dynamo.reset()
    graphs = []

    def eager_recording(gm, example_inputs):  # the "eager" backend, keeping the graph
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(lrn_and_pools, fullgraph=True,
                             backend=eager_recording if backend == "eager" else backend)
    y_c = compiled(x)
    (dx_c,) = torch.autograd.grad(y_c, x, dy)
    assert torch.equal(y_c, y) and torch.equal(dx_c, dx)
    if backend == "eager":  # one graph, holding the three ops as opaque custom ops
        (graph,) = graphs
        ops = {str(node.target) for node in graph.graph.nodes if node.op == "call_function"}
        assert {"lightning_alexnet.lrn.default", "lightning_alexnet.max_pool2d.default",
                "lightning_alexnet.lrn_max_pool2d.default"} <= ops


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_fake_implementations_match_the_kernels(layout):
    # schema, fake tensors (shapes, dtypes and strides of every output) and autograd
    # registration, for each forward and backward op
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, device=DEVICE)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = x[:, :, :, 1:]
    x.requires_grad_()
    utils = ("test_schema", "test_autograd_registration", "test_faketensor")
    _, scale = lrn_op(x.detach(), *LRN, True)
    y, arg = max_pool2d_op(x.detach(), *POOL, True)
    yf, argf = lrn_max_pool2d_op(x.detach(), *LRN, *POOL, True)
    h, w = x.shape[2:]
    channels_last = layout == "channels_last"
    for op, args in (
        (lrn_op, (x, *LRN, True)),
        (lrn_backward_op, (x.detach(), scale, torch.randn_like(scale), *LRN[:3], LRN[4])),
        (max_pool2d_op, (x, *POOL, True)),
        (max_pool2d_backward_op, (torch.randn_like(y), arg, h, w, channels_last, *POOL)),
        (lrn_max_pool2d_op, (x, *LRN, *POOL, True)),
        (lrn_max_pool2d_backward_op, (x.detach(), torch.randn_like(yf), argf, *LRN, *POOL)),
    ):
        torch.library.opcheck(op, args, test_utils=utils)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_autocast_runs_them_in_the_input_dtype(dtype):
    # no autocast rule on purpose (see the module docstrings): bf16 in, bf16 out; fp32 stays
    x = torch.randn(1, 4, 5, 5, device=DEVICE).to(dtype)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        outputs = (local_response_norm(x, 3), max_pool2d(x, 3, 2), lrn_max_pool2d(x, 3))
    assert [y.dtype for y in outputs] == [dtype] * 3
