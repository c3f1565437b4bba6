"""Max and average pooling on every tier: the fast tiers against the naive oracle (randomised,
ties included), the switch rules (ties, overlaps, NaN, read-only switches), finite differences in
float64, PyTorch as a second oracle, and the cuda tier against the cpu tier and the oracle on
Numba's simulator (tiny shapes): the base pools and every option (padding, dilation, ceil mode,
count_include_pad, divisor_override, adaptive bins, the global (1, 1) reductions, unpooling).

Where the cuda kernel accumulates in the cpu tier's order results must match the cpu tier bit for
bit on the simulator (``close(..., exact=True)``, tests/conftest.py).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv._shapes import pool_output_hw
from fastconv.kernels import cpu, naive

from helpers import (ALL_TIERS, BACKENDS, DTYPES, HF, HYPOTHESIS, RTOL, assert_close_to_oracle,
                     at_thread_counts, grad_rel_error, host, numeric_grad, random, rel_error,
                     tie_free)
from op_helpers import cuda_test, on_simulator, rtol_torch, share_on_simulator, torch_and_functional
from op_helpers import both  # noqa: F401  (a fixture)

ints = st.integers
strides = st.one_of(ints(1, 3), st.tuples(ints(1, 3), ints(1, 3)))
#: Finite differences: the largest relative error of an analytic gradient.
FD_TOL = 1e-6
#: The cuda tier on the simulator, which runs each GPU thread as Python: a seventh of the
#: profile's examples (at least 6) for the base pools, 5 fixed ones for the options.
SOME = share_on_simulator(7, 6)
FEW = on_simulator(5, HealthCheck.filter_too_much)


@st.composite
def pool_cases(draw):
    kh, kw = draw(ints(1, 4)), draw(ints(1, 4))
    stride = draw(st.one_of(st.none(), strides))
    shape = (draw(ints(1, 3)), draw(ints(1, 4)), draw(ints(kh, 12)), draw(ints(kw, 12)))
    return dict(shape=shape, kernel=(kh, kw), stride=stride)


@st.composite
def tiny_pool_cases(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kh, 6)), draw(st.integers(kw, 6))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), kernel=(kh, kw),
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                seed=draw(st.integers(0, 2**16)))


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


# ---------------------------------------------------------------------------------------------
# Randomised comparisons with the oracle

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=pool_cases(), ties=st.booleans(), seed=ints(0, 2**32 - 1))
def test_max_pool_matches_naive(backend, dtype, case, ties, seed):
    rng = np.random.default_rng(seed)
    shape, kernel, stride = case["shape"], case["kernel"], case["stride"]
    x = rng.integers(-2, 3, shape).astype(dtype) if ties else random(rng, shape, dtype)
    out_ref, sw_ref = HF.max_pool2d(x, kernel, stride, backend="naive")
    out, switches = HF.max_pool2d(x, kernel, stride, backend=backend)
    assert out.dtype == dtype and switches.dtype == np.int64
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(switches, sw_ref)  # same tie rule: first maximum wins
    dout = random(rng, out.shape, dtype)
    dx = HF.max_pool2d_backward(dout, switches, shape, backend=backend)
    assert dx.shape == shape and dx.dtype == dtype
    assert_close_to_oracle(dx, HF.max_pool2d_backward(dout, sw_ref, shape, backend="naive"),
                           "max_pool2d dx")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=pool_cases(), seed=ints(0, 2**32 - 1))
def test_avg_pool_matches_naive(backend, dtype, case, seed):
    rng = np.random.default_rng(seed)
    shape, kernel, stride = case["shape"], case["kernel"], case["stride"]
    x = random(rng, shape, dtype)
    out = HF.avg_pool2d(x, kernel, stride, backend=backend)
    assert out.dtype == dtype
    assert_close_to_oracle(out, HF.avg_pool2d(x, kernel, stride, backend="naive"), "avg_pool2d out")
    dout = random(rng, out.shape, dtype)
    dx = HF.avg_pool2d_backward(dout, shape, kernel, stride, backend=backend)
    assert dx.shape == shape and dx.dtype == dtype
    assert_close_to_oracle(dx, HF.avg_pool2d_backward(dout, shape, kernel, stride, backend="naive"),
                           "avg_pool2d dx")


# ---------------------------------------------------------------------------------------------
# Ties, overlaps, NaN, switches

@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2)), (2, 3)])
def test_constant_input_switches_are_first_index_of_each_window(backend, kernel, stride):
    shape = (2, 2, 7, 8)
    out, switches = HF.max_pool2d(np.full(shape, 1.5, np.float32), kernel, stride, backend=backend)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    sh, sw = (kh, kw) if stride is None else (stride, stride) if isinstance(stride, int) else stride
    ho, wo = out.shape[2:]
    first = (np.arange(ho)[:, None] * sh) * shape[3] + np.arange(wo)[None, :] * sw
    np.testing.assert_array_equal(switches, np.broadcast_to(first, out.shape))
    np.testing.assert_array_equal(out, 1.5)
    dx = HF.max_pool2d_backward(np.ones(out.shape, np.float32), switches, shape, backend=backend)
    expected = np.zeros(shape[:2] + (shape[2] * shape[3],), np.float32)
    expected[:, :, first.ravel()] = 1  # distinct window origins: distinct switches
    np.testing.assert_array_equal(dx, expected.reshape(shape))


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_plateau_the_first_maximum_in_row_major_order_wins(backend):
    x = np.array([[0, 5, 0, 0],
                  [5, 0, 7, 7],
                  [3, 1, -1, -1],
                  [2, 3, -1, -1]], np.float64)[None, None]
    out, switches = HF.max_pool2d(x, 2, backend=backend)
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [3, -1]])
    np.testing.assert_array_equal(switches[0, 0], [[1, 6], [8, 10]])
    dx = HF.max_pool2d_backward(np.array([[[[1., 2.], [3., 4.]]]]), switches, x.shape, backend=backend)
    expected = np.zeros(16)
    expected[[1, 6, 8, 10]] = [1, 2, 3, 4]
    np.testing.assert_array_equal(dx.ravel(), expected)  # the tied twins get nothing


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_overlapping_windows_accumulate(backend, dtype):
    rng = np.random.default_rng(5)
    x = tie_free(rng, (2, 3, 7, 7), dtype)
    out, switches = HF.max_pool2d(x, 3, 2, backend=backend)
    assert out.shape == (2, 3, 3, 3)
    dout = random(rng, out.shape, dtype)
    dx = HF.max_pool2d_backward(dout, switches, x.shape, backend=backend)
    np.testing.assert_allclose(dx.sum(axis=(2, 3)), dout.sum(axis=(2, 3)), rtol=0,
                               atol=RTOL[np.dtype(dtype)] * np.abs(dout).sum())
    # one peak shared by the four windows around it gets all four gradients
    peak = np.zeros((1, 1, 5, 5), dtype)
    peak[0, 0, 2, 2] = 9
    out, switches = HF.max_pool2d(peak, 3, 2, backend=backend)
    np.testing.assert_array_equal(switches, 12)
    g = np.array([[[[1, 2], [4, 8]]]], dtype)
    dx = HF.max_pool2d_backward(g, switches, peak.shape, backend=backend)
    assert dx[0, 0, 2, 2] == 15 and np.count_nonzero(dx) == 1
    # average pooling over the same overlaps: the centre is in all four windows
    dx = HF.avg_pool2d_backward(np.ones((1, 1, 2, 2), dtype), peak.shape, 3, 2, backend=backend)
    np.testing.assert_allclose(dx[0, 0, 2, 2], 4 / 9, rtol=RTOL[np.dtype(dtype)])
    np.testing.assert_allclose(dx.sum(), 4.0, rtol=RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_propagates_and_the_switch_points_at_it(backend, dtype):
    x = np.arange(32, dtype=dtype).reshape(1, 2, 4, 4)
    x[0, 0, 1, 1] = np.nan            # window (0, 0): last, after the largest number
    x[0, 0, 2, 3] = np.nan            # window (1, 1): two NaNs, the first one wins
    x[0, 0, 3, 2] = np.nan
    x[0, 1, 0, 0] = np.nan            # window (0, 0) of plane 1: first, before larger numbers
    x[0, 1, 0, 2], x[0, 1, 1, 3] = np.inf, np.nan  # window (0, 1): +inf, then NaN wins
    out, switches = HF.max_pool2d(x, 2, backend=backend)
    expected_nan = np.array([[[True, False], [False, True]], [[True, True], [False, False]]])
    np.testing.assert_array_equal(np.isnan(out[0]), expected_nan)
    np.testing.assert_array_equal(switches[0, 0], [[5, 7], [13, 11]])
    np.testing.assert_array_equal(switches[0, 1], [[0, 7], [13, 15]])
    flat = x.reshape(1, 2, 16)
    picked = np.take_along_axis(flat, switches.reshape(1, 2, 4), axis=2)
    assert np.isnan(picked[expected_nan.reshape(1, 2, 4)]).all()
    dx = HF.max_pool2d_backward(np.ones_like(out), switches, x.shape, backend=backend)
    assert dx[0, 0, 1, 1] == 1 and dx[0, 0, 2, 3] == 1 and dx[0, 0, 3, 2] == 0
    assert np.isnan(HF.avg_pool2d(x, 2, backend=backend)[0]).sum() == 4


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_backward_never_modifies_switches(backend):
    rng = np.random.default_rng(11)
    x = tie_free(rng, (2, 3, 6, 6), np.float32)
    out, switches = F.max_pool2d(x, 3, 2, backend=backend)  # switches stay where the tier keeps them
    keep = host(switches).copy()
    dout = random(rng, out.shape, np.float32)
    dx1 = HF.max_pool2d_backward(dout, switches, x.shape, backend=backend)
    dx2 = HF.max_pool2d_backward(dout, switches, x.shape, backend=backend)
    np.testing.assert_array_equal(host(switches), keep)
    np.testing.assert_array_equal(dx1, dx2)
    keep.setflags(write=False)  # read-only switches are accepted
    np.testing.assert_array_equal(HF.max_pool2d_backward(dout, keep, x.shape, backend=backend), dx1)
    # int32 switches are accepted and give the same routing
    np.testing.assert_array_equal(
        HF.max_pool2d_backward(dout, keep.astype(np.int32), x.shape, backend=backend), dx1)


# ---------------------------------------------------------------------------------------------
# Finite differences (float64, central differences), every tier

@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2)), (2, 3)])
def test_max_pool_gradient_matches_finite_differences(backend, kernel, stride):
    rng = np.random.default_rng(22)
    x = tie_free(rng, (2, 2, 7, 8), np.float64)  # gaps of 0.1 >> the step: no max changes place
    out, switches = HF.max_pool2d(x, kernel, stride, backend=backend)
    dout = random(rng, out.shape, np.float64)
    dx = HF.max_pool2d_backward(dout, switches, x.shape, backend=backend)
    numeric = numeric_grad(lambda: HF.max_pool2d(x, kernel, stride, backend=backend)[0], x, dout)
    assert grad_rel_error(dx, numeric) < FD_TOL
    assert np.count_nonzero(numeric) > 0


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2)), (2, 3)])
def test_avg_pool_gradient_matches_finite_differences(backend, kernel, stride):
    rng = np.random.default_rng(23)
    x = random(rng, (2, 2, 7, 8), np.float64)
    out = HF.avg_pool2d(x, kernel, stride, backend=backend)
    dout = random(rng, out.shape, np.float64)
    dx = HF.avg_pool2d_backward(dout, x.shape, kernel, stride, backend=backend)
    numeric = numeric_grad(lambda: HF.avg_pool2d(x, kernel, stride, backend=backend), x, dout)
    assert grad_rel_error(dx, numeric) < FD_TOL
    assert np.count_nonzero(numeric) > 0


# ---------------------------------------------------------------------------------------------
# PyTorch as a second oracle (skipped when torch is absent)

@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2)), (2, 3), ((3, 1), 1)])
def test_pooling_matches_torch(backend, dtype, kernel, stride):
    torch, tf = torch_and_functional()
    rng = np.random.default_rng(15)
    x = tie_free(rng, (2, 3, 9, 8), dtype)
    out, switches = HF.max_pool2d(x, kernel, stride, backend=backend)
    tx = torch.tensor(x, requires_grad=True)
    tout, tidx = tf.max_pool2d(tx, kernel, stride, return_indices=True)
    np.testing.assert_array_equal(out, tout.detach().numpy())
    np.testing.assert_array_equal(switches, tidx.numpy())  # PyTorch's return_indices convention
    dout = random(rng, out.shape, dtype)
    tout.backward(torch.from_numpy(dout))
    assert rel_error(HF.max_pool2d_backward(dout, switches, x.shape, backend=backend),
                     tx.grad.numpy()) < rtol_torch(dtype)
    tx.grad = None
    avg = HF.avg_pool2d(x, kernel, stride, backend=backend)
    tavg = tf.avg_pool2d(tx, kernel, stride)
    assert rel_error(avg, tavg.detach().numpy()) < rtol_torch(dtype)
    tavg.backward(torch.from_numpy(dout))
    assert rel_error(HF.avg_pool2d_backward(dout, x.shape, kernel, stride, backend=backend),
                     tx.grad.numpy()) < rtol_torch(dtype)


# ---------------------------------------------------------------------------------------------
# The cuda tier against the cpu tier and the oracle (Numba's simulator, tiny shapes)

@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@SOME
@given(case=tiny_pool_cases())
def test_max_pool_matches_cpu_and_naive(G, both, close, dtype, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.integers(-3, 4, case["shape"]).astype(dtype)  # small integers: many ties
    out, switches = G.max_pool2d(x, case["kernel"], case["stride"])
    want, want_sw = cpu.max_pool2d(x, case["kernel"], case["stride"])
    oracle, oracle_sw = naive.max_pool2d(x, case["kernel"], case["stride"])
    both("max_pool2d", out, want, oracle, exact=True)
    close("max_pool2d (a selection: the oracle's bits)", out, oracle, exact=True)
    np.testing.assert_array_equal(switches.copy_to_host(), want_sw)
    np.testing.assert_array_equal(switches.copy_to_host(), oracle_sw)
    assert switches.dtype == np.int64
    dout = random(rng, want.shape, dtype)
    dx, ok = G.max_pool2d_backward(dout, switches, case["shape"])
    want_dx, _ = cpu.max_pool2d_backward(dout, want_sw, case["shape"])
    oracle_dx, oracle_ok = naive.max_pool2d_backward(dout, oracle_sw, case["shape"])
    assert ok is True and oracle_ok is True
    both("max_pool2d_backward", dx, want_dx, oracle_dx, exact=True)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@SOME
@given(case=tiny_pool_cases())
def test_avg_pool_matches_cpu_and_naive(G, both, dtype, case):
    rng = np.random.default_rng(case["seed"])
    x = random(rng, case["shape"], dtype)
    out = G.avg_pool2d(x, case["kernel"], case["stride"])
    both("avg_pool2d", out, cpu.avg_pool2d(x, case["kernel"], case["stride"]),
         naive.avg_pool2d(x, case["kernel"], case["stride"]), exact=True)
    dout = random(rng, out.shape, dtype)
    args = (case["shape"], case["kernel"], case["stride"])
    both("avg_pool2d_backward", G.avg_pool2d_backward(dout, *args),
         cpu.avg_pool2d_backward(dout, *args), naive.avg_pool2d_backward(dout, *args), exact=True)


@cuda_test
def test_switch_contract_ties_overlap_and_nan(G):
    """Ties go to the first maximum in row-major window order, overlapping 3x3 / stride 2 windows
    that share a maximum all route their gradient to it, and the first NaN wins."""
    x = np.zeros((1, 1, 5, 5), np.float32)  # all ties
    out, sw = G.max_pool2d(x, (3, 3), (2, 2))
    np.testing.assert_array_equal(sw.copy_to_host()[0, 0], [[0, 2], [10, 12]])
    x[0, 0, 2, 2] = 9.0  # the centre lies in all four overlapping windows
    out, sw = G.max_pool2d(x, (3, 3), (2, 2))
    np.testing.assert_array_equal(sw.copy_to_host(), np.full((1, 1, 2, 2), 12))
    dx, ok = G.max_pool2d_backward(np.array([[[[1, 2], [4, 8]]]], np.float32), sw, x.shape)
    expect = np.zeros_like(x)
    expect[0, 0, 2, 2] = 15.0
    assert ok
    np.testing.assert_array_equal(dx.copy_to_host(), expect)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan
    out, sw = G.max_pool2d(x, (3, 3), (2, 2))
    assert sw.copy_to_host()[0, 0, 0, 0] == 1 and np.isnan(out.copy_to_host()[0, 0, 0, 0])
    np.testing.assert_array_equal(sw.copy_to_host(), cpu.max_pool2d(x, (3, 3), (2, 2))[1])
    np.testing.assert_array_equal(sw.copy_to_host(), naive.max_pool2d(x, (3, 3), (2, 2))[1])


@cuda_test
def test_max_pool_backward_routes_arbitrary_switches_and_flags_bad_ones(G, both):
    """Switches that no pooling produced (any in-range index, repeats) are still routed as the cpu
    tier and the oracle route them; an out-of-range one makes ok False."""
    rng = np.random.default_rng(3)
    shape = (2, 2, 4, 5)
    switches = rng.integers(0, 20, (2, 2, 3, 3)).astype(np.int64)
    dout = random(rng, (2, 2, 3, 3), np.float64)
    dx, ok = G.max_pool2d_backward(dout, switches, shape)
    assert ok
    both("max_pool2d_backward (arbitrary switches)", dx,
         cpu.max_pool2d_backward(dout, switches, shape)[0],
         naive.max_pool2d_backward(dout, switches, shape)[0], exact=True)
    for bad in (-1, 20):
        switches[1, 0, 2, 1] = bad
        assert G.max_pool2d_backward(dout, switches, shape)[1] is False


@cuda_test
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


@cuda_test
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


@cuda_test
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
@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (1, 2, 3, 5), (64, 64, 7, 7)])
def test_global_average_backward_matches_naive(dtype, shape):
    """The global (1, 1) average's backward, one write per plane (split across the threads on
    the large shape), gives the oracle's bits at 1 and 2 threads: dout / (H*W) over each plane;
    dout may be non-contiguous."""
    rng = np.random.default_rng(7)
    dout = rng.standard_normal((shape[1], shape[0], 1, 1)).astype(dtype).transpose(1, 0, 2, 3)
    want = naive.adaptive_avg_pool2d_backward(np.ascontiguousarray(dout), shape)
    for got in at_thread_counts(lambda: cpu.adaptive_avg_pool2d_backward(dout, shape), [1, 2]):
        assert got.shape == shape and got.dtype == dtype
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, np.broadcast_to(dout / dtype(shape[2] * shape[3]),
                                                           shape))


@cuda_test
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


@cuda_test
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


@cuda_test
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
