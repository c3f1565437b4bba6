"""The functional API: validate once, pick the tier, call it.

Arrays are NCHW. Every function takes ``backend=None`` ("naive", "cpu" or "cuda"); None means a
device array's own backend, else :func:`fastconv.get_backend`. Inputs may be any real array:
float32 and float64 are kept, other real dtypes become float32, complex is a ``TypeError``;
weights and gradients are used in the input's dtype. Non-contiguous views are accepted.
Bad shapes raise ``ValueError`` naming them, before any kernel runs.
"""
from collections import namedtuple

import numpy as np

from ._backend import is_device_array, kernels, resolve, to_numpy
from ._shapes import conv_output_hw, conv_padding, pair, pool_output_hw

__all__ = ["conv2d", "conv2d_backward", "im2col", "col2im", "max_pool2d", "max_pool2d_backward",
           "avg_pool2d", "avg_pool2d_backward", "relu", "relu_backward", "sigmoid",
           "sigmoid_backward", "tanh", "tanh_backward", "linear", "linear_backward", "dropout",
           "dropout_backward", "cross_entropy", "batch_norm", "batch_norm_backward"]

ConvCache = namedtuple("ConvCache", "x w has_bias stride pads saved backend")
ConvCache.__doc__ = "What :func:`conv2d` hands to :func:`conv2d_backward`."
LinearCache = namedtuple("LinearCache", "x w has_bias backend")
BatchNormCache = namedtuple("BatchNormCache", "x weight saved training backend")

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _array(a, name, dtype=None):
    """``a`` as a C-contiguous float array (``dtype``, else its own float dtype, else float32)."""
    if (type(a) is np.ndarray and a.dtype in _FLOATS and (dtype is None or a.dtype == dtype)
            and a.flags.c_contiguous):
        return a  # the common case, checked first: per-call overhead decides batch-1 speed
    if is_device_array(a):
        if np.dtype(a.dtype) not in _FLOATS or (dtype is not None and a.dtype != dtype):
            raise TypeError(f"{name}: device array of dtype {a.dtype} where {dtype or 'float32/float64'}"
                            " was expected")
        return a
    arr = np.asarray(a)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} is complex ({arr.dtype}); fastconv works on real arrays")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if dtype is None:
        dtype = arr.dtype if arr.dtype in _FLOATS else np.dtype(np.float32)
    return np.asarray(arr, dtype=dtype) if arr.ndim == 0 else np.ascontiguousarray(arr, dtype=dtype)


def _ndim4(a, name, what):
    if len(a.shape) != 4:
        raise ValueError(f"{name} must be 4-D {what}, got shape {tuple(a.shape)}")


def _shape4(shape):
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape must be 4 positive sizes (N, C, H, W), got {shape}")
    return shape


def _same_shape(a, shape, name):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}")


# --- convolution -------------------------------------------------------------------------------

def _conv_geometry(x_shape, kernel, stride, padding):
    stride = pair(stride, "stride")
    pads = conv_padding(padding, kernel, stride)
    return stride, pads, conv_output_hw(x_shape[2:], kernel, stride, pads)


