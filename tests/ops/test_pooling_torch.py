"""Pooling with all of PyTorch's options: MaxPool2d (padding, dilation, ceil_mode, return_indices),
AvgPool2d (padding, ceil_mode, count_include_pad, divisor_override), AdaptiveAvgPool2d,
AdaptiveMaxPool2d and MaxUnpool2d, and their functional forms.

Against PyTorch (forward, indices, input gradient, float32 and float64, random configurations),
against the naive oracle (the cpu tier, ties included), finite differences in float64 on every
tier, and the tie and NaN rules (the layers and the errors: test_pooling_layers.py). Run with
``-s`` to see the largest error against PyTorch per layer and dtype (also saved to
``fastconv_pooling_vs_torch.json`` in pytest's base temporary directory).
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import contextlib
import json

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv._shapes import pool_output_hw

from helpers import (ALL_TIERS, BACKENDS, DTYPES, HF, HYPOTHESIS, assert_close_to_oracle,
                     grad_rel_error, host, numeric_grad, random, rel_error, tie_free)
from op_helpers import forced_splits

ints = st.integers
#: Largest relative error against PyTorch, per (layer, dtype): (error, what).
VS_TORCH = {}
TOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-13}


@pytest.fixture(scope="module", autouse=True)
def torch_error_summary(tmp_path_factory):
    yield
    rows = {f"{layer} {dtype}": {"rel_error": err, "where": where}
            for (layer, dtype), (err, where) in sorted(VS_TORCH.items())}
    path = tmp_path_factory.getbasetemp() / "fastconv_pooling_vs_torch.json"
    path.write_text(json.dumps(rows, indent=2))
    print("\nlargest relative error against PyTorch (max|ours - torch| / max|torch|):")
    for key, row in rows.items():
        print(f"  {key}: {row['rel_error']:.3e}  ({row['where']})")


def against_torch(layer, what, ours, theirs):
    """Assert ``ours`` matches the torch tensor ``theirs`` within the dtype's rounding; record it."""
    ref = theirs.detach().numpy()
    ours = host(ours)
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, (what, ours.shape, ref.shape)
    err = rel_error(ours, ref)
    key = (layer, ref.dtype.name)
    if err >= VS_TORCH.get(key, (-1.0, ""))[0]:
        VS_TORCH[key] = (err, what)
    assert err <= TOL[ref.dtype], f"{layer} {what}: relative error {err:.3e} against torch"


def permuted(rng, shape, dtype):
    """Distinct values (a permutation, scaled): no ties, so indices can be compared with torch."""
    return tie_free(rng, shape, dtype, gap=0.25)


def as_arg(pair_value, square):
    return pair_value[0] if square else pair_value


# ---------------------------------------------------------------------------------------------
# Strategies

