"""Shared helpers of the op-family tests (tests/ops, tests/kernels): the convolution cases, the
PyTorch comparisons of the layer tests, forced cpu splits, and the cuda tier on Numba's simulator.
The basics (tiers, dtypes, tolerances, error measures) are in helpers.py."""
import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import fastconv

from helpers import (HF, assert_close_to_oracle, grad_rel_error, numeric_grad, patched, random, rel_error)


@st.composite
def conv_cases(draw):
    """A valid convolution geometry: shapes, stride, padding, and the padding's total per axis."""
    ints = st.integers
    strides = st.one_of(ints(1, 3), st.tuples(ints(1, 3), ints(1, 3)))
    fh, fw = draw(ints(1, 5)), draw(ints(1, 5))
    kind = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    if kind == "same":
        padding, stride, extra = "same", draw(st.sampled_from([1, (1, 1)])), (fh - 1, fw - 1)
    else:
        stride = draw(strides)
        if kind == "valid":
            padding, extra = "valid", (0, 0)
        elif kind == "int":
            padding = draw(ints(0, 2))
            extra = (2 * padding, 2 * padding)
        else:
            padding = (draw(ints(0, 2)), draw(ints(0, 2)))
            extra = (2 * padding[0], 2 * padding[1])
    h = draw(ints(max(1, fh - extra[0]), 12))
    w = draw(ints(max(1, fw - extra[1]), 12))
    return dict(x_shape=(draw(ints(1, 3)), draw(ints(1, 4)), h, w),
                w_shape=(draw(ints(1, 4)), 0, fh, fw), stride=stride, padding=padding, extra=extra)


def conv_arrays(case, dtype, seed, bias=True):
    """``(rng, x, w, b)`` of a :func:`conv_cases` case (``b`` None without bias)."""
    rng = np.random.default_rng(seed)
    x = random(rng, case["x_shape"], dtype)
    k, _, fh, fw = case["w_shape"]
    w = random(rng, (k, x.shape[1], fh, fw), dtype)
    b = random(rng, (k,), dtype) if bias else None
    return rng, x, w, b


def conv_all(x, w, b, stride, padding, dout_seed, backend, need_dx=True):
    """Forward and backward of one tier: (out, dx, dw, db) with a fixed random dout."""
    out, cache = HF.conv2d(x, w, b, stride, padding, backend=backend)
    dout = random(np.random.default_rng(dout_seed), out.shape, out.dtype)
    return (out,) + HF.conv2d_backward(dout, cache, need_dx=need_dx)


def check_conv_against_naive(x, w, b, stride, padding, backend, need_dx=True, label="conv2d"):
    """:func:`conv_all` of ``backend`` against the naive tier's, to the dtype's tolerance."""
    ref = conv_all(x, w, b, stride, padding, 7, "naive", need_dx)
    got = conv_all(x, w, b, stride, padding, 7, backend, need_dx)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        if r is None:
            assert a is None, f"{label} {name}: expected None"
        else:
            assert a.shape == r.shape
            assert_close_to_oracle(a, r, f"{label} {name}")
    return got


def torch_and_functional():
    """``(torch, torch.nn.functional)``, or skip the test without PyTorch (a missing-package
    skip: CI fails on it)."""
    torch = pytest.importorskip("torch")
    return torch, torch.nn.functional


def rtol_torch(dtype):
    """Relative tolerance of a conv or pooling result against PyTorch's."""
    return 1e-9 if dtype == np.float64 else 2e-4


#: Largest relative error of a conv variant against PyTorch per (layer, dtype): (error, what).
TORCH_WORST = {}
TORCH_RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


@pytest.fixture(scope="module")
def torch_error_summary():
    """After the module: print :data:`TORCH_WORST` (a test module asks for it with
    ``from helpers import torch_error_summary`` and an autouse fixture of its own)."""
    yield
    print("\nlargest relative error against PyTorch:")
    for (layer, dtype), (err, where) in sorted(TORCH_WORST.items()):
        print(f"  {layer} {dtype}: {err:.3e}  ({where})")


def close_to_torch(layer, what, got, ref):
    """Assert ``got`` matches the torch tensor ``ref`` to the dtype's tolerance; record the error."""
    ref = ref.detach().numpy()
    got = fastconv.to_numpy(got)
    assert got.dtype == ref.dtype and got.shape == ref.shape, (what, got.dtype, got.shape, ref.shape)
    err = rel_error(got, ref)
    key = (layer, ref.dtype.name)
    if err > TORCH_WORST.get(key, (-1.0, ""))[0]:
        TORCH_WORST[key] = (err, what)
    assert err <= TORCH_RTOL[ref.dtype], f"{layer} {what}: relative error {err:.3e}"


