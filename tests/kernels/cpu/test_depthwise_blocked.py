"""The cpu tier's depthwise forward and backward on the blocked layout
(kernels/cpu/depthwise_blocked.py, which ``depthwise.forward`` and
``depthwise.depthwise_conv2d_backward`` take for one filter a channel and at least a vector of
channels) against the naive tier: random geometries (strides, asymmetric padding, dilation,
kernels of fewer and more taps than one weight-gradient pass, channels that fill the last vector
or not), both dtypes, thread counts, non-contiguous inputs, non-finite values and the fused
ReLU store.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv.kernels import naive
from fastconv.kernels.cpu import _common as cpu_common
from fastconv.kernels.cpu import depthwise, depthwise_blocked
from fastconv.kernels.cpu.microkernel import lanes

from helpers import DTYPES, HYPOTHESIS, assert_close_to_oracle, patched, random


@st.composite
def cases(draw, dtype):
    """(n, c, h, w, fh, fw, stride, pads (top, bottom, left, right), dilation, bias) with at
    least one output pixel and at least a vector of channels."""
    v = lanes(dtype)
    fh, fw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers(max(1, dilation[0] * (fh - 1) + 1 - pads[0] - pads[1]), 12))
    w = draw(st.integers(max(1, dilation[1] * (fw - 1) + 1 - pads[2] - pads[3]), 12))
    c = draw(st.integers(v, 2 * v + 3))
    return (draw(st.integers(1, 3)), c, h, w, fh, fw, stride, pads, dilation, draw(st.booleans()))


def arrays(case, dtype):
    n, c, h, wd, fh, fw, stride, pads, dilation, bias = case
    rng = np.random.default_rng(sum(case[:6]))
    x, w = random(rng, (n, c, h, wd), dtype), random(rng, (c, 1, fh, fw), dtype)
    b = random(rng, (c,), dtype) if bias else None
    return x, w, b, (stride, pads, dilation)


def check(case, dtype):
    x, w, b, geometry = arrays(case, dtype)
    got = depthwise.forward(x, w, b, *geometry)
    direct = depthwise_blocked.Forward(x.shape, w, b, *geometry)(x)
    np.testing.assert_array_equal(got, direct)  # forward takes the blocked path
    assert_close_to_oracle(got, naive.depthwise_conv2d(x, w, b, *geometry)[0],
                           f"blocked depthwise {case}")


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(data=st.data())
def test_blocked_depthwise_matches_naive(dtype, data):
    check(data.draw(cases(np.dtype(dtype))), dtype)


MOBILENET = [  # mobilenet's depthwise layers (fewer images), 3x3 padding 1
    (3, 16, 28, 28, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True),
    (3, 32, 28, 28, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), False),
    (3, 64, 14, 14, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), True),
    (3, 128, 7, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MOBILENET)
def test_mobilenet_layers_match_naive(dtype, case):
    check(case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MOBILENET[:2])
def test_bits_do_not_depend_on_the_thread_count(dtype, case):
    """Split even for these small layers (SPLIT_FLOPS 0): the same bits for 1 to 3 threads."""
    x, w, b, geometry = arrays(case, dtype)
    runs = []
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        try:
            with patched([(cpu_common, "SPLIT_FLOPS", 0)]):
                runs.append(depthwise.forward(x, w, b, *geometry))
        finally:
            fastconv.set_num_threads(None)
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_input(dtype):
    x, w, b, geometry = arrays(MOBILENET[1], dtype)
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # F-ordered planes
    np.testing.assert_array_equal(depthwise.forward(xt, w, b, *geometry),
                                  depthwise.forward(x, w, b, *geometry))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the oracle's inf - inf
@pytest.mark.parametrize("case", MOBILENET[:2])
def test_inf_and_nan_reach_the_pixels_that_read_them(case):
    """Only the output pixels whose windows hold an inf or NaN are non-finite, as in the naive
    tier (the tiles' spare columns and slack never reach a kept pixel); the fused ReLU keeps
    NaN and is the cpu ReLU of the plain output to the bit."""
    x, w, b, geometry = arrays(case, np.float32)
    x[0, 0, 5, 5], x[1, 3, 0, 0], x[2, 7, -1, -1] = np.nan, np.inf, -np.inf
    got = depthwise.forward(x, w, b, *geometry)
    want = naive.depthwise_conv2d(x, w, b, *geometry)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    assert (~finite).sum() > 3
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-5)
    fused = depthwise.forward(x, w, b, *geometry, relu=True)
    np.testing.assert_array_equal(fused, fastconv.kernels.cpu.relu(got))
    assert np.isnan(fused).any()


def test_fewer_channels_than_a_vector_and_multipliers_keep_the_plane_kernels():
    v = lanes(np.float32)
    assert depthwise_blocked.applies((1, v, 5, 5), (v, 1, 3, 3), np.float32)
    assert not depthwise_blocked.applies((1, v, 5, 5), (2 * v, 1, 3, 3), np.float32)  # m 2
    assert not depthwise_blocked.applies((1, v - 1, 5, 5), (v - 1, 1, 3, 3), np.float32)
    x = random(np.random.default_rng(0), (2, v - 1, 6, 6), np.float32)
    w = random(np.random.default_rng(1), (v - 1, 1, 3, 3), np.float32)
    got = depthwise.forward(x, w, None, (1, 1), (1, 1, 1, 1), (1, 1))
    assert_close_to_oracle(got, naive.depthwise_conv2d(x, w, None, (1, 1), (1, 1, 1, 1),
                                                       (1, 1))[0], "fewer channels")


def gradients(case, dtype, need_dx=True):
    """``(blocked, dispatched, naive)`` gradients ``(dx, dw, db)`` of one random dout."""
    x, w, b, geometry = arrays(case, dtype)
    out = naive.depthwise_conv2d(x, w, b, *geometry)[0]
    dout = random(np.random.default_rng(len(case) + x.size), out.shape, dtype)
    return (depthwise_blocked.backward(dout, x, w, b is not None, *geometry, need_dx),
            depthwise.depthwise_conv2d_backward(dout, x, w, b is not None, *geometry, None,
                                                need_dx),
            naive.depthwise_conv2d_backward(dout, x, w, b is not None, *geometry, None, need_dx))


def check_backward(case, dtype, need_dx=True):
    got, dispatched, want = gradients(case, dtype, need_dx)
    for name, g, d, r in zip(("dx", "dw", "db"), got, dispatched, want):
        if r is None:
            assert g is None and d is None, name
            continue
        np.testing.assert_array_equal(d, g)  # the dispatcher takes the blocked path
        assert g.dtype == r.dtype and g.shape == r.shape, name
        assert_close_to_oracle(g, r, f"blocked depthwise {name} {case}")


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(data=st.data(), need_dx=st.booleans())
def test_blocked_depthwise_gradients_match_naive(dtype, data, need_dx):
    check_backward(data.draw(cases(np.dtype(dtype))), dtype, need_dx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MOBILENET + [
    (2, 17, 9, 8, 5, 5, (1, 1), (2, 2, 2, 2), (1, 1), True),   # 25 taps: passes 0, 9, 16
    (2, 16, 8, 9, 4, 4, (2, 1), (1, 2, 2, 1), (1, 2), False),  # 16 taps: passes 0, 7
    (2, 20, 6, 5, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), True),   # 1 tap, padded to 9
    (2, 16, 9, 10, 3, 3, (3, 2), (0, 1, 2, 0), (2, 1), True),  # phases without taps
])
def test_blocked_depthwise_gradient_cases_match_naive(dtype, case):
    check_backward(case, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MOBILENET[:2])
def test_gradient_bits_do_not_depend_on_the_thread_count(dtype, case):
    """Chunks follow the shapes: 1 to 3 threads (split even for small layers) give the same
    bits, and so does a run in one chunk's order with one thread."""
    runs = []
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        try:
            with patched([(cpu_common, "SPLIT_FLOPS", 0)]):
                runs.append(gradients(case, dtype)[0])
        finally:
            fastconv.set_num_threads(None)
    for other in runs[1:]:
        for a, r in zip(other, runs[0]):
            np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_of_non_contiguous_arrays(dtype):
    x, w, b, geometry = arrays(MOBILENET[1], dtype)
    out = naive.depthwise_conv2d(x, w, b, *geometry)[0]
    dout = random(np.random.default_rng(3), out.shape, dtype)

    def f_order(a):  # the same values, planes stored column by column
        return np.ascontiguousarray(a.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)

    got = depthwise_blocked.backward(f_order(dout), f_order(x), w, True, *geometry, True)
    want = depthwise_blocked.backward(dout, x, w, True, *geometry, True)
    for g, r in zip(got, want):
        np.testing.assert_array_equal(g, r)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the oracle's inf * 0
@pytest.mark.parametrize("where", ["x", "w"])
@pytest.mark.parametrize("case", MOBILENET[:2])
def test_gradients_with_inf_match_naive(where, case):
    """An inf in x's last column, or in w, gives the naive tier's gradients, NaN for NaN: the
    dispatcher hands inf weights (which the dx tiles would multiply by the zeros around dout)
    and a non-finite dW to the naive tier; the blocked dW reads only valid pixels, so its
    non-finite values are the oracle's."""
    x, w, b, geometry = arrays(case, np.float32)
    if where == "x":
        x[0, 0, :, -1] = np.inf
    else:
        w[3, 0, 1, 1] = np.inf
    out = naive.depthwise_conv2d(x, w, b, *geometry)[0]
    dout = random(np.random.default_rng(5), out.shape, np.float32)
    got = depthwise.depthwise_conv2d_backward(dout, x, w, True, *geometry, None, True)
    want = naive.depthwise_conv2d_backward(dout, x, w, True, *geometry, None, True)
    for name, g, r in zip(("dx", "dw", "db"), got, want):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=name)
        np.testing.assert_array_equal(np.isinf(g), np.isinf(r), err_msg=name)
        finite = np.isfinite(r)
        np.testing.assert_allclose(g[finite], r[finite], rtol=1e-4, atol=1e-4, err_msg=name)
    if where == "x":  # the blocked kernels alone: dW's inf where the oracle's, dx finite
        blocked = depthwise_blocked.backward(dout, x, w, True, *geometry, True)
        for g, r in zip(blocked, want):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(r))
            np.testing.assert_array_equal(np.isinf(g), np.isinf(r))
        assert np.isfinite(blocked[0]).all() and not np.isfinite(blocked[1]).all()
