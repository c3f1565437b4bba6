"""Every tier implements exactly the kernel contract (fastconv.kernels.contract): the same names,
each with the contract's signature, and nothing else public. The cuda tier imports only on a GPU
or the simulator; where it does not import here, a subprocess imports it with
NUMBA_ENABLE_CUDASIM=1 (skipped only when numba-cuda itself is missing)."""
import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastconv._backend import is_device_array, to_numpy
from fastconv.kernels import contract

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
