"""The losses on every tier: softmax cross-entropy (a hand-computed value, finite differences,
PyTorch, huge logits, errors) and MSE on the host; the cuda tier's losses against the cpu tier,
the naive tier and PyTorch on Numba's simulator (tiny shapes), with inputs as device arrays, the
way the Trainer hands them over, so that the device-label paths (the fused kernel's fallback for
ignored rows, the kernel's own label check) are the ones exercised. Every option against
PyTorch on the host: test_loss_torch.py."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv.kernels import cpu, naive
from fastconv.losses import (BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss, log_softmax,
                             softmax_cross_entropy)

from helpers import DTYPES, random
from op_helpers import cuda_test, on_simulator, share_on_simulator
from op_helpers import both  # noqa: F401  (a fixture)


def _data(n=5, c=4, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)).astype(dtype), rng.integers(0, c, n)


def test_value_hand_computed():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = np.array([2, 0])
    expected = np.mean([-np.log(np.exp(3) / np.exp([1, 2, 3]).sum()), np.log(3.0)])
    loss_fn = CrossEntropyLoss()
    assert loss_fn(logits, labels) == pytest.approx(expected, rel=1e-14)
    e = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    e[[0, 1], labels] -= 1
    np.testing.assert_allclose(loss_fn.backward(), e / 2, rtol=1e-14, atol=1e-16)


def test_gradient_finite_differences():
    logits, labels = _data()
    loss, grad = softmax_cross_entropy(logits, labels)
    num = np.zeros_like(logits)
    h = 1e-6
    for idx in np.ndindex(logits.shape):
        lp, lm = logits.copy(), logits.copy()
        lp[idx] += h
        lm[idx] -= h
        num[idx] = (softmax_cross_entropy(lp, labels)[0]
                    - softmax_cross_entropy(lm, labels)[0]) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-9)
    assert isinstance(loss, float)
    np.testing.assert_allclose(np.exp(log_softmax(logits)).sum(1), 1.0, rtol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    logits, labels = _data(7, 5, dtype, seed=1)
    loss_fn = CrossEntropyLoss()
    loss = loss_fn(logits, labels)
    dlogits = loss_fn.backward()
    assert dlogits.dtype == dtype
    t = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(t, torch.tensor(labels))
    ref.backward()
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert loss == pytest.approx(ref.item(), rel=tol)
    np.testing.assert_allclose(dlogits, t.grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_logits_finite(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [1e4, 1e4, -1e4]], dtype=dtype)
    loss, grad = softmax_cross_entropy(logits, np.array([1, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx((2e4 + np.log(2)) / 2, rel=1e-6)
    assert grad.dtype == dtype


@pytest.mark.parametrize("logits, labels, match", [
    (np.zeros((2, 3, 1)), np.array([0, 1]), r"2-D.*\(2, 3, 1\)"),
    (np.zeros(3), np.array([0]), "2-D"),
    (np.zeros((2, 3)), np.array([0, 3]), r"\[0, 3\).*\[3\]"),
    (np.zeros((2, 3)), np.array([-1, 0]), r"\[-1\]"),
    (np.zeros((2, 3)), np.array([0.0, 1.0]), "integers.*float64"),
    (np.zeros((2, 3)), np.array([0, 1, 2]), r"mismatch.*\(2, 3\).*\(3,\)"),
    (np.zeros((2, 3)), np.array([[0, 1]]), "1-D"),
])
def test_errors(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        CrossEntropyLoss()(logits, labels)


def test_backward_before_forward():
    with pytest.raises(RuntimeError):
        CrossEntropyLoss().backward()


def test_custom_backend_fn():
    calls = []

    def fn(logits, labels):
        calls.append(1)
        return 1.5, np.zeros_like(logits)

    loss_fn = CrossEntropyLoss(fn=fn)
    assert loss_fn(np.zeros((1, 2)), np.array([0])) == 1.5 and calls


def test_mse():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    target = np.array([[0.0, 2.0], [3.0, 6.0]], dtype=np.float32)
    m = MSELoss()
    assert m(pred, target) == pytest.approx(5.0 / 4)
    g = m.backward()
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, [[0.5, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match=r"target size \(2,\) must be the same as input size \(2, 2\)"):
        m(pred, target[0])


# ---------------------------------------------------------------------------------------------
# The cuda tier against the cpu tier, the naive tier and PyTorch (Numba's simulator)

#: The simulator runs each GPU thread as Python: a seventh of the profile's examples (at least
#: 6) for the fused kernel, 6 fixed ones for the options.
SOME = share_on_simulator(7, 6)
FEW = on_simulator(6, database=None)


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


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@SOME
@given(n=st.integers(1, 5), classes=st.integers(2, 12), scale=st.sampled_from([1.0, 50.0]),
       seed=st.integers(0, 2**16))
def test_softmax_cross_entropy_matches_cpu_and_naive(G, both, dtype, n, classes, scale, seed):
    rng = np.random.default_rng(seed)
    logits = (random(rng, (n, classes), dtype) * scale).astype(dtype)
    labels = rng.integers(0, classes, n)
    loss, dlogits = G.softmax_cross_entropy(logits, labels)
    want_loss, want_d = cpu.softmax_cross_entropy(logits, labels)
    oracle_loss, oracle_d = naive.softmax_cross_entropy(logits, labels)
    assert isinstance(loss, float)
    both("cross_entropy loss", np.array([loss], dtype), np.array([want_loss], dtype),
         np.array([oracle_loss], dtype))
    both("cross_entropy dlogits", dlogits, want_d, oracle_d)


@cuda_test
def test_softmax_cross_entropy_rejects_labels_out_of_range(G):
    from numba import cuda
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        G.softmax_cross_entropy(np.zeros((2, 3), np.float32), cuda.to_device(np.array([0, 3])))


@cuda_test
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


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(n=st.integers(1, 5), c=st.integers(1, 6), seed=st.integers(0, 2**16),
       smoothing=st.floats(0, 1), weighted=st.booleans(),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_random_cases_match_torch(G, close, dtype, n, c, seed, smoothing, weighted,
                                                reduction):
    torch = pytest.importorskip("torch")  # the oracle (a missing-package skip: CI fails on it)
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


@cuda_test
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


@cuda_test
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


@cuda_test
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


@cuda_test
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


@cuda_test
def test_empty_batches_and_host_backends(G):
    loss, grad = F.cross_entropy(_dev(np.zeros((0, 3), np.float32)), _dev(np.zeros(0, np.int64)),
                                 label_smoothing=0.1)
    assert np.isnan(loss) and fc._backend.is_device_array(grad) and grad.shape == (0, 3)
    with pytest.raises(TypeError, match="device array"):
        F.mse_loss(_dev(np.zeros(3)), np.zeros(3), backend="cpu")
