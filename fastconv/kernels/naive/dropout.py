"""Naive inverted dropout from NumPy's generator (shared by the cpu tier): elementwise
(:func:`dropout`) and of whole channels (:func:`dropout2d`)."""
import numpy as np


def _keep_scaled(shape, p, seed, dtype):
    """0 with probability p, else 1/(1-p) (0 everywhere for p = 1), in ``dtype``: the draws of
    ``default_rng(seed).random(shape)`` in the data's float type."""
    rng = np.random.default_rng(seed)
    keep = rng.random(shape, dtype=np.float64 if dtype == np.float64 else np.float32) >= p
    return keep.astype(dtype) * dtype.type(0.0 if p >= 1 else 1.0 / (1.0 - p))


def dropout(x, p, seed):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    Returns ``(out, mask)``; the mask holds 0 or 1/(1-p) in x's dtype.
    """
    mask = _keep_scaled(x.shape, p, seed, x.dtype)
    return x * mask, mask


def dropout_backward(dout, mask):
    return dout * mask


def dropout2d(x, p, seed):
    """Channel dropout of x (N, C, H, W): zero each whole channel ``x[n, c]`` with probability p,
    scale the others by 1/(1-p). Returns ``(out, mask)``; the mask is (N, C), drawn as
    :func:`dropout`'s mask of an (N, C) array (so the same seed gives the same channel choice)."""
    mask = _keep_scaled(x.shape[:2], p, seed, x.dtype)
    return x * mask[:, :, None, None], mask


def dropout2d_backward(dout, mask):
    """dout (N, C, H, W) times the channel mask (N, C)."""
    return dout * mask[:, :, None, None]
