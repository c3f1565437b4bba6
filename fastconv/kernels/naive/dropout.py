"""Naive inverted dropout from NumPy's generator (shared by the cpu tier)."""
import numpy as np


def dropout(x, p, seed):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    Returns ``(out, mask)``; the mask holds 0 or 1/(1-p) in x's dtype.
    """
    rng = np.random.default_rng(seed)
    keep = rng.random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32) >= p
    mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return x * mask, mask


def dropout_backward(dout, mask):
    return dout * mask
