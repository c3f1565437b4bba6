"""Normalisation: batch, group and layer normalisation and their gradients.

Each forward returns ``(out, cache)``; each backward takes the cache and returns ``(dx or None,
dweight, dbias)``, where a gradient is None for a weight or bias the forward was not given
(``weight=None`` is the identity scale, ``bias=None`` no shift, as in PyTorch).
"""
from collections import namedtuple

import numpy as np

from .._backend import check_host, is_device_array, kernels, resolve, tier_of
from .._checks import integer, number, sizes
from ._common import _array, _same_shape

__all__ = ["batch_norm", "batch_norm_backward", "BatchNormCache", "group_norm", "group_norm_backward",
           "layer_norm", "layer_norm_backward", "NormCache"]

BatchNormCache = namedtuple("BatchNormCache",
                            "x weight saved training backend shape has_weight has_bias out")
BatchNormCache.__doc__ = "What :func:`batch_norm` hands to :func:`batch_norm_backward`."
NormCache = namedtuple("NormCache", "x weight mean rstd inner backend shape param_shape has_weight "
                                     "has_bias")
NormCache.__doc__ = ("What :func:`group_norm` and :func:`layer_norm` hand to their backward: x as "
                     "(N, G, M), weight flat (C,).")


def _affine(a, name, shape, x, value):
    """``a`` in x's dtype checked against ``shape``, or ``value`` filled in (on x's device) when
    None; returns ``(flat array, given)``."""
    if a is None:
        size = int(np.prod(shape, dtype=np.int64))
        return tier_of(x).full((size,), value, np.dtype(x.dtype)), False
    a = _array(a, name, x.dtype)
    _same_shape(a, shape, name)
    return a.reshape(a.size), True



def batch_norm(x, weight, bias, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5, backend=None, *, relu=False):
    """Batch normalisation over every axis but the channel axis 1, as PyTorch's; ``relu=True``
    applies ``relu`` to the result in the same pass (and its gradient in the backward's), which
    is how :class:`fastconv.layers.Sequential` runs a BatchNorm followed by a ReLU.

    x : (N, C), (N, C, L) or (N, C, H, W); weight, bias : (C,) or None. Training normalises with the
    batch mean and biased variance and, when given, updates ``running_mean``/``running_var`` in
    place (``(1 - momentum) * running + momentum * batch``, the variance unbiased). Otherwise it
    normalises with the running statistics. Returns ``(out, cache)``.
    """
    name = resolve(backend, x)
    x = _array(x, "x")
    if len(x.shape) < 2:
        raise ValueError(f"batch_norm: x must have a channel axis 1, got shape {tuple(x.shape)}")
    c = x.shape[1]
    weight, has_weight = _affine(weight, "weight", (c,), x, 1)
    bias, has_bias = _affine(bias, "bias", (c,), x, 0)
    x3 = x.reshape(x.shape[0], c, -1)
    count = x3.shape[0] * x3.shape[2]
    if training and count < 2:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, "
                         f"got input shape {tuple(x.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    if not training and running_mean is None:
        raise ValueError("batch_norm: evaluation mode needs running_mean and running_var")
    if running_mean is not None:  # checked before anything is computed or updated
        for what, a in (("running_mean", running_mean), ("running_var", running_var)):
            if training and not (isinstance(a, np.ndarray) or is_device_array(a)):
                raise TypeError(f"batch_norm: {what} is updated in place, so it must be an array, "
                                f"got {type(a).__name__}")
            _same_shape(a, (c,), what)
    mean = var = None
    if not training:
        mean, var = _array(running_mean, "running_mean", x.dtype), _array(running_var, "running_var", x.dtype)
    out, bmean, bvar, saved = kernels(name).batch_norm(x3, weight, bias, mean, var, training, eps,
                                                       bool(relu))
    if training and running_mean is not None:
        unbias = momentum * count / (count - 1)
        tier_of(running_mean).axpby(running_mean, bmean, 1 - momentum, momentum)
        tier_of(running_var).axpby(running_var, bvar, 1 - momentum, unbias)
    return out.reshape(x.shape), BatchNormCache(x3, weight, saved, bool(training), name, tuple(x.shape),
                                                has_weight, has_bias, out if relu else None)


def batch_norm_backward(dout, cache, need_dx=True):
    """Gradients of :func:`batch_norm`: dout as x -> (dx or None, dweight (C,), dbias (C,)); a
    gradient is None where the forward had no weight or no bias."""
    x3 = cache.x
    check_host(cache.backend, dout)
    dout = _array(dout, "dout", x3.dtype)
    _same_shape(dout, cache.shape, "dout")
    dx, dweight, dbias = kernels(cache.backend).batch_norm_backward(
        dout.reshape(x3.shape), x3, cache.weight, cache.saved, cache.training, need_dx, cache.out)
    return ((dx.reshape(dout.shape) if dx is not None else None), dweight if cache.has_weight else None,
            dbias if cache.has_bias else None)


