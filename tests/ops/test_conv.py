"""Convolution on every tier: conv2d forward and backward, im2col and col2im.

The fast tiers against the naive oracle (randomised), the cuda tier against the cpu tier and the
oracle on Numba's simulator (tiny shapes), finite differences in float64, PyTorch as a second
oracle (skipped when torch is absent), and the contract's edge cases: layouts, sizes and dtypes.

Run with ``-s`` to see the worst relative error against naive per dtype; it is also written to
``fastconv_worst_rel_error.json`` in pytest's base temporary directory.
"""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv._shapes import conv_output_hw
from fastconv.kernels import cpu, naive
from fastconv.kernels.cpu import _common as cpu_common
from fastconv.kernels.cpu import conv as cpu_conv

from helpers import (ALL_TIERS, BACKENDS, DTYPES, HF, HYPOTHESIS, RTOL, WORST,
                     assert_close_to_oracle, grad_rel_error, numeric_grad, random, rel_error)
from op_helpers import (check_conv_against_naive, conv_all, conv_arrays, conv_cases, cuda_test,
                        rtol_torch, share_on_simulator, torch_and_functional)
from op_helpers import both  # noqa: F401  (a fixture)

ints = st.integers
#: Finite differences: the largest relative error of an analytic gradient.
FD_TOL = 1e-6
#: A tenth (FEW) or a seventh (SOME) of the profile's examples (tests/conftest.py), at least 4 / 6,
#: for the cuda tier: the simulator runs each GPU thread as Python.
FEW = share_on_simulator(10, 4)
SOME = share_on_simulator(7, 6)


@pytest.fixture(scope="module", autouse=True)
def worst_error_summary(tmp_path_factory):
    """After the module: print the worst relative error against naive per dtype, and save it."""
    yield
    summary = {name: {"worst_rel_error": err, "where": where} for name, (err, where) in WORST.items()}
    path = tmp_path_factory.getbasetemp() / "fastconv_worst_rel_error.json"
    path.write_text(json.dumps(summary, indent=2))
    print("\nworst relative error against naive:")
    for name, item in sorted(summary.items()):
        print(f"  {name}: {item['worst_rel_error']:.3e}  ({item['where']})")
    print(f"  (saved to {path})")


def expected_hw(case):
    (_, _, h, w), (_, _, fh, fw) = case["x_shape"], case["w_shape"]
    sh, sw = (case["stride"],) * 2 if isinstance(case["stride"], int) else case["stride"]
    return (h + case["extra"][0] - fh) // sh + 1, (w + case["extra"][1] - fw) // sw + 1


@st.composite
def tiny_conv_cases(draw):
    """A conv geometry small enough for the simulator (explicit pads)."""
    fh, fw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple(draw(st.integers(0, 1)) for _ in range(4))
    h = draw(st.integers(max(1, fh - pads[0] - pads[1]), 5))
    w = draw(st.integers(max(1, fw - pads[2] - pads[3]), 5))
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), k=draw(st.integers(1, 3)),
                hw=(h, w), kernel=(fh, fw), stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
                pads=pads, bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


# ---------------------------------------------------------------------------------------------
# Randomised comparisons with the oracle

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=conv_cases(), bias=st.booleans(), need_dx=st.booleans(), seed=ints(0, 2**32 - 1))
def test_conv2d_forward_and_gradients_match_naive(backend, dtype, case, bias, need_dx, seed):
    _, x, w, b = conv_arrays(case, dtype, seed, bias)
    out, dx, dw, db = check_conv_against_naive(x, w, b, case["stride"], case["padding"], backend,
                                               need_dx)
    assert out.shape == x.shape[:1] + w.shape[:1] + expected_hw(case)
    assert out.dtype == dw.dtype == dtype
    assert (dx is None) == (not need_dx) and (db is None) == (b is None)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=conv_cases(), seed=ints(0, 2**32 - 1))
def test_im2col_col2im_match_naive(backend, dtype, case, seed):
    rng, x, w, _ = conv_arrays(case, dtype, seed)
    kernel, args = w.shape[2:], (case["stride"], case["padding"])
    cols_ref = HF.im2col(x, kernel, *args, backend="naive")
    cols = HF.im2col(x, kernel, *args, backend=backend)
    assert cols.dtype == dtype and cols.shape == cols_ref.shape
    np.testing.assert_array_equal(cols, cols_ref)  # a pure copy: exact
    c = random(rng, cols.shape, dtype)
    assert_close_to_oracle(HF.col2im(c, x.shape, kernel, *args, backend=backend),
                           HF.col2im(c, x.shape, kernel, *args, backend="naive"), "col2im")