@st.composite
def max_cases(draw, dilation=True):
    """A max/avg pooling geometry with at least one output and no window over padding alone."""
    square = draw(st.booleans())
    kh = draw(ints(1, 4))
    kw = kh if square else draw(ints(1, 4))
    dh = draw(ints(1, 3)) if dilation else 1
    dw = dh if square or not dilation else draw(ints(1, 3))
    ph = draw(ints(0, kh // 2))
    pw = ph if square else draw(ints(0, kw // 2))
    stride = draw(st.one_of(st.none(), ints(1, 3), st.tuples(ints(1, 3), ints(1, 3))))
    ceil_mode = draw(st.booleans())
    lo_h, lo_w = max(1, dh * (kh - 1) + 1 - 2 * ph), max(1, dw * (kw - 1) + 1 - 2 * pw)
    h, w = draw(ints(lo_h, lo_h + 6)), draw(ints(lo_w, lo_w + 6))
    s = (kh, kw) if stride is None else (stride, stride) if isinstance(stride, int) else stride
    try:
        pool_output_hw((h, w), (kh, kw), s, (ph, pw), (dh, dw), ceil_mode)
    except ValueError:  # a dilated window stepping over the whole input
        assume(False)
    args = dict(kernel_size=as_arg((kh, kw), square), stride=stride,
                padding=as_arg((ph, pw), square), ceil_mode=ceil_mode)
    if dilation:
        args["dilation"] = as_arg((dh, dw), square)
    return dict(shape=(draw(ints(1, 2)), draw(ints(1, 3)), h, w), args=args,
                seed=draw(ints(0, 2**16)))


@st.composite
def avg_cases(draw):
    case = draw(max_cases(dilation=False))
    case["args"]["count_include_pad"] = draw(st.booleans())
    case["args"]["divisor_override"] = draw(st.sampled_from([None, None, 1, 3, 7, -2]))
    return case


@st.composite
def adaptive_cases(draw):
    h, w = draw(ints(1, 9)), draw(ints(1, 9))
    size = st.one_of(st.none(), ints(1, 7))
    output_size = draw(st.one_of(ints(1, 7), st.tuples(size, size)))
    return dict(shape=(draw(ints(1, 2)), draw(ints(1, 3)), h, w), output_size=output_size,
                seed=draw(ints(0, 2**16)))


@st.composite
def unpool_cases(draw):
    case = draw(max_cases(dilation=False))
    case["args"]["ceil_mode"] = False
    case["give_size"] = draw(st.booleans())
    return case


def default_fits(args, pooled_shape, shape):
    """Whether unpooling without ``output_size`` restores ``shape`` (else it must be given)."""
    try:
        return fc.MaxUnpool2d(**args).output_shape(pooled_shape) == tuple(shape)
    except ValueError:  # the default size is not even positive
        return False


# ---------------------------------------------------------------------------------------------
# Against PyTorch

def torch_pair(rng, shape, dtype, ties_free=True):
    x = permuted(rng, shape, dtype) if ties_free else random(rng, shape, dtype)
    return x, torch.tensor(x, requires_grad=True)


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=max_cases())
def test_max_pool2d_layer_matches_torch(dtype, case):
    rng = np.random.default_rng(case["seed"])
    x, tx = torch_pair(rng, case["shape"], dtype)
    layer = fc.MaxPool2d(**case["args"], return_indices=True)
    theirs = torch.nn.MaxPool2d(**case["args"], return_indices=True)
    (out, idx), (tout, tidx) = layer(x), theirs(tx)
    np.testing.assert_array_equal(out, tout.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    assert layer.output_shape(x.shape) == tuple(tout.shape)
    dy = random(rng, out.shape, dtype)
    tout.backward(torch.from_numpy(dy))
    against_torch("MaxPool2d", "out", out, tout)
    against_torch("MaxPool2d", "dx", layer.backward(dy), tx.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=avg_cases())
def test_avg_pool2d_layer_matches_torch(dtype, case):
    rng = np.random.default_rng(case["seed"])
    x, tx = torch_pair(rng, case["shape"], dtype, ties_free=False)
    layer, theirs = fc.AvgPool2d(**case["args"]), torch.nn.AvgPool2d(**case["args"])
    out, tout = layer(x), theirs(tx)
    assert layer.output_shape(x.shape) == tuple(tout.shape)
    dy = random(rng, out.shape, dtype)
    tout.backward(torch.from_numpy(dy))
    against_torch("AvgPool2d", "out", out, tout)
    against_torch("AvgPool2d", "dx", layer.backward(dy), tx.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=adaptive_cases())
def test_adaptive_pools_match_torch(dtype, case):
    rng = np.random.default_rng(case["seed"])
    x, tx = torch_pair(rng, case["shape"], dtype)
    size = case["output_size"]
    layer, theirs = fc.AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size)
    out, tout = layer(x), theirs(tx)
    assert layer.output_shape(x.shape) == tuple(tout.shape)
    dy = random(rng, out.shape, dtype)
    tout.backward(torch.from_numpy(dy))
    against_torch("AdaptiveAvgPool2d", "out", out, tout)
    against_torch("AdaptiveAvgPool2d", "dx", layer.backward(dy), tx.grad)

    tx.grad = None
    layer, theirs = fc.AdaptiveMaxPool2d(size, True), torch.nn.AdaptiveMaxPool2d(size, True)
    (out, idx), (tout, tidx) = layer(x), theirs(tx)
    np.testing.assert_array_equal(out, tout.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    tout.backward(torch.from_numpy(dy))
    against_torch("AdaptiveMaxPool2d", "out", out, tout)
    against_torch("AdaptiveMaxPool2d", "dx", layer.backward(dy), tx.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=unpool_cases())
def test_max_unpool2d_layer_matches_torch(dtype, case):
    rng = np.random.default_rng(case["seed"])
    args = dict(case["args"])
    del args["ceil_mode"]
    pooled, idx = torch.nn.functional.max_pool2d(torch.from_numpy(permuted(rng, case["shape"], dtype)),
                                                 **args, return_indices=True)
    x = pooled.numpy()
    tx = torch.tensor(x, requires_grad=True)
    unpool_args = {k: v for k, v in args.items() if k != "dilation"}
    layer, theirs = fc.MaxUnpool2d(**unpool_args), torch.nn.MaxUnpool2d(**unpool_args)
    # the pooled input's size (in range), needed where it differs from the default size
    size = None if default_fits(unpool_args, x.shape, case["shape"]) and not case["give_size"] \
        else case["shape"]
    out, tout = layer(x, idx.numpy(), size), theirs(tx, idx, size)
    dy = random(rng, out.shape, dtype)
    tout.backward(torch.from_numpy(dy))
    against_torch("MaxUnpool2d", "out", out, tout)
    against_torch("MaxUnpool2d", "dx", layer.backward(dy), tx.grad)


def test_repr_and_attributes_match_torch():
    pairs = [(fc.MaxPool2d(3, 2, 1), torch.nn.MaxPool2d(3, 2, 1)),
             (fc.MaxPool2d((2, 3), dilation=(1, 2), ceil_mode=True, return_indices=True),
              torch.nn.MaxPool2d((2, 3), dilation=(1, 2), ceil_mode=True, return_indices=True)),
             (fc.AvgPool2d(3, 2, 1, True, False, 2), torch.nn.AvgPool2d(3, 2, 1, True, False, 2)),
             (fc.AvgPool2d((2, 4), padding=(1, 2)), torch.nn.AvgPool2d((2, 4), padding=(1, 2))),
             (fc.AdaptiveAvgPool2d(1), torch.nn.AdaptiveAvgPool2d(1)),
             (fc.AdaptiveAvgPool2d((None, 3)), torch.nn.AdaptiveAvgPool2d((None, 3))),
             (fc.AdaptiveMaxPool2d((2, 2), True), torch.nn.AdaptiveMaxPool2d((2, 2), True)),
             (fc.MaxUnpool2d(2), torch.nn.MaxUnpool2d(2)),
             (fc.MaxUnpool2d(3, 2, 1), torch.nn.MaxUnpool2d(3, 2, 1))]
    names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices",
             "count_include_pad", "divisor_override", "output_size"]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        for name in names:
            if hasattr(theirs, name):
                assert getattr(ours, name) == getattr(theirs, name), (repr(ours), name)


def test_resnet_stem_and_global_average_pool_match_torch():
    """MaxPool2d(3, 2, padding=1) then AdaptiveAvgPool2d(1): the ResNet pools, float64."""
    rng = np.random.default_rng(0)
    x, tx = torch_pair(rng, (2, 3, 13, 12), np.float64)
    ours = fc.Sequential(fc.MaxPool2d(3, 2, padding=1), fc.AdaptiveAvgPool2d(1), input_grad=True)
    theirs = torch.nn.Sequential(torch.nn.MaxPool2d(3, 2, padding=1), torch.nn.AdaptiveAvgPool2d(1))
    out, tout = ours(x), theirs(tx)
    assert out.shape == (2, 3, 1, 1)
    dy = random(rng, out.shape, np.float64)
    tout.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(ours.backward(dy), tx.grad.numpy(), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# The fast tiers against the naive oracle (ties and all)

def _max_inputs(rng, shape, dtype, ties):
    return rng.integers(-2, 3, shape).astype(dtype) if ties else random(rng, shape, dtype)


def _max_f_args(args):
    """MaxPool2d arguments as F.max_pool2d's (which has no return_indices)."""
    return {k: v for k, v in args.items() if k != "return_indices"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=max_cases(), ties=st.booleans())
def test_max_pool2d_options_match_naive(backend, dtype, case, ties):
    rng = np.random.default_rng(case["seed"])
    x = _max_inputs(rng, case["shape"], dtype, ties)
    out, switches = HF.max_pool2d(x, **case["args"], backend=backend)
    ref, ref_sw = HF.max_pool2d(x, **case["args"], backend="naive")
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(switches, ref_sw)  # first maximum wins, also over padding
    dout = random(rng, out.shape, dtype)
    assert_close_to_oracle(HF.max_pool2d_backward(dout, switches, x.shape, backend=backend),
                           HF.max_pool2d_backward(dout, ref_sw, x.shape, backend="naive"),
                           "max_pool2d options dx")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=avg_cases())
def test_avg_pool2d_options_match_naive(backend, dtype, case):
    rng = np.random.default_rng(case["seed"])
    x = random(rng, case["shape"], dtype)
    out = HF.avg_pool2d(x, **case["args"], backend=backend)
    assert out.dtype == dtype
    assert_close_to_oracle(out, HF.avg_pool2d(x, **case["args"], backend="naive"), "avg_pool2d options")
    dout = random(rng, out.shape, dtype)
    assert_close_to_oracle(HF.avg_pool2d_backward(dout, x.shape, **case["args"], backend=backend),
                           HF.avg_pool2d_backward(dout, x.shape, **case["args"], backend="naive"),
                           "avg_pool2d options dx")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=adaptive_cases(), ties=st.booleans())
def test_adaptive_pools_match_naive(backend, dtype, case, ties):
    rng = np.random.default_rng(case["seed"])
    x = _max_inputs(rng, case["shape"], dtype, ties)
    size = case["output_size"]
    out = HF.adaptive_avg_pool2d(x, size, backend=backend)
    assert_close_to_oracle(out, HF.adaptive_avg_pool2d(x, size, backend="naive"), "adaptive_avg_pool2d")
    dout = random(rng, out.shape, dtype)
    assert_close_to_oracle(HF.adaptive_avg_pool2d_backward(dout, x.shape, backend=backend),
                           HF.adaptive_avg_pool2d_backward(dout, x.shape, backend="naive"),
                           "adaptive_avg_pool2d dx")
    out, switches = HF.adaptive_max_pool2d(x, size, backend=backend)
    ref, ref_sw = HF.adaptive_max_pool2d(x, size, backend="naive")
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(switches, ref_sw)
    np.testing.assert_array_equal(
        HF.adaptive_max_pool2d_backward(dout, switches, x.shape, backend=backend),
        HF.adaptive_max_pool2d_backward(dout, ref_sw, x.shape, backend="naive"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=unpool_cases(), repeats=st.booleans())
def test_max_unpool2d_matches_naive(backend, dtype, case, repeats):
    """Indices of a real pooling, or arbitrary ones with repeats (the last write wins)."""
    rng = np.random.default_rng(case["seed"])
    args = {k: v for k, v in case["args"].items() if k not in ("ceil_mode", "dilation")}
    x = random(rng, case["shape"], dtype)
    pooled, indices = HF.max_pool2d(x, **args, backend=backend)
    size = None if default_fits(args, pooled.shape, case["shape"]) and not case["give_size"] \
        else case["shape"][2:]
    out_hw = host(F.max_unpool2d(pooled, indices, **args, output_size=size, backend="naive")).shape[2:]
    if repeats:
        indices = rng.integers(0, out_hw[0] * out_hw[1], indices.shape)
    out = HF.max_unpool2d(pooled, indices, **args, output_size=size, backend=backend)
    np.testing.assert_array_equal(out, HF.max_unpool2d(pooled, indices, **args, output_size=size,
                                                       backend="naive"))
    dout = random(rng, out.shape, dtype)
    dx = HF.max_unpool2d_backward(dout, indices, backend=backend)
    np.testing.assert_array_equal(dx, HF.max_unpool2d_backward(dout, indices, backend="naive"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 5, 9, 11), (2, 3, 1, 3), (1, 2, 2, 1), (4, 3, 4, 4)])
def test_global_pooling_reduction_matches_naive(dtype, shape):
    """AdaptiveAvgPool2d(1) / AdaptiveMaxPool2d(1) take the per-plane reduction kernel; the four
    partial sums cover every remainder of the plane length, split into thread shares too."""
    rng = np.random.default_rng(4)
    x = rng.integers(-3, 4, shape).astype(dtype)  # ties: the first maximum wins
    x.reshape(-1)[rng.choice(x.size, 2, replace=False)] = np.nan
    for splits in (False, True):
        with forced_splits(3) if splits else contextlib.nullcontext():
            for backend in BACKENDS:
                out, sw = HF.adaptive_max_pool2d(x, 1, backend=backend)
                ref, ref_sw = HF.adaptive_max_pool2d(x, 1, backend="naive")
                np.testing.assert_array_equal(out, ref)
                np.testing.assert_array_equal(sw, ref_sw)
                y = random(rng, shape, dtype)
                assert_close_to_oracle(HF.adaptive_avg_pool2d(y, (1, 1), backend=backend),
                                       HF.adaptive_avg_pool2d(y, (1, 1), backend="naive"),
                                       "global average pool")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride, padding, ceil_mode", [
    (2, 2, 0, True), (3, 2, 0, True), (3, 1, 1, False), (2, 2, 1, False), (3, 3, 0, True)])
