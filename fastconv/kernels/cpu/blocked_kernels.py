"""The Numba loop nests of the blocked convolution (:mod:`.blocked` describes the layout and the
passes): packing NCHW planes into phase planes of channel blocks and back, the forward tiles and
one batch share of backward.

A packed image holds, for each block ``cb`` of V channels and each stride phase ``(py, px)``
(``sh x sw`` of them; one at stride 1), a plane of ``hd x wd`` pixels of V lanes: padded pixel
``(Y, X)`` of channel ``c`` is at ``((((cb*sh + Y%sh)*sw + X%sw)*hd + Y//sh)*wd + X//sw)*V +
c%V``. A strided tap then reads its phase plane at unit stride, so every pass runs the same
unit-stride kernels.
"""
import numpy as np
from numba import njit

from .microkernel import kernel, segment_kernel, target, transpose


def _tile():
    """``(R, NB)`` of the forward tile for the target: R output pixels x NB channel blocks,
    ``R*NB`` accumulators plus ``NB`` weight vectors and a broadcast within the registers. With
    AVX-512 the tall tiles run about as fast as each other, and 24x1 pads no output channels to
    a multiple of 2 blocks; with AVX2 6x2 beats 12x1 (``benchmarks/results-2026-12-thresholds.md``;
    ``benchmarks/passes.py`` measures the passes)."""
    return (24, 1) if target()[1] >= 32 else (6, 2)


ROWS, NVEC = _tile()
#: Forward and dx: rows are pixels (V apart in a), steps the V channels of a block (4 steps
#: unrolled), b the weights' V-wide rows.
_FORWARD = kernel(ROWS, NVEC, "lanes", 1, "lanes", 4)
#: Forward and dx as output rows: SEGMENTS runs of SEG_LEN pixels of output rows, wherever they
#: start (:func:`_tiles` takes them where the plain tiles would compute more outputs, which run
#: on through the padding columns between rows: 7x7 outputs in a 9-wide plane are 49 of 72).
SEGMENTS, SEG_LEN = (4, 7) if target()[1] >= 32 else (2, 3)
_SEGMENT_FORWARD = segment_kernel(SEGMENTS, SEG_LEN, NVEC, "lanes", 1, "lanes", 4)
#: dW: rows are the V channels of a pixel, steps the pixels of a row (4 unrolled).
_WEIGHTS = kernel("lanes", 1, 1, "lanes", "lanes", 4)
#: dW at unit stride and dilation: rows run on through the next pixels' channels, which are the
#: next taps of the kernel row (tap fx + 1 is one pixel on), so a tile covers WIDE_ROWS of the
#: FW*V (tap, channel) pairs of a kernel row, for WIDE_VEC blocks of output channels (layers
#: whose output blocks come in whole groups of WIDE_VEC): each broadcast of x serves WIDE_VEC
#: FMAs, where the V x 1 tile of the general case needs 9 loads per 8 FMAs with AVX2 (the dW
#: rates beside SGEMM: ``benchmarks/results-2026-12-thresholds.md``, ``benchmarks/passes.py``).
WIDE_ROWS, WIDE_VEC = (12, 2) if target()[1] >= 32 else (6, 2)
_WEIGHTS_WIDE = kernel(WIDE_ROWS, WIDE_VEC, 1, "lanes", "lanes", 4)


@njit(nogil=True, cache=True, inline="always")
def _offsets(p, w, v, lay, base, offs):
    """offs[i] = base + the packed offset (lane 0, block 0) of pixel ``p + i`` of a plane of
    width w in the layout ``lay`` = (sh, sw, phase stride, row width in pixels, oy, ox): pixel
    (y, x) sits at padded (y + oy, x + ox). (Layouts are arrays: literal arguments would
    compile a kernel per literal.)"""
    sh, sw, plane, wd, oy, ox = lay[0], lay[1], lay[2], lay[3], lay[4], lay[5]
    y, x = p // w, p % w
    yy, xx = y + oy, x + ox
    ym, yd, xm, xd, xm0, xd0 = 0, yy, 0, xx, 0, ox
    if sh != 1:  # integer divisions cost as much as the rest of the offset
        ym, yd = yy % sh, yy // sh
    if sw != 1:
        xm, xd, xm0, xd0 = xx % sw, xx // sw, ox % sw, ox // sw
    for i in range(offs.shape[0]):
        offs[i] = base + (ym * sw + xm) * plane + (yd * wd + xd) * v
        x += 1
        xm += 1
        if xm == sw:
            xm, xd = 0, xd + 1
        if x == w:
            x, xm, xd = 0, xm0, xd0
            ym += 1
            if ym == sh:
                ym, yd = 0, yd + 1


