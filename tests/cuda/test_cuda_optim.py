"""The new optimizers, regularisers, clipping and initialisers with parameters on the cuda device.

Runs on Numba's CUDA simulator (tests/conftest.py): tiny shapes. AdamW runs on the device (the
tier's ``axpby`` then ``adam_update``), RMSprop and Adagrad on their own kernels; options without
a cuda-tier kernel (l1, max_norm) refuse device parameters with NotImplementedError before changing
anything.
"""
import numpy as np
import pytest

import fastconv as fc
from fastconv import init
from fastconv.optim import SGD, Adagrad, Adam, AdamW, RMSprop
from fastconv.utils import clip_grad_norm_, clip_grad_value_

pytestmark = [pytest.mark.cuda,
              pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]


def _params(G, dtype, seed=0):
    rng = np.random.default_rng(seed)
    host = [fc.Parameter(rng.standard_normal(s).astype(dtype)) for s in ((3, 4), (5,))]
    dev = [fc.Parameter(fc.to_device(p.data.copy())) for p in host]
    return rng, host, dev


def _grads(rng, host, dev):
    for p, q in zip(host, dev):
        p.grad = rng.standard_normal(p.data.shape).astype(p.data.dtype)
        q.grad = fc.to_device(p.grad.copy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [dict(lr=0.01, weight_decay=0.1),
                                    dict(lr=0.02, betas=(0.3, 0.9), amsgrad=True)])
def test_adamw_on_the_device_matches_the_host(G, close, dtype, kwargs):
    rng, host, dev = _params(G, dtype)
    opt, dopt = AdamW(host, **kwargs), AdamW(dev, **kwargs)
    for _ in range(3):
        _grads(rng, host, dev)
        opt.step()
        dopt.step()
    for p, q in zip(host, dev):
        close("adamw data", q.data, p.data, exact=True)
    assert all(fc._backend.is_device_array(v) for s in dopt.state.values()
               for v in s.values() if not isinstance(v, int))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [
    lambda ps: RMSprop(ps),
    lambda ps: RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.1),
    lambda ps: RMSprop(ps, lr=0.01, momentum=0.9),
    lambda ps: RMSprop(ps, lr=0.005, alpha=0.3, momentum=0.5, centered=True, weight_decay=0.01),
    lambda ps: RMSprop(ps, lr=0.005, alpha=0.9, centered=True),
    lambda ps: Adagrad(ps),
    lambda ps: Adagrad(ps, lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5),
])
def test_rmsprop_and_adagrad_on_the_device_match_the_host(G, close, dtype, make):
    """The device kernels do the host rule's operations in its order: the same bits (simulator)."""
    rng, host, dev = _params(G, dtype, seed=5)
    opt, dopt = make(host), make(dev)
    for _ in range(3):
        _grads(rng, host, dev)
        opt.step()
        dopt.step()
    for p, q in zip(host, dev):
        close("rmsprop/adagrad data", q.data, p.data, exact=True)
    for key, state in opt.state.items():
        dstate = dopt.state[id(dev[[id(p) for p in host].index(key)])]
        assert sorted(state) == sorted(dstate)
        for name, value in state.items():
            if isinstance(value, np.ndarray):
                assert fc._backend.is_device_array(dstate[name]), name
                close(f"state {name}", dstate[name], value, exact=True)
            else:
                assert dstate[name] == value


@pytest.mark.parametrize("make, match", [
    (lambda ps: RMSprop(ps, l1=0.01), "l1"),
    (lambda ps: Adagrad(ps, max_norm=1.0), "max_norm"),
    (lambda ps: SGD(ps, lr=0.1, l1=0.01), "l1"),
    (lambda ps: Adam(ps, max_norm=1.0), "max_norm"),
])
def test_unsupported_on_the_device_refuses_before_any_change(G, make, match):
    rng, host, dev = _params(G, np.float32)
    before = [fc.to_numpy(q.data).copy() for q in dev]
    host_first = [host[0], dev[1]]  # a host parameter first: it must not be updated either
    _grads(rng, host, dev)
    opt = make(host_first)
    with pytest.raises(NotImplementedError, match=match):
        opt.step()
    np.testing.assert_array_equal(fc.to_numpy(dev[1].data), before[1])
    assert not opt.state


def test_clipping_device_gradients(G, close):
    rng, host, dev = _params(G, np.float32, seed=3)
    _grads(rng, host, dev)
    total, dtotal = clip_grad_norm_(host, 0.5), clip_grad_norm_(dev, 0.5)
    assert dtotal == pytest.approx(total, rel=1e-6)
    for p, q in zip(host, dev):
        assert fc._backend.is_device_array(q.grad)
        close("clipped grad", q.grad, p.grad)
    clip_grad_value_(host, 0.01)
    clip_grad_value_(dev, 0.01)
    for p, q in zip(host, dev):
        close("clamped grad", q.grad, p.grad, exact=True)


def test_init_fills_a_device_parameter(G):
    p = fc.Parameter(fc.to_device(np.zeros((4, 6), np.float32)))
    data = p.data
    assert init.orthogonal_(p, generator=2) is p and p.data is data
    w = fc.to_numpy(p.data)
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-6)
    np.testing.assert_array_equal(w, init.orthogonal_(np.zeros((4, 6), np.float32), generator=2))
