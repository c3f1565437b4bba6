"""The fast tiers against the naive oracle (and PyTorch, when installed), plus the contract's edge cases.

Run with ``-s`` to see the worst relative error against naive per dtype; it is also written to
``fastconv_worst_rel_error.json`` in pytest's base temporary directory.
"""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
import fastconv.functional as F
from fastconv import _backend
from fastconv.kernels.cpu import _common as cpu_common
from fastconv.kernels.cpu import conv as cpu_conv

from helpers import (ALL_TIERS, BACKENDS, DTYPES, HF, HYPOTHESIS, RTOL, WORST, assert_close_to_oracle,
                     host, random, rel_error, tie_free)


@pytest.fixture(scope="module", autouse=True)
def worst_error_summary(tmp_path_factory):
    """After the module: print the worst relative error against naive per dtype, and save it."""
    yield
    summary = {name: {"worst_rel_error": err, "where": where} for name, (err, where) in WORST.items()}
    path = tmp_path_factory.getbasetemp() / "fastconv_worst_rel_error.json"
    path.write_text(json.dumps(summary, indent=2))
    print("\nworst relative error against naive:")
    for name, item in sorted(summary.items()):
        print(f"  {name}: {item['worst_rel_error']:.3e}  ({item['where']})")
    print(f"  (saved to {path})")


# ---------------------------------------------------------------------------------------------
# Strategies

ints = st.integers
strides = st.one_of(ints(1, 3), st.tuples(ints(1, 3), ints(1, 3)))


@st.composite
def conv_cases(draw):
    """A valid convolution geometry: shapes, stride, padding, and the padding's total per axis."""
    fh, fw = draw(ints(1, 5)), draw(ints(1, 5))
    kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    if kind == "same":
        padding, stride, extra = "same", draw(st.sampled_from([1, (1, 1)])), (fh - 1, fw - 1)
    else:
        stride = draw(strides)
        if kind == "valid":
            padding, extra = "valid", (0, 0)
        elif kind == "int":
            padding = draw(ints(0, 2))
            extra = (2 * padding, 2 * padding)
        else:
            padding = (draw(ints(0, 2)), draw(ints(0, 2)))
            extra = (2 * padding[0], 2 * padding[1])
    h = draw(ints(max(1, fh - extra[0]), 12))
    w = draw(ints(max(1, fw - extra[1]), 12))
    return dict(x_shape=(draw(ints(1, 3)), draw(ints(1, 4)), h, w),
                w_shape=(draw(ints(1, 4)), 0, fh, fw), stride=stride, padding=padding, extra=extra)


@st.composite
def pool_cases(draw):
    kh, kw = draw(ints(1, 4)), draw(ints(1, 4))
    stride = draw(st.one_of(st.none(), strides))
    shape = (draw(ints(1, 3)), draw(ints(1, 4)), draw(ints(kh, 12)), draw(ints(kw, 12)))
    return dict(shape=shape, kernel=(kh, kw), stride=stride)


def expected_hw(case):
    (_, _, h, w), (_, _, fh, fw) = case["x_shape"], case["w_shape"]
    sh, sw = (case["stride"],) * 2 if isinstance(case["stride"], int) else case["stride"]
    return (h + case["extra"][0] - fh) // sh + 1, (w + case["extra"][1] - fw) // sw + 1


def conv_arrays(case, dtype, seed, bias=True):
    rng = np.random.default_rng(seed)
    x = random(rng, case["x_shape"], dtype)
    k, _, fh, fw = case["w_shape"]
    w = random(rng, (k, x.shape[1], fh, fw), dtype)
    b = random(rng, (k,), dtype) if bias else None
    return rng, x, w, b


def conv_all(x, w, b, stride, padding, dout_seed, backend, need_dx=True):
    """Forward and backward of one tier: (out, dx, dw, db) with a fixed random dout."""
    out, cache = HF.conv2d(x, w, b, stride, padding, backend=backend)
    dout = random(np.random.default_rng(dout_seed), out.shape, out.dtype)
    return (out,) + HF.conv2d_backward(dout, cache, need_dx=need_dx)


