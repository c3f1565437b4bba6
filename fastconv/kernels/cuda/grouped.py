"""cuda grouped convolution: the dense path per group, and direct depthwise kernels.

``1 < groups < C``: per group, im2col of its channel slice (the kernel's channel offset), the
GEMM into an (N, K/groups, Hout, Wout) array and a copy into the output's channel slice;
backward slices the (K, N*P) transpose of dout by rows (contiguous) and gathers each group's
dcols into its slice of dx.

Depthwise (``groups == C``, K = m*C, output channel k reads input channel ``k // m``): one
thread per output element sums its FH*FW taps; dx is a gather (one thread per dx element over
the m output channels and the taps that reach it, no atomics), and dW with db is one block per
(k, tap) — the last "tap" of each k is the bias — reducing over the batch and the output plane
with :func:`._launch._block_sum` (a fixed order: deterministic).
"""
from numba import cuda, float32

from ..._shapes import conv_output_hw
from ._gemm import _channel_sum, _gemm
from ._launch import (REDUCE_THREADS, _A1, _A3, _A4, _I, _block_sum, _dev, _dummy, _empty, _launch,
                      _reduce_launch, _sigs, _unravel)
from .conv import _col2im_dev, _im2col_dev


@cuda.jit(cache=True)
def _copy_channels_kernel(src, k0, dst):
    """dst[:, k0:k0 + K'] = src (N, K', H, W)."""
    _, kg, h, wd = src.shape
    p = h * wd
    for t in range(cuda.grid(1), src.size, cuda.gridsize(1)):
        i = t % p
        r = t // p
        k = r % kg
        n = r // kg
        dst[n, k0 + k, i // wd, i % wd] = src[n, k, i // wd, i % wd]


def _copy_channels(src, k0, dst):
    _copy_channels_kernel[_launch(src.size)](src, k0, dst)


def grouped_conv2d(x, w, b, stride, pads, dilation, groups):
    """x (N, C, H, W), w (K, C/groups, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).

    ``saved`` lists each group's device column matrix.
    """
    x = _dev(x)
    w = _dev(w, x.dtype)
    b = None if b is None else _dev(b, x.dtype)
    n_img, c = x.shape[:2]
    k, cg, fh, fw = w.shape
    kg = k // groups
    ho, wo = conv_output_hw(x.shape[2:], (fh, fw), stride, pads, dilation)
    out = _empty((n_img, k, ho, wo), x.dtype)
    part = _empty((n_img, kg, ho, wo), x.dtype)
    saved = []
    for g in range(groups):
        cols = _im2col_dev(x, (fh, fw), stride, pads, ho, wo, dilation, g * cg, cg)
        _gemm(w[g * kg:(g + 1) * kg].reshape(kg, cg * fh * fw), cols,
              bias=None if b is None else b[g * kg:(g + 1) * kg], bias_mode=0 if b is None else 1,
              pb=ho * wo, out=part)
        _copy_channels(part, g * kg, out)
        saved.append(cols)
    return out, saved


def grouped_conv2d_backward(dout, x, w, has_bias, stride, pads, dilation, groups, saved, need_dx):
    """Gradients of :func:`grouped_conv2d`: dout (N, K, Hout, Wout) -> (dx or None, dw, db or None)."""
    dout = _dev(dout)
    w = _dev(w, dout.dtype)
    x = _dev(x, dout.dtype)
    n_img, k, ho, wo = dout.shape
    _, cg, fh, fw = w.shape
    kg, rows = k // groups, cg * fh * fw
    dout_t, db = _channel_sum(dout.reshape(n_img, k, ho * wo))
    dout_t = dout_t.reshape(k, n_img * ho * wo)
    dw = _empty((k, rows), dout.dtype)
    dx = _empty(tuple(x.shape), dout.dtype) if need_dx else None
    for g in range(groups):
        cols = saved[g] if saved is not None else _im2col_dev(x, (fh, fw), stride, pads, ho, wo,
                                                              dilation, g * cg, cg)
        dout_g = dout_t[g * kg:(g + 1) * kg]
        _gemm(dout_g, cols, trans_b=True, out=dw[g * kg:(g + 1) * kg])
        if need_dx:
            dcols = _gemm(w[g * kg:(g + 1) * kg].reshape(kg, rows), dout_g, trans_a=True)
            _col2im_dev(dcols, tuple(x.shape), (fh, fw), stride, pads, ho, wo, dilation, g * cg, dx)
    return dx, dw.reshape(w.shape), (db if has_bias else None)


@cuda.jit(cache=True)
def _depthwise_kernel(x, w, b, has_bias, sh, sw, dh, dw, top, left, out):
    """out (N, m*C, Hout, Wout) from x (N, C, H, W), w (m*C, FH, FW), b (m*C,); one thread per
    output element, taps in (fy, fx) order."""
    _, c_in, h, wd = x.shape
    _, k_out, ho, wo = out.shape
    _, fh, fw = w.shape
    m = k_out // c_in
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        n, k, oh, ow = _unravel(t, k_out, ho, wo)
        c = k // m
        acc = float32(0)
        for fy in range(fh):
            y = oh * sh + fy * dh - top
            if y >= 0 and y < h:
                for fx in range(fw):
                    xx = ow * sw + fx * dw - left
                    if xx >= 0 and xx < wd:
                        acc += w[k, fy, fx] * x[n, c, y, xx]
        if has_bias:
            acc += b[k]
        out[n, k, oh, ow] = acc


@cuda.jit(cache=True)
def _depthwise_dx_kernel(dout, w, sh, sw, dh, dw, top, left, dx):
    """dx (N, C, H, W) from dout (N, m*C, Hout, Wout); one thread per dx element gathers over
    its m output channels and the taps that reach it."""
    _, c_in, h, wd = dx.shape
    _, k_out, ho, wo = dout.shape
    _, fh, fw = w.shape
    m = k_out // c_in
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c, y, xx = _unravel(t, c_in, h, wd)
        acc = float32(0)
        for k in range(c * m, c * m + m):
            for fy in range(fh):
                ty = y + top - fy * dh
                if ty >= 0 and ty % sh == 0 and ty // sh < ho:
                    for fx in range(fw):
                        tx = xx + left - fx * dw
                        if tx >= 0 and tx % sw == 0 and tx // sw < wo:
                            acc += w[k, fy, fx] * dout[n, k, ty // sh, tx // sw]
        dx[n, c, y, xx] = acc


@cuda.jit(cache=True)
def _depthwise_dw_kernel(dout, x, fh, fw, sh, sw, dh, dw, top, left, dwt, db):
    """dwt (m*C*FH*FW,) and db (m*C,): one block per (k, tap), tap FH*FW being the bias."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=dout.dtype)
    n_img, k_out, ho, wo = dout.shape
    _, c_in, h, wd = x.shape
    m = k_out // c_in
    taps = fh * fw
    count = n_img * ho * wo
    tid = cuda.threadIdx.x
    for j in range(cuda.blockIdx.x, k_out * (taps + 1), cuda.gridDim.x):
        k = j // (taps + 1)
        tap = j - k * (taps + 1)
        fy = tap // fw
        fx = tap - fy * fw
        c = k // m
        acc = float32(0)
        for i in range(tid, count, cuda.blockDim.x):
            ow = i % wo
            r = i // wo
            oh = r % ho
            n = r // ho
            g = dout[n, k, oh, ow]
            if tap == taps:
                acc += g
            else:
                y = oh * sh + fy * dh - top
                xx = ow * sw + fx * dw - left
                if y >= 0 and y < h and xx >= 0 and xx < wd:
                    acc += g * x[n, c, y, xx]
        total = _block_sum(part, acc)
        if tid == 0:
            if tap == taps:
                db[k] = total
            else:
                dwt[k * taps + tap] = total


def depthwise_conv2d(x, w, b, stride, pads, dilation):
    """x (N, C, H, W), w (m*C, 1, FH, FW), b (m*C,) or None -> (out (N, m*C, Hout, Wout), None)."""
    x = _dev(x)
    w = _dev(w, x.dtype)
    k, _, fh, fw = w.shape
    ho, wo = conv_output_hw(x.shape[2:], (fh, fw), stride, pads, dilation)
    out = _empty((x.shape[0], k, ho, wo), x.dtype)
    bias = _dummy(x.dtype) if b is None else _dev(b, x.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    _depthwise_kernel[_launch(out.size)](x, w.reshape(k, fh, fw), bias, b is not None, sh, sw, dh,
                                         dw, pads[0], pads[2], out)
    return out, None


def depthwise_conv2d_backward(dout, x, w, has_bias, stride, pads, dilation, saved, need_dx):
    """Gradients of :func:`depthwise_conv2d`: dout (N, m*C, Hout, Wout) -> (dx, dw, db)."""
    dout = _dev(dout)
    w = _dev(w, dout.dtype)
    x = _dev(x, dout.dtype)
    n_img, k, ho, wo = dout.shape
    _, _, fh, fw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    dwt = _empty(k * fh * fw, dout.dtype)
    db = _empty(k, dout.dtype)
    _depthwise_dw_kernel[_reduce_launch(k * (fh * fw + 1), n_img * ho * wo)](
        dout, x, fh, fw, sh, sw, dh, dw, pads[0], pads[2], dwt, db)
    dx = None
    if need_dx:
        dx = _empty(tuple(x.shape), dout.dtype)
        _depthwise_dx_kernel[_launch(dx.size)](dout, w.reshape(k, fh, fw), sh, sw, dh, dw, pads[0],
                                               pads[2], dx)
    return dx, dwt.reshape(w.shape), (db if has_bias else None)


KERNELS = {
    "_copy_channels_kernel": (_copy_channels_kernel, _sigs(f"void({_A4}, {_I}, {_A4})")),
    "_depthwise_kernel": (_depthwise_kernel,
                          _sigs(f"void({_A4}, {_A3}, {_A1}, boolean, {', '.join([_I] * 6)}, {_A4})")),
    "_depthwise_dx_kernel": (_depthwise_dx_kernel,
                             _sigs(f"void({_A4}, {_A3}, {', '.join([_I] * 6)}, {_A4})")),
    "_depthwise_dw_kernel": (_depthwise_dw_kernel,
                             _sigs(f"void({_A4}, {_A4}, {', '.join([_I] * 8)}, {_A1}, {_A1})")),
}
