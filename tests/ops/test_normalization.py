"""Normalisation kernels on every tier: F.batch_norm (cpu against the naive oracle, finite
differences, running statistics), and the cuda tier's batch, group and layer normalisation
against the cpu tier and the oracle on Numba's simulator (tiny shapes), with the normalisation
layers on the device. The layers against PyTorch: test_normalization_layers.py."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv.kernels import cpu, naive

from helpers import (ALL_TIERS, BACKENDS, DTYPES, RTOL, HYPOTHESIS, grad_rel_error, numeric_grad,
                     random, rel_error)
from op_helpers import cuda_test, on_simulator, share_on_simulator
from op_helpers import both  # noqa: F401  (a fixture)


SHAPES = [(4, 3), (3, 2, 5), (2, 3, 4, 5)]


def _inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    w = rng.uniform(0.5, 1.5, c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_naive(backend, dtype, shape, training):
    x, w, b = _inputs(shape, dtype)
    dout = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    results = {}
    for tier in ("naive", backend):
        rm, rv = np.full(shape[1], 0.5, dtype), np.full(shape[1], 2.0, dtype)
        out, cache = F.batch_norm(x, w, b, rm, rv, training, 0.1, 1e-5, backend=tier)
        results[tier] = (out, rm, rv) + F.batch_norm_backward(dout, cache)
    for got, ref in zip(results[backend], results["naive"]):
        assert got.dtype == np.dtype(dtype)
        assert rel_error(got, ref) < RTOL[np.dtype(dtype)]


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm_finite_differences(backend, training, relu):
    """Plain, and fused with a ReLU (its seeds put kinks in the data, none within the step h)."""
    x, w, b = _inputs((3, 2, 4, 3), np.float64, seed=4 if relu else 2)
    rm, rv = np.array([0.3, -0.2]), np.array([1.5, 0.7])
    dout = np.random.default_rng(5 if relu else 3).standard_normal(x.shape)

    def forward():
        return F.batch_norm(x, w, b, rm.copy(), rv.copy(), training, backend=backend,
                            relu=relu)[0]

    out, cache = F.batch_norm(x, w, b, rm.copy(), rv.copy(), training, backend=backend, relu=relu)
    if relu:
        plain = F.batch_norm(x, w, b, rm.copy(), rv.copy(), training, backend=backend)[0]
        assert (out == 0).sum() > 10 and np.abs(plain).min() > 1e-3  # kinks hit, none within h
    dx, dw, db = F.batch_norm_backward(dout, cache)
    for got, arg in ((dx, x), (dw, w), (db, b)):
        assert grad_rel_error(got, numeric_grad(forward, arg, dout)) < 1e-6


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_running_statistics_follow_pytorch_rule(backend):
    x, w, b = _inputs((4, 3, 2, 2), np.float64)
    rm, rv = np.zeros(3), np.ones(3)
    F.batch_norm(x, w, b, rm, rv, True, momentum=0.25, backend=backend)
    mean = x.mean(axis=(0, 2, 3))
    var = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(rm, 0.25 * mean, rtol=1e-12)
    np.testing.assert_allclose(rv, 0.75 + 0.25 * var, rtol=1e-12)


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_batch_norm_errors_name_shapes(backend):
    x, w, b = _inputs((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"\(4,\)"):
        F.batch_norm(x, np.ones(4, np.float32), b, backend=backend)
    with pytest.raises(ValueError, match="more than 1 value"):
        F.batch_norm(x[:1, :, :1], w, b, backend=backend)
    with pytest.raises(ValueError, match="running"):
        F.batch_norm(x, w, b, training=False, backend=backend)


# ---------------------------------------------------------------------------------------------
# relu=True: batch norm and a ReLU in one pass each way (what Sequential runs for BatchNorm, ReLU)

@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(n=st.integers(1, 4), c=st.integers(1, 5), length=st.integers(1, 40), training=st.booleans(),
       need_dx=st.booleans(), seed=st.integers(0, 2**16))
def test_batch_norm_relu_is_batch_norm_then_relu(backend, dtype, n, c, length, training, need_dx,
                                                  seed):
    """The fused forward is the unfused one then F.relu, bit for bit; its backward is the unfused
    backward of F.relu_backward's gradient, to rounding (the masked sums may vectorise in
    another order), and the oracle's."""
    rng = np.random.default_rng(seed)
    if training and n * length < 2:
        length = 2
    x = (random(rng, (n, c, length), dtype) * 2 + 0.5).astype(dtype)
    w, b = random(rng, c, dtype), random(rng, c, dtype)
    stats = (random(rng, c, dtype), (rng.random(c) + 0.5).astype(dtype))
    fused, cache = F.batch_norm(x, w, b, *stats, training, backend=backend, relu=True)
    plain, plain_cache = F.batch_norm(x, w, b, *stats, training, backend=backend)
    np.testing.assert_array_equal(fused, F.relu(plain, backend=backend))
    dout = random(rng, x.shape, dtype)
    got = F.batch_norm_backward(dout, cache, need_dx)
    masked = F.relu_backward(dout, fused, backend=backend)
    want = F.batch_norm_backward(masked, plain_cache, need_dx)
    oracle_out, oracle_cache = F.batch_norm(x, w, b, *stats, training, backend="naive", relu=True)
    assert rel_error(fused, oracle_out) < RTOL[np.dtype(dtype)]
    oracle = F.batch_norm_backward(dout, oracle_cache, need_dx)
    for name, g, r, o in zip(("dx", "dweight", "dbias"), got, want, oracle):
        assert (g is None) == (r is None) == (name == "dx" and not need_dx), name
        if r is not None:
            assert g.dtype == np.dtype(dtype)
            assert rel_error(g, r) < RTOL[np.dtype(dtype)], name
            assert rel_error(g, o) < RTOL[np.dtype(dtype)], name


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_relu_masks_where_the_forward_was_positive(backend, dtype):
    """Values an ulp apart around the ReLU's kink (eval mode, so the statistics are given): the
    backward's mask (the cpu tier recomputes it from x) is the forward's output > 0 at every
    element, so dx is dout * weight * inv_std exactly there and 0 elsewhere."""
    t = np.dtype(dtype).type
    x0, mu, var = t(0.7), t(0.2), t(1.7)
    x = x0 + np.arange(-400, 400, dtype=dtype) * np.spacing(x0)
    x = x.reshape(2, 1, 400)
    w = np.array([1.3], dtype)
    inv_std = t(1) / np.sqrt(var + t(1e-5))
    b = -((x0 - mu) * (w[0] * inv_std))  # the kink at x0
    b = np.array([b], dtype)
    out, cache = F.batch_norm(x, w, b, np.array([mu]), np.array([var]), False, backend=backend,
                              relu=True)
    assert 100 < (out > 0).sum() < 700
    dout = np.ones_like(x)
    dx, _, _ = F.batch_norm_backward(dout, cache)
    want = np.where(out > 0, (w[0] * inv_std).astype(dtype), t(0))
    np.testing.assert_array_equal(dx, want)


