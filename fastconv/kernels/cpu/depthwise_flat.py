"""cpu depthwise convolution, stride 1 with output rows as wide as the input's (``left + right ==
(FW-1) * dilation``, as 3x3 padding 1): planes copied whole, no per-row work.

The planes of ``stack`` images of one channel lie one after another in one run, each with its
``top`` and ``bottom`` padding rows (zero) around it but no padding columns, so an image plane is
one contiguous copy in and out, and tap t = (fy, fx) of output i reads ``i + off[t]`` with
``off[t] = fy*dh*W + fx*dw - left``. Rows wrap into their neighbours at the left and right
edges; each column shift ``d != 0`` therefore reads its own copy of the run in which the columns
that a wrapped read lands on are zero (``_zero_cols``), which gives exactly the zero padding.
The input gradient gathers from copies of dout masked the same way (with the shift negated).
:func:`_gather` is shared with the general path of :mod:`.depthwise`.
"""
import numpy as np
from numba import njit


class Flat:
    """The run layout of a stride-1, same-width depthwise layer (see the module docstring):
    ``shifts`` lists the distinct column shifts (0 first), ``sel[t]`` the copy tap t reads,
    ``lead`` zeros open every run, and ``hq = top + H + bottom`` rows hold each image."""

    @staticmethod
    def applies(x_shape, w_shape, stride, pads, dilation):
        fw, dw, wd = w_shape[3], dilation[1], x_shape[3]
        return tuple(stride) == (1, 1) and pads[2] + pads[3] == (fw - 1) * dw and \
            max(pads[2], pads[3]) < wd

    def __init__(self, x_shape, w_shape, pads, dilation, stack_values):
        n, _, h, wd = x_shape
        fh, fw = w_shape[2:]
        dh, dw = dilation
        self.hq = h + pads[0] + pads[1]
        self.ho, self.wo = self.hq - (fh - 1) * dh, wd
        col = [fx * dw - pads[2] for fy in range(fh) for fx in range(fw)]
        off = np.array([fy * dh * wd + fx * dw - pads[2] for fy in range(fh) for fx in range(fw)],
                       dtype=np.int64)
        shifts = [0] + sorted({d for d in col if d})
        sel = np.array([shifts.index(d) for d in col], dtype=np.int64)
        lead = max(-int(off.min()), int(off.max()), 0)
        stack = max(1, min(n, stack_values // max(self.hq * wd, 1)))
        self.stacks = -(-n // stack) if n else 0
        self.args = (pads[0], self.hq, stack, lead, np.array(shifts, dtype=np.int64), sel, off)


@njit(inline="always")
def _gather(dst, n, src, rows, starts, wk, taps, accumulate, init):
    """``dst[:n] = init`` unless ``accumulate``, then ``dst[:n] += wk[t] * src[rows[t],
    starts[t] + i]`` for the taps listed in ``taps``, three taps a pass (the sum's order is fixed
    by the list)."""
    if not accumulate:
        dst[:n] = init
    j, count = 0, taps.shape[0]
    while j < count:
        t0 = taps[j]
        a, wa = src[rows[t0], starts[t0]:], wk[t0]
        if count - j >= 3:
            t1, t2 = taps[j + 1], taps[j + 2]
            b, wb = src[rows[t1], starts[t1]:], wk[t1]
            c, wc = src[rows[t2], starts[t2]:], wk[t2]
            for i in range(n):
                dst[i] += wa * a[i] + wb * b[i] + wc * c[i]
            j += 3
        elif count - j == 2:
            t1 = taps[j + 1]
            b, wb = src[rows[t1], starts[t1]:], wk[t1]
            for i in range(n):
                dst[i] += wa * a[i] + wb * b[i]
            j += 2
        else:
            for i in range(n):
                dst[i] += wa * a[i]
            j += 1


@njit(inline="always")
def _unit(u, stacks, stack, n_img):
    """Unit u of the kernels: ``(channel, stack, first image, end image)``."""
    c = u // stacks
    s = u - c * stacks
    return c, s, s * stack, min(s * stack + stack, n_img)


@njit(inline="always")
def _tap_dots(g, n, src, rows, starts, out):
    """``out[t] = sum of g[i] * src[rows[t], starts[t] + i]`` over i < n, for every tap t (the
    dW of each tap), three taps a pass as :func:`_gather`; returns the sum of g[:n] (the db)."""
    zero = out.dtype.type(0)
    total = zero
    for i in range(n):
        total += g[i]
    t, count = 0, out.shape[0]
    while t < count:
        a = src[rows[t], starts[t]:]
        if t + 3 <= count:
            b, c = src[rows[t + 1], starts[t + 1]:], src[rows[t + 2], starts[t + 2]:]
            sa = sb = sc = zero
            for i in range(n):
                gi = g[i]
                sa += gi * a[i]
                sb += gi * b[i]
                sc += gi * c[i]
            out[t], out[t + 1], out[t + 2] = sa, sb, sc
            t += 3
        else:
            sa = zero
            for i in range(n):
                sa += g[i] * a[i]
            out[t] = sa
            t += 1
    return total


@njit(inline="always")
def _copies(q, start, count, wd, shifts, negate):
    """Rows ``1..`` of q: copies of ``q[0, start:start + count]`` (whole rows of ``wd``) with
    the columns zeroed that a read shifted by ``shifts[r]`` (``-shifts[r]`` when ``negate``)
    lands on when it wraps: the last ``-d`` columns for d < 0, the first ``d`` for d > 0."""
    zero = q.dtype.type(0)
    for r in range(1, shifts.shape[0]):
        d = -shifts[r] if negate else shifts[r]
        src, dst = q[0, start:start + count], q[r, start:start + count]
        for i in range(count):
            dst[i] = src[i]
        lo, hi = (wd + d, wd) if d < 0 else (0, d)
        for y in range(count // wd):
            for j in range(lo, hi):
                dst[y * wd + j] = zero


@njit(inline="always")
def _pack_stack(x, n0, n1, c, top, hq, lead, shifts, q):
    """The planes x[n0:n1, c] into q's run (and its masked copies); padding rows stay zero."""
    wd = x.shape[3]
    plane = x.shape[2] * wd
    for n in range(n0, n1):
        start = lead + ((n - n0) * hq + top) * wd
        src, dst = x[n, c].reshape(plane), q[0, start:start + plane]
        for i in range(plane):
            dst[i] = src[i]
        _copies(q, start, plane, wd, shifts, False)


@njit(nogil=True, cache=True)
def flat_forward_kernel(x, w, b, top, hq, stack, lead, shifts, sel, off, out, u0, u1):
    """Units ``u0 <= c*S + s < u1`` (S stacks of ``stack`` images): out[n, c*m:(c+1)*m] of the
    stack's images n from x[n, c]. x (N, C, H, W), w (m*C, T), b (m*C,), out (N, m*C, Hout, W)."""
    n_img, c_in, _, wd = x.shape
    k_out, n_taps = w.shape
    plane_out = out.shape[2] * wd
    m = k_out // c_in
    stacks = -(-n_img // stack)
    run = stack * hq * wd
    q = np.zeros((shifts.shape[0], 2 * lead + run), dtype=x.dtype)
    acc = np.empty(run, dtype=x.dtype)
    taps = np.arange(n_taps)
    starts = off + lead
    for u in range(u0, u1):
        c, _, n0, n1 = _unit(u, stacks, stack, n_img)
        _pack_stack(x, n0, n1, c, top, hq, lead, shifts, q)
        for k in range(c * m, c * m + m):
            _gather(acc, (n1 - n0) * hq * wd, q, sel, starts, w[k], taps, False, b[k])
            for n in range(n0, n1):
                src, dst = acc[(n - n0) * hq * wd:], out[n, k].reshape(plane_out)
                for i in range(plane_out):
                    dst[i] = src[i]


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def flat_backward_kernel(dout, x, w, top, hq, stack, lead, shifts, sel, off, need_dx, dx, dwp, dbp,
                         u0, u1):
    """Units as :func:`flat_forward_kernel`: dx[n, c] (when ``need_dx``) and the stack's partial
    gradients dwp[s, k] (T,) and dbp[s, k]. dout is laid out as the output in a zeroed run g
    (spare rows zero), so each tap's dW is one dot product with the masked x copy it read, and
    dx one :func:`_gather` of g's masked copies. "reassoc" lets LLVM vectorise the dot products
    (a fixed order per build, whatever the thread count)."""
    n_img, c_in, h, wd = x.shape
    k_out, n_taps = w.shape
    plane_out, plane = dout.shape[2] * wd, h * wd
    m = k_out // c_in
    stacks = -(-n_img // stack)
    run = stack * hq * wd
    zero = dwp.dtype.type(0)
    q = np.zeros((shifts.shape[0], 2 * lead + run), dtype=x.dtype)
    g = np.zeros((shifts.shape[0], 2 * lead + run), dtype=x.dtype)
    dq = np.empty(run, dtype=x.dtype)
    taps = np.arange(n_taps)
    starts, back = off + lead, lead - off
    for u in range(u0, u1):
        c, s, n0, n1 = _unit(u, stacks, stack, n_img)
        length = (n1 - n0) * hq * wd
        _pack_stack(x, n0, n1, c, top, hq, lead, shifts, q)
        for k in range(c * m, c * m + m):
            for n in range(n0, n1):
                start = lead + (n - n0) * hq * wd
                src, dst = dout[n, k].reshape(plane_out), g[0, start:start + plane_out]
                for i in range(plane_out):
                    dst[i] = src[i]
                if need_dx:
                    _copies(g, start, plane_out, wd, shifts, True)
            gk = g[0, lead:lead + length]
            dbp[s, k] = _tap_dots(gk, length, q, sel, starts, dwp[s, k])
            if need_dx:
                _gather(dq, length, g, sel, back, w[k], taps, k > c * m, zero)
        if need_dx:
            for n in range(n0, n1):
                src, dst = dq[((n - n0) * hq + top) * wd:], dx[n, c].reshape(plane)
                for i in range(plane):
                    dst[i] = src[i]
