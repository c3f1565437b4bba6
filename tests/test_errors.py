"""Bad input gets a ValueError/TypeError naming the shapes or values; never a Numba error or a crash."""
import re

import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import _backend

from helpers import ALL_TIERS, host

X = np.zeros((2, 3, 6, 6), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)


def raises(exc, *fragments):
    """``pytest.raises`` whose message must contain every fragment (literally)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


@pytest.fixture(params=ALL_TIERS)
def backend(request):
    return request.param


# --- convolution ----------------------------------------------------------------------------

def test_x_must_be_4d(backend):
    with raises(ValueError, "x", "(3, 6, 6)"):
        F.conv2d(X[0], W, backend=backend)


def test_w_must_be_4d(backend):
    with raises(ValueError, "w", "(4, 3, 3)"):
        F.conv2d(X, W[:, :, :, 0], backend=backend)


def test_channel_mismatch(backend):
    with raises(ValueError, "channel", "(2, 3, 6, 6)", "(4, 2, 3, 3)"):
        F.conv2d(X, W[:, :2], backend=backend)


@pytest.mark.parametrize("w_shape, padding, fragments", [
    ((1, 3, 7, 3), 0, ("7x3", "6x6")),
    ((1, 3, 9, 9), 1, ("9x9", "8x8")),
    ((1, 3, 3, 8), (0, 0), ("3x8", "6x6")),
    ((1, 3, 3, 8), "valid", ("3x8", "6x6")),
])
def test_kernel_larger_than_padded_input(backend, w_shape, padding, fragments):
    with raises(ValueError, "larger", *fragments):
        F.conv2d(X, np.zeros(w_shape, np.float32), padding=padding, backend=backend)


@pytest.mark.parametrize("stride, shown", [(0, "(0, 0)"), (-1, "(-1, -1)"), ((1, 0), "(1, 0)")])
def test_stride_below_one(backend, stride, shown):
    with raises(ValueError, "stride", shown):
        F.conv2d(X, W, stride=stride, backend=backend)
    with raises(ValueError, "stride", shown):
        F.max_pool2d(X, 2, stride, backend=backend)
    with raises(ValueError, "stride", shown):
        F.avg_pool2d(X, 2, stride, backend=backend)


@pytest.mark.parametrize("stride", [1.5, "2", (1, 2, 3), None])
def test_stride_of_the_wrong_type(backend, stride):
    with pytest.raises((TypeError, ValueError), match="stride"):
        F.conv2d(X, W, stride=stride, backend=backend)


@pytest.mark.parametrize("padding, shown", [(-1, "(-1, -1)"), ((0, -2), "(0, -2)")])
def test_negative_padding(backend, padding, shown):
    with raises(ValueError, "padding", shown):
        F.conv2d(X, W, padding=padding, backend=backend)


@pytest.mark.parametrize("padding", ["full", "SAMEish", ""])
def test_unknown_padding_word(backend, padding):
    with raises(ValueError, "padding", repr(padding)):
        F.conv2d(X, W, padding=padding, backend=backend)


def test_same_padding_needs_stride_one(backend):
    with raises(ValueError, "same", "(2, 2)"):
        F.conv2d(X, W, stride=2, padding="same", backend=backend)


@pytest.mark.parametrize("b_shape", [(3,), (5,), (4, 1), (1, 4)])
def test_bias_of_the_wrong_length(backend, b_shape):
    with raises(ValueError, "bias", str(b_shape), "(4,)"):
        F.conv2d(X, W, np.zeros(b_shape, np.float32), backend=backend)


@pytest.mark.parametrize("dout_shape", [(2, 4, 4, 5), (2, 3, 4, 4), (1, 4, 4, 4), (2, 4, 16)])
def test_conv_backward_dout_of_the_wrong_shape(backend, dout_shape):
    _, cache = F.conv2d(X, W, backend=backend)
    with raises(ValueError, "dout", str(dout_shape), "(2, 4, 4, 4)"):
        F.conv2d_backward(np.zeros(dout_shape, np.float32), cache)


# --- dtypes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["x", "w", "b"])
def test_complex_input_is_a_type_error(backend, which):
    args = {"x": X, "w": W, "b": np.zeros(4, np.float32)}
    args[which] = args[which].astype(np.complex64)
    with raises(TypeError, which, "complex"):
        F.conv2d(args["x"], args["w"], args["b"], backend=backend)


def test_complex_pooling_input_is_a_type_error(backend):
    with raises(TypeError, "complex"):
        F.max_pool2d(X.astype(np.complex128), backend=backend)
    with raises(TypeError, "complex"):
        F.avg_pool2d(X.astype(np.complex128), backend=backend)
    with raises(TypeError, "complex"):
        F.max_pool2d_backward(np.zeros((2, 3, 3, 3), np.complex64), np.zeros((2, 3, 3, 3), np.int64),
                              X.shape, backend=backend)


@pytest.mark.parametrize("bad", [np.full((2, 3, 6, 6), "a"), np.zeros((2, 3, 6, 6), dtype=object),
                                 np.zeros((2, 3, 6, 6), dtype="datetime64[s]")])
def test_string_object_and_other_arrays_are_type_errors(backend, bad):
    with raises(TypeError, str(bad.dtype)):
        F.conv2d(bad, W, backend=backend)
    with raises(TypeError, str(bad.dtype)):
        F.max_pool2d(bad, backend=backend)
    with raises(TypeError, str(bad.dtype)):
        F.conv2d(X, bad[:, :, :3, :3].reshape(2, 3, 3, 3)[:1], backend=backend)


# --- pooling ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel, fragment", [(7, "7x7"), ((2, 7), "2x7"), ((8, 1), "8x1")])
def test_pool_window_larger_than_the_input(backend, kernel, fragment):
    with raises(ValueError, fragment, "6x6"):
        F.max_pool2d(X, kernel, 1, backend=backend)
    with raises(ValueError, fragment, "6x6"):
        F.avg_pool2d(X, kernel, 1, backend=backend)
    with raises(ValueError, fragment, "6x6"):
        F.avg_pool2d_backward(np.zeros((2, 3, 1, 1), np.float32), X.shape, kernel, 1, backend=backend)


def test_pool_input_must_be_4d(backend):
    with raises(ValueError, "(3, 6, 6)"):
        F.max_pool2d(X[0], backend=backend)
    with raises(ValueError, "(3, 6, 6)"):
        F.avg_pool2d(X[0], backend=backend)


def test_switches_whose_shape_does_not_match_dout(backend):
    out, switches = F.max_pool2d(X, 2, backend=backend)
    with raises(ValueError, "switches", "(2, 3, 3, 2)", "(2, 3, 3, 3)"):
        F.max_pool2d_backward(out, host(switches)[..., :2], X.shape, backend=backend)


def test_dout_that_cannot_come_from_the_input_shape(backend):
    out, switches = F.max_pool2d(X, 2, backend=backend)
    with raises(ValueError, "(2, 3, 3, 3)", "(2, 4, 6, 6)"):
        F.max_pool2d_backward(out, switches, (2, 4, 6, 6), backend=backend)
    with raises(ValueError, "input_shape", "(2, 3, 6)"):
        F.max_pool2d_backward(out, switches, (2, 3, 6), backend=backend)
    with raises(ValueError, "dout", "(2, 3, 2, 2)", "(2, 3, 3, 3)"):
        F.avg_pool2d_backward(np.zeros((2, 3, 2, 2), np.float32), X.shape, 2, backend=backend)


@pytest.mark.parametrize("value", [-1, 36, 2**40])
def test_out_of_range_switch_values(backend, value):
    out, switches = F.max_pool2d(X, 2, backend=backend)
    bad = host(switches).copy()
    bad[1, 2, 0, 1] = value
    with raises(ValueError, "[0, 36)", "(2, 3, 6, 6)"):
        F.max_pool2d_backward(out, bad, X.shape, backend=backend)


def test_float_switches_are_a_type_error(backend):
    out, switches = F.max_pool2d(X, 2, backend=backend)
    with raises(TypeError, "switches", "float64"):
        F.max_pool2d_backward(out, host(switches).astype(np.float64), X.shape, backend=backend)


def test_switches_given_as_nested_lists_are_accepted(backend):
    out, switches = F.max_pool2d(X, 2, backend=backend)
    expected = F.max_pool2d_backward(out, switches, X.shape, backend=backend)
    got = F.max_pool2d_backward(host(out).tolist(), host(switches).tolist(), X.shape, backend=backend)
    np.testing.assert_array_equal(host(got), host(expected))


# --- im2col / col2im --------------------------------------------------------------------------

def test_im2col_and_col2im_bad_shapes(backend):
    with raises(ValueError, "(3, 6, 6)"):
        F.im2col(X[0], 3, backend=backend)
    with raises(ValueError, "cols", "(27, 5)", "(27, 32)"):
        F.col2im(np.zeros((27, 5)), X.shape, 3, backend=backend)
    with raises(ValueError, "input_shape", "(3, 6, 6)"):
        F.col2im(np.zeros((27, 32)), (3, 6, 6), 3, backend=backend)


# --- backends -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bogus", "CPU", "gpu", ""])
def test_unknown_backend_in_functional_calls(name):
    calls = [lambda: F.conv2d(X, W, backend=name),
             lambda: F.max_pool2d(X, backend=name),
             lambda: F.avg_pool2d(X, backend=name),
             lambda: F.im2col(X, 3, backend=name),
             lambda: F.avg_pool2d_backward(np.zeros((2, 3, 3, 3)), X.shape, backend=name),
             lambda: F.max_pool2d_backward(np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), np.int64),
                                           X.shape, backend=name)]
    for call in calls:
        with raises(ValueError, "backend", repr(name), "naive", "cpu"):
            call()


def test_unknown_backend_in_set_backend_leaves_the_default(monkeypatch):
    monkeypatch.setitem(_backend._state, "name", "naive")
    with raises(ValueError, "backend", "'bogus'"):
        fastconv.set_backend("bogus")
    assert fastconv.get_backend() == "naive"


def test_unknown_backend_in_the_environment(monkeypatch):
    monkeypatch.setenv("FASTCONV_BACKEND", "bogus")
    monkeypatch.setitem(_backend._state, "name", None)  # forget any earlier choice; restored after
    with raises(ValueError, "backend", "'bogus'"):
        fastconv.get_backend()
    with raises(ValueError, "backend", "'bogus'"):
        F.conv2d(X, W)
    fastconv.set_backend("cpu")  # an explicit choice overrides the bad environment
    assert fastconv.get_backend() == "cpu"