# ---------------------------------------------------------------------------------------------
# The cuda tier against the cpu tier and the oracle (Numba's simulator, tiny shapes)

#: The simulator runs each GPU thread as Python: a tenth of the profile's examples (at least 4)
#: for batch norm, 5 fixed ones for group norm.
FEW_BN = share_on_simulator(10, 4)
FEW = on_simulator(5)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@FEW_BN
@given(n=st.integers(1, 3), c=st.integers(1, 3), length=st.integers(1, 6), training=st.booleans(),
       need_dx=st.booleans(), relu=st.booleans(), seed=st.integers(0, 2**16))
def test_batch_norm_matches_cpu_and_naive(G, both, dtype, n, c, length, training, need_dx, relu,
                                          seed):
    rng = np.random.default_rng(seed)
    if training and n * length < 2:
        length = 2
    x = (random(rng, (n, c, length), dtype) * 3 + 1).astype(dtype)
    weight, bias = random(rng, c, dtype), random(rng, c, dtype)
    mean, var = random(rng, c, dtype), (rng.random(c) + 0.5).astype(dtype)
    got = G.batch_norm(x, weight, bias, mean, var, training, 1e-5, relu)
    want = cpu.batch_norm(x, weight, bias, mean, var, training, 1e-5, relu)
    oracle = naive.batch_norm(x, weight, bias, mean, var, training, 1e-5, relu)
    for name, g, r, o in zip(("out", "batch_mean", "batch_var"), got[:3], want[:3], oracle[:3]):
        assert (g is None) == (r is None) == (o is None), name
        if r is not None:
            both(f"batch_norm {name}", g, r, o)
    for name, g, r, o in zip(("mean", "inv_std"), got[3], want[3], oracle[3]):
        both(f"batch_norm saved {name}", g, r, o)
    dout = random(rng, x.shape, dtype)
    outs = [r[0] if relu else None for r in (got, want, oracle)]
    grads = G.batch_norm_backward(dout, x, weight, got[3], training, need_dx, outs[0])
    ref = cpu.batch_norm_backward(dout, x, weight, want[3], training, need_dx, outs[1])
    ref_naive = naive.batch_norm_backward(dout, x, weight, oracle[3], training, need_dx, outs[2])
    for name, g, r, o in zip(("dx", "dweight", "dbias"), grads, ref, ref_naive):
        assert (g is None) == (r is None) == (o is None), name
        if r is not None:
            both(f"batch_norm_backward {name}", g, r, o)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(n=st.integers(0, 2), groups=st.integers(1, 3), per_group=st.integers(1, 2), inner=st.integers(1, 3),
       need_dx=st.booleans(), seed=st.integers(0, 2**16))
