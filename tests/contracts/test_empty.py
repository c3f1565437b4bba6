"""Empty batches (N = 0) and zero channels (C = 0) through every op of every tier, both ways.

Called on the tier functions directly (the functional layer validates separately): each result
has the shape and dtype the contract gives it, gradients of parameters are zeros (a sum over no
images), and a conv or Linear with no input channels is its bias. The cpu tier raised
ZeroDivisionError for a conv with C = 0 and pooling backward rejected N = 0. The last tests go
through the functional layer (naive and cpu) and a whole network.
"""
import numpy as np
import pytest

import fastconv as fc
import fastconv.functional as F
from fastconv import _backend

from helpers import ALL_TIERS, DTYPES, host, random

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's mean of nothing

TIERS = ["naive", "cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


#: (tier, dtype) for the ops that are slow on the simulator: the cuda tier in float32 only
SLOW_OPS = [(t, d) for t in ("naive", "cpu") for d in DTYPES] + [
    pytest.param("cuda", np.float32, marks=pytest.mark.cuda)]


def kernels(name):
    try:
        return _backend.kernels(name)
    except RuntimeError as exc:  # cuda without a GPU or the simulator
        pytest.skip(f"{name} tier unavailable: {exc}")


@pytest.fixture(params=TIERS)
def tier(request):
    return kernels(request.param)


def same(got, want, what):
    got = host(got)
    assert got.shape == want.shape and got.dtype == want.dtype, \
        (what, got.shape, got.dtype, want.shape, want.dtype)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=what)


CONV_CASES = [  # x shape, w shape, stride, pads
    ((0, 4, 6, 5), (4, 4, 3, 3), (1, 1), (1, 1, 1, 1)),  # no images, stride-1 padded layout
    ((0, 4, 12, 12), (3, 4, 3, 3), (1, 1), (1, 1, 1, 1)),  # no images, wide rows
    ((0, 2, 12, 12), (3, 2, 3, 3), (1, 1), (1, 1, 1, 1)),  # no images, the direct path
    ((0, 2, 7, 7), (3, 2, 2, 3), (2, 1), (0, 1, 1, 0)),  # no images, strided
    ((2, 0, 6, 5), (4, 0, 3, 3), (1, 1), (1, 1, 1, 1)),  # no channels
    ((2, 0, 7, 7), (3, 0, 2, 3), (2, 1), (0, 1, 1, 0)),
    ((0, 0, 4, 4), (2, 0, 3, 3), (1, 1), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("name, dtype", SLOW_OPS)
@pytest.mark.parametrize("bias, need_dx", [(True, True), (False, False)])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_with_no_images_or_no_channels(name, dtype, bias, need_dx, case):
    tier = kernels(name)
    xs, ws, stride, pads = case
    rng = np.random.default_rng(0)
    x, w = random(rng, xs, dtype), random(rng, ws, dtype)
    b = random(rng, ws[0], dtype) if bias else None
    ho = (xs[2] + pads[0] + pads[1] - ws[2]) // stride[0] + 1
    wo = (xs[3] + pads[2] + pads[3] - ws[3]) // stride[1] + 1
    out, saved = tier.conv2d(x, w, b, stride, pads)
    expect = np.zeros((xs[0], ws[0], ho, wo), dtype)  # no images, or a sum over no channels
    if bias:
        expect += b[None, :, None, None]
    same(out, expect, "out")
    dout = random(rng, expect.shape, dtype)
    dx, dw, db = tier.conv2d_backward(dout, x, w, bias, stride, pads, saved, need_dx)
    if need_dx:
        same(dx, np.zeros(xs, dtype), "dx")
    else:
        assert dx is None
    same(dw, np.zeros(ws, dtype), "dw")
    if bias:
        same(db, dout.sum(axis=(0, 2, 3)), "db")
    else:
        assert db is None


@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_and_col2im_with_no_images_or_no_channels(tier, case):
    xs, ws, stride, pads = case
    x = np.ones(xs, np.float32)
    cols = host(tier.im2col(x, ws[2:], stride, pads))
    ho = (xs[2] + pads[0] + pads[1] - ws[2]) // stride[0] + 1
    wo = (xs[3] + pads[2] + pads[3] - ws[3]) // stride[1] + 1
    assert cols.shape == (xs[1] * ws[2] * ws[3], xs[0] * ho * wo) and cols.dtype == np.float32
    same(tier.col2im(cols, xs, ws[2:], stride, pads), np.zeros(xs, np.float32), "col2im")


POOL_SHAPES = [(0, 3, 6, 6), (2, 0, 6, 6), (0, 0, 4, 4)]


@pytest.mark.parametrize("name, dtype", SLOW_OPS)
@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 3), (1, 2)), ((2, 3), (1, 1))])
@pytest.mark.parametrize("shape", POOL_SHAPES)
def test_pooling_with_no_images_or_no_channels(name, dtype, kernel, stride, shape):
    tier = kernels(name)
    x = np.ones(shape, dtype)
    ho, wo = (shape[2] - kernel[0]) // stride[0] + 1, (shape[3] - kernel[1]) // stride[1] + 1
    out_shape = shape[:2] + (ho, wo)
    out, switches = tier.max_pool2d(x, kernel, stride)
    same(out, np.zeros(out_shape, dtype), "max out")
    assert host(switches).shape == out_shape and host(switches).dtype == np.int64
    dout = np.ones(out_shape, dtype)
    dx, ok = tier.max_pool2d_backward(dout, host(switches), shape)
    assert ok is True
    same(dx, np.zeros(shape, dtype), "max dx")
    same(tier.avg_pool2d(x, kernel, stride), np.zeros(out_shape, dtype), "avg out")
    same(tier.avg_pool2d_backward(dout, shape, kernel, stride), np.zeros(shape, dtype), "avg dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0, 4, 4), (0, 2, 3, 3)])
def test_activations_of_nothing(tier, dtype, name, shape):
    x = np.ones(shape, dtype)
    y = getattr(tier, name)(x)
    same(y, np.zeros(shape, dtype), name)
    same(getattr(tier, f"{name}_backward")(x, host(y)), np.zeros(shape, dtype), f"{name} dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 4), (0, 2, 3, 3)])
def test_dropout_of_nothing(tier, dtype, shape):
    out, mask = tier.dropout(np.ones(shape, dtype), 0.5, 3)
    same(out, np.zeros(shape, dtype), "dropout")
    same(mask, np.zeros(shape, dtype), "mask")
    same(tier.dropout_backward(np.ones(shape, dtype), host(mask)), np.zeros(shape, dtype), "dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("n, k_in, k_out", [(0, 5, 3), (4, 0, 3), (0, 0, 2)])
def test_linear_with_no_rows_or_no_inputs(tier, dtype, need_dx, n, k_in, k_out):
    rng = np.random.default_rng(1)
    x, w = random(rng, (n, k_in), dtype), random(rng, (k_out, k_in), dtype)
    b = random(rng, k_out, dtype)
    same(tier.linear(x, w, b), np.zeros((n, k_out), dtype) + b, "out")
    same(tier.linear(x, w, None), np.zeros((n, k_out), dtype), "out without bias")
    dout = random(rng, (n, k_out), dtype)
    dx, dw, db = tier.linear_backward(dout, x, w, True, need_dx)
    if need_dx:
        same(dx, np.zeros((n, k_in), dtype), "dx")
    else:
        assert dx is None
    same(dw, np.zeros((k_out, k_in), dtype), "dw")
    same(db, dout.sum(axis=0), "db")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_no_rows_is_nan_as_pytorchs_mean(tier, dtype):
    loss, dlogits = tier.softmax_cross_entropy(np.zeros((0, 4), dtype), np.zeros(0, np.int64))
    assert isinstance(loss, float) and np.isnan(loss)
    same(dlogits, np.zeros((0, 4), dtype), "dlogits")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("need_dx", [True, False])
@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 0, 4), (0, 0, 1), (2, 3, 0)])
def test_batch_norm_evaluation_with_nothing_to_normalise(tier, dtype, need_dx, shape):
    c = shape[1]
    rng = np.random.default_rng(2)
    weight, bias = random(rng, c, dtype), random(rng, c, dtype)
    mean, var = random(rng, c, dtype), np.ones(c, dtype)
    out, bmean, bvar, saved = tier.batch_norm(np.ones(shape, dtype), weight, bias, mean, var,
                                              False, 1e-5)
    same(out, np.zeros(shape, dtype), "out")
    assert bmean is None and bvar is None
    dx, dweight, dbias = tier.batch_norm_backward(np.ones(shape, dtype), np.ones(shape, dtype),
                                                  weight, saved, False, need_dx)
    same(dweight, np.zeros(c, dtype), "dweight")
    same(dbias, np.zeros(c, dtype), "dbias")
    if need_dx:
        same(dx, np.zeros(shape, dtype), "dx")
    else:
        assert dx is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 3, 4), (2, 3, 0)])
