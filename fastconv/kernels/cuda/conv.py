"""cuda convolution: im2col, the tiled GEMM with an NCHW epilogue, and col2im as a gather
(one thread per input element, no atomics)."""
from numba import cuda, float32

from ..._shapes import conv_output_hw
from ._gemm import _channel_sum, _gemm
from ._launch import _A1, _A2, _A4, _I, _dev, _empty, _flat, _launch, _sigs


@cuda.jit(cache=True)
def _im2col_kernel(x, fh, fw, sh, sw, top, left, ho, wo, cols):
    """x (N, C, H, W) -> cols, flat view of (C*fh*fw, N*ho*wo)."""
    n_img, _, h, wd = x.shape
    p = ho * wo
    ncols = n_img * p
    for t in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
        q = t // ncols
        col = t - q * ncols
        n = col // p
        r = col - n * p
        oh = r // wo
        ow = r - oh * wo
        c = q // (fh * fw)
        f = q - c * (fh * fw)
        fy = f // fw
        y = oh * sh + fy - top
        xx = ow * sw + (f - fy * fw) - left
        if y >= 0 and y < h and xx >= 0 and xx < wd:
            cols[t] = x[n, c, y, xx]
        else:
            cols[t] = 0


@cuda.jit(cache=True)
def _col2im_kernel(cols, fh, fw, sh, sw, top, left, ho, wo, dx):
    """cols (C*fh*fw, N*ho*wo) -> dx (N, C, H, W); each thread gathers one dx element."""
    n_img, c_in, h, wd = dx.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        xx = t % wd
        r = t // wd
        y = r % h
        r = r // h
        c = r % c_in
        n = r // c_in
        acc = float32(0)
        for fy in range(fh):
            ty = y + top - fy
            if ty >= 0 and ty % sh == 0 and ty // sh < ho:
                base = (n * ho + ty // sh) * wo
                for fx in range(fw):
                    tx = xx + left - fx
                    if tx >= 0 and tx % sw == 0 and tx // sw < wo:
                        acc += cols[(c * fh + fy) * fw + fx, base + tx // sw]
        dx[n, c, y, xx] = acc


def _im2col_dev(x, kernel, stride, pads, ho, wo):
    (fh, fw), (sh, sw) = kernel, stride
    cols = _empty((x.shape[1] * fh * fw, x.shape[0] * ho * wo), x.dtype)
    _im2col_kernel[_launch(cols.size)](x, fh, fw, sh, sw, pads[0], pads[2], ho, wo,
                                       _flat(cols))
    return cols


def _col2im_dev(cols, x_shape, kernel, stride, pads, ho, wo):
    (fh, fw), (sh, sw) = kernel, stride
    dx = _empty(x_shape, cols.dtype)
    _col2im_kernel[_launch(dx.size)](cols, fh, fw, sh, sw, pads[0], pads[2], ho, wo, dx)
    return dx


def im2col(x, kernel, stride, pads):
    """x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout); layout as :func:`fastconv.kernels.naive.im2col`."""
    x = _dev(x)
    ho, wo = conv_output_hw(x.shape[2:], kernel, stride, pads)
    return _im2col_dev(x, kernel, stride, pads, ho, wo)


def col2im(cols, x_shape, kernel, stride, pads):
    """cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W), overlaps summed by a per-element gather."""
    ho, wo = conv_output_hw(x_shape[2:], kernel, stride, pads)
    return _col2im_dev(_dev(cols), tuple(x_shape), kernel, stride, pads, ho, wo)


def conv2d(x, w, b, stride, pads):
    """x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).

    ``saved`` is the device column matrix (C*FH*FW, N*Hout*Wout), reused by the backward pass.
    """
    x = _dev(x)
    w = _dev(w, x.dtype)
    n_img = x.shape[0]
    k, c, fh, fw = w.shape
    ho, wo = conv_output_hw(x.shape[2:], (fh, fw), stride, pads)
    cols = _im2col_dev(x, (fh, fw), stride, pads, ho, wo)
    out = _empty((n_img, k, ho, wo), x.dtype)
    _gemm(w.reshape(k, c * fh * fw), cols, bias=None if b is None else _dev(b, x.dtype),
          bias_mode=0 if b is None else 1, pb=ho * wo, out=out)
    return out, cols


def conv2d_backward(dout, x, w, has_bias, stride, pads, saved, need_dx=True):
    """dout (N, K, Hout, Wout) -> (dx or None, dw, db or None); see :func:`conv2d`."""
    dout = _dev(dout)
    w = _dev(w, dout.dtype)
    n_img, k, ho, wo = dout.shape
    kernel = tuple(w.shape[2:])
    rows = w.shape[1] * kernel[0] * kernel[1]
    cols = saved if saved is not None else _im2col_dev(_dev(x, dout.dtype), kernel, stride, pads,
                                                       ho, wo)
    dout_t, db = _channel_sum(dout.reshape(n_img, k, ho * wo))
    dout_t = dout_t.reshape(k, n_img * ho * wo)
    dw = _gemm(dout_t, cols, trans_b=True)
    dx = None
    if need_dx:
        dcols = _gemm(w.reshape(k, rows), dout_t, trans_a=True)
        dx = _col2im_dev(dcols, tuple(x.shape), kernel, stride, pads, ho, wo)
    return dx, dw.reshape(w.shape), (db if has_bias else None)


KERNELS = {
    "_im2col_kernel": (_im2col_kernel, _sigs(f"void({_A4}, {', '.join([_I] * 8)}, {_A1})")),
    "_col2im_kernel": (_col2im_kernel, _sigs(f"void({_A2}, {', '.join([_I] * 8)}, {_A4})")),
}
