"""Normalisation: batch normalisation and its gradients."""
from collections import namedtuple

import numpy as np

from .._backend import check_host, is_device_array, kernels, resolve, to_numpy
from ._common import _array, _same_shape

__all__ = ["batch_norm", "batch_norm_backward", "BatchNormCache"]

BatchNormCache = namedtuple("BatchNormCache", "x weight saved training backend shape")



def batch_norm(x, weight, bias, running_mean=None, running_var=None, training=True, momentum=0.1,
               eps=1e-5, backend=None):
    """Batch normalisation over every axis but the channel axis 1, as PyTorch's.

    x : (N, C), (N, C, L) or (N, C, H, W); weight, bias : (C,). Training normalises with the
    batch mean and biased variance and, when given, updates ``running_mean``/``running_var`` in
    place (``(1 - momentum) * running + momentum * batch``, the variance unbiased). Otherwise it
    normalises with the running statistics. Returns ``(out, cache)``.
    """
    name = resolve(backend, x)
    x = _array(x, "x")
    if len(x.shape) < 2:
        raise ValueError(f"batch_norm: x must have a channel axis 1, got shape {tuple(x.shape)}")
    c = x.shape[1]
    weight, bias = _array(weight, "weight", x.dtype), _array(bias, "bias", x.dtype)
    for what, a in (("weight", weight), ("bias", bias)):
        _same_shape(a, (c,), what)
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
    out, bmean, bvar, saved = kernels(name).batch_norm(x3, weight, bias, mean, var, training, eps)
    if training and running_mean is not None:
        unbias = momentum * count / (count - 1)
        if is_device_array(running_mean):
            kernels(name).axpby(running_mean, bmean, 1 - momentum, momentum)
            kernels(name).axpby(running_var, bvar, 1 - momentum, unbias)
        else:
            running_mean *= 1 - momentum
            running_mean += momentum * to_numpy(bmean)
            running_var *= 1 - momentum
            running_var += unbias * to_numpy(bvar)
    return out.reshape(x.shape), BatchNormCache(x3, weight, saved, bool(training), name, tuple(x.shape))


def batch_norm_backward(dout, cache, need_dx=True):
    """Gradients of :func:`batch_norm`: dout as x -> (dx or None, dweight (C,), dbias (C,))."""
    x3 = cache.x
    check_host(cache.backend, dout)
    dout = _array(dout, "dout", x3.dtype)
    _same_shape(dout, cache.shape, "dout")
    dx, dweight, dbias = kernels(cache.backend).batch_norm_backward(
        dout.reshape(x3.shape), x3, cache.weight, cache.saved, cache.training, need_dx)
    return (dx.reshape(dout.shape) if dx is not None else None), dweight, dbias
