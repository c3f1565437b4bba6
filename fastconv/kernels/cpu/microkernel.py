"""The micro-kernel generator: register-blocked outer-product accumulation, emitted as LLVM IR.

Plain Numba loops keep array accumulators in memory (Numba has no ``noalias``), so a tile of
outputs cannot live in registers. :func:`kernel` returns an ``@intrinsic`` that Numba inlines
into an ``@njit`` loop nest as hand-built IR, for a tile of ``R`` rows by ``NB`` vectors of ``V``
lanes (``V`` from the target, see :func:`target`), with the compile-time strides ``a_rs``,
``a_ls`` and ``b_ls``. Called as::

    kern(a, a_off, aoffs, ntaps, nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs, c_ns, add)

(``a``, ``b``, ``c`` flat contiguous arrays of one float dtype, ``aoffs`` an int64 array, the
rest integers), it computes, for ``r < R`` and ``j < NB``::

    acc[r, j] = sum over t < ntaps, l < nsteps of
                broadcast(a[a_off + aoffs[t] + r*a_rs + l*a_ls])
                * b[b_off + t*b_ts + l*b_ls + j*b_ns : ... + V]
    c[c_off + r*c_rs + j*c_ns : ... + V]  = acc[r, j]   (add == 0)
                                         += acc[r, j]   (add != 0)

The terms are added in the order (t, l), one fused multiply-add each, starting from zero. The
emitted instructions, in order:

- ``alloca [R*NB x <V x T>]`` in the entry block: the accumulators. Every access is a whole-vector
  ``load``/``store`` at a constant index, so LLVM's SROA/mem2reg promote the array to R*NB vector
  registers (nothing goes through memory inside the loops).
- ``store zeroinitializer`` into each accumulator.
- Two counted loops (``t`` over taps, ``l`` over steps, ``unroll`` steps per iteration and the
  remaining steps one at a time), and per step: ``load <V x T>`` (unaligned) of the NB vectors
  of ``b``; for each r, a scalar ``load`` of ``a``,
  ``insertelement`` + ``shufflevector`` with a zero mask (broadcast to V lanes; x86 folds it into
  the FMA's memory operand as ``{1toV}`` on AVX-512, ``vbroadcastss`` on AVX2), then per j
  ``call <V x T> @llvm.fma.vVfNN(broadcast, b_j, acc[r, j])``.
- After the loops, per (r, j): ``load`` c's vector and ``fadd`` (add != 0), then ``store``.

Every address inside a step is the step's base pointer plus a constant (the strides are
compile-time), so x86 folds them into the instructions' displacements: with the strides as
runtime values LLVM kept a pointer per row, ran out of registers and spilled accumulators, a
several-fold slowdown (``benchmarks/results-2026-12-thresholds.md``).

Convolution passes use it with different strides (see :mod:`.blocked`): forward has r = output
pixels, l = input channels of a block, t = (channel block, tap); the weight gradient has r =
input channels of a pixel, l = output pixels of a row, t = rows.

The tile shape must fit the target: :func:`target` reads the vector width from the assembly
that Numba's own target machine emits for a probe (so ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``
are respected, e.g. ``NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=`` gives 256-bit ymm code), and
the register count from its ISA (32 vector registers with AVX-512, 16 with AVX/AVX2). Numba's
cache keys a compiled function by its own file and the target (CPU name and features), not
by this file: after a change here, touch the files whose kernels call these
(``blocked_kernels.py``).
"""
import functools

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I64 = ir.IntType(64)
_I32 = ir.IntType(32)


@functools.lru_cache(maxsize=None)
def target():
    """``(vector bytes, vector registers)`` of the CPU that Numba compiles for.

    The width comes from assembling a probe with Numba's own target machine (CPU name and
    feature string as Numba uses them): a 64-byte vector add that stays one ``zmm`` instruction
    means AVX-512, ``ymm`` 32 bytes, else 16.
    """
    from numba.core.registry import cpu_target
    tm = cpu_target.target_context.codegen()._tm
    module = ir.Module(name="fastconv_probe")
    vec = ir.VectorType(ir.FloatType(), 16)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [vec.as_pointer()] * 2),
                     name="probe")
    builder = ir.IRBuilder(fn.append_basic_block())
    a, b = fn.args
    builder.store(builder.fadd(builder.load(a), builder.load(b)), b)
    builder.ret_void()
    parsed = llvm_binding.parse_assembly(str(module))
    asm = tm.emit_assembly(parsed)
    if "zmm" in asm:
        return 64, 32
    if "ymm" in asm:
        return 32, 16
    return 16, 16


