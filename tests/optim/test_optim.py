from types import SimpleNamespace

import numpy as np
import pytest

import fastconv as fc
from fastconv.optim import (SGD, Adagrad, Adam, AdamW, ReduceLROnPlateau, RMSprop, StepLR,
                            flatten_state, unflatten_state)


def P(values, dtype=np.float64):
    """Stand-in for fastconv.Parameter: only .data and .grad are used."""
    return SimpleNamespace(data=np.array(values, dtype=dtype), grad=None)


def run(opt, params, grads):
    for g in grads:
        params[0].grad = np.array(g, dtype=params[0].data.dtype)
        opt.step()
    return params[0].data


G1, G2 = [0.5, -1.0], [1.0, 1.0]


# ---------------------------------------------------------------- SGD, by hand
@pytest.mark.parametrize("kwargs, grads, expected", [
    (dict(), [G1], [0.95, 2.1]),
    (dict(weight_decay=0.1), [G1], [0.94, 2.08]),
    (dict(momentum=0.9), [G1, G2], [0.805, 2.09]),
    (dict(momentum=0.9, dampening=0.5), [G1, G2], [0.855, 2.14]),
    (dict(momentum=0.9, nesterov=True), [G1], [0.905, 2.19]),
    (dict(momentum=0.9, nesterov=True), [G1, G2], [0.6745, 2.081]),
])
def test_sgd_hand_computed(kwargs, grads, expected):
    p = P([1.0, 2.0])
    data = p.data
    out = run(SGD([p], lr=0.1, **kwargs), [p], grads)
    assert out is data  # updated in place, never rebound
    np.testing.assert_allclose(out, expected, rtol=1e-14)


# --------------------------------------------------------------- Adam, by hand
def test_adam_first_step_is_signed_lr():
    p = P([1.0, 2.0])
    run(Adam([p], lr=0.1), [p], [G1])
    np.testing.assert_allclose(p.data, [1 - 0.1 * 0.5 / (0.5 + 1e-8),
                                        2 + 0.1 * 1.0 / (1.0 + 1e-8)], rtol=1e-15)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_two_steps_hand_computed(amsgrad, wd):
    g1, g2 = np.array([2.0, -2.0]), np.array([0.01, 0.01])  # v shrinks on step 2
    p = P([1.0, 2.0])
    opt = Adam([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd, amsgrad=amsgrad)
    x = p.data.copy()
    m = v = vmax = np.zeros(2)
    for t, g in enumerate([g1, g2], start=1):
        p.grad = g.copy()
        opt.step()
        g = g + wd * x
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        vmax = np.maximum(vmax, v)
        vv = vmax if amsgrad else v
        x = x - 0.1 / (1 - 0.9 ** t) * m / (np.sqrt(vv) / np.sqrt(1 - 0.999 ** t) + 1e-8)
    np.testing.assert_allclose(p.data, x, rtol=1e-13)
    st = opt.state[id(p)]
    assert st["step"] == 2
    if amsgrad and wd == 0:  # v shrank, the max kept step 1's value
        assert np.all(st["max_exp_avg_sq"] > st["exp_avg_sq"])
    if not amsgrad:
        assert "max_exp_avg_sq" not in st


# ---------------------------------------------------------- against torch.optim
CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("Adam", dict(lr=0.02, betas=(0.3, 0.9), amsgrad=True)),  # lerp weight >= 0.5
    ("Adam", dict(lr=0.02, amsgrad=True, weight_decay=0.05)),
]
OURS = {"SGD": SGD, "Adam": Adam}


def _torch_compare(name, kwargs, dtype, rtol, atol):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(42)
    shapes = [(3, 4), (5,), (2,)]
    params = [P(rng.standard_normal(s), dtype) for s in shapes]
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    opt = OURS[name](params, **kwargs)
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    for step in range(5):
        for i, (p, tp) in enumerate(zip(params, tparams)):
            if i == 2 or (i == 1 and step == 2):  # grad None: skipped
                p.grad, tp.grad = None, None
                continue
            g = rng.standard_normal(p.data.shape).astype(dtype)
            p.grad, tp.grad = g, torch.tensor(g.copy())
        opt.step()
        topt.step()
    for p, tp in zip(params, tparams):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=rtol, atol=atol)
    assert id(params[2]) not in opt.state


