"""The cuda tier's pooling options against the cpu tier (bit for bit where the order of the
arithmetic is the same) and the naive oracle, on Numba's simulator: padding, dilation, ceil mode,
count_include_pad, divisor_override, adaptive bins, the global (1, 1) reductions and max unpooling.

Shapes are tiny because the simulator runs every GPU thread as Python.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv._shapes import pool_output_hw
from fastconv.kernels import cpu, naive

pytestmark = [pytest.mark.cuda,
              pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]

DTYPES = [np.float32, np.float64]
FEW = settings(max_examples=5, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                      HealthCheck.filter_too_much])
ints = st.integers


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


@st.composite
def geometries(draw, dilation=True):
    kh, kw = draw(ints(1, 3)), draw(ints(1, 3))
    dil = (draw(ints(1, 2)), draw(ints(1, 2))) if dilation else (1, 1)
    pad = (draw(ints(0, kh // 2)), draw(ints(0, kw // 2)))
    stride = (draw(ints(1, 2)), draw(ints(1, 2)))
    ceil_mode = draw(st.booleans())
    h, w = draw(ints(1, 6)), draw(ints(1, 6))
    try:
        pool_output_hw((h, w), (kh, kw), stride, pad, dil, ceil_mode)
    except ValueError:
        assume(False)
    return dict(shape=(draw(ints(1, 2)), draw(ints(1, 2)), h, w), kernel=(kh, kw), stride=stride,
                padding=pad, dilation=dil, ceil_mode=ceil_mode, seed=draw(ints(0, 2**16)))


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(case=geometries())
def test_max_pool_options_match_cpu_and_naive(G, close, dtype, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.integers(-2, 3, case["shape"]).astype(dtype)  # small integers: many ties
    args = (case["kernel"], case["stride"], case["padding"], case["dilation"], case["ceil_mode"])
    out, switches = G.max_pool2d(x, *args)
    want, want_sw = cpu.max_pool2d(x, *args)
    close("max_pool2d options", out, want, exact=True)
    np.testing.assert_array_equal(host(switches), want_sw)
    np.testing.assert_array_equal(host(switches), naive.max_pool2d(x, *args)[1])
    dout = rng.standard_normal(want.shape).astype(dtype)
    dx, ok = G.max_pool2d_backward(dout, switches, case["shape"])
    assert ok is True
    close("max_pool2d options backward", dx, cpu.max_pool2d_backward(dout, want_sw, case["shape"])[0],
          exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(case=geometries(dilation=False), include=st.booleans(),
       divisor=st.sampled_from([None, 2, -3]))
def test_avg_pool_options_match_cpu_and_naive(G, close, dtype, case, include, divisor):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(dtype)
    args = (case["kernel"], case["stride"], case["padding"], case["ceil_mode"], include, divisor)
    out = G.avg_pool2d(x, *args)
    close("avg_pool2d options", out, cpu.avg_pool2d(x, *args), exact=True)
    close("avg_pool2d options (naive)", out, naive.avg_pool2d(x, *args))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx = G.avg_pool2d_backward(dout, case["shape"], *args)
    close("avg_pool2d options backward", dx, cpu.avg_pool2d_backward(dout, case["shape"], *args),
          exact=True)
    close("avg_pool2d options backward (naive)", dx,
          naive.avg_pool2d_backward(dout, case["shape"], *args))


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(h=ints(1, 6), w=ints(1, 6), out_hw=st.tuples(ints(2, 5), ints(1, 4)), seed=ints(0, 2**16))
def test_adaptive_pools_match_cpu(G, close, dtype, h, w, out_hw, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (2, 2, h, w)).astype(dtype)
    out = G.adaptive_avg_pool2d(x, out_hw)
    close("adaptive_avg_pool2d", out, cpu.adaptive_avg_pool2d(x, out_hw), exact=True)
    dout = rng.standard_normal(out.shape).astype(dtype)
    close("adaptive_avg_pool2d backward", G.adaptive_avg_pool2d_backward(dout, x.shape),
          cpu.adaptive_avg_pool2d_backward(dout, x.shape), exact=True)
    out, switches = G.adaptive_max_pool2d(x, out_hw)
    want, want_sw = cpu.adaptive_max_pool2d(x, out_hw)
    close("adaptive_max_pool2d", out, want, exact=True)
    np.testing.assert_array_equal(host(switches), want_sw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (1, 2, 3, 5), (1, 1, 17, 19)])
def test_global_pooling_block_reductions(G, close, dtype, shape):
    """One block per plane: the tree sum (to rounding) and the max with its first index, ties and
    NaN included (the same bits as the cpu tier, whatever the number of threads)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal(shape).astype(dtype)
    close("global average", G.adaptive_avg_pool2d(x, 1), cpu.adaptive_avg_pool2d(x, 1))
    ties = rng.integers(-2, 3, shape).astype(dtype)
    out, switches = G.adaptive_max_pool2d(ties, (1, 1))
    want, want_sw = cpu.adaptive_max_pool2d(ties, (1, 1))
    close("global max (ties)", out, want, exact=True)
    np.testing.assert_array_equal(host(switches), want_sw)
    if ties[0, 0].size > 2:
        ties.reshape(shape[0] * shape[1], -1)[0, [-1, 1]] = np.nan  # the first NaN (index 1) wins
        out, switches = G.adaptive_max_pool2d(ties, 1)
        assert np.isnan(host(out)[0, 0, 0, 0]) and host(switches)[0, 0, 0, 0] == 1
        np.testing.assert_array_equal(host(switches), cpu.adaptive_max_pool2d(ties, 1)[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_max_unpool_matches_cpu_last_write_wins_and_flags_bad_indices(G, close, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 2, 2, 3)).astype(dtype)
    indices = rng.integers(0, 20, x.shape).astype(np.int64)  # repeats: the last one is kept
    out, ok = G.max_unpool2d(x, indices, (4, 5))
    assert ok is True
    close("max_unpool2d", out, cpu.max_unpool2d(x, indices, (4, 5))[0], exact=True)
    close("max_unpool2d (naive)", out, naive.max_unpool2d(x, indices, (4, 5))[0], exact=True)
    dout = rng.standard_normal((2, 2, 4, 5)).astype(dtype)
    dx, ok = G.max_unpool2d_backward(dout, indices)
    assert ok is True
    close("max_unpool2d backward", dx, cpu.max_unpool2d_backward(dout, indices)[0], exact=True)
    for bad in (-1, 20):
        wrong = indices.copy()
        wrong[1, 0, 1, 2] = bad
        assert G.max_unpool2d(x, wrong, (4, 5))[1] is False
        assert G.max_unpool2d_backward(dout, wrong)[1] is False


def test_layers_on_device_arrays_match_the_cpu_tier(G):
    """A ResNet-style stem pool and a global average pool on device arrays, forward and backward,
    through the layers; the result stays on the device."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 7, 6)).astype(np.float32)

    def pools():
        return [fc.MaxPool2d(3, 2, 1), fc.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
                fc.AdaptiveMaxPool2d((2, None)), fc.AdaptiveAvgPool2d(1)]

    on_device, on_host = pools(), pools()
    y, want = fc.to_device(x), x
    for a, b in zip(on_device, on_host):
        y, want = a(y), b(want)
    assert hasattr(y, "copy_to_host")
    np.testing.assert_allclose(host(y), want, rtol=1e-6)
    g = fc.to_device(np.ones(want.shape, np.float32))
    g_host = np.ones(want.shape, np.float32)
    for a, b in zip(reversed(on_device), reversed(on_host)):
        g, g_host = a.backward(g), b.backward(g_host)
    np.testing.assert_allclose(host(g), g_host, rtol=1e-6)
    pooled, idx = F.max_pool2d(fc.to_device(x), 2, backend="cuda")
    restored = F.max_unpool2d(pooled, idx, 2, output_size=x.shape, backend="cuda")
    np.testing.assert_array_equal(host(restored), F.max_unpool2d(host(pooled), host(idx), 2,
                                                                 output_size=x.shape))