def check_conv_against_naive(x, w, b, stride, padding, backend, need_dx=True, label="conv2d"):
    ref = conv_all(x, w, b, stride, padding, 7, "naive", need_dx)
    got = conv_all(x, w, b, stride, padding, 7, backend, need_dx)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        if r is None:
            assert a is None, f"{label} {name}: expected None"
        else:
            assert a.shape == r.shape
            assert_close_to_oracle(a, r, f"{label} {name}")
    return got


# ---------------------------------------------------------------------------------------------
# Randomised comparisons with the oracle

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=conv_cases(), bias=st.booleans(), need_dx=st.booleans(), seed=ints(0, 2**32 - 1))
def test_conv2d_forward_and_gradients_match_naive(backend, dtype, case, bias, need_dx, seed):
    _, x, w, b = conv_arrays(case, dtype, seed, bias)
    out, dx, dw, db = check_conv_against_naive(x, w, b, case["stride"], case["padding"], backend,
                                               need_dx)
    assert out.shape == x.shape[:1] + w.shape[:1] + expected_hw(case)
    assert out.dtype == dw.dtype == dtype
    assert (dx is None) == (not need_dx) and (db is None) == (b is None)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=conv_cases(), seed=ints(0, 2**32 - 1))
def test_im2col_col2im_match_naive(backend, dtype, case, seed):
    rng, x, w, _ = conv_arrays(case, dtype, seed)
    kernel, args = w.shape[2:], (case["stride"], case["padding"])
    cols_ref = HF.im2col(x, kernel, *args, backend="naive")
    cols = HF.im2col(x, kernel, *args, backend=backend)
    assert cols.dtype == dtype and cols.shape == cols_ref.shape
    np.testing.assert_array_equal(cols, cols_ref)  # a pure copy: exact
    c = random(rng, cols.shape, dtype)
    assert_close_to_oracle(HF.col2im(c, x.shape, kernel, *args, backend=backend),
                           HF.col2im(c, x.shape, kernel, *args, backend="naive"), "col2im")


