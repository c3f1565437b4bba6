"""summary()'s memory figures are what the cpu tier allocates: within 25% of tracemalloc.

Each layer runs in a fresh process, so the tier's per-thread buffers are allocated (and seen by
tracemalloc) during the measured forward + backward; the figure compared is the peak of traced
memory beyond the arrays the call returns (output, dx, dW)."""
import json
import subprocess
import sys

import pytest

from helpers import SUMMARY_MEMORY_SCRIPT as SCRIPT


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
