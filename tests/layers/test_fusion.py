"""Sequential runs a ReLU inside the layer beside it: a BatchNorm before it (one pass each way),
a Residual before it (in the sum of the branches), a MaxPool2d after it (the ReLU on the pooled
values). The same outputs, input and parameter gradients and running statistics as the layers
run apart (forward bit for bit, gradients to rounding), in training and eval, nested in blocks;
a layer whose computation the user replaced (subclass or instance attribute) runs as written,
and a pool that returns its indices is left alone; a ReLU shared between a fused and an unfused
place backpropagates both."""
import copy

import numpy as np
import pytest

import fastconv as fc
from fastconv import layers as L
from fastconv.layers import container

from helpers import DTYPES, rel_error

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def _net(dtype):
    # no bias before a BatchNorm: its gradient is zero but for rounding, so no relative measure
    return L.Sequential(
        L.Conv2d(2, 6, 3, padding=1, bias=False, dtype=dtype), L.BatchNorm2d(6, dtype=dtype),
        L.ReLU(),
        fc.Residual(L.Sequential(L.Conv2d(6, 6, 3, padding=1, bias=False, dtype=dtype),
                                 L.BatchNorm2d(6, dtype=dtype), L.ReLU(),
                                 L.Conv2d(6, 6, 3, padding=1, bias=False, dtype=dtype),
                                 L.BatchNorm2d(6, dtype=dtype))),
        L.ReLU(), L.Conv2d(6, 6, 1, dtype=dtype), L.ReLU(), L.MaxPool2d(2, ceil_mode=True),
        L.Flatten(),
        L.Linear(6 * 3 * 3, 8, bias=False, dtype=dtype),
        L.BatchNorm1d(8, dtype=dtype), L.ReLU(), L.Linear(8, 3, dtype=dtype), input_grad=True)


def _run(model, x, steps=2):
    """Outputs, input gradients, parameter gradients and running statistics of ``steps``
    training steps (SGD between them) and one eval forward."""
    opt = fc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen = []
    for _ in range(steps):
        opt.zero_grad()
        out = model.forward(x)
        dx = model.backward(np.cos(out))
        seen += [out, dx] + [p.grad.copy() for p in model.parameters()]
        opt.step()
    seen += [b.copy() for n, b in model.named_buffers() if "running" in n]
    model.eval()
    seen.append(model.forward(x))
    model.train()
    return seen


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_network_matches_the_layers_run_apart(dtype, monkeypatch):
    fused = _net(dtype)
    apart = copy.deepcopy(fused)
    x = np.random.default_rng(0).standard_normal((4, 2, 5, 5)).astype(dtype)
    calls = []
    real = container._runs_relu
    monkeypatch.setattr(container, "_runs_relu",
                        lambda a, b: calls.append(real(a, b)) or calls[-1])
    got = _run(fused, x)
    # three BatchNorm + ReLU pairs, a Residual + ReLU and a ReLU + MaxPool2d, in each of three
    # forwards
    hosts = [type(h).__name__ for h in calls if h is not None]
    assert hosts.count("BatchNorm2d") == 2 * 3 and hosts.count("BatchNorm1d") == 3
    assert hosts.count("Residual") == 3 and hosts.count("MaxPool2d") == 3
    monkeypatch.setattr(container, "_runs_relu", lambda a, b: None)
    want = _run(apart, x)
    np.testing.assert_array_equal(got[0], want[0])  # the first forward: same arithmetic
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.dtype(dtype) and g.shape == w.shape
        assert rel_error(g, w) < RTOL[np.dtype(dtype)], i


class CountingBatchNorm(L.BatchNorm2d):
    calls = 0

    def forward(self, x):
        CountingBatchNorm.calls += 1
        return super().forward(x)


def test_a_replaced_layer_runs_as_written():
    bn, relu = CountingBatchNorm(3), L.ReLU()
    model = L.Sequential(bn, relu, L.BatchNorm2d(3), L.ReLU())
    patched = []
    model[3].forward = lambda x, _f=model[3].forward: patched.append(1) or _f(x)
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    out = model.forward(x)
    assert CountingBatchNorm.calls == 1 and patched == [1]
    assert out.min() == 0
    model.backward(np.ones_like(out))
    assert model[0].weight.grad is not None and model[2].weight.grad is not None


