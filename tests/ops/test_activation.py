"""Activation layers and their functional ops: against PyTorch (forward, input gradient, PReLU's
slope gradient; float32 and float64, random shapes and parameters), cpu against the naive tier,
finite differences in float64, state dicts to and from PyTorch, special values, errors; and the
cuda tier against the cpu tier and the oracle on Numba's simulator (tiny shapes), with the layers
on the device."""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv.kernels import cpu, naive
from fastconv.kernels.naive.activation import OPS as KERNEL_OPS

from helpers import (BACKENDS, DTYPES, HYPOTHESIS, RTOL, grad_rel_error, numeric_grad, random,
                     rel_error)
from op_helpers import cuda_test, on_simulator, share_on_simulator
from op_helpers import both  # noqa: F401  (a fixture)


#: Relative tolerance against PyTorch (max |a - b| / max |b|): both round in the data's dtype,
#: each with its own formulas (erf, tanh, exp implementations).
TORCH_RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


#: name -> (strategy of constructor kwargs, fastconv class, torch class, minimum ndim)
LAYERS = {
    "LeakyReLU": (st.fixed_dictionaries({"negative_slope": st.floats(-0.5, 2.0)}), "LeakyReLU", 1),
    "ELU": (st.fixed_dictionaries({"alpha": st.floats(0.1, 3.0)}), "ELU", 1),
    "SELU": (st.just({}), "SELU", 1),
    "GELU": (st.fixed_dictionaries({"approximate": st.sampled_from(["none", "tanh"])}), "GELU", 1),
    "SiLU": (st.just({}), "SiLU", 1),
    "Softplus": (st.fixed_dictionaries({"beta": st.floats(0.25, 4.0), "threshold": st.floats(0.5, 30.0)}),
                 "Softplus", 1),
    "Hardtanh": (st.tuples(st.floats(-2.0, -0.01), st.floats(0.0, 2.0)).map(
        lambda t: {"min_val": t[0], "max_val": t[1]}), "Hardtanh", 1),
    "PReLU": (st.fixed_dictionaries({"init": st.floats(-0.5, 1.0)}), "PReLU", 2),
    "Softmax": (st.just({}), "Softmax", 1),
    "LogSoftmax": (st.just({}), "LogSoftmax", 1),
    "Identity": (st.just({}), "Identity", 1),
}


#: the largest error against PyTorch seen, per (layer, dtype): printed by the last test of the file
WORST = {}


def _record(name, dtype, err):
    key = (name, np.dtype(dtype).name)
    WORST[key] = max(WORST.get(key, 0.0), err)


def _torch_grads(tlayer, x, dy):
    tx = torch.tensor(x, requires_grad=True)
    tout = tlayer(tx)
    tout.backward(torch.from_numpy(dy))
    return tout.detach().numpy(), tx.grad.numpy()


def _compare(name, layer, tlayer, x, dy):
    """Forward, input gradient and parameter gradients of ``layer`` against ``tlayer``."""
    out = layer(x)
    dx = layer._backward(dy, True)
    tout, tdx = _torch_grads(tlayer, x, dy)
    tol = TORCH_RTOL[np.dtype(x.dtype)]
    pairs = [("out", out, tout), ("dx", dx, tdx)]
    for (pname, p), (_, tp) in zip(layer.named_parameters(), tlayer.named_parameters()):
        pairs.append((pname, p.grad, tp.grad.numpy()))
    for what, got, want in pairs:
        assert got.dtype == x.dtype, f"{name} {what}: dtype {got.dtype}"
        assert got.shape == want.shape, f"{name} {what}: shape {got.shape} != {want.shape}"
        err = rel_error(got, want)
        _record(name, x.dtype, err)
        assert err <= tol, f"{name} {what}: relative error {err:.2e} against PyTorch"


@st.composite
def _case(draw, name):
    kwargs_strategy, _, min_nd = LAYERS[name]
    kwargs = dict(draw(kwargs_strategy))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=min_nd, max_size=4)))
    if name == "PReLU" and draw(st.booleans()):
        kwargs["num_parameters"] = shape[1]
    if name in ("Softmax", "LogSoftmax"):
        kwargs["dim"] = draw(st.integers(-len(shape), len(shape) - 1))
    return kwargs, shape, draw(st.integers(0, 2**16))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(LAYERS))
