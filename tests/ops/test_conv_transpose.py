"""The transposed convolution (ConvTranspose2d, F.conv_transpose2d) with groups, dilation and
output padding: against PyTorch (forward, input and parameter gradients, float32 and float64),
the cpu tier against the naive oracle, the cuda tier against the cpu tier on Numba's simulator,
and finite differences.

Run with ``-s`` to see the largest relative error against PyTorch per layer and dtype.
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

from helpers import BACKENDS, DTYPES, HYPOTHESIS, assert_close_to_oracle, random
from op_helpers import check_fd, check_layer_against_torch, close_to_torch, cuda_test
from op_helpers import torch_error_summary  # noqa: F401  (a fixture)

ints = st.integers


@pytest.fixture(scope="module", autouse=True)
def _summary(torch_error_summary):
    """Print the largest relative error against PyTorch after the module (``pytest -s``)."""


@st.composite
def transpose_variants(draw):
    groups = draw(ints(1, 3))
    c, k = groups * draw(ints(1, 3)), groups * draw(ints(1, 3))
    kernel = (draw(ints(1, 3)), draw(ints(1, 3)))
    stride = (draw(ints(1, 3)), draw(ints(1, 3)))
    dilation = (draw(ints(1, 2)), draw(ints(1, 2)))
    output_padding = tuple(draw(ints(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    padding = (draw(ints(0, 2)), draw(ints(0, 2)))
    hw = []
    for f, s, d, p, op in zip(kernel, stride, dilation, padding, output_padding):
        low = 1  # the output must keep at least one row: (H - 1)*s - 2p + d(f - 1) + op + 1 >= 1
        while (low - 1) * s - 2 * p + d * (f - 1) + op + 1 < 1:
            low += 1
        hw.append(draw(ints(low, low + 3)))
    return dict(n=draw(ints(1, 3)), c=c, k=k, groups=groups, kernel=kernel, stride=stride,
                padding=padding, output_padding=output_padding, dilation=dilation, hw=tuple(hw),
                bias=draw(st.booleans()), seed=draw(ints(0, 2**32 - 1)))


def transpose_layer_pair(case, dtype):
    args = (case["c"], case["k"], case["kernel"], case["stride"], case["padding"],
            case["output_padding"], case["groups"], case["bias"], case["dilation"])
    t = torch.nn.ConvTranspose2d(*args).to(torch.float64 if dtype == np.float64 else torch.float32)
    layer = fc.ConvTranspose2d(*args, rng=0, dtype=dtype)
    layer.load_state_dict({key: v.detach().numpy() for key, v in t.state_dict().items()})
    return layer, t


# ---------------------------------------------------------------------------------------------
# Against PyTorch

@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=transpose_variants())
def test_conv_transpose2d_layer_matches_torch(dtype, case):
    rng = np.random.default_rng(case["seed"])
    layer, t = transpose_layer_pair(case, dtype)
    x = random(rng, (case["n"], case["c"]) + case["hw"], dtype)
    check_layer_against_torch("ConvTranspose2d", layer, t, x, rng)


@pytest.mark.parametrize("backend", ["naive"] + BACKENDS)
def test_functional_conv_transpose2d_matches_torch(backend):
    rng = np.random.default_rng(4)
    x, w, b = random(rng, (2, 4, 3, 5), np.float64), random(rng, (4, 3, 3, 2), np.float64), None
    out, cache = F.conv_transpose2d(x, w, b, 2, (1, 0), (1, 0), 2, (1, 2), backend=backend)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv_transpose2d(tx, tw, None, 2, (1, 0), (1, 0), 2, (1, 2))
    close_to_torch("F.conv_transpose2d", "out", out, ty)
    dy = random(rng, out.shape, np.float64)
    ty.backward(torch.from_numpy(dy))
    dx, dw, db = F.conv_transpose2d_backward(dy, cache)
    assert db is None
    close_to_torch("F.conv_transpose2d", "dx", dx, tx.grad)
    close_to_torch("F.conv_transpose2d", "dw", dw, tw.grad)


# ---------------------------------------------------------------------------------------------
# The fast tiers against the oracle, finite differences (float64)

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=transpose_variants(), need_dx=st.booleans())
def test_conv_transpose2d_matches_naive(backend, dtype, case, need_dx):
    rng = np.random.default_rng(case["seed"])
    x = random(rng, (case["n"], case["c"]) + case["hw"], dtype)
    w = random(rng, (case["c"], case["k"] // case["groups"]) + case["kernel"], dtype)
    b = random(rng, (case["k"],), dtype) if case["bias"] else None
    args = (case["stride"], case["padding"], case["output_padding"], case["groups"],
            case["dilation"])
    results = {}
    for tier in ("naive", backend):
        out, cache = F.conv_transpose2d(x, w, b, *args, backend=tier)
        dout = random(np.random.default_rng(2), out.shape, dtype)
        results[tier] = (out,) + F.conv_transpose2d_backward(dout, cache, need_dx=need_dx)
    for name, got, ref in zip(("out", "dx", "dw", "db"), results[backend], results["naive"]):
        assert (got is None) == (ref is None), name
        if ref is not None:
            assert_close_to_oracle(fc.to_numpy(got), ref, f"conv_transpose2d {name}")


@pytest.mark.parametrize("backend", ["naive"] + BACKENDS)
def test_conv_transpose2d_finite_differences(backend):
    rng = np.random.default_rng(10)
    x, w, b = (random(rng, (2, 4, 3, 2), np.float64), random(rng, (4, 1, 3, 2), np.float64),
               random(rng, (2,), np.float64))
    args = ((2, 1), (1, 0), (1, 0), 2, (1, 2))
    out, cache = F.conv_transpose2d(x, w, b, *args, backend=backend)
    dout = random(rng, out.shape, np.float64)
    dx, dw, db = F.conv_transpose2d_backward(dout, cache)

    def f():
        return F.conv_transpose2d(x, w, b, *args, backend=backend)[0]
    check_fd(f, {"x": (x, dx), "w": (w, dw), "b": (b, db)}, dout)


def test_dilation_one_output_padding_below_dilation_is_allowed():
    layer = fc.ConvTranspose2d(1, 1, 3, stride=1, dilation=2, output_padding=1, rng=0)
    assert layer.output_shape((1, 1, 5, 5)) == (1, 1, 10, 10)  # as torch


# ---------------------------------------------------------------------------------------------
# The cuda tier against the cpu tier (Numba's simulator, tiny shapes)

@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups, stride, padding, output_padding, dilation", [
    (1, (2, 1), (1, 0), (1, 0), (1, 2)),
    (2, 2, (0, 1), (1, 1), 1),
    (2, 1, (0, 0), (1, 0), (2, 1)),  # output_padding below the dilation, stride 1
])
def test_conv_transpose_matches_cpu(G, close, dtype, groups, stride, padding, output_padding,
                                    dilation):
    rng = np.random.default_rng(groups)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    args = (pair(stride), pair(padding), pair(output_padding), pair(dilation), groups)
    x, w = random(rng, (2, 4, 2, 3), dtype), random(rng, (4, 2, 2, 2), dtype)
    b = random(rng, 2 * groups, dtype)
    out, saved = G.conv_transpose2d(x, w, b, *args)
    want, _ = cpu.conv_transpose2d(x, w, b, *args)
    close("conv_transpose2d", out, want)
    dout = random(rng, want.shape, dtype)
    ref = cpu.conv_transpose2d_backward(dout, x, w, True, *args, None, True)
    for use_saved in (True, False):
        got = G.conv_transpose2d_backward(dout, x, w, True, *args, saved if use_saved else None,
                                          True)
        for name, g, r in zip(("dx", "dw", "db"), got, ref):
            close(f"conv_transpose2d {name}", g, r)