def test_batch_norm_training_on_nothing_has_nan_statistics_and_zero_gradients(tier, dtype, shape):
    """The mean of no values is NaN (NumPy's, the oracle's); the functional layer refuses to
    train on fewer than two values per channel, the tiers just must not crash."""
    c = shape[1]
    weight, bias = np.ones(c, dtype), np.zeros(c, dtype)
    out, bmean, bvar, saved = tier.batch_norm(np.ones(shape, dtype), weight, bias, None, None,
                                              True, 1e-5)
    same(out, np.zeros(shape, dtype), "out")
    assert np.isnan(host(bmean)).all() and np.isnan(host(bvar)).all()
    assert host(bmean).shape == (c,) and host(bmean).dtype == dtype
    dx, dweight, dbias = tier.batch_norm_backward(np.ones(shape, dtype), np.ones(shape, dtype),
                                                  weight, saved, True)
    same(dweight, np.zeros(c, dtype), "dweight")
    same(dbias, np.zeros(c, dtype), "dbias")
    same(dx, np.zeros(shape, dtype), "dx")


# --- through the functional layer and a whole network -----------------------------------------

@pytest.mark.parametrize("backend", ALL_TIERS)
def test_cross_entropy_of_an_empty_batch_is_nan(backend):
    loss, dlogits = F.cross_entropy(np.zeros((0, 10), np.float32), np.zeros(0, np.int64), backend=backend)
    assert np.isnan(loss) and host(dlogits).shape == (0, 10)


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_pooling_backward_accepts_an_empty_batch(backend):
    x = np.zeros((0, 2, 4, 4), np.float32)
    out, switches = F.max_pool2d(x, 2, backend=backend)
    assert host(F.max_pool2d_backward(out, switches, x.shape, backend=backend)).shape == x.shape
    assert host(F.avg_pool2d_backward(F.avg_pool2d(x, 2, backend=backend), x.shape, 2,
                                      backend=backend)).shape == x.shape


def test_empty_batch_through_a_network_both_ways():
    fc.manual_seed(0)
    model = fc.Sequential(fc.Conv2d(1, 2, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2), fc.AvgPool2d(1),
                          fc.Flatten(), fc.Linear(8, 3), input_grad=True)
    x = np.zeros((0, 1, 4, 4), np.float32)
    out = model(x)
    assert out.shape == (0, 3)
    dx = model.backward(np.zeros((0, 3), np.float32))
    assert dx.shape == (0, 1, 4, 4)
    assert np.all(model[0].weight.grad == 0)