@HYPOTHESIS
@given(data=st.data())
def test_layer_matches_torch(name, dtype, data):
    kwargs, shape, seed = data.draw(_case(name))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    layer = getattr(fc, LAYERS[name][1])(**kwargs).to(dtype)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    tlayer = getattr(torch.nn, LAYERS[name][1])(**kwargs).to(tdtype)
    if name == "PReLU":  # a random slope per channel, the same in both
        slopes = rng.uniform(-0.5, 1.0, layer.num_parameters).astype(dtype)
        layer.weight.data[...] = slopes
        tlayer.load_state_dict(layer.state_dict() | {"weight": torch.from_numpy(slopes)})
    _compare(name, layer, tlayer, x, dy)


#: functional ops: (fastconv forward, backward, what backward reads, torch forward, kwargs)
OPS = {
    "leaky_relu": (F.leaky_relu, F.leaky_relu_backward, "x", torch.nn.functional.leaky_relu,
                   {"negative_slope": 0.2}),
    "elu": (F.elu, F.elu_backward, "x", torch.nn.functional.elu, {"alpha": 0.7}),
    "selu": (F.selu, F.selu_backward, "x", torch.nn.functional.selu, {}),
    "gelu": (F.gelu, F.gelu_backward, "x", torch.nn.functional.gelu, {}),
    "gelu_tanh": (F.gelu, F.gelu_backward, "x", torch.nn.functional.gelu, {"approximate": "tanh"}),
    "silu": (F.silu, F.silu_backward, "x", torch.nn.functional.silu, {}),
    "softplus": (F.softplus, F.softplus_backward, "x", torch.nn.functional.softplus,
                 {"beta": 2.0, "threshold": 3.0}),
    "hardtanh": (F.hardtanh, F.hardtanh_backward, "x", torch.nn.functional.hardtanh,
                 {"min_val": -0.5, "max_val": 2.0}),
    "softmax": (F.softmax, F.softmax_backward, "out", torch.nn.functional.softmax, {"dim": 1}),
    "log_softmax": (F.log_softmax, F.log_softmax_backward, "out", torch.nn.functional.log_softmax,
                    {"dim": -1}),
}


def _kinks(name, kwargs):
    """Where the op's derivative jumps (finite differences must stay away from there)."""
    if name == "hardtanh":
        return [kwargs["min_val"], kwargs["max_val"]]
    if name == "softplus":
        return [kwargs["threshold"] / kwargs["beta"]]
    return [0.0]


def _away_from(x, kinks, gap=1e-3):
    for k in kinks:
        close = np.abs(x - k) < gap
        x[close] = k + np.where(x[close] >= k, 1, -1) * 0.05
    return x


def _run(name, x, dy, backend):
    fwd, bwd, reads, _, kwargs = OPS[name]
    out = fwd(x, **kwargs, backend=backend)
    extra = [kwargs["dim"]] if "dim" in kwargs else list(kwargs.values())
    dx = bwd(dy, x if reads == "x" else out, *extra, backend=backend)
    return out, dx


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPS))
@HYPOTHESIS
@given(shape=st.lists(st.integers(1, 6), min_size=2, max_size=4).map(tuple), seed=st.integers(0, 2**16))
def test_functional_matches_naive(name, dtype, backend, shape, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    for got, want in zip(_run(name, x, dy, backend), _run(name, x, dy, "naive")):
        assert got.dtype == want.dtype == np.dtype(dtype)
        assert rel_error(got, want) <= RTOL[np.dtype(dtype)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(OPS))
def test_functional_matches_torch(name, dtype):
    fwd, bwd, reads, tfn, kwargs = OPS[name]
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 5, 3)) * 4).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    tx = torch.tensor(x, requires_grad=True)
    tout = tfn(tx, **kwargs)
    tout.backward(torch.from_numpy(dy))
    out, dx = _run(name, x, dy, "cpu")
    for got, want in ((out, tout.detach().numpy()), (dx, tx.grad.numpy())):
        assert rel_error(got, want) <= TORCH_RTOL[np.dtype(dtype)]