@pytest.mark.parametrize("backend", ALL_TIERS)
@HYPOTHESIS
@given(case=conv_cases(), seed=ints(0, 2**32 - 1))
def test_col2im_is_the_adjoint_of_im2col(backend, case, seed):
    rng, x, w, _ = conv_arrays(case, np.float64, seed)
    kernel, args = w.shape[2:], (case["stride"], case["padding"])
    cols = HF.im2col(x, kernel, *args, backend=backend)
    c = random(rng, cols.shape, np.float64)
    lhs = np.vdot(cols, c)
    rhs = np.vdot(x, HF.col2im(c, x.shape, kernel, *args, backend=backend))
    assert abs(lhs - rhs) <= 1e-12 * (np.abs(cols).sum() * np.abs(c).max() + 1)


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


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_conv_in_batch_chunks_matches_naive(monkeypatch, dtype):
    """A tiny workspace keeps no columns for backward, tiny blocks run one image at a time, and
    the per-thread buffers are reused by the next call."""
    if "cpu" not in BACKENDS:
        pytest.skip("cpu tier not under test")
    monkeypatch.setattr(cpu_common, "WORKSPACE_BYTES", 1)
    monkeypatch.setattr(cpu_common, "BLOCK_BYTES", 1)
    rng = np.random.default_rng(3)
    x1, x2 = random(rng, (3, 2, 7, 6), dtype), random(rng, (4, 2, 7, 6), dtype)
    w, b = random(rng, (3, 2, 3, 2), dtype), random(rng, (3,), dtype)
    assert cpu_conv._Geometry(x1.shape, w.shape, (2, 1), (1, 1, 0, 0), x1.itemsize).block == 1
    out1, cache1 = HF.conv2d(x1, w, b, (2, 1), (1, 0), backend="cpu")
    assert cache1.saved is None
    out1_copy = out1.copy()
    HF.conv2d(x2, w, b, (2, 1), (1, 0), backend="cpu")  # reuses the buffers
    np.testing.assert_array_equal(out1, out1_copy)  # the first result is not a reused buffer
    dout = random(rng, out1.shape, dtype)
    got = (out1,) + HF.conv2d_backward(dout, cache1)
    ref_out, ref_cache = HF.conv2d(x1, w, b, (2, 1), (1, 0), backend="naive")
    ref = (ref_out,) + HF.conv2d_backward(dout, ref_cache)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        assert_close_to_oracle(a, r, f"chunked conv2d {name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocked_input_gradient_matches_naive(dtype, monkeypatch):
    """A tiny BLOCK_BYTES runs every kernel and GEMM one image at a time."""
    if "cpu" not in BACKENDS:
        pytest.skip("cpu tier not under test")
    monkeypatch.setattr(cpu_common, "BLOCK_BYTES", 1)
    rng = np.random.default_rng(4)
    x, w, b = random(rng, (5, 3, 6, 7), dtype), random(rng, (4, 3, 3, 3), dtype), random(rng, (4,), dtype)
    out, cache = HF.conv2d(x, w, b, 1, 1, backend="cpu")
    dout = random(rng, out.shape, dtype)
    got = HF.conv2d_backward(dout, cache)
    ref = HF.conv2d_backward(dout, HF.conv2d(x, w, b, 1, 1, backend="naive")[1])
    for name, a, r in zip(("dx", "dw", "db"), got, ref):
        assert_close_to_oracle(a, r, f"blocked conv2d {name}")


# ---------------------------------------------------------------------------------------------
# Pooling: ties, overlaps, NaN, switches

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
# Layouts, sizes and dtypes

def _views(base):
    """A transposed (non-contiguous) view and a negatively strided view with the shapes of ``base``."""
    transposed = np.ascontiguousarray(base.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    big = np.zeros(base.shape[:2] + (2 * base.shape[2], base.shape[3]), base.dtype)
    big[:, :, ::2, ::-1] = base
    flipped = big[:, :, ::2, ::-1]
    assert not transposed.flags.c_contiguous and flipped.strides[3] < 0
    np.testing.assert_array_equal(transposed, base)
    np.testing.assert_array_equal(flipped, base)
    return transposed, flipped


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs_match_contiguous_copies(backend, dtype):
    rng = np.random.default_rng(2)
    x, w, b = random(rng, (2, 3, 8, 7), dtype), random(rng, (4, 3, 3, 2), dtype), random(rng, (4,), dtype)
    ref = conv_all(x, w, b, (2, 1), 1, 4, backend)
    for xv, wv in zip(_views(x), _views(w)):
        got = conv_all(xv, wv, np.repeat(b, 2)[::2], (2, 1), 1, 4, backend)  # a strided b too
        for a, r in zip(got, ref):
            np.testing.assert_array_equal(a, r)
        out, cache = HF.conv2d(x, w, b, (2, 1), 1, backend=backend)
        dout = random(np.random.default_rng(4), out.shape, dtype)
        for dv in _views(dout):  # a non-contiguous dout
            for a, r in zip(HF.conv2d_backward(dv, cache), ref[1:]):
                np.testing.assert_array_equal(a, r)
        out_ref, sw_ref = HF.max_pool2d(x, (3, 2), 2, backend=backend)
        out, switches = HF.max_pool2d(xv, (3, 2), 2, backend=backend)
        np.testing.assert_array_equal(out, out_ref)
        np.testing.assert_array_equal(switches, sw_ref)
        np.testing.assert_array_equal(HF.avg_pool2d(xv, (3, 2), 2, backend=backend),
                                      HF.avg_pool2d(x, (3, 2), 2, backend=backend))


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_read_only_inputs_are_accepted(backend):
    rng = np.random.default_rng(9)
    x, w = random(rng, (2, 3, 6, 6), np.float32), random(rng, (2, 3, 3, 3), np.float32)
    ref = conv_all(x, w, None, 1, 1, 1, backend)
    x.setflags(write=False)
    w.setflags(write=False)
    for a, r in zip(conv_all(x, w, None, 1, 1, 1, backend), ref):
        np.testing.assert_array_equal(a, r)
    out, switches = HF.max_pool2d(x, 2, backend=backend)
    assert out.shape == (2, 3, 3, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_of_one_matches_naive(backend, dtype):
    rng = np.random.default_rng(4)
    x, w, b = random(rng, (1, 2, 5, 9), dtype), random(rng, (3, 2, 2, 4), dtype), random(rng, (3,), dtype)
    check_conv_against_naive(x, w, b, (1, 2), (0, 1), backend, label="batch of one")
    out, switches = HF.max_pool2d(x, 2, backend=backend)
    out_ref, sw_ref = HF.max_pool2d(x, 2, backend="naive")
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(switches, sw_ref)


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1)])
def test_1x1_kernel_is_a_channel_mix(backend, dtype, stride, padding):
    rng = np.random.default_rng(8)
    x, w, b = random(rng, (2, 3, 5, 4), dtype), random(rng, (4, 3, 1, 1), dtype), random(rng, (4,), dtype)
    out, cache = HF.conv2d(x, w, b, stride, padding, backend=backend)
    xp = np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2))[:, :, ::stride, ::stride]
    expected = np.einsum("kc,nchw->nkhw", w[:, :, 0, 0], xp) + b[None, :, None, None]
    assert out.shape == expected.shape and out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=RTOL[np.dtype(dtype)], atol=RTOL[np.dtype(dtype)])
    dout = random(rng, out.shape, dtype)
    dx, dw, db = HF.conv2d_backward(dout, cache)
    np.testing.assert_allclose(dw[:, :, 0, 0], np.einsum("nkhw,nchw->kc", dout, xp),
                               rtol=RTOL[np.dtype(dtype)], atol=10 * RTOL[np.dtype(dtype)])
    np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3)), rtol=RTOL[np.dtype(dtype)],
                               atol=10 * RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_output_and_gradient_dtypes_follow_x(backend, dtype):
    rng = np.random.default_rng(6)
    x, w, b = random(rng, (2, 2, 6, 6), dtype), random(rng, (3, 2, 3, 3), dtype), random(rng, (3,), dtype)
    out, cache = HF.conv2d(x, w, b, backend=backend)
    other = np.float64 if dtype == np.float32 else np.float32
    dx, dw, db = HF.conv2d_backward(random(rng, out.shape, other), cache)  # dout in the other dtype
    assert out.dtype == dx.dtype == dw.dtype == db.dtype == dtype
    assert HF.im2col(x, 3, backend=backend).dtype == dtype
    pooled, switches = HF.max_pool2d(x, 2, backend=backend)
    assert pooled.dtype == dtype and switches.dtype == np.int64
    assert HF.max_pool2d_backward(pooled, switches, x.shape, backend=backend).dtype == dtype
    avg = HF.avg_pool2d(x, 2, backend=backend)
    assert avg.dtype == dtype
    assert HF.avg_pool2d_backward(avg, x.shape, 2, backend=backend).dtype == dtype


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_int_and_bool_inputs_become_float32(backend):
    rng = np.random.default_rng(1)
    xi, wi = rng.integers(-3, 4, (2, 2, 5, 5)), rng.integers(-2, 3, (3, 2, 3, 3)).astype(np.int16)
    out, cache = HF.conv2d(xi, wi, np.array([1, 0, -1]), padding=1, backend=backend)
    ref, _ = HF.conv2d(xi.astype(np.float32), wi.astype(np.float32), np.array([1., 0., -1.], np.float32),
                      padding=1, backend=backend)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)  # small integers: exact in float32
    dx, dw, db = HF.conv2d_backward(np.ones(out.shape, np.int64), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float32
    xb = rng.random((1, 2, 4, 4)) > 0.5
    pooled, switches = HF.max_pool2d(xb, 2, backend=backend)
    assert pooled.dtype == np.float32
    np.testing.assert_array_equal(pooled, xb.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5)))
    assert HF.avg_pool2d(xb, 2, backend=backend).dtype == np.float32
    assert HF.max_pool2d_backward(np.ones((1, 2, 2, 2), np.int32), switches, xb.shape,
                                 backend=backend).dtype == np.float32


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_w_and_b_of_another_float_dtype_are_cast_to_x_dtype(backend, dtype):
    rng = np.random.default_rng(12)
    other = np.float64 if dtype == np.float32 else np.float32
    x, w, b = random(rng, (2, 2, 5, 5), dtype), random(rng, (3, 2, 3, 3), other), random(rng, (3,), other)
    out, cache = HF.conv2d(x, w, b, backend=backend)
    ref, ref_cache = HF.conv2d(x, w.astype(dtype), b.astype(dtype), backend=backend)
    assert out.dtype == dtype and cache.w.dtype == dtype
    np.testing.assert_array_equal(out, ref)
    dout = random(rng, out.shape, dtype)
    for a, r in zip(HF.conv2d_backward(dout, cache), HF.conv2d_backward(dout, ref_cache)):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (5, 3), (2, 2), (4, 4), (2, 3), (4, 1)])