def test_fast_path_neighbours_match_naive_in_split_shares(dtype, kernel, stride, padding, ceil_mode):
    """2x2 / 3x3 windows with ceil mode or padding leave the unrolled kernels for the general one;
    ceil mode on sizes that need no extra window keeps them. Every variant, in uneven shares."""
    rng = np.random.default_rng(8)
    for hw in ((9, 11), (8, 12)):
        x = rng.integers(0, 4, (5, 3) + hw).astype(dtype)
        x.reshape(-1)[rng.choice(x.size, 9, replace=False)] = np.nan
        with forced_splits(3):
            got = HF.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode, backend="cpu")
        ref = HF.max_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode, backend="naive")
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])
        y = random(rng, x.shape, dtype)
        with forced_splits(3):
            avg = HF.avg_pool2d(y, kernel, stride, padding, ceil_mode, False, backend="cpu")
            dy = random(rng, avg.shape, dtype)
            dx = HF.avg_pool2d_backward(dy, y.shape, kernel, stride, padding, ceil_mode, False,
                                        backend="cpu")
        assert_close_to_oracle(avg, HF.avg_pool2d(y, kernel, stride, padding, ceil_mode, False,
                                                  backend="naive"), "split avg_pool2d options")
        assert_close_to_oracle(dx, HF.avg_pool2d_backward(dy, y.shape, kernel, stride, padding,
                                                          ceil_mode, False, backend="naive"),
                               "split avg_pool2d options dx")


