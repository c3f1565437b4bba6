"""Modules used more than once, gradient mode (no_grad) and frozen parameters."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import losses, optim


def _fd_grad(f, p, eps=1e-6):
    """Central finite differences of scalar f() with respect to every element of p.data."""
    g = np.zeros_like(p.data)
    for i in np.ndindex(p.shape):
        old = p.data[i]
        p.data[i] = old + eps
        hi = f()
        p.data[i] = old - eps
        lo = f()
        p.data[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


def _loss(model, x, y):
    return losses.softmax_cross_entropy(model(x), y)[0]


def _backprop(model, x, y):
    model.zero_grad()
    _, dlogits = losses.softmax_cross_entropy(model(x), y)
    model.backward(dlogits)


def test_one_relu_object_twice_gives_the_gradients_of_two_relus():
    fc.manual_seed(0)
    a = fc.Sequential(fc.Linear(6, 8), fc.ReLU(), fc.Linear(8, 8), fc.ReLU(), fc.Linear(8, 3)).to(np.float64)
    relu = fc.ReLU()
    b = fc.Sequential(a[0], relu, a[2], relu, a[4])
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 6)), rng.integers(0, 3, 5)
    _backprop(a, x, y)
    want = [p.grad.copy() for p in a.parameters()]
    _backprop(b, x, y)
    for g, w in zip((p.grad for p in b.parameters()), want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


def test_shared_linear_gradient_matches_finite_differences_and_is_listed_once():
    fc.manual_seed(2)
    shared = fc.Linear(4, 4)
    model = fc.Sequential(shared, fc.Tanh(), shared, fc.Tanh(), fc.Linear(4, 3)).to(np.float64)
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    _backprop(model, x, y)
    for p in (shared.weight, shared.bias):
        np.testing.assert_allclose(p.grad, _fd_grad(lambda: _loss(model, x, y), p), rtol=1e-6, atol=1e-8)
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "4.weight", "4.bias"]
    assert len(model.parameters()) == 4
    optim.SGD(model.parameters(), lr=0.1).step()  # accepted: no parameter appears twice
    state = model.state_dict()  # PyTorch's state dicts list a shared parameter under each name
    assert {"0.weight", "2.weight"} <= set(state) and np.array_equal(state["0.weight"], state["2.weight"])
    twin = fc.Sequential(fc.Linear(4, 4), fc.Tanh(), fc.Linear(4, 4), fc.Tanh(), fc.Linear(4, 3))
    twin.load_state_dict(state)
    np.testing.assert_array_equal(twin[2].weight.data, shared.weight.data.astype(np.float32))


def test_modules_lists_a_shared_module_once():
    relu = fc.ReLU()
    model = fc.Sequential(fc.Linear(2, 2), relu, fc.Linear(2, 2), relu)
    assert [type(m).__name__ for m in model.modules()] == ["Sequential", "Linear", "ReLU", "Linear"]


def test_a_forward_without_backward_does_not_pile_up_caches():
    model = fc.Sequential(fc.Linear(3, 3), fc.ReLU())
    x = np.ones((2, 3), np.float32)
    for _ in range(5):
        model(x)
    assert all(len(m._caches) <= 1 for m in model.modules())
    layer = fc.ReLU()
    for _ in range(5):
        layer(x)
    assert len(layer._caches) == 1


def test_no_grad_keeps_nothing_and_backward_says_why():
    model = fc.Sequential(fc.Conv2d(1, 4, 3), fc.ReLU(), fc.MaxPool2d(2), fc.Flatten(), fc.Linear(4, 2))
    x = np.ones((2, 1, 4, 4), np.float32)
    with fc.no_grad():
        assert not fc.is_grad_enabled()
        out = model(x)
    assert fc.is_grad_enabled()
    assert all(not m._caches for m in model.modules())
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.ones_like(out))


def test_no_grad_as_decorator_and_enable_grad_inside():
    @fc.no_grad()
    def infer():
        with fc.enable_grad():
            inner = fc.is_grad_enabled()
        return fc.is_grad_enabled(), inner

    assert infer() == (False, True) and fc.is_grad_enabled()


def _cached_bytes(model):
    """Bytes of the arrays the model's per-call caches hold (each base array once)."""
    seen = set()

    def size(o):
        if isinstance(o, np.ndarray):
            while isinstance(o.base, np.ndarray):
                o = o.base
            if id(o) in seen:
                return 0
            seen.add(id(o))
            return o.nbytes
        return sum(size(v) for v in o) if isinstance(o, (tuple, list)) else 0
    return sum(size(m._caches) for m in model.modules())


def test_predict_keeps_no_im2col_columns():
    fc.manual_seed(0)
    model = fc.Sequential(fc.Conv2d(1, 32, 3), fc.ReLU(), fc.MaxPool2d(2), fc.Conv2d(32, 64, 3),
                          fc.ReLU(), fc.MaxPool2d(2), fc.Flatten(), fc.Linear(64 * 5 * 5, 10))
    x = np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)
    model(x)
    assert _cached_bytes(model) > 2**20  # a training forward keeps its inputs, switches, columns
    model.predict(x)
    assert _cached_bytes(model) == 0 and all(not m._caches for m in model.modules())


def test_frozen_parameter_gets_no_gradient_and_stays_put():
    fc.manual_seed(4)
    model = fc.Sequential(fc.Conv2d(1, 2, 3), fc.ReLU(), fc.Flatten(), fc.Linear(8, 3))
    model[0].weight.requires_grad_(False)
    model[0].bias.requires_grad = False
    before = model[0].weight.data.copy()
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((3, 1, 4, 4)), rng.integers(0, 3, 3)
    _backprop(model, x, y)
    assert model[0].weight.grad is None and model[0].bias.grad is None
    assert model[3].weight.grad is not None
    optim.SGD(model.parameters(), lr=0.5, momentum=0.9).step()
    np.testing.assert_array_equal(model[0].weight.data, before)
    assert "requires_grad=False" in repr(model[0].weight)
