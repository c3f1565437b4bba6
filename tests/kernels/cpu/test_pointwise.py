"""The cpu tier's pointwise path (fastconv/kernels/cpu/pointwise.py: 1x1 stride-1 convolutions as
one GEMM per image) and the rule that picks it: against the naive tier on random shapes, float32
against float64, non-finite values, non-contiguous inputs, the fused bias + ReLU store, and
bitwise-identical results for 1-4 threads."""
import os

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv import _backend
from fastconv.kernels import naive
from fastconv.kernels.cpu import _common as cpu_common
from fastconv.kernels.cpu import activation, pointwise
from fastconv.kernels.cpu import conv as cpu_conv

from helpers import (DTYPES, HYPOTHESIS, assert_bitwise_same, assert_close_to_oracle,
                     assert_float32_accuracy, assert_same_digests_for_1_to_4_threads,
                     at_thread_counts)

#: This folder: the bitwise subprocess imports this module from it.
HERE = os.path.dirname(os.path.abspath(__file__))
NO_PAD = (0, 0, 0, 0)


def run(tier, x, w, b, dout, need_dx=True):
    out, saved = tier.conv2d(x, w, b, (1, 1), NO_PAD)
    return (out, *tier.conv2d_backward(dout, x, w, b is not None, (1, 1), NO_PAD, saved,
                                       need_dx))


def arrays(rng, n, c, k, h, wd, dtype, bias=True):
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = rng.standard_normal((k, c, 1, 1)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype) if bias else None
    return x, w, b, rng.standard_normal((n, k, h, wd)).astype(dtype)


def check(x, w, b, dout, need_dx=True):
    cpu = _backend.kernels("cpu")
    assert cpu_conv.algorithm(x.shape, w.shape, (1, 1), NO_PAD) == "pointwise"
    got, want = run(cpu, x, w, b, dout, need_dx), run(naive, x, w, b, dout, need_dx)
    for name, g, r in zip(("out", "dx", "dw", "db"), got, want):
        if r is None:
            assert g is None, name
        else:
            assert g.shape == r.shape and g.flags.c_contiguous, name
            assert_close_to_oracle(g, r, f"pointwise {name} {x.shape} {w.shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(n=st.integers(1, 5), c=st.integers(11, 20), k=st.integers(1, 20), h=st.integers(1, 9),
       wd=st.integers(1, 9), bias=st.booleans(), need_dx=st.booleans())
def test_pointwise_matches_naive(dtype, n, c, k, h, wd, bias, need_dx):
    """Forward, dx, dW and db against the naive tier (11+ input channels: fewer go direct)."""
    x, w, b, dout = arrays(np.random.default_rng(n * c * k + h * wd), n, c, k, h, wd, dtype, bias)
    check(x, w, b, dout, need_dx)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pointwise_at_mobilenet_sizes_with_every_share_split(dtype, monkeypatch):
    """mobilenet's 64->128 @7 at 6 images, split a share per image and chunked."""
    monkeypatch.setattr(cpu_common, "SPLIT_FLOPS", 0)
    monkeypatch.setattr(cpu_common, "SPLIT_IMAGES", 1)
    check(*arrays(np.random.default_rng(3), 6, 64, 128, 7, 7, dtype))


def test_pointwise_float32_is_close_to_float64():
    rng = np.random.default_rng(4)
    x, w, b, dout = arrays(rng, 8, 32, 64, 14, 14, np.float64)
    cpu = _backend.kernels("cpu")
    assert_float32_accuracy(lambda x, w, b, dout: run(cpu, x, w, b, dout), (x, w, b, dout),
                            run(naive, x, w, b, dout))


def test_pointwise_takes_non_contiguous_inputs():
    rng = np.random.default_rng(5)
    x, w, b, dout = arrays(rng, 3, 24, 8, 5, 6, np.float32)
    xt = np.asfortranarray(x)
    dt = dout[:, :, :, ::-1].copy()[:, :, :, ::-1]  # a reversed view
    cpu = _backend.kernels("cpu")
    for g, r in zip(run(cpu, xt, w, b, dt), run(cpu, x, w, b, dout)):
        np.testing.assert_array_equal(g, r)


