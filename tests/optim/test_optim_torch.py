"""Every optimizer against torch.optim step by step, and the l1 / max_norm regularisers.

Each comparison runs fastconv and torch side by side on the same parameters and gradients for
``STEPS`` steps and compares every parameter after every step (one parameter sometimes has no
gradient, one never has). The regularisers have no PyTorch equivalent: torch is given the
gradient ``g + l1 * sign(p)`` by hand, and ``torch.renorm(p, 2, 0, max_norm)`` after its step.
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fastconv.optim import SGD, Adagrad, Adam, AdamW, RMSprop, adagrad_update, rmsprop_update
from helpers import HYPOTHESIS
from test_optim import Float32Only

OURS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW, "RMSprop": RMSprop, "Adagrad": Adagrad}
STEPS = 12
#: (optimizer, kwargs): each feature of each optimizer, weight decay, momentum and the
#: second branch of torch's lerp (weight >= 0.5) included.
CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.05)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("AdamW", dict(lr=0.02, betas=(0.3, 0.9), weight_decay=0.05, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.0)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.005, centered=True)),
    ("RMSprop", dict(lr=0.005, alpha=0.3, momentum=0.5, centered=True, weight_decay=0.01)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5,
                     eps=1e-6)),
]
TOL = {np.float64: dict(rtol=1e-13, atol=1e-15), np.float32: dict(rtol=2e-5, atol=1e-6)}


def P(values, dtype=np.float64):
    """Stand-in for fastconv.Parameter: only .data and .grad are used."""
    return SimpleNamespace(data=np.array(values, dtype=dtype), grad=None)


def _pair(name, kwargs, dtype, shapes=((3, 4), (5,), (2, 3, 2), (2,)), seed=42, ours_kw=None):
    rng = np.random.default_rng(seed)
    params = [P(rng.standard_normal(s), dtype) for s in shapes]
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    opt = OURS[name](params, **kwargs, **(ours_kw or {}))
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    return rng, params, tparams, opt, topt


def _grads(rng, params, tparams, step, tgrad=lambda g, tp: g):
    """New gradients; params[1] skips step 2 and the last parameter never has one."""
    for i, (p, tp) in enumerate(zip(params, tparams)):
        if i == len(params) - 1 or (i == 1 and step == 2):
            p.grad, tp.grad = None, None
            continue
        g = rng.standard_normal(p.data.shape).astype(p.data.dtype)
        p.grad = g
        tp.grad = tgrad(torch.tensor(g.copy()), tp)


def _compare(params, tparams, dtype, step, tol=None):
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, tp.detach().numpy(), **(tol or TOL[dtype]),
                                   err_msg=f"param {i} after step {step}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_matches_torch_every_step(name, kwargs, dtype):
    rng, params, tparams, opt, topt = _pair(name, kwargs, dtype)
    untouched = params[-1].data.copy()
    for step in range(STEPS):
        _grads(rng, params, tparams, step)
        opt.step()
        topt.step()
        _compare(params, tparams, dtype, step)
    np.testing.assert_array_equal(params[-1].data, untouched)
    assert id(params[-1]) not in opt.state
    tstate = topt.state[tparams[0]]
    for key, value in opt.state.get(id(params[0]), {}).items():  # same state names and values
        want = tstate[key]
        want = want.item() if want.ndim == 0 else want.numpy()
        np.testing.assert_allclose(value, want, **TOL[dtype], err_msg=key)


@pytest.mark.parametrize("name, kwargs", [
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, momentum=0.9, centered=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
])
def test_param_groups_and_lr_changes_match_torch(name, kwargs):
    """Two groups with their own hyper-parameters, and lr changed between steps."""
    rng = np.random.default_rng(5)
    a, b = P(rng.standard_normal((4, 3))), P(rng.standard_normal(6))
    ta, tb = (torch.tensor(p.data.copy(), requires_grad=True) for p in (a, b))
    other = dict(lr=0.003, weight_decay=0.02)
    opt = OURS[name]([{"params": [a]}, {"params": [b], **other}], **kwargs)
    topt = getattr(torch.optim, name)([{"params": [ta]}, {"params": [tb], **other}], **kwargs)
    for step in range(8):
        for p, tp in ((a, ta), (b, tb)):
            p.grad = rng.standard_normal(p.data.shape)
            tp.grad = torch.tensor(p.grad.copy())
        opt.step()
        topt.step()
        for group, tgroup in zip(opt.param_groups, topt.param_groups):
            group["lr"] = tgroup["lr"] = tgroup["lr"] * 0.9
        _compare([a, b], [ta, tb], np.float64, step)


def test_adagrad_hand_computed():
    p = P([1.0, -2.0])
    opt = Adagrad([p], lr=0.1, lr_decay=0.5, initial_accumulator_value=1.0, eps=0.0)
    expected, s = p.data.copy(), np.ones(2)
    for step, g in enumerate([np.array([3.0, 4.0]), np.array([1.0, -1.0])], start=1):
        p.grad = g.copy()
        opt.step()
        s = s + g * g
        expected = expected - 0.1 / (1 + (step - 1) * 0.5) * g / np.sqrt(s)
    np.testing.assert_allclose(p.data, expected, rtol=1e-15)
    assert opt.state[id(p)]["step"] == 2


def test_rmsprop_centered_momentum_hand_computed():
    p = P([1.0, 2.0])
    opt = RMSprop([p], lr=0.1, alpha=0.5, eps=0.0, momentum=0.5, centered=True)
    x, v, m, buf = p.data.copy(), np.zeros(2), np.zeros(2), np.zeros(2)
    for g in (np.array([1.0, -2.0]), np.array([3.0, 1.0])):
        p.grad = g.copy()
        opt.step()
        v = 0.5 * v + 0.5 * g * g
        m = 0.5 * m + 0.5 * g
        buf = 0.5 * buf + g / np.sqrt(v - m * m)
        x = x - 0.1 * buf
    np.testing.assert_allclose(p.data, x, rtol=1e-15)


def test_adamw_decay_is_decoupled():
    """A zero gradient: Adam's update is 0, so AdamW only decays; Adam's L2 moves the moments."""
    p, q = P([2.0, -4.0]), P([2.0, -4.0])
    opt, l2 = AdamW([p], lr=0.1, weight_decay=0.5), Adam([q], lr=0.1, weight_decay=0.5)
    p.grad, q.grad = np.zeros(2), np.zeros(2)
    opt.step()
    l2.step()
    np.testing.assert_array_equal(p.data, [2.0 * 0.95, -4.0 * 0.95])
    assert not opt.state[id(p)]["exp_avg"].any() and l2.state[id(q)]["exp_avg"].all()
    assert AdamW([P([1.0])]).param_groups[0]["weight_decay"] == 1e-2  # torch's default


# --------------------------------------------------------------------- float32 is kept
@pytest.mark.parametrize("name, kwargs", CONFIGS + [
    ("SGD", dict(lr=0.1, momentum=0.9, l1=0.01, max_norm=1.0)),
    ("RMSprop", dict(centered=True, momentum=0.9, l1=0.01, max_norm=0.5)),
])
def test_float32_no_hidden_upcast(name, kwargs):
    kwargs = dict(kwargs, lr=np.float64(kwargs.get("lr", 1e-3)))  # even with a NumPy scalar lr
    rng = np.random.default_rng(0)
    p = SimpleNamespace(data=rng.standard_normal((3, 4)).astype(np.float32).view(Float32Only))
    data = p.data
    opt = OURS[name]([p], **kwargs)
    for _ in range(3):
        p.grad = rng.standard_normal((3, 4)).astype(np.float32).view(Float32Only)
        opt.step()
    assert p.data is data and p.data.dtype == np.float32
    for v in opt.state.get(id(p), {}).values():
        assert not isinstance(v, np.ndarray) or v.dtype == np.float32


@pytest.mark.parametrize("fn, args", [
    (rmsprop_update, lambda d: (d.copy(), d.copy(), d.copy(), 0.1, 0.9, 1e-8, 0.1, 0.9, True)),
    (adagrad_update, lambda d: (d.copy(), 3, 0.1, 0.01, 0.1, 1e-10)),
])
def test_update_functions_work_in_place_on_views(fn, args):
    """The per-parameter rules write through non-contiguous views."""
    base = np.arange(1.0, 25.0).reshape(4, 6)
    data, grad = base[:, ::2], np.full((4, 3), 0.5)
    ref = data.copy()
    fn(ref, grad, *args(np.ones((4, 3))))
    fn(data, grad, *args(np.ones((4, 3))))
    np.testing.assert_array_equal(base[:, ::2], ref)
    assert not np.array_equal(ref, np.arange(1.0, 25.0).reshape(4, 6)[:, ::2])
    np.testing.assert_array_equal(base[:, 1::2], np.arange(1.0, 25.0).reshape(4, 6)[:, 1::2])


# --------------------------------------------------------------------------- l1 penalty
def test_l1_hand_computed():
    p = P([1.0, -2.0, 0.0])
    opt = SGD([p], lr=0.1, l1=0.5)
    p.grad = np.zeros(3)
    opt.step()
    np.testing.assert_allclose(p.data, [0.95, -1.95, 0.0], rtol=1e-15)
    assert p.grad is not None and not p.grad.any()  # the gradient itself is not changed


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.01)),
    ("AdamW", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Adagrad", dict(lr=0.1)),
])
def test_l1_is_torch_with_the_penalty_gradient(name, kwargs):
    l1 = 0.03
    rng, params, tparams, opt, topt = _pair(name, kwargs, np.float64, ours_kw=dict(l1=l1))
    for step in range(STEPS):
        _grads(rng, params, tparams, step, tgrad=lambda g, tp: g + l1 * torch.sign(tp.detach()))
        opt.step()
        topt.step()
        _compare(params, tparams, np.float64, step)


def test_l1_drives_weights_to_zero_as_lasso():
    """Gradient of 0.5*||p - c||^2 + l1*|p|: the minimiser is soft-thresholding of c."""
    c = np.array([2.0, 0.3, -0.1, -1.5])
    p = P(np.zeros(4))
    opt = SGD([p], lr=0.01, l1=0.5)
    for _ in range(3000):
        p.grad = p.data - c
        opt.step()
    np.testing.assert_allclose(p.data, [1.5, 0.0, 0.0, -1.0], atol=0.01)


# ------------------------------------------------------------------------- max-norm
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", dict(lr=0.5, momentum=0.9)),
    ("Adam", dict(lr=0.2)),
    ("AdamW", dict(lr=0.2, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.1, momentum=0.5)),
    ("Adagrad", dict(lr=0.5)),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_max_norm_is_torch_renorm_after_the_step(name, kwargs, dtype):
    max_norm = 2.0
    rng, params, tparams, opt, topt = _pair(name, kwargs, dtype, ours_kw=dict(max_norm=max_norm))
    tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)
    hit = 0
    for step in range(STEPS):
        _grads(rng, params, tparams, step)
        opt.step()
        topt.step()
        with torch.no_grad():
            for tp in tparams:
                if tp.grad is not None and tp.ndim >= 2:
                    norms = tp.reshape(len(tp), -1).norm(dim=1)
                    hit += int((norms > max_norm).sum())
                    tp.copy_(torch.renorm(tp, 2, 0, max_norm))
        for i, (p, tp) in enumerate(zip(params, tparams)):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), **tol,
                                       err_msg=f"param {i} after step {step}")
    assert hit > 0  # the constraint was active
    w = params[0].data
    assert np.linalg.norm(w.reshape(len(w), -1), axis=1).max() <= max_norm * (1 + 1e-6)


def test_max_norm_rows_and_scope():
    """Only rows above the bound change; 1-D parameters and parameters without grad are left."""
    w = P([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])   # row norms 5, 0.5, 0
    conv = P(np.full((2, 1, 2, 2), 2.0))          # filter norms 4
    b = P([10.0, -10.0])
    idle = P([[30.0, 40.0]])
    opt = SGD([w, conv, b, idle], lr=0.0, max_norm=1.0)
    for p in (w, conv, b):
        p.grad = np.zeros_like(p.data)
    opt.step()
    np.testing.assert_allclose(w.data, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(conv.data, np.full((2, 1, 2, 2), 0.5), rtol=1e-6)
    np.testing.assert_array_equal(b.data, [10.0, -10.0])
    np.testing.assert_array_equal(idle.data, [[30.0, 40.0]])


def test_regulariser_groups_and_state_dict():
    a, b = P([[3.0, 4.0]]), P([[3.0, 4.0]])
    opt = SGD([{"params": [a], "max_norm": 1.0}, {"params": [b], "l1": 0.1}], lr=0.1)
    a.grad, b.grad = np.zeros((1, 2)), np.zeros((1, 2))
    opt.step()
    np.testing.assert_allclose(a.data, [[0.6, 0.8]], rtol=1e-6)
    np.testing.assert_allclose(b.data, [[2.99, 3.99]], rtol=1e-15)
    groups = opt.state_dict()["param_groups"]
    assert (groups[0]["max_norm"], groups[0]["l1"]) == (1.0, 0.0)
    assert (groups[1]["max_norm"], groups[1]["l1"]) == (None, 0.1)
    legacy = opt.state_dict()
    for g in legacy["param_groups"]:  # a checkpoint from before the regularisers existed
        del g["l1"], g["max_norm"]
    fresh = SGD([{"params": [a]}, {"params": [b]}], lr=0.1, l1=0.2)
    fresh.load_state_dict(legacy)  # the values it was built with stay
    assert [(g["l1"], g["max_norm"]) for g in fresh.param_groups] == [(0.2, None)] * 2


# ------------------------------------------------------------------- state dicts, errors
@pytest.mark.parametrize("name, kwargs", [c for c in CONFIGS if c[0] != "SGD"])
def test_state_dict_resume_is_exact(name, kwargs):
    rng = np.random.default_rng(9)
    params = [P(rng.standard_normal((3, 2))), P(rng.standard_normal(4))]
    grads = [[rng.standard_normal(p.data.shape) for p in params] for _ in range(6)]
    opt = OURS[name](params, **kwargs)

    def run(opt, ps, gs):
        for g in gs:
            for p, gi in zip(ps, g):
                p.grad = gi.copy()
            opt.step()

    run(opt, params, grads[:3])
    params2 = [P(p.data.copy()) for p in params]
    opt2 = OURS[name](params2, lr=0.5)
    opt2.load_state_dict(opt.state_dict())
    run(opt, params, grads[3:])
    run(opt2, params2, grads[3:])
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("make, match", [
    (lambda p: AdamW(p, lr=-1), "learning rate"),
    (lambda p: AdamW(p, weight_decay=-1), "weight_decay"),
    (lambda p: AdamW(p, betas=(0.9, 1.0)), "index 1"),
    (lambda p: RMSprop(p, lr=-1), "learning rate"),
    (lambda p: RMSprop(p, eps=-1), "epsilon"),
    (lambda p: RMSprop(p, momentum=-1), "momentum"),
    (lambda p: RMSprop(p, alpha=-1), "alpha"),
    (lambda p: RMSprop(p, weight_decay=-1), "weight_decay"),
    (lambda p: Adagrad(p, lr=-1), "learning rate"),
    (lambda p: Adagrad(p, lr_decay=-1), "lr_decay"),
    (lambda p: Adagrad(p, initial_accumulator_value=-1), "initial_accumulator_value"),
    (lambda p: Adagrad(p, eps=-1), "epsilon"),
    (lambda p: Adagrad(p, weight_decay=-1), "weight_decay"),
    (lambda p: SGD(p, l1=-0.1), "l1"),
    (lambda p: Adam(p, max_norm=0.0), "max_norm"),
    (lambda p: RMSprop([{"params": p, "max_norm": -1.0}]), "max_norm"),
])
def test_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make([P([1.0])])


def test_sgd_signature_is_torchs():
    p = P([1.0])
    opt = SGD([p], 0.1, 0.9, 0.0, 0.01, True)  # lr, momentum, dampening, weight_decay, nesterov
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["dampening"], g["weight_decay"], g["nesterov"]) == \
        (0.1, 0.9, 0.0, 0.01, True)
    assert SGD([p]).param_groups[0]["lr"] == 1e-3


# ---------------------------------------------------------------- random hyper-parameters
@st.composite
def _settings(draw):
    name = draw(st.sampled_from(sorted(OURS)))
    unit = st.floats(0.0, 0.99)
    kw = dict(lr=draw(st.floats(1e-4, 0.5)), weight_decay=draw(st.sampled_from([0.0, 0.01, 0.3])))
    if name == "SGD":
        kw.update(momentum=draw(unit), nesterov=draw(st.booleans()))
        if not kw["nesterov"]:
            kw["dampening"] = draw(unit)
        elif kw["momentum"] == 0:
            kw["momentum"] = 0.5
    elif name in ("Adam", "AdamW"):
        kw.update(betas=(draw(unit), draw(unit)), eps=draw(st.sampled_from([1e-8, 1e-3])),
                  amsgrad=draw(st.booleans()))
    elif name == "RMSprop":
        # Centered RMSprop divides by sqrt(E[g^2] - E[g]^2): with alpha near 0 both terms are
        # g^2 and the difference is rounding noise (torch gets NaN, fastconv 0, or either a
        # random 1e7 step), so the centered draws keep alpha where the variance is well defined.
        centered = draw(st.booleans())
        kw.update(alpha=draw(st.floats(0.1, 0.99) if centered else unit), centered=centered,
                  momentum=draw(st.sampled_from([0.0, draw(unit)])),
                  eps=draw(st.sampled_from([1e-8, 1e-2])))
    else:
        kw.update(lr_decay=draw(st.sampled_from([0.0, 0.1])),
                  eps=draw(st.sampled_from([1e-10, 1e-2])),
                  initial_accumulator_value=draw(st.sampled_from([0.0, 0.1])))
    shapes = draw(st.lists(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
                           min_size=2, max_size=3))
    return name, kw, shapes, draw(st.integers(0, 2**16))


#: Random settings reach ill-conditioned steps (a centered RMSprop variance that is small next to
#: E[g^2] amplifies the last-bit differences of the two orders of operations ~1e3 times), so
#: this test allows 1e-10: still far below any wrong formula's error.
RANDOM_TOL = dict(rtol=1e-10, atol=1e-12)


@HYPOTHESIS
@given(_settings())
def test_random_settings_match_torch(setting):
    name, kwargs, shapes, seed = setting
    rng, params, tparams, opt, topt = _pair(name, kwargs, np.float64, shapes=shapes, seed=seed)
    for step in range(4):
        _grads(rng, params, tparams, step)
        opt.step()
        topt.step()
        _compare(params, tparams, np.float64, step, RANDOM_TOL)