@pytest.mark.parametrize("backend", ["naive"] + BACKENDS)
@pytest.mark.parametrize("name", sorted(OPS))
def test_functional_gradients_match_finite_differences(name, backend):
    fwd, _, _, _, kwargs = OPS[name]
    rng = np.random.default_rng(11)
    x = _away_from(rng.standard_normal((3, 4, 2)) * 2, _kinks(name, kwargs))
    dy = rng.standard_normal(x.shape)
    _, dx = _run(name, x, dy, backend)
    numeric = numeric_grad(lambda: fwd(x, **kwargs, backend=backend), x, dy)
    assert grad_rel_error(dx, numeric) < 1e-7
    assert np.abs(numeric).max() > 0.05


@pytest.mark.parametrize("backend", ["naive"] + BACKENDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_prelu_gradients_match_finite_differences(backend, channels):
    rng = np.random.default_rng(12)
    x = _away_from(rng.standard_normal((2, 3, 4)), [0.0])
    w = rng.uniform(-0.5, 1.0, channels)
    dy = rng.standard_normal(x.shape)
    dx, dw = F.prelu_backward(dy, x, w, backend=backend)
    for got, arg in ((dx, x), (dw, w)):
        numeric = numeric_grad(lambda: F.prelu(x, w, backend=backend), arg, dy)
        assert grad_rel_error(got, numeric) < 1e-7 and np.abs(numeric).max() > 0.05
    assert F.prelu_backward(dy, x, w, need_dx=False, backend=backend)[0] is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), per_channel=st.booleans(),
       seed=st.integers(0, 2**16))
def test_prelu_matches_naive(backend, dtype, shape, per_channel, seed):
    rng = np.random.default_rng(seed)
    c = shape[1] if per_channel and len(shape) >= 2 else 1
    x, dy = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    w = rng.uniform(-0.5, 1.0, c).astype(dtype)
    got = (F.prelu(x, w, backend=backend),) + F.prelu_backward(dy, x, w, backend=backend)
    want = (F.prelu(x, w, backend="naive"),) + F.prelu_backward(dy, x, w, backend="naive")
    for g, r in zip(got, want):
        assert g.dtype == np.dtype(dtype) and rel_error(g, r) <= RTOL[np.dtype(dtype)]


def test_layer_gradients_match_finite_differences():
    rng = np.random.default_rng(13)
    for layer in (fc.PReLU(3, init=0.3), fc.PReLU(), fc.LeakyReLU(0.3), fc.GELU(), fc.Softmax(dim=2),
                  fc.LogSoftmax(dim=0), fc.Identity()):
        layer.to(np.float64)
        x = _away_from(rng.standard_normal((2, 3, 4)), [0.0])
        dy = rng.standard_normal(x.shape)
        layer.zero_grad()
        layer(x)
        dx = layer._backward(dy, True)
        assert grad_rel_error(dx, numeric_grad(lambda: layer(x), x, dy)) < 1e-7, repr(layer)
        for p in layer.parameters():
            assert grad_rel_error(p.grad, numeric_grad(lambda: layer(x), p.data, dy)) < 1e-7


def test_special_values_match_torch():
    """Infinities, NaN, signed zeros and values that overflow exp() (cpu tier, float32)."""
    x = np.array([-np.inf, -1e4, -30.0, -1.0, -0.0, 0.0, 1e-8, 1.0, 30.0, 1e4, np.inf, np.nan], np.float32)
    dy = np.ones_like(x)
    for name, (_, _, reads, tfn, kwargs) in OPS.items():
        if reads == "out":
            continue
        tx = torch.tensor(x, requires_grad=True)
        tout = tfn(tx, **kwargs)
        tout.backward(torch.from_numpy(dy))
        out, dx = _run(name, x, dy, "cpu")
        want = tout.detach().numpy()
        if name == "gelu":  # PyTorch's vectorised erf gives gelu(inf) = NaN; the limit is inf
            assert np.isnan(want[-2]) and out[-2] == np.inf
            want[-2] = np.inf
        np.testing.assert_allclose(out, want, rtol=1e-6, atol=0, equal_nan=True, err_msg=name)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6, atol=1e-30, equal_nan=True, err_msg=name)


