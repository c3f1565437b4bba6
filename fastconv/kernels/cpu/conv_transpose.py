"""cpu transposed convolution: a GEMM to columns, then col2im straight into the output.

The transposed convolution of x (N, C, H, W) with w (C, K/groups, FH, FW) is the input gradient
of the convolution with those weights: per group, ``cols = w_g.reshape(C/g, -1).T @ x_g`` with
x as (C/g, n*H*W), and :func:`.conv._col2im_kernel` in its general (bounds-checked) layout adds
the columns into the output planes, the padding ``(ph, pw)`` giving the offset of output row 0
and any ``output_padding`` rows simply receiving nothing. Backward unfolds dout with
:func:`.conv._im2col_kernel` onto the H x W grid of x: ``dx_g = w_g.reshape(C/g, -1) @ cols``
and ``dw_g = x_g @ cols.T``.

The batch is cut into blocks of images of a fixed size (at most :data:`~._common.BLOCK_BYTES` of
columns each) whatever the thread count; the blocks are shared across the threads and their
partial dW are summed in block order, so results do not depend on the thread count.
"""
import numpy as np

from ..._shapes import conv_transpose_output_hw
from .._memory import empty
from .. import _workers
from .._workers import one_blas_thread, split
from . import _common
from ._common import _buffer
from .conv import GENERAL, _col2im_kernel, _im2col_kernel


class _Plan:
    """Sizes, group slices and image blocks of one transposed convolution."""

    def __init__(self, x_shape, w, stride, padding, output_padding, dilation, groups):
        self.n, self.c, self.h, self.wd = x_shape
        self.cg = self.c // groups
        _, self.kg, self.fh, self.fw = w.shape
        self.k = self.kg * groups
        self.rows = self.kg * self.fh * self.fw
        self.ho, self.wo = conv_transpose_output_hw((self.h, self.wd), (self.fh, self.fw), stride,
                                                    padding, output_padding, dilation)
        self.geometry = (self.fh, self.fw) + tuple(stride) + tuple(padding)
        self.dilation = tuple(dilation)
        self.groups = [(slice(g * self.cg, (g + 1) * self.cg), slice(g * self.kg, (g + 1) * self.kg))
                       for g in range(groups)]
        self.w2 = [w[cs].reshape(self.cg, self.rows) for cs, _ in self.groups]
        per_image = self.rows * self.h * self.wd * w.itemsize
        self.block = max(1, min(self.n, _common.BLOCK_BYTES // per_image))
        self.blocks = [(s, min(s + self.block, self.n)) for s in range(0, self.n, self.block)]
        macs = self.n * self.h * self.wd * self.c * self.rows
        self.parts = 1
        if 2 * macs >= _common.SPLIT_FLOPS:
            self.parts = max(1, min(len(self.blocks), _workers.threads()))
        self.one_blas = self.parts == 1 and macs >= _common.BLAS_THREADED_GEMM

    def run(self, block_fn):
        """``[block_fn(s0, s1) for each block]`` in block order, the blocks shared by threads."""
        def share(a, b):
            return [block_fn(*self.blocks[i]) for i in range(a, b)]
        if self.one_blas:
            with one_blas_thread():
                shares = [share(0, len(self.blocks))]
        else:
            shares = split(share, len(self.blocks), self.parts)
        return [r for rs in shares for r in rs]

    def channels_first(self, a, s0, s1, cs, slot):
        """a[s0:s1, cs] (n, c, P...) as a (c, n*P) buffer."""
        m, c = s1 - s0, cs.stop - cs.start
        buf = _buffer(slot, (c, m) + a.shape[2:], a.dtype)
        buf[...] = a[s0:s1, cs].transpose(1, 0, 2, 3)
        return buf.reshape(c, -1)


def conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """x (N, C, H, W), w (C, K/groups, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), None)."""
    p = _Plan(x.shape, w, stride, padding, output_padding, dilation, groups)
    out = empty((p.n, p.k, p.ho, p.wo), dtype=x.dtype)
    single = len(p.groups) == 1

    def block(s0, s1):
        m = s1 - s0
        for (cs, ks), w2 in zip(p.groups, p.w2):
            xt = p.channels_first(x, s0, s1, cs, "ct_x")
            cols = _buffer("ct_cols", (p.rows, m, p.h, p.wd), x.dtype)
            np.matmul(w2.T, xt, out=cols.reshape(p.rows, m * p.h * p.wd))
            dst = out[s0:s1] if single else _buffer("ct_out", (m, p.kg, p.ho, p.wo), x.dtype)
            _col2im_kernel(cols, 0, *p.geometry, GENERAL, dst, *p.dilation)
            if not single:
                out[s0:s1, ks] = dst
            if b is not None:
                out[s0:s1, ks] += b[ks].reshape(1, -1, 1, 1)

    p.run(block)
    return out, None


def conv_transpose2d_backward(dout, x, w, has_bias, stride, padding, output_padding, dilation,
                              groups, saved, need_dx):
    """Gradients of :func:`conv_transpose2d`: dout (N, K, Hout, Wout) -> (dx, dw, db)."""
    p = _Plan(x.shape, w, stride, padding, output_padding, dilation, groups)
    dx = empty(x.shape, dtype=x.dtype) if need_dx else None
    single = len(p.groups) == 1

    def block(s0, s1):
        m = s1 - s0
        dws = []
        for (cs, ks), w2 in zip(p.groups, p.w2):
            src = dout[s0:s1] if single else np.ascontiguousarray(dout[s0:s1, ks])
            cols = _buffer("ct_cols", (p.rows, m, p.h, p.wd), x.dtype)
            _im2col_kernel(src, p.fh, p.fw, *p.geometry[2:], GENERAL, cols, 0, *p.dilation)
            cols2 = cols.reshape(p.rows, m * p.h * p.wd)
            dws.append(p.channels_first(x, s0, s1, cs, "ct_x") @ cols2.T)
            if need_dx:
                res = _buffer("ct_dx", (p.cg, m, p.h, p.wd), x.dtype)
                np.matmul(w2, cols2, out=res.reshape(p.cg, -1))
                dx[s0:s1, cs] = res.transpose(1, 0, 2, 3)
        return dws

    partials = p.run(block)
    dw = np.zeros((len(p.groups), p.cg, p.rows), dtype=w.dtype)
    for dws in partials:  # block order: the same sum for any thread count
        for g, part in enumerate(dws):
            dw[g] += part
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dw.reshape(w.shape), db
