"""Shared test utilities: the tier lists, tolerances, error measures, a numerical gradient and PNG checks."""
import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

import fastconv
import fastconv.functional as F

#: Fast tiers checked against the naive oracle. Adding a tier is one entry here.
BACKENDS = ["cpu"]
#: Every tier, the oracle included (for checks that need no second tier, e.g. finite differences).
ALL_TIERS = ["naive"] + BACKENDS
DTYPES = [np.float32, np.float64]

#: Relative tolerance against naive, per dtype, measured against the reference array's scale.
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}

#: Hypothesis settings for the randomised comparisons: the loaded profile's (tests/conftest.py:
#: "ci", a fixed 40 examples, unless ``--hypothesis-profile=thorough``), with no deadline (the
#: first example compiles kernels).
HYPOTHESIS = settings(deadline=None, print_blob=True)

#: The worst relative error against naive seen in this session, per dtype name.
WORST = {}


def host(a):
    """NumPy arrays from a tier's result: device arrays are copied back, a tuple is mapped, None stays."""
    if a is None:
        return None
    if type(a) is tuple:
        return tuple(host(v) for v in a)
    return fastconv.to_numpy(a)


class _HostFunctional:
    """:mod:`fastconv.functional` with every array result brought to the host.

    ``HF.conv2d(...)`` is ``F.conv2d(...)`` with its arrays as NumPy (caches are left as they are),
    so a device tier drops into the same test bodies.
    """

    def __getattr__(self, name):
        fn = getattr(F, name)

        def call(*args, **kwargs):
            result = fn(*args, **kwargs)
            if type(result) is tuple:
                return tuple(v if hasattr(v, "_fields") else host(v) for v in result)
            return host(result)
        return call


HF = _HostFunctional()


def rel_error(a, ref):
    """``max|a - ref| / max|ref|`` (the absolute error when ``ref`` is all zero)."""
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert a.shape == ref.shape, (a.shape, ref.shape)
    if ref.size == 0:
        return 0.0
    scale = np.max(np.abs(ref))
    err = np.max(np.abs(a - ref))
    return float(err / scale) if scale > 0 else float(err)


def assert_close_to_oracle(a, ref, what):
    """Assert ``a`` matches the naive tier's ``ref`` within the dtype's tolerance; record the error."""
    a = np.asarray(a)
    assert a.dtype == ref.dtype, f"{what}: dtype {a.dtype}, oracle {ref.dtype}"
    err = rel_error(a, ref)
    name = ref.dtype.name
    if err > WORST.get(name, (-1.0, ""))[0]:
        WORST[name] = (err, what)
    assert err <= RTOL[ref.dtype], f"{what}: relative error {err:.3e} > {RTOL[ref.dtype]:.0e}"


def grad_rel_error(a, b):
    """``||a - b|| / (||a|| + ||b||)``, the usual gradient-check measure (0 when both are 0)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom > 0 else 0.0


def numeric_grad(f, x, dout, h=1e-5):
    """Central-difference gradient of ``sum(f() * dout)`` with respect to ``x`` (changed in place).

    ``f`` takes no arguments and reads ``x``; ``x`` is restored before returning.
    """
    grad = np.zeros_like(x, dtype=np.float64)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat, x), "x must be contiguous so that it can be perturbed in place"
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = np.sum(f() * dout)
        flat[i] = old - h
        minus = np.sum(f() * dout)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def random(rng, shape, dtype):
    """Standard normal values of ``dtype``."""
    return rng.standard_normal(shape).astype(dtype)


def tie_free(rng, shape, dtype, gap=0.1):
    """Distinct values (a shuffled ``arange`` times ``gap``, centred): pooling has no ties."""
    size = int(np.prod(shape))
    return ((rng.permutation(size) - size / 2) * gap).reshape(shape).astype(dtype)


# --- conv paths of the cpu tier: accuracy and thread-count independence ---------------------

def norm_error(a, ref):
    """``||a - ref|| / ||ref||`` in float64 (the accuracy measure of issue 10)."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def assert_float32_accuracy(run, inputs, ref, names=("out", "dx", "dw", "db")):
    """``run(*inputs)`` in float64 within 1e-10 and in float32 within 2e-5 (:func:`norm_error`)
    of the float64 reference results ``ref``."""
    got64 = run(*inputs)
    got32 = run(*[a.astype(np.float32) for a in inputs])
    for name, a64, a32, r in zip(names, got64, got32, ref):
        assert a32.dtype == np.float32
        assert norm_error(a64, r) <= 1e-10, name
        err = norm_error(a32, r)
        assert err <= 2e-5, f"{name}: float32 relative error {err:.2e}"


