"""The kernels as PyTorch custom operators: torch.autocast decides the dtype that reaches the
launcher, torch.compile traces through them without graph breaks (eager and aot_eager backends,
fullgraph=True) and gives eager's results and gradients. On CPU under the interpreter."""

import importlib

import pytest
import torch
from test_conv2d_relu import make, reference
from tolerances import assert_close

from kernels.conv2d_relu import conv2d_relu

conv_mod = importlib.import_module("kernels.conv2d_relu")

OP = torch.ops.lightning_alexnet.conv2d_relu.default


@pytest.fixture
def launched_dtypes(monkeypatch):
    """The dtypes of (input, weight, bias) at each forward launch."""
    seen = []
    real = conv_mod._conv_forward

    def spy(x, weight, bias, geo):
        seen.append((x.dtype, weight.dtype, None if bias is None else bias.dtype))
        return real(x, weight, bias, geo)

    monkeypatch.setattr(conv_mod, "_conv_forward", spy)
    return seen


def conv(x, w, b):
    return conv2d_relu(x, w, b, 1, 1, 1, 2)


def test_autocast_runs_the_conv_in_the_autocast_dtype(launched_dtypes):
    x, w, b = make((1, 4, 5, 5), (6, 2, 3, 3))  # float32 leaves
    with torch.autocast("cpu", dtype=torch.float16):
        y = conv(x, w, b)
    assert launched_dtypes == [(torch.float16,) * 3]
    assert y.dtype == torch.float16
    # the result of the fp16 conv: the reference on the fp16-rounded inputs
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1)).half()
    halves = [t.detach().half().float() for t in (x, w, b)]
    y_ref, _ = reference(*halves, 1, 1, 2, dy)
    assert_close(y, y_ref, torch.float16, reduce_dim=18)
    # gradients flow back through autocast's casts to the float32 leaves
    grads = torch.autograd.grad(y, [x, w, b], dy)
    assert [g.dtype for g in grads] == [torch.float32] * 3


def test_autocast_bfloat16_reaches_the_launcher_checks():
    # bf16 is the autocast dtype that reaches the op; the interpreter cannot run bf16 tl.dot
    x, w, b = make((1, 4, 5, 5), (6, 2, 3, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(
            NotImplementedError, match=r"input.dtype=torch.bfloat16 is not supported under"):
        conv(x, w, b)


def test_outside_autocast_the_input_dtype_runs(launched_dtypes):
    for dtype in (torch.float32, torch.float16, torch.float64):
        x, w, b = make((1, 4, 5, 5), (6, 2, 3, 3), dtype=dtype)
        with torch.autocast("cpu", enabled=False):
            assert conv(x, w, b).dtype == dtype
    with torch.autocast("cpu", dtype=torch.float16):  # float64 is left alone, as torch does
        x, w, b = make((1, 4, 5, 5), (6, 2, 3, 3), dtype=torch.float64)
        assert conv(x, w, b).dtype == torch.float64
    assert [d[0] for d in launched_dtypes] == [torch.float32, torch.float16, torch.float64,
                                              torch.float64]


def test_autocast_rules_are_registered_for_cuda_and_cpu():
    # a CPU-only torch cannot run CUDA autocast; the same rule is registered for both
    for key in ("AutocastCUDA", "AutocastCPU"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(OP.name(), key), key


FAST_CHECKS = ("test_schema", "test_faketensor", "test_autograd_registration")


@pytest.mark.parametrize("checks", [
    pytest.param(FAST_CHECKS, id="fast"),
    # + aot_dispatch with dynamic shapes: ~25 s on 2 CPU cores
    pytest.param(FAST_CHECKS + ("test_aot_dispatch_dynamic",), id="all", marks=pytest.mark.slow),
])
def test_opcheck(checks):
    # schema, fake (meta) implementations, autograd registration of both operators
    x, w, b = make((1, 4, 5, 5), (6, 2, 3, 3))
    args = (x, w, b, [1, 1], [1, 1, 1, 1])
    torch.library.opcheck(OP, args, test_utils=checks)
    y = OP(*args).detach()
    backward = torch.ops.lightning_alexnet.conv2d_relu_backward.default
    torch.library.opcheck(backward, (torch.randn_like(y), x.detach(), w.detach(), y, *args[3:],
                                     [True, True, True]), test_utils=checks)


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_torch_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    x, w, b = make((1, 4, 5, 5), (6, 2, 3, 3))
    compiled = torch.compile(conv, backend=backend, fullgraph=True)  # a graph break raises
    y, y_eager = compiled(x, w, b), conv(x, w, b)
    assert torch.equal(y, y_eager)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
    for g, g_eager in zip(torch.autograd.grad(y, [x, w, b], dy),
                          torch.autograd.grad(y_eager, [x, w, b], dy)):
        assert torch.equal(g, g_eager)


def test_torch_compile_under_autocast(launched_dtypes):
    torch._dynamo.reset()
    x, w, b = make((1, 4, 5, 5), (6, 2, 3, 3))
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.float16):
        y = compiled(x, w, b)
        y_eager = conv(x, w, b)
    assert y.dtype == torch.float16 and torch.equal(y, y_eager)
    assert set(launched_dtypes) == {(torch.float16,) * 3}
    (gw,) = torch.autograd.grad(y.float().sum(), [w])
    (gw_eager,) = torch.autograd.grad(y_eager.float().sum(), [w])
    assert gw.dtype == torch.float32 and torch.equal(gw, gw_eager)