@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_matches_torch_float64(name, kwargs):
    _torch_compare(name, kwargs, np.float64, 1e-13, 1e-15)


@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_matches_torch_float32(name, kwargs):
    _torch_compare(name, kwargs, np.float32, 1e-5, 1e-6)


# ------------------------------------------------------------ float32 is kept
class Float32Only(np.ndarray):
    """Fails any ufunc fed float64 arrays or NumPy float64 scalars."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = lambda xs: tuple(np.asarray(x) if isinstance(x, Float32Only) else x for x in xs)
        inputs = plain(inputs)
        for x in inputs:
            assert not isinstance(x, np.generic) or x.dtype != np.float64, ufunc
            assert not isinstance(x, np.ndarray) or x.dtype == np.float32, (ufunc, x.dtype)
        outs = kwargs.get("out")
        if outs:
            kwargs["out"] = plain(outs)
        res = getattr(ufunc, method)(*inputs, **kwargs)
        if outs:
            return outs[0] if len(outs) == 1 else outs
        assert res.dtype == np.float32, ufunc
        return res.view(Float32Only)


@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_float32_no_hidden_upcast(name, kwargs):
    kwargs = dict(kwargs, lr=np.float64(kwargs["lr"]))  # even with a NumPy scalar lr
    rng = np.random.default_rng(0)
    p = SimpleNamespace(data=rng.standard_normal(6).astype(np.float32).view(Float32Only))
    data = p.data
    opt = OURS[name]([p], **kwargs)
    for _ in range(3):
        p.grad = rng.standard_normal(6).astype(np.float32).view(Float32Only)
        opt.step()
    assert p.data is data and p.data.dtype == np.float32
    for v in opt.state.get(id(p), {}).values():
        assert not isinstance(v, np.ndarray) or v.dtype == np.float32


# -------------------------------------------------------------- state dicts
@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: Adam(ps, lr=0.01, amsgrad=True, weight_decay=0.01),
])
def test_state_dict_roundtrip_npz(tmp_path, make):
    rng = np.random.default_rng(3)
    params = [P(rng.standard_normal((2, 3))), P(rng.standard_normal(4), np.float32)]
    grads = [[rng.standard_normal(p.data.shape).astype(p.data.dtype) for p in params]
             for _ in range(6)]
    opt = make(params)
    sched = ReduceLROnPlateau(opt, patience=0, factor=0.5)

    def steps(opt, ps, gs, sched):
        for g, metric in zip(gs, [3.0, 2.0, 2.5]):
            for p, gi in zip(ps, g):
                p.grad = gi.copy()
            opt.step()
            sched.step(metric)

    steps(opt, params, grads[:3], sched)
    flat = flatten_state(opt.state_dict(), prefix="optim.")
    flat.update(flatten_state(sched.state_dict(), prefix="sched."))
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in flat.items())
    np.savez(tmp_path / "ckpt.npz", **flat)

    params2 = [P(p.data.copy(), p.data.dtype) for p in params]
    opt2 = make(params2)
    sched2 = ReduceLROnPlateau(opt2)
    with np.load(tmp_path / "ckpt.npz") as z:
        sd = unflatten_state(z, prefix="optim.")
        opt2.load_state_dict(sd)
        sched2.load_state_dict(unflatten_state(z, prefix="sched."))
    _eq_helper(opt.state_dict(), sd)
    assert opt2.lr == opt.lr and sched2.best == 2.0
    assert sched2.state_dict() == sched.state_dict()

    steps(opt, params, grads[3:], sched)
    steps(opt2, params2, grads[3:], sched2)
    for a, b in zip(params, params2):
        assert a.data.dtype == b.data.dtype
        np.testing.assert_array_equal(a.data, b.data)
    assert opt.lr == opt2.lr


def _eq_helper(a, b):
    """Return ``b`` if nested ``a`` and ``b`` are identical (types included)."""
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _eq_helper(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _eq_helper(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b
    return b


def test_flatten_exact_types():
    d = {"a": 1, "b": 2.5, "c": True, "d": None, "e": "min", 3: (1.0, 2), "f": [float("inf")],
         "g": np.float32(1.5), "h": {"x": np.arange(3, dtype=np.int16)}, "i": float("-inf")}
    back = unflatten_state(flatten_state(d))
    _eq_helper(d, back)
    assert back["g"].dtype == np.float32
    with pytest.raises(TypeError):
        flatten_state({"a": object()})


def test_state_dict_is_a_copy_and_validates():
    p = P([1.0, 2.0])
    opt = SGD([p], lr=0.1, momentum=0.9)
    run(opt, [p], [G1])
    sd = opt.state_dict()
    sd["state"][0]["momentum_buffer"][:] = 99
    assert opt.state[id(p)]["momentum_buffer"][0] == 0.5
    sd["state"][0]["momentum_buffer"] = np.zeros(3)
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(sd)


# ------------------------------------------------------ groups, zero_grad, errs
def test_param_groups_and_lr_property():
    a, b = P([1.0]), P([1.0])
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1, momentum=0.9)
    assert opt.lr == 0.1 and opt.param_groups[1]["lr"] == 0.5
    assert opt.param_groups[1]["momentum"] == 0.9
    a.grad, b.grad = np.ones(1), np.ones(1)
    opt.step()
    np.testing.assert_allclose([a.data[0], b.data[0]], [0.9, 0.5])
    assert opt.state_dict()["param_groups"][1]["params"] == [1]
    opt.lr = 0.01
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]


def test_zero_grad():
    p = P([1.0, 2.0])
    opt = SGD([p], lr=0.1)
    p.grad = np.ones(2)
    g = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and not g.any()
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # grad None: skipped
    np.testing.assert_array_equal(p.data, [1.0, 2.0])


@pytest.mark.parametrize("make, match", [
    (lambda p: SGD(p, lr=-0.1), "learning rate"),
    (lambda p: SGD(p, lr=0.1, momentum=-1), "momentum"),
    (lambda p: SGD(p, lr=0.1, weight_decay=-1), "weight_decay"),
    (lambda p: SGD(p, lr=0.1, nesterov=True), "Nesterov"),
    (lambda p: SGD(p, lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda p: Adam(p, lr=-1), "learning rate"),
    (lambda p: Adam(p, eps=-1), "epsilon"),
    (lambda p: Adam(p, betas=(1.0, 0.9)), "index 0"),
    (lambda p: Adam(p, betas=(0.9, -0.1)), "index 1"),
    (lambda p: Adam(p, weight_decay=-1), "weight_decay"),
    (lambda p: SGD([], lr=0.1), "empty"),
    (lambda p: SGD(p + p, lr=0.1), "more than once"),
    (lambda p: StepLR(SGD(p, lr=0.1), step_size=0), "step_size"),
    (lambda p: ReduceLROnPlateau(SGD(p, lr=0.1), factor=1.0), "Factor"),
    (lambda p: ReduceLROnPlateau(SGD(p, lr=0.1), mode="avg"), "mode"),
    (lambda p: ReduceLROnPlateau(SGD(p, lr=0.1), threshold_mode="x"), "threshold mode"),
])
def test_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make([P([1.0])])


def test_grad_shape_mismatch():
    p = P([1.0, 2.0])
    p.grad = np.ones(3)
    with pytest.raises(ValueError, match="shape"):
        SGD([p], lr=0.1).step()


# --------------------------------------------------------------- schedulers
def test_steplr_hand_sequence():
    opt = SGD([P([1.0])], lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    assert sched.get_last_lr() == [1.0]
    seq = []
    for _ in range(6):
        sched.step()
        seq.append(sched.get_last_lr()[0])
    assert seq == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    assert opt.lr == 0.125 and opt.param_groups[0]["initial_lr"] == 1.0


def test_plateau_hand_sequence():
    opt = SGD([P([1.0])], lr=1.0)
    sched = ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1)
    seq = []
    for m in [1, 1, 1, 1, 1, 0.5, 0.5, 0.5]:
        sched.step(m)
        seq.append(sched.get_last_lr()[0])
    assert seq == [1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25]


def test_steplr_matches_torch():
    torch = pytest.importorskip("torch")
    opt = SGD([P([1.0])], lr=0.3)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    sched, tsched = StepLR(opt, 3, gamma=0.7), torch.optim.lr_scheduler.StepLR(topt, 3, gamma=0.7)
    for _ in range(12):
        assert sched.get_last_lr() == tsched.get_last_lr()
        topt.step()  # no grads: no-op, keeps torch's call-order check quiet
        sched.step()
        tsched.step()
    assert opt.lr == topt.param_groups[0]["lr"]


@pytest.mark.parametrize("kwargs", [
    dict(),
    dict(patience=2, factor=0.5),
    dict(mode="max", threshold_mode="abs", threshold=0.05, patience=1),
    dict(mode="max", patience=0, cooldown=2, factor=0.3),
    dict(patience=1, threshold=0.1, threshold_mode="abs", min_lr=0.02, factor=0.5),
    dict(patience=0, factor=0.5, min_lr=0.099, eps=1e-3),
])
def test_plateau_matches_torch(kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    metrics = np.concatenate([np.linspace(1, 0.5, 5), np.full(15, 0.5),
                              0.5 + 0.05 * rng.standard_normal(20)])
    opt = SGD([P([1.0])], lr=0.1)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = ReduceLROnPlateau(opt, **kwargs)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    for m in metrics:
        sched.step(m)
        tsched.step(m)
        assert sched.get_last_lr() == tsched.get_last_lr()
        assert sched.num_bad_epochs == tsched.num_bad_epochs
    assert opt.lr == topt.param_groups[0]["lr"]


# --- the cuda tier (Numba's simulator, tiny shapes): device parameters against host ones -------
# AdamW runs on the device (the tier's ``axpby`` then ``adam_update``), RMSprop and Adagrad on their
# own kernels; options without a cuda-tier kernel (l1, max_norm) refuse device parameters with
# NotImplementedError before changing anything.

def device_params(G, dtype, seed=0):
    rng = np.random.default_rng(seed)
    host = [fc.Parameter(rng.standard_normal(s).astype(dtype)) for s in ((3, 4), (5,))]
    dev = [fc.Parameter(fc.to_device(p.data.copy())) for p in host]
    return rng, host, dev


def device_grads(rng, host, dev):
    for p, q in zip(host, dev):
        p.grad = rng.standard_normal(p.data.shape).astype(p.data.dtype)
        q.grad = fc.to_device(p.grad.copy())


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [dict(lr=0.01, weight_decay=0.1),
                                    dict(lr=0.02, betas=(0.3, 0.9), amsgrad=True)])
def test_adamw_on_the_device_matches_the_host(G, close, dtype, kwargs):
    rng, host, dev = device_params(G, dtype)
    opt, dopt = AdamW(host, **kwargs), AdamW(dev, **kwargs)
    for _ in range(3):
        device_grads(rng, host, dev)
        opt.step()
        dopt.step()
    for p, q in zip(host, dev):
        close("adamw data", q.data, p.data, exact=True)
    assert all(fc._backend.is_device_array(v) for s in dopt.state.values()
               for v in s.values() if not isinstance(v, int))


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")
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
    rng, host, dev = device_params(G, dtype, seed=5)
    opt, dopt = make(host), make(dev)
    for _ in range(3):
        device_grads(rng, host, dev)
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


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")
@pytest.mark.parametrize("make, match", [
    (lambda ps: RMSprop(ps, l1=0.01), "l1"),
    (lambda ps: Adagrad(ps, max_norm=1.0), "max_norm"),
    (lambda ps: SGD(ps, lr=0.1, l1=0.01), "l1"),
    (lambda ps: Adam(ps, max_norm=1.0), "max_norm"),
])
def test_unsupported_on_the_device_refuses_before_any_change(G, make, match):
    rng, host, dev = device_params(G, np.float32)
    before = [fc.to_numpy(q.data).copy() for q in dev]
    host_first = [host[0], dev[1]]  # a host parameter first: it must not be updated either
    device_grads(rng, host, dev)
    opt = make(host_first)
    with pytest.raises(NotImplementedError, match=match):
        opt.step()
    np.testing.assert_array_equal(fc.to_numpy(dev[1].data), before[1])
    assert not opt.state