def test_pointwise_passes_inf_and_nan_through_as_naive():
    """No zero padding is multiplied, so non-finite values land exactly where naive puts them."""
    rng = np.random.default_rng(6)
    x, w, b, dout = arrays(rng, 2, 12, 5, 3, 4, np.float64)
    x[0, 3, 1, 2], x[1, 0, 0, 0], w[2, 7, 0, 0] = np.inf, np.nan, -np.inf
    cpu = _backend.kernels("cpu")
    for name, g, r in zip(("out", "dx", "dw", "db"), run(cpu, x, w, b, dout),
                          run(naive, x, w, b, dout)):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=name)
        np.testing.assert_array_equal(np.isinf(g), np.isinf(r), err_msg=name)


@pytest.mark.parametrize("bias", [True, False])
def test_fused_relu_store_is_relu_of_the_output(bias):
    rng = np.random.default_rng(7)
    x, w, b, _ = arrays(rng, 3, 16, 9, 4, 5, np.float32, bias)
    x[1, 2, 3, 4] = np.nan
    plain = pointwise.forward(x, w, b)
    fused = pointwise.forward(x, w, b, relu=True)
    np.testing.assert_array_equal(fused, activation.relu(plain))
    assert np.isnan(fused).any() and (plain < 0).any()


def test_pointwise_memory_counts_the_chunk_sums():
    kept, work = pointwise.memory((64, 64, 14, 14), (128, 64, 1, 1), 4)
    assert kept == 0 and work >= 4 * 128 * 64 * 4
    assert cpu_conv.conv2d_memory((64, 64, 14, 14), (128, 64, 1, 1), (1, 1), NO_PAD, (1, 1), 4) \
        == (kept, work)


@pytest.mark.parametrize("x_shape, w_shape, stride, pads, expected", [
    ((64, 16, 28, 28), (32, 16, 1, 1), (1, 1), NO_PAD, "pointwise"),     # mobilenet's first
    ((64, 128, 7, 7), (128, 128, 1, 1), (1, 1), NO_PAD, "pointwise"),
    ((64, 3, 32, 32), (16, 3, 1, 1), (1, 1), NO_PAD, "direct"),          # 3 passes
    ((64, 16, 28, 28), (32, 16, 1, 1), (2, 2), NO_PAD, "im2col"),        # strided projection
    ((64, 16, 28, 28), (32, 16, 1, 1), (1, 1), (1, 1, 1, 1), "blocked"),  # padded
])
def test_the_rule_sends_unpadded_stride_1_1x1_layers_to_pointwise(x_shape, w_shape, stride, pads,
                                                                 expected):
    assert cpu_conv.ALGORITHM is None
    assert cpu_conv.algorithm(x_shape, w_shape, stride, pads) == expected


def _threaded_results(counts):
    """Forward and gradients of one pointwise conv at each thread count in ``counts``."""
    x, w, b, dout = arrays(np.random.default_rng(8), 7, 16, 24, 6, 5, np.float32)
    cpu = _backend.kernels("cpu")
    return at_thread_counts(lambda: run(cpu, x, w, b, dout), counts)


def test_pointwise_is_bitwise_identical_for_every_thread_count(monkeypatch):
    monkeypatch.setattr(cpu_common, "SPLIT_FLOPS", 0)
    monkeypatch.setattr(cpu_common, "SPLIT_IMAGES", 1)
    assert_bitwise_same(_threaded_results(range(1, min(3, numba.config.NUMBA_NUM_THREADS) + 1)))


def test_pointwise_is_bitwise_identical_for_1_to_4_threads_in_a_subprocess():
    assert_same_digests_for_1_to_4_threads(
        f"sys.path.insert(0, {HERE!r}); "
        "from fastconv.kernels.cpu import _common; "
        "_common.SPLIT_FLOPS, _common.SPLIT_IMAGES = 0, 1",
        "__import__('test_pointwise')._threaded_results")
