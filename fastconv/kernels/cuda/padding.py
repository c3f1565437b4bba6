"""cuda padding: one thread per output element copies its source (the index maps of
:mod:`fastconv.kernels.naive.padding`); backward is a gather, one thread per input element
summing the output gradients copied from it (no atomics).

The output indices that copy input index s along one dimension form at most three arithmetic
ranges (:func:`_preimage`): the direct one ``s + before``; for "reflect" the two mirror images;
for "replicate" the whole run of the edge; for "circular" every ``kept``-th index.
"""
from numba import cuda, float32

from ..._shapes import PAD_MODES, pad_output_hw, pad_source
from ._launch import _A4, _I, _dev, _empty, _launch, _scalar, _sigs, _unravel

CONSTANT, REFLECT, REPLICATE, CIRCULAR = (PAD_MODES[m] for m in ("constant", "reflect",
                                                                   "replicate", "circular"))


_source = cuda.jit(device=True, cache=True)(pad_source)


@cuda.jit(device=True, cache=True)
def _preimage(j, s, size, before, n_out, mode):
    """Range ``j`` (0, 1 or 2) of the output indices that copy input index ``s``:
    ``(lo, hi, step)``, possibly empty."""
    lo, hi, step = 0, 0, 1
    if mode == CIRCULAR:
        cut = max(-before, 0)
        kept = n_out - max(before, 0) - max(n_out - size - before, 0)
        if j == 0 and s >= cut and s < cut + kept:
            lo, hi, step = (max(before, 0) + s - cut) % kept, n_out, kept
    elif j == 0:
        lo, hi = s + before, s + before + 1
        if mode == REPLICATE and s == 0:
            lo = 0
        if mode == REPLICATE and s == size - 1:
            hi = n_out
    elif mode == REFLECT and j == 1 and s > 0:
        lo, hi = before - s, before - s + 1
    elif mode == REFLECT and j == 2 and s < size - 1:
        lo, hi = before + 2 * (size - 1) - s, before + 2 * (size - 1) - s + 1
    return max(lo, 0), min(hi, n_out), step


@cuda.jit(cache=True)
def _pad_kernel(x, top, left, mode, value, out):
    """out (N, C, Hout, Wout) from x (N, C, H, W); ``value`` in x's dtype."""
    _, c_in, h, wd = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        n, c, y, xx = _unravel(t, c_in, ho, wo)
        sy = _source(y, h, top, ho, mode)
        sx = _source(xx, wd, left, wo, mode)
        if sy >= 0 and sx >= 0:
            out[n, c, y, xx] = x[n, c, sy, sx]
        else:
            out[n, c, y, xx] = value


@cuda.jit(cache=True)
def _pad_backward_kernel(dout, top, left, mode, dx):
    """dx (N, C, H, W) from dout (N, C, Hout, Wout); rows then columns in increasing order."""
    _, c_in, h, wd = dx.shape
    ho, wo = dout.shape[2], dout.shape[3]
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        n, c, sy, sx = _unravel(t, c_in, h, wd)
        acc = float32(0)
        for a in range(3):
            ylo, yhi, ystep = _preimage(a, sy, h, top, ho, mode)
            for y in range(ylo, yhi, ystep):
                for b in range(3):
                    xlo, xhi, xstep = _preimage(b, sx, wd, left, wo, mode)
                    for xx in range(xlo, xhi, xstep):
                        acc += dout[n, c, y, xx]
        dx[n, c, sy, sx] = acc


def pad(x, pads, mode, value):
    """x (N, C, H, W) -> (N, C, H + top + bottom, W + left + right); see :func:`fastconv.functional.pad`."""
    x = _dev(x)
    n_img, c, h, wd = x.shape
    ho, wo = pad_output_hw((h, wd), pads, mode)
    out = _empty((n_img, c, ho, wo), x.dtype)
    _pad_kernel[_launch(out.size)](x, pads[2], pads[0], PAD_MODES[mode], _scalar(x.dtype, value),
                                   out)
    return out


def pad_backward(dout, x_shape, pads, mode):
    """dout (N, C, Hout, Wout) -> dx of ``x_shape``: the sum of the gradients copied from each element."""
    dout = _dev(dout)
    dx = _empty(tuple(x_shape), dout.dtype)
    _pad_backward_kernel[_launch(dx.size)](dout, pads[2], pads[0], PAD_MODES[mode], dx)
    return dx


KERNELS = {
    "_pad_kernel": (_pad_kernel, _sigs(f"void({_A4}, {_I}, {_I}, {_I}, {{f}}, {_A4})")),
    "_pad_backward_kernel": (_pad_backward_kernel, _sigs(f"void({_A4}, {_I}, {_I}, {_I}, {_A4})")),
}
