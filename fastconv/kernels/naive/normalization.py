"""Naive normalisation: batch normalisation over the channel axis of (N, C, L), and group/layer
normalisation over the rows of an (N, G, M) view."""
import numpy as np


def batch_norm(x, weight, bias, mean, var, training, eps, relu=False):
    """Batch normalisation per channel (axis 1) of x (N, C, L), then max(., 0) when ``relu``.

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
    if relu:
        out = np.where(out < 0, out.dtype.type(0), out)
    return out, (mean if training else None), (var if training else None), (mean, inv_std)


def batch_norm_backward(dout, x, weight, saved, training, need_dx=True, out=None):
    """dout (N, C, L) -> (dx or None, dweight (C,), dbias (C,)). ``out``: the output of a forward
    with ``relu`` (dout counts only where it is positive)."""
    mean, inv_std = saved
    if out is not None:
        dout = np.where(out > 0, dout, dout.dtype.type(0))
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


def group_norm(x, weight, bias, inner, eps):
    """Normalise each row of x (N, G, M) by its own mean and biased variance, then the affine map
    per channel: x viewed as (N, C, inner) (C = G * M // inner) gets ``* weight[c] + bias[c]``.

    GroupNorm is x (N, C, *spatial) viewed as (N, G, C // G * spatial) with ``inner`` = spatial;
    LayerNorm is x (*, D) viewed as (R, 1, D) with ``inner`` = 1. Returns ``(out (N, G, M),
    mean (N, G), rstd (N, G))`` with ``rstd = 1 / sqrt(var + eps)``.
    """
    n, g, m = x.shape
    mean = x.mean(axis=2)
    centred = x - mean[..., None]
    var = (centred * centred).mean(axis=2)
    rstd = (1 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    xhat = (centred * rstd[..., None]).reshape(n, weight.shape[0], inner)
    out = xhat * weight[None, :, None] + bias[None, :, None]
    return out.reshape(x.shape), mean, rstd


def group_norm_backward(dout, x, weight, mean, rstd, inner, need_dx=True):
    """dout (N, G, M) -> (dx or None, dweight (C,), dbias (C,)) for :func:`group_norm`."""
    n, g, m = x.shape
    c = weight.shape[0]
    xhat = (x - mean[..., None]) * rstd[..., None]
    d4, xhat4 = dout.reshape(n, c, inner), xhat.reshape(n, c, inner)
    dweight = (d4 * xhat4).sum(axis=(0, 2))
    dbias = d4.sum(axis=(0, 2))
    if not need_dx:
        return None, dweight, dbias
    gw = (d4 * weight[None, :, None]).reshape(x.shape)
    dx = rstd[..., None] * (gw - gw.mean(axis=2, keepdims=True)
                            - xhat * (gw * xhat).mean(axis=2, keepdims=True))
    return dx, dweight, dbias
