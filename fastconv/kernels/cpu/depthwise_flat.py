"""cpu depthwise convolution whose output rows are the input's rows split by the column stride
(``Wout == W / sw``, as 3x3 padding 1 at stride 1, or stride 2 on an even width): planes are
copied whole, with no per-row work.

Each input plane is split into its ``sw`` column phases (phase r holds columns ``r::sw``, rows of
``wc = W / sw``: one long strided copy), and the planes of ``stack`` images of one channel lie one
after another in one run, each with its ``top`` and ``bottom`` padding rows (zero) but no padding
columns. The output is computed at every row (stride 1 down the plane; rows ``oh * sh`` kept), so
tap t = (fy, fx) of output i reads phase ``(fx*dw - left) mod sw`` at ``i + off[t]``, one
contiguous run. Rows wrap into their neighbours at the left and right edges; a tap whose column
shift ``d = (fx*dw - left) // sw`` is not 0 therefore reads its own copy of the phase in which
the columns that a wrapped read lands on are zero (``_copies``), which gives exactly the zero
padding. The input gradient gathers each phase from copies of dout masked the same way (with the
shift negated). :func:`_gather` is shared with the general path of :mod:`.depthwise`.
"""
import numpy as np
from numba import njit


def _tables(keys):
    """``(distinct keys in first-seen order, each key's index)`` as int64 arrays."""
    seen = list(dict.fromkeys(keys))
    return seen, np.array([seen.index(k) for k in keys], dtype=np.int64)


