"""The cpu tier's depthwise kernels (fastconv/kernels/cpu/depthwise.py, depthwise_flat.py)
against the naive tier: both layouts (stride-1 same-width planes, and phase planes for every
other geometry), channel multipliers, odd shapes, strides, asymmetric padding, dilation, several
stacks of images, thread counts, non-contiguous inputs and non-finite values.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv.kernels import _workers, naive
from fastconv.kernels.cpu import _common as cpu_common
from fastconv.kernels.cpu import depthwise

from helpers import DTYPES, HYPOTHESIS, assert_close_to_oracle, random


@contextlib.contextmanager
def settings(threads=None, stack_values=None, split_elements=None):
    """Thread count, images a stack and the split threshold for the duration."""
    old = (_workers._state["threads"], depthwise.STACK_VALUES, cpu_common.SPLIT_ELEMENTS)
    if threads is not None:
        fastconv.set_num_threads(threads)
    depthwise.STACK_VALUES = old[1] if stack_values is None else stack_values
    cpu_common.SPLIT_ELEMENTS = old[2] if split_elements is None else split_elements
    try:
        yield
    finally:
        _workers._state["threads"], depthwise.STACK_VALUES, cpu_common.SPLIT_ELEMENTS = old


def run_both(x, w, b, geometry, dout=None, need_dx=True):
    """``(cpu, naive)``: each ``(out, dx, dw, db)`` for the same inputs."""
    results = []
    for tier in (depthwise, naive):
        out, saved = tier.depthwise_conv2d(x, w, b, *geometry)
        d = out if dout is None else dout
        results.append((out, *tier.depthwise_conv2d_backward(d, x, w, b is not None, *geometry,
                                                             saved, need_dx)))
    return results


def check(case, dtype, need_dx=True):
    x, w, b, geometry, dout = arrays(case, dtype)
    got, want = run_both(x, w, b, geometry, dout, need_dx)
    for name, g, r in zip(("out", "dx", "dw", "db"), got, want):
        if r is None:
            assert g is None, name
        else:
            assert_close_to_oracle(g, r, f"depthwise {name} {case}")


def arrays(case, dtype):
    n, c, m, h, wd, fh, fw, stride, pads, dilation, bias = case
    rng = np.random.default_rng(sum(case[:7]))
    x, w = random(rng, (n, c, h, wd), dtype), random(rng, (c * m, 1, fh, fw), dtype)
    b = random(rng, (c * m,), dtype) if bias else None
    geometry = (stride, pads, dilation)
    ho = (h + pads[0] + pads[1] - dilation[0] * (fh - 1) - 1) // stride[0] + 1
    wo = (wd + pads[2] + pads[3] - dilation[1] * (fw - 1) - 1) // stride[1] + 1
    return x, w, b, geometry, random(rng, (n, c * m, ho, wo), dtype)


@st.composite
def cases(draw):
    """(n, c, m, h, w, fh, fw, stride, pads (top, bottom, left, right), dilation, bias) with an
    output of at least one value."""
    fh, fw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
    if draw(st.booleans()):  # "same" width at stride 1: the flat layout
        stride = (draw(st.integers(1, 2)), 1)
        left = draw(st.integers(0, dilation[1] * (fw - 1)))
        pads = pads[:2] + (left, dilation[1] * (fw - 1) - left)
    h = draw(st.integers(max(1, dilation[0] * (fh - 1) + 1 - pads[0] - pads[1]), 9))
    w = draw(st.integers(max(1, dilation[1] * (fw - 1) + 1 - pads[2] - pads[3], max(pads[2:]) + 1), 9))
    return (draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3)), h, w, fh, fw,
            stride, pads, dilation, draw(st.booleans()))


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=cases(), stack_values=st.sampled_from([1, 40, 2**14]))
def test_depthwise_matches_naive(dtype, case, stack_values):
    """Forward, dx, dW and db against the naive tier; small STACK_VALUES puts one image (or a
    few, the last stack shorter) in each stack."""
    with settings(stack_values=stack_values):
        check(case, dtype)


MOBILENET = [  # mobilenet's depthwise layers (fewer images), 3x3 padding 1
    (5, 16, 1, 28, 28, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False),
    (5, 32, 1, 28, 28, 3, 3, (2, 2), (1, 1, 1, 1), (1, 1), False),
    (5, 128, 1, 7, 7, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), True),
]
ODD = [
    (3, 2, 2, 9, 10, 3, 3, (3, 2), (2, 1, 0, 2), (2, 2), True),   # phases, multiplier 2
    (4, 3, 3, 6, 7, 5, 3, (1, 1), (0, 2, 2, 0), (1, 1), True),    # flat, asymmetric, m 3
    (2, 1, 1, 1, 1, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), False),   # one pixel
    (2, 2, 1, 5, 4, 1, 1, (1, 3), (0, 0, 0, 0), (1, 1), True),    # 1x1, strided columns
]


FLAT = [True, True, True, False, True, False, False]  # the layout each case takes


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, flat", list(zip(MOBILENET + ODD, FLAT)))
def test_depthwise_cases_take_both_paths(dtype, case, flat):
    """The listed geometries, each through the layout it selects, with and without dx."""
    x, w, _, geometry, _ = arrays(case, dtype)
    assert depthwise.Flat.applies(x.shape, w.shape, *geometry) == flat
    with settings(stack_values=300):  # several stacks of images, the last one shorter
        check(case, dtype)
        check(case, dtype, need_dx=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [MOBILENET[0], MOBILENET[1], ODD[0], ODD[1]])
def test_fused_relu_store_is_relu_of_the_output(dtype, case):
    """``forward(..., relu=True)`` (the plans' fused store) is the cpu ReLU of the plain output
    to the bit, NaN kept, on both layouts, and leaves the plain output unchanged."""
    x, w, b, geometry, _ = arrays(case, dtype)
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = np.nan, -np.inf
    plain = depthwise.forward(x, w, b, *geometry)
    np.testing.assert_array_equal(plain, depthwise.depthwise_conv2d(x, w, b, *geometry)[0])
    fused = depthwise.forward(x, w, b, *geometry, relu=True)
    np.testing.assert_array_equal(fused, fastconv.kernels.cpu.relu(plain))
    assert np.isnan(fused).any() and (fused >= 0)[~np.isnan(fused)].all() and (plain < 0).any()


def test_flat_layout_is_chosen_where_output_rows_are_w_over_sw():
    assert depthwise.Flat.applies((1, 1, 5, 5), (1, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    assert depthwise.Flat.applies((1, 1, 5, 5), (1, 1, 3, 3), (1, 1), (0, 0, 2, 0), (1, 1))
    assert depthwise.Flat.applies((1, 1, 6, 6), (1, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    assert not depthwise.Flat.applies((1, 1, 5, 5), (1, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    assert not depthwise.Flat.applies((1, 1, 5, 5), (1, 1, 3, 3), (1, 1), (1, 1, 0, 0), (1, 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [MOBILENET[0], MOBILENET[1], ODD[0], ODD[1]])
def test_depthwise_bits_do_not_depend_on_the_thread_count(dtype, case):
    """Every split (forced even for small layers) gives the same bits for 1 to 4 threads."""
    x, w, b, geometry, dout = arrays(case, dtype)
    runs = []
    for threads in (1, 2, 3, 4):
        with settings(threads=threads, stack_values=300, split_elements=0):
            runs.append(run_both(x, w, b, geometry, dout)[0])
    for other in runs[1:]:
        for a, r in zip(other, runs[0]):
            assert (a is None and r is None) or np.array_equal(a, r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_takes_non_contiguous_inputs(dtype):
    case = MOBILENET[0][:1] + (3,) + MOBILENET[0][2:]
    x, w, b, geometry, dout = arrays(case, dtype)
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # F-ordered planes
    dt = np.ascontiguousarray(dout.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    got, want = run_both(xt, w, b, geometry, dt)
    for name, g, r in zip(("out", "dx", "dw"), got, want):
        assert_close_to_oracle(g, r, f"non-contiguous {name}")


def same_with_nans(a, b):
    return np.array_equal(np.isnan(a), np.isnan(b)) and np.allclose(
        np.nan_to_num(a, nan=0.0), np.nan_to_num(b, nan=0.0), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the oracle's inf * 0
@pytest.mark.parametrize("where", ["x", "w"])
@pytest.mark.parametrize("case", [ODD[1], (2, 2, 1, 6, 6, 3, 3, (1, 1), (0, 0, 0, 0), (1, 1), True),
                                  MOBILENET[1]])
def test_depthwise_gradients_with_inf_match_naive(where, case):
    """An inf that only the spare columns' zeros would meet must not turn into NaN: the
    gradients equal the naive tier's, NaN for NaN."""
    x, w, b, geometry, dout = arrays(case, np.float32)
    if where == "x":
        x[0, 0, :, -1] = np.inf  # the last column: read by the spare columns of unpadded layers
    else:
        w[0, 0, 0, 0] = np.inf
    got, want = run_both(x, w, b, geometry, dout)
    for name, g, r in zip(("dx", "dw", "db"), got[1:], want[1:]):
        assert (g is None and r is None) or same_with_nans(g, r), name