def test_group_norm_matches_cpu(G, close, dtype, n, groups, per_group, inner, need_dx, seed):
    rng = np.random.default_rng(seed)
    m, c = per_group * inner, groups * per_group
    x = (rng.standard_normal((n, groups, m)) * 2 + 1).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    out, mean, rstd = G.group_norm(x, w, b, inner, 0.1)
    want = cpu.group_norm(x, w, b, inner, 0.1)
    for name, got, ref in zip(("out", "mean", "rstd"), (out, mean, rstd), want):
        close(f"group_norm {name}", got, ref)
    got = G.group_norm_backward(dout, x, w, mean, rstd, inner, need_dx)
    ref = cpu.group_norm_backward(dout, x, w, want[1], want[2], inner, need_dx)
    for name, g, r in zip(("dx", "dweight", "dbias"), got, ref):
        assert (g is None) == (r is None), name
        if r is not None:
            close(f"group_norm_backward {name}", g, r)


@cuda_test
@pytest.mark.parametrize("make, shape", [
    (lambda: fc.GroupNorm(2, 4), (2, 4, 3)),
    (lambda: fc.LayerNorm((2, 3), bias=False), (2, 2, 3)),
    (lambda: fc.BatchNorm2d(3, affine=False), (2, 3, 2, 2)),
    (lambda: fc.BatchNorm1d(3, track_running_stats=False), (4, 3)),
])
def test_layers_on_the_device_match_the_host(G, close, make, shape):
    rng = np.random.default_rng(3)
    x, dy = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    host, dev = make(), make().to("cuda")
    for training in (True, False):
        host.train(training), dev.train(training)
        got = dev(fc.to_device(x))
        assert fc._backend.is_device_array(got)
        close(f"{host!r} out", got, host(x))
        close(f"{host!r} dx", dev.backward(fc.to_device(dy)), host.backward(dy))
        for (name, p), q in zip(host.named_parameters(), dev.parameters()):
            close(f"{host!r} {name}", q.grad, p.grad)
    dev_state = dev.state_dict()
    assert list(dev_state) == list(host.state_dict())
    for key, value in host.state_dict().items():
        if value.dtype.kind == "f":
            close(f"{host!r} {key}", dev_state[key], value)
        else:
            assert np.array_equal(dev_state[key], value), key
