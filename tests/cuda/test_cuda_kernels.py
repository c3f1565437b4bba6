"""The cuda tier against the naive oracle and the cpu tier (and NumPy / fastconv.optim), on
Numba's simulator.

Every result is compared with both tiers, so a bug the cuda and cpu tiers shared would still
fail against the oracle. Shapes are tiny because the simulator runs every GPU thread as Python.
Where the cuda kernel accumulates in the cpu tier's order (pooling, col2im, elementwise) results
must match the cpu tier bit for bit on the simulator (``close(..., exact=True)``; see
tests/cuda/conftest.py for real GPUs); the oracle sums in its own order, so against it they
match to the dtype's rounding.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastconv._shapes import conv_output_hw
from fastconv.kernels import cpu, naive

pytestmark = [pytest.mark.cuda,
              # the simulator runs the RNG's uint64 arithmetic on NumPy scalars, which warn on wrap
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]

DTYPES = [np.float32, np.float64]
#: A tenth (FEW) or a seventh (SOME) of the profile's examples (tests/conftest.py), at least 4 / 6:
#: the simulator runs each GPU thread as Python. Derandomised as the profile says.
FEW = settings(max_examples=max(4, settings.default.max_examples // 10), deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SOME = settings(FEW, max_examples=max(6, settings.default.max_examples // 7))


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.fixture
def both(close):
    """``both(name, got, cpu_result, naive_result, exact=False)``: ``got`` against the cpu tier
    (bit for bit when ``exact``, on the simulator) and against the naive oracle."""
    def check(name, got, want_cpu, want_naive, exact=False):
        close(f"{name} (vs cpu)", got, want_cpu, exact=exact)
        return close(f"{name} (vs naive)", got, want_naive)
    return check


@st.composite
def conv_cases(draw):
    fh, fw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pads = tuple(draw(st.integers(0, 1)) for _ in range(4))
    h = draw(st.integers(max(1, fh - pads[0] - pads[1]), 5))
    w = draw(st.integers(max(1, fw - pads[2] - pads[3]), 5))
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 3)), k=draw(st.integers(1, 3)),
                hw=(h, w), kernel=(fh, fw), stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
                pads=pads, bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(kh, 6)), draw(st.integers(kw, 6))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), kernel=(kh, kw),
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
                seed=draw(st.integers(0, 2**16)))


# --- convolution, im2col, GEMM ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(case=conv_cases(), use_saved=st.booleans(), need_dx=st.booleans())
def test_conv2d_forward_backward_match_cpu_and_naive(G, both, dtype, case, use_saved, need_dx):
    rng = np.random.default_rng(case["seed"])
    x = rand(rng, (case["n"], case["c"]) + case["hw"], dtype)
    w = rand(rng, (case["k"], case["c"]) + case["kernel"], dtype)
    b = rand(rng, case["k"], dtype) if case["bias"] else None
    stride, pads = case["stride"], case["pads"]
    out, saved = G.conv2d(x, w, b, stride, pads)
    want, saved_cpu = cpu.conv2d(x, w, b, stride, pads)
    oracle, saved_naive = naive.conv2d(x, w, b, stride, pads)
    both("conv2d", out, want, oracle)
    dout = rand(rng, want.shape, dtype)
    got = G.conv2d_backward(dout, x, w, b is not None, stride, pads, saved if use_saved else None,
                            need_dx)
    ref = cpu.conv2d_backward(dout, x, w, b is not None, stride, pads, saved_cpu, need_dx)
    ref_naive = naive.conv2d_backward(dout, x, w, b is not None, stride, pads, saved_naive, need_dx)
    for name, g, r, o in zip(("dx", "dw", "db"), got, ref, ref_naive):
        assert (g is None) == (r is None) == (o is None), name
        if r is not None:
            both(f"conv2d_backward {name}", g, r, o)


@pytest.mark.parametrize("dtype", DTYPES)
@SOME
@given(case=conv_cases())
def test_im2col_col2im_match_cpu_and_naive(G, both, close, dtype, case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["c"]) + case["hw"]
    x = rand(rng, shape, dtype)
    args = (case["kernel"], case["stride"], case["pads"])
    cols = G.im2col(x, *args)
    both("im2col", cols, cpu.im2col(x, *args), naive.im2col(x, *args), exact=True)
    close("im2col (copies: the oracle's bits)", cols, naive.im2col(x, *args), exact=True)
    ho, wo = conv_output_hw(case["hw"], *args)
    cols = rand(rng, (case["c"] * case["kernel"][0] * case["kernel"][1], case["n"] * ho * wo), dtype)
    both("col2im", G.col2im(cols, shape, *args), cpu.col2im(cols, shape, *args),
         naive.col2im(cols, shape, *args), exact=True)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_tiles_transposes_bias_and_nchw_epilogue(G, close, trans_a, trans_b):
    """17 x 18 @ 18 x 6 crosses tile borders in M and K; bias and the blocked layout ride along."""
    from fastconv.kernels.cuda._gemm import _gemm
    from fastconv.kernels.cuda._launch import _dev, _empty
    rng = np.random.default_rng(int(trans_a) * 2 + trans_b)
    a, b = rand(rng, (17, 18), np.float32), rand(rng, (18, 6), np.float32)
    bias = rand(rng, 17, np.float32)
    got = _gemm(_dev(np.ascontiguousarray(a.T) if trans_a else a),
                _dev(np.ascontiguousarray(b.T) if trans_b else b),
                trans_a, trans_b, bias=_dev(bias), bias_mode=1)
    close("gemm", got, a @ b + bias[:, None])
    # columns as 3 images of 2 positions, written as (3, 17, 2) with a per-column bias
    out = _empty((3, 17, 2), np.float32)
    _gemm(_dev(a), _dev(b), bias=_dev(bias[:6]), bias_mode=2, pb=2, out=out)
    close("gemm nchw", out, (a @ b + bias[:6]).reshape(17, 3, 2).transpose(1, 0, 2))


# --- pooling -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@SOME
@given(case=pool_cases())
def test_max_pool_matches_cpu_and_naive(G, both, close, dtype, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.integers(-3, 4, case["shape"]).astype(dtype)  # small integers: many ties
    out, switches = G.max_pool2d(x, case["kernel"], case["stride"])
    want, want_sw = cpu.max_pool2d(x, case["kernel"], case["stride"])
    oracle, oracle_sw = naive.max_pool2d(x, case["kernel"], case["stride"])
    both("max_pool2d", out, want, oracle, exact=True)
    close("max_pool2d (a selection: the oracle's bits)", out, oracle, exact=True)
    np.testing.assert_array_equal(switches.copy_to_host(), want_sw)
    np.testing.assert_array_equal(switches.copy_to_host(), oracle_sw)
    assert switches.dtype == np.int64
    dout = rand(rng, want.shape, dtype)
    dx, ok = G.max_pool2d_backward(dout, switches, case["shape"])
    want_dx, _ = cpu.max_pool2d_backward(dout, want_sw, case["shape"])
    oracle_dx, oracle_ok = naive.max_pool2d_backward(dout, oracle_sw, case["shape"])
    assert ok is True and oracle_ok is True
    both("max_pool2d_backward", dx, want_dx, oracle_dx, exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@SOME
@given(case=pool_cases())
def test_avg_pool_matches_cpu_and_naive(G, both, dtype, case):
    rng = np.random.default_rng(case["seed"])
    x = rand(rng, case["shape"], dtype)
    out = G.avg_pool2d(x, case["kernel"], case["stride"])
    both("avg_pool2d", out, cpu.avg_pool2d(x, case["kernel"], case["stride"]),
         naive.avg_pool2d(x, case["kernel"], case["stride"]), exact=True)
    dout = rand(rng, out.shape, dtype)
    args = (case["shape"], case["kernel"], case["stride"])
    both("avg_pool2d_backward", G.avg_pool2d_backward(dout, *args),
         cpu.avg_pool2d_backward(dout, *args), naive.avg_pool2d_backward(dout, *args), exact=True)


def test_switch_contract_ties_overlap_and_nan(G):
    """Ties go to the first maximum in row-major window order, overlapping 3x3 / stride 2 windows
    that share a maximum all route their gradient to it, and the first NaN wins."""
    x = np.zeros((1, 1, 5, 5), np.float32)  # all ties
    out, sw = G.max_pool2d(x, (3, 3), (2, 2))
    np.testing.assert_array_equal(sw.copy_to_host()[0, 0], [[0, 2], [10, 12]])
    x[0, 0, 2, 2] = 9.0  # the centre lies in all four overlapping windows
    out, sw = G.max_pool2d(x, (3, 3), (2, 2))
    np.testing.assert_array_equal(sw.copy_to_host(), np.full((1, 1, 2, 2), 12))
    dx, ok = G.max_pool2d_backward(np.array([[[[1, 2], [4, 8]]]], np.float32), sw, x.shape)
    expect = np.zeros_like(x)
    expect[0, 0, 2, 2] = 15.0
    assert ok
    np.testing.assert_array_equal(dx.copy_to_host(), expect)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 1, 0] = np.nan
    out, sw = G.max_pool2d(x, (3, 3), (2, 2))
    assert sw.copy_to_host()[0, 0, 0, 0] == 1 and np.isnan(out.copy_to_host()[0, 0, 0, 0])
    np.testing.assert_array_equal(sw.copy_to_host(), cpu.max_pool2d(x, (3, 3), (2, 2))[1])
    np.testing.assert_array_equal(sw.copy_to_host(), naive.max_pool2d(x, (3, 3), (2, 2))[1])


def test_max_pool_backward_routes_arbitrary_switches_and_flags_bad_ones(G, both):
    """Switches that no pooling produced (any in-range index, repeats) are still routed as the cpu
    tier and the oracle route them; an out-of-range one makes ok False."""
    rng = np.random.default_rng(3)
    shape = (2, 2, 4, 5)
    switches = rng.integers(0, 20, (2, 2, 3, 3)).astype(np.int64)
    dout = rand(rng, (2, 2, 3, 3), np.float64)
    dx, ok = G.max_pool2d_backward(dout, switches, shape)
    assert ok
    both("max_pool2d_backward (arbitrary switches)", dx,
         cpu.max_pool2d_backward(dout, switches, shape)[0],
         naive.max_pool2d_backward(dout, switches, shape)[0], exact=True)
    for bad in (-1, 20):
        switches[1, 0, 2, 1] = bad
        assert G.max_pool2d_backward(dout, switches, shape)[1] is False


# --- batch norm ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(n=st.integers(1, 3), c=st.integers(1, 3), length=st.integers(1, 6), training=st.booleans(),
       need_dx=st.booleans(), seed=st.integers(0, 2**16))
def test_batch_norm_matches_cpu_and_naive(G, both, dtype, n, c, length, training, need_dx, seed):
    rng = np.random.default_rng(seed)
    if training and n * length < 2:
        length = 2
    x = (rand(rng, (n, c, length), dtype) * 3 + 1).astype(dtype)
    weight, bias = rand(rng, c, dtype), rand(rng, c, dtype)
    mean, var = rand(rng, c, dtype), (rng.random(c) + 0.5).astype(dtype)
    got = G.batch_norm(x, weight, bias, mean, var, training, 1e-5)
    want = cpu.batch_norm(x, weight, bias, mean, var, training, 1e-5)
    oracle = naive.batch_norm(x, weight, bias, mean, var, training, 1e-5)
    for name, g, r, o in zip(("out", "batch_mean", "batch_var"), got[:3], want[:3], oracle[:3]):
        assert (g is None) == (r is None) == (o is None), name
        if r is not None:
            both(f"batch_norm {name}", g, r, o)
    for name, g, r, o in zip(("mean", "inv_std"), got[3], want[3], oracle[3]):
        both(f"batch_norm saved {name}", g, r, o)
    dout = rand(rng, x.shape, dtype)
    grads = G.batch_norm_backward(dout, x, weight, got[3], training, need_dx)
    ref = cpu.batch_norm_backward(dout, x, weight, want[3], training, need_dx)
    ref_naive = naive.batch_norm_backward(dout, x, weight, oracle[3], training, need_dx)
    for name, g, r, o in zip(("dx", "dweight", "dbias"), grads, ref, ref_naive):
        assert (g is None) == (r is None) == (o is None), name
        if r is not None:
            both(f"batch_norm_backward {name}", g, r, o)


# --- elementwise, dense, dropout, loss -----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
@SOME
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_activations_match_cpu_and_naive(G, both, dtype, name, shape, seed):
    rng = np.random.default_rng(seed)
    x = (rand(rng, shape, dtype) * 30).astype(dtype)  # large enough to saturate sigmoid / tanh
    x.flat[0] = 0
    y = getattr(G, name)(x)
    want = getattr(cpu, name)(x)
    both(name, y, want, getattr(naive, name)(x), exact=name == "relu")
    dout = rand(rng, shape, dtype)
    both(f"{name}_backward", getattr(G, f"{name}_backward")(dout, want),
         getattr(cpu, f"{name}_backward")(dout, want),
         getattr(naive, f"{name}_backward")(dout, want), exact=name == "relu")


def test_relu_propagates_nan_and_inputs_may_live_on_the_device(G):
    from numba import cuda
    x = cuda.to_device(np.array([np.nan, -1.0, 2.0], np.float32))
    y = G.relu(x)
    assert hasattr(y, "copy_to_host")
    np.testing.assert_array_equal(y.copy_to_host(), [np.nan, 0.0, 2.0])
    with pytest.raises(ValueError, match="not C-contiguous"):
        G.relu(cuda.to_device(np.ones((3, 4), np.float32)).T)


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(n=st.integers(1, 4), fin=st.integers(1, 20), fout=st.integers(1, 10), bias=st.booleans(),
       need_dx=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_matches_cpu_and_naive(G, both, dtype, n, fin, fout, bias, need_dx, seed):
    rng = np.random.default_rng(seed)
    x, w = rand(rng, (n, fin), dtype), rand(rng, (fout, fin), dtype)
    b = rand(rng, fout, dtype) if bias else None
    both("linear", G.linear(x, w, b), cpu.linear(x, w, b), naive.linear(x, w, b))
    dout = rand(rng, (n, fout), dtype)
    got = G.linear_backward(dout, x, w, bias, need_dx)
    ref = cpu.linear_backward(dout, x, w, bias, need_dx)
    ref_naive = naive.linear_backward(dout, x, w, bias, need_dx)
    for name, g, r, o in zip(("dx", "dw", "db"), got, ref, ref_naive):
        assert (g is None) == (r is None) == (o is None), name
        if r is not None:
            both(f"linear_backward {name}", g, r, o)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_mask_is_inverted_seeded_and_keeps_1_minus_p(G, close, dtype):
    rng = np.random.default_rng(0)
    x = rand(rng, (2, 8, 8, 8), dtype)  # 1024 elements, 4 blocks
    out, mask = G.dropout(x, 0.25, 7)
    m = mask.copy_to_host()
    assert m.dtype == dtype and set(np.unique(m)) <= {0.0, dtype(1 / 0.75)}
    close("dropout", out, x * m, exact=True)
    assert abs((m == 0).mean() - 0.25) < 0.055  # 4 sigma of a binomial(1024, 0.25) fraction
    np.testing.assert_array_equal(G.dropout(x, 0.25, 7)[1].copy_to_host(), m)
    assert (G.dropout(x, 0.25, 8)[1].copy_to_host() != m).any()
    assert (G.dropout(x[:1, :1], 0.0, 7)[1].copy_to_host() == 1).all()
    dout = rand(rng, x.shape, dtype)
    close("dropout_backward", G.dropout_backward(dout, mask), dout * m, exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@SOME
@given(n=st.integers(1, 5), classes=st.integers(2, 12), scale=st.sampled_from([1.0, 50.0]),
       seed=st.integers(0, 2**16))
def test_softmax_cross_entropy_matches_cpu_and_naive(G, both, dtype, n, classes, scale, seed):
    rng = np.random.default_rng(seed)
    logits = (rand(rng, (n, classes), dtype) * scale).astype(dtype)
    labels = rng.integers(0, classes, n)
    loss, dlogits = G.softmax_cross_entropy(logits, labels)
    want_loss, want_d = cpu.softmax_cross_entropy(logits, labels)
    oracle_loss, oracle_d = naive.softmax_cross_entropy(logits, labels)
    assert isinstance(loss, float)
    both("cross_entropy loss", np.array([loss], dtype), np.array([want_loss], dtype),
         np.array([oracle_loss], dtype))
    both("cross_entropy dlogits", dlogits, want_d, oracle_d)


def test_softmax_cross_entropy_rejects_labels_out_of_range(G):
    from numba import cuda
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        G.softmax_cross_entropy(np.zeros((2, 3), np.float32), cuda.to_device(np.array([0, 3])))


# --- optimizer updates ---------------------------------------------------------------------------

SGD_CASES = [dict(lr=0.1, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0),
             dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=1e-2),
             dict(lr=0.05, momentum=0.8, dampening=0.3, nesterov=False, weight_decay=0.0)]
ADAM_CASES = [dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False),
              dict(lr=3e-2, beta1=0.3, beta2=0.9, eps=1e-6, weight_decay=0.1, amsgrad=True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hp", SGD_CASES)
def test_sgd_update_matches_numpy_rule(G, close, dtype, hp):
    optim = pytest.importorskip("fastconv.optim")
    from numba import cuda
    rng = np.random.default_rng(1)
    data, buf = rand(rng, (3, 7), dtype), np.zeros((3, 7), dtype)
    d_data = cuda.to_device(data)
    d_buf = G.zeros_like(d_data)
    assert d_buf.dtype == dtype and (d_buf.copy_to_host() == 0).all()
    for step in range(3):
        grad = rand(rng, (3, 7), dtype)
        use = buf if hp["momentum"] else None
        optim.sgd_update(data, grad, use, first_step=step == 0, **hp)
        G.sgd_update(d_data, grad, d_buf if use is not None else None, first_step=step == 0, **hp)
    close("sgd_update", d_data, data)
    if hp["momentum"]:
        close("sgd_update buf", d_buf, buf)
    with pytest.raises(TypeError, match="device array"):
        G.sgd_update(data, grad, None, first_step=False, **hp)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hp", ADAM_CASES)
def test_adam_update_matches_numpy_rule(G, close, dtype, hp):
    optim = pytest.importorskip("fastconv.optim")
    from numba import cuda
    rng = np.random.default_rng(2)
    host = [rand(rng, (2, 9), dtype)] + [np.zeros((2, 9), dtype) for _ in range(3)]
    dev = [cuda.to_device(a) for a in host]
    for step in range(1, 4):
        grad = rand(rng, (2, 9), dtype)
        ams = hp["amsgrad"]
        optim.adam_update(host[0], grad, host[1], host[2], host[3] if ams else None, step, **hp)
        G.adam_update(dev[0], cuda.to_device(grad), dev[1], dev[2], dev[3] if ams else None, step,
                      **hp)
    for name, d, h in zip(("data", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"), dev, host):
        close(f"adam_update {name}", d, h)


@pytest.mark.parametrize("dtype", DTYPES)
def test_axpby_is_numpys_running_average(G, close, dtype):
    from numba import cuda
    rng = np.random.default_rng(5)
    y, x = rand(rng, 7, dtype), rand(rng, 7, dtype)
    dy = cuda.to_device(y)
    G.axpby(dy, x, 1 - 0.1, 0.1 * 8 / 7)
    y *= 1 - 0.1
    y += (0.1 * 8 / 7) * x
    close("axpby", dy, y, exact=True)
    with pytest.raises(ValueError, match="shape"):
        G.axpby(dy, x[:3], 1.0, 1.0)


# --- through the functional API ------------------------------------------------------------------

def test_functional_backend_cuda_returns_device_arrays(G, close):
    import fastconv
    import fastconv.functional as F
    rng = np.random.default_rng(4)
    x, w = rand(rng, (2, 2, 5, 5), np.float32), rand(rng, (3, 2, 3, 3), np.float32)
    out, cache = F.conv2d(x, w, None, padding="same", backend="cuda")
    assert hasattr(out, "copy_to_host") and cache.backend == "cuda"
    close("F.conv2d", fastconv.to_numpy(out), F.conv2d(x, w, None, padding="same",
                                                         backend="cpu")[0])
    close("F.conv2d (vs naive)", fastconv.to_numpy(out),
          F.conv2d(x, w, None, padding="same", backend="naive")[0])
    pooled, switches = F.max_pool2d(out, 2, backend="cuda")
    assert hasattr(switches, "copy_to_host")
    dx = F.max_pool2d_backward(np.ones(pooled.shape, np.float32), switches, out.shape,
                               backend="cuda")
    assert fastconv.to_numpy(dx).sum() == pooled.size
    with pytest.raises(ValueError, match="switches hold indices outside"):
        F.max_pool2d_backward(np.ones(pooled.shape, np.float32), np.full(pooled.shape, 99),
                              out.shape, backend="cuda")


NO_GPU_SCRIPT = r"""
import json, sys
import numpy as np
import fastconv, fastconv.functional as F
report = {"numba_cuda_on_import": sorted(m for m in sys.modules if m.startswith("numba.cuda"))}
for label, call in [("set_backend", lambda: fastconv.set_backend("cuda")),
                    ("functional", lambda: F.relu(np.ones(3), backend="cuda"))]:
    try:
        call()
        report[label] = None
    except Exception as exc:
        report[label] = [type(exc).__name__, str(exc)]
report["backend_after"] = fastconv.get_backend()
import numba.cuda
report["gpu"] = numba.cuda.is_available()
print(json.dumps(report))
"""


def test_asking_for_cuda_without_gpu_or_simulator_fails_clearly():
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "FASTCONV_BACKEND")}
    done = subprocess.run([sys.executable, "-c", NO_GPU_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["numba_cuda_on_import"] == []  # importing fastconv never touches numba.cuda
    if report["gpu"]:
        pytest.skip("a real GPU is present: there is no missing-GPU error to check")
    for label in ("set_backend", "functional"):
        kind, message = report[label]
        assert kind == "RuntimeError", report[label]
        assert "NUMBA_ENABLE_CUDASIM=1" in message and "GPU" in message
        assert "pip install fastconv[cuda]" in message
    assert report["backend_after"] == "cpu"
