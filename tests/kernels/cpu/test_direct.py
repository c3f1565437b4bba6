"""The cpu tier's direct path for few input channels (fastconv/kernels/cpu/direct.py) and the rule
that picks it: against the naive tier on random stride-1 geometries (any kernel size, uneven
padding, 1x1 planes), float32 accuracy against float64 at realistic sizes, and bitwise-identical
results for 1-4 threads."""

import os

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv import _backend
from fastconv.kernels.cpu import _common as cpu_common
from fastconv.kernels.cpu import conv as cpu_conv
from fastconv.kernels.cpu import direct

from helpers import (DTYPES, HYPOTHESIS, assert_bitwise_same, assert_close_to_oracle,
                     assert_float32_accuracy, assert_same_digests_for_1_to_4_threads,
                     at_thread_counts, padded_3x3_conv_arrays, patched, random)

#: This folder: the bitwise subprocess imports this module from it.
HERE = os.path.dirname(os.path.abspath(__file__))
ints = st.integers


@st.composite
def cases(draw):
    """Stride-1 undilated geometries: kernels 1-5 by 1-5, padding 0-2 on each side (uneven)."""
    fh, fw = draw(ints(1, 5)), draw(ints(1, 5))
    pads = tuple(draw(ints(0, 2)) for _ in range(4))
    h = draw(ints(max(1, fh - pads[0] - pads[1]), 9))
    wd = draw(ints(max(1, fw - pads[2] - pads[3]), 9))
    return dict(x_shape=(draw(ints(1, 3)), draw(ints(1, 3)), h, wd), w_shape=(draw(ints(1, 4)),
                0, fh, fw), pads=pads)


def forced(split):
    """The direct path wherever it applies; with ``split``, a share per image on every thread."""
    settings = [(cpu_conv, "ALGORITHM", "direct")]
    if split:
        settings += [(cpu_common, "SPLIT_FLOPS", 0), (cpu_common, "SPLIT_IMAGES", 1)]
    return patched(settings)


def run(tier, x, w, b, pads, dout, need_dx=True):
    out, saved = tier.conv2d(x, w, b, (1, 1), pads)
    return (out,) + tuple(tier.conv2d_backward(dout, x, w, b is not None, (1, 1), pads, saved,
                                               need_dx))


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=cases(), bias=st.booleans(), need_dx=st.booleans(), split=st.booleans(),
       seed=ints(0, 2**32 - 1))
def test_direct_matches_naive(dtype, case, bias, need_dx, split, seed):
    rng = np.random.default_rng(seed)
    n, c, h, wd = case["x_shape"]
    k, _, fh, fw = case["w_shape"]
    pads = case["pads"]
    x = random(rng, (n, c, h, wd), dtype)
    w = random(rng, (k, c, fh, fw), dtype)
    b = random(rng, (k,), dtype) if bias else None
    ho, wo = h + pads[0] + pads[1] - fh + 1, wd + pads[2] + pads[3] - fw + 1
    dout = random(rng, (n, k, ho, wo), dtype)
    naive = _backend.kernels("naive")
    ref = run(naive, x, w, b, pads, dout, need_dx)
    with forced(split):
        assert cpu_conv.algorithm(x.shape, w.shape, (1, 1), pads) == "direct"
        got = run(_backend.kernels("cpu"), x, w, b, pads, dout, need_dx)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        assert (a is None) == (r is None), name
        if r is not None:
            assert a.shape == r.shape and a.dtype == dtype
            assert_close_to_oracle(a, r, f"direct {name}")


def test_direct_accepts_non_contiguous_inputs(monkeypatch):
    rng = np.random.default_rng(4)
    x = random(rng, (3, 2, 9, 16), np.float32)[:, :, :, ::2]
    w = random(rng, (4, 2, 3, 3), np.float32)
    dout = random(rng, (3, 4, 18, 8), np.float32)[:, :, ::2, :]
    pads = (1, 1, 1, 1)
    ref = run(_backend.kernels("naive"), x, w, None, pads, dout)
    monkeypatch.setattr(cpu_conv, "ALGORITHM", "direct")
    got = run(_backend.kernels("cpu"), x, w, None, pads, dout)
    for name, a, r in zip(("out", "dx", "dw"), got, ref):
        assert_close_to_oracle(a, r, f"direct {name}")


@pytest.mark.parametrize("shape", [(4, 3, 256, 32, 32, 3, 1), (8, 1, 32, 28, 28, 5, 2),
                                   (2, 1, 256, 31, 29, 3, 0)])
def test_direct_float32_accuracy_at_realistic_sizes(monkeypatch, shape):
    """float32 within 2e-5 (norm of the difference over norm of the reference) of float64, and
    float64 direct within 1e-10 of float64 im2col, forward and all three gradients."""
    n, c, k, h, wd, f, p = shape
    rng = np.random.default_rng(12)
    x = rng.standard_normal((n, c, h, wd))
    w = rng.standard_normal((k, c, f, f))
    b = rng.standard_normal(k)
    dout = rng.standard_normal((n, k, h + 2 * p - f + 1, wd + 2 * p - f + 1))
    cpu = _backend.kernels("cpu")
    pads = (p,) * 4
    monkeypatch.setattr(cpu_conv, "ALGORITHM", "im2col")
    ref = run(cpu, x, w, b, pads, dout)
    monkeypatch.setattr(cpu_conv, "ALGORITHM", None)
    assert cpu_conv.algorithm(x.shape, w.shape, (1, 1), pads) == "direct"
    assert_float32_accuracy(lambda x, w, b, dout: run(cpu, x, w, b, pads, dout), (x, w, b, dout),
                            ref)


