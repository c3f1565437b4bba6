"""fastconv.utils' gradient clipping against torch.nn.utils."""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import math
import warnings

import numpy as np
import pytest
import torch

import fastconv as fc
from fastconv.utils import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

from test_optim import device_grads, device_params

SHAPES = [(3, 4), (5,), (2, 2, 3), (4,)]


def _pair(dtype, seed=0, scale=1.0):
    """fastconv Parameters and torch tensors with equal gradients; the last has none."""
    rng = np.random.default_rng(seed)
    params, tensors = [], []
    for i, s in enumerate(SHAPES):
        p = fc.Parameter(np.zeros(s, dtype))
        t = torch.zeros(s, dtype=torch.float64 if dtype == np.float64 else torch.float32,
                        requires_grad=True)
        if i < len(SHAPES) - 1:
            p.grad = (scale * rng.standard_normal(s)).astype(dtype)
            t.grad = torch.tensor(p.grad.copy())
        params.append(p)
        tensors.append(t)
    return params, tensors


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm_type", [2.0, 1, math.inf, "inf", -math.inf, 0, 0.5, 3.0])
@pytest.mark.parametrize("max_norm", [0.3, 1e3])
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    params, tensors = _pair(dtype)
    total = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type=norm_type)
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    assert isinstance(total, float)
    assert total == pytest.approx(ttotal.item(), rel=rtol)
    for p, t in zip(params, tensors):
        if t.grad is None:
            assert p.grad is None
            continue
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=rtol, atol=0)


def test_clip_grad_norm_hand_computed():
    p, q = fc.Parameter(np.zeros(2)), fc.Parameter(np.zeros(1))
    p.grad, q.grad = np.array([3.0, 0.0]), np.array([4.0])
    assert clip_grad_norm_([p, q], 1.0) == 5.0
    coef = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(np.concatenate([p.grad, q.grad]), [3 * coef, 0.0, 4 * coef],
                               rtol=1e-15)
    g, before = p.grad, p.grad.copy()
    assert clip_grad_norm_(p, 10.0) == pytest.approx(3 * coef, rel=1e-15)  # one parameter
    assert p.grad is g  # in place, and below max_norm: unchanged
    np.testing.assert_array_equal(g, before)


def test_nonfinite_norms():
    params, tensors = _pair(np.float64)
    params[0].grad[0, 0] = tensors[0].grad[0, 0] = np.nan
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    assert not np.isnan(params[1].grad).any()  # nothing changed before the error
    total = clip_grad_norm_(params, 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_(tensors, 1.0)
    assert math.isnan(total) and math.isnan(ttotal.item())
    for p, t in zip(params[:-1], tensors):
        np.testing.assert_array_equal(np.isnan(p.grad), np.isnan(t.grad.numpy()))
    params[1].grad[0] = np.inf
    with pytest.raises(RuntimeError, match="order inf"):
        clip_grad_norm_(params[1:], 1.0, norm_type="inf", error_if_nonfinite=True)


def test_no_gradients_and_generators():
    p = fc.Parameter(np.ones(3))
    assert clip_grad_norm_([p], 1.0) == 0.0 == get_total_norm([])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clip_grad_norm_((q for q in []), 1.0)
    assert "empty generator" in str(caught[0].message)
    params, tensors = _pair(np.float64, scale=5.0)
    assert clip_grad_norm_((q for q in params), 1.0) == pytest.approx(
        torch.nn.utils.clip_grad_norm_(tensors, 1.0).item(), rel=1e-13)
    with pytest.raises(TypeError, match=".grad"):
        clip_grad_norm_([np.ones(3)], 1.0)


def test_mixed_dtypes_and_views():
    a, b = fc.Parameter(np.zeros((2, 4), np.float32)), fc.Parameter(np.zeros(3))
    base = np.full((2, 8), 2.0, np.float32)
    a.grad, b.grad = base[:, ::2], np.full(3, 2.0)
    total = clip_grad_norm_([a, b], 1.0)
    assert total == pytest.approx(2.0 * math.sqrt(11), rel=1e-7)
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64
    np.testing.assert_allclose(base[:, ::2], 2.0 / (total + 1e-6), rtol=1e-6)
    assert (base[:, 1::2] == 2.0).all()


def test_split_api_matches_torch():
    params, tensors = _pair(np.float64, scale=3.0)
    total = get_total_norm([p.grad for p in params if p.grad is not None], 3.0)
    ttotal = torch.nn.utils.get_total_norm([t.grad for t in tensors if t.grad is not None], 3.0)
    assert total == pytest.approx(ttotal.item(), rel=1e-13)
    clip_grads_with_norm_(params, 0.5, total)
    torch.nn.utils.clip_grads_with_norm_(tensors, 0.5, ttotal)
    for p, t in zip(params[:-1], tensors):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("clip_value", [0.5, 2])
def test_clip_grad_value_matches_torch(dtype, clip_value):
    params, tensors = _pair(dtype, scale=2.0)
    params[0].grad[0, 0] = tensors[0].grad[0, 0] = np.nan
    assert clip_grad_value_(params, clip_value) is None
    torch.nn.utils.clip_grad_value_(tensors, clip_value)
    for p, t in zip(params, tensors):
        if t.grad is not None:
            assert p.grad.dtype == dtype
            np.testing.assert_array_equal(p.grad, t.grad.numpy())
    assert np.nanmax(np.abs(params[1].grad)) <= clip_value


# --- the cuda tier (Numba's simulator): device gradients against host ones -------------------

@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")
def test_clipping_device_gradients(G, close):
    rng, host, dev = device_params(G, np.float32, seed=3)
    device_grads(rng, host, dev)
    total, dtotal = clip_grad_norm_(host, 0.5), clip_grad_norm_(dev, 0.5)
    assert dtotal == pytest.approx(total, rel=1e-6)
    for p, q in zip(host, dev):
        assert fc._backend.is_device_array(q.grad)
        close("clipped grad", q.grad, p.grad)
    clip_grad_value_(host, 0.01)
    clip_grad_value_(dev, 0.01)
    for p, q in zip(host, dev):
        close("clamped grad", q.grad, p.grad, exact=True)
