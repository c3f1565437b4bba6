"""The cpu tier's own machinery: thread splits, the wide stride-1 layout, reused output memory.

The randomised shapes of tests/ops/test_conv.py are small, so there each convolution runs in one share
and one block; here the split thresholds and block size are forced down so that every path
(several shares of uneven size, one image per block, the per-thread buffers) meets the oracle.
"""
import contextlib
import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from threadpoolctl import threadpool_info, threadpool_limits

import fastconv.functional as F
from fastconv.kernels import _memory, _workers
from fastconv.kernels.cpu import _common as cpu_common
from fastconv.kernels.cpu import conv as cpu_conv

from helpers import DTYPES, HYPOTHESIS, assert_close_to_oracle, random
from op_helpers import check_conv_against_naive, conv_arrays, conv_cases, forced_splits


@contextlib.contextmanager
def patched(module, **values):
    """Set module attributes for the duration (hypothesis tests cannot take monkeypatch)."""
    old = {name: getattr(module, name) for name in values}
    for name, value in values.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(module, name, value)


def blas_threads(libraries=None):
    """``{path: threads}`` of the BLAS libraries loaded (of ``libraries`` only, when given: a
    first compilation may load another, SciPy's, in between)."""
    found = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    return found if libraries is None else {k: found.get(k) for k in libraries}


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=conv_cases(), bias=st.booleans(), need_dx=st.booleans(), seed=st.integers(0, 2**32 - 1),
       shares=st.integers(2, 4), block_bytes=st.sampled_from([1, 4096, 2**20]),
       partial_bytes=st.sampled_from([1, 2**30]))