def test_a_relu_shared_by_a_fused_and_an_unfused_place(monkeypatch):
    relu = L.ReLU()
    model = L.Sequential(L.BatchNorm2d(3, dtype=np.float64), relu,
                         L.Conv2d(3, 3, 1, dtype=np.float64), relu, input_grad=True)
    apart = copy.deepcopy(model)
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4))
    got = model.forward(x), model.backward(np.sin(np.arange(96.0)).reshape(2, 3, 4, 4))
    monkeypatch.setattr(container, "_runs_relu", lambda a, b: None)
    want = apart.forward(x), apart.backward(np.sin(np.arange(96.0)).reshape(2, 3, 4, 4))
    for g, w in zip(got, want):
        assert rel_error(g, w) < 1e-12
    for p, q in zip(model.parameters(), apart.parameters()):
        assert rel_error(p.grad, q.grad) < 1e-12


def test_max_pool_after_relu_routes_like_the_layers_apart(monkeypatch):
    """Windows of negatives only (all zeros after the ReLU: PyTorch routes to the first, the
    pooled pixel is the true maximum; both give a zero gradient), ties, padding and ceil_mode."""
    x = np.array([[[[-1.0, -2.0, 3.0, 3.0, -1.0],
                    [-4.0, -0.5, 3.0, 1.0, 2.0],
                    [0.0, -1.0, -2.0, -3.0, 5.0],
                    [0.0, 0.0, 7.0, -1.0, -1.0]]]])
    dy_seed = np.random.default_rng(4)
    for pool in (L.MaxPool2d(2), L.MaxPool2d(2, ceil_mode=True), L.MaxPool2d(3, 1, padding=1)):
        fused = L.Sequential(L.ReLU(), pool, input_grad=True)
        out = fused.forward(x)
        dy = dy_seed.standard_normal(out.shape)
        dx = fused.backward(dy)
        with monkeypatch.context() as m:
            m.setattr(container, "_runs_relu", lambda a, b: None)
            apart = L.Sequential(L.ReLU(), copy.deepcopy(pool), input_grad=True)
            np.testing.assert_array_equal(out, apart.forward(x))
            np.testing.assert_array_equal(dx, apart.backward(dy))


def test_a_pool_returning_indices_is_not_fused():
    model = L.Sequential(L.ReLU(), L.MaxPool2d(2, return_indices=True))
    x = -np.ones((1, 1, 2, 2), np.float32)
    x[0, 0, 1, 1] = -0.5
    out, idx = model.forward(x)
    assert out.ravel().tolist() == [0.0] and idx.ravel().tolist() == [0]  # PyTorch's index


@pytest.mark.parametrize("shortcut", [False, True])
def test_residual_then_relu_matches_the_layers_apart(shortcut, monkeypatch):
    """The sum and its ReLU in one pass: the same output (bit for bit; zeros where the sum is
    negative, NaN kept) and gradients as Residual then ReLU, sums exactly zero included (ReLU's
    gradient there is 0, as PyTorch's), with the identity shortcut and a projection."""
    rng = np.random.default_rng(6)
    body = L.Sequential(L.Conv2d(3, 3, 3, padding=1, dtype=np.float64), L.ReLU())
    proj = L.Conv2d(3, 3, 1, dtype=np.float64) if shortcut else None
    model = L.Sequential(fc.Residual(body, proj), L.ReLU(), input_grad=True)
    assert container._runs_relu(model[0], model[1]) is model[0]
    apart = copy.deepcopy(model)
    x = rng.standard_normal((2, 3, 5, 5))
    x[0, :, 0, 0] = np.nan
    dy = rng.standard_normal((2, 3, 5, 5))
    out = model.forward(x)
    assert np.isnan(out[0, :, 0, 0]).all() and (out[~np.isnan(out)] >= 0).all()
    assert (out == 0).any()
    dx = model.backward(dy)
    monkeypatch.setattr(container, "_runs_relu", lambda a, b: None)
    np.testing.assert_array_equal(out, apart.forward(x))
    np.testing.assert_array_equal(dx, apart.backward(dy))
    for p, q in zip(model.parameters(), apart.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)


def test_a_residual_sum_of_exact_zero_has_no_gradient():
    """x + (-x) is exactly 0: the fused ReLU passes no gradient there, as ReLU alone."""
    neg = L.Conv2d(1, 1, 1, bias=False, dtype=np.float64)
    neg.weight.data[...] = -1.0
    model = L.Sequential(fc.Residual(neg), L.ReLU(), input_grad=True)
    x = np.arange(-2.0, 2.0).reshape(1, 1, 2, 2)
    out = model.forward(x)
    assert (out == 0).all()
    assert (model.backward(np.ones_like(out)) == 0).all()
    assert neg.weight.grad.item() == 0
