"""Every cuda kernel compiles for a real GPU (sm_90 PTX), not only on the simulator.

The simulator runs kernels as Python and forgives what NVVM rejects (untyped shared arrays,
unsupported calls, type unification errors) and hides float64 upcasts. So a subprocess with the
simulator switched off compiles each kernel in ``fastconv.kernels.cuda.KERNELS`` (assembled from
the tier's family files) to PTX for compute capability 9.0 and reports what the PTX holds. No GPU
is needed: ``is_available`` is stubbed so the package imports, and the "current device" asked for
when a kernel calls a device function (``numba.cuda.random``'s generator) is stubbed to report
compute capability 9.0.
"""
import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.cuda,
              pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]

SCRIPT = r"""
import importlib, inspect, json, pkgutil, re, types
import numba.cuda
import numba.cuda.dispatcher as dispatcher
if not numba.cuda.is_available():
    numba.cuda.is_available = lambda: True
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
import fastconv.kernels.cuda as m

# every kernel (not device function) defined in a file of the tier's package, as (file, name)
families = [importlib.import_module(f"{m.__name__}.{info.name}")
            for info in pkgutil.iter_modules(m.__path__)]
jitted = sorted([f.__name__, name] for f in families for name, obj in vars(f).items()
                if isinstance(obj, dispatcher.CUDADispatcher)
                and obj.py_func.__module__ == f.__name__ and not obj.targetoptions.get("device"))
report = {"jitted": jitted, "kernels": {}}
for name, (kernel, sigs) in m.KERNELS.items():
    home = importlib.import_module(kernel.py_func.__module__)
    uses_shared = "cuda.shared.array" in inspect.getsource(kernel.py_func)
    rows = report["kernels"][name] = []
    for sig in sigs:
        ptx, _ = numba.cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        rows.append({"sig": str(sig), "home": home.__name__,
                     "same_object": kernel is getattr(home, name, None),
                     "sm_90": ".target sm_90" in ptx,
                     "entry": re.search(r"\.entry\s+\S*%d%s" % (len(name), name), ptx) is not None,
                     "f64": ".f64" in ptx, "shared": ".shared" in ptx,
                     "shared_in_source": uses_shared})
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report():
    # numba's own (legacy) numba.cuda runs the simulator but cannot compile PTX: that needs the
    # numba-cuda package, which the cuda extra installs.
    pytest.importorskip("numba_cuda", reason="could not import 'numba_cuda': the PTX check needs "
                        "numba-cuda (pip install -e '.[cuda]')")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_registry_lists_every_kernel(report):
    assert report["jitted"], "no @cuda.jit kernel found in fastconv.kernels.cuda"
    names = [name for _, name in report["jitted"]]
    assert len(set(names)) == len(names), "two family files define a kernel of the same name"
    assert sorted(report["kernels"]) == sorted(names)
    homes = {name: home for home, name in report["jitted"]}
    for name, rows in report["kernels"].items():
        assert rows, f"{name} has no example signature"
        assert all(r["same_object"] and r["home"] == homes[name] for r in rows), \
            f"KERNELS[{name!r}] is not the kernel of {homes[name]}"


def test_every_kernel_compiles_to_sm90_ptx_with_its_entry(report):
    for name, rows in report["kernels"].items():
        for r in rows:
            assert r["sm_90"], f"{name} {r['sig']}: PTX does not target sm_90"
            assert r["entry"], f"{name} {r['sig']}: no .entry for the kernel in the PTX"


def test_float32_kernels_have_no_float64_instruction(report):
    """float32 data is computed in float32 on the device: a stray Python float or int/float mix
    would show up as .f64 instructions."""
    checked = 0
    for name, rows in report["kernels"].items():
        for r in rows:
            if "float32" in r["sig"]:
                checked += 1
                assert not r["f64"], f"{name} {r['sig']}: float64 instructions in float32 PTX"
            if "float64" in r["sig"]:
                assert r["f64"], f"{name} {r['sig']}: float64 kernel without float64 arithmetic"
    assert checked >= len(report["kernels"]) - 1  # every float kernel has a float32 example


def test_shared_memory_kernels_really_use_shared_memory(report):
    for name, rows in report["kernels"].items():
        for r in rows:
            assert r["shared"] == r["shared_in_source"], \
                f"{name} {r['sig']}: .shared in PTX is {r['shared']}"
