"""The depthwise micro-kernels, emitted as LLVM IR as :mod:`.microkernel` does: a depthwise
layer multiplies each channel by its own filter, so a vector of V channels of one pixel meets a
vector of V weights lane by lane (no broadcast), and the accumulators hold V channels each.

- :func:`depthwise_kernel`: ``rows`` output pixels of a block, summed over the taps (forward, and
  the input gradient as a correlation of dout with each stride phase's taps).
- :func:`depthwise_weights_kernel`: ``taps`` taps' weight gradients of a block, summed over the
  output pixels (x at the tap's offset times dout, pixel by pixel).

Both keep their accumulators in an alloca that SROA promotes to registers, every access a whole
vector at a constant index (see :mod:`.microkernel` for why a Numba loop cannot).
"""
import functools

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .microkernel import _I32, _I64, _data, _fma, _typed, _vector, _vector_ptr


class _Tile:
    """What both tiles emit alike: the data pointers of the arrays ``a``, ``aoffs``, ``b``, ``c``
    (argument positions ``where``), ``count`` vector accumulators set to zero (an alloca that
    SROA promotes to registers), one FMA into an accumulator, and the final stores."""

    def __init__(self, context, builder, sig, args, where, count):
        self.builder = builder
        self.vecty, self.width, self.align = _vector(context, sig.args[0])
        self.pa, self.po, self.pb, self.pc = (_data(context, builder, sig.args[i], args[i])
                                              for i in where)
        acc = cgutils.alloca_once(builder, ir.ArrayType(self.vecty, count), name="acc")
        self.slots = [builder.gep(acc, [_I32(0), _I32(i)]) for i in range(count)]
        for slot in self.slots:
            builder.store(ir.Constant(self.vecty, None), slot)
        self._fma = _fma(builder, self.vecty, sig.args[0])

    def load(self, base, index):
        """The vector at ``base[index]``."""
        return self.builder.load(_vector_ptr(self.builder, base, index, self.vecty),
                                 align=self.align)

    def fma(self, slot, x, y):
        """``slot += x * y`` lane by lane, one fused multiply-add."""
        b = self.builder
        b.store(b.call(self._fma, [x, y, b.load(slot)]), slot)

    def store(self, c_off):
        """Accumulator i to ``c[c_off + i*V : ... + V]``."""
        b = self.builder
        for i, slot in enumerate(self.slots):
            ptr = _vector_ptr(b, self.pc, b.add(c_off, _I64(i * self.width)), self.vecty)
            b.store(b.load(slot), ptr, align=self.align)


def _emit_depthwise(context, builder, sig, args, rows):
    """The IR of :func:`depthwise_kernel`'s tile: per tap one vector load of b and, per row, one
    of a and an FMA."""
    _, a_off, _, ntaps, _, b_off, _, c_off = args
    tile = _Tile(context, builder, sig, args, (0, 2, 4, 6), rows)
    width = tile.width
    with cgutils.for_range(builder, ntaps) as loop:
        t = loop.index
        pa_t = builder.gep(tile.pa, [builder.add(a_off, builder.load(builder.gep(tile.po, [t])))])
        tap = tile.load(tile.pb, builder.add(b_off, builder.mul(t, _I64(width))))
        for r, slot in enumerate(tile.slots):
            tile.fma(slot, tile.load(pa_t, _I64(r * width)), tap)
    tile.store(c_off)
    return context.get_dummy_value()


@functools.lru_cache(maxsize=None)
def depthwise_kernel(rows):
    """The intrinsic of a depthwise tile of ``rows`` pixels x one vector of V channels::

        kern(a, a_off, aoffs, ntaps, b, b_off, c, c_off)

    computes, for ``r < rows``, ``c[c_off + r*V : ... + V] = sum over t < ntaps of
    a[a_off + aoffs[t] + r*V : ... + V] * b[b_off + t*V : ... + V]`` (lane by lane, one FMA a
    tap in tap order, from zero): pixels V apart in a and c, each tap's V weights a vector.
    ``a``, ``b``, ``c`` flat arrays of one float dtype, ``aoffs`` int64."""
    if rows < 1:
        raise ValueError(f"depthwise_kernel: {rows} rows must be positive")

    @intrinsic
    def tile(typingctx, a, a_off, aoffs, ntaps, b, b_off, c, c_off):
        if not _typed(a, b, c, offsets=(aoffs,)):
            return None
        i = types.int64
        sig = types.void(a, i, aoffs, i, b, i, c, i)

        def codegen(context, builder, signature, args):
            return _emit_depthwise(context, builder, signature, args, rows)
        return sig, codegen
    return tile


def _emit_weights(context, builder, sig, args, taps):
    """The IR of :func:`depthwise_weights_kernel`'s tile: the taps' pointers made once a row;
    per pixel one vector load of b and, per tap, one of a and an FMA."""
    _, a_off, _, _, b_off, nrows, ncols, a_row, b_row, _, c_off = args
    tile = _Tile(context, builder, sig, args, (0, 2, 3, 9), taps)
    starts = [builder.add(a_off, builder.load(builder.gep(tile.po, [_I64(t)])))
              for t in range(taps)]
    with cgutils.for_range(builder, nrows) as rloop:
        r = rloop.index
        pa_r = [builder.gep(tile.pa, [builder.add(s, builder.mul(r, a_row))]) for s in starts]
        pb_r = builder.gep(tile.pb, [builder.add(b_off, builder.mul(r, b_row))])
        with cgutils.for_range(builder, ncols) as lloop:
            pixel = builder.mul(lloop.index, _I64(tile.width))
            g = tile.load(pb_r, pixel)
            for p, slot in zip(pa_r, tile.slots):
                tile.fma(slot, tile.load(p, pixel), g)
    tile.store(c_off)
    return context.get_dummy_value()


@functools.lru_cache(maxsize=None)
def depthwise_weights_kernel(taps):
    """The intrinsic of the weight gradients of ``taps`` taps x one vector of V channels::

        kern(a, a_off, aoffs, b, b_off, nrows, ncols, a_row, b_row, c, c_off)

    computes, for ``t < taps``, ``c[c_off + t*V : ... + V] = sum over r < nrows, l < ncols of
    a[a_off + aoffs[t] + r*a_row + l*V : ... + V] * b[b_off + r*b_row + l*V : ... + V]`` (lane
    by lane, one FMA a pixel in row-major order, from zero): a block's packed x at each tap's
    offset times its packed dout, over the output rows (``a_row`` and ``b_row`` apart: the two
    layouts' row widths differ). ``a``, ``b``, ``c`` flat arrays of one float dtype, ``aoffs``
    int64 with at least ``taps`` values."""
    if taps < 1:
        raise ValueError(f"depthwise_weights_kernel: {taps} taps must be positive")

    @intrinsic
    def tile(typingctx, a, a_off, aoffs, b, b_off, nrows, ncols, a_row, b_row, c, c_off):
        if not _typed(a, b, c, offsets=(aoffs,)):
            return None
        i = types.int64
        sig = types.void(a, i, aoffs, b, i, i, i, i, i, c, i)

        def codegen(context, builder, signature, args):
            return _emit_weights(context, builder, signature, args, taps)
        return sig, codegen
    return tile