@njit(nogil=True, cache=True)
def _pack(src, dst, v, lay):
    """src (C, H, W) contiguous -> dst flat in the layout ``lay`` (see :func:`_offsets`; blocks
    of V channels ``sh*sw`` phase planes apart); lanes past C zero, the rest of dst left as it
    is (zero). V pixels at a time through :func:`~.microkernel.transpose`, the last V of a
    plane again; planes of fewer than V pixels value by value."""
    c_in, h, w = src.shape
    size = h * w
    block = lay[0] * lay[1] * lay[2]
    offs = np.empty(max(v, size), np.int64)
    if size < v:
        _offsets(np.int64(0), w, v, lay, np.int64(0), offs[:size])
        for c in range(c_in):
            for i in range(size):
                dst[(c // v) * block + offs[i] + c % v] = src[c, i // w, i % w]
        return
    flat = src.reshape(c_in * size)
    aoffs, coffs = np.empty(v, np.int64), offs[:v]
    zero = np.zeros(v, dtype=dst.dtype)
    for cb in range(-(-c_in // v)):
        p0 = 0
        while p0 < size:
            p = min(p0, size - v)
            _offsets(p, w, v, lay, cb * block, coffs)
            for i in range(v):  # row i: channel cb*v + i, pixels p..p+v-1 of its plane
                aoffs[i] = (cb * v + i) * size + p
            transpose(flat, aoffs, c_in - cb * v, dst, coffs, v, zero, 0)
            p0 += v


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _sums(src, sums):
    """sums[c] = the sum of plane c of src (C, H, W) contiguous, from a typed zero (for db;
    "reassoc" lets LLVM vectorise it)."""
    size = src.shape[1] * src.shape[2]
    flat = src.reshape(src.shape[0] * size)
    for c in range(src.shape[0]):
        plane = flat[c * size:(c + 1) * size]
        total = sums.dtype.type(0)
        for i in range(size):
            total += plane[i]
        sums[c] = total


@njit(nogil=True, cache=True)
def _unpack(src, block, v, lay, bias, dst):
    """src flat -> dst (K, H, W) contiguous plus bias[k]: dst[k, y, x] is the value of pixel
    (y, x) in the layout ``lay`` of src (see :func:`_offsets`), ``block`` values a block of V
    channels; V pixels at a time as in :func:`_pack`."""
    k_out, h, w = dst.shape
    size = h * w
    offs = np.empty(max(v, size), np.int64)
    if size < v:
        _offsets(np.int64(0), w, v, lay, np.int64(0), offs[:size])
        for k in range(k_out):
            for i in range(size):
                dst[k, i // w, i % w] = src[(k // v) * block + offs[i] + k % v] + bias[k]
        return
    flat = dst.reshape(k_out * size)
    aoffs, coffs = offs[:v], np.empty(v, np.int64)
    for kb in range(-(-k_out // v)):
        p0 = 0
        while p0 < size:
            p = min(p0, size - v)
            _offsets(p, w, v, lay, kb * block, aoffs)
            for i in range(v):  # row i: pixel p + i; column j: channel kb*v + j
                coffs[i] = (kb * v + i) * size + p
            transpose(src, aoffs, v, flat, coffs, k_out - kb * v, bias, kb * v)
            p0 += v


@njit(nogil=True, cache=True)
def _segments(width, cols, length, v):
    """The starts (``q*v``) of SEG_LEN-pixel segments covering each of the output rows (``cols``
    outputs every ``width`` pixels, ``length`` from the first to the last), each row's last
    segment ending at its last output; empty where the plain tiles over the run of ``length``
    compute no more outputs than the segment tiles would."""
    rows = (length - cols) // width + 1
    per_row = -(-cols // SEG_LEN)
    count = rows * per_row
    plain = max(-(-length // ROWS), 1) * ROWS
    if cols < SEG_LEN or count < SEGMENTS or \
            -(-count // SEGMENTS) * SEGMENTS * SEG_LEN >= plain:
        return np.empty(0, dtype=np.int64)
    starts = np.empty(count, dtype=np.int64)
    for y in range(rows):
        for i in range(per_row):
            starts[y * per_row + i] = (y * width + min(i * SEG_LEN, cols - SEG_LEN)) * v
    return starts


@njit(nogil=True, cache=True)
def _tiles(src, wts, out, taps, kblocks, plane_o, width, cols, length, v, rem, block_taps):
    """All tiles of one image: out (blocked, ``plane_o`` values a channel block) from src
    (packed) and wts ((K/V, taps, V, V) flat). The outputs: ``cols`` a row, rows ``width``
    apart, ``length`` from the first to the last. The ``block_taps`` taps of the last input
    block, which holds ``rem`` channels, take ``rem`` steps in a second call that adds to the
    first's result (no work on its zero lanes). Tiles may compute an output twice (a last tile
    starts back to end at the run's end; segments overlap at the ends of rows): each output is
    a function of its position, so the stores agree, but adding twice would not, so the
    segment tiles serve only layers that make one call (one of the two parts empty)."""
    ntaps = taps.shape[0]
    block_w = ntaps * v * v
    full = ntaps if rem == v else ntaps - block_taps
    last = taps[full:]
    one_call = full == ntaps or full == 0
    starts = _segments(width, cols, length, v) if one_call else np.empty(0, np.int64)
    count = starts.shape[0]
    for kb in range(0, kblocks, NVEC):
        q0 = 0
        while q0 < (count if count else length):
            if count:
                q = min(q0, count - SEGMENTS)
            else:
                q = q0 if q0 + ROWS <= length or length < ROWS else length - ROWS
            for part in range(2):  # one call site a kernel: each is inlined once
                steps = full if part == 0 else ntaps - full
                if steps == 0:
                    continue
                a_taps = taps if part == 0 else last
                w_off = kb * block_w + part * full * v * v
                if count:
                    _SEGMENT_FORWARD(src, 0, a_taps, steps, v if part == 0 else rem, wts, w_off,
                                     v * v, block_w, out, kb * plane_o, v, plane_o, part * full,
                                     starts, q)
                else:
                    _FORWARD(src, q * v, a_taps, steps, v if part == 0 else rem, wts, w_off,
                             v * v, block_w, out, kb * plane_o + q * v, v, plane_o, part * full)
            q0 += SEGMENTS if count else ROWS


@njit(nogil=True, cache=True)
def _epilogue(out, res, n, relu):
    """out += res[n] (when res has images), then max(out, 0) with ``relu``: image n, right
    after its store, while it is still in cache (NaN stays NaN, as in :func:`fastconv.relu`)."""
    flat = out.reshape(out.size)
    if res.shape[0]:
        other = res[n].reshape(flat.size)
        for i in range(flat.shape[0]):
            flat[i] += other[i]
    if relu:
        for i in range(flat.shape[0]):
            if flat[i] < 0:
                flat[i] = 0


@njit(nogil=True, cache=True)
def _forward_images(x, s0, s1, wts, bias, out, xb, ob, taps, geo, lay_x, lay_o, res, relu):
    """Images [s0, s1) of x -> out (NCHW, bias added), then ``res`` (N, K, Hout, Wout) added
    where it has images and ReLU applied with ``relu`` (:func:`_epilogue`). ``geo``: (v,
    kblocks, plane_o, length) and the layouts of x and out, of
    :meth:`.blocked.Plan.forward_geometry`."""
    v, kblocks, plane_o, length = geo[0], geo[1], geo[2], geo[3]
    c_in = x.shape[1]
    cblocks = -(-c_in // v)
    for n in range(s0, s1):
        _pack(x[n], xb, v, lay_x)
        _tiles(xb, wts, ob, taps, kblocks, plane_o * v, lay_o[3], out.shape[3], length, v,
               c_in - (cblocks - 1) * v, taps.shape[0] // cblocks)
        _unpack(ob, plane_o * v, v, lay_o, bias, out[n])
        if relu or res.shape[0]:
            _epilogue(out[n], res, n, relu)


@njit(nogil=True, cache=True, inline="always")
def dx_phase(dxb, ph, phase_size, dx_tap_start):
    """``(phase ph of dxb, its first tap, its end tap)`` for the dx tiles; a phase that no tap
    reaches is zeroed here (its pixels get no gradient), and its taps are empty."""
    out = dxb[ph * phase_size:(ph + 1) * phase_size]
    t0, t1 = dx_tap_start[ph], dx_tap_start[ph + 1]
    if t0 == t1:
        out[:] = 0
    return out, t0, t1


@njit(nogil=True, cache=True)
def _backward_images(dout, x, s0, s1, need_dx, dx, xb, gb, dxb, dwb, part, db, taps, rows,
                     wt, dx_taps, dx_tap_start, dx_w_start, geo, lay_x, lay_g, lay_dx):
    """Images [s0, s1): dwb (K/V, C/V, FH, FW, V in, V out) += each image's dW (summed from
    zero in ``part``, scratch of dwb's size), db += each image's db, and, with ``need_dx``, dx
    from the forward tiles on the packed dout, phase by phase: dx pixel (y, x) is in phase
    ``(y % sh, x % sw)``, at ``(y // sh, x // sw)`` of its plane, from the taps
    ``dx_taps[dx_tap_start[i]:dx_tap_start[i + 1]]`` and the weights ``wt[dx_w_start[i]:...]``
    of phase i. ``geo``: :meth:`.blocked.Plan.backward_geometry`, with the layouts of x, dout
    and dx."""
    v, hg, wg, gy, gx, fh, fw, cpad, plane_dx, length_dx, wide = geo[0], geo[1], geo[2], \
        geo[3], geo[4], geo[5], geo[6], geo[7], geo[8], geo[9], geo[10]
    wq = geo[11]
    phases = lay_dx[0] * lay_dx[1]
    c_in, k_out = x.shape[1], dout.shape[1]
    ho, wo = dout.shape[2], dout.shape[3]
    cblocks, kblocks = -(-c_in // v), -(-k_out // v)
    plane_g = hg * wg * v
    gsums = np.empty(k_out, dtype=x.dtype)
    zero = np.zeros(c_in, dtype=x.dtype)
    tile = v * v
    phase_size = cpad * plane_dx * v
    for n in range(s0, s1):
        _pack(x[n], xb, v, lay_x)
        _pack(dout[n], gb, v, lay_g)
        _sums(dout[n], gsums)
        for k in range(k_out):
            db[k] += gsums[k]
        for kb in range(kblocks):
            g_off = kb * plane_g + (gy * wg + gx) * v
            for cb in range(cblocks):
                if wide != 0 and kb % WIDE_VEC != 0:
                    continue
                if wide != 0:  # (tap, channel) rows of each kernel row, the last tile overlapping
                    for fy in range(fh):
                        a0 = taps[(cb * fh + fy) * fw]
                        c0 = ((kb * cblocks + cb) * fh + fy) * fw * tile
                        r0 = 0
                        while r0 < fw * v:
                            r = min(r0, fw * v - WIDE_ROWS)
                            _WEIGHTS_WIDE(xb, a0 + r, rows, ho, wo, gb, g_off, wg * v, plane_g,
                                          part, c0 + r * v, v, cblocks * fh * fw * tile, 0)
                            r0 += WIDE_ROWS
                    continue
                for t in range(fh * fw):
                    at = (kb * cblocks + cb) * fh * fw + t
                    _WEIGHTS(xb, taps[cb * fh * fw + t], rows, ho, wo, gb, g_off, wg * v, 0,
                             part, at * tile, v, 0, 0)
        for i in range(part.shape[0]):
            dwb[i] += part[i]
        if not need_dx:
            continue
        for ph in range(phases):
            out, t0, t1 = dx_phase(dxb, ph, phase_size, dx_tap_start)
            if t0 < t1:
                _tiles(gb, wt[dx_w_start[ph]:dx_w_start[ph + 1]], out, dx_taps[t0:t1], cpad,
                       plane_dx * v, wg, wq, length_dx, v, k_out - (kblocks - 1) * v,
                       (t1 - t0) // kblocks)
        _unpack(dxb, plane_dx * v, v, lay_dx, zero, dx[n])