@pytest.mark.parametrize("backend", ALL_TIERS)
@HYPOTHESIS
@given(case=conv_cases(), seed=ints(0, 2**32 - 1))
def test_col2im_is_the_adjoint_of_im2col(backend, case, seed):
    rng, x, w, _ = conv_arrays(case, np.float64, seed)
    kernel, args = w.shape[2:], (case["stride"], case["padding"])
    cols = HF.im2col(x, kernel, *args, backend=backend)
    c = random(rng, cols.shape, np.float64)
    lhs = np.vdot(cols, c)
    rhs = np.vdot(x, HF.col2im(c, x.shape, kernel, *args, backend=backend))
    assert abs(lhs - rhs) <= 1e-12 * (np.abs(cols).sum() * np.abs(c).max() + 1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_conv_in_batch_chunks_matches_naive(monkeypatch, dtype):
    """A tiny workspace keeps no columns for backward, tiny blocks run one image at a time, and
    the per-thread buffers are reused by the next call."""
    if "cpu" not in BACKENDS:
        pytest.skip("cpu tier not under test")
    monkeypatch.setattr(cpu_common, "WORKSPACE_BYTES", 1)
    monkeypatch.setattr(cpu_common, "BLOCK_BYTES", 1)
    rng = np.random.default_rng(3)
    x1, x2 = random(rng, (3, 2, 7, 6), dtype), random(rng, (4, 2, 7, 6), dtype)
    w, b = random(rng, (3, 2, 3, 2), dtype), random(rng, (3,), dtype)
    assert cpu_conv._Geometry(x1.shape, w.shape, (2, 1), (1, 1, 0, 0), x1.itemsize).block == 1
    out1, cache1 = HF.conv2d(x1, w, b, (2, 1), (1, 0), backend="cpu")
    assert cache1.saved is None
    out1_copy = out1.copy()
    HF.conv2d(x2, w, b, (2, 1), (1, 0), backend="cpu")  # reuses the buffers
    np.testing.assert_array_equal(out1, out1_copy)  # the first result is not a reused buffer
    dout = random(rng, out1.shape, dtype)
    got = (out1,) + HF.conv2d_backward(dout, cache1)
    ref_out, ref_cache = HF.conv2d(x1, w, b, (2, 1), (1, 0), backend="naive")
    ref = (ref_out,) + HF.conv2d_backward(dout, ref_cache)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        assert_close_to_oracle(a, r, f"chunked conv2d {name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_blocked_input_gradient_matches_naive(dtype, monkeypatch):
    """A tiny BLOCK_BYTES runs every kernel and GEMM one image at a time."""
    if "cpu" not in BACKENDS:
        pytest.skip("cpu tier not under test")
    monkeypatch.setattr(cpu_common, "BLOCK_BYTES", 1)
    rng = np.random.default_rng(4)
    x, w, b = random(rng, (5, 3, 6, 7), dtype), random(rng, (4, 3, 3, 3), dtype), random(rng, (4,), dtype)
    out, cache = HF.conv2d(x, w, b, 1, 1, backend="cpu")
    dout = random(rng, out.shape, dtype)
    got = HF.conv2d_backward(dout, cache)
    ref = HF.conv2d_backward(dout, HF.conv2d(x, w, b, 1, 1, backend="naive")[1])
    for name, a, r in zip(("dx", "dw", "db"), got, ref):
        assert_close_to_oracle(a, r, f"blocked conv2d {name}")


# ---------------------------------------------------------------------------------------------
# The cuda tier against the cpu tier and the oracle (Numba's simulator, tiny shapes)

@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(case=tiny_conv_cases(), use_saved=st.booleans(), need_dx=st.booleans())
def test_conv2d_forward_backward_match_cpu_and_naive(G, both, dtype, case, use_saved, need_dx):
    rng = np.random.default_rng(case["seed"])
    x = random(rng, (case["n"], case["c"]) + case["hw"], dtype)
    w = random(rng, (case["k"], case["c"]) + case["kernel"], dtype)
    b = random(rng, case["k"], dtype) if case["bias"] else None
    stride, pads = case["stride"], case["pads"]
    out, saved = G.conv2d(x, w, b, stride, pads)
    want, saved_cpu = cpu.conv2d(x, w, b, stride, pads)
    oracle, saved_naive = naive.conv2d(x, w, b, stride, pads)
    both("conv2d", out, want, oracle)
    dout = random(rng, want.shape, dtype)
    got = G.conv2d_backward(dout, x, w, b is not None, stride, pads, saved if use_saved else None,
                            need_dx)
    ref = cpu.conv2d_backward(dout, x, w, b is not None, stride, pads, saved_cpu, need_dx)
    ref_naive = naive.conv2d_backward(dout, x, w, b is not None, stride, pads, saved_naive, need_dx)
    for name, g, r, o in zip(("dx", "dw", "db"), got, ref, ref_naive):
        assert (g is None) == (r is None) == (o is None), name
        if r is not None:
            both(f"conv2d_backward {name}", g, r, o)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@SOME
@given(case=tiny_conv_cases())
def test_im2col_col2im_match_cpu_and_naive(G, both, close, dtype, case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["c"]) + case["hw"]
    x = random(rng, shape, dtype)
    args = (case["kernel"], case["stride"], case["pads"])
    cols = G.im2col(x, *args)
    both("im2col", cols, cpu.im2col(x, *args), naive.im2col(x, *args), exact=True)
    close("im2col (copies: the oracle's bits)", cols, naive.im2col(x, *args), exact=True)
    ho, wo = conv_output_hw(case["hw"], *args)
    cols = random(rng, (case["c"] * case["kernel"][0] * case["kernel"][1], case["n"] * ho * wo), dtype)
    both("col2im", G.col2im(cols, shape, *args), cpu.col2im(cols, shape, *args),
         naive.col2im(cols, shape, *args), exact=True)


# ---------------------------------------------------------------------------------------------
# Finite differences (float64, central differences), every tier

@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("x_shape, w_shape, stride, padding", [
    ((2, 3, 5, 5), (2, 3, 3, 3), 1, 0),
    ((2, 3, 7, 6), (4, 3, 3, 2), (2, 1), (1, 2)),    # non-square everything
    ((1, 2, 8, 7), (3, 2, 2, 2), 3, 1),              # stride > kernel: some inputs get no gradient
    ((2, 2, 5, 6), (3, 2, 2, 4), 1, "same"),         # even kernel, asymmetric padding
])
def test_conv2d_gradients_match_finite_differences(backend, x_shape, w_shape, stride, padding):
    rng = np.random.default_rng(21)
    x, w, b = (random(rng, shape, np.float64) for shape in (x_shape, w_shape, w_shape[:1]))
    out, cache = HF.conv2d(x, w, b, stride, padding, backend=backend)
    dout = random(rng, out.shape, np.float64)
    dx, dw, db = HF.conv2d_backward(dout, cache)

    def f():
        return HF.conv2d(x, w, b, stride, padding, backend=backend)[0]

    for name, analytic, param in (("dx", dx, x), ("dw", dw, w), ("db", db, b)):
        numeric = numeric_grad(f, param, dout)
        err = grad_rel_error(analytic, numeric)
        assert err < FD_TOL, f"{name}: relative error {err:.2e}"
        assert np.abs(numeric).max() > 0.1  # the check is not vacuous


# ---------------------------------------------------------------------------------------------
# Layouts, sizes and dtypes

def _views(base):
    """A transposed (non-contiguous) view and a negatively strided view with the shapes of ``base``."""
    transposed = np.ascontiguousarray(base.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)
    big = np.zeros(base.shape[:2] + (2 * base.shape[2], base.shape[3]), base.dtype)
    big[:, :, ::2, ::-1] = base
    flipped = big[:, :, ::2, ::-1]
    assert not transposed.flags.c_contiguous and flipped.strides[3] < 0
    np.testing.assert_array_equal(transposed, base)
    np.testing.assert_array_equal(flipped, base)
    return transposed, flipped


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs_match_contiguous_copies(backend, dtype):
    rng = np.random.default_rng(2)
    x, w, b = random(rng, (2, 3, 8, 7), dtype), random(rng, (4, 3, 3, 2), dtype), random(rng, (4,), dtype)
    ref = conv_all(x, w, b, (2, 1), 1, 4, backend)
    for xv, wv in zip(_views(x), _views(w)):
        got = conv_all(xv, wv, np.repeat(b, 2)[::2], (2, 1), 1, 4, backend)  # a strided b too
        for a, r in zip(got, ref):
            np.testing.assert_array_equal(a, r)
        out, cache = HF.conv2d(x, w, b, (2, 1), 1, backend=backend)
        dout = random(np.random.default_rng(4), out.shape, dtype)
        for dv in _views(dout):  # a non-contiguous dout
            for a, r in zip(HF.conv2d_backward(dv, cache), ref[1:]):
                np.testing.assert_array_equal(a, r)
        out_ref, sw_ref = HF.max_pool2d(x, (3, 2), 2, backend=backend)
        out, switches = HF.max_pool2d(xv, (3, 2), 2, backend=backend)
        np.testing.assert_array_equal(out, out_ref)
        np.testing.assert_array_equal(switches, sw_ref)
        np.testing.assert_array_equal(HF.avg_pool2d(xv, (3, 2), 2, backend=backend),
                                      HF.avg_pool2d(x, (3, 2), 2, backend=backend))


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_read_only_inputs_are_accepted(backend):
    rng = np.random.default_rng(9)
    x, w = random(rng, (2, 3, 6, 6), np.float32), random(rng, (2, 3, 3, 3), np.float32)
    ref = conv_all(x, w, None, 1, 1, 1, backend)
    x.setflags(write=False)
    w.setflags(write=False)
    for a, r in zip(conv_all(x, w, None, 1, 1, 1, backend), ref):
        np.testing.assert_array_equal(a, r)
    out, switches = HF.max_pool2d(x, 2, backend=backend)
    assert out.shape == (2, 3, 3, 3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_of_one_matches_naive(backend, dtype):
    rng = np.random.default_rng(4)
    x, w, b = random(rng, (1, 2, 5, 9), dtype), random(rng, (3, 2, 2, 4), dtype), random(rng, (3,), dtype)
    check_conv_against_naive(x, w, b, (1, 2), (0, 1), backend, label="batch of one")
    out, switches = HF.max_pool2d(x, 2, backend=backend)
    out_ref, sw_ref = HF.max_pool2d(x, 2, backend="naive")
    np.testing.assert_array_equal(out, out_ref)
    np.testing.assert_array_equal(switches, sw_ref)


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1)])
def test_1x1_kernel_is_a_channel_mix(backend, dtype, stride, padding):
    rng = np.random.default_rng(8)
    x, w, b = random(rng, (2, 3, 5, 4), dtype), random(rng, (4, 3, 1, 1), dtype), random(rng, (4,), dtype)
    out, cache = HF.conv2d(x, w, b, stride, padding, backend=backend)
    xp = np.pad(x, ((0, 0), (0, 0), (padding,) * 2, (padding,) * 2))[:, :, ::stride, ::stride]
    expected = np.einsum("kc,nchw->nkhw", w[:, :, 0, 0], xp) + b[None, :, None, None]
    assert out.shape == expected.shape and out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=RTOL[np.dtype(dtype)], atol=RTOL[np.dtype(dtype)])
    dout = random(rng, out.shape, dtype)
    dx, dw, db = HF.conv2d_backward(dout, cache)
    np.testing.assert_allclose(dw[:, :, 0, 0], np.einsum("nkhw,nchw->kc", dout, xp),
                               rtol=RTOL[np.dtype(dtype)], atol=10 * RTOL[np.dtype(dtype)])
    np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3)), rtol=RTOL[np.dtype(dtype)],
                               atol=10 * RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_output_and_gradient_dtypes_follow_x(backend, dtype):
    rng = np.random.default_rng(6)
    x, w, b = random(rng, (2, 2, 6, 6), dtype), random(rng, (3, 2, 3, 3), dtype), random(rng, (3,), dtype)
    out, cache = HF.conv2d(x, w, b, backend=backend)
    other = np.float64 if dtype == np.float32 else np.float32
    dx, dw, db = HF.conv2d_backward(random(rng, out.shape, other), cache)  # dout in the other dtype
    assert out.dtype == dx.dtype == dw.dtype == db.dtype == dtype
    assert HF.im2col(x, 3, backend=backend).dtype == dtype
    pooled, switches = HF.max_pool2d(x, 2, backend=backend)
    assert pooled.dtype == dtype and switches.dtype == np.int64
    assert HF.max_pool2d_backward(pooled, switches, x.shape, backend=backend).dtype == dtype
    avg = HF.avg_pool2d(x, 2, backend=backend)
    assert avg.dtype == dtype
    assert HF.avg_pool2d_backward(avg, x.shape, 2, backend=backend).dtype == dtype


