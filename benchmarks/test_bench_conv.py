"""conv2d benchmarks: forward, backward (dx, dw, db), forward + backward, per shape and tier."""
import numpy as np
import pytest

from benchmarks import baselines, cases, memory
from benchmarks.conftest import require
from fastconv import functional as F

SHAPES = list(cases.CONV_SHAPES)


@pytest.mark.parametrize("impl", cases.IMPLS)
@pytest.mark.parametrize("pass_", cases.PASSES)
@pytest.mark.parametrize("shape", SHAPES)
def test_conv2d(benchmark, record, run, shape, pass_, impl):
    require(impl)
    s = cases.CONV_SHAPES[shape]
    case = cases.conv_case(impl, shape, pass_)
    benchmark.group = f"conv2d {shape} {pass_}"
    record(kind="conv", op="conv2d", impl=impl, shape=shape, **{"pass": pass_},
           flops=cases.conv_flops(s, pass_), time_scale=case.scale, batch=s.n,
           timed_batch=round(s.n / case.scale))
    run(impl, case)


def test_conv2d_batch1024_workspace(benchmark, record, run):
    """Forward + backward of shape B at batch 1024: time, and the workspace in a fresh process."""
    ws = memory.measure_in_subprocess("cpu", "B", 1024)
    record(kind="memory", op="conv2d", impl="cpu", shape="B", **{"pass": "fwdbwd"}, batch=1024,
           flops=cases.conv_flops(cases.CONV_SHAPES["B"]._replace(n=1024), "fwdbwd"),
           workspace_mib=ws["workspace"] / memory.MIB, target_mib=memory.TARGET_MIB)
    run("cpu", cases.conv_case("cpu", "B", "fwdbwd", n=1024))


@pytest.mark.parametrize("geometry", [(2, 3, 9, 9, 4, 3, 1, 1), (2, 2, 12, 11, 3, 5, 1, 0),
                                      (2, 3, 10, 11, 4, 3, 2, 1)])
def test_numpy_baseline_matches_naive(geometry):
    """The NumPy baseline computes the same convolution and gradients as the oracle tier."""
    n, c, h, w, k, f, stride, pad = geometry
    rng = np.random.default_rng(3)
    x, wt, dout_like = (rng.standard_normal(s, dtype=np.float32) for s in ((n, c, h, w), (k, c, f, f), (k,)))
    out, cache = baselines.conv2d(x, wt, dout_like, stride, pad)
    ref, ref_cache = F.conv2d(x, wt, dout_like, stride, pad, backend="naive")
    assert out.shape == ref.shape and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    for got, want in zip(baselines.conv2d_backward(dout, cache), F.conv2d_backward(dout, ref_cache)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_torch_wrapper_matches_naive():
    """The PyTorch wrapper times the same convolution (all three gradients)."""
    require("torch")
    rng = np.random.default_rng(4)
    x, w, b = (rng.standard_normal(s, dtype=np.float32) for s in ((2, 3, 8, 8), (4, 3, 3, 3), (4,)))
    t = baselines.TorchConv(x, w, b, 1, 1)
    out = t.forward()
    ref, cache = F.conv2d(x, w, b, 1, 1, backend="naive")
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    dout = rng.standard_normal(ref.shape, dtype=np.float32)
    for got, want in zip(t.backward(out, dout), F.conv2d_backward(dout, cache)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


def test_flops():
    """FLOP counts: 2*N*K*C*FH*FW*Hout*Wout forward, twice that backward with dx."""
    s = cases.CONV_SHAPES["E"]
    fwd = 2 * 10 * 40 * 20 * 5 * 5 * 8 * 8
    assert cases.conv_flops(s, "fwd") == fwd
    assert cases.conv_flops(s, "bwd") == 2 * fwd
    assert cases.conv_flops(s, "bwd", need_dx=False) == fwd
    assert cases.conv_flops(s, "fwdbwd") == 3 * fwd
