"""Naive batch normalisation over the channel axis of (N, C, L)."""
import numpy as np


def batch_norm(x, weight, bias, mean, var, training, eps):
    """Batch normalisation per channel (axis 1) of x (N, C, L).

    training: normalise with the batch mean and biased variance (``mean``/``var`` are ignored);
    else with the given ``mean``/``var`` (C,). Returns ``(out, batch_mean, batch_var, saved)``
    where batch_mean/batch_var (C,) are None when not training and ``saved`` is what
    :func:`batch_norm_backward` needs.
    """
    if training:
        mean = x.mean(axis=(0, 2))
        var = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    inv_std = (1 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    xhat = (x - mean[None, :, None]) * inv_std[None, :, None]
    out = xhat * weight[None, :, None] + bias[None, :, None]
    return out, (mean if training else None), (var if training else None), (mean, inv_std)


def batch_norm_backward(dout, x, weight, saved, training, need_dx=True):
    """dout (N, C, L) -> (dx or None, dweight (C,), dbias (C,))."""
    mean, inv_std = saved
    xhat = (x - mean[None, :, None]) * inv_std[None, :, None]
    dweight = (dout * xhat).sum(axis=(0, 2))
    dbias = dout.sum(axis=(0, 2))
    if not need_dx:
        return None, dweight, dbias
    # weight * inv_std factored out, as PyTorch's: an inf weight gives inf, not inf - inf
    g = dout
    if training:
        m = x.shape[0] * x.shape[2]
        g = dout - (dbias / m)[None, :, None] - xhat * (dweight / m)[None, :, None]
    return g * (weight * inv_std)[None, :, None], dweight, dbias
