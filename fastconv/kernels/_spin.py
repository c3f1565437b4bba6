"""Waiting without the GIL and without the kernel: the flags through which :mod:`._workers`'s
team hands out shares of a split.

Waking a sleeping thread costs these VMs 20-60 us a time (a futex wake reaches a halted vCPU),
and a split took two or three of them: about 0.1 ms a split, more than many kernels it split.
So the team's threads, and the caller while it waits for them, spin for a while on an ``int64``
array of flags in ``nogil`` compiled loops (an atomic acquire load and a ``pause`` a turn, so
the flag is read afresh each time), and sleep only once a bound of TSC cycles has passed.
"""
import platform
import time

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def _load(typingctx, flags, index):
    """``flags[index]`` as an atomic acquire load (never hoisted out of a loop)."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.load_atomic(builder.gep(ary.data, [args[1]]), "acquire", 8)
    return types.int64(flags, types.int64), codegen


@intrinsic
def _store(typingctx, flags, index, value):
    """``flags[index] = value`` as an atomic release store."""
    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        builder.store_atomic(args[2], builder.gep(ary.data, [args[1]]), "release", 8)
        return context.get_dummy_value()
    return types.void(flags, types.int64, types.int64), codegen


@intrinsic
def _cycles(typingctx):
    """The time-stamp counter (``llvm.readcyclecounter``), after the x86 spin-loop hint
    ``pause`` (it spares the sibling hyperthread and the memory order machinery)."""
    def codegen(context, builder, sig, args):
        if _X86:
            hint = ir.FunctionType(ir.VoidType(), [])
            builder.call(builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=hint), [])
        counter = builder.module.declare_intrinsic("llvm.readcyclecounter",
                                                   fnty=ir.FunctionType(ir.IntType(64), []))
        return builder.call(counter, [])
    return types.int64(), codegen


@njit(nogil=True, cache=True)
def wait_all(flags, first, count, value, budget):
    """Spin until ``flags[first:first + count]`` are all at least ``value``, for at most
    ``budget`` TSC cycles: whether they are."""
    start = _cycles()
    for i in range(first, first + count):
        while _load(flags, i) < value:
            if _cycles() - start > budget:
                return False
    return True


@njit(nogil=True, cache=True)
def post_and_wait(flags, go, value, first, count, budget, settle):
    """``flags[go] = value``, then :func:`wait_all` on ``flags[first:first + count]``, then
    ``settle`` more cycles (the team's threads take the GIL meanwhile and start their shares'
    kernels, which hand it back: taking it from them would cost a wake)."""
    _store(flags, go, value)
    done = wait_all(flags, first, count, value, budget)
    start = _cycles()
    while _cycles() - start < settle:
        pass
    return done


@njit(nogil=True, cache=True)
def mark_and_wait(flags, mark, marked, go, value, budget):
    """``flags[mark] = marked`` (a share done, stored once the GIL is released, so the waiting
    caller can take it at once), then :func:`wait_all` for ``flags[go] >= value``."""
    _store(flags, mark, marked)
    return wait_all(flags, go, 1, value, budget)


@njit(nogil=True, cache=True)
def _now():
    return _cycles()


def cycles_per_second():
    """The TSC's rate, measured over 2 ms (once, by the team). ``_now`` is compiled (or loaded
    from the cache) before the clocks are read: timing its first call measured the compile too,
    and gave 0.96 GHz for a 2.6 GHz counter."""
    _now()
    t0, c0 = time.perf_counter(), _now()
    time.sleep(0.002)
    t1, c1 = time.perf_counter(), _now()
    return max((c1 - c0) / (t1 - t0), 1e6)
