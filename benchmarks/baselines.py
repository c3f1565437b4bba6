"""Baselines: the vectorised NumPy a good NumPy user writes, and thin PyTorch wrappers.

The NumPy convolution is im2col + one matmul: ``sliding_window_view`` gives every receptive field
without a copy, one transposing copy lays them out as ``cols (C*FH*FW, N*Hout*Wout)`` with output
rows as the inner runs, and BLAS does the products. Backward is two more matmuls and a col2im that
loops over the FH*FW kernel offsets, adding strided slices (no ``np.add.at``). Pooling uses the
same window view; max-pool backward scatters (``np.bincount`` when windows overlap).

All functions take NCHW float arrays and int (square) kernel sizes, strides and paddings.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

try:
    import torch
    import torch.nn.functional as tF
except ImportError:  # the torch wrappers are only built when PyTorch is present
    torch = tF = None


def _out_size(size, k, stride, pad=0):
    return (size + 2 * pad - k) // stride + 1


def _windows(x, kh, kw, stride, ho, wo):
    """Strided view (N, C, Hout, Wout, kh, kw) of every window of x (no copy)."""
    v = sliding_window_view(x, (kh, kw), axis=(2, 3))
    return v[:, :, ::stride, ::stride][:, :, :ho, :wo]


def conv2d(x, w, b, stride=1, pad=0):
    """Convolution by im2col + matmul.

    x (N, C, H, W), w (K, C, FH, FW), b (K,) -> (out (N, K, Hout, Wout), cache).
    """
    n, c, h, wd = x.shape
    k, _, fh, fw = w.shape
    ho, wo = _out_size(h, fh, stride, pad), _out_size(wd, fw, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    cols = np.ascontiguousarray(_windows(xp, fh, fw, stride, ho, wo).transpose(1, 4, 5, 0, 2, 3))
    cols = cols.reshape(c * fh * fw, n * ho * wo)
    prod = (w.reshape(k, -1) @ cols).reshape(k, n, ho, wo)
    out = np.empty((n, k, ho, wo), dtype=x.dtype)  # NCHW and contiguous, as the engine returns
    np.add(prod.transpose(1, 0, 2, 3), b.reshape(1, k, 1, 1), out=out)
    return out, (x.shape, w, cols, stride, pad)


def conv2d_backward(dout, cache, need_dx=True):
    """dout (N, K, Hout, Wout) -> (dx (N, C, H, W) or None, dw (K, C, FH, FW), db (K,))."""
    (n, c, h, wd), w, cols, stride, pad = cache
    k, _, fh, fw = w.shape
    ho, wo = dout.shape[2:]
    dout_t = dout.transpose(1, 0, 2, 3).reshape(k, -1)
    db = dout.sum(axis=(0, 2, 3))
    dw = (dout_t @ cols.T).reshape(w.shape)
    if not need_dx:
        return None, dw, db
    dcols = (w.reshape(k, -1).T @ dout_t).reshape(c, fh, fw, n, ho, wo)
    dxp = np.zeros((n, c, h + 2 * pad, wd + 2 * pad), dtype=dout.dtype)
    for fy in range(fh):
        for fx in range(fw):
            dxp[:, :, fy:fy + stride * (ho - 1) + 1:stride,
                fx:fx + stride * (wo - 1) + 1:stride] += dcols[:, fy, fx].transpose(1, 0, 2, 3)
    dx = np.ascontiguousarray(dxp[:, :, pad:pad + h, pad:pad + wd]) if pad else dxp
    return dx, dw, db


def max_pool2d(x, kernel, stride):
    """x (N, C, H, W) -> (out, switches int64 ``h*W + w`` per plane), both (N, C, Hout, Wout)."""
    n, c, h, wd = x.shape
    ho, wo = _out_size(h, kernel, stride), _out_size(wd, kernel, stride)
    flat = _windows(x, kernel, kernel, stride, ho, wo).reshape(n, c, ho, wo, kernel * kernel)
    arg = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    rows = (np.arange(ho) * stride)[:, None] + arg // kernel
    switches = rows * wd + (np.arange(wo) * stride)[None, :] + arg % kernel
    return out, switches


def max_pool2d_backward(dout, switches, input_shape, kernel, stride):
    """Route dout (N, C, Hout, Wout) to the switches -> dx of ``input_shape``."""
    n, c, h, wd = input_shape
    planes = n * c
    idx = switches.reshape(planes, -1) + (np.arange(planes) * (h * wd))[:, None]
    if stride < kernel:  # windows overlap, repeated indices must add: bincount in one pass
        dx = np.bincount(idx.ravel(), weights=dout.ravel(), minlength=planes * h * wd)
        return dx.astype(dout.dtype).reshape(input_shape)
    dx = np.zeros(planes * h * wd, dtype=dout.dtype)
    dx[idx.ravel()] = dout.ravel()
    return dx.reshape(input_shape)


def avg_pool2d(x, kernel, stride):
    """x (N, C, H, W) -> the mean of each window, (N, C, Hout, Wout)."""
    ho, wo = _out_size(x.shape[2], kernel, stride), _out_size(x.shape[3], kernel, stride)
    return _windows(x, kernel, kernel, stride, ho, wo).mean(axis=(4, 5), dtype=x.dtype)


def avg_pool2d_backward(dout, input_shape, kernel, stride):
    """dout (N, C, Hout, Wout) -> dx of ``input_shape``, each gradient spread over its window."""
    ho, wo = dout.shape[2:]
    g = dout * dout.dtype.type(1.0 / (kernel * kernel))
    dx = np.zeros(input_shape, dtype=dout.dtype)
    for i in range(kernel):
        for j in range(kernel):
            dx[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride] += g
    return dx


class TorchConv:
    """``torch.nn.functional.conv2d`` on the same data, with autograd for backward.

    x, w, b are NumPy arrays (shared, not copied); every gradient (dx, dw, db) is computed.
    """

    def __init__(self, x, w, b, stride, pad):
        self.x = torch.from_numpy(x).requires_grad_()
        self.w = torch.from_numpy(w).requires_grad_()
        self.b = torch.from_numpy(b).requires_grad_()
        self.stride, self.pad = stride, pad

    def forward(self):
        """The output tensor (N, K, Hout, Wout), recording the graph for backward."""
        return tF.conv2d(self.x, self.w, self.b, self.stride, self.pad)

    def backward(self, out, dout, retain=False):
        """(dx, dw, db) of ``out`` for upstream NumPy gradient ``dout``."""
        return torch.autograd.grad(out, (self.x, self.w, self.b), torch.from_numpy(dout),
                                   retain_graph=retain)


class TorchPool:
    """``max_pool2d`` (with indices, NCHW) or ``avg_pool2d`` on x, autograd for backward."""

    def __init__(self, op, x, kernel, stride):
        self.x = torch.from_numpy(x).requires_grad_()
        self.op, self.kernel, self.stride = op, kernel, stride

    def forward(self):
        if self.op == "maxpool":
            return tF.max_pool2d(self.x, self.kernel, self.stride, return_indices=True)[0]
        return tF.avg_pool2d(self.x, self.kernel, self.stride)

    def backward(self, out, dout, retain=False):
        """dx for upstream NumPy gradient ``dout``."""
        return torch.autograd.grad(out, (self.x,), torch.from_numpy(dout), retain_graph=retain)[0]
