"""The cpu tier's Winograd F(2x2, 3x3) path (fastconv/kernels/cpu/winograd.py) and the rule that
picks it (fastconv.kernels.cpu.conv.algorithm): against the naive tier on random shapes, float32
accuracy against float64 at realistic sizes, and bitwise-identical results for 1-4 threads."""

import os

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv.functional as F
from fastconv.kernels.cpu import _common as cpu_common
from fastconv.kernels.cpu import conv as cpu_conv
from fastconv.kernels.cpu import winograd

from helpers import (DTYPES, HYPOTHESIS, assert_bitwise_same, assert_close_to_oracle,
                     assert_float32_accuracy, assert_same_digests_for_1_to_4_threads,
                     at_thread_counts, padded_3x3_conv_arrays, patched, random)

#: This folder: the bitwise subprocess imports this module from it.
HERE = os.path.dirname(os.path.abspath(__file__))
ints = st.integers


def forced_winograd():
    """Winograd wherever it applies, split across threads from the smallest sizes, blocks small."""
    return patched([(cpu_conv, "ALGORITHM", "winograd"), (cpu_common, "SPLIT_FLOPS", 0),
                    (cpu_common, "SPLIT_IMAGES", 1), (winograd, "BLOCK_BYTES", 4096)])


@st.composite
def cases(draw):
    """Stride-1 3x3 geometries, padding 0 or 1 per axis: odd sizes (tiles overhanging the
    output), and outputs of one row or column (which the rule leaves to im2col)."""
    ph, pw = draw(ints(0, 1)), draw(ints(0, 1))
    h, w = draw(ints(3 - 2 * ph, 11)), draw(ints(3 - 2 * pw, 11))
    return dict(x_shape=(draw(ints(1, 3)), draw(ints(1, 5)), h, w), k=draw(ints(1, 5)),
                padding=(ph, pw))


def run_conv(x, w, b, padding, dout, backend, need_dx=True):
    out, cache = F.conv2d(x, w, b, 1, padding, backend=backend)
    return (out,) + F.conv2d_backward(dout, cache, need_dx=need_dx)


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=cases(), bias=st.booleans(), need_dx=st.booleans(), seed=ints(0, 2**32 - 1))
def test_winograd_matches_naive(dtype, case, bias, need_dx, seed):
    rng = np.random.default_rng(seed)
    n, c, h, wd = case["x_shape"]
    x = random(rng, case["x_shape"], dtype)
    w = random(rng, (case["k"], c, 3, 3), dtype)
    b = random(rng, (case["k"],), dtype) if bias else None
    ph, pw = case["padding"]
    pads = (ph, ph, pw, pw)
    ho, wo = h + 2 * ph - 2, wd + 2 * pw - 2
    expected = "winograd" if min(ho, wo) >= 2 else "im2col"
    out_shape = (n, case["k"], ho, wo)
    dout = random(rng, out_shape, dtype)
    ref = run_conv(x, w, b, case["padding"], dout, "naive", need_dx)
    with forced_winograd():
        assert cpu_conv.algorithm(x.shape, w.shape, (1, 1), pads) == expected
        got = run_conv(x, w, b, case["padding"], dout, "cpu", need_dx)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        assert (a is None) == (r is None), name
        if r is not None:
            assert a.shape == r.shape and a.dtype == dtype
            assert_close_to_oracle(a, r, f"winograd {name}")


@pytest.mark.parametrize("hw, expected", [((14, 14), "winograd"), ((28, 28), "winograd"),
                                          ((7, 7), "blocked"), ((13, 13), "blocked"),
                                          ((27, 27), "winograd")])
def test_the_rule_leaves_planes_that_2x2_tiles_cover_wastefully_to_the_blocked_path(hw, expected):
    """Winograd goes first for 64->64 3x3 layers only where its 2x2 output tiles add at most
    WINO_WASTE outputs (7x7 takes 8x8, 31% more; 27x27 takes 28x28, 7.5%)."""
    x_shape, w_shape = (8, 64) + hw, (64, 64, 3, 3)
    assert cpu_conv.algorithm(x_shape, w_shape, (1, 1), (1, 1, 1, 1)) == expected


