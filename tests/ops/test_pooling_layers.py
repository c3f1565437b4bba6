"""The pooling layers and the pooling error contract: return_indices and an unpooling round
trip, dtypes and views, the summary, and errors that are early, PyTorch-like and never a Numba
error (every tier)."""
import numpy as np
import pytest

import fastconv as fc
import fastconv.functional as F

from helpers import ALL_TIERS, HF, random, tie_free


# ---------------------------------------------------------------------------------------------
# Layers: return_indices, unpooling round trip, dtypes, views

def test_return_indices_layers_and_an_unpooling_round_trip():
    rng = np.random.default_rng(3)
    x = tie_free(rng, (2, 3, 7, 6), np.float32, gap=0.25)
    pool, unpool = fc.MaxPool2d(2, return_indices=True), fc.MaxUnpool2d(2)
    out, idx = pool(x)
    assert out.shape == (2, 3, 3, 3) and idx.dtype == np.int64
    restored = unpool(out, idx, output_size=x.shape)
    assert restored.shape == x.shape
    kept = np.zeros(x.shape, bool).reshape(2, 3, -1)
    np.put_along_axis(kept, idx.reshape(2, 3, -1), True, axis=2)
    np.testing.assert_array_equal(restored.reshape(2, 3, -1)[kept], x.reshape(2, 3, -1)[kept])
    assert np.count_nonzero(restored) == out.size
    g = random(rng, restored.shape, np.float32)
    dout = unpool.backward(g)
    np.testing.assert_array_equal(dout, np.take_along_axis(g.reshape(2, 3, -1), idx.reshape(2, 3, -1),
                                                           axis=2).reshape(out.shape))
    dx = pool.backward(dout)  # dy for ``out`` only, as PyTorch
    np.testing.assert_array_equal(dx, np.where(kept, g.reshape(2, 3, -1), 0).reshape(x.shape))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3, 6, 7\)"):
        unpool(out, idx, output_size=x.shape)
        unpool.backward(np.zeros((2, 3, 6, 7), np.float32))
    amp = fc.AdaptiveMaxPool2d((2, 3), return_indices=True)
    out, idx = amp(x)
    assert out.shape == idx.shape == (2, 3, 2, 3)
    assert amp.backward(np.ones(out.shape, np.float32)).sum() == out.size