def _eps(eps):
    return number(eps, "eps", minimum=0)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, backend=None):
    """Group normalisation, as ``torch.nn.functional.group_norm``.

    x : (N, C, *) with C divisible by ``num_groups``; each image's channels are split into
    ``num_groups`` groups of C // num_groups consecutive channels, and each group is normalised by
    its own mean and biased variance (over its channels and every spatial position); then
    ``* weight[c] + bias[c]`` per channel. weight, bias : (C,) or None. Returns ``(out, cache)``.
    """
    name = resolve(backend, x, weight, bias)
    x = _array(x, "x")
    if len(x.shape) < 2:
        raise ValueError(f"group_norm: expected at least 2 dimensions (N, C, *), got shape {tuple(x.shape)}")
    num_groups = integer(num_groups, "group_norm: num_groups")
    c = x.shape[1]
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"group_norm: expected the number of channels to be divisible by num_groups, "
                         f"but got input of shape {tuple(x.shape)} and num_groups={num_groups}")
    inner = int(np.prod(x.shape[2:], dtype=np.int64))
    if x.shape[0] * (c // num_groups) * inner == 1:  # PyTorch's check, word for word
        raise ValueError(f"group_norm: expected more than 1 value per channel when training, got "
                         f"input of shape {tuple(x.shape)} with num_groups={num_groups}")
    x3 = x.reshape(x.shape[0], int(num_groups), c // num_groups * inner)
    return _norm(name, x, x3, inner, weight, bias, (c,), _eps(eps))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5, backend=None):
    """Layer normalisation over the trailing dimensions, as ``torch.nn.functional.layer_norm``.

    x : (*, *normalized_shape); each of its ``x.size / prod(normalized_shape)`` slices is normalised
    by its own mean and biased variance, then ``* weight + bias`` elementwise. weight, bias :
    ``normalized_shape`` or None. Returns ``(out, cache)``.
    """
    name = resolve(backend, x, weight, bias)
    x = _array(x, "x")
    shape = sizes(normalized_shape, "normalized_shape")
    k = len(shape)
    if tuple(x.shape[len(x.shape) - k:]) != shape or len(x.shape) < k:
        raise ValueError(f"layer_norm: given normalized_shape={list(shape)}, expected input with shape "
                         f"[*, {', '.join(map(str, shape))}], but got input of shape {tuple(x.shape)}")
    d = int(np.prod(shape, dtype=np.int64))
    x3 = x.reshape(int(np.prod(x.shape[:len(x.shape) - k], dtype=np.int64)), 1, d)
    return _norm(name, x, x3, 1, weight, bias, shape, _eps(eps))


def _norm(name, x, x3, inner, weight, bias, param_shape, eps):
    weight, has_weight = _affine(weight, "weight", param_shape, x, 1)
    bias, has_bias = _affine(bias, "bias", param_shape, x, 0)
    out, mean, rstd = kernels(name).group_norm(x3, weight, bias, inner, eps)
    return out.reshape(x.shape), NormCache(x3, weight, mean, rstd, inner, name, tuple(x.shape),
                                           tuple(param_shape), has_weight, has_bias)


def _norm_backward(dout, cache, need_dx):
    check_host(cache.backend, dout)
    dout = _array(dout, "dout", cache.x.dtype)
    _same_shape(dout, cache.shape, "dout")
    dx, dweight, dbias = kernels(cache.backend).group_norm_backward(
        dout.reshape(cache.x.shape), cache.x, cache.weight, cache.mean, cache.rstd, cache.inner,
        bool(need_dx))
    return dx, dweight, dbias


def group_norm_backward(dout, cache, need_dx=True):
    """Gradients of :func:`group_norm`: dout as x -> (dx or None, dweight (C,), dbias (C,)); a
    gradient is None where the forward had no weight or no bias."""
    dx, dweight, dbias = _norm_backward(dout, cache, need_dx)
    return ((dx.reshape(cache.shape) if dx is not None else None), dweight if cache.has_weight else None,
            dbias if cache.has_bias else None)


def layer_norm_backward(dout, cache, need_dx=True):
    """Gradients of :func:`layer_norm`: dout as x -> (dx or None, dweight, dbias), the parameter
    gradients shaped ``normalized_shape`` (None where the forward had no weight or no bias)."""
    dx, dweight, dbias = _norm_backward(dout, cache, need_dx)
    return ((dx.reshape(cache.shape) if dx is not None else None),
            dweight.reshape(cache.param_shape) if cache.has_weight else None,
            dbias.reshape(cache.param_shape) if cache.has_bias else None)
