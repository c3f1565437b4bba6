"""GroupNorm, LayerNorm and the BatchNorm variants (affine=False, bias=False,
track_running_stats=False, momentum=None): against PyTorch (forward, input and parameter gradients,
running statistics; float32 and float64, random configurations), the cpu tier against the naive
one, finite differences in float64, state dicts to and from PyTorch, errors (the kernels of
every tier: test_normalization.py)."""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from helpers import ALL_TIERS, BACKENDS, DTYPES, HYPOTHESIS, RTOL, grad_rel_error, numeric_grad, rel_error

TORCH_RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-11}
WORST = {}


def _tdtype(dtype):
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def _randomise(layer, tlayer, rng, dtype):
    """Random weights and biases (and running statistics) in both layers, from fastconv's state."""
    for p in layer.parameters():
        p.data[...] = rng.uniform(0.5, 1.5, p.shape) * rng.choice([-1, 1], p.shape)
    for name in ("running_mean", "running_var"):
        if getattr(layer, name, None) is not None:
            getattr(layer, name)[...] = rng.uniform(0.5, 1.5, layer.num_features)
    tlayer.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in layer.state_dict().items()})


def _compare(name, layer, tlayer, x, dy, steps=1):
    """``steps`` forwards and backwards of both layers, comparing every output, input gradient,
    parameter gradient and buffer after each (relative to the largest reference value, or to the
    largest |dy| when that is larger). PyTorch runs in float64 on the same values: the exact
    result, so that PyTorch's own float32 rounding (as large as fastconv's on small groups) is
    not counted against fastconv."""
    tol = TORCH_RTOL[np.dtype(x.dtype)]
    tlayer = tlayer.double()
    for _ in range(steps):
        layer.zero_grad()
        tlayer.zero_grad()
        out = layer(x)
        dx = layer._backward(dy, True)
        tx = torch.tensor(x.astype(np.float64), requires_grad=True)
        tout = tlayer(tx)
        tout.backward(torch.from_numpy(dy.astype(np.float64)))
        pairs = [("out", out, tout.detach().numpy()), ("dx", dx, tx.grad.numpy())]
        tparams = dict(tlayer.named_parameters())
        assert [n for n, _ in layer.named_parameters()] == list(tparams)
        pairs += [(n, p.grad, tparams[n].grad.numpy()) for n, p in layer.named_parameters()]
        tstate = tlayer.state_dict()
        assert list(layer.state_dict()) == list(tstate)
        pairs += [(k, v, tstate[k].numpy()) for k, v in layer.state_dict().items()]
        for what, got, want in pairs:
            got = np.asarray(got)
            assert got.shape == want.shape, f"{name} {what}: {got.shape} != {want.shape}"
            if want.dtype.kind == "i":
                assert np.array_equal(got, want), f"{name} {what}"
                continue
            assert got.dtype == x.dtype, f"{name} {what}: dtype {got.dtype}"
            # outputs and gradients are O(|dy|) = O(1) by construction, but a group of one or two
            # values makes them nearly 0 (cancellation noise on both sides): scale by |dy| too
            scale = np.abs(want).max(initial=0)
            if what not in ("running_mean", "running_var"):
                scale = max(scale, np.abs(dy).max())
            err = float(np.max(np.abs(got.astype(np.float64) - want), initial=0) / scale)
            key = (name, x.dtype.name)
            WORST[key] = max(WORST.get(key, 0.0), err)
            assert err <= tol, f"{name} {what}: relative error {err:.2e} against PyTorch"


def _data(rng, shape, dtype):
    x = (rng.standard_normal(shape) * 2 + rng.uniform(-1, 1)).astype(dtype)
    return x, rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(n=st.integers(1, 3), groups=st.integers(1, 3), per_group=st.integers(1, 3),
       spatial=st.lists(st.integers(1, 4), max_size=2), affine=st.booleans(), bias=st.booleans(),
       eps=st.sampled_from([1e-5, 1e-3, 0.5]), seed=st.integers(0, 2**16))