# ---------------------------------------------------------------------------------------------
# Ties, padding, NaN: the switch rules

@pytest.mark.parametrize("backend", ALL_TIERS)
def test_ties_go_to_the_first_maximum_inside_the_input(backend):
    """Constant input: every window's switch is its first tap inside the input (padding is
    -inf, never chosen), with padding, dilation and ceil mode alike; torch agrees."""
    x = np.full((1, 2, 5, 6), -np.inf, np.float32)
    for args in [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2, stride=2, ceil_mode=True),
                 dict(kernel_size=3, stride=1, padding=1, dilation=2),
                 dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), ceil_mode=True)]:
        for value in (-np.inf, 1.5):
            x[:] = value
            out, switches = HF.max_pool2d(x, **args, backend=backend)
            tout, tidx = torch.nn.functional.max_pool2d(torch.from_numpy(x), **args, return_indices=True)
            np.testing.assert_array_equal(switches, tidx.numpy())
            np.testing.assert_array_equal(out, value)
    # adaptive bins, ties everywhere: the first element of each bin
    x = np.zeros((1, 1, 5, 7), np.float64)
    out, switches = HF.adaptive_max_pool2d(x, (3, 4), backend=backend)
    rows, cols = np.array([0, 1, 3]), np.array([0, 1, 3, 5])
    np.testing.assert_array_equal(switches[0, 0], rows[:, None] * 7 + cols[None, :])


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_plateau_with_padding_and_dilation(backend):
    x = np.array([[4, 1, 4, 0],
                  [0, 4, 2, 4],
                  [3, 3, 1, 1]], np.float64)[None, None]
    out, switches = HF.max_pool2d(x, 2, 2, padding=1, backend=backend)
    np.testing.assert_array_equal(out[0, 0], [[4, 4, 0], [3, 4, 4]])
    np.testing.assert_array_equal(switches[0, 0], [[0, 2, 3], [8, 5, 7]])
    out, switches = HF.max_pool2d(x, 2, 1, dilation=2, backend=backend)  # taps two apart
    np.testing.assert_array_equal(out[0, 0], [[4, 3]])
    np.testing.assert_array_equal(switches[0, 0], [[0, 9]])  # (0, 0) ties with (0, 2)
    dx = HF.max_pool2d_backward(np.array([[[[1.0, 2.0]]]]), switches, x.shape, backend=backend)
    expected = np.zeros(12)
    expected[[0, 9]] = [1, 2]
    np.testing.assert_array_equal(dx.ravel(), expected)  # the tied twins get nothing


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_first_nan_wins_over_padding_and_dilation(backend, dtype):
    x = np.arange(30, dtype=dtype).reshape(1, 1, 5, 6)
    x[0, 0, 0, 3] = np.nan
    x[0, 0, 2, 1] = np.nan
    x[0, 0, 3, 2] = np.nan
    x[0, 0, 4, 1] = np.nan
    out, switches = HF.max_pool2d(x, 3, 2, padding=1, backend=backend)
    assert np.isnan(out[0, 0, 0, 2]) and switches[0, 0, 0, 2] == 3
    assert np.isnan(out[0, 0, 1, 1]) and switches[0, 0, 1, 1] == 13  # first of (2, 1), (3, 2)
    assert np.isnan(out[0, 0, 2, 1]) and switches[0, 0, 2, 1] == 20  # first of (3, 2), (4, 1)
    assert not np.isnan(out[0, 0, 0, 0]) and switches[0, 0, 0, 0] == 7
    out, switches = HF.max_pool2d(x, 2, 1, dilation=(2, 3), backend=backend)
    assert np.isnan(out[0, 0, 0, 0]) and switches[0, 0, 0, 0] == 3  # taps 0, 3, 12, 15
    out, switches = HF.adaptive_max_pool2d(x, (2, 2), backend=backend)
    assert np.isnan(out[0, 0, 0, 1]) and switches[0, 0, 0, 1] == 3
    assert np.isnan(out[0, 0, 1, 0]) and switches[0, 0, 1, 0] == 13


