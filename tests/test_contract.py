"""Every tier implements exactly the kernel contract (fastconv.kernels.contract): the same names,
each with the contract's signature, and nothing else public. The cuda tier imports only on a GPU
or the simulator; where it does not import here, a subprocess imports it with
NUMBA_ENABLE_CUDASIM=1 (skipped only when numba-cuda itself is missing)."""
import inspect
import json
import os
import subprocess
import sys

import pytest

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
