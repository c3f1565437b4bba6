"""Dilated, grouped and depthwise convolution and the padding modes of Conv2d: against PyTorch
(forward, input and parameter gradients, float32 and float64), the cpu tier against the naive
oracle, the cuda tier against the cpu tier on Numba's simulator (tiny shapes), finite
differences, state dicts both ways, and the error contract (ConvTranspose2d's too; its own
tests: test_conv_transpose.py).

Run with ``-s`` to see the largest relative error against PyTorch per layer and dtype.
"""
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
from fastconv._shapes import conv_output_hw
from fastconv.kernels import cpu, naive

from helpers import BACKENDS, DTYPES, HYPOTHESIS, assert_close_to_oracle, random
from op_helpers import check_fd, check_layer_against_torch, cuda_test, on_simulator, split_into
from op_helpers import torch_error_summary  # noqa: F401  (a fixture)

ints = st.integers
#: The cuda tier on the simulator, which runs each GPU thread as Python: 4 fixed examples.
FEW = on_simulator(4)


@pytest.fixture(scope="module", autouse=True)
def _summary(torch_error_summary):
    """Print the largest relative error against PyTorch after the module (``pytest -s``)."""


# ---------------------------------------------------------------------------------------------
# Strategies

@st.composite
def conv_variants(draw, modes=("zeros",)):
    """A valid Conv2d configuration: channels with groups (depthwise with a multiplier half the
    time), kernel, stride, padding (int, pair, "same", "valid"), dilation, padding_mode, input."""
    if draw(st.booleans()):  # depthwise: groups == in_channels, out = m * in
        groups = c = draw(ints(1, 4))
        k = c * draw(ints(1, 2))
    else:
        groups = draw(ints(1, 3))
        c, k = groups * draw(ints(1, 3)), groups * draw(ints(1, 3))
    kernel = (draw(ints(1, 3)), draw(ints(1, 3)))
    dilation = (draw(ints(1, 3)), draw(ints(1, 3)))
    kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    if kind == "same":
        stride, padding = 1, "same"
        pads = [((d * (f - 1)) // 2, d * (f - 1) - (d * (f - 1)) // 2) for f, d in zip(kernel, dilation)]
    else:
        stride = (draw(ints(1, 3)), draw(ints(1, 3)))
        padding = {"int": draw(ints(0, 2)), "pair": (draw(ints(0, 2)), draw(ints(0, 2))),
                   "valid": "valid"}[kind]
        p = (0, 0) if kind == "valid" else (padding, padding) if kind == "int" else padding
        pads = [(p[0], p[0]), (p[1], p[1])]
    mode = draw(st.sampled_from(modes))
    hw = []
    for (before, after), f, d in zip(pads, kernel, dilation):
        low = max(1, d * (f - 1) + 1 - before - after)
        if mode in ("reflect", "circular"):
            low = max(low, max(before, after) + (mode == "reflect"))
        hw.append(draw(ints(low, low + 5)))
    return dict(n=draw(ints(1, 3)), c=c, k=k, groups=groups, kernel=kernel, stride=stride,
                padding=padding, dilation=dilation, padding_mode=mode, hw=tuple(hw),
                bias=draw(st.booleans()), seed=draw(ints(0, 2**32 - 1)))


def conv_layer_pair(case, dtype):
    """(fastconv Conv2d, torch Conv2d) with the same weights, loaded from torch's state dict."""
    args = (case["c"], case["k"], case["kernel"], case["stride"], case["padding"], case["dilation"],
            case["groups"], case["bias"], case["padding_mode"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: 'same' with an even kernel pads a copy
        t = torch.nn.Conv2d(*args).to(torch.float64 if dtype == np.float64 else torch.float32)
    layer = fc.Conv2d(*args, rng=0, dtype=dtype)
    layer.load_state_dict({key: v.detach().numpy() for key, v in t.state_dict().items()})
    return layer, t


def conv_label(case):
    if case["groups"] == case["c"] and case["groups"] > 1:
        return "Conv2d depthwise"
    return "Conv2d grouped" if case["groups"] > 1 else "Conv2d"


@st.composite
def variant_cases(draw):
    groups = draw(ints(1, 2))
    depthwise = draw(st.booleans())
    c = groups * (1 if depthwise else draw(ints(1, 2)))
    k = groups * draw(ints(1, 2))
    kernel = (draw(ints(1, 2)), draw(ints(1, 3)))
    dilation = (draw(ints(1, 2)), draw(ints(1, 2)))
    pads = tuple(draw(ints(0, 1)) for _ in range(4))
    hw = tuple(max(1, d * (f - 1) + 1 - pads[2 * i] - pads[2 * i + 1]) + draw(ints(0, 2))
               for i, (f, d) in enumerate(zip(kernel, dilation)))
    return dict(n=draw(ints(1, 2)), c=c, k=k, groups=groups, kernel=kernel, dilation=dilation,
                stride=(draw(ints(1, 2)), draw(ints(1, 2))), pads=pads, hw=hw,
                bias=draw(st.booleans()), seed=draw(ints(0, 2**16)))


def conv_fns(tier, case):
    """The tier's forward, backward and extra keyword arguments, as F picks them."""
    if case["groups"] == 1:
        return tier.conv2d, tier.conv2d_backward, {}
    if case["groups"] == case["c"]:
        return tier.depthwise_conv2d, tier.depthwise_conv2d_backward, {}
    return tier.grouped_conv2d, tier.grouped_conv2d_backward, {"groups": case["groups"]}


# ---------------------------------------------------------------------------------------------
# Against PyTorch

@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=conv_variants(modes=("zeros", "reflect", "replicate", "circular")))
def test_conv2d_layer_matches_torch(dtype, case):
    rng = np.random.default_rng(case["seed"])
    layer, t = conv_layer_pair(case, dtype)
    x = random(rng, (case["n"], case["c"]) + case["hw"], dtype)
    check_layer_against_torch(conv_label(case), layer, t, x, rng)


# ---------------------------------------------------------------------------------------------
# The cpu tier against the naive oracle

def conv_arrays(case, dtype):
    rng = np.random.default_rng(case["seed"])
    x = random(rng, (case["n"], case["c"]) + case["hw"], dtype)
    w = random(rng, (case["k"], case["c"] // case["groups"]) + case["kernel"], dtype)
    b = random(rng, (case["k"],), dtype) if case["bias"] else None
    return rng, x, w, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=conv_variants(), need_dx=st.booleans())
def test_conv2d_variants_match_naive(backend, dtype, case, need_dx):
    rng, x, w, b = conv_arrays(case, dtype)
    args = (case["stride"], case["padding"], case["dilation"], case["groups"])
    results = {}
    for tier in ("naive", backend):
        out, cache = F.conv2d(x, w, b, *args, backend=tier)
        dout = random(np.random.default_rng(1), out.shape, dtype)
        results[tier] = (out,) + F.conv2d_backward(dout, cache, need_dx=need_dx)
    for name, got, ref in zip(("out", "dx", "dw", "db"), results[backend], results["naive"]):
        assert (got is None) == (ref is None), name
        if ref is not None:
            assert_close_to_oracle(fc.to_numpy(got), ref, f"{conv_label(case)} {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=conv_variants())
def test_dilated_im2col_col2im_match_naive(backend, dtype, case):
    rng, x, _, _ = conv_arrays(case, dtype)
    args = (case["kernel"], case["stride"], case["padding"], case["dilation"])
    cols = F.im2col(x, *args, backend=backend)
    np.testing.assert_array_equal(cols, F.im2col(x, *args, backend="naive"))  # a copy: exact
    c = random(rng, cols.shape, dtype)
    assert_close_to_oracle(F.col2im(c, x.shape, *args, backend=backend),
                           F.col2im(c, x.shape, *args, backend="naive"), "dilated col2im")


def test_dilated_im2col_matches_torch_unfold():
    x = random(np.random.default_rng(0), (2, 3, 9, 8), np.float64)
    cols = F.im2col(x, (3, 2), (2, 1), (1, 2), (2, 3))
    ref = torch.nn.functional.unfold(torch.from_numpy(x), (3, 2), (2, 3), (1, 2), (2, 1)).numpy()
    np.testing.assert_array_equal(cols, ref.transpose(1, 0, 2).reshape(cols.shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_naive_depthwise_kernel_matches_the_naive_group_loop(dtype):
    """The two naive routes to a depthwise convolution (per-tap products, a loop over groups)."""
    rng = np.random.default_rng(5)
    x, w, b = random(rng, (2, 3, 7, 6), dtype), random(rng, (6, 1, 3, 2), dtype), random(rng, (6,), dtype)
    geometry = ((2, 1), (1, 0, 2, 1), (1, 2))
    out, _ = naive.depthwise_conv2d(x, w, b, *geometry)
    ref, _ = naive.grouped_conv2d(x, w, b, *geometry, 3)
    assert_close_to_oracle(out, ref, "naive depthwise out")
    dout = random(rng, out.shape, dtype)
    got = naive.depthwise_conv2d_backward(dout, x, w, True, *geometry, None, True)
    want = naive.grouped_conv2d_backward(dout, x, w, True, *geometry, 3, None, True)
    for name, g, r in zip(("dx", "dw", "db"), got, want):
        assert_close_to_oracle(g, r, f"naive depthwise {name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_depthwise_and_transposed_results_do_not_depend_on_the_thread_count(dtype):
    rng = np.random.default_rng(6)
    x, w = random(rng, (5, 4, 9, 8), dtype), random(rng, (8, 1, 3, 3), dtype)
    xt, wt = random(rng, (5, 4, 4, 3), dtype), random(rng, (4, 3, 3, 3), dtype)
    b = random(rng, (8,), dtype)
    results = []
    for shares in (1, 2, 3):
        with split_into(shares):
            out, cache = F.conv2d(x, w, b, 1, 1, 1, 4, backend="cpu")
            grads = F.conv2d_backward(np.ones_like(out), cache)
            out_t, cache_t = F.conv_transpose2d(xt, wt, b[:6], 2, 1, 1, 2, backend="cpu")
            grads_t = F.conv_transpose2d_backward(np.full_like(out_t, 0.5), cache_t)
        results.append((out,) + grads + (out_t,) + grads_t)
    for other in results[1:]:
        for a, r in zip(other, results[0]):
            np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_grouped_conv_matches_naive(dtype):
    rng = np.random.default_rng(7)
    x, w, b = random(rng, (5, 6, 7, 7), dtype), random(rng, (4, 3, 3, 3), dtype), random(rng, (4,), dtype)
    ref, cache = F.conv2d(x, w, b, 1, 1, 2, 2, backend="naive")
    ref_grads = F.conv2d_backward(np.ones_like(ref), cache)
    with split_into(3):
        out, cache = F.conv2d(x, w, b, 1, 1, 2, 2, backend="cpu")
        grads = F.conv2d_backward(np.ones_like(out), cache)
    for name, a, r in zip(("out", "dx", "dw", "db"), (out,) + grads, (ref,) + ref_grads):
        assert_close_to_oracle(a, r, f"split grouped {name}")


def test_non_contiguous_inputs_and_float32_are_kept():
    rng = np.random.default_rng(8)
    x = random(rng, (2, 4, 8, 9), np.float32)[:, :, ::2, 1:]
    w = random(rng, (4, 1, 2, 2), np.float32)
    for groups, weight in ((4, w), (2, random(rng, (4, 2, 2, 2), np.float32))):
        out, cache = F.conv2d(x, weight, None, 1, 1, 2, groups, backend="cpu")
        ref, _ = F.conv2d(np.ascontiguousarray(x), weight, None, 1, 1, 2, groups, backend="naive")
        assert out.dtype == np.float32 and all(g is None or g.dtype == np.float32
                                               for g in F.conv2d_backward(out, cache))
        assert_close_to_oracle(out, ref, "non-contiguous grouped out")


# ---------------------------------------------------------------------------------------------
# The cuda tier against the cpu tier (Numba's simulator, tiny shapes)

@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(case=variant_cases(), need_dx=st.booleans(), use_saved=st.booleans())
def test_grouped_depthwise_dilated_conv_match_cpu(G, close, dtype, case, need_dx, use_saved):
    rng = np.random.default_rng(case["seed"])
    x = random(rng, (case["n"], case["c"]) + case["hw"], dtype)
    w = random(rng, (case["k"], case["c"] // case["groups"]) + case["kernel"], dtype)
    b = random(rng, case["k"], dtype) if case["bias"] else None
    geometry = (case["stride"], case["pads"], case["dilation"])
    fwd, bwd, extra = conv_fns(G, case)
    cpu_fwd, cpu_bwd, _ = conv_fns(cpu, case)
    out, saved = fwd(x, w, b, *geometry, **extra)
    want, saved_cpu = cpu_fwd(x, w, b, *geometry, **extra)
    close("variant conv", out, want)
    dout = random(rng, want.shape, dtype)
    got = bwd(dout, x, w, b is not None, geometry[0], geometry[1], dilation=geometry[2],
              saved=saved if use_saved else None, need_dx=need_dx, **extra)
    ref = cpu_bwd(dout, x, w, b is not None, geometry[0], geometry[1], dilation=geometry[2],
                  saved=saved_cpu, need_dx=need_dx, **extra)
    for name, g, r in zip(("dx", "dw", "db"), got, ref):
        assert (g is None) == (r is None), name
        if r is not None:
            close(f"variant conv {name}", g, r)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(case=variant_cases())
def test_dilated_im2col_col2im_match_cpu(G, close, dtype, case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["c"]) + case["hw"]
    x = random(rng, shape, dtype)
    args = (case["kernel"], case["stride"], case["pads"], case["dilation"])
    close("dilated im2col", G.im2col(x, *args), cpu.im2col(x, *args), exact=True)
    ho, wo = conv_output_hw(case["hw"], case["kernel"], case["stride"], case["pads"],
                            case["dilation"])
    cols = random(rng, (case["c"] * case["kernel"][0] * case["kernel"][1], case["n"] * ho * wo), dtype)
    close("dilated col2im", G.col2im(cols, shape, *args), cpu.col2im(cols, shape, *args))


@cuda_test
def test_layers_on_the_device_match_the_cpu(G, close):
    """Conv2d with groups, dilation and a padding mode, ConvTranspose2d and a padding layer moved to
    the device: the same forward, input gradient and parameter gradients as on the host."""
    def build():
        return fc.Sequential(fc.ReplicationPad2d((1, 0, 0, 1)),
                             fc.Conv2d(2, 4, 2, dilation=(1, 2), groups=2, padding=1,
                                       padding_mode="circular", rng=0),
                             fc.Conv2d(4, 4, 2, groups=4, rng=1),
                             fc.ConvTranspose2d(4, 2, 2, stride=2, output_padding=1, rng=2),
                             input_grad=True)
    host, dev = build(), build().to("cuda")
    x = random(np.random.default_rng(1), (1, 2, 3, 4), np.float32)
    want = host(x)
    close("device model out", dev(x), want)
    dy = np.ones_like(want)
    close("device model dx", dev.backward(dy), host.backward(dy))
    for (name, p), (_, q) in zip(host.named_parameters(), dev.named_parameters()):
        close(f"device model d{name}", q.grad, p.grad)


# ---------------------------------------------------------------------------------------------
# Finite differences (float64)

@pytest.mark.parametrize("backend", ["naive"] + BACKENDS)
@pytest.mark.parametrize("groups, k, dilation, stride, padding", [
    (3, 6, (2, 1), 1, 1),        # depthwise with multiplier 2
    (3, 3, 1, 2, (1, 0)),        # depthwise, strided
    (1, 2, (1, 2), 1, "same"),   # dilated
    (3, 3, 2, (1, 2), 2),        # depthwise dilated
])
def test_conv2d_finite_differences(backend, groups, k, dilation, stride, padding):
    rng = np.random.default_rng(9)
    x = random(rng, (2, 3, 6, 5), np.float64)
    w, b = random(rng, (k, 3 // groups, 3, 2), np.float64), random(rng, (k,), np.float64)
    out, cache = F.conv2d(x, w, b, stride, padding, dilation, groups, backend=backend)
    dout = random(rng, out.shape, np.float64)
    dx, dw, db = F.conv2d_backward(dout, cache)

    def f():
        return F.conv2d(x, w, b, stride, padding, dilation, groups, backend=backend)[0]
    check_fd(f, {"x": (x, dx), "w": (w, dw), "b": (b, db)}, dout)


def test_conv2d_padding_modes_finite_differences():
    rng = np.random.default_rng(11)
    for mode in ("reflect", "replicate", "circular"):
        layer = fc.Conv2d(2, 2, 3, padding=(2, 1), dilation=(1, 2), groups=2, padding_mode=mode,
                          rng=1, dtype=np.float64)
        x = random(rng, (1, 2, 4, 5), np.float64)
        out = layer(x)
        dout = random(rng, out.shape, np.float64)
        dx = layer.backward(dout)
        check_fd(lambda: layer(x), {"x": (x, dx)}, dout)


# ---------------------------------------------------------------------------------------------
# State dicts, initialisation, repr

def test_state_dicts_load_both_ways_with_torch():
    rng = np.random.default_rng(12)
    pairs = [(fc.Conv2d(4, 8, 3, groups=2, dilation=2, rng=0),
              torch.nn.Conv2d(4, 8, 3, groups=2, dilation=2)),
             (fc.Conv2d(4, 8, 3, groups=4, padding=1, padding_mode="reflect", rng=0),
              torch.nn.Conv2d(4, 8, 3, groups=4, padding=1, padding_mode="reflect")),
             (fc.ConvTranspose2d(4, 6, (3, 2), stride=2, groups=2, bias=False, rng=0),
              torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, groups=2, bias=False))]
    for ours, theirs in pairs:
        assert {k: v.shape for k, v in ours.state_dict().items()} == \
            {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
        x = random(rng, (2, 4, 7, 6), np.float32)
        np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-4, atol=1e-5)
        ours.load_state_dict({k: v.detach().numpy() * 2 for k, v in theirs.state_dict().items()})
        assert all(np.array_equal(v, theirs.state_dict()[k].numpy() * 2)
                   for k, v in ours.state_dict().items())
        assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("make, fan_in", [
    (lambda: fc.Conv2d(8, 16, 3, groups=4, rng=0), 2 * 9),
    (lambda: fc.Conv2d(8, 16, 3, groups=8, rng=0), 9),
    (lambda: fc.ConvTranspose2d(8, 12, 3, groups=2, rng=0), 6 * 9),
])
def test_initialisation_bound_is_pytorchs(make, fan_in):
    layer = make()
    bound = 1 / np.sqrt(fan_in)
    for p in layer.parameters():
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= bound and np.abs(p.data).max() > 0.8 * bound


# ---------------------------------------------------------------------------------------------
# Errors

@pytest.mark.parametrize("make, error, words", [
    (lambda: fc.Conv2d(3, 4, 3, groups=2), ValueError, ["in_channels must be divisible by groups"]),
    (lambda: fc.Conv2d(4, 3, 3, groups=2), ValueError, ["out_channels must be divisible by groups"]),
    (lambda: fc.Conv2d(4, 4, 3, groups=0), ValueError, ["groups must be a positive int"]),
    (lambda: fc.Conv2d(4, 4, 3, groups=1.5), TypeError, ["groups must be a positive int"]),
    (lambda: fc.Conv2d(4, 4, 3, padding_mode="zero"), ValueError, ["padding_mode must be one of",
                                                                   "'zero'"]),
    (lambda: fc.Conv2d(4, 4, 3, stride=2, padding="same"), ValueError, ["same", "strided"]),
    (lambda: fc.Conv2d(4, 4, 3, dilation=0), ValueError, ["dilation"]),
    (lambda: fc.Conv2d(4, 4, 3, padding="full"), ValueError, ["'full'"]),
    (lambda: fc.ConvTranspose2d(4, 4, 3, stride=2, output_padding=2), ValueError,
     ["output padding must be smaller than either stride or dilation", "(2, 2)"]),
    (lambda: fc.ConvTranspose2d(4, 4, 3, output_padding=1), ValueError, ["output padding"]),
    (lambda: fc.ConvTranspose2d(4, 4, 3, output_padding=-1, stride=2), ValueError,
     ["output padding"]),
    (lambda: fc.ConvTranspose2d(4, 4, 3, padding_mode="reflect"), ValueError,
     ['Only "zeros" padding mode']),
    (lambda: fc.ConvTranspose2d(4, 4, 3, padding="same"), TypeError, ["padding"]),
    (lambda: fc.ConvTranspose2d(4, 6, 3, groups=4), ValueError, ["out_channels must be divisible"]),
])
def test_constructor_errors(make, error, words):
    with pytest.raises(error) as info:
        make()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("call, error, words", [
    (lambda x: F.conv2d(x, np.zeros((4, 3, 3, 3)), groups=2), ValueError,
     ["channel mismatch", "groups=2", "expects 6"]),
    (lambda x: F.conv2d(x, np.zeros((3, 2, 3, 3)), groups=2), ValueError,
     ["(3, 2, 3, 3)", "not divisible by groups=2"]),
    (lambda x: F.conv2d(x, np.zeros((4, 4, 3, 3)), groups=3), ValueError,
     ["4 channels are not divisible by groups=3"]),
    (lambda x: F.conv2d(x, np.zeros((4, 4, 3, 3)), groups=0), ValueError, ["groups"]),
    (lambda x: F.conv2d(x, np.zeros((4, 4, 3, 3)), dilation=3), ValueError,
     ["dilated kernel 7x7", "5x5"]),
    (lambda x: F.conv2d(x, np.zeros((4, 4, 3, 3)), dilation=(1, 0)), ValueError, ["dilation"]),
    (lambda x: F.conv2d(x, np.zeros((4, 4, 3, 3)), padding="same", stride=2), ValueError, ["same"]),
    (lambda x: F.conv2d(x, np.zeros((4, 2, 3, 3)), np.zeros(3), groups=2), ValueError,
     ["bias", "(4,)"]),
    (lambda x: F.conv_transpose2d(x, np.zeros((3, 2, 3, 3))), ValueError,
     ["channel mismatch", "expects 3"]),
    (lambda x: F.conv_transpose2d(x, np.zeros((4, 2, 3, 3)), np.zeros(2), groups=2), ValueError,
     ["bias", "(4,)"]),
    (lambda x: F.conv_transpose2d(x, np.zeros((4, 2, 3, 3)), stride=2, output_padding=2),
     ValueError, ["output padding"]),
    (lambda x: F.conv_transpose2d(x, np.zeros((4, 2, 3, 3)), padding=5), ValueError,
     ["too small"]),
    (lambda x: F.conv_transpose2d(x, np.zeros((4, 2, 3, 3)), padding="same"), TypeError,
     ["padding"]),
])
def test_functional_errors(call, error, words):
    x = np.zeros((1, 4, 5, 5))
    with pytest.raises(error) as info:
        call(x)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_layer_shape_errors_name_the_layer():
    with pytest.raises(ValueError, match=r"Conv2d\(2, 2.*padding_mode=reflect.*\(1, 2, 2, 2\)"):
        fc.Conv2d(2, 2, 1, padding=2, padding_mode="reflect")(np.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(2, 2.*\(1, 2, 1, 1\).*too small"):
        fc.ConvTranspose2d(2, 2, 1, padding=1)(np.zeros((1, 2, 1, 1)))
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(2, 2.*\(1, 3, 2, 2\).*x \(N, 2, H, W\)"):
        fc.ConvTranspose2d(2, 2, 1)(np.zeros((1, 3, 2, 2)))
    _, cache = F.conv_transpose2d(np.zeros((1, 2, 3, 3)), np.zeros((2, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"dout.*\(1, 1, 4, 4\)"):
        F.conv_transpose2d_backward(np.zeros((1, 1, 3, 3)), cache)
