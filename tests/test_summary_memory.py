"""summary()'s memory figures are what the cpu tier allocates: within 25% of tracemalloc.

Each layer runs in a fresh process, so the tier's per-thread buffers are allocated (and seen by
tracemalloc) during the measured forward + backward; the figure compared is the peak of traced
memory beyond the arrays the call returns (output, dx, dW)."""
import json
import subprocess
import sys

import pytest

SCRIPT = r"""
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


@pytest.mark.parametrize("shape", [
    (256, 32, 14, 64, 3, 1),   # B: the Winograd path
    (256, 1, 28, 32, 3, 1),    # A: wide rows, columns unfolded again in backward
    (128, 3, 32, 64, 3, 1),    # C
    (64, 20, 12, 40, 5, 0),    # E: short rows, the batch's columns kept for backward
])
def test_conv_memory_estimate_matches_tracemalloc(shape):
    done = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, shape)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert abs(r["estimate"] - r["measured"]) <= 0.25 * r["measured"], r