def test_same_padding_keeps_height_and_width(backend, kernel):
    rng = np.random.default_rng(13)
    x, w = random(rng, (2, 2, 6, 7), np.float64), random(rng, (3, 2) + kernel, np.float64)
    out, cache = HF.conv2d(x, w, padding="same", backend=backend)
    assert out.shape == (2, 3, 6, 7)
    assert HF.conv2d_backward(np.ones_like(out), cache)[0].shape == x.shape
    # the extra row/column for even kernels goes at the bottom/right (as PyTorch)
    fh, fw = kernel
    top, left = (fh - 1) // 2, (fw - 1) // 2
    explicit = np.pad(x, ((0, 0), (0, 0), (top, fh - 1 - top), (left, fw - 1 - left)))
    np.testing.assert_allclose(out, HF.conv2d(explicit, w, backend="naive")[0], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# PyTorch as a second oracle (skipped when torch is absent)

def _torch():
    torch = pytest.importorskip("torch")
    return torch, torch.nn.functional


def _rtol_torch(dtype):
    return 1e-9 if dtype == np.float64 else 2e-4


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, padding, kernel", [
    (1, 0, (3, 3)), ((2, 1), (1, 2), (3, 2)), (3, 2, (2, 4)), (1, "same", (2, 4)), (1, "same", (4, 3)),
    (1, "valid", (1, 5))])
