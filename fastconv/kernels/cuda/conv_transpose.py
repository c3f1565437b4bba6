"""cuda transposed convolution: a GEMM to columns, then the col2im gather straight into the output.

x (N, C, H, W) goes to its (C, N*H*W) transpose (:func:`._gemm._channel_sum`, kept for
backward); per group ``cols = w_g.reshape(C/g, -1).T @ x_t[g]`` and the col2im kernel gathers
each output element (N, K, Hout, Wout) from the H x W grid of input positions, the padding
giving the offset of output row 0 (rows that ``output_padding`` adds gather nothing), then the
bias is added. Backward unfolds dout onto the H x W grid (im2col with the same geometry):
``dx_g = w_g.reshape(C/g, -1) @ cols`` in NCHW order through the GEMM epilogue and
``dw_g = x_t[g] @ cols.T``; db comes with the transpose of dout.
"""
from numba import cuda

from ..._shapes import conv_transpose_output_hw
from ._gemm import _channel_sum, _gemm
from ._launch import _A1, _A4, _dev, _empty, _launch, _sigs
from .conv import _col2im_dev, _im2col_dev
from .grouped import _copy_channels


@cuda.jit(cache=True)
def _channel_bias_kernel(out, b):
    """out[n, k] += b[k] for out (N, K, H, W)."""
    _, k_out, h, wd = out.shape
    p = h * wd
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i = t % p
        r = t // p
        k = r % k_out
        out[r // k_out, k, i // wd, i % wd] += b[k]


def _frame(x, w, stride, padding, output_padding, dilation, groups):
    n_img, c, h, wd = x.shape
    _, kg, fh, fw = w.shape
    ho, wo = conv_transpose_output_hw((h, wd), (fh, fw), stride, padding, output_padding, dilation)
    pads = (padding[0], 0, padding[1], 0)  # only top and left place the grid
    return n_img, c // groups, kg, (fh, fw), pads, ho, wo


def conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """x (N, C, H, W), w (C, K/groups, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).

    ``saved`` is the (C, N*H*W) device transpose of x.
    """
    x = _dev(x)
    w = _dev(w, x.dtype)
    n_img, cg, kg, kernel, pads, ho, wo = _frame(x, w, stride, padding, output_padding, dilation,
                                                 groups)
    h, wd = x.shape[2:]
    rows = kg * kernel[0] * kernel[1]
    x_t, _ = _channel_sum(x.reshape(n_img, x.shape[1], h * wd))
    x_t = x_t.reshape(x.shape[1], n_img * h * wd)
    out = _empty((n_img, kg * groups, ho, wo), x.dtype)
    for g in range(groups):
        cols = _gemm(w[g * cg:(g + 1) * cg].reshape(cg, rows), x_t[g * cg:(g + 1) * cg],
                     trans_a=True)
        _col2im_dev(cols, tuple(out.shape), kernel, stride, pads, h, wd, dilation, g * kg, out)
    if b is not None:
        _channel_bias_kernel[_launch(out.size)](out, _dev(b, x.dtype))
    return out, x_t


def conv_transpose2d_backward(dout, x, w, has_bias, stride, padding, output_padding, dilation,
                              groups, saved, need_dx):
    """Gradients of :func:`conv_transpose2d`: dout (N, K, Hout, Wout) -> (dx, dw, db)."""
    dout = _dev(dout)
    w = _dev(w, dout.dtype)
    n_img, cg, kg, kernel, pads, ho, wo = _frame(x, w, stride, padding, output_padding, dilation,
                                                 groups)
    c, h, wd = x.shape[1:]
    rows = kg * kernel[0] * kernel[1]
    x_t = saved
    if x_t is None:
        x_t = _channel_sum(_dev(x, dout.dtype).reshape(n_img, c, h * wd))[0].reshape(c, -1)
    _, db = _channel_sum(dout.reshape(n_img, kg * groups, ho * wo))
    dw = _empty((c, rows), dout.dtype)
    dx = _empty((n_img, c, h, wd), dout.dtype) if need_dx else None
    part = _empty((n_img, cg, h, wd), dout.dtype) if need_dx and groups > 1 else dx
    for g in range(groups):
        cols = _im2col_dev(dout, kernel, stride, pads, h, wd, dilation, g * kg, kg)
        w_g = w[g * cg:(g + 1) * cg].reshape(cg, rows)
        _gemm(x_t[g * cg:(g + 1) * cg], cols, trans_b=True, out=dw[g * cg:(g + 1) * cg])
        if need_dx:
            _gemm(w_g, cols, pb=h * wd, out=part)
            if groups > 1:
                _copy_channels(part, g * cg, dx)
    return dx, dw.reshape(w.shape), (db if has_bias else None)


KERNELS = {
    "_channel_bias_kernel": (_channel_bias_kernel, _sigs(f"void({_A4}, {_A1})")),
}
