"""cpu combining of branch outputs: the sum (with the ReLU after a residual block in the same
pass) as a threaded Numba kernel; concatenation and split are the naive tier's NumPy copies."""
import numpy as np
from numba import njit

from .._memory import empty
from ..naive.combine import concat, split
from ._common import _elements

__all__ = ["add", "concat", "split"]


@njit(nogil=True, cache=True)
def _add_kernel(a, b, out, relu):
    for i in range(a.size):
        v = a[i] + b[i]
        out[i] = 0 if relu and v < 0 else v


def add(a, b, relu=False):
    """a + b (one shape and dtype), then max(., 0) where ``relu`` (NaN kept): one pass over
    memory, where a sum and a separate ReLU take two."""
    out = empty(a.shape, a.dtype)
    af, bf = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)
    of, relu = out.reshape(-1), bool(relu)
    _elements(lambda lo, hi: _add_kernel(af[lo:hi], bf[lo:hi], of[lo:hi], relu), of.size)
    return out