@pytest.mark.parametrize("backend", ALL_TIERS)
def test_int_and_bool_inputs_become_float32(backend):
    rng = np.random.default_rng(1)
    xi, wi = rng.integers(-3, 4, (2, 2, 5, 5)), rng.integers(-2, 3, (3, 2, 3, 3)).astype(np.int16)
    out, cache = HF.conv2d(xi, wi, np.array([1, 0, -1]), padding=1, backend=backend)
    ref, _ = HF.conv2d(xi.astype(np.float32), wi.astype(np.float32), np.array([1., 0., -1.], np.float32),
                      padding=1, backend=backend)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)  # small integers: exact in float32
    dx, dw, db = HF.conv2d_backward(np.ones(out.shape, np.int64), cache)
    assert dx.dtype == dw.dtype == db.dtype == np.float32
    xb = rng.random((1, 2, 4, 4)) > 0.5
    pooled, switches = HF.max_pool2d(xb, 2, backend=backend)
    assert pooled.dtype == np.float32
    np.testing.assert_array_equal(pooled, xb.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5)))
    assert HF.avg_pool2d(xb, 2, backend=backend).dtype == np.float32
    assert HF.max_pool2d_backward(np.ones((1, 2, 2, 2), np.int32), switches, xb.shape,
                                 backend=backend).dtype == np.float32


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_w_and_b_of_another_float_dtype_are_cast_to_x_dtype(backend, dtype):
    rng = np.random.default_rng(12)
    other = np.float64 if dtype == np.float32 else np.float32
    x, w, b = random(rng, (2, 2, 5, 5), dtype), random(rng, (3, 2, 3, 3), other), random(rng, (3,), other)
    out, cache = HF.conv2d(x, w, b, backend=backend)
    ref, ref_cache = HF.conv2d(x, w.astype(dtype), b.astype(dtype), backend=backend)
    assert out.dtype == dtype and cache.w.dtype == dtype
    np.testing.assert_array_equal(out, ref)
    dout = random(rng, out.shape, dtype)
    for a, r in zip(HF.conv2d_backward(dout, cache), HF.conv2d_backward(dout, ref_cache)):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, r)