def test_split_conv_matches_naive(dtype, case, bias, need_dx, seed, shares, block_bytes,
                                  partial_bytes):
    _, x, w, b = conv_arrays(case, dtype, seed, bias)
    with forced_splits(shares, block_bytes, partial_bytes):
        check_conv_against_naive(x, w, b, case["stride"], case["padding"], "cpu", need_dx,
                                 label="split conv2d")


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_conv_without_saved_columns_matches_naive(dtype):
    """Past WORKSPACE_BYTES forward keeps no columns and backward unfolds each block again."""
    rng = np.random.default_rng(11)
    x, w, b = random(rng, (7, 3, 9, 8), dtype), random(rng, (5, 3, 3, 3), dtype), random(rng, (5,), dtype)
    with forced_splits(2, 4096), patched(cpu_common, WORKSPACE_BYTES=0):
        _, cache = F.conv2d(x, w, b, 1, 1, backend="cpu")
        assert cache.saved is None
        check_conv_against_naive(x, w, b, 1, 1, "cpu", label="unsaved conv2d")


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(n=st.integers(1, 9), k_in=st.integers(1, 40), k_out=st.integers(1, 9), bias=st.booleans(),
       need_dx=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_split_linear_matches_naive(dtype, n, k_in, k_out, bias, need_dx, seed):
    rng = np.random.default_rng(seed)
    x, w = random(rng, (n, k_in), dtype), random(rng, (k_out, k_in), dtype)
    b = random(rng, (k_out,), dtype) if bias else None
    dout = random(rng, (n, k_out), dtype)
    ref_out, ref_cache = F.linear(x, w, b, backend="naive")
    ref = (ref_out,) + F.linear_backward(dout, ref_cache, need_dx)
    with forced_splits(3):
        out, cache = F.linear(x, w, b, backend="cpu")
        got = (out,) + F.linear_backward(dout, cache, need_dx)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        assert (a is None) == (r is None), name
        if r is not None:
            assert_close_to_oracle(a, r, f"split linear {name}")


def test_splits_are_deterministic_and_restore_blas_threads():
    rng = np.random.default_rng(5)
    x, w, b = random(rng, (6, 4, 10, 10), np.float32), random(rng, (8, 4, 3, 3), np.float32), None
    before = blas_threads()
    with forced_splits(3, 4096):
        runs = []
        for _ in range(2):
            out, cache = F.conv2d(x, w, b, 1, 1, backend="cpu")
            runs.append((out,) + F.conv2d_backward(np.ones_like(out), cache)[:2])
    assert blas_threads(before) == before
    for a, r in zip(*runs):
        np.testing.assert_array_equal(a, r)


def test_an_error_in_a_share_propagates_and_blas_is_restored():
    before = blas_threads()

    def share(lo, hi):
        if lo > 0:
            raise RuntimeError(f"share {lo}:{hi} failed")
        return lo

    with patched(_workers, threads=lambda: 3), pytest.raises(RuntimeError, match="share"):
        _workers.split(share, 9)
    assert blas_threads(before) == before
    with patched(_workers, threads=lambda: 3):
        assert _workers.split(lambda lo, hi: (lo, hi), 7) == [(0, 2), (2, 4), (4, 7)]
        assert _workers.split(lambda lo, hi: (lo, hi), 1) == [(0, 1)]


def test_the_blas_limit_holds_until_the_last_of_two_overlapping_users_leaves():
    """A enters, B enters, A leaves, B leaves: BLAS stays at one thread while B is inside, and
    gets its setting back (2) when B leaves. (A save/restore per user restored 2 under B's feet
    and then left BLAS at 1, B's saved value, for the rest of the process.)"""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with _workers.one_blas_thread():
            seen["a alone"] = blas_threads(before)
            a_in.set()
            b_in.wait(30)
        a_out.set()

    def b():
        a_in.wait(30)
        with _workers.one_blas_thread():
            b_in.set()
            a_out.wait(30)
            seen["inside"] = blas_threads(before)

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and all(n == 2 for n in before.values())
        workers = [threading.Thread(target=f) for f in (a, b)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(60)
        # the libraries limited while A alone was inside (NumPy's BLAS; SciPy's may be loaded
        # later) stay limited while B is inside
        limited = [k for k, n in seen["a alone"].items() if n == 1]
        assert limited and all(seen["inside"][k] == 1 for k in limited)
        assert blas_threads(before) == before


def test_blas_handles_read_and_set_what_threadpoolctl_reports():
    """The thread-count handles that every split uses (OpenBLAS's own C functions where it runs
    its own threads) read and set the count that threadpoolctl sees, and a library they do not
    know goes through threadpoolctl's controller."""
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with _workers._blas_lock:
            handles = _workers._blas()
            assert [get() for get, _ in handles] == [2] * len(handles)
            _workers._set_blas_threads([1] * len(handles))
            inside = blas_threads(before)
            _workers._set_blas_threads([2] * len(handles))
        # NumPy's OpenBLAS among them (a library loaded after the handles were found, such as
        # SciPy's, is not)
        assert any("numpy" in path for path, n in inside.items() if n == 1), inside
        assert blas_threads(before) == before

    class Other:
        internal_api, threads = "mkl", 3

        def get_num_threads(self):
            return self.threads

        def set_num_threads(self, n):
            self.threads = n

    lib = Other()
    get, set_ = _workers._blas_handles(lib)
    set_(5)
    assert get() == lib.threads == 5


def test_concurrent_splits_give_blas_its_setting_back_and_stay_correct():
    """Four Python threads run split convolutions at once (50 each, started together by a
    barrier): BLAS's one-thread limit is held while any split runs and restored by the last to
    leave, so afterwards BLAS has its setting back (a save/restore per split could leave it at
    one thread for good), and every result still matches the oracle."""
    rng = np.random.default_rng(9)
    x, w, b = (random(rng, (4, 3, 8, 8), np.float32), random(rng, (5, 3, 3, 3), np.float32),
               random(rng, (5,), np.float32))
    dout = random(rng, (4, 5, 8, 8), np.float32)
    ref_out, ref_cache = F.conv2d(x, w, b, 1, 1, backend="naive")
    ref = (ref_out,) + F.conv2d_backward(dout, ref_cache)
    barrier, failures = threading.Barrier(4), []

    def worker():
        barrier.wait()
        for _ in range(50):
            out, cache = F.conv2d(x, w, b, 1, 1, backend="cpu")
            for name, a, r in zip(("out", "dx", "dw", "db"),
                                  (out,) + F.conv2d_backward(dout, cache), ref):
                if np.abs(a - r).max() > 1e-4 * np.abs(r).max():
                    failures.append(name)

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and all(n == 2 for n in before.values())
        with forced_splits(2, 4096):
            workers = [threading.Thread(target=worker) for _ in range(4)]
            for t in workers:
                t.start()
            for t in workers:
                t.join()
        assert blas_threads(before) == before
    assert not failures, failures


# ---------------------------------------------------------------------------------------------
# The wide layout's dropped columns must not leak inf or NaN into results that have none

@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("where", ["x", "w"])
def test_wide_layout_keeps_non_finite_values_where_the_oracle_has_them(where):
    rng = np.random.default_rng(8)
    x, w = random(rng, (2, 4, 6, 12), np.float64), random(rng, (3, 4, 3, 3), np.float64)
    if where == "x":
        x[0, 1, 2, -1] = np.inf  # last column: feeds the dropped columns of the wide rows
    else:
        w[1, 0, 2, 2] = np.inf
    assert cpu_conv.algorithm(x.shape, w.shape, (1, 1), (1, 1, 1, 1)) == "im2col"
    assert cpu_conv._Geometry(x.shape, w.shape, (1, 1), (1, 1, 1, 1), 8).wide
    out, cache = F.conv2d(x, w, None, 1, 1, backend="cpu")
    dout = random(rng, out.shape, np.float64)
    got = (out,) + F.conv2d_backward(dout, cache)[:2]
    ref_out, ref_cache = F.conv2d(x, w, None, 1, 1, backend="naive")
    ref = (ref_out,) + F.conv2d_backward(dout, ref_cache)[:2]
    for name, a, r in zip(("out", "dx", "dw"), got, ref):
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(r), err_msg=name)
        finite = np.isfinite(r)
        np.testing.assert_allclose(a[finite], r[finite], rtol=1e-10, atol=1e-12, err_msg=name)


# ---------------------------------------------------------------------------------------------
# Reused memory

def test_memory_block_returns_only_when_the_last_view_is_gone():
    _memory.clear()
    nbytes = 4 * 2**20
    a = _memory.empty((2**20,), np.float32)
    a[:] = 3
    view = a.reshape(1024, 1024)[10:20]
    del a
    assert _memory.cached_bytes() == 0  # a view still reaches the memory
    b = _memory.empty((2**20,), np.float32)  # so this one must not get it
    b[:] = 5
    assert (view == 3).all()
    del view
    assert _memory.cached_bytes() == nbytes
    c = _memory.empty((1024, 1024), np.float32)  # same size: the cached block comes back
    assert _memory.cached_bytes() == 0 and c.flags.c_contiguous and c.flags.writeable
    assert (b == 5).all()
    del b, c
    _memory.clear()


def test_memory_cache_is_bounded_and_small_arrays_bypass_it(monkeypatch):
    _memory.clear()
    monkeypatch.setattr(_memory, "CACHE_BYTES", 6 * 2**20)
    arrays = [_memory.empty((2**20,), np.float32) for _ in range(3)]  # 4 MiB each
    del arrays
    assert _memory.cached_bytes() == 4 * 2**20  # only one fits under the bound
    small = _memory.empty((10,), np.float64)
    assert small.base is None  # a plain np.empty array
    _memory.clear()
    assert _memory.cached_bytes() == 0


def test_memory_lends_each_block_once_and_forgets_it_when_the_array_dies():
    """Two live arrays of one size never share a block, and the record of a lent block goes
    with its last view (a record that outlived it would keep the block from coming back)."""
    _memory.clear()
    lent = len(_memory._lent)
    a, b = _memory.empty((2**18,), np.float32), _memory.empty((512, 512), np.float32)
    assert len(_memory._lent) == lent + 2
    a[:] = 1
    b[:] = 2
    assert (a == 1).all() and (b == 2).all()
    del a
    assert len(_memory._lent) == lent + 1 and _memory.cached_bytes() == 2**20
    del b
    assert len(_memory._lent) == lent and _memory.cached_bytes() == 2 * 2**20
    _memory.clear()


def test_cpu_outputs_survive_later_calls_of_the_same_size():
    rng = np.random.default_rng(2)
    x1, x2 = random(rng, (8, 8, 32, 32), np.float32), random(rng, (8, 8, 32, 32), np.float32)
    out1 = F.relu(x1, backend="cpu")
    keep = out1.copy()
    for _ in range(3):
        F.relu(x2, backend="cpu")
    np.testing.assert_array_equal(out1, keep)


# ---------------------------------------------------------------------------------------------
# The unrolled 3x3 max-pool kernel keeps the general rules: first maximum, first NaN

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [1, 2, 3, (1, 2), (3, 1)])
def test_3x3_max_pool_ties_and_nans_match_naive(dtype, stride):
    rng = np.random.default_rng(21)
    x = rng.integers(0, 4, size=(3, 4, 11, 10)).astype(dtype)  # small integers: many ties
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 25, replace=False)] = np.nan
    flat[rng.choice(flat.size, 10, replace=False)] = np.inf
    out, switches = F.max_pool2d(x, 3, stride, backend="cpu")
    ref_out, ref_switches = F.max_pool2d(x, 3, stride, backend="naive")
    np.testing.assert_array_equal(switches, ref_switches)
    np.testing.assert_array_equal(out, ref_out)  # NaN where naive has NaN
    assert np.isnan(out).any() and (out == np.inf).any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, stride", [(2, 2), (3, 2), ((2, 3), (1, 2))])
