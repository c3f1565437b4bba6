import numpy as np
import pytest

from fastconv.losses import CrossEntropyLoss, MSELoss, log_softmax, softmax_cross_entropy


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