def test_softmax_rows_with_infinities_and_large_values_match_torch():
    x = np.array([[1e4, 1e4 - 1, -1e4], [-np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf],
                  [np.nan, 0.0, 1.0]], np.float64)
    for fn, tfn in ((F.softmax, torch.softmax), (F.log_softmax, torch.log_softmax)):
        want = tfn(torch.from_numpy(x), 1).numpy()
        for backend in ("naive", "cpu"):
            np.testing.assert_allclose(fn(x, 1, backend=backend), want, rtol=1e-14, equal_nan=True)


def test_prelu_state_dict_round_trips_with_torch():
    t = torch.nn.PReLU(4, init=0.1)
    with torch.no_grad():
        t.weight.copy_(torch.tensor([0.1, -0.2, 0.3, 0.4]))
    layer = fc.PReLU(4)
    layer.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    np.testing.assert_array_equal(layer.weight.data, np.float32([0.1, -0.2, 0.3, 0.4]))
    back = torch.nn.PReLU(4)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    assert torch.equal(back.weight, t.weight)
    assert list(layer.state_dict()) == list(t.state_dict()) == ["weight"]
    assert layer.weight.dtype == np.float32 and fc.PReLU(dtype=np.float64).weight.dtype == np.float64


def test_repr_matches_torch():
    for make in ("LeakyReLU(0.2)", "ELU(alpha=0.5)", "SELU()", "GELU()", "GELU(approximate='tanh')",
                 "SiLU()", "Softplus(beta=2.0, threshold=10.0)", "Hardtanh(-2.0, 3.0)", "PReLU(3)",
                 "Softmax(dim=1)", "LogSoftmax(dim=-1)", "Identity()"):
        assert repr(eval("fc." + make)) == repr(eval("torch.nn." + make)), make