def test_group_norm_matches_torch(dtype, n, groups, per_group, spatial, affine, bias, eps, seed):
    c = groups * per_group
    shape = (n, c) + tuple(spatial)
    assume(n * per_group * np.prod(spatial, dtype=int) > 1)  # else PyTorch's error (tested below)
    if np.prod(shape) // (n * groups) < 2 and eps < 0.5:
        eps = 0.5  # a group of one value: x - mean is 0 and only eps keeps rstd finite
    rng = np.random.default_rng(seed)
    layer = fc.GroupNorm(groups, c, eps=eps, affine=affine, bias=bias, dtype=dtype)
    tlayer = torch.nn.GroupNorm(groups, c, eps=eps, affine=affine, bias=bias).to(_tdtype(dtype))
    _randomise(layer, tlayer, rng, dtype)
    _compare("GroupNorm", layer, tlayer, *_data(rng, shape, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(lead=st.lists(st.integers(1, 3), max_size=2), norm=st.lists(st.integers(1, 4), min_size=1, max_size=2),
       affine=st.booleans(), bias=st.booleans(), as_int=st.booleans(), seed=st.integers(0, 2**16))
def test_layer_norm_matches_torch(dtype, lead, norm, affine, bias, as_int, seed):
    normalized = norm[0] if as_int and len(norm) == 1 else tuple(norm)
    shape = tuple(lead) + tuple(norm)
    eps = 1e-5 if np.prod(norm) > 1 else 0.5
    rng = np.random.default_rng(seed)
    layer = fc.LayerNorm(normalized, eps=eps, elementwise_affine=affine, bias=bias, dtype=dtype)
    tlayer = torch.nn.LayerNorm(normalized, eps=eps, elementwise_affine=affine, bias=bias).to(_tdtype(dtype))
    _randomise(layer, tlayer, rng, dtype)
    _compare("LayerNorm", layer, tlayer, *_data(rng, shape, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(two_d=st.booleans(), n=st.integers(2, 4), c=st.integers(1, 3), length=st.integers(1, 3),
       affine=st.booleans(), bias=st.booleans(), track=st.booleans(),
       momentum=st.sampled_from([0.1, 0.5, None]), training=st.booleans(), seed=st.integers(0, 2**16))
def test_batch_norm_variants_match_torch(dtype, two_d, n, c, length, affine, bias, track, momentum, training,
                                         seed):
    cls, shape = ("BatchNorm2d", (n, c, length, 2)) if two_d else ("BatchNorm1d", (n, c, length))
    rng = np.random.default_rng(seed)
    kwargs = dict(momentum=momentum, affine=affine, track_running_stats=track, bias=bias)
    layer = getattr(fc, cls)(c, dtype=dtype, **kwargs).train(training)
    tlayer = getattr(torch.nn, cls)(c, **kwargs).to(_tdtype(dtype)).train(training)
    _randomise(layer, tlayer, rng, dtype)
    _compare(f"{cls}(affine={affine}, track_running_stats={track})", layer, tlayer, *_data(rng, shape, dtype),
             steps=3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(n=st.integers(1, 4), groups=st.sampled_from([1, 2, 3, 6]), h=st.integers(1, 4), w=st.integers(1, 4),
       lead=st.integers(1, 3), need_dx=st.booleans(), with_weight=st.booleans(), seed=st.integers(0, 2**16))
def test_group_and_layer_norm_match_naive(backend, dtype, n, groups, h, w, lead, need_dx, with_weight, seed):
    assume(n * (6 // groups) * h * w > 1)  # else group_norm's PyTorch error
    rng = np.random.default_rng(seed)
    cases = [(lambda be, x, wt, b: F.group_norm(x, groups, wt, b, 0.1, backend=be), F.group_norm_backward,
              (n, 6, h, w), (6,)),
             (lambda be, x, wt, b: F.layer_norm(x, (h, w), wt, b, 0.1, backend=be), F.layer_norm_backward,
              (n, lead, h, w), (h, w))]
    for fwd, bwd, shape, pshape in cases:
        x, dy = _data(rng, shape, dtype)
        wt = rng.standard_normal(pshape).astype(dtype) if with_weight else None
        b = rng.standard_normal(pshape).astype(dtype) if with_weight else None
        got_out, got_cache = fwd(backend, x, wt, b)
        want_out, want_cache = fwd("naive", x, wt, b)
        got = (got_out,) + bwd(dy, got_cache, need_dx)
        want = (want_out,) + bwd(dy, want_cache, need_dx)
        for g, r in zip(got, want):
            assert (g is None) == (r is None)
            if r is not None:
                assert g.dtype == np.dtype(dtype) and g.shape == r.shape
                assert rel_error(g, r) <= RTOL[np.dtype(dtype)]


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("op", ["group_norm", "layer_norm", "group_norm_instance"])
def test_norm_gradients_match_finite_differences(backend, op):
    rng = np.random.default_rng(31)
    if op == "layer_norm":
        x, pshape = rng.standard_normal((2, 3, 4)) * 2, (3, 4)

        def fwd():
            return F.layer_norm(x, pshape, w, b, backend=backend)
        bwd = F.layer_norm_backward
    else:
        groups = 4 if op == "group_norm_instance" else 2
        x, pshape = rng.standard_normal((2, 4, 3, 2)) * 2, (4,)

        def fwd():
            return F.group_norm(x, groups, w, b, backend=backend)
        bwd = F.group_norm_backward
    w, b = rng.uniform(0.5, 1.5, pshape), rng.standard_normal(pshape)
    dy = rng.standard_normal(x.shape)
    dx, dw, db = bwd(dy, fwd()[1])
    for got, arg in ((dx, x), (dw, w), (db, b)):
        numeric = numeric_grad(lambda: fwd()[0], arg, dy)
        assert grad_rel_error(got, numeric) < 1e-7 and np.abs(numeric).max() > 0.05


@pytest.mark.parametrize("training", [True, False])
def test_layer_gradients_match_finite_differences(training):
    rng = np.random.default_rng(32)
    layers = [fc.BatchNorm2d(3, affine=False), fc.BatchNorm1d(3, track_running_stats=False),
              fc.BatchNorm2d(3, bias=False), fc.GroupNorm(3, 3), fc.LayerNorm(4, bias=False),
              fc.LayerNorm((3, 4), elementwise_affine=False)]
    for layer in layers:
        layer.to(np.float64).train(training)
        for p in layer.parameters():
            p.data[...] = rng.uniform(0.5, 1.5, p.shape)
        shape = (3, 3, 4) if isinstance(layer, (fc.LayerNorm, fc.BatchNorm1d)) else (3, 3, 2, 2)
        x, dy = rng.standard_normal(shape) * 2, rng.standard_normal(shape)

        def loss():
            saved = [None if a is None else a.copy() for a in (getattr(layer, "running_mean", None),
                                                                getattr(layer, "running_var", None))]
            out = layer(x)
            if saved[0] is not None:  # the same statistics for every evaluation
                layer.running_mean[...], layer.running_var[...] = saved
            return out
        layer.zero_grad()
        loss()
        dx = layer._backward(dy, True)
        assert grad_rel_error(dx, numeric_grad(loss, x, dy)) < 1e-7, repr(layer)
        for name, p in layer.named_parameters():
            assert grad_rel_error(p.grad, numeric_grad(loss, p.data, dy)) < 1e-7, f"{layer!r} {name}"


def test_state_dicts_load_both_ways_with_torch():
    rng = np.random.default_rng(33)
    pairs = [("GroupNorm(2, 4)", (4,)), ("GroupNorm(2, 4, affine=False)", None),
             ("LayerNorm((3, 2))", (3, 2)), ("LayerNorm(5, bias=False)", (5,)),
             ("BatchNorm2d(3, affine=False)", (3,)), ("BatchNorm1d(3, track_running_stats=False)", (3,)),
             ("BatchNorm2d(3, momentum=None, bias=False)", (3,))]
    for make, _ in pairs:
        t = eval("torch.nn." + make)
        with torch.no_grad():
            for v in t.state_dict().values():
                if v.dtype.is_floating_point:
                    v.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, tuple(v.shape))))
                else:
                    v.fill_(7)
        layer = eval("fc." + make)
        layer.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
        for k, v in layer.state_dict().items():
            np.testing.assert_allclose(v, t.state_dict()[k].numpy(), rtol=1e-7, err_msg=f"{make} {k}")
            assert v.dtype == (np.int64 if k == "num_batches_tracked" else np.float32)
        back = eval("torch.nn." + make)
        back.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
        for k, v in back.state_dict().items():
            assert torch.allclose(v.double(), t.state_dict()[k].double()), f"{make} {k}"


def test_without_affine_or_running_stats_the_state_has_no_such_keys():
    assert fc.BatchNorm2d(3, affine=False).parameters() == []
    assert list(fc.BatchNorm2d(3, affine=False).state_dict()) == ["running_mean", "running_var",
                                                                  "num_batches_tracked"]
    assert list(fc.BatchNorm1d(3, track_running_stats=False).state_dict()) == ["weight", "bias"]
    assert fc.BatchNorm1d(3, affine=False, track_running_stats=False).state_dict() == {}
    assert [n for n, _ in fc.LayerNorm(3, bias=False).named_parameters()] == ["weight"]
    assert fc.GroupNorm(1, 3, affine=False).state_dict() == {}


def test_input_takes_the_dtype_and_stays_put_without_parameters():
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    assert fc.BatchNorm2d(3, affine=False)(x).dtype == np.float32  # the running statistics' dtype
    assert fc.BatchNorm2d(3, affine=False).to(np.float64)(x.astype(np.float32)).dtype == np.float64
    assert fc.GroupNorm(3, 3)(x).dtype == np.float32
    assert fc.GroupNorm(3, 3, affine=False)(x).dtype == np.float64  # nothing to follow: its own
    assert fc.LayerNorm(2, elementwise_affine=False)(x.astype(np.float32)).dtype == np.float32
    layer = fc.BatchNorm2d(3, track_running_stats=False).eval()  # batch statistics in eval too
    out = layer(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-6)
    layer = fc.BatchNorm2d(3, momentum=None)
    for step in range(1, 4):  # momentum=None: the cumulative average of the batch statistics
        layer(x * step)
    np.testing.assert_allclose(layer.running_mean, x.mean(axis=(0, 2, 3)) * 2, rtol=1e-5)
    assert int(layer.num_batches_tracked) == 3


def test_frozen_parameters_and_no_input_gradient():
    x = np.random.default_rng(1).standard_normal((2, 4, 3)).astype(np.float32)
    dy = np.ones_like(x)
    for layer in (fc.GroupNorm(2, 4), fc.LayerNorm(3)):
        layer.weight.requires_grad_(False)
        layer(x)
        assert layer._backward(dy, False) is None
        assert layer.weight.grad is None and layer.bias.grad is not None
        layer.bias.requires_grad_(False)
        layer(x)
        assert layer._backward(dy, False) is None


def test_errors_name_the_problem():
    x = np.zeros((2, 4, 3), np.float32)
    with pytest.raises(ValueError, match=r"num_channels \(4\) must be divisible by num_groups \(3\)"):
        fc.GroupNorm(3, 4)
    with pytest.raises(ValueError, match="num_groups=3"):
        F.group_norm(x, 3)
    with pytest.raises(TypeError, match="num_groups"):
        F.group_norm(x, 2.0)
    with pytest.raises(ValueError, match="more than 1 value"):  # as PyTorch's
        fc.GroupNorm(2, 2)(np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        F.group_norm(np.zeros(4), 2)
    with pytest.raises(ValueError, match=r"\(N, 6, \*\)"):
        fc.GroupNorm(2, 6)(x)
    with pytest.raises(ValueError, match=r"normalized_shape=\[4\], expected input with shape \[\*, 4\]"):
        F.layer_norm(x, 4)
    with pytest.raises(ValueError, match=r"LayerNorm\(\(4, 4\).*\(2, 4, 3\).*\[\*, 4, 4\]"):
        fc.LayerNorm((4, 4))(x)
    with pytest.raises(ValueError, match="positive"):
        fc.LayerNorm((3, 0))
    with pytest.raises(TypeError, match="normalized_shape"):
        fc.LayerNorm(None)
    with pytest.raises(ValueError, match="weight has shape"):
        F.layer_norm(x, 3, np.ones(4))
    with pytest.raises(ValueError, match="bias has shape"):
        F.group_norm(x, 2, None, np.ones(3))
    with pytest.raises(ValueError, match="eps"):
        fc.GroupNorm(2, 4, eps=-1)
    with pytest.raises(TypeError, match="momentum"):
        fc.BatchNorm2d(3, momentum="0.1")
    with pytest.raises(ValueError, match="more than 1 value"):
        fc.BatchNorm1d(4, track_running_stats=False).eval()(np.zeros((1, 4), np.float32))
    _, cache = F.group_norm(x, 2)
    with pytest.raises(ValueError, match="dout has shape"):
        F.group_norm_backward(np.zeros((2, 4)), cache)


def test_zz_report_largest_errors_against_torch(capsys):
    """Prints the largest relative error against PyTorch per layer and dtype (``pytest -s``)."""
    assert WORST
    with capsys.disabled():
        print("\nlargest relative error against PyTorch (max |a - b| / max |b|):")
        for (name, dtype), err in sorted(WORST.items()):
            print(f"  {name:<55} {dtype:<8} {err:.2e}")