class Flat:
    """The run layout of a depthwise layer with ``Wout == W / sw`` (see the module docstring).
    Copy r of the input run holds phase ``copy_rx[r]`` masked for column shift ``copy_cs[r]``
    (the unmasked phases first), tap t reads copy ``sel[t]`` from ``off[t]``; copy r of dout is
    masked for shift ``-g_cs[r]`` and tap t reads ``gsel[t]``; phase p of dx gathers the taps
    ``order[starts[p]:starts[p + 1]]``. ``lead`` zeros open and close every run, and
    ``hq = top + H + bottom`` rows hold each image."""

    @staticmethod
    def applies(x_shape, w_shape, stride, pads, dilation):
        """Whether the layout fits: Wout == W / sw, every column shift inside a row, and a row
        stride of at most 2 (every row is computed, so sh times the work of the rows kept)."""
        fw, dw, wd, (sh, sw) = w_shape[3], dilation[1], x_shape[3], stride
        wo = (wd + pads[2] + pads[3] - dw * (fw - 1) - 1) // sw + 1
        shift = max(-(-pads[2] // sw), ((fw - 1) * dw - pads[2]) // sw)
        return wd % sw == 0 and wo == wd // sw and shift < wd // sw and sh <= 2

    def __init__(self, x_shape, w_shape, stride, pads, dilation, stack_values):
        n, _, h, wd = x_shape
        fh, fw = w_shape[2:]
        (sh, sw), (dh, dw) = stride, dilation
        wc = wd // sw
        self.hq = h + pads[0] + pads[1]
        self.ho, self.wo = (self.hq - (fh - 1) * dh - 1) // sh + 1, wc
        taps = [(fy * dh, fx * dw - pads[2]) for fy in range(fh) for fx in range(fw)]
        rx = [b % sw for _, b in taps]
        cs = [b // sw for _, b in taps]
        off = np.array([a * wc + d for (a, _), d in zip(taps, cs)], dtype=np.int64)
        copies, sel = _tables([(r, 0) for r in range(sw)] + list(zip(rx, cs)))
        g_cs, gsel = _tables([0] + cs)
        order = np.argsort(rx, kind="stable")
        starts = np.searchsorted(np.array(rx)[order], np.arange(sw + 1))
        lead = int(np.abs(off).max())
        stack = max(1, min(n, stack_values // max(self.hq * wd, 1)))
        self.stacks = -(-n // stack) if n else 0
        self.args = (sh, sw, pads[0], self.hq, stack, lead,
                     np.array([r for r, _ in copies], dtype=np.int64),
                     np.array([d for _, d in copies], dtype=np.int64), sel[sw:], off,
                     np.array(g_cs, dtype=np.int64), gsel[1:], order, starts)


@njit(inline="always")
def _gather(dst, n, src, rows, starts, wk, taps, accumulate, init):
    """``dst[:n] = init`` unless ``accumulate``, then ``dst[:n] += wk[t] * src[rows[t],
    starts[t] + i]`` for the taps listed in ``taps``, six (else three, two, one) taps a pass, so
    dst is loaded and stored once per pass (the sum's order is fixed by the list). Nine taps
    into a new dst (a 3x3 kernel) are one pass that also adds ``init``: dst is stored once."""
    j, count = 0, taps.shape[0]
    if count == 9 and not accumulate:
        _nine(dst, n, src, rows, starts, wk, taps, init)
        return
    if not accumulate:
        dst[:n] = init
    while j < count:
        t0 = taps[j]
        a, wa = src[rows[t0], starts[t0]:], wk[t0]
        if count - j >= 6:
            t1, t2, t3, t4, t5 = taps[j + 1], taps[j + 2], taps[j + 3], taps[j + 4], taps[j + 5]
            b, wb = src[rows[t1], starts[t1]:], wk[t1]
            c, wc = src[rows[t2], starts[t2]:], wk[t2]
            d, wd = src[rows[t3], starts[t3]:], wk[t3]
            e, we = src[rows[t4], starts[t4]:], wk[t4]
            f, wf = src[rows[t5], starts[t5]:], wk[t5]
            for i in range(n):
                dst[i] += (wa * a[i] + wb * b[i] + wc * c[i]) + (wd * d[i] + we * e[i] + wf * f[i])
            j += 6
        elif count - j >= 3:
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
def _nine(dst, n, src, rows, starts, wk, taps, init):
    """``dst[:n] = init + sum of wk[t] * src[rows[t], starts[t] + i]`` over nine taps, in three
    sums of three (the ILP of three independent chains)."""
    t = taps
    a, b, c = src[rows[t[0]], starts[t[0]]:], src[rows[t[1]], starts[t[1]]:], \
        src[rows[t[2]], starts[t[2]]:]
    d, e, f = src[rows[t[3]], starts[t[3]]:], src[rows[t[4]], starts[t[4]]:], \
        src[rows[t[5]], starts[t[5]]:]
    g, h, k = src[rows[t[6]], starts[t[6]]:], src[rows[t[7]], starts[t[7]]:], \
        src[rows[t[8]], starts[t[8]]:]
    wa, wb, wc, wd, we, wf = wk[t[0]], wk[t[1]], wk[t[2]], wk[t[3]], wk[t[4]], wk[t[5]]
    wg, wh, wi = wk[t[6]], wk[t[7]], wk[t[8]]
    for i in range(n):
        dst[i] = init + ((wa * a[i] + wb * b[i] + wc * c[i]) + (wd * d[i] + we * e[i] + wf * f[i])
                         + (wg * g[i] + wh * h[i] + wi * k[i]))


@njit(inline="always")
def _unit(u, stacks, stack, n_img):
    """Unit u of the kernels: ``(channel, stack, first image, end image)``."""
    c = u // stacks
    s = u - c * stacks
    return c, s, s * stack, min(s * stack + stack, n_img)


@njit(inline="always")
def _tap_dots(g, grows, gstart, n, src, rows, starts, out):
    """``out[t] = sum of g[grows[t], gstart + i] * src[rows[t], starts[t] + i]`` over i < n, for
    every tap t (the dW of each tap), three taps a pass as :func:`_gather`; returns the sum of
    ``g[0, gstart:gstart + n]`` (the db)."""
    zero = out.dtype.type(0)
    total = zero
    g0 = g[0, gstart:]
    for i in range(n):
        total += g0[i]
    t, count = 0, out.shape[0]
    while t < count:
        a, ga = src[rows[t], starts[t]:], g[grows[t], gstart:]
        if t + 3 <= count:
            b, c = src[rows[t + 1], starts[t + 1]:], src[rows[t + 2], starts[t + 2]:]
            gb, gc = g[grows[t + 1], gstart:], g[grows[t + 2], gstart:]
            sa = sb = sc = zero
            for i in range(n):
                sa += ga[i] * a[i]
                sb += gb[i] * b[i]
                sc += gc[i] * c[i]
            out[t], out[t + 1], out[t + 2] = sa, sb, sc
            t += 3
        else:
            sa = zero
            for i in range(n):
                sa += ga[i] * a[i]
            out[t] = sa
            t += 1
    return total


@njit(inline="always")
def _copies(q, first, start, count, wc, rx, cs, negate):
    """Rows ``first..`` of q: copies of row ``rx[r]`` over ``q[., start:start + count]`` (whole
    rows of ``wc``) with the columns zeroed that a read shifted by ``cs[r]`` (``-cs[r]`` when
    ``negate``) lands on when it wraps: the last ``-d`` columns for d < 0, the first ``d`` for
    d > 0."""
    zero = q.dtype.type(0)
    for r in range(first, cs.shape[0]):
        d = -cs[r] if negate else cs[r]
        src, dst = q[rx[r], start:start + count], q[r, start:start + count]
        for i in range(count):
            dst[i] = src[i]
        lo, hi = (wc + d, wc) if d < 0 else (0, d)
        for y in range(count // wc):
            for j in range(lo, hi):
                dst[y * wc + j] = zero


@njit(inline="always")
def _pack_stack(x, n0, n1, c, sw, top, hq, lead, copy_rx, copy_cs, q):
    """The column phases of the planes x[n0:n1, c] into q's runs (rows 0..sw-1), then their
    masked copies; padding rows stay zero."""
    h, wd = x.shape[2], x.shape[3]
    count = h * (wd // sw)
    for n in range(n0, n1):
        start = lead + ((n - n0) * hq + top) * (wd // sw)
        src = x[n, c].reshape(h * wd)
        for r in range(sw):
            dst = q[r, start:start + count]
            if sw == 1:
                for i in range(count):
                    dst[i] = src[i]
            elif sw == 2:  # constant strides, which LLVM vectorises
                for i in range(count):
                    dst[i] = src[2 * i + r]
            else:
                for i in range(count):
                    dst[i] = src[sw * i + r]
        _copies(q, sw, start, count, wd // sw, copy_rx, copy_cs, False)


@njit(inline="always")
def _rows(src, sh, wc, dst, to_run, relu=False):
    """Output rows ``oh`` of dst (Ho, wc) and run rows ``oh * sh`` of src, one way or the other
    (``to_run``): one contiguous copy when sh == 1; into dst with ReLU applied when ``relu``
    (NaN kept, as :func:`fastconv.kernels.cpu.relu`)."""
    ho = dst.shape[0]
    flat = dst.reshape(ho * wc)
    step = ho if sh == 1 else 1
    for oh in range(0, ho, step):
        count = wc * (ho if sh == 1 else 1)
        a, b = src[oh * sh * wc:oh * sh * wc + count], flat[oh * wc:oh * wc + count]
        if to_run:
            for i in range(count):
                a[i] = b[i]
        else:
            _store(b, a, count, relu)


@njit(inline="always")
def _store(dst, src, count, relu):
    """dst[:count] = src[:count], ReLU applied when ``relu`` (NaN kept, as
    :func:`fastconv.kernels.cpu.relu`): the forward kernels' copy out of their runs."""
    if relu:
        zero = src.dtype.type(0)
        for i in range(count):
            v = src[i]
            dst[i] = zero if v < zero else v
    else:
        for i in range(count):
            dst[i] = src[i]


@njit(nogil=True, cache=True, fastmath={"contract"})
def flat_forward_kernel(x, w, b, sh, sw, top, hq, stack, lead, copy_rx, copy_cs, sel, off, g_cs,
                        gsel, order, starts, relu, out, u0, u1):
    """Units ``u0 <= c*S + s < u1`` (S stacks of ``stack`` images): out[n, c*m:(c+1)*m] of the
    stack's images n from x[n, c], then ReLU when ``relu``. x (N, C, H, W), w (m*C, T), b (m*C,),
    out (N, m*C, Hout, W/sw)."""
    n_img, c_in, _, wd = x.shape
    k_out, n_taps = w.shape
    m = k_out // c_in
    stacks = -(-n_img // stack)
    wc = wd // sw
    run = stack * hq * wc
    q = np.zeros((copy_rx.shape[0], 2 * lead + run), dtype=x.dtype)
    acc = np.empty(run, dtype=x.dtype)
    taps = np.arange(n_taps)
    begin = off + lead
    for u in range(u0, u1):
        c, _, n0, n1 = _unit(u, stacks, stack, n_img)
        _pack_stack(x, n0, n1, c, sw, top, hq, lead, copy_rx, copy_cs, q)
        for k in range(c * m, c * m + m):
            _gather(acc, (n1 - n0) * hq * wc, q, sel, begin, w[k], taps, False, b[k])
            for n in range(n0, n1):
                _rows(acc[(n - n0) * hq * wc:], sh, wc, out[n, k], False, relu)


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def flat_backward_kernel(dout, x, w, sh, sw, top, hq, stack, lead, copy_rx, copy_cs, sel, off,
                         g_cs, gsel, order, starts, need_dx, dx, dwp, dbp, u0, u1):
    """Units as :func:`flat_forward_kernel`: dx[n, c] (when ``need_dx``) and the stack's partial
    gradients dwp[s, k] (T,) and dbp[s, k]. dout is laid out as the output in a zeroed run g
    (the rows between kept rows zero) and masked per column shift as dx needs; the same masked
    copy zeroes the outputs whose read of x wraps, so each tap's dW is one dot product of it with
    the unmasked x phase, and each phase of dx one :func:`_gather` of the copies. "reassoc" lets LLVM
    vectorise the dot products (a fixed order per build, whatever the thread count)."""
    n_img, c_in, h, wd = x.shape
    k_out, n_taps = w.shape
    m = k_out // c_in
    stacks = -(-n_img // stack)
    wc = wd // sw
    run = stack * hq * wc
    zero = dwp.dtype.type(0)
    q = np.zeros((sw, 2 * lead + run), dtype=x.dtype)
    g = np.zeros((g_cs.shape[0], 2 * lead + run), dtype=x.dtype)
    dq = np.empty((sw, run), dtype=x.dtype)
    g_rx = np.zeros(g_cs.shape[0], dtype=np.int64)
    x_rx = copy_rx[sel]
    begin, back = off + lead, lead - off
    for u in range(u0, u1):
        c, s, n0, n1 = _unit(u, stacks, stack, n_img)
        length = (n1 - n0) * hq * wc
        _pack_stack(x, n0, n1, c, sw, top, hq, lead, copy_rx[:sw], copy_cs[:sw], q)
        for k in range(c * m, c * m + m):
            for n in range(n0, n1):
                start = lead + (n - n0) * hq * wc
                _rows(g[0, start:], sh, wc, dout[n, k], True)
                _copies(g, 1, start, hq * wc, wc, g_rx, g_cs, True)
            dbp[s, k] = _tap_dots(g, gsel, lead, length, q, x_rx, begin, dwp[s, k])
            if need_dx:
                for r in range(sw):
                    _gather(dq[r], length, g, gsel, back, w[k], order[starts[r]:starts[r + 1]],
                            k > c * m, zero)
        if need_dx:
            for n in range(n0, n1):
                dst = dx[n, c].reshape(h * wd)
                for r in range(sw):
                    src = dq[r, ((n - n0) * hq + top) * wc:]
                    if sw == 1:  # constant strides, which LLVM vectorises
                        for i in range(h * wc):
                            dst[i] = src[i]
                    elif sw == 2:
                        for i in range(h * wc):
                            dst[2 * i + r] = src[i]
                    else:
                        for i in range(h * wc):
                            dst[sw * i + r] = src[i]
