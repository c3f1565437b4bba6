"""Gradient clipping with torch.nn.utils.clip_grad's semantics.

``parameters`` is one parameter (an object with ``.grad``) or an iterable of
them, e.g. ``model.parameters()``; parameters whose ``grad`` is None are
ignored. Gradients are changed in place, in their own dtype. Norms are
computed in the gradients' dtype (the common one, for mixed dtypes) and
returned as Python floats (PyTorch returns a 0-d tensor). Gradients are
scaled and clamped where they live (their tier's ``axpby`` and ``clamp``);
the norms of gradients on the cuda device are taken on a host copy.
"""

import math
import types
import warnings

import numpy as np

from .._backend import tier_of, to_numpy

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]

#: torch's guard against dividing by a zero total norm.
_NORM_EPS = 1e-6


def _parameters(parameters):
    if hasattr(parameters, "grad"):
        return [parameters]
    is_generator = isinstance(parameters, types.GeneratorType)
    parameters = list(parameters)
    if is_generator and not parameters:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.",
                      stacklevel=3)
    for p in parameters:
        if not hasattr(p, "grad"):
            raise TypeError(f"expected parameters with a .grad attribute, got {type(p).__name__}")
    return parameters


def _vector_norm(x, norm_type):
    """torch.linalg.vector_norm of the flattened ``x``, in x's dtype."""
    x = np.ravel(x)
    if x.size == 0:
        return x.dtype.type(0)
    if norm_type == math.inf:
        return np.max(np.abs(x))
    if norm_type == -math.inf:
        return np.min(np.abs(x))
    if norm_type == 0:
        return x.dtype.type(np.count_nonzero(x))
    if norm_type == 2:
        return np.sqrt(np.dot(x, x))
    a = np.abs(x)
    if norm_type == 1:
        return np.sum(a)
    return np.sum(a ** norm_type) ** (1.0 / norm_type)


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False):
    """The ``norm_type`` norm of all ``tensors`` together, as if concatenated into one vector.

    Parameters
    ----------
    tensors : ndarray or iterable of ndarray
        Host or device arrays (gradients).
    norm_type : float or "inf", optional
    error_if_nonfinite : bool, optional
        Raise RuntimeError if the norm is nan or inf.

    Returns
    -------
    float
    """
    tensors = [tensors] if hasattr(tensors, "shape") else list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return 0.0
    hosts = [to_numpy(t) for t in tensors]
    dtype = np.result_type(*hosts)
    norms = np.array([_vector_norm(h, norm_type) for h in hosts], dtype=dtype)
    total = _vector_norm(norms, norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` "
                           "is non-finite, so it cannot be clipped. To disable this error and "
                           "scale the gradients by the non-finite norm anyway, set "
                           "`error_if_nonfinite=False`")
    return float(total)


def clip_grads_with_norm_(parameters, max_norm, total_norm):
    """Scale every gradient by ``min(max_norm / (total_norm + 1e-6), 1)``, in place.

    Parameters
    ----------
    parameters : parameter or iterable of parameters
    max_norm, total_norm : float
    """
    grads = [p.grad for p in _parameters(parameters) if p.grad is not None]
    max_norm = float(max_norm)
    if not grads:
        return
    dtype = np.result_type(*(g.dtype for g in grads))
    coef = dtype.type(max_norm) / (dtype.type(total_norm) + dtype.type(_NORM_EPS))
    coef = min(coef, dtype.type(1.0))
    for g in grads:
        tier_of(g).axpby(g, g, np.dtype(g.dtype).type(coef), 0.0)  # g *= coef, where g lives


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients so that their total norm is at most ``max_norm``, as torch.

    The norm is taken over all gradients together, as if concatenated; every
    gradient is multiplied by ``min(max_norm / (total_norm + 1e-6), 1)``.

    Parameters
    ----------
    parameters : parameter or iterable of parameters
    max_norm : float
    norm_type : float or "inf", optional
    error_if_nonfinite : bool, optional
        Raise RuntimeError (before any change) if the total norm is nan or inf.

    Returns
    -------
    float
        The total norm of the gradients before clipping.
    """
    parameters = _parameters(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite)
    clip_grads_with_norm_(parameters, max_norm, total)
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient to ``[-clip_value, clip_value]`` in place, as torch.

    Parameters
    ----------
    parameters : parameter or iterable of parameters
    clip_value : float
    """
    clip_value = float(clip_value)
    for p in _parameters(parameters):
        g = p.grad
        if g is None:
            continue
        tier_of(g).clamp(g, -clip_value, clip_value)