def test_conv2d_matches_torch(backend, dtype, stride, padding, kernel):
    torch, tf = _torch()
    rng = np.random.default_rng(14)
    x, w, b = random(rng, (2, 3, 8, 9), dtype), random(rng, (4, 3) + kernel, dtype), random(rng, (4,), dtype)
    out, cache = HF.conv2d(x, w, b, stride, padding, backend=backend)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tout = tf.conv2d(tx, tw, tb, stride=stride, padding=padding)
    assert out.shape == tuple(tout.shape)
    assert rel_error(out, tout.detach().numpy()) < _rtol_torch(dtype)
    dout = random(rng, out.shape, dtype)
    tout.backward(torch.from_numpy(dout))
    for got, t in zip(HF.conv2d_backward(dout, cache), (tx, tw, tb)):
        assert rel_error(got, t.grad.numpy()) < _rtol_torch(dtype)


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2)), (2, 3), ((3, 1), 1)])
def test_pooling_matches_torch(backend, dtype, kernel, stride):
    torch, tf = _torch()
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
                     tx.grad.numpy()) < _rtol_torch(dtype)
    tx.grad = None
    avg = HF.avg_pool2d(x, kernel, stride, backend=backend)
    tavg = tf.avg_pool2d(tx, kernel, stride)
    assert rel_error(avg, tavg.detach().numpy()) < _rtol_torch(dtype)
    tavg.backward(torch.from_numpy(dout))
    assert rel_error(HF.avg_pool2d_backward(dout, x.shape, kernel, stride, backend=backend),
                     tx.grad.numpy()) < _rtol_torch(dtype)


# ---------------------------------------------------------------------------------------------
# Package-level helpers

def test_to_numpy_returns_numpy_input_unchanged():
    x = np.arange(6.0).reshape(2, 3)
    assert fastconv.to_numpy(x) is x
    out, _ = F.conv2d(np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 2, 2), np.float32), backend="cpu")
    assert fastconv.to_numpy(out) is out
    listed = fastconv.to_numpy([[1.0, 2.0]])
    assert isinstance(listed, np.ndarray) and listed.shape == (1, 2)


def test_set_backend_get_backend_round_trip(monkeypatch):
    monkeypatch.setitem(_backend._state, "name", _backend._state["name"])  # restored afterwards
    monkeypatch.delenv("FASTCONV_BACKEND", raising=False)
    _backend._state["name"] = None
    assert fastconv.get_backend() == "cpu"  # the default
    for name in ALL_TIERS:
        fastconv.set_backend(name)
        assert fastconv.get_backend() == name
        _, cache = F.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))
        assert cache.backend == name  # the default is what F uses
        explicit = F.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), backend="naive")[1].backend
        assert explicit == "naive"  # an explicit backend beats the default
    monkeypatch.setenv("FASTCONV_BACKEND", "naive")
    _backend._state["name"] = None
    assert fastconv.get_backend() == "naive"  # the environment variable is honoured