def test_split_pooling_relu_and_batch_norm_match_naive(dtype, kernel, stride):
    """The plane, channel and element kernels give the oracle's results in uneven shares."""
    rng = np.random.default_rng(31)
    x = random(rng, (5, 3, 9, 11), dtype)
    with forced_splits(3):
        out, switches = F.max_pool2d(x, kernel, stride, backend="cpu")
        ref_out, ref_switches = F.max_pool2d(x, kernel, stride, backend="naive")
        np.testing.assert_array_equal(switches, ref_switches)
        np.testing.assert_array_equal(out, ref_out)
        dout = random(rng, out.shape, dtype)
        assert_close_to_oracle(F.max_pool2d_backward(dout, switches, x.shape, backend="cpu"),
                               F.max_pool2d_backward(dout, switches, x.shape, backend="naive"),
                               "split max_pool2d dx")
        assert_close_to_oracle(F.avg_pool2d(x, kernel, stride, backend="cpu"),
                               F.avg_pool2d(x, kernel, stride, backend="naive"), "split avg_pool2d")
        assert_close_to_oracle(F.avg_pool2d_backward(dout, x.shape, kernel, stride, backend="cpu"),
                               F.avg_pool2d_backward(dout, x.shape, kernel, stride, backend="naive"),
                               "split avg_pool2d dx")
        y = F.relu(x, backend="cpu")
        np.testing.assert_array_equal(y, F.relu(x, backend="naive"))
        np.testing.assert_array_equal(F.relu_backward(x, y, backend="cpu"),
                                      F.relu_backward(x, y, backend="naive"))
        weight, bias = random(rng, (3,), dtype), random(rng, (3,), dtype)
        got, cache = F.batch_norm(x, weight, bias, backend="cpu")
        ref, ref_cache = F.batch_norm(x, weight, bias, backend="naive")
        assert_close_to_oracle(got, ref, "split batch_norm")
        g = random(rng, x.shape, dtype)
        for name, a, r in zip(("dx", "dweight", "dbias"), F.batch_norm_backward(g, cache),
                              F.batch_norm_backward(g, ref_cache)):
            assert_close_to_oracle(a, r, f"split batch_norm {name}")


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_forked_child_gets_its_own_thread_pool():
    """A child forked after a split must not wait on the parent's pool threads (it has none)."""
    import multiprocessing
    with patched(_workers, threads=lambda: 2):
        assert _workers.split(lambda lo, hi: hi - lo, 4) == [2, 2]  # the parent's pool exists
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_split_in_child).get(timeout=60) == [2, 2]


def _split_in_child():
    _workers.threads = lambda: 2
    return _workers.split(lambda lo, hi: hi - lo, 4)