def _threaded_results(counts):
    """Forward and gradients of one direct conv at each thread count in ``counts``."""
    x, w, b, dout = padded_3x3_conv_arrays(5, (13, 2, 9, 7), 6)
    cpu = _backend.kernels("cpu")
    return at_thread_counts(lambda: run(cpu, x, w, b, (1, 1, 1, 1), dout), counts)


def test_direct_is_bitwise_identical_for_every_thread_count(monkeypatch):
    monkeypatch.setattr(cpu_common, "SPLIT_FLOPS", 0)
    monkeypatch.setattr(cpu_common, "SPLIT_IMAGES", 1)
    assert cpu_conv.algorithm((13, 2, 9, 7), (6, 2, 3, 3), (1, 1), (1,) * 4) == "direct"
    assert_bitwise_same(_threaded_results(range(1, min(3, numba.config.NUMBA_NUM_THREADS) + 1)))


def test_direct_is_bitwise_identical_for_1_to_4_threads_in_a_subprocess():
    assert_same_digests_for_1_to_4_threads(
        f"sys.path.insert(0, {HERE!r}); "
        "from fastconv.kernels.cpu import _common; _common.SPLIT_FLOPS, _common.SPLIT_IMAGES = 0, 1",
        "__import__('test_direct')._threaded_results")


def test_direct_memory_counts_the_partial_sums():
    kept, work = direct.memory((64, 1, 28, 28), (32, 1, 3, 3), (1,) * 4, 4)
    assert kept == 0 and work >= 64 * (32 * 9 + 32) * 4


@pytest.mark.parametrize("x_shape, w_shape, stride, pads, expected", [
    ((64, 1, 28, 28), (32, 1, 3, 3), (1, 1), (1, 1, 1, 1), "direct"),      # A
    ((1, 1, 28, 28), (8, 1, 3, 3), (1, 1), (0, 0, 0, 0), "direct"),        # F
    ((64, 3, 32, 32), (64, 3, 3, 3), (1, 1), (1, 1, 1, 1), "direct"),      # C: 27 taps
    ((64, 1, 28, 28), (6, 1, 5, 5), (1, 1), (2, 2, 2, 2), "direct"),       # LeNet-5's first
    ((64, 4, 28, 28), (32, 4, 3, 3), (1, 1), (1, 1, 1, 1), "im2col"),      # 36 taps
    ((64, 16, 28, 28), (64, 16, 1, 1), (1, 1), (0, 0, 0, 0), "pointwise"),  # 16 passes of one tap
    ((64, 3, 32, 32), (16, 3, 1, 1), (1, 1), (0, 0, 0, 0), "direct"),      # 3 passes
    ((64, 1, 28, 28), (32, 1, 3, 3), (2, 2), (1, 1, 1, 1), "im2col"),      # strided
])
def test_the_rule_picks_direct_for_few_taps_and_passes_at_stride_1(x_shape, w_shape, stride, pads, expected):
    assert cpu_conv.ALGORITHM is None
    assert cpu_conv.algorithm(x_shape, w_shape, stride, pads) == expected


@pytest.mark.parametrize("first, second, pads, path", [
    # direct: the same padded planes, x written at other offsets (padding 1 all round, or 2
    # after); im2col, wide rows: the same dout_t, 20 or 18 valid columns of 22
    ((1, 1, 4, 4), (1, 1, 4, 4), [(1, 1, 1, 1), (0, 2, 0, 2)], "direct"),
    ((2, 4, 3, 3), (2, 4, 3, 5), [(1, 1, 1, 1), (1, 1, 1, 1)], "im2col"),
])
def test_reused_scratch_of_one_shape_serves_layers_that_write_other_parts(first, second, pads,
                                                                          path):
    """A per-thread buffer kept zero where a kernel never writes must not be shared by two
    layers whose buffers have one shape but whose kernels write other parts of it (a stale
    value then reaches dW or the output)."""
    rng = np.random.default_rng(8)
    cpu, naive = _backend.kernels("cpu"), _backend.kernels("naive")
    x_shape = (2, 1, 4, 4) if path == "direct" else (2, 4, 14, 20)
    x = random(rng, x_shape, np.float32)
    for w_shape, p in zip((first, second), pads):
        w = random(rng, w_shape, np.float32) * 100  # the first layer leaves large values behind
        assert cpu_conv.algorithm(x.shape, w.shape, (1, 1), p) == path
        out, _ = naive.conv2d(x, w, None, (1, 1), p)
        dout = random(rng, out.shape, np.float32)
        got, ref = run(cpu, x, w, None, p, dout), run(naive, x, w, None, p, dout)
        for name, a, r in zip(("out", "dx", "dw"), got, ref):
            assert_close_to_oracle(a, r, f"{path} {name} of {w_shape}")
