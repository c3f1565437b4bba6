"""The cuda tier's losses and channel dropout against the naive tier (and torch), on the simulator.

Tiny shapes: the simulator runs every GPU thread as Python. Inputs go in as device arrays, the
way the Trainer hands them over on the device, so the device-label paths (the fused kernel's
fallback for ignored rows, the kernel's own label check) are the ones exercised.
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv.losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss, log_softmax

pytestmark = [pytest.mark.cuda,
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]

DTYPES = [np.float32, np.float64]
FEW = settings(max_examples=6, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _dev(a):
    return fc.to_device(np.ascontiguousarray(a))


def _loss_close(close, name, got, want, dtype):
    if np.ndim(want) == 0:
        assert isinstance(got, float)
        if np.isnan(want):
            assert np.isnan(got)
            return
        got, want = np.array([got], dtype), np.array([want], dtype)
    else:
        assert fc._backend.is_device_array(got), f"{name}: 'none' losses stay on the device"
    close(name, got, np.asarray(want, dtype))


def _class_case(rng, n, c, dtype, weighted, ignore_index):
    x = (rng.standard_normal((n, c)) * 2).astype(dtype)
    y = rng.integers(0, c, n)
    y[::3] = ignore_index
    w = rng.uniform(0.2, 3, c).astype(dtype) if weighted else None
    return x, y, w


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted, ignore_index, smoothing", [
    (False, -100, 0.0), (True, -100, 0.0), (False, 1, 0.2), (True, 2, 0.1), (True, -100, 1.0)])
def test_cross_entropy_options_match_the_naive_tier(G, close, dtype, reduction, weighted,
                                                   ignore_index, smoothing):
    rng = np.random.default_rng(1)
    x, y, w = _class_case(rng, 5, 4, dtype, weighted, ignore_index)
    args = (w, ignore_index, reduction, smoothing)
    loss, grad = F.cross_entropy(_dev(x), _dev(y), *args)
    want_loss, want_grad = F.cross_entropy(x, y, *args, backend="naive")
    assert fc._backend.is_device_array(grad)
    _loss_close(close, "cross_entropy loss", loss, want_loss, dtype)
    close("cross_entropy dlogits", grad, want_grad)


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(n=st.integers(1, 5), c=st.integers(1, 6), seed=st.integers(0, 2**16),
       smoothing=st.floats(0, 1), weighted=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_random_cases_match_torch(G, close, dtype, n, c, seed, smoothing, weighted,
                                                reduction):
    rng = np.random.default_rng(seed)
    x, y, w = _class_case(rng, n, c, dtype, weighted, -100)
    loss_fn = CrossEntropyLoss(weight=w, reduction=reduction, label_smoothing=smoothing)
    go = rng.standard_normal(n).astype(dtype) if reduction == "none" else None
    loss = loss_fn(_dev(x), _dev(y))
    grad = loss_fn.backward(None if go is None else _dev(go))
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(t, torch.from_numpy(y), weight=None if w is None else
                                            torch.from_numpy(w), reduction=reduction,
                                            label_smoothing=smoothing)
    (ref if go is None else (ref * torch.from_numpy(go)).sum()).backward()
    _loss_close(close, "cross_entropy loss vs torch", loss, ref.detach().numpy(), dtype)
    close("cross_entropy dlogits vs torch", grad, t.grad.numpy())


def test_default_options_on_device_labels(G, close):
    """The fused kernel runs the defaults; rows at ignore_index make it fall back to the general
    kernel, which ignores them; other bad labels are named."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    y = np.array([0, 2, 1, 2])
    loss, grad = F.cross_entropy(_dev(x), _dev(y))
    want = F.cross_entropy(x, y, backend="naive")
    _loss_close(close, "fused loss", loss, want[0], np.float32)
    close("fused dlogits", grad, want[1])
    y[1] = -100
    loss, grad = F.cross_entropy(_dev(x), _dev(y))
    want = F.cross_entropy(x, y, backend="naive")
    _loss_close(close, "ignored-row loss", loss, want[0], np.float32)
    close("ignored-row dlogits", grad, want[1])
    with pytest.raises(ValueError, match=r"\[0, 3\) \(or equal ignore_index=-100\); 1 of 4"):
        F.cross_entropy(_dev(x), _dev(np.array([0, 5, -100, 1])))
    loss, grad = F.cross_entropy(_dev(x), _dev(np.full(4, -100)))
    assert np.isnan(loss) and not fc.to_numpy(grad).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_matches_the_naive_tier(G, close, dtype, reduction, weighted):
    rng = np.random.default_rng(3)
    x, y, w = _class_case(rng, 5, 4, dtype, weighted, 1)
    logp = log_softmax(x)
    loss_fn = NLLLoss(weight=w, ignore_index=1, reduction=reduction)
    loss = loss_fn(_dev(logp), _dev(y))
    want_loss, want_grad = F.nll_loss(logp, y, w, 1, reduction, backend="naive")
    _loss_close(close, "nll loss", loss, want_loss, dtype)
    go = np.arange(1, 6, dtype=dtype) if reduction == "none" else None
    close("nll dinput", loss_fn.backward(go),
          want_grad if go is None else want_grad * go[:, None])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted, positive", [(False, False), (True, False), (False, True),
                                                (True, True)])
