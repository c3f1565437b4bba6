"""Convolution: :func:`conv2d` and its gradients, :func:`im2col`, :func:`col2im`."""
from collections import namedtuple

from .._backend import check_host, kernels, resolve
from .._shapes import conv_output_hw, conv_padding, pair
from ._common import _array, _ndim4, _same_shape, _shape4

__all__ = ["conv2d", "conv2d_backward", "im2col", "col2im", "ConvCache"]

ConvCache = namedtuple("ConvCache", "x w has_bias stride pads saved backend")
ConvCache.__doc__ = "What :func:`conv2d` hands to :func:`conv2d_backward`."


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
    check_host(cache.backend, dout)
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
