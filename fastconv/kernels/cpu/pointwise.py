"""cpu 1x1 convolution at stride 1 without padding (mobilenet's pointwise layers): one GEMM per
image, straight on NCHW.

An image's planes ``x[n]`` viewed as ``(C, H*W)`` are already a GEMM operand, so
``out[n] = w (K, C) @ x[n]`` needs no packing, no im2col copy and no layout pass afterwards;
backward is ``dx[n] = w.T @ dout[n]`` and ``dW = sum over n of dout[n] @ x[n].T``. The products
run in single-threaded BLAS (:func:`~fastconv.kernels._workers.one_blas_thread`), the images
split across the threads of :mod:`fastconv.kernels._workers`, each thread's images as one
stacked ``np.matmul`` (NumPy loops the per-image GEMMs in C: a Python loop per image held the
GIL between the products, and the two threads waited on it); the bias and a ReLU (the plans'
fused store) are applied to each thread's images right after their products, while they are in
cache.

Determinism: dW and db are summed image by image within ``chunks`` of the batch that depend on
the shapes only, and the chunks' sums are added in chunk order, so every thread count gives the
same bits (as the other paths of :mod:`.conv`).
"""
import numpy as np
from numba import njit

from .._memory import empty
from .._workers import one_blas_thread, split
from . import _common

__all__ = ["applies", "conv2d", "conv2d_backward", "forward", "memory"]


def applies(w_shape, stride, pads):
    """Whether a dense convolution is a plain per-image GEMM: 1x1, stride 1, no padding."""
    return tuple(w_shape[2:]) == (1, 1) and tuple(stride) == (1, 1) and not any(pads)


@njit(nogil=True, cache=True)
def _bias_relu(out, b, relu):
    """out (n, K, L) += b[k] per channel (b of size 0: none), then ReLU (NaN kept) when relu."""
    zero = out.dtype.type(0)
    for i in range(out.shape[0]):
        for k in range(out.shape[1]):
            row = out[i, k]
            bk = b[k] if b.size else zero
            if relu:
                for j in range(row.shape[0]):
                    v = row[j] + bk
                    row[j] = zero if v < zero else v
            else:
                for j in range(row.shape[0]):
                    row[j] = row[j] + bk


def _parts(n, k, c, hw):
    return _common.conv_parts(n * k * c * hw, n, n)


def forward(x, w, b, relu=False):
    """x (N, C, H, W), w (K, C, 1, 1), b (K,) or None -> out (N, K, H, W), ReLU applied as each
    image is stored when ``relu``."""
    n, c, h, wd = x.shape
    k = w.shape[0]
    x = np.ascontiguousarray(x)
    w2 = np.ascontiguousarray(w.reshape(k, c))
    out = empty((n, k, h, wd), x.dtype)
    xs, os = x.reshape(n, c, h * wd), out.reshape(n, k, h * wd)
    bias = np.ascontiguousarray(b) if b is not None else np.empty(0, x.dtype)
    touch = b is not None or relu

    def share(i0, i1):
        np.matmul(w2, xs[i0:i1], out=os[i0:i1])  # one GEMM per image, looped in C
        if touch:
            _bias_relu(os[i0:i1], bias, bool(relu))

    if n and k:
        with one_blas_thread():
            split(share, n, _parts(n, k, c, h * wd))
    return out


def conv2d(x, w, b):
    """x (N, C, H, W), w (K, C, 1, 1), b (K,) or None -> (out (N, K, H, W), None)."""
    return forward(x, w, b), None


def _chunks(n, k, c, hw):
    """Runs of images whose dW and db are summed apart (4 where the work is split: the shapes
    decide, never the thread count)."""
    split_work = 2 * n * k * c * hw >= _common.SPLIT_FLOPS
    return max(1, min(n, 4)) if split_work else 1


def conv2d_backward(dout, x, w, has_bias, need_dx=True):
    """dout (N, K, H, W) -> (dx (N, C, H, W) or None, dw (K, C, 1, 1), db (K,) or None)."""
    n, c, h, wd = x.shape
    k = w.shape[0]
    hw = h * wd
    x, dout = np.ascontiguousarray(x), np.ascontiguousarray(dout)
    w2t = np.ascontiguousarray(w.reshape(k, c).T)
    xs, ds = x.reshape(n, c, hw), dout.reshape(n, k, hw)
    dx = empty(x.shape, x.dtype) if need_dx else None
    dxs = dx.reshape(n, c, hw) if need_dx else None
    chunks = _chunks(n, k, c, hw)
    sums = [None] * chunks

    def share(c0, c1):
        for q in range(c0, c1):
            i0, i1 = n * q // chunks, n * (q + 1) // chunks
            # one stacked product per chunk (BLAS per image, looped in C); the images' dW and
            # db are then added in image order, as one image at a time would
            dw = np.matmul(ds[i0:i1], xs[i0:i1].transpose(0, 2, 1)).sum(axis=0)
            db = ds[i0:i1].sum(axis=2).sum(axis=0) if has_bias else None
            if need_dx:
                np.matmul(w2t, ds[i0:i1], out=dxs[i0:i1])
            sums[q] = (dw, db)

    if n:
        with one_blas_thread():
            split(share, chunks, min(chunks, _parts(n, k, c, hw)))
    dw, db = sums[0] if n else (np.zeros((k, c), x.dtype), np.zeros(k, x.dtype))
    for part_dw, part_db in sums[1:]:  # chunk order
        dw += part_dw
        if has_bias:
            db += part_db
    return dx, dw.reshape(w.shape), (db if has_bias else None)


def memory(x_shape, w_shape, itemsize):
    """Bytes ``(kept for backward, workspace)``: nothing kept; every image's dW and db (each
    chunk's stacked products, all chunks in flight at most), each chunk's sums, and the weights
    transposed."""
    n, c = x_shape[:2]
    k = w_shape[0]
    chunks = _chunks(n, k, c, x_shape[2] * x_shape[3])
    return 0, ((n + chunks + 2) * k * c + (n + chunks) * k) * itemsize