def test_implicit_softmax_dim_is_torchs_with_its_warning():
    rng = np.random.default_rng(0)
    for shape in ((5,), (2, 3), (2, 3, 4), (2, 3, 4, 2)):
        x = rng.standard_normal(shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = torch.nn.Softmax()(torch.from_numpy(x)).numpy()
        layer = fc.Softmax()
        with pytest.warns(UserWarning, match="Implicit dimension"):
            out = layer(x)
        np.testing.assert_allclose(out, want, rtol=1e-13)
        dy = rng.standard_normal(shape)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the backward uses the dimension the forward picked
            dx = layer.backward(dy)
        np.testing.assert_allclose(dx, F.softmax_backward(dy, out, 0 if len(shape) in (1, 3) else 1))
    assert F.softmax(np.float64(2.0), 0) == 1.0  # a 0-D input is one row


def test_dtypes_layouts_and_empty_inputs():
    x = np.random.default_rng(0).standard_normal((4, 6))
    assert fc.GELU()(x).dtype == np.float64 and fc.GELU()(x.astype(np.float32)).dtype == np.float32
    assert fc.ELU()(np.arange(6).reshape(2, 3)).dtype == np.float32  # integers become float32
    view = x[:, ::2]
    np.testing.assert_array_equal(F.silu(view), F.silu(np.ascontiguousarray(view)))
    np.testing.assert_array_equal(F.softmax(x.T, 0), F.softmax(np.ascontiguousarray(x.T), 0))
    assert fc.PReLU(3)(x[:, :3]).dtype == np.float32  # cast to the slope's dtype, as other layers
    for backend in ("naive", "cpu"):  # empty batches and empty reduced axes
        assert F.softmax(np.zeros((3, 0)), 1, backend=backend).shape == (3, 0)
        assert F.log_softmax_backward(np.zeros((0, 2)), np.zeros((0, 2)), 1, backend=backend).shape == (0, 2)
        assert F.gelu(np.zeros((0, 2)), backend=backend).shape == (0, 2)
        dx, dw = F.prelu_backward(np.zeros((0, 3, 2)), np.zeros((0, 3, 2)), np.ones(3), backend=backend)
        assert dx.shape == (0, 3, 2) and np.array_equal(dw, np.zeros(3))


def test_errors_name_the_problem():
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(TypeError, match="negative_slope"):
        fc.LeakyReLU("0.1")
    with pytest.raises(ValueError, match="approximate"):
        fc.GELU("fast")
    with pytest.raises(ValueError, match="approximate"):
        F.gelu(x, approximate="erf")
    with pytest.raises(ValueError, match="min_val"):
        fc.Hardtanh(1.0, -1.0)
    with pytest.raises(ValueError, match="greater than min_val"):
        fc.Hardtanh(1.0, 1.0)
    with pytest.raises(ValueError, match="min_val"):
        F.hardtanh(x, 2, 1)
    with pytest.raises(ValueError, match="num_parameters"):
        fc.PReLU(0)
    with pytest.raises(ValueError, match="4 slopes.*3 channels"):
        fc.PReLU(4)(x)
    with pytest.raises(ValueError, match="2 slopes"):
        F.prelu(x, np.ones(2))
    with pytest.raises(ValueError, match="1-D"):
        F.prelu(x, np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"range of \[-3, 2\], but got 3"):
        F.softmax(x, 3)
    with pytest.raises(ValueError, match="out of range"):
        fc.LogSoftmax(dim=-4)(x)
    with pytest.raises(TypeError, match="dim"):
        fc.Softmax(dim=1.0)
    with pytest.raises(TypeError, match="dim"):
        F.log_softmax(x, "1")
    with pytest.raises(ValueError, match="dout has shape"):
        F.elu_backward(np.zeros((2, 3)), x)
    with pytest.raises(ValueError, match="dout has shape"):
        F.softmax_backward(np.zeros((2, 3)), x, 1)
    with pytest.raises(TypeError, match="complex"):
        F.silu(np.zeros(3, np.complex64))
    with pytest.raises(TypeError, match="beta"):
        F.softplus(x, beta=None)


# ---------------------------------------------------------------------------------------------
# The cuda tier against the cpu tier and the oracle (Numba's simulator, tiny shapes)

#: The simulator runs each GPU thread as Python: a seventh of the profile's examples (at least
#: 6) for the base activations, 4 fixed ones for PReLU.
SOME = share_on_simulator(7, 6)
FEW = on_simulator(4)


PARAMS = {"leaky_relu": (0.2, 0.0), "elu": (1.3, 1.05), "gelu": (0, 0), "gelu_tanh": (0, 0),
          "silu": (0, 0), "softplus": (2.0, 3.0), "hardtanh": (-0.5, 1.5)}


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
@SOME
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_activations_match_cpu_and_naive(G, both, dtype, name, shape, seed):
    rng = np.random.default_rng(seed)
    x = (random(rng, shape, dtype) * 30).astype(dtype)  # large enough to saturate sigmoid / tanh
    x.flat[0] = 0
    y = getattr(G, name)(x)
    want = getattr(cpu, name)(x)
    both(name, y, want, getattr(naive, name)(x), exact=name == "relu")
    dout = random(rng, shape, dtype)
    both(f"{name}_backward", getattr(G, f"{name}_backward")(dout, want),
         getattr(cpu, f"{name}_backward")(dout, want),
         getattr(naive, f"{name}_backward")(dout, want), exact=name == "relu")


@cuda_test
def test_relu_propagates_nan_and_inputs_may_live_on_the_device(G):
    from numba import cuda
    x = cuda.to_device(np.array([np.nan, -1.0, 2.0], np.float32))
    y = G.relu(x)
    assert hasattr(y, "copy_to_host")
    np.testing.assert_array_equal(y.copy_to_host(), [np.nan, 0.0, 2.0])
    with pytest.raises(ValueError, match="not C-contiguous"):
        G.relu(cuda.to_device(np.ones((3, 4), np.float32)).T)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", KERNEL_OPS)
def test_activation_forward_backward_match_cpu(G, close, op, dtype):
    rng = np.random.default_rng(KERNEL_OPS.index(op))
    x = (rng.standard_normal(40) * 3).astype(dtype)
    x[:4] = [0, -0.0, 1e4, -1e4]
    dout = rng.standard_normal(40).astype(dtype)
    a, b = PARAMS[op]
    close(op, G.activate(x, op, a, b), cpu.activate(x, op, a, b))
    close(f"{op} backward", G.activate_backward(dout, x, op, a, b),
          cpu.activate_backward(dout, x, op, a, b))


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)), shared=st.booleans(),
       need_dx=st.booleans(), seed=st.integers(0, 2**16))