def lanes(dtype):
    """Vector lanes of ``dtype`` on the target (16 float32 with AVX-512, 8 with AVX2)."""
    return target()[0] // np.dtype(dtype).itemsize


def _data(context, builder, arrty, value):
    """The data pointer of an array argument."""
    return cgutils.create_struct_proxy(arrty)(context, builder, value=value).data


def _vector_ptr(builder, base, index, vecty):
    """``(<V x T>*) &base[index]``."""
    return builder.bitcast(builder.gep(base, [index]), vecty.as_pointer())


def _stride(spec, width):
    """A compile-time stride: an int, ``"lanes"`` (the vector width) or ``("lanes", m)``."""
    if spec == "lanes":
        return width
    if isinstance(spec, tuple):
        return spec[1] * width
    return spec


def _vector(context, arrty):
    """``(vector type, lanes, alignment)`` of the target for the dtype of the array type
    ``arrty`` (unaligned vectors: element alignment only)."""
    width = lanes(np.float32 if arrty.dtype == types.float32 else np.float64)
    return ir.VectorType(context.get_data_type(arrty.dtype), width), width, \
        arrty.dtype.bitwidth // 8


def _fma(builder, vecty, arrty):
    """The ``llvm.fma`` intrinsic of ``vecty`` (``llvm.fma.v16f32`` etc.)."""
    suffix = f"v{vecty.count}{'f32' if arrty.dtype == types.float32 else 'f64'}"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vecty, [vecty] * 3),
                                          f"llvm.fma.{suffix}")


def _relu(builder, value, relu):
    """``value`` where the integer ``relu`` is 0, else max(value, 0) lane by lane as a select (an
    ``olt`` compare is false for NaN, which stays)."""
    zero = ir.Constant(value.type, None)
    clamped = builder.select(builder.fcmp_ordered("<", value, zero), zero, value)
    return builder.select(builder.icmp_signed("!=", relu, ir.Constant(relu.type, 0)), clamped,
                          value)


def _typed(*arrays, offsets=()):
    """Whether an intrinsic's arguments type-check: ``arrays`` of one float dtype (float32 or
    float64), ``offsets`` int64 arrays."""
    return all(isinstance(x, types.Array) and x.dtype in (types.float32, types.float64)
               for x in arrays) and len({x.dtype for x in arrays}) == 1 and \
        all(isinstance(x, types.Array) and x.dtype == types.int64 for x in offsets)