# ---------------------------------------------------------------------------------------------
# Finite differences (float64), every tier

@pytest.mark.parametrize("backend", ALL_TIERS)
def test_gradients_match_finite_differences(backend):
    rng = np.random.default_rng(12)
    x = tie_free(rng, (2, 2, 6, 7), np.float64, gap=0.01)  # gaps >> h: no switch flips
    cases = {
        "max_pool2d": (lambda: HF.max_pool2d(x, 3, 2, 1, (1, 2), True, backend=backend)[0],
                       lambda d: HF.max_pool2d_backward(d, HF.max_pool2d(x, 3, 2, 1, (1, 2), True,
                                                                         backend=backend)[1],
                                                        x.shape, backend=backend)),
        "avg_pool2d": (lambda: HF.avg_pool2d(x, (3, 2), (2, 1), (1, 1), True, False, backend=backend),
                       lambda d: HF.avg_pool2d_backward(d, x.shape, (3, 2), (2, 1), (1, 1), True,
                                                        False, backend=backend)),
        "avg_pool2d divisor": (lambda: HF.avg_pool2d(x, 2, 1, 1, divisor_override=3, backend=backend),
                               lambda d: HF.avg_pool2d_backward(d, x.shape, 2, 1, 1,
                                                                divisor_override=3, backend=backend)),
        "adaptive_avg_pool2d": (lambda: HF.adaptive_avg_pool2d(x, (4, 3), backend=backend),
                                lambda d: HF.adaptive_avg_pool2d_backward(d, x.shape, backend=backend)),
        "global_avg_pool2d": (lambda: HF.adaptive_avg_pool2d(x, 1, backend=backend),
                              lambda d: HF.adaptive_avg_pool2d_backward(d, x.shape, backend=backend)),
        "adaptive_max_pool2d": (lambda: HF.adaptive_max_pool2d(x, (4, 5), backend=backend)[0],
                                lambda d: HF.adaptive_max_pool2d_backward(
                                    d, HF.adaptive_max_pool2d(x, (4, 5), backend=backend)[1], x.shape,
                                    backend=backend)),
    }
    for name, (forward, backward) in cases.items():
        dout = random(rng, forward().shape, np.float64)
        err = grad_rel_error(backward(dout), numeric_grad(forward, x, dout))
        assert err < 1e-8, f"{name}: {err:.2e}"
    # unpooling, with respect to its values (the indices are fixed)
    pooled, indices = HF.max_pool2d(x, 2, backend=backend)
    pooled = np.ascontiguousarray(pooled)

    def unpool():
        return HF.max_unpool2d(pooled, indices, 2, output_size=(6, 7), backend=backend)

    dout = random(rng, unpool().shape, np.float64)
    err = grad_rel_error(HF.max_unpool2d_backward(dout, indices, backend=backend),
                         numeric_grad(unpool, pooled, dout))
    assert err < 1e-8, f"max_unpool2d: {err:.2e}"
