"""The cpu tier's one-pass SGD and Adam updates against the host rules they fuse
(:mod:`fastconv.kernels._host_optim`, themselves checked against torch.optim in
test_optim_torch.py): bit for bit, over several steps, every option, float32 and float64, arrays
big enough to be split across the threads, and arrays that are not C-contiguous."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv.kernels import _host_optim as host
from fastconv.kernels import cpu

from helpers import DTYPES, HYPOTHESIS


def _state(rng, shape, dtype, count):
    return [rng.standard_normal(shape).astype(dtype) for _ in range(count)]


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(size=st.sampled_from([1, 7, 1000, 300_000]), momentum=st.sampled_from([0.0, 0.9]),
       dampening=st.sampled_from([0.0, 0.3]), nesterov=st.booleans(),
       weight_decay=st.sampled_from([0.0, 5e-4]), seed=st.integers(0, 2**16))
def test_sgd_is_the_host_rule_bit_for_bit(dtype, size, momentum, dampening, nesterov,
                                          weight_decay, seed):
    if nesterov and (momentum == 0 or dampening != 0):
        nesterov = False
    rng = np.random.default_rng(seed)
    data, = _state(rng, size, dtype, 1)
    runs = {}
    for name, rule in (("host", host.sgd_update), ("cpu", cpu.sgd_update)):
        p, buf = data.copy(), np.zeros(size, dtype) if momentum else None
        grads = np.random.default_rng(seed + 1)
        for step in range(3):
            g = grads.standard_normal(size).astype(dtype)
            rule(p, g, buf, 0.05, momentum, dampening, nesterov, weight_decay, step == 0)
        runs[name] = (p, buf)
    np.testing.assert_array_equal(runs["cpu"][0], runs["host"][0])
    assert runs["cpu"][0].dtype == np.dtype(dtype)
    if momentum:
        np.testing.assert_array_equal(runs["cpu"][1], runs["host"][1])
    assert not np.array_equal(runs["cpu"][0], data)


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(size=st.sampled_from([1, 7, 1000, 300_000]), beta1=st.sampled_from([0.9, 0.3]),
       weight_decay=st.sampled_from([0.0, 1e-2]), amsgrad=st.booleans(),
       seed=st.integers(0, 2**16))
def test_adam_is_the_host_rule_bit_for_bit(dtype, size, beta1, weight_decay, amsgrad, seed):
    rng = np.random.default_rng(seed)
    data, = _state(rng, size, dtype, 1)
    runs = {}
    for name, rule in (("host", host.adam_update), ("cpu", cpu.adam_update)):
        p = data.copy()
        m, v = np.zeros(size, dtype), np.zeros(size, dtype)
        vmax = np.zeros(size, dtype) if amsgrad else None
        grads = np.random.default_rng(seed + 1)
        for step in range(1, 4):
            g = grads.standard_normal(size).astype(dtype)
            rule(p, g, m, v, vmax, step, 1e-3, beta1, 0.999, 1e-8, weight_decay, amsgrad)
        runs[name] = (p, m, v, vmax)
    for got, want in zip(runs["cpu"], runs["host"]):
        if want is not None:
            np.testing.assert_array_equal(got, want)
            assert got.dtype == np.dtype(dtype)


def test_updates_of_arrays_that_are_not_contiguous_land_in_them():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    grad = rng.standard_normal((6, 8)).astype(np.float32)
    want = base.copy()
    host.sgd_update(want[:, ::2], grad[:, ::2], None, 0.1, 0.0, 0.0, False, 0.0, True)
    got = base.copy()
    cpu.sgd_update(got[:, ::2], grad[:, ::2], None, 0.1, 0.0, 0.0, False, 0.0, True)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, base)
    m, v = np.zeros((6, 4), np.float32), np.zeros((6, 4), np.float32)
    m2, v2 = m.copy(), v.copy()
    host.adam_update(want[:, 1::2], grad[::1, ::2], m, v, None, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0,
                     False)
    cpu.adam_update(got[:, 1::2], grad[::1, ::2], m2, v2, None, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0,
                    False)
    np.testing.assert_array_equal(got, want)