def _emit(context, builder, sig, args, shape):
    """The IR of one call; see the module docstring for what each instruction does. With
    ``seg_len`` (an int), the rows are ``rows // seg_len`` segments of ``seg_len`` rows,
    segment i starting ``seg[s0 + i]`` on in a and in c (:func:`segment_kernel`)."""
    rows, nvec, a_rs, a_ls, b_ls, unroll, seg_len = shape
    a, a_off, aoffs, ntaps, nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs, c_ns, add = args[:14]
    arrty = sig.args[0]
    vecty, width, align = _vector(context, arrty)
    rows, a_rs, a_ls, b_ls, unroll = (_stride(v, width) for v in (rows, a_rs, a_ls, b_ls, unroll))
    pa, pb, pc = (_data(context, builder, sig.args[i], v) for i, v in ((0, a), (5, b), (9, c)))
    po = _data(context, builder, sig.args[2], aoffs)
    if seg_len:  # each segment's start, loaded once: a pointer per segment in the loops
        ps = _data(context, builder, sig.args[14], args[14])
        starts = [builder.load(builder.gep(ps, [builder.add(args[15], _I64(i))]))
                  for i in range(rows // seg_len)]
    else:
        starts, seg_len = [_I64(0)], rows
    acc = cgutils.alloca_once(builder, ir.ArrayType(vecty, rows * nvec), name="acc")
    slots = [builder.gep(acc, [_I32(0), _I32(i)]) for i in range(rows * nvec)]
    zero = ir.Constant(vecty, None)
    for s in slots:
        builder.store(zero, s)
    fma = _fma(builder, vecty, arrty)
    mask = ir.Constant(ir.VectorType(_I32, width), None)
    undef = ir.Constant(vecty, ir.Undefined)

    def steps(pa_l, pb_l, count):
        """``count`` steps from a's (one a segment) and b's pointers, every address a constant
        offset."""
        for u in range(count):
            bvec = [builder.load(_vector_ptr(builder, pb_l[j], _I64(u * b_ls), vecty),
                                 align=align) for j in range(nvec)]
            for r in range(rows):
                scalar = builder.load(builder.gep(pa_l[r // seg_len],
                                                  [_I64(u * a_ls + (r % seg_len) * a_rs)]))
                splat = builder.shuffle_vector(builder.insert_element(undef, scalar, _I32(0)),
                                               undef, mask)
                for j in range(nvec):
                    slot = slots[r * nvec + j]
                    builder.store(builder.call(fma, [splat, bvec[j], builder.load(slot)]), slot)

    full = builder.sdiv(nsteps, _I64(unroll))
    with cgutils.for_range(builder, ntaps) as tloop:
        t = tloop.index
        tap = builder.add(a_off, builder.load(builder.gep(po, [t])))
        pa_t = [builder.gep(pa, [builder.add(tap, start)]) for start in starts]
        b_t = builder.add(b_off, builder.mul(t, b_ts))
        pb_t = [builder.gep(pb, [builder.add(b_t, builder.mul(_I64(j), b_ns))])
                for j in range(nvec)]
        with cgutils.for_range(builder, full) as lloop:  # unroll steps at a time
            step = builder.mul(lloop.index, _I64(unroll))
            steps([builder.gep(p, [builder.mul(step, _I64(a_ls))]) for p in pa_t],
                  [builder.gep(p, [builder.mul(step, _I64(b_ls))]) for p in pb_t], unroll)
        if unroll > 1:
            with cgutils.for_range(builder, builder.sub(nsteps, builder.mul(
                    full, _I64(unroll)))) as rloop:  # the remaining steps one at a time
                step = builder.add(builder.mul(full, _I64(unroll)), rloop.index)
                steps([builder.gep(p, [builder.mul(step, _I64(a_ls))]) for p in pa_t],
                      [builder.gep(p, [builder.mul(step, _I64(b_ls))]) for p in pb_t], 1)
    is_add = builder.icmp_signed("!=", add, ir.Constant(add.type, 0))
    with builder.if_else(is_add) as (then, otherwise):
        for branch, adding in ((then, True), (otherwise, False)):
            with branch:
                for r in range(rows):
                    for j in range(nvec):
                        row = builder.add(starts[r // seg_len], builder.mul(
                            _I64(r % seg_len), c_rs))
                        ptr = _vector_ptr(builder, pc, builder.add(c_off, builder.add(
                            row, builder.mul(_I64(j), c_ns))), vecty)
                        value = builder.load(slots[r * nvec + j])
                        if adding:
                            value = builder.fadd(builder.load(ptr, align=align), value)
                        builder.store(value, ptr, align=align)
    return context.get_dummy_value()


@functools.lru_cache(maxsize=None)
def kernel(rows, nvec, a_rs, a_ls, b_ls, unroll=1):
    """The intrinsic for a tile of ``rows`` x ``nvec`` vectors with the compile-time strides
    ``a_rs`` (between rows in a), ``a_ls`` and ``b_ls`` (between steps in a and b), the steps
    unrolled ``unroll`` at a time (see the module docstring). Each of these is an int,
    ``"lanes"`` (the dtype's vector width) or ``("lanes", m)``; one intrinsic serves float32
    and float64 arrays."""
    if nvec < 1 or (isinstance(rows, int) and rows < 1):
        raise ValueError(f"kernel: tile {rows} x {nvec} must be positive")
    shape = (rows, nvec, a_rs, a_ls, b_ls, unroll, None)

    @intrinsic
    def tile(typingctx, a, a_off, aoffs, ntaps, nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs,
             c_ns, add):
        if not _typed(a, b, c, offsets=(aoffs,)):
            return None
        i = types.int64
        sig = types.void(a, i, aoffs, i, i, b, i, i, i, c, i, i, i, i)

        def codegen(context, builder, signature, args):
            return _emit(context, builder, signature, args, shape)
        return sig, codegen
    return tile


@functools.lru_cache(maxsize=None)
def segment_kernel(segments, length, nvec, a_rs, a_ls, b_ls, unroll=1):
    """:func:`kernel` for a tile of ``segments`` runs of ``length`` rows each, wherever they
    start: called with two more arguments, ``seg`` (int64) and ``s0``, row ``r`` of segment
    ``i`` is at ``seg[s0 + i] + r*a_rs`` past a's step base and at ``seg[s0 + i] + r*c_rs``
    past ``c_off`` in c. A tile of output rows of an image (or of several) then covers only
    real outputs, where :func:`kernel`'s tile runs on through the padding between rows. Each
    segment keeps one pointer in the loops; the addresses within a segment are constant
    offsets, as in :func:`kernel`."""
    if min(segments, length, nvec) < 1:
        raise ValueError(f"segment_kernel: tile {segments} x {length} x {nvec} must be positive")
    shape = (segments * length, nvec, a_rs, a_ls, b_ls, unroll, length)

    @intrinsic
    def tile(typingctx, a, a_off, aoffs, ntaps, nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs,
             c_ns, add, seg, s0):
        if not _typed(a, b, c, offsets=(aoffs, seg)):
            return None
        i = types.int64
        sig = types.void(a, i, aoffs, i, i, b, i, i, i, c, i, i, i, i, seg, i)

        def codegen(context, builder, signature, args):
            return _emit(context, builder, signature, args, shape)
        return sig, codegen
    return tile


def _emit_move(context, builder, sig, args, window):
    """The IR of :func:`move` (``window`` 1) and :func:`move_max` (2): per pixel a vector load
    and a vector fadd of the bias, ReLU as a select (an ``olt`` compare is false for NaN, which
    stays); over a 2x2 window the columns' maxima, then theirs, each a select that keeps the
    first operand where it is not less than the second or is NaN; a vector store."""
    if window == 1:
        a, a_off, c, c_off, bias, b_off, relu = args
        a_row = None
    else:
        a, a_off, a_row, c, c_off, bias, b_off, relu = args
    arrty = sig.args[0]
    vecty, width, align = _vector(context, arrty)
    pa = _data(context, builder, arrty, a)
    pc, pb = (_data(context, builder, sig.args[len(args) - 5 + i], v)
              for i, v in ((0, c), (2, bias)))
    shift = builder.load(_vector_ptr(builder, pb, b_off, vecty), align=align)

    def pixel(offset):
        return _relu(builder, builder.fadd(builder.load(_vector_ptr(
            builder, pa, offset, vecty), align=align), shift), relu)

    def first_max(t, u):
        keep = builder.or_(builder.fcmp_ordered(">=", t, u), builder.fcmp_unordered("uno", t, t))
        return builder.select(keep, t, u)

    if window == 1:
        value = pixel(a_off)
    else:
        step = _I64(width)
        below = builder.add(a_off, a_row)
        left = first_max(pixel(a_off), pixel(below))
        right = first_max(pixel(builder.add(a_off, step)), pixel(builder.add(below, step)))
        value = first_max(left, right)
    builder.store(value, _vector_ptr(builder, pc, c_off, vecty), align=align)
    return context.get_dummy_value()


@intrinsic
def move(typingctx, a, a_off, c, c_off, bias, b_off, relu):
    """``move(a, a_off, c, c_off, bias, b_off, relu)``: ``c[c_off:c_off + V] = a[a_off:a_off +
    V] + bias[b_off:b_off + V]``, then ReLU (NaN kept) where ``relu`` is not 0: one vector of
    channels of a pixel from one blocked layout into another."""
    if not _typed(a, c, bias):
        return None
    i = types.int64
    return types.void(a, i, c, i, bias, i, i), functools.partial(_emit_move, window=1)


@intrinsic
def move_max(typingctx, a, a_off, a_row, c, c_off, bias, b_off, relu):
    """:func:`move` of the maximum over a 2x2 window of pixels: the four vectors at ``a_off``,
    ``a_off + V``, ``a_off + a_row`` and ``a_off + a_row + V``, each plus the bias and ReLU'd,
    reduced as :func:`~.pooling.max_pool2d_values` does (each column's pair, then the two
    columns; a NaN wins, among equal values the first is kept)."""
    if not _typed(a, c, bias):
        return None
    i = types.int64
    return types.void(a, i, i, c, i, bias, i, i), functools.partial(_emit_move, window=2)


def _emit_move_add(context, builder, sig, args, shifted):
    """The IR of :func:`move_add`: ``(a + bias) + r`` (``r + rb`` first where ``shifted``),
    then ReLU as in :func:`_emit_move`, a vector store."""
    a, a_off, r, r_off, rb, rb_off, c, c_off, bias, b_off, relu = args
    vecty, _, align = _vector(context, sig.args[0])

    def load(index, offset):
        ptr = _data(context, builder, sig.args[index], args[index])
        return builder.load(_vector_ptr(builder, ptr, offset, vecty), align=align)

    value = builder.fadd(load(0, a_off), load(8, b_off))
    res = load(2, r_off)
    if shifted:
        res = builder.fadd(res, load(4, rb_off))
    builder.store(_relu(builder, builder.fadd(value, res), relu),
                  _vector_ptr(builder, _data(context, builder, sig.args[6], c), c_off, vecty),
                  align=align)
    return context.get_dummy_value()


def _move_add(shifted):
    @intrinsic
    def move_add(typingctx, a, a_off, r, r_off, rb, rb_off, c, c_off, bias, b_off, relu):
        if not _typed(a, r, rb, c, bias):
            return None
        i = types.int64
        return (types.void(a, i, r, i, rb, i, c, i, bias, i, i),
                functools.partial(_emit_move_add, shifted=shifted))
    return move_add


#: ``move_add(a, a_off, r, r_off, rb, rb_off, c, c_off, bias, b_off, relu)``: :func:`move` with a
#: residual: ``c[c_off:+V] = (a[a_off:+V] + bias[b_off:+V]) + r[r_off:+V]``, then ReLU where
#: ``relu`` is not 0 (a residual block's add and ReLU in the store of its last conv; ``rb`` is
#: not read). :data:`move_add_shifted` adds ``r[r_off:+V] + rb[rb_off:+V]`` instead (a
#: projection shortcut's output and its bias).
move_add = _move_add(False)
move_add_shifted = _move_add(True)


def _emit_transpose(context, builder, sig, args):
    """The IR of :func:`transpose`: V guarded vector loads, log2(V) rounds of V two-input
    ``shufflevector`` (Eklundh's block swaps: round s exchanges the off-diagonal s x s blocks of
    every 2s x 2s block), V guarded stores with the broadcast bias added."""
    a, aoffs, nload, c, coffs, nstore, bias, b_off = args
    arrty = sig.args[0]
    vecty, width, align = _vector(context, arrty)
    pa, pc, pb = (_data(context, builder, sig.args[i], v) for i, v in ((0, a), (3, c), (6, bias)))
    pao, pco = (_data(context, builder, sig.args[i], v) for i, v in ((1, aoffs), (4, coffs)))
    rows = []
    for i in range(width):  # row i: loaded where i < nload, else zero
        slot = cgutils.alloca_once_value(builder, ir.Constant(vecty, None))
        with builder.if_then(builder.icmp_signed("<", _I64(i), nload)):
            off = builder.load(builder.gep(pao, [_I64(i)]))
            builder.store(builder.load(_vector_ptr(builder, pa, off, vecty), align=align), slot)
        rows.append(builder.load(slot))
    s = width // 2
    while s >= 1:
        lo = ir.Constant(ir.VectorType(_I32, width),
                         [col if col & s == 0 else width + col - s for col in range(width)])
        hi = ir.Constant(ir.VectorType(_I32, width),
                         [col + s if col & s == 0 else width + col for col in range(width)])
        new = list(rows)
        for i in range(width):
            if i & s == 0:
                new[i] = builder.shuffle_vector(rows[i], rows[i + s], lo)
                new[i + s] = builder.shuffle_vector(rows[i], rows[i + s], hi)
        rows, s = new, s // 2
    mask = ir.Constant(ir.VectorType(_I32, width), None)
    undef = ir.Constant(vecty, ir.Undefined)
    for j in range(width):  # column j of the loaded rows, plus bias[b_off + j]
        with builder.if_then(builder.icmp_signed("<", _I64(j), nstore)):
            add = builder.load(builder.gep(pb, [builder.add(b_off, _I64(j))]))
            splat = builder.shuffle_vector(builder.insert_element(undef, add, _I32(0)), undef,
                                           mask)
            off = builder.load(builder.gep(pco, [_I64(j)]))
            builder.store(builder.fadd(rows[j], splat), _vector_ptr(builder, pc, off, vecty),
                          align=align)
    return context.get_dummy_value()


@intrinsic
def transpose(typingctx, a, aoffs, nload, c, coffs, nstore, bias, b_off):
    """``transpose(a, aoffs, nload, c, coffs, nstore, bias, b_off)``: a V x V transpose in
    registers between layouts. Row i (i < V) is the vector ``a[aoffs[i]:aoffs[i] + V]`` where
    ``i < nload``, else zeros; for ``j < nstore``, ``c[coffs[j]:coffs[j] + V]`` = column j of
    those rows + ``bias[b_off + j]``. The blocked convolution moves pixels between NCHW planes
    and the channel-innermost blocks with it (a scalar loop is several times slower:
    ``benchmarks/results-2026-12-thresholds.md``)."""
    if not _typed(a, c, bias, offsets=(aoffs, coffs)):
        return None
    i = types.int64
    return types.void(a, aoffs, i, c, coffs, i, bias, i), _emit_transpose
