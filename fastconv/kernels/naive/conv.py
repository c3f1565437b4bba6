"""Naive convolution: one tensordot per output position, im2col/col2im by explicit windows.

``dilation`` ``(dh, dw)`` spaces the kernel taps: the window of output (i, j) is rows
``i*sh + fy*dh`` and columns ``j*sw + fx*dw`` of the padded input.
"""
import numpy as np

from ..._shapes import conv_output_hw


def _padded(x, pads):
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def _unpad(xp, pads):
    top, bottom, left, right = pads
    return xp[:, :, top:xp.shape[2] - bottom, left:xp.shape[3] - right]


def _window(i, j, kernel, stride, dilation):
    """The (rows, cols) slices of the padded input that output position (i, j) reads."""
    (fh, fw), (sh, sw), (dh, dw) = kernel, stride, dilation
    return (slice(i * sh, i * sh + dh * (fh - 1) + 1, dh),
            slice(j * sw, j * sw + dw * (fw - 1) + 1, dw))


def conv2d_memory(x_shape, w_shape, stride, pads, dilation, itemsize):
    """Bytes ``(kept for backward, workspace)`` beyond inputs and outputs: nothing kept; the
    zero-padded copies of x and of dx."""
    n, c, h, wd = x_shape
    padded = n * c * (h + pads[0] + pads[1]) * (wd + pads[2] + pads[3]) * itemsize
    return 0, 2 * padded


def conv2d(x, w, b, stride, pads, dilation=(1, 1)):
    """Convolution (cross-correlation, as PyTorch) by one tensordot per output position.

    x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).
    ``saved`` is tier-private state handed back to :func:`conv2d_backward` (None here).
    """
    n_img, _, h, wd = x.shape
    k, _, fh, fw = w.shape
    ho, wo = conv_output_hw((h, wd), (fh, fw), stride, pads, dilation)
    xp = _padded(x, pads)
    out = np.zeros((n_img, k, ho, wo), dtype=x.dtype)
    for n in range(n_img):
        for i in range(ho):
            for j in range(wo):
                rows, cols = _window(i, j, (fh, fw), stride, dilation)
                out[n, :, i, j] = np.tensordot(w, xp[n, :, rows, cols], axes=3)
    if b is not None:
        out += b.reshape(1, k, 1, 1)
    return out, None


def conv2d_backward(dout, x, w, has_bias, stride, pads, saved, need_dx=True, dilation=(1, 1)):
    """Gradients of :func:`conv2d`: dout (N, K, Hout, Wout) -> (dx, dw, db).

    dx has x's shape (None when ``need_dx`` is false), dw has w's shape, db is (K,) or None.
    """
    n_img, k, ho, wo = dout.shape
    kernel = tuple(w.shape[2:])
    xp = _padded(x, pads)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for n in range(n_img):
        for i in range(ho):
            for j in range(wo):
                g = dout[n, :, i, j]
                rows, cols = _window(i, j, kernel, stride, dilation)
                dw += np.multiply.outer(g, xp[n, :, rows, cols])
                if need_dx:
                    dxp[n, :, rows, cols] += np.tensordot(g, w, axes=1)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dx = np.ascontiguousarray(_unpad(dxp, pads)) if need_dx else None
    return dx, dw, db


def im2col(x, kernel, stride, pads, dilation=(1, 1)):
    """Unfold every receptive field into a column.

    x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout). Row ``(c*FH + fy)*FW + fx`` holds input channel
    c at kernel offset (fy, fx); column ``(n*Hout + oh)*Wout + ow`` is output position (oh, ow) of
    image n. So ``w.reshape(K, -1) @ cols`` is the convolution with its output as (K, N, Hout, Wout).
    """
    n_img, c, h, wd = x.shape
    fh, fw = kernel
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads, dilation)
    xp = _padded(x, pads)
    cols = np.zeros((c * fh * fw, n_img * ho * wo), dtype=x.dtype)
    for n in range(n_img):
        for i in range(ho):
            for j in range(wo):
                rows, cs = _window(i, j, kernel, stride, dilation)
                cols[:, (n * ho + i) * wo + j] = xp[n, :, rows, cs].ravel()
    return cols


def col2im(cols, x_shape, kernel, stride, pads, dilation=(1, 1)):
    """The adjoint of :func:`im2col`: cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W), overlaps summed."""
    n_img, c, h, wd = x_shape
    fh, fw = kernel
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads, dilation)
    top, bottom, left, right = pads
    xp = np.zeros((n_img, c, h + top + bottom, wd + left + right), dtype=cols.dtype)
    for n in range(n_img):
        for i in range(ho):
            for j in range(wo):
                rows, cs = _window(i, j, kernel, stride, dilation)
                xp[n, :, rows, cs] += cols[:, (n * ho + i) * wo + j].reshape(c, fh, fw)
    return np.ascontiguousarray(_unpad(xp, pads))