@pytest.mark.parametrize("shape", [(2, 256, 256, 16, 16, 1), (3, 64, 128, 16, 14, 0)])
def test_winograd_float32_accuracy_at_realistic_sizes(monkeypatch, shape):
    """float32 within 2e-5 (norm of the difference over norm of the reference) of float64, and
    float64 Winograd within 1e-10 of float64 im2col, forward and all three gradients."""
    n, c, k, h, wd, p = shape
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, c, h, wd))
    w = rng.standard_normal((k, c, 3, 3))
    b = rng.standard_normal(k)
    dout = rng.standard_normal((n, k, h + 2 * p - 2, wd + 2 * p - 2))
    monkeypatch.setattr(cpu_conv, "ALGORITHM", "im2col")
    ref = run_conv(x, w, b, p, dout, "cpu")
    monkeypatch.setattr(cpu_conv, "ALGORITHM", None)
    assert cpu_conv.algorithm(x.shape, w.shape, (1, 1), (p,) * 4) == "winograd"
    assert_float32_accuracy(lambda x, w, b, dout: run_conv(x, w, b, p, dout, "cpu"),
                            (x, w, b, dout), ref)


def _threaded_results(counts):
    """Forward and gradients of one Winograd conv at each thread count in ``counts``."""
    x, w, b, dout = padded_3x3_conv_arrays(3, (13, 5, 9, 7), 6)
    return at_thread_counts(lambda: run_conv(x, w, b, 1, dout, "cpu"), counts)


def test_winograd_is_bitwise_identical_for_every_thread_count():
    with forced_winograd():
        results = _threaded_results(range(1, min(3, numba.config.NUMBA_NUM_THREADS) + 1))
        assert winograd._Plan((13, 5, 9, 7), (6, 5, 3, 3), (1,) * 4, 4).blocks > 3
    assert_bitwise_same(results)


def test_winograd_is_bitwise_identical_for_1_to_4_threads_in_a_subprocess():
    assert_same_digests_for_1_to_4_threads(
        f"sys.path.insert(0, {HERE!r}); "
        "from fastconv.kernels.cpu import _common, conv, winograd; conv.ALGORITHM = 'winograd'; "
        "_common.SPLIT_FLOPS, _common.SPLIT_IMAGES, winograd.BLOCK_BYTES = 0, 1, 4096",
        "__import__('test_winograd')._threaded_results")


@pytest.mark.parametrize("x_shape, w_shape, stride, pads, expected", [
    ((64, 32, 14, 14), (64, 32, 3, 3), (1, 1), (1, 1, 1, 1), "winograd"),     # B
    ((64, 64, 16, 16), (128, 64, 3, 3), (1, 1), (1, 1, 1, 1), "winograd"),    # D
    ((8, 16, 5, 5), (16, 16, 3, 3), (1, 1), (0, 0, 0, 0), "winograd"),        # 3x3 outputs
    ((64, 1, 28, 28), (32, 1, 3, 3), (1, 1), (1, 1, 1, 1), "direct"),         # A: one channel
    ((64, 3, 32, 32), (64, 3, 3, 3), (1, 1), (1, 1, 1, 1), "direct"),         # C: three
    ((1, 1, 28, 28), (8, 1, 3, 3), (1, 1), (0, 0, 0, 0), "direct"),           # F
    ((10, 20, 12, 12), (40, 20, 5, 5), (1, 1), (0, 0, 0, 0), "im2col"),       # E: 5x5
    ((64, 32, 14, 14), (64, 32, 3, 3), (2, 2), (1, 1, 1, 1), "blocked"),      # stride 2
    ((64, 32, 3, 3), (64, 32, 3, 3), (1, 1), (0, 0, 0, 0), "im2col"),         # 1x1 planes
    ((64, 15, 14, 14), (64, 15, 3, 3), (1, 1), (1, 1, 1, 1), "blocked"),      # C < 32
    ((64, 32, 14, 14), (8, 32, 3, 3), (1, 1), (1, 1, 1, 1), "im2col"),        # K < 16
])
def test_the_rule_picks_what_its_docstring_says(x_shape, w_shape, stride, pads, expected):
    assert cpu_conv.ALGORITHM is None
    assert cpu_conv.algorithm(x_shape, w_shape, stride, pads) == expected


def test_forcing_the_algorithm_only_where_it_applies(monkeypatch):
    monkeypatch.setattr(cpu_conv, "ALGORITHM", "im2col")
    assert cpu_conv.algorithm((64, 32, 14, 14), (64, 32, 3, 3), (1, 1), (1,) * 4) == "im2col"
    monkeypatch.setattr(cpu_conv, "ALGORITHM", "winograd")
    assert cpu_conv.algorithm((4, 1, 9, 9), (2, 1, 3, 3), (1, 1), (1,) * 4) == "winograd"
    assert cpu_conv.algorithm((4, 1, 9, 9), (2, 1, 3, 3), (2, 2), (1,) * 4) == "im2col"
    assert cpu_conv.algorithm((4, 1, 9, 9), (2, 1, 5, 5), (1, 1), (1,) * 4) == "im2col"
