"""F.batch_norm on every tier: cpu against the naive oracle, finite differences, running statistics."""
import numpy as np
import pytest

import fastconv.functional as F
from helpers import ALL_TIERS, BACKENDS, DTYPES, RTOL, grad_rel_error, numeric_grad, rel_error

SHAPES = [(4, 3), (3, 2, 5), (2, 3, 4, 5)]


def _inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    w = rng.uniform(0.5, 1.5, c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_naive(backend, dtype, shape, training):
    x, w, b = _inputs(shape, dtype)
    dout = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    results = {}
    for tier in ("naive", backend):
        rm, rv = np.full(shape[1], 0.5, dtype), np.full(shape[1], 2.0, dtype)
        out, cache = F.batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5, backend=tier)
        results[tier] = (out, rm, rv) + F.batch_norm_backward(dout, cache)
    for got, ref in zip(results[backend], results["naive"]):
        assert got.dtype == np.dtype(dtype)
        assert rel_error(got, ref) < RTOL[np.dtype(dtype)]


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_finite_differences(backend, training):
    x, w, b = _inputs((3, 2, 4, 3), np.float64, seed=2)
    rm, rv = np.array([0.3, -0.2]), np.array([1.5, 0.7])
    dout = np.random.default_rng(3).standard_normal(x.shape)

    def forward():
        return F.batch_norm(x, w, b, rm.copy(), rv.copy(), training, backend=backend)[0]

    _, cache = F.batch_norm(x, w, b, rm.copy(), rv.copy(), training, backend=backend)
    dx, dw, db = F.batch_norm_backward(dout, cache)
    for got, arg in ((dx, x), (dw, w), (db, b)):
        assert grad_rel_error(got, numeric_grad(forward, arg, dout)) < 1e-6


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_running_statistics_follow_pytorch_rule(backend):
    x, w, b = _inputs((4, 3, 2, 2), np.float64)
    rm, rv = np.zeros(3), np.ones(3)
    F.batch_norm(x, w, b, rm, rv, True, momentum=0.25, backend=backend)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(rm, 0.25 * mean, rtol=1e-12)
    np.testing.assert_allclose(rv, 0.75 + 0.25 * var, rtol=1e-12)


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_batch_norm_errors_name_shapes(backend):
    x, w, b = _inputs((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        F.batch_norm(x, np.ones(4, np.float32), b, backend=backend)
    with pytest.raises(ValueError, match="more than 1 value"):
        F.batch_norm(x[:1, :, :1], w, b, backend=backend)
    with pytest.raises(ValueError, match="running"):
        F.batch_norm(x, w, b, training=False, backend=backend)
