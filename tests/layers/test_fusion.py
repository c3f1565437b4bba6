"""Sequential runs a BatchNorm followed by a ReLU as one pass each way: the same outputs, input
and parameter gradients and running statistics as the two layers run apart (forward bit for bit,
gradients to rounding), in training and eval, nested in blocks; a layer whose computation the
user replaced (subclass or instance attribute) runs as written; a ReLU shared between a fused
and an unfused place backpropagates both."""
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
        L.ReLU(), L.Flatten(), L.Linear(6 * 5 * 5, 8, bias=False, dtype=dtype),
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
    real = container._fuses_relu
    monkeypatch.setattr(container, "_fuses_relu",
                        lambda a, b: calls.append(real(a, b)) or calls[-1])
    got = _run(fused, x)
    assert sum(calls) == 3 * 3  # the three BatchNorm + ReLU pairs, in each of three forwards
    monkeypatch.setattr(container, "_fuses_relu", lambda a, b: False)
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
    monkeypatch.setattr(container, "_fuses_relu", lambda a, b: False)
    want = apart.forward(x), apart.backward(np.sin(np.arange(96.0)).reshape(2, 3, 4, 4))
    for g, w in zip(got, want):
        assert rel_error(g, w) < 1e-12
    for p, q in zip(model.parameters(), apart.parameters()):
        assert rel_error(p.grad, q.grad) < 1e-12