def test_bce_with_logits_matches_the_naive_tier(G, close, dtype, reduction, weighted, positive):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 4)) * 5).astype(dtype)
    x[0, :2] = [-200, 200]  # stable for huge logits
    t = rng.random((3, 4)).astype(dtype)
    w = rng.uniform(0.1, 2, (3, 1)).astype(dtype) if weighted else None
    pw = rng.uniform(0.5, 3, 4).astype(dtype) if positive else None
    loss_fn = BCEWithLogitsLoss(weight=w, reduction=reduction, pos_weight=pw)
    loss = loss_fn(_dev(x), _dev(t))
    want_loss, want_grad = F.binary_cross_entropy_with_logits(x, t, w, reduction, pw,
                                                              backend="naive")
    _loss_close(close, "bce loss", loss, want_loss, dtype)
    go = rng.standard_normal((3, 4)).astype(dtype) if reduction == "none" else None
    close("bce dinput", loss_fn.backward(go), want_grad if go is None else want_grad * go)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_matches_the_naive_tier(G, close, dtype, reduction):
    rng = np.random.default_rng(5)
    x, t = rng.standard_normal((2, 3, 2)).astype(dtype), rng.standard_normal((2, 3, 2)).astype(dtype)
    loss_fn = MSELoss(reduction)
    loss = loss_fn(_dev(x), t)
    want_loss, want_grad = F.mse_loss(x, t, reduction, backend="naive")
    _loss_close(close, "mse loss", loss, want_loss, dtype)
    go = 2.0 if reduction != "none" else _dev(np.full(x.shape, 2, dtype))
    close("mse dinput", loss_fn.backward(go), want_grad * dtype(2), exact=True)


def test_empty_batches_and_host_backends(G):
    loss, grad = F.cross_entropy(_dev(np.zeros((0, 3), np.float32)), _dev(np.zeros(0, np.int64)),
                                 label_smoothing=0.1)
    assert np.isnan(loss) and fc._backend.is_device_array(grad) and grad.shape == (0, 3)
    with pytest.raises(TypeError, match="device array"):
        F.mse_loss(_dev(np.zeros(3)), np.zeros(3), backend="cpu")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_dropout2d_zeroes_whole_channels(G, close, dtype, p):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 8, 2, 3)).astype(dtype)
    out, mask = F.dropout2d(_dev(x), p, 9)
    m = fc.to_numpy(mask)
    assert m.shape == (4, 8) and m.dtype == dtype
    assert set(np.unique(m)) <= {0.0, dtype(0.0 if p == 1 else 1 / (1 - p))}
    if p == 0.5:
        assert 0 < (m == 0).sum() < m.size
    close("dropout2d out", out, x * m[:, :, None, None], exact=True)
    np.testing.assert_array_equal(fc.to_numpy(F.dropout2d(_dev(x), p, 9)[1]), m)  # repeatable
    dout = rng.standard_normal(x.shape).astype(dtype)
    close("dropout2d_backward", F.dropout2d_backward(_dev(dout), mask), dout * m[:, :, None, None],
          exact=True)


def test_dropout2d_layer_on_the_device(G):
    layer = fc.Dropout2d(0.5, rng=0)
    x = np.ones((3, 16, 2, 2), np.float32)
    out = fc.to_numpy(layer(_dev(x)))
    assert np.all(out == out[:, :, :1, :1]) and set(np.unique(out)) <= {0.0, 2.0}
    dx = fc.to_numpy(layer.backward(_dev(np.ones_like(x))))
    np.testing.assert_array_equal(dx, out)
