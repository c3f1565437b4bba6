"""Every tier implements exactly the kernel contract (fastconv.kernels.contract): the same names,
each with the contract's signature, and nothing else public. The cuda tier imports only on a GPU
or the simulator; where it does not import here, a subprocess imports it with
NUMBA_ENABLE_CUDASIM=1 (skipped only when numba-cuda itself is missing).

Also how a tier is chosen: ``set_backend`` / ``get_backend`` and ``FASTCONV_BACKEND``,
``to_numpy``, ``backend="cuda"`` through the functional API (device arrays out), and the clear
error when the cuda tier has neither a GPU nor the simulator.
"""
import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
import fastconv.functional as F
from fastconv import _backend
from fastconv._backend import is_device_array, to_numpy
from fastconv.kernels import contract

from helpers import ALL_TIERS, random
from op_helpers import cuda_test


#: Prints {"__all__": [...], name: signature} for the tier named in argv[1].
_LIST = """
import importlib, inspect, json, sys
tier = importlib.import_module("fastconv.kernels." + sys.argv[1])
names = [n for n in tier.__all__ if n != "KERNELS"]
sigs = {n: str(inspect.signature(getattr(tier, n))) for n in names if callable(getattr(tier, n))}
print(json.dumps({"__all__": list(tier.__all__), **sigs}))
"""


def _listing(name):
    """The tier's ``__all__`` and the signature of each of its functions."""
    try:
        tier = __import__(f"fastconv.kernels.{name}", fromlist=["__all__"])
    except RuntimeError:  # the cuda tier without a GPU: ask the simulator in a fresh process
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
        run = subprocess.run([sys.executable, "-c", _LIST, name], capture_output=True, text=True,
                             env=env, timeout=600)
        if run.returncode:
            if "numba-cuda is not installed" in run.stderr or "No module named" in run.stderr:
                pytest.skip(f"cuda tier unavailable: {run.stderr.strip().splitlines()[-1]}")
            raise AssertionError(run.stderr)
        listing = json.loads(run.stdout.strip().splitlines()[-1])
        return listing.pop("__all__"), listing
    names = [n for n in tier.__all__ if n != "KERNELS"]
    return list(tier.__all__), {n: str(inspect.signature(getattr(tier, n))) for n in names
                                if callable(getattr(tier, n))}


def test_contract_lists_each_name_once_in_its_families():
    assert len(contract.NAMES) == len(set(contract.NAMES))
    assert set(contract.FAMILIES) >= {"conv", "grouped", "conv_transpose", "pooling", "padding",
                                      "activation", "linear", "dropout", "loss", "normalization",
                                      "combine", "elementwise", "optim"}
    for functions in contract.CONTRACT.values():
        for name, (params, shapes) in functions.items():
            assert params and shapes, name


@pytest.mark.parametrize("name", ["naive", "cpu", "cuda"])
def test_tier_implements_exactly_the_contract(name):
    exported, signatures = _listing(name)
    extra = {"KERNELS"} if name == "cuda" else set()
    assert sorted(exported) == sorted(set(contract.NAMES) | extra)
    wrong = {n: (signatures.get(n), contract.signature(n)) for n in contract.NAMES
             if signatures.get(n) != contract.signature(n)}
    assert not wrong, f"{name} tier: signature (tier, contract): {wrong}"


def test_unknown_name_is_a_clear_key_error():
    with pytest.raises(KeyError, match="not a function of the kernel contract"):
        contract.signature("conv3d")


def _tiers():
    from fastconv.kernels import cpu, naive
    tiers = {"naive": naive, "cpu": cpu}
    try:
        from fastconv.kernels import cuda
        tiers["cuda"] = cuda
    except RuntimeError:  # no GPU and no simulator in this process
        pass
    return tiers


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_helpers_agree_across_tiers(dtype):
    """axpby, clamp, full, scale_rows and zeros_like: NumPy's arithmetic in every tier, results
    where the tier keeps its arrays, in the input's dtype."""
    rng = np.random.default_rng(3)
    y0, x = (rng.standard_normal((3, 5)).astype(dtype) for _ in range(2))
    s = rng.standard_normal(3).astype(dtype)
    want_axpby = y0 * 0.9
    want_axpby += x * 0.1
    for name, tier in _tiers().items():
        y = tier.full((3, 5), 0, dtype)
        tier.axpby(y, y0, 1, 1)  # y = 0 + y0
        tier.axpby(y, x, 0.9, 0.1)
        got = {"axpby": y, "scale_rows": tier.scale_rows(y0, s), "zeros_like": tier.zeros_like(y0),
               "full": tier.full((2, 2), 1.5, dtype)}
        c = tier.full((3, 5), 0, dtype)
        tier.axpby(c, y0, 1, 1)
        tier.clamp(c, -0.5, 0.25)
        got["clamp"] = c
        want = {"axpby": want_axpby, "scale_rows": y0 * s[:, None], "zeros_like": np.zeros_like(y0),
                "full": np.full((2, 2), 1.5, dtype), "clamp": np.clip(y0, -0.5, 0.25)}
        for key, a in got.items():
            host = to_numpy(a)
            assert host.dtype == dtype, (name, key)
            assert is_device_array(a) == (name == "cuda"), (name, key)
            np.testing.assert_allclose(host, want[key], rtol=1e-6, err_msg=f"{name} {key}")


def test_host_axpby_skips_trivial_terms_exactly():
    """``axpby(g, g, c, 0)`` is ``g *= c`` on the host, also for inf and -0.0 (no ``g * 0`` term)."""
    from fastconv.kernels import cpu
    g = np.array([np.inf, -0.0, 2.0], dtype=np.float32)
    cpu.axpby(g, g, 0.5, 0.0)
    np.testing.assert_array_equal(g, [np.inf, -0.0, 1.0])
    assert np.signbit(g[1])
    with pytest.raises(ValueError, match="axpby: x has shape"):
        cpu.axpby(g, np.zeros(2, np.float32), 1, 1)


# ---------------------------------------------------------------------------------------------
# Choosing a tier

def test_to_numpy_returns_numpy_input_unchanged():
    x = np.arange(6.0).reshape(2, 3)
    assert fastconv.to_numpy(x) is x
    out, _ = F.conv2d(np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 2, 2), np.float32), backend="cpu")
    assert fastconv.to_numpy(out) is out
    listed = fastconv.to_numpy([[1.0, 2.0]])
    assert isinstance(listed, np.ndarray) and listed.shape == (1, 2)


def test_set_backend_get_backend_round_trip(monkeypatch):
    monkeypatch.setitem(_backend._state, "name", _backend._state["name"])  # restored afterwards
    monkeypatch.delenv("FASTCONV_BACKEND", raising=False)
    _backend._state["name"] = None
    assert fastconv.get_backend() == "cpu"  # the default
    for name in ALL_TIERS:
        fastconv.set_backend(name)
        assert fastconv.get_backend() == name
        _, cache = F.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))
        assert cache.backend == name  # the default is what F uses
        explicit = F.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), backend="naive")[1].backend
        assert explicit == "naive"  # an explicit backend beats the default
    monkeypatch.setenv("FASTCONV_BACKEND", "naive")
    _backend._state["name"] = None
    assert fastconv.get_backend() == "naive"  # the environment variable is honoured


@cuda_test
def test_functional_backend_cuda_returns_device_arrays(G, close):
    rng = np.random.default_rng(4)
    x, w = random(rng, (2, 2, 5, 5), np.float32), random(rng, (3, 2, 3, 3), np.float32)
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


@cuda_test
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