def padded_3x3_conv_arrays(seed, x_shape, k):
    """float32 ``(x, w, b, dout)`` of a 3x3 padding-1 conv of ``x_shape`` to ``k`` channels."""
    rng = np.random.default_rng(seed)
    n, c, h, wd = x_shape
    return (random(rng, x_shape, np.float32), random(rng, (k, c, 3, 3), np.float32),
            random(rng, (k,), np.float32), random(rng, (n, k, h, wd), np.float32))


def at_thread_counts(fn, counts):
    """``[fn() with n threads for n in counts]`` (the thread count restored afterwards)."""
    import numba
    before = numba.get_num_threads()
    try:
        results = []
        for count in counts:
            numba.set_num_threads(count)
            results.append(fn())
        return results
    finally:
        numba.set_num_threads(before)


def assert_bitwise_same(results, names=("out", "dx", "dw", "db")):
    """Every entry of ``results`` (one tuple of arrays per thread count) equal to the first."""
    for i, got in enumerate(results[1:], 1):
        for name, a, r in zip(names, got, results[0]):
            np.testing.assert_array_equal(a, r, err_msg=f"{name}, run {i + 1}")


def assert_same_digests_for_1_to_4_threads(setup, results):
    """Run ``setup`` (statements), then ``results([1, 2, 3, 4])`` (an expression naming a
    function of the tests' modules) in a subprocess with 4 Numba threads; every thread count's
    results must hash alike."""
    import os
    import subprocess
    import sys
    import textwrap
    tests = os.path.dirname(os.path.abspath(__file__))
    script = textwrap.dedent(f"""
        import hashlib, sys
        sys.path[:0] = [{tests!r}, {os.path.dirname(tests)!r}]
        {setup}
        for result in {results}([1, 2, 3, 4]):
            print(hashlib.sha256(b"".join(a.tobytes() for a in result)).hexdigest())
    """)
    env = dict(os.environ, NUMBA_NUM_THREADS="4")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    digests = done.stdout.split()
    assert len(digests) == 4 and len(set(digests)) == 1, digests


@contextlib.contextmanager
def patched(settings):
    """Set ``(module, name, value)`` for each entry of ``settings`` and restore them after (a
    context manager, for use inside hypothesis tests, where monkeypatch is not reset)."""
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in settings]
    try:
        for mod, name, value in settings:
            setattr(mod, name, value)
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


def pixels(path):
    """The PNG at ``path`` as an (H, W, channels) float array."""
    import matplotlib.image
    return matplotlib.image.imread(os.fspath(path))


def assert_png(path, height, width):
    """The PNG at ``path`` has that size, is not blank, and no temporary file is left beside it."""
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.endswith(".tmp")], "temporary file left"
    img = pixels(path)
    assert img.shape[:2] == (height, width)
    assert img[..., :3].std() > 0.01, "blank picture"
    return img


#: Real MNIST: ``FASTCONV_DATA``, else ``shared/mnist`` beside the project (tests never download).
MNIST_DIR = Path(os.environ.get("FASTCONV_DATA") or Path(__file__).resolve().parents[2] / "shared" / "mnist")


