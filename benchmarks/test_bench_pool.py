"""Pooling benchmarks: max_pool2d (with switches) and avg_pool2d, forward, backward and both."""
import numpy as np
import pytest

from benchmarks import baselines, cases
from benchmarks.conftest import require
from fastconv import functional as F


@pytest.mark.parametrize("impl", cases.IMPLS)
@pytest.mark.parametrize("pass_", cases.PASSES)
@pytest.mark.parametrize("shape", list(cases.POOL_SHAPES))
@pytest.mark.parametrize("op", cases.POOL_OPS)
def test_pool(benchmark, record, run, op, shape, pass_, impl):
    require(impl)
    p = cases.POOL_SHAPES[shape]
    case = cases.pool_case(impl, op, shape, pass_)
    benchmark.group = f"{op} {shape} {pass_}"
    record(kind="pool", op=op, impl=impl, shape=shape, **{"pass": pass_}, time_scale=case.scale,
           batch=p.n, timed_batch=round(p.n / case.scale), kernel=p.kernel, stride=p.stride)
    run(impl, case)


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (3, 1)])
def test_numpy_pool_baselines_match_naive(kernel, stride):
    """The NumPy pools give the oracle's outputs, switches and gradients (overlaps included)."""
    rng = np.random.default_rng(5)
    x = rng.permutation(2 * 3 * 9 * 10).reshape(2, 3, 9, 10).astype(np.float32)  # no ties
    out, sw = baselines.max_pool2d(x, kernel, stride)
    ref, ref_sw = F.max_pool2d(x, kernel, stride, backend="naive")
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(sw, ref_sw)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    np.testing.assert_allclose(baselines.max_pool2d_backward(dout, sw, x.shape, kernel, stride),
                               F.max_pool2d_backward(dout, ref_sw, x.shape, backend="naive"),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(baselines.avg_pool2d(x, kernel, stride),
                               F.avg_pool2d(x, kernel, stride, backend="naive"), rtol=1e-6)
    np.testing.assert_allclose(baselines.avg_pool2d_backward(dout, x.shape, kernel, stride),
                               F.avg_pool2d_backward(dout, x.shape, kernel, stride, backend="naive"),
                               rtol=1e-6, atol=1e-7)
