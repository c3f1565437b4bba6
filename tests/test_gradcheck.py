"""Finite-difference gradient checks in float64 on every tier (central differences, rel. error < 1e-6).

``F`` here returns host arrays whatever the tier (see ``helpers.HF``).
"""
import numpy as np
import pytest

from helpers import HF as F
from helpers import ALL_TIERS, grad_rel_error, numeric_grad, random, tie_free

TOL = 1e-6


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((2, 3, 5, 5), (2, 3, 3, 3), 1, 0),
    ((2, 3, 7, 6), (4, 3, 3, 2), (2, 1), (1, 2)),    # non-square everything
    ((1, 2, 8, 7), (3, 2, 2, 2), 3, 1),              # stride > kernel: some inputs get no gradient
    ((2, 2, 5, 6), (3, 2, 2, 4), 1, "same"),         # even kernel, asymmetric padding
])
def test_conv2d_gradients_match_finite_differences(backend, x_shape, w_shape, stride, padding):
    rng = np.random.default_rng(21)
    x, w, b = (random(rng, shape, np.float64) for shape in (x_shape, w_shape, w_shape[:1]))
    out, cache = F.conv2d(x, w, b, stride, padding, backend=backend)
    dout = random(rng, out.shape, np.float64)
    dx, dw, db = F.conv2d_backward(dout, cache)

    def f():
        return F.conv2d(x, w, b, stride, padding, backend=backend)[0]

    for name, analytic, param in (("dx", dx, x), ("dw", dw, w), ("db", db, b)):
        numeric = numeric_grad(f, param, dout)
        err = grad_rel_error(analytic, numeric)
        assert err < TOL, f"{name}: relative error {err:.2e}"
        assert np.abs(numeric).max() > 0.1  # the check is not vacuous


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2)), (2, 3)])
def test_max_pool_gradient_matches_finite_differences(backend, kernel, stride):
    rng = np.random.default_rng(22)
    x = tie_free(rng, (2, 2, 7, 8), np.float64)  # gaps of 0.1 >> the step: no max changes place
    out, switches = F.max_pool2d(x, kernel, stride, backend=backend)
    dout = random(rng, out.shape, np.float64)
    dx = F.max_pool2d_backward(dout, switches, x.shape, backend=backend)
    numeric = numeric_grad(lambda: F.max_pool2d(x, kernel, stride, backend=backend)[0], x, dout)
    assert grad_rel_error(dx, numeric) < TOL
    assert np.count_nonzero(numeric) > 0


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2)), (2, 3)])
def test_avg_pool_gradient_matches_finite_differences(backend, kernel, stride):
    rng = np.random.default_rng(23)
    x = random(rng, (2, 2, 7, 8), np.float64)
    out = F.avg_pool2d(x, kernel, stride, backend=backend)
    dout = random(rng, out.shape, np.float64)
    dx = F.avg_pool2d_backward(dout, x.shape, kernel, stride, backend=backend)
    numeric = numeric_grad(lambda: F.avg_pool2d(x, kernel, stride, backend=backend), x, dout)
    assert grad_rel_error(dx, numeric) < TOL
    assert np.count_nonzero(numeric) > 0
