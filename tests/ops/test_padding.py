"""F.pad / F.pad_backward and the padding layers: against PyTorch (negative amounts included),
the cpu tier against the naive oracle, the cuda tier against the cpu tier on Numba's simulator,
finite differences, reprs and the error contract.

Run with ``-s`` to see the largest error against PyTorch per layer and dtype.
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv.kernels import cpu

from helpers import (BACKENDS, DTYPES, HYPOTHESIS, assert_close_to_oracle, grad_rel_error,
                     numeric_grad, random, rel_error)
from op_helpers import cuda_test, split_into


ints = st.integers


MODES = ["constant", "reflect", "replicate", "circular"]


LAYERS = {"constant": "ConstantPad2d", "reflect": "ReflectionPad2d",
          "replicate": "ReplicationPad2d", "circular": "CircularPad2d"}


TORCH_WORST = {}


@pytest.fixture(scope="module", autouse=True)
def torch_error_summary():
    yield
    print("\nlargest error against PyTorch:")
    for (layer, dtype), (err, where) in sorted(TORCH_WORST.items()):
        print(f"  {layer} {dtype}: {err:.3e}  ({where})")


@st.composite
def pad_cases(draw):
    """A mode, an input and (left, right, top, bottom) amounts valid for the mode, some negative."""
    mode = draw(st.sampled_from(MODES))
    h, w = draw(ints(1, 6)), draw(ints(1, 6))
    amounts = []
    for size in (w, w, h, h):
        amounts.append(draw(ints(-(size // 2), size - 1 if mode == "reflect" else size + 2)))
    pad = [amounts[0], amounts[1], amounts[2], amounts[3]]
    if mode == "circular":  # at most the size left after the cuts on that dimension
        for i, size in ((0, w), (2, h)):
            kept = size + min(pad[i], 0) + min(pad[i + 1], 0)
            pad[i], pad[i + 1] = (min(v, max(kept, 0)) for v in (pad[i], pad[i + 1]))
    if draw(st.booleans()) and mode == "constant":
        pad = pad[:2]  # width only
    value = draw(st.sampled_from([0.0, 1.5, -2.0])) if mode == "constant" else 0.0
    return dict(shape=(draw(ints(1, 2)), draw(ints(1, 3)), h, w), pad=tuple(pad), mode=mode,
                value=value, seed=draw(ints(0, 2**32 - 1)))


def full(pad):
    return tuple(pad) + (0, 0) * (len(pad) == 2)


def record(layer, dtype, what, err):
    key = (layer, np.dtype(dtype).name)
    if err > TORCH_WORST.get(key, (-1.0, ""))[0]:
        TORCH_WORST[key] = (err, what)


@pytest.mark.parametrize("backend", ["naive"] + BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=pad_cases())
def test_pad_matches_torch(backend, dtype, case):
    rng = np.random.default_rng(case["seed"])
    x = random(rng, case["shape"], dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.pad(tx, case["pad"], mode=case["mode"],
                                 value=case["value"] if case["mode"] == "constant" else None)
    out = F.pad(x, case["pad"], case["mode"], case["value"], backend=backend)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, ty.detach().numpy())  # a copy: exact
    dout = random(rng, out.shape, dtype)
    ty.backward(torch.from_numpy(dout))
    dx = F.pad_backward(dout, x.shape, case["pad"], case["mode"], backend=backend)
    err = rel_error(dx, tx.grad.numpy())
    record(f"F.pad {case['mode']}", dtype, "dx", err)
    assert dx.dtype == dtype and err <= (1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=pad_cases())
def test_pad_matches_naive(backend, dtype, case):
    rng = np.random.default_rng(case["seed"])
    x = random(rng, case["shape"], dtype)
    args = (case["pad"], case["mode"])
    out = F.pad(x, *args, case["value"], backend=backend)
    np.testing.assert_array_equal(out, F.pad(x, *args, case["value"], backend="naive"))
    dout = random(rng, out.shape, dtype)
    assert_close_to_oracle(F.pad_backward(dout, x.shape, *args, backend=backend),
                           F.pad_backward(dout, x.shape, *args, backend="naive"), "pad_backward")


@pytest.mark.parametrize("mode", MODES)
def test_split_pad_matches_unsplit(mode):
    rng = np.random.default_rng(1)
    x = random(rng, (3, 5, 6, 7), np.float64)
    pad = (2, -1, 3, 1)
    out = F.pad(x, pad, mode, backend="cpu")
    dx = F.pad_backward(out, x.shape, pad, mode, backend="cpu")
    with split_into(3):
        np.testing.assert_array_equal(F.pad(x, pad, mode, backend="cpu"), out)
        np.testing.assert_array_equal(F.pad_backward(out, x.shape, pad, mode, backend="cpu"), dx)


@pytest.mark.parametrize("backend", ["naive"] + BACKENDS)
@pytest.mark.parametrize("mode", MODES)
def test_pad_finite_differences(backend, mode):
    rng = np.random.default_rng(2)
    x = random(rng, (1, 2, 4, 3), np.float64)
    pad = (2, 1, -1, 3)
    dout = random(rng, F.pad(x, pad, mode, backend=backend).shape, np.float64)
    dx = F.pad_backward(dout, x.shape, pad, mode, backend=backend)
    num = numeric_grad(lambda: F.pad(x, pad, mode, backend=backend), x, dout)
    assert grad_rel_error(dx, num) < 1e-9


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES + ["zeros"])
@pytest.mark.parametrize("padding", [1, (2, 0, 1, 3), (-1, 2, 1, -1)])
def test_padding_layers_match_torch(dtype, mode, padding):
    if mode == "zeros":
        ours, theirs = fc.ZeroPad2d(padding), torch.nn.ZeroPad2d(padding)
    elif mode == "constant":
        ours, theirs = fc.ConstantPad2d(padding, 2.5), torch.nn.ConstantPad2d(padding, 2.5)
    else:
        ours, theirs = getattr(fc, LAYERS[mode])(padding), getattr(torch.nn, LAYERS[mode])(padding)
    assert repr(ours) == repr(theirs) and ours.padding == theirs.padding
    rng = np.random.default_rng(3)
    x = random(rng, (2, 3, 4, 5), dtype)
    tx = torch.tensor(x, requires_grad=True)
    ty = theirs(tx)
    out = ours(x)
    assert ours.output_shape(x.shape) == tuple(ty.shape) and out.dtype == dtype
    np.testing.assert_array_equal(out, ty.detach().numpy())
    dy = random(rng, out.shape, dtype)
    ty.backward(torch.from_numpy(dy))
    dx = ours.backward(dy)
    err = rel_error(dx, tx.grad.numpy())
    record(type(ours).__name__, dtype, "dx", err)
    assert err <= (1e-6 if dtype == np.float32 else 1e-14)


def test_padding_layers_in_a_network_and_empty_output():
    model = fc.Sequential(fc.ReflectionPad2d(1), fc.Conv2d(2, 3, 3, rng=0), fc.ReLU(),
                          fc.ZeroPad2d((0, 1, 0, 1)), fc.Flatten(), input_grad=True)
    x = random(np.random.default_rng(4), (2, 2, 5, 5), np.float32)
    out = model(x)
    assert out.shape == (2, 3 * 6 * 6)
    assert model.backward(np.ones_like(out)).shape == x.shape
    empty = F.pad(x, (-3, -2, 0, 0))  # every column cut off: PyTorch gives width 0 too
    assert empty.shape == (2, 2, 5, 0)
    assert F.pad_backward(empty, x.shape, (-3, -2, 0, 0)).sum() == 0


@pytest.mark.parametrize("call, error, words", [
    (lambda x: F.pad(x, (4, 0, 0, 0), "reflect"), ValueError, ["reflect", "(4, 0)", "smaller"]),
    (lambda x: F.pad(x, (0, 0, 0, 5), "circular"), ValueError, ["wrap around more than once"]),
    (lambda x: F.pad(x, (-2, 3, 0, 0), "circular"), ValueError, ["wrap around", "2 of the"]),
    (lambda x: F.pad(x, (1, 1, 0, 0), "mirror"), ValueError, ["'mirror'", "constant"]),
    (lambda x: F.pad(x, (1, 1), "reflect"), ValueError, ["takes 4 amounts"]),
    (lambda x: F.pad(x, (1, 1, 1)), ValueError, ["divisible by 2"]),
    (lambda x: F.pad(x, (1, 1, 1, 1, 1, 1)), ValueError, ["last two dimensions"]),
    (lambda x: F.pad(x, (1.5, 1)), TypeError, ["ints"]),
    (lambda x: F.pad(x, 1), TypeError, ["tuple"]),
    (lambda x: F.pad(x, (1, 1, 0, 0), "reflect", 2.0), ValueError, ["doesn't take a value"]),
    (lambda x: F.pad(x, (-5, 0)), ValueError, ["removes more"]),
    (lambda x: F.pad(x[0], (1, 1)), ValueError, ["4-D", "(3, 4, 4)"]),
    (lambda x: F.pad_backward(np.zeros((2, 3, 4, 5)), x.shape, (1, 1, 0, 0)), ValueError,
     ["dout", "(2, 3, 4, 6)"]),
    (lambda x: fc.ReflectionPad2d(4)(x), ValueError, ["ReflectionPad2d((4, 4, 4, 4))", "(2, 3, 4, 4)"]),
    (lambda x: fc.ZeroPad2d((1, 2))(x), TypeError, ["4-tuple"]),
    (lambda x: fc.ConstantPad2d(1, "a"), TypeError, ["value"]),
])
def test_padding_errors(call, error, words):
    x = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(error) as info:
        call(x)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pads", [(1, 2, 2, 0), (-1, 2, 1, -1), (3, 3, 2, 2)])
def test_pad_matches_cpu(G, close, dtype, mode, pads):
    rng = np.random.default_rng(0)
    x = random(rng, (1, 2, 3, 4), dtype)
    out = G.pad(x, pads, mode, 1.5 if mode == "constant" else 0.0)
    want = cpu.pad(x, pads, mode, 1.5 if mode == "constant" else 0.0)
    close("pad", out, want, exact=True)
    dout = random(rng, want.shape, dtype)
    close("pad_backward", G.pad_backward(dout, x.shape, pads, mode),
          cpu.pad_backward(dout, x.shape, pads, mode))
