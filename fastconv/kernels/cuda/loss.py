"""cuda softmax cross-entropy: one thread per row; the per-row losses come back to the host."""
import math

import numpy as np
from numba import cuda, float32

from ._launch import _A2, _dev, _empty, _launch, _scalar, _sigs


@cuda.jit(cache=True)
def _softmax_xent_kernel(logits, labels, inv_n, dlogits, rows):
    """One thread per row: dlogits = (softmax - onehot) * inv_n; rows[0, i] = the row's loss,
    rows[1, i] = 1 if labels[i] is outside [0, classes)."""
    n, ncls = logits.shape
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        m = logits[i, 0]
        for j in range(1, ncls):
            v = logits[i, j]
            if v > m or v != v:
                m = v
        total = math.exp(logits[i, 0] - m)
        dlogits[i, 0] = total
        for j in range(1, ncls):
            e = math.exp(logits[i, j] - m)
            dlogits[i, j] = e
            total += e
        lab = labels[i]
        ok = lab >= 0 and lab < ncls
        for j in range(ncls):
            g = dlogits[i, j] / total
            if j == lab:
                g -= float32(1)
            dlogits[i, j] = g * inv_n
        if ok:
            rows[0, i] = -((logits[i, lab] - m) - math.log(total))
            rows[1, i] = 0
        else:
            rows[0, i] = 0
            rows[1, i] = 1


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of logits (N, classes) against int labels (N,) -> (loss, dlogits).

    ``dlogits`` stays on the device; the per-row losses come back to form the float ``loss``.
    Raises ``ValueError`` if a label is outside ``[0, classes)``. No rows: the loss is NaN
    (PyTorch's mean of nothing) and dlogits is (0, classes).
    """
    logits = _dev(logits)
    labels = _dev(labels, np.int64)
    n, ncls = logits.shape
    dlogits = _empty((n, ncls), logits.dtype)
    if n == 0:
        return float("nan"), dlogits
    rows = _empty((2, n), logits.dtype)
    _softmax_xent_kernel[_launch(n)](logits, labels, _scalar(logits.dtype, 1.0 / n),
                                     dlogits, rows)
    host = rows.copy_to_host()
    if host[1].any():
        raise ValueError(f"labels must lie in [0, {ncls}); {int(host[1].sum())} of {n} do not")
    return float(host[0].mean()), dlogits


KERNELS = {
    "_softmax_xent_kernel": (_softmax_xent_kernel,
                             _sigs(f"void({_A2}, int64[::1], {{f}}, {_A2}, {_A2})")),
}