def test_prelu_matches_cpu(G, close, dtype, shape, shared, need_dx, seed):
    rng = np.random.default_rng(seed)
    x, dout = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    x3 = x.reshape(1, 1, -1) if shared else x
    w = rng.uniform(-0.5, 1.0, x3.shape[1]).astype(dtype)
    close("prelu", G.prelu(x3, w), cpu.prelu(x3, w), exact=True)
    dx, dw = G.prelu_backward(dout.reshape(x3.shape), x3, w, need_dx)
    want_dx, want_dw = cpu.prelu_backward(dout.reshape(x3.shape), x3, w, need_dx)
    assert (dx is None) == (not need_dx)
    if need_dx:
        close("prelu dx", dx, want_dx, exact=True)
    close("prelu dweight", dw, want_dw)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 1), (1, 4, 3), (2, 3, 2), (2, 1, 3), (2, 0, 3)])
def test_softmax_matches_cpu(G, close, dtype, log, shape):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    out = close("softmax", G.softmax(x, log), cpu.softmax(x, log))
    close("softmax backward", G.softmax_backward(dout, out, log), cpu.softmax_backward(dout, out, log))


@cuda_test
def test_functional_ops_keep_device_arrays_on_the_device(G, close):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx_dev, dy_dev = fc.to_device(x), fc.to_device(dy)
    for fwd, bwd, kwargs in ((F.elu, F.elu_backward, {"alpha": 0.5}), (F.selu, F.selu_backward, {}),
                             (F.gelu, F.gelu_backward, {"approximate": "tanh"})):
        out = fwd(dx_dev, **kwargs)
        assert fc._backend.is_device_array(out) and out.shape == x.shape
        close(fwd.__name__, out, fwd(x, **kwargs, backend="cpu"))
        args = list(kwargs.values())
        close(bwd.__name__, bwd(dy_dev, dx_dev, *args), bwd(dy, x, *args, backend="cpu"))
    out = F.log_softmax(dx_dev, dim=-1)
    close("log_softmax dim -1", out, F.log_softmax(x, dim=-1, backend="cpu"))
    close("log_softmax backward", F.log_softmax_backward(dy_dev, out, -1),
          F.log_softmax_backward(dy, fc.to_numpy(out), -1, backend="cpu"))


@cuda_test
def test_layers_on_the_device_match_the_host(G, close):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    for make in (lambda: fc.PReLU(3, init=0.1), lambda: fc.Softmax(dim=1), lambda: fc.SiLU(),
                 lambda: fc.Hardtanh(-0.5, 0.5)):
        host, dev = make(), make().to("cuda")
        want, got = host(x), dev(fc.to_device(x))
        close(repr(host), got, want)
        close(f"{host!r} dx", dev.backward(fc.to_device(dy)), host.backward(dy))
        for p, q in zip(host.parameters(), dev.parameters()):
            assert q.device == "cuda"
            close(f"{host!r} dweight", q.grad, p.grad)


def test_zz_report_largest_errors_against_torch(capsys):
    """Prints the largest relative error against PyTorch per layer and dtype (``pytest -s``)."""
    assert WORST, "the torch comparisons ran first"
    with capsys.disabled():
        print("\nlargest relative error against PyTorch (max |a - b| / max |b|):")
        for (name, dtype), err in sorted(WORST.items()):
            print(f"  {name:<11} {dtype:<8} {err:.2e}")