@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (5, 3), (2, 2), (4, 4), (2, 3), (4, 1)])
def test_same_padding_keeps_height_and_width(backend, kernel):
    rng = np.random.default_rng(13)
    x, w = random(rng, (2, 2, 6, 7), np.float64), random(rng, (3, 2) + kernel, np.float64)
    out, cache = HF.conv2d(x, w, padding="same", backend=backend)
    assert out.shape == (2, 3, 6, 7)
    assert HF.conv2d_backward(np.ones_like(out), cache)[0].shape == x.shape
    # the extra row/column for even kernels goes at the bottom/right (as PyTorch)
    fh, fw = kernel
    top, left = (fh - 1) // 2, (fw - 1) // 2
    explicit = np.pad(x, ((0, 0), (0, 0), (top, fh - 1 - top), (left, fw - 1 - left)))
    np.testing.assert_allclose(out, HF.conv2d(explicit, w, backend="naive")[0], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# PyTorch as a second oracle (skipped when torch is absent)

@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("backend", ALL_TIERS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride, padding, kernel", [
    (1, 0, (3, 3)), ((2, 1), (1, 2), (3, 2)), (3, 2, (2, 4)), (1, "same", (2, 4)), (1, "same", (4, 3)),
    (1, "valid", (1, 5))])
def test_conv2d_matches_torch(backend, dtype, stride, padding, kernel):
    torch, tf = torch_and_functional()
    rng = np.random.default_rng(14)
    x, w, b = random(rng, (2, 3, 8, 9), dtype), random(rng, (4, 3) + kernel, dtype), random(rng, (4,), dtype)
    out, cache = HF.conv2d(x, w, b, stride, padding, backend=backend)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    tout = tf.conv2d(tx, tw, tb, stride=stride, padding=padding)
    assert out.shape == tuple(tout.shape)
    assert rel_error(out, tout.detach().numpy()) < rtol_torch(dtype)
    dout = random(rng, out.shape, dtype)
    tout.backward(torch.from_numpy(dout))
    for got, t in zip(HF.conv2d_backward(dout, cache), (tx, tw, tb)):
        assert rel_error(got, t.grad.numpy()) < rtol_torch(dtype)