def check_layer_against_torch(name, layer, t, x, rng):
    """Forward, input gradient and parameter gradients of ``layer`` against the torch module ``t``."""
    import warnings

    import torch
    tx = torch.tensor(x, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ty = t(tx)
    out = layer(x)
    assert layer.output_shape(x.shape) == tuple(ty.shape)
    close_to_torch(name, "out", out, ty)
    dy = random(rng, out.shape, x.dtype)
    ty.backward(torch.from_numpy(dy))
    close_to_torch(name, "dx", layer.backward(dy), tx.grad)
    tparams = dict(t.named_parameters())
    for pname, p in layer.named_parameters():
        close_to_torch(name, f"d{pname}", p.grad, tparams[pname].grad)


def check_fd(f, arrays, dout):
    """Every analytic gradient of ``sum(f() * dout)`` matches central differences
    (``arrays``: name -> (array, its analytic gradient))."""
    for name, (arr, grad) in arrays.items():
        num = numeric_grad(f, arr, dout)
        assert grad_rel_error(grad, num) < 1e-7, name


@contextlib.contextmanager
def forced_splits(shares=3, block_bytes=1, partial_bytes=2**30):
    """Every conv and linear split into ``shares`` thread shares (None: the thread count as set),
    convs one image per block (by default), GEMMs cut into blocks of one row or column."""
    from fastconv.kernels import _workers
    from fastconv.kernels.cpu import _common as cpu_common
    values = dict(SPLIT_FLOPS=0, SPLIT_IMAGES=0, SPLIT_GEMM=1, BLAS_THREADED_GEMM=1, GEMM_BLOCK_MACS=1,
                  SPLIT_ELEMENTS=0, SPLIT_PLANE_ELEMENTS=0, BLOCK_BYTES=block_bytes,
                  PARTIAL_BYTES=partial_bytes)
    settings_ = [(cpu_common, name, value) for name, value in values.items()]
    if shares is not None:
        settings_.append((_workers, "threads", lambda: shares))
    with patched(settings_):
        yield


@contextlib.contextmanager
def split_into(shares):
    """Every cpu split of the conv variants and padding forced into ``shares`` shares, one image
    per block."""
    from fastconv.kernels import _workers
    from fastconv.kernels.cpu import _common as cpu_common
    names = ("SPLIT_FLOPS", "SPLIT_IMAGES", "SPLIT_ELEMENTS", "SPLIT_PLANE_ELEMENTS", "BLOCK_BYTES",
             "BLAS_THREADED_GEMM")
    with patched([(cpu_common, name, 1 if name in ("BLOCK_BYTES", "BLAS_THREADED_GEMM") else 0)
                  for name in names] + [(_workers, "threads", lambda: shares)]):
        yield


def cuda_test(fn):
    """Mark ``fn`` a test of the cuda tier. On Numba's simulator the tier warns of its own
    ``nopython=False``, and the RNG's uint64 arithmetic runs on NumPy scalars, which warn on wrap."""
    for mark in (pytest.mark.cuda, pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
                 pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")):
        fn = mark(fn)
    return fn


def on_simulator(examples, *checks, **options):
    """Hypothesis settings of a cuda test on Numba's simulator, which runs every GPU thread as
    Python: ``examples`` fixed (derandomised) examples, no deadline, and the health checks that a
    slow test taking fixtures trips switched off (``checks`` too)."""
    return settings(max_examples=examples, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           *checks], **options)


def share_on_simulator(divisor, least):
    """Like :func:`on_simulator` with a ``1/divisor`` share of the loaded profile's examples (at
    least ``least``), so ``--hypothesis-profile=thorough`` scales it; call it at a test module's
    import (after the profile is loaded)."""
    return settings(max_examples=max(least, settings.default.max_examples // divisor), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture
def both(close):
    """``both(name, got, cpu_result, naive_result, exact=False)``: a cuda result against the cpu
    tier (bit for bit when ``exact``, on the simulator) and against the naive oracle (a test
    module asks for it with ``from helpers import both``)."""
    def check(name, got, want_cpu, want_naive, exact=False):
        close(f"{name} (vs cpu)", got, want_cpu, exact=exact)
        return close(f"{name} (vs naive)", got, want_naive)
    return check
