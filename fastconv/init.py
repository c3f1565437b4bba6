"""Weight initialisers with torch.nn.init's names, arguments, fans and gains.

Each function fills a fastconv :class:`~fastconv.layers.Parameter` (its
``.data``) or a NumPy array in place and returns it. Random draws come from
``generator``: a ``numpy.random.Generator``, an int seed, or None for
fastconv's default generator (the one :func:`fastconv.manual_seed` resets
and layers draw from). Values are drawn in float64 and rounded to the
array's dtype, so one seed gives the same weights in float32 and float64.
A parameter on the cuda device is filled with one host-to-device copy.

Fans follow PyTorch: for a weight of shape ``(out, in, *kernel)``,
``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``
(:func:`_calculate_fan_in_and_fan_out`).
"""

import math
import numbers
import warnings

import numpy as np

from ._backend import is_device_array
from . import _checks
from .layers.module import Parameter

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
           "orthogonal_"]

_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
           "conv_transpose3d")


def _array(tensor):
    """The array behind ``tensor`` (a Parameter's data, a NumPy or device array)."""
    data = tensor.data if isinstance(tensor, Parameter) else tensor
    if not (isinstance(data, np.ndarray) or is_device_array(data)):
        raise TypeError(f"expected a fastconv Parameter or a NumPy array, got "
                        f"{type(tensor).__name__}")
    if np.dtype(data.dtype).kind != "f":
        raise TypeError(f"expected a floating-point array, got dtype {data.dtype}")
    return data


def _fill(tensor, values):
    """Write ``values`` (array's shape, any float dtype) into ``tensor`` in place; return it."""
    data = _array(tensor)
    if is_device_array(data):
        data.copy_to_device(np.ascontiguousarray(values, dtype=data.dtype))
    else:
        data[...] = values
    return tensor


def _shape(tensor):
    return tuple(_array(tensor).shape)


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for ``nonlinearity``, as torch.nn.init.calculate_gain.

    Parameters
    ----------
    nonlinearity : str
        "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d/2d/3d",
        "sigmoid" (1), "tanh" (5/3), "relu" (sqrt 2), "leaky_relu"
        (``sqrt(2 / (1 + param**2))``, param defaulting to 0.01) or "selu" (3/4).
    param : float, optional
        The leaky ReLU's negative slope.

    Returns
    -------
    float
    """
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif isinstance(param, numbers.Real) and not isinstance(param, (bool, np.bool_)):
            negative_slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + negative_slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor):
    """``(fan_in, fan_out)`` of a weight of shape ``(out, in, *kernel)`` (at least 2-D)."""
    shape = _shape(tensor)
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         f"dimensions (got shape {shape})")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of ['fan_in', 'fan_out']")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """Fill ``tensor`` with draws from U(a, b); returns it."""
    return _fill(tensor, _checks.generator(generator).uniform(a, b, _shape(tensor)))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill ``tensor`` with draws from N(mean, std**2); returns it."""
    return _fill(tensor, _checks.generator(generator).normal(mean, std, _shape(tensor)))


def constant_(tensor, val):
    """Fill ``tensor`` with ``val``; returns it."""
    return _fill(tensor, np.full(_shape(tensor), val, dtype=np.float64))


def zeros_(tensor):
    """Fill ``tensor`` with 0; returns it."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill ``tensor`` with 1; returns it."""
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio (2010): U(-a, a) with ``a = gain * sqrt(6 / (fan_in + fan_out))``.

    Parameters
    ----------
    tensor : Parameter or ndarray
        At least 2-D, ``(out, in, *kernel)``; filled in place and returned.
    gain : float, optional
    generator : numpy.random.Generator, int or None, optional
    """
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    a = math.sqrt(3.0) * std
    return uniform_(tensor, -a, a, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio (2010): N(0, std**2) with ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    Parameters as :func:`xavier_uniform_`.
    """
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def _kaiming_std(tensor, a, mode, nonlinearity):
    if 0 in _shape(tensor):
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return None
    fan = _calculate_correct_fan(tensor, mode)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. (2015): U(-b, b) with ``b = gain * sqrt(3 / fan)``.

    Parameters
    ----------
    tensor : Parameter or ndarray
        At least 2-D, ``(out, in, *kernel)``; filled in place and returned.
    a : float, optional
        Negative slope of the leaky ReLU that follows (``nonlinearity="leaky_relu"``).
    mode : {"fan_in", "fan_out"}, optional
        "fan_in" keeps the forward pass's variance, "fan_out" the backward's.
    nonlinearity : str, optional
        As :func:`calculate_gain`; "relu" or "leaky_relu" recommended.
    generator : numpy.random.Generator, int or None, optional
    """
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. (2015): N(0, std**2) with ``std = gain / sqrt(fan)``.

    Parameters as :func:`kaiming_uniform_`.
    """
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    return normal_(tensor, 0.0, std, generator)


def orthogonal_(tensor, gain=1, generator=None):
    """Saxe et al. (2013): a (semi-)orthogonal matrix, times ``gain``, as torch's orthogonal_.

    The tensor is viewed as ``(rows, cols) = (shape[0], prod(shape[1:]))``; its
    rows are orthonormal when ``rows <= cols``, else its columns. Made from the
    QR decomposition of a standard normal matrix, with the signs of R's
    diagonal folded into Q (so Q is Haar distributed).

    Parameters
    ----------
    tensor : Parameter or ndarray
        At least 2-D; filled in place and returned.
    gain : float, optional
    generator : numpy.random.Generator, int or None, optional
    """
    shape = _shape(tensor)
    if len(shape) < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported "
                         f"(got shape {shape})")
    if 0 in shape:
        return tensor
    rows = shape[0]
    cols = math.prod(shape) // rows
    flat = _checks.generator(generator).standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    q *= gain
    return _fill(tensor, q.reshape(shape))