@pytest.mark.parametrize("make", [lambda: fc.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
                                  lambda: fc.AvgPool2d(3, 2, 1, True, False, 5),
                                  lambda: fc.AdaptiveAvgPool2d((None, 2)),
                                  lambda: fc.AdaptiveMaxPool2d(3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_layers_keep_the_dtype_and_take_views(make, dtype):
    rng = np.random.default_rng(5)
    base = (rng.standard_normal((2, 3, 9, 14)) * 10).astype(dtype)
    view = base[:, :, :, ::2]  # not contiguous
    layer = make()
    out = layer(view)
    want = np.float32 if dtype == np.int32 else dtype
    assert out.dtype == want and out.shape == layer.output_shape(view.shape)
    same = make()(np.ascontiguousarray(view))
    np.testing.assert_array_equal(out, same)
    dx = layer.backward(np.ones(out.shape, want))
    assert dx.shape == view.shape and dx.dtype == want


def test_summary_lists_the_new_pools():
    model = fc.Sequential(fc.MaxPool2d(3, 2, 1), fc.AvgPool2d(2, ceil_mode=True),
                          fc.AdaptiveMaxPool2d((3, None)), fc.AdaptiveAvgPool2d(1), fc.Flatten())
    text = model.summary((1, 4, 15, 15))
    for fragment in ("MaxPool2d", "AvgPool2d", "AdaptiveMaxPool2d", "AdaptiveAvgPool2d", "(1, 4, 1, 1)"):
        assert fragment in text
    assert model(np.zeros((1, 4, 15, 15), np.float32)).shape == (1, 4)


# ---------------------------------------------------------------------------------------------
# Errors: early, PyTorch-like, never a Numba error

X = np.zeros((2, 3, 6, 6), np.float32)


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_padding_larger_than_half_the_kernel(backend):
    with pytest.raises(ValueError, match="pad should be at most half of effective kernel size, but "
                                         "got pad=2, kernel_size=3 and dilation=1"):
        F.max_pool2d(X, 3, 1, 2, backend=backend)
    with pytest.raises(ValueError, match="pad should be at most half of effective kernel size"):
        F.avg_pool2d(X, 1, 1, 1, backend=backend)
    with pytest.raises(ValueError, match="pad should be smaller than or equal to half of kernel "
                                         "size, but got padW = 2, padH = 2, kW = 3, kH = 3"):
        F.max_pool2d(X, 3, 1, 2, dilation=2, backend=backend)
    for make in (lambda: fc.MaxPool2d(2, padding=2), lambda: fc.AvgPool2d((3, 5), padding=(2, 1))):
        with pytest.raises(ValueError, match="pad should"):
            make()


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_output_too_small_and_windows_over_nothing(backend):
    with pytest.raises(ValueError, match=r"pool window 4x4 with dilation \(3, 3\) is larger than "
                                         r"the input 6x6 padded by \(1, 1\): output size -1x-1"):
        F.max_pool2d(X, 4, 1, 1, dilation=3, backend=backend)
    with pytest.raises(ValueError, match=r"AvgPool2d\(kernel_size=7.*\(2, 3, 6, 6\).*too small"):
        fc.AvgPool2d(7)(X)
    tiny = np.zeros((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"taps at \[-1, 2\].*holds no element"):
        F.max_pool2d(tiny, 2, 1, 1, dilation=3, backend=backend)  # PyTorch: -inf, index 6
    with pytest.raises(ValueError, match="too small"):
        F.avg_pool2d_backward(np.zeros((2, 3, 1, 1), np.float32), X.shape, 8, backend=backend)


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_bad_pool_arguments(backend):
    for kwargs, exc, words in [
            (dict(dilation=0), ValueError, "dilation must be >= 1"),
            (dict(padding=-1), ValueError, "padding must be >= 0"),
            (dict(dilation=1.5), TypeError, "dilation"),
            (dict(padding=(1, 2, 3)), ValueError, "padding"),
            (dict(kernel_size=0), ValueError, "kernel_size must be >= 1")]:
        with pytest.raises(exc, match=words):
            F.max_pool2d(X, **{"kernel_size": 2, **kwargs}, backend=backend)
    for value, exc in [(0, ValueError), (2.5, TypeError), (True, TypeError)]:
        with pytest.raises(exc, match="divisor_override"):
            F.avg_pool2d(X, 2, divisor_override=value, backend=backend)
        with pytest.raises(exc, match="divisor_override"):
            fc.AvgPool2d(2, divisor_override=value)


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_bad_adaptive_output_sizes(backend):
    for size, exc, words in [((1, 2, 3), ValueError, "output_size"), ((2,), ValueError, "output_size"),
                             (-1, ValueError, ">= 0"), ((3, -2), ValueError, ">= 0"),
                             (2.5, TypeError, "output_size"), (("2", 2), TypeError, "output_size")]:
        with pytest.raises(exc, match=words):
            F.adaptive_avg_pool2d(X, size, backend=backend)
        with pytest.raises(exc, match=words):
            F.adaptive_max_pool2d(X, size, backend=backend)
        with pytest.raises(exc, match=words):
            fc.AdaptiveAvgPool2d(size)
    with pytest.raises(ValueError, match=r"\(3, 6, 6\)"):
        F.adaptive_avg_pool2d(X[0], 2, backend=backend)
    with pytest.raises(ValueError, match="cannot come from pooling"):
        F.adaptive_avg_pool2d_backward(np.zeros((2, 4, 2, 2), np.float32), X.shape, backend=backend)


def test_output_size_zero_is_an_empty_output_as_in_pytorch():
    for backend in ALL_TIERS:
        out = HF.adaptive_avg_pool2d(X, (0, 3), backend=backend)
        assert out.shape == (2, 3, 0, 3)
        assert HF.adaptive_avg_pool2d_backward(out, X.shape, backend=backend).shape == X.shape
        out, sw = HF.adaptive_max_pool2d(X, 0, backend=backend)
        assert out.shape == sw.shape == (2, 3, 0, 0)
        np.testing.assert_array_equal(HF.max_pool2d_backward(out, sw, X.shape, backend=backend), 0)


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_bad_unpooling(backend):
    x = np.ones((1, 2, 2, 2), np.float32)
    idx = np.zeros((1, 2, 2, 2), np.int64)
    with pytest.raises(ValueError, match=r'invalid output_size "\(7, 7\)" '
                                         r'\(dim 0 must be between 2 and 6\)'):
        F.max_unpool2d(x, idx, 2, output_size=(7, 7), backend=backend)
    with pytest.raises(ValueError, match="2 or 4 elements"):
        F.max_unpool2d(x, idx, 2, output_size=(1, 2, 4), backend=backend)
    bad = idx.copy()
    bad[0, 1, 1, 0] = 16
    with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
        F.max_unpool2d(x, bad, 2, backend=backend)
    with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
        F.max_unpool2d_backward(np.zeros((1, 2, 4, 4), np.float32), bad, backend=backend)
    with pytest.raises(ValueError, match=r"indices have shape \(1, 2, 2, 1\) but x has \(1, 2, 2, 2\)"):
        F.max_unpool2d(x, idx[..., :1], 2, backend=backend)
    with pytest.raises(TypeError, match="indices must be integers"):
        F.max_unpool2d(x, idx.astype(np.float32), 2, backend=backend)
    with pytest.raises(ValueError, match="do not match dout"):
        F.max_unpool2d_backward(np.zeros((1, 3, 4, 4), np.float32), idx, backend=backend)
    with pytest.raises(ValueError, match="not positive"):
        F.max_unpool2d(x, idx, 1, padding=1, backend=backend)
    with pytest.raises(ValueError, match="padding must be >= 0"):
        fc.MaxUnpool2d(2, padding=-1)


def test_max_pool_backward_takes_switches_of_outputs_larger_than_the_input():
    """Padding and ceil mode can make more outputs than inputs: backward accepts such dout."""
    x = np.array([[[[1.0, 3.0]]]], np.float32)
    out, switches = F.max_pool2d(x, 2, 1, 1)
    assert out.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(switches[0, 0], [[0, 1, 1], [0, 1, 1]])
    dx = F.max_pool2d_backward(np.ones(out.shape, np.float32), switches, x.shape)
    np.testing.assert_array_equal(dx, [[[[2.0, 4.0]]]])