def mnist_folder():
    """:data:`MNIST_DIR`, or skip the test (a missing-file skip: CI fails on it) without the files."""
    from fastconv.datasets import load_mnist
    try:
        load_mnist(MNIST_DIR, download=False)
    except FileNotFoundError:
        pytest.skip(f"MNIST files not found in {MNIST_DIR} (set FASTCONV_DATA)")
    return MNIST_DIR


# --- layers: finite-difference gradients of a module (float64) -----------------------------

def rel_err(a, b, floor=1e-8):
    """``||a - b|| / (||a|| + ||b||)``; 0 when both are below ``floor`` (a true zero gradient,
    e.g. a conv bias followed by batch norm, against finite-difference rounding noise)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denom) if denom > floor else 0.0


def num_grad(loss, arr, h=1e-6):
    """Central differences of the scalar ``loss()`` with respect to ``arr`` (perturbed in place)."""
    grad = np.zeros(arr.shape)
    flat, g = arr.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat, arr)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = loss()
        flat[i] = old - h
        minus = loss()
        flat[i] = old
        g[i] = (plus - minus) / (2 * h)
    return grad


def check_gradients(module, x, seed=0, tol=1e-6):
    """Assert backward's input and parameter gradients match finite differences of sum(out * dout)."""
    x = np.array(x, dtype=np.float64)
    dout = np.random.default_rng(seed).standard_normal(module.forward(x).shape)

    def loss():
        return float(np.sum(module.forward(x) * dout))

    module.zero_grad()
    module.forward(x)
    dx = module._backward(dout, True)
    analytic = {name: p.grad.copy() for name, p in module.named_parameters()}
    assert dx.shape == x.shape and dx.dtype == np.float64
    assert rel_err(dx, num_grad(loss, x)) < tol, "input gradient"
    for name, p in module.named_parameters():
        assert p.grad.dtype == np.float64
        assert rel_err(analytic[name], num_grad(loss, p.data)) < tol, name
    return dx


def spaced(shape, seed=0):
    """Distinct values at least 0.01 apart and away from 0 (no ties or kinks for max/relu)."""
    rng = np.random.default_rng(seed)
    vals = (rng.permutation(int(np.prod(shape))) - np.prod(shape) / 2 + 0.5) * 0.01
    return vals.reshape(shape)


#: A script printing a Conv2d layer's summary() memory figure and what tracemalloc saw, as JSON
#: (argv: n, c, h, k, f, padding); each layer runs in a fresh process (tests/layers/test_summary_memory.py).
SUMMARY_MEMORY_SCRIPT = r"""
import json, sys, tracemalloc
import numpy as np
import fastconv as fc
n, c, h, k, f, p = (int(v) for v in sys.argv[1:7])
fc.manual_seed(0)
layer = fc.Conv2d(c, k, f, padding=p)
x = np.random.default_rng(0).standard_normal((n, c, h, h)).astype(np.float32)
# compile on one image one row and column smaller: the same kernels, but none of the buffers
# kept for this layer's shapes (one thread's scratch would otherwise be there before the count)
warm = fc.Conv2d(c, k, f, padding=p)
small = x[:1, :, 1:, 1:].copy()
warm(small)
warm.backward(np.ones(warm.output_shape(small.shape), np.float32))
# the process's one-time state is not the layer's memory: the worker pool and threadpoolctl's
# handles on BLAS (its import and library scan took 0.3 MB here and about 2 MB in a CI run)
from fastconv.kernels import _workers
_workers.split(lambda a, z: None, 2, 2)
out_shape = layer.output_shape(x.shape)
_, kept, work = layer._memory(x.shape, out_shape, 4)
dy = np.ones(out_shape, np.float32)
tracemalloc.start()
base = tracemalloc.get_traced_memory()[0]
out = layer(x)
dx = layer.backward(dy)
peak = tracemalloc.get_traced_memory()[1] - base
print(json.dumps({"estimate": kept + work, "measured": peak - out.nbytes - dx.nbytes - layer.weight.grad.nbytes}))
"""
