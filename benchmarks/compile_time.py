"""JIT compile time, apart from run time: a cold and a warm fresh process.

Each run is a new interpreter with ``NUMBA_CACHE_DIR`` pointing at one temporary directory:
the first finds it empty (cold: every kernel compiles), the second finds the first one's cache
(warm: kernels load from Numba's cache). Each times, separately: ``import fastconv``, loading
the cpu tier (which imports Numba), then the first and the second call of conv2d forward and
backward (shape B, float32) and of max/avg pooling forward + backward. The first call minus the
second is the compile (or cache-load) time.

``python -m benchmarks.compile_time [--json]``
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

#: Steps in the order the child runs them, with their labels in the report.
STEPS = (
    ("python", "interpreter start (python -c pass)"),
    ("import_fastconv", "import fastconv"),
    ("load_cpu_tier", "load cpu tier (imports numba)"),
    ("conv_fwd", "conv2d forward, first call"),
    ("conv_bwd", "conv2d backward, first call"),
    ("pool", "max+avg pool fwd+bwd, first calls"),
    ("conv_fwd_2", "conv2d forward, second call"),
    ("conv_bwd_2", "conv2d backward, second call"),
    ("pool_2", "max+avg pool fwd+bwd, second calls"),
)

_CHILD = r"""
import json, time
t = {}
def mark(key, t0):
    t[key] = time.perf_counter() - t0
    return time.perf_counter()
t0 = time.perf_counter()
import fastconv
from fastconv import functional as F
t0 = mark("import_fastconv", t0)
import fastconv.kernels.cpu
t0 = mark("load_cpu_tier", t0)
import numpy as np
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 32, 14, 14), dtype=np.float32)
w = rng.standard_normal((64, 32, 3, 3), dtype=np.float32)
b = rng.standard_normal(64, dtype=np.float32)
dout = rng.standard_normal((64, 64, 14, 14), dtype=np.float32)
p = rng.standard_normal((64, 32, 28, 28), dtype=np.float32)
def pool():
    o, s = F.max_pool2d(p, 2, 2, backend="cpu")
    F.max_pool2d_backward(o, s, p.shape, backend="cpu")
    a = F.avg_pool2d(p, 2, 2, backend="cpu")
    F.avg_pool2d_backward(a, p.shape, 2, 2, backend="cpu")
for suffix in ("", "_2"):
    t0 = time.perf_counter()
    out, cache = F.conv2d(x, w, b, 1, 1, backend="cpu")
    t0 = mark("conv_fwd" + suffix, t0)
    F.conv2d_backward(dout, cache)
    t0 = mark("conv_bwd" + suffix, t0)
    pool()
    mark("pool" + suffix, t0)
print(json.dumps(t))
"""


def _run(code, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    threads = env.get("FASTCONV_BENCH_THREADS", "2") or "2"
    env.setdefault("NUMBA_NUM_THREADS", threads)
    env.setdefault("OPENBLAS_NUM_THREADS", threads)
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"compile-time child failed:\n{res.stderr[-2000:]}")
    return wall, res.stdout


def _kernel_sources_stamp():
    import fastconv.kernels
    folder = os.path.dirname(fastconv.kernels.__file__)
    return sorted((os.path.relpath(os.path.join(root, f), folder),
                   os.stat(os.path.join(root, f)).st_mtime_ns)
                  for root, _, files in os.walk(folder) for f in files if f.endswith(".py"))


def measure():
    """``{"cold": {...}, "warm": {...}}``: seconds per step of :data:`STEPS`, plus ``wall``.

    ``source_changed`` is True when a kernel source file changed between the runs (Numba then
    recompiles instead of loading its cache, and the warm figures are not warm).
    """
    stamp = _kernel_sources_stamp()
    with tempfile.TemporaryDirectory(prefix="fastconv-numba-cache-") as cache_dir:
        python = min(_run("pass", cache_dir)[0] for _ in range(3))
        result = {}
        for kind in ("cold", "warm"):
            wall, out = _run(_CHILD, cache_dir)
            steps = json.loads(out.strip().splitlines()[-1])
            steps["python"] = python
            steps["wall"] = wall
            result[kind] = steps
    result["source_changed"] = stamp != _kernel_sources_stamp()
    return result


def first_use(steps):
    """Seconds for a fresh process to import fastconv and run one conv forward + backward."""
    return sum(steps[k] for k in ("python", "import_fastconv", "load_cpu_tier", "conv_fwd", "conv_bwd"))


def markdown(result):
    """The compile-time section of the report as markdown lines."""
    cold, warm = result["cold"], result["warm"]
    lines = ["| step | cold cache (s) | warm cache (s) |", "|---|---:|---:|"]
    lines += [f"| {label} | {cold[k]:.3f} | {warm[k]:.3f} |" for k, label in STEPS]
    for name, first, second in (("conv2d fwd+bwd", ("conv_fwd", "conv_bwd"), ("conv_fwd_2", "conv_bwd_2")),
                                ("pooling", ("pool",), ("pool_2",))):
        comp = [sum(r[k] for k in first) - sum(r[k] for k in second) for r in (cold, warm)]
        lines.append(f"| **{name}: compile / cache load** (first - second call) | {comp[0]:.3f} | {comp[1]:.3f} |")
    lines.append(f"| **fresh process: start + import + first conv fwd+bwd** (targets: cold <= 6 s, warm < 1.5 s) "
                 f"| {first_use(cold):.3f} | {first_use(warm):.3f} |")
    lines.append(f"| whole child process, wall | {cold['wall']:.3f} | {warm['wall']:.3f} |")
    if result.get("source_changed"):
        lines.append("\n**Warning:** fastconv/kernels changed during the measurement; the warm run "
                     "recompiled. Re-run for warm figures.")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the raw JSON instead of markdown")
    args = ap.parse_args(argv)
    result = measure()
    print(json.dumps(result, indent=1) if args.json else "\n".join(markdown(result)))


if __name__ == "__main__":
    main()