def conv2d(x, w, b=None, stride=1, padding=0, backend=None):
    """2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

    Parameters
    ----------
    x : (N, C, H, W) array
    w : (K, C, FH, FW) array
    b : (K,) array or None
    stride : int or (sh, sw)
    padding : int, (ph, pw), "valid" or "same" (stride 1; extra row/column at the bottom/right)

    Returns
    -------
    out : (N, K, Hout, Wout), ``Hout = (H + 2*ph - FH) // sh + 1``
    cache : :class:`ConvCache` for :func:`conv2d_backward`
    """
    name = resolve(backend, x, w, b)
    x = _array(x, "x")
    w = _array(w, "w", x.dtype)
    _ndim4(x, "x", "(N, C, H, W)")
    _ndim4(w, "w", "(K, C, FH, FW)")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"channel mismatch: x {tuple(x.shape)} has {x.shape[1]} channels, "
                         f"w {tuple(w.shape)} expects {w.shape[1]}")
    if b is not None:
        b = _array(b, "b", x.dtype)
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"bias has shape {tuple(b.shape)}, expected ({w.shape[0]},) for w {tuple(w.shape)}")
    stride, pads, _ = _conv_geometry(x.shape, tuple(w.shape[2:]), stride, padding)
    out, saved = kernels(name).conv2d(x, w, b, stride, pads)
    return out, ConvCache(x, w, b is not None, stride, pads, saved, name)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of :func:`conv2d`.

    dout : (N, K, Hout, Wout). Returns ``(dx, dw, db)``: dx as x (None when ``need_dx`` is false,
    e.g. for a network's first layer), dw as w, db (K,) or None when there was no bias.
    """
    x, w = cache.x, cache.w
    hw = conv_output_hw(x.shape[2:], tuple(w.shape[2:]), cache.stride, cache.pads)
    dout = _array(dout, "dout", x.dtype)
    _same_shape(dout, (x.shape[0], w.shape[0]) + hw, "dout")
    return kernels(cache.backend).conv2d_backward(dout, x, w, cache.has_bias, cache.stride,
                                                  cache.pads, cache.saved, need_dx)


def im2col(x, kernel_size, stride=1, padding=0, backend=None):
    """Unfold receptive fields: x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout).

    Row ``(c*FH + fy)*FW + fx`` holds channel c at kernel offset (fy, fx); column
    ``(n*Hout + oh)*Wout + ow`` is output position (oh, ow) of image n. Hence
    ``w.reshape(K, -1) @ cols`` reshaped to (K, N, Hout, Wout) is the convolution.
    """
    name = resolve(backend, x)
    x = _array(x, "x")
    _ndim4(x, "x", "(N, C, H, W)")
    kernel = pair(kernel_size, "kernel_size")
    stride, pads, _ = _conv_geometry(x.shape, kernel, stride, padding)
    return kernels(name).im2col(x, kernel, stride, pads)


def col2im(cols, input_shape, kernel_size, stride=1, padding=0, backend=None):
    """The adjoint of :func:`im2col`: cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W), overlaps summed."""
    name = resolve(backend, cols)
    cols = _array(cols, "cols")
    shape = _shape4(input_shape)
    kernel = pair(kernel_size, "kernel_size")
    stride, pads, (ho, wo) = _conv_geometry(shape, kernel, stride, padding)
    _same_shape(cols, (shape[1] * kernel[0] * kernel[1], shape[0] * ho * wo), "cols")
    return kernels(name).col2im(cols, shape, kernel, stride, pads)


# --- pooling -----------------------------------------------------------------------------------

def _pool_geometry(x_shape, kernel_size, stride):
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    return kernel, stride, pool_output_hw(x_shape[2:], kernel, stride)


def max_pool2d(x, kernel_size=2, stride=None, backend=None):
    """Max pooling (floor mode) that records where each maximum came from.

    x : (N, C, H, W). Returns ``(out, switches)``, both (N, C, Hout, Wout); ``switches`` (int64)
    holds the flat index ``h * W + w`` of each maximum inside its (n, c) plane, as PyTorch's
    ``return_indices``. Ties: the first maximum in row-major window order. NaN propagates.
    """
    name = resolve(backend, x)
    x = _array(x, "x")
    _ndim4(x, "x", "(N, C, H, W)")
    kernel, stride, _ = _pool_geometry(x.shape, kernel_size, stride)
    return kernels(name).max_pool2d(x, kernel, stride)


def max_pool2d_backward(dout, switches, input_shape, backend=None):
    """Route dout (N, C, Hout, Wout) to the switches; returns dx of ``input_shape``.

    Overlapping windows accumulate deterministically. ``switches`` is only read.
    """
    name = resolve(backend, dout, switches)
    shape = _shape4(input_shape)
    dout = _array(dout, "dout")
    _ndim4(dout, "dout", "(N, C, Hout, Wout)")
    if not is_device_array(switches):
        switches = np.asarray(switches)
        if switches.dtype.kind not in "iu":
            raise TypeError(f"switches must be integers, got dtype {switches.dtype}")
        switches = np.ascontiguousarray(switches, dtype=np.int64)
    if tuple(switches.shape) != tuple(dout.shape):
        raise ValueError(f"switches have shape {tuple(switches.shape)} but dout has {tuple(dout.shape)}")
    if tuple(dout.shape[:2]) != shape[:2] or dout.shape[2] > shape[2] or dout.shape[3] > shape[3]:
        raise ValueError(f"dout {tuple(dout.shape)} cannot come from pooling an input of shape {shape}")
    dx, ok = kernels(name).max_pool2d_backward(dout, switches, shape)
    if not ok:
        raise ValueError(f"switches hold indices outside [0, {shape[2] * shape[3]}) for input {shape}")
    return dx


def avg_pool2d(x, kernel_size=2, stride=None, backend=None):
    """Average pooling (floor mode, no padding): x (N, C, H, W) -> (N, C, Hout, Wout)."""
    name = resolve(backend, x)
    x = _array(x, "x")
    _ndim4(x, "x", "(N, C, H, W)")
    kernel, stride, _ = _pool_geometry(x.shape, kernel_size, stride)
    return kernels(name).avg_pool2d(x, kernel, stride)


def avg_pool2d_backward(dout, input_shape, kernel_size=2, stride=None, backend=None):
    """Gradient of :func:`avg_pool2d`: dout (N, C, Hout, Wout) -> dx of ``input_shape``."""
    name = resolve(backend, dout)
    shape = _shape4(input_shape)
    dout = _array(dout, "dout")
    kernel, stride, hw = _pool_geometry(shape, kernel_size, stride)
    _same_shape(dout, shape[:2] + hw, "dout")
    return kernels(name).avg_pool2d_backward(dout, shape, kernel, stride)


# --- elementwise, dense and loss ------------------------------------------------------------

def _from_output(op, dout, out, backend):
    """Call the tier's ``op(dout, out)``: an activation's gradient given its forward output."""
    out = _array(out, "out")
    dout = _array(dout, "dout", out.dtype)
    _same_shape(dout, out.shape, "dout")
    return getattr(kernels(resolve(backend, dout, out)), op)(dout, out)


def relu(x, backend=None):
    """max(x, 0), any shape."""
    return kernels(resolve(backend, x)).relu(_array(x, "x"))


def relu_backward(dout, out, backend=None):
    """Gradient of :func:`relu` given its output ``out``."""
    return _from_output("relu_backward", dout, out, backend)


def sigmoid(x, backend=None):
    """1 / (1 + exp(-x)), any shape, without overflow."""
    return kernels(resolve(backend, x)).sigmoid(_array(x, "x"))


def sigmoid_backward(dout, out, backend=None):
    """Gradient of :func:`sigmoid` given its output ``out``."""
    return _from_output("sigmoid_backward", dout, out, backend)


def tanh(x, backend=None):
    """Hyperbolic tangent, any shape."""
    return kernels(resolve(backend, x)).tanh(_array(x, "x"))


def tanh_backward(dout, out, backend=None):
    """Gradient of :func:`tanh` given its output ``out``."""
    return _from_output("tanh_backward", dout, out, backend)


def linear(x, w, b=None, backend=None):
    """x (N, in) @ w.T + b with w (out, in), b (out,) -> (out (N, out), cache)."""
    name = resolve(backend, x, w, b)
    x = _array(x, "x")
    w = _array(w, "w", x.dtype)
    if len(x.shape) != 2 or len(w.shape) != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"linear: x {tuple(x.shape)} does not match w {tuple(w.shape)} "
                         "(expected x (N, in) and w (out, in))")
    if b is not None:
        b = _array(b, "b", x.dtype)
        if tuple(b.shape) != (w.shape[0],):
            raise ValueError(f"bias has shape {tuple(b.shape)}, expected ({w.shape[0]},) for w {tuple(w.shape)}")
    return kernels(name).linear(x, w, b), LinearCache(x, w, b is not None, name)


def linear_backward(dout, cache, need_dx=True):
    """Gradients of :func:`linear`: dout (N, out) -> (dx (N, in) or None, dw, db or None)."""
    dout = _array(dout, "dout", cache.x.dtype)
    _same_shape(dout, (cache.x.shape[0], cache.w.shape[0]), "dout")
    return kernels(cache.backend).linear_backward(dout, cache.x, cache.w, cache.has_bias, need_dx)


def dropout(x, p, seed, backend=None):
    """Inverted dropout with drop probability ``p`` in [0, 1): returns ``(out, mask)``.

    ``seed`` (an int) makes the mask repeatable; mask holds 0 or 1/(1-p).
    """
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return kernels(resolve(backend, x)).dropout(_array(x, "x"), float(p), int(seed))


def dropout_backward(dout, mask, backend=None):
    """Gradient of :func:`dropout`: dout * mask."""
    mask = _array(mask, "mask")
    dout = _array(dout, "dout", mask.dtype)
    _same_shape(dout, mask.shape, "dout")
    return kernels(resolve(backend, dout, mask)).dropout_backward(dout, mask)


def cross_entropy(logits, labels, backend=None):
    """Mean softmax cross-entropy: logits (N, classes), int labels (N,) -> (loss float, dlogits)."""
    name = resolve(backend, logits, labels)
    logits = _array(logits, "logits")
    if len(logits.shape) != 2:
        raise ValueError(f"logits must be 2-D (N, classes), got shape {tuple(logits.shape)}")
    if not is_device_array(labels):
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
            raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got values in "
                             f"[{labels.min()}, {labels.max()}]")
    if tuple(labels.shape) != (logits.shape[0],):
        raise ValueError(f"labels have shape {tuple(labels.shape)}, expected ({logits.shape[0]},) "
                         f"for logits {tuple(logits.shape)}")
    return kernels(name).softmax_cross_entropy(logits, labels)


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
    mean = var = None
    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm: evaluation mode needs running_mean and running_var")
        mean, var = _array(running_mean, "running_mean", x.dtype), _array(running_var, "running_var", x.dtype)
        _same_shape(mean, (c,), "running_mean")
        _same_shape(var, (c,), "running_var")
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
    return out.reshape(x.shape), BatchNormCache(x3, weight, saved, bool(training), name)


def batch_norm_backward(dout, cache, need_dx=True):
    """Gradients of :func:`batch_norm`: dout as x -> (dx or None, dweight (C,), dbias (C,))."""
    x3 = cache.x
    dout = _array(dout, "dout", x3.dtype)
    if dout.size != x3.size or dout.shape[:2] != x3.shape[:2]:
        raise ValueError(f"dout has shape {tuple(dout.shape)}, expected the input's shape")
    dx, dweight, dbias = kernels(cache.backend).batch_norm_backward(
        dout.reshape(x3.shape), x3, cache.weight, cache.saved, cache.training, need_dx)
    return (dx.reshape(dout.shape) if dx is not None else None), dweight, dbias
