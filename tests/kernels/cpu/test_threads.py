"""Results do not depend on the thread count: the same bits with 1, 2, 3 and 4 threads.

The cpu tier cuts its work by the shapes only (fixed blocks of images, fixed blocks of a product's
rows or columns) and adds partial sums in block order, so the thread count decides only which
thread runs which run of blocks. Checked on convolutions (forward, dx, dW, db) of realistic
sizes, batches that no thread count divides, tiny shapes with every threshold forced down, Linear
forward and backward, and three steps of a lenet-like network trained with SGD and momentum.
The counts are set with :func:`fastconv.kernels._workers.set_num_threads`, which is not bounded
by the machine's cores or ``NUMBA_NUM_THREADS``.
"""
import contextlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv.kernels import _workers
from fastconv.kernels.cpu import conv as cpu_conv
from fastconv.losses import CrossEntropyLoss
from fastconv.optim import SGD

from helpers import DTYPES, HYPOTHESIS, patched, random
from op_helpers import conv_arrays, conv_cases, forced_splits

COUNTS = (1, 2, 3, 4)


@contextlib.contextmanager
def num_threads(n):
    _workers.set_num_threads(n)
    try:
        yield
    finally:
        _workers.set_num_threads(None)


def bits(a):
    """The raw bits of a float array (so that -0.0 differs from 0.0 and NaN payloads count)."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_same_bits(runs, names):
    """``runs[count] = (array, ...)``: every count's arrays have the bits of one thread's."""
    ref = runs[COUNTS[0]]
    for count, got in runs.items():
        for name, a, r in zip(names, got, ref):
            assert (a is None) == (r is None), name
            if r is not None:
                np.testing.assert_array_equal(bits(a), bits(r),
                                              err_msg=f"{name}: {count} threads vs 1")


def conv_runs(x, w, b, stride, padding, need_dx=True):
    runs = {}
    for count in COUNTS:
        with num_threads(count):
            out, cache = F.conv2d(x, w, b, stride, padding, backend="cpu")
            dout = random(np.random.default_rng(1), out.shape, x.dtype)  # the same each time
            runs[count] = (out,) + F.conv2d_backward(dout, cache, need_dx)
    return runs


# ---------------------------------------------------------------------------------------------
# The thread count is read in one place and any count works

def test_set_num_threads_overrides_numba_and_goes_back():
    import numba
    with num_threads(7):
        assert _workers.threads() == _workers.get_num_threads() == 7
        assert _workers.split(lambda lo, hi: (lo, hi), 7) == [(i, i + 1) for i in range(7)]
    assert _workers.threads() == numba.get_num_threads()
    for bad, error in ((0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="set_num_threads"):
            _workers.set_num_threads(bad)


def test_a_split_inside_a_share_runs_its_shares_in_order_in_that_thread():
    """A share of a split (a plan's chunk of images) that calls kernels which split again runs
    their shares itself, in order: waiting on the pool, whose threads run the outer shares,
    would never end."""
    import threading
    seen = []

    def inner(lo, hi):
        seen.append((threading.get_ident(), lo, hi))
        return hi - lo

    def outer(lo, hi):
        return _workers.split(inner, 6)

    with num_threads(2):
        results = _workers.split(outer, 2)
        assert results == [[3, 3], [3, 3]]  # the inner bounds are the shape's, as outside
        assert _workers.split(inner, 6) == [3, 3]  # outside a share: the pool again
    by_thread = {}
    for t, lo, hi in seen[:4]:
        by_thread.setdefault(t, []).append((lo, hi))
    assert sorted(by_thread.values()) == [[(0, 3), (3, 6)]] * 2  # each thread ran both, in order


def test_the_team_wakes_from_sleep_and_serves_splits_from_two_threads():
    """Team threads that sleep between splits (no spin at all) are woken for each one; a split
    asked for while another thread's split holds the team runs its shares in its own thread;
    every split returns every share's result, in order."""
    import threading
    with patched([(_workers, "SPIN_SECONDS", 0.0)]):  # sleep at once: the wake-up path each time
        team = _workers._Team(3)
    assert team.budget == 0
    for n in range(4, 40):
        bounds = _workers.shares(n, 4)
        assert team.run(lambda lo, hi: list(range(lo, hi)), bounds) == \
            [list(range(lo, hi)) for lo, hi in zip(bounds, bounds[1:])]
    results, errors = {}, []

    def caller(name):
        try:
            results[name] = [_workers.split(lambda lo, hi: sum(range(lo, hi)), 1000, 2)
                             for _ in range(200)]
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    with num_threads(2):
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    assert results == {i: [[sum(range(500)), sum(range(500, 1000))]] * 200 for i in range(2)}


def test_the_spin_clock_rate_is_measured_the_same_on_the_first_call_of_a_process():
    """The team's spin budget is SPIN_SECONDS times the TSC rate measured once per process; the
    first measurement must not include compiling (or loading) the clock kernel, which made it
    read 0.96 GHz for a 2.6 GHz counter, and the budget a third of its length (microseconds on
    a cold cache)."""
    code = ("from fastconv.kernels import _spin; "
            "print(_spin.cycles_per_second(), _spin.cycles_per_second())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    first, second = float(out[0]), float(out[1])
    assert 0.8 < first / second < 1.25, (first, second)


def test_a_split_keeps_nothing_of_its_shares_once_it_returns():
    """The team's threads drop a share's closure and result when it is done: an array that only
    the split's function holds is freed when the split returns (the block cache of the cpu
    tier's large arrays gets its memory back for the next layer)."""
    import gc
    import weakref

    class Big(np.ndarray):
        pass

    def run():
        data = np.zeros(1000).view(Big)
        ref = weakref.ref(data)
        _workers.split(lambda lo, hi: data[lo:hi].view(Big), 4, 2)
        return ref

    with num_threads(2):
        ref = run()
        gc.collect()
        assert ref() is None


# ---------------------------------------------------------------------------------------------
# Convolution

REALISTIC = [  # x shape, w shape, stride, padding: each is split into 3 or 4 runs of blocks
    ((64, 32, 14, 14), (64, 32, 3, 3), 1, 1),  # shape B, wide rows
    ((37, 20, 12, 12), (40, 20, 5, 5), 1, 0),  # E-like, rows of Wout, a batch no count divides
    ((45, 16, 32, 32), (32, 16, 3, 3), 2, 1),  # strided, odd batch
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", REALISTIC)
def test_conv_forward_and_gradients_have_the_same_bits_for_1_to_4_threads(dtype, case):
    xs, ws, stride, padding = case
    rng = np.random.default_rng(0)
    x, w, b = random(rng, xs, dtype), random(rng, ws, dtype), random(rng, ws[0], dtype)
    pads = (padding,) * 4
    with num_threads(4):  # the work really is split
        g = cpu_conv._Geometry(xs, ws, (stride, stride), pads, x.itemsize)
        assert min(g.parts, g.blocks) >= 3, (g.parts, g.blocks)
    assert_same_bits(conv_runs(x, w, b, stride, padding), ("out", "dx", "dw", "db"))


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=conv_cases(), bias=st.booleans(), need_dx=st.booleans(), seed=st.integers(0, 2**32 - 1),
       block_bytes=st.sampled_from([1, 4096, 2**20]), partial_bytes=st.sampled_from([1, 2**30]))
def test_tiny_convs_split_every_way_have_the_same_bits(dtype, case, bias, need_dx, seed,
                                                        block_bytes, partial_bytes):
    """Every threshold forced down: one image per block or a few, one chunk or one per block."""
    _, x, w, b = conv_arrays(case, dtype, seed, bias)
    with forced_splits(None, block_bytes, partial_bytes):
        runs = conv_runs(x, w, b, case["stride"], case["padding"], need_dx)
    assert_same_bits(runs, ("out", "dx", "dw", "db"))


# ---------------------------------------------------------------------------------------------
# Linear

def linear_runs(x, w, b, dout, need_dx=True):
    runs = {}
    for count in COUNTS:
        with num_threads(count):
            out, cache = F.linear(x, w, b, backend="cpu")
            runs[count] = (out,) + F.linear_backward(dout, cache, need_dx)
    return runs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, k_in, k_out", [(64, 800, 500), (37, 600, 400), (5, 900, 2000)])
def test_linear_forward_and_gradients_have_the_same_bits_for_1_to_4_threads(dtype, n, k_in, k_out):
    rng = np.random.default_rng(2)
    x, w = random(rng, (n, k_in), dtype), random(rng, (k_out, k_in), dtype)
    b = random(rng, k_out, dtype)
    dout = random(rng, (n, k_out), dtype)
    assert n * k_in * k_out >= 2**23  # above SPLIT_GEMM: the products are cut into blocks
    assert_same_bits(linear_runs(x, w, b, dout), ("out", "dx", "dw", "db"))


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(n=st.integers(1, 9), k_in=st.integers(1, 40), k_out=st.integers(1, 9), bias=st.booleans(),
       need_dx=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_tiny_linears_split_every_way_have_the_same_bits(dtype, n, k_in, k_out, bias, need_dx,
                                                         seed):
    rng = np.random.default_rng(seed)
    x, w = random(rng, (n, k_in), dtype), random(rng, (k_out, k_in), dtype)
    b = random(rng, (k_out,), dtype) if bias else None
    dout = random(rng, (n, k_out), dtype)
    with forced_splits(None):
        runs = linear_runs(x, w, b, dout, need_dx)
    assert_same_bits(runs, ("out", "dx", "dw", "db"))


# ---------------------------------------------------------------------------------------------
# A training step: every layer, the loss and the optimizer together

def lenet():
    return fc.Sequential(
        fc.Conv2d(1, 20, 5), fc.ReLU(), fc.MaxPool2d(2),
        fc.Conv2d(20, 50, 5), fc.ReLU(), fc.MaxPool2d(2),
        fc.Flatten(), fc.Linear(800, 500), fc.ReLU(), fc.Linear(500, 10))


def train_three_steps(count):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, (3, 64))
    with num_threads(count):
        fc.manual_seed(0)
        model = lenet()
        opt, loss_fn = SGD(model.parameters(), lr=0.05, momentum=0.9), CrossEntropyLoss()
        losses = []
        for step in range(3):
            opt.zero_grad()
            losses.append(loss_fn(model.forward(x[step]), y[step]))
            model.backward(loss_fn.backward())
            opt.step()
        return losses, [p.data.copy() for p in model.parameters()]


def test_three_lenet_training_steps_have_the_same_bits_for_1_to_4_threads():
    runs = {count: train_three_steps(count) for count in COUNTS}
    losses, params = runs[1]
    assert losses[2] != losses[0]  # it trained
    for count, (got_losses, got_params) in runs.items():
        assert got_losses == losses, f"{count} threads: losses {got_losses} != {losses}"
        for i, (a, r) in enumerate(zip(got_params, params)):
            np.testing.assert_array_equal(bits(a), bits(r),
                                          err_msg=f"parameter {i}: {count} threads")
