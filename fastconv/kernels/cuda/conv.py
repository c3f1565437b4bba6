"""cuda convolution: im2col, the tiled GEMM with an NCHW epilogue, and col2im as a gather
(one thread per input element, no atomics).

im2col and col2im take a channel offset ``c0`` so that the grouped and transposed convolutions
unfold or gather one slice of channels of a whole array, and a dilation ``(dh, dw)``: tap
(fy, fx) of output (oh, ow) reads input row ``oh*sh + fy*dh - top``, column ``ow*sw + fx*dw -
left``. ``ho, wo`` (the grid of output positions) are arguments, so the transposed convolution
uses them with its own geometry."""
from numba import cuda, float32

from ..._shapes import conv_output_hw
from ._gemm import _channel_sum, _gemm
from ._launch import _A1, _A2, _A4, _I, _dev, _empty, _flat, _launch, _sigs, _unravel


@cuda.jit(cache=True)
def _im2col_kernel(x, c0, fh, fw, sh, sw, dh, dw, top, left, ho, wo, cols):
    """Channels ``c0 .. c0 + rows/(fh*fw)`` of x (N, C, H, W) -> cols, flat view of
    (rows, N*ho*wo)."""
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
        y = oh * sh + fy * dh - top
        xx = ow * sw + (f - fy * fw) * dw - left
        if y >= 0 and y < h and xx >= 0 and xx < wd:
            cols[t] = x[n, c0 + c, y, xx]
        else:
            cols[t] = 0


@cuda.jit(cache=True)
def _col2im_kernel(cols, c0, fh, fw, sh, sw, dh, dw, top, left, ho, wo, dx):
    """cols (cg*fh*fw, N*ho*wo) -> channels ``c0 .. c0 + cg`` of dx (N, C, H, W); each thread
    gathers one dx element, taps in (fy, fx) order."""
    n_img, _, h, wd = dx.shape
    cg = cols.shape[0] // (fh * fw)
    for t in range(cuda.grid(1), n_img * cg * h * wd, cuda.gridsize(1)):
        n, c, y, xx = _unravel(t, cg, h, wd)
        acc = float32(0)
        for fy in range(fh):
            ty = y + top - fy * dh
            if ty >= 0 and ty % sh == 0 and ty // sh < ho:
                base = (n * ho + ty // sh) * wo
                for fx in range(fw):
                    tx = xx + left - fx * dw
                    if tx >= 0 and tx % sw == 0 and tx // sw < wo:
                        acc += cols[(c * fh + fy) * fw + fx, base + tx // sw]
        dx[n, c0 + c, y, xx] = acc


def _im2col_dev(x, kernel, stride, pads, ho, wo, dilation=(1, 1), c0=0, cg=None):
    """Channels ``c0 .. c0 + cg`` (all by default) of device x unfolded to (cg*FH*FW, N*ho*wo)."""
    (fh, fw), (sh, sw), (dh, dw) = kernel, stride, dilation
    cg = x.shape[1] if cg is None else cg
    cols = _empty((cg * fh * fw, x.shape[0] * ho * wo), x.dtype)
    _im2col_kernel[_launch(cols.size)](x, c0, fh, fw, sh, sw, dh, dw, pads[0], pads[2], ho, wo,
                                       _flat(cols))
    return cols


def _col2im_dev(cols, x_shape, kernel, stride, pads, ho, wo, dilation=(1, 1), c0=0, dx=None):
    """cols gathered into channels ``c0 ..`` of ``dx`` (a new (x_shape) array by default)."""
    (fh, fw), (sh, sw), (dh, dw) = kernel, stride, dilation
    dx = _empty(x_shape, cols.dtype) if dx is None else dx
    n = x_shape[0] * (cols.shape[0] // (fh * fw)) * x_shape[2] * x_shape[3]
    _col2im_kernel[_launch(n)](cols, c0, fh, fw, sh, sw, dh, dw, pads[0], pads[2], ho, wo, dx)
    return dx


def im2col(x, kernel, stride, pads, dilation=(1, 1)):
    """x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout); layout as :func:`fastconv.kernels.naive.im2col`."""
    x = _dev(x)
    ho, wo = conv_output_hw(x.shape[2:], kernel, stride, pads, dilation)
    return _im2col_dev(x, kernel, stride, pads, ho, wo, dilation)


def col2im(cols, x_shape, kernel, stride, pads, dilation=(1, 1)):
    """cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W), overlaps summed by a per-element gather."""
    ho, wo = conv_output_hw(x_shape[2:], kernel, stride, pads, dilation)
    return _col2im_dev(_dev(cols), tuple(x_shape), kernel, stride, pads, ho, wo, dilation)


def conv2d_memory(x_shape, w_shape, stride, pads, dilation, itemsize):
    """Bytes ``(kept for backward, workspace)`` beyond inputs and outputs: the device column
    matrix is kept; backward adds dout in (K, N*P) order and the column gradient."""
    n, c = x_shape[:2]
    k, _, fh, fw = w_shape
    ho, wo = conv_output_hw(tuple(x_shape[2:]), (fh, fw), stride, pads, dilation)
    cols = c * fh * fw * n * ho * wo * itemsize
    return cols, cols + k * n * ho * wo * itemsize


def conv2d(x, w, b, stride, pads, dilation=(1, 1)):
    """x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).

    ``saved`` is the device column matrix (C*FH*FW, N*Hout*Wout), reused by the backward pass.
    """
    x = _dev(x)
    w = _dev(w, x.dtype)
    n_img = x.shape[0]
    k, c, fh, fw = w.shape
    ho, wo = conv_output_hw(x.shape[2:], (fh, fw), stride, pads, dilation)
    cols = _im2col_dev(x, (fh, fw), stride, pads, ho, wo, dilation)
    out = _empty((n_img, k, ho, wo), x.dtype)
    _gemm(w.reshape(k, c * fh * fw), cols, bias=None if b is None else _dev(b, x.dtype),
          bias_mode=0 if b is None else 1, pb=ho * wo, out=out)
    return out, cols


def conv2d_backward(dout, x, w, has_bias, stride, pads, saved, need_dx=True, dilation=(1, 1)):
    """dout (N, K, Hout, Wout) -> (dx or None, dw, db or None); see :func:`conv2d`."""
    dout = _dev(dout)
    w = _dev(w, dout.dtype)
    n_img, k, ho, wo = dout.shape
    kernel = tuple(w.shape[2:])
    rows = w.shape[1] * kernel[0] * kernel[1]
    cols = saved if saved is not None else _im2col_dev(_dev(x, dout.dtype), kernel, stride, pads,
                                                       ho, wo, dilation)
    dout_t, db = _channel_sum(dout.reshape(n_img, k, ho * wo))
    dout_t = dout_t.reshape(k, n_img * ho * wo)
    dw = _gemm(dout_t, cols, trans_b=True)
    dx = None
    if need_dx:
        dcols = _gemm(w.reshape(k, rows), dout_t, trans_a=True)
        dx = _col2im_dev(dcols, tuple(x.shape), kernel, stride, pads, ho, wo, dilation)
    return dx, dw.reshape(w.shape), (db if has_bias else None)


KERNELS = {
    "_im2col_kernel": (_im2col_kernel, _sigs(f"void({_A4}, {', '.join([_I] * 11)}, {_A1})")),
    "_col2im_kernel": (_col2im_kernel, _sigs(f"void({_A2}, {', '.join([_I] * 11)}, {_A4})")),
}
