"""The one owner of the cores for the cpu tier: a small pool of Python threads.

Convolution and linear layers interleave Numba data movement with BLAS products. Letting both
libraries run their own threads makes them fight: OpenBLAS's idle workers busy-spin for about
0.1 s after every threaded GEMM, Numba's OpenMP workers busy-wait after every parallel kernel,
and whatever runs next shares a core with them. Instead :func:`split` hands contiguous shares
of the work to :func:`threads` Python threads (the caller is one of them); each runs
single-threaded BLAS calls and ``nogil`` Numba kernels on its own share, so the cores are never
oversubscribed and each share's temporaries stay in that core's cache. Every parallel kernel of
the cpu tier (pooling, ReLU, batch norm too) runs this way. BLAS is held at one thread while
any split runs, in any Python thread (:func:`one_blas_thread` counts them), then given back its
own setting.

The pool is a team of threads that hand shares over through flags (:mod:`._spin`): after a
split each team thread, and the caller while it waits for them, spins for up to SPIN_SECONDS
without the GIL before it sleeps, so the splits of a training step find the team awake and
cost microseconds instead of the wake-ups of sleeping threads (about 0.1 ms a split on these
VMs). A split still has a cost (``python -m benchmarks.overheads`` measures it, past figures
are in ``benchmarks/results-2026-12-cpu-overheads.md``), so callers split only work worth more
than that: the ``SPLIT_*`` thresholds of :mod:`fastconv.kernels.cpu._common`.

The thread count is read in one place, :func:`threads`: :func:`set_num_threads` (PyTorch's
name), else Numba's setting (``NUMBA_NUM_THREADS``, ``numba.set_num_threads``). Any count works;
the pool grows to it. Results do not depend on it: callers cut their work into pieces whose
bounds depend only on the shapes (fixed blocks of images, fixed blocks of a product's rows or
columns) and add partial sums in piece order; the thread count only decides which thread runs
which contiguous run of pieces.
"""
import functools
import os
import threading
import time

import numba
import numpy as np

from . import _spin

_state = {"team": None, "pid": None, "blas": None, "blas_users": 0, "saved": None,
          "threads": None, "rate": None}

#: How long the team's threads (and a caller waiting for them) spin after a share before they
#: sleep: about the longest pause between the splits of a training step.
SPIN_SECONDS = 0.002

#: How long a caller that has handed out the shares waits, GIL released, before it takes the
#: GIL back: the team's threads take it meanwhile to start their shares, and hand it back on
#: entering their kernels (taking it back from them would cost a wake).
SETTLE_SECONDS = 4e-6
_lock = threading.Lock()
_blas_lock = threading.Lock()


def set_num_threads(n):
    """Use ``n`` threads (>= 1) in the cpu tier from now on; ``None`` goes back to Numba's setting.

    PyTorch's ``torch.set_num_threads``. Unlike ``numba.set_num_threads`` it is not bounded by
    ``NUMBA_NUM_THREADS`` (the cpu tier runs no Numba-parallel kernel, only its own pool).
    Results are the same bits for every ``n``.
    """
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
            raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
        if n < 1:
            raise ValueError(f"set_num_threads: n must be at least 1, got {n}")
        n = int(n)
    _state["threads"] = n


def threads():
    """How many threads a split uses: :func:`set_num_threads`'s, else Numba's setting
    (``NUMBA_NUM_THREADS``, ``numba.set_num_threads``). The one place the count is read."""
    return _state["threads"] or numba.get_num_threads()


def get_num_threads():
    """The thread count of the cpu tier (PyTorch's ``torch.get_num_threads``): :func:`threads`."""
    return threads()


class _Team:
    """``size`` daemon threads that run the shares of one split at a time.

    Flags (``int64``): ``POSTED`` (the generation whose shares are set, written with the GIL),
    ``GO`` (the same, written once the caller has released the GIL), and per thread ``TAKEN``
    and ``DONE``. Generation g's share of thread i is ``tasks[i]``; the caller waits for every
    thread's DONE before it returns, so a task is never replaced while a thread may read it.
    """

    POSTED, GO = 0, 1

    def __init__(self, size):
        rate = _state["rate"] = _state["rate"] or _spin.cycles_per_second()
        self.size, self.gen = size, 0
        self.budget, self.settle = int(SPIN_SECONDS * rate), int(SETTLE_SECONDS * rate)
        self.flags = np.zeros(2 + 2 * size, dtype=np.int64)
        self.taken, self.done = 2, 2 + size
        self.tasks, self.results = [None] * size, [None] * size
        self.cond = threading.Condition()
        self.sleeping = 0
        self.busy = threading.Lock()  # one split at a time; another caller runs its shares alone
        for i in range(size):
            threading.Thread(target=self._member, args=(i,), daemon=True,
                             name=f"fastconv-{i + 1}").start()

    def _member(self, i):
        flags, gen = self.flags, 0
        while True:
            gen += 1
            if not _spin.mark_and_wait(flags, self.done + i, gen - 1, self.GO, gen, self.budget):
                with self.cond:
                    self.sleeping += 1
                    while flags[self.POSTED] < gen:
                        self.cond.wait()
                    self.sleeping -= 1
            flags[self.taken + i] = gen
            task, self.tasks[i] = self.tasks[i], None
            self.results[i] = None if task is None else _run_share(*task)
            task = None  # the share's closure holds its arrays: let them go while waiting

    def run(self, fn, bounds):
        """``[fn(lo, hi), ...]`` over ``bounds``; the first share in this thread."""
        count = len(bounds) - 2
        for i in range(self.size):
            self.tasks[i] = (fn, bounds[i + 1], bounds[i + 2]) if i < count else None
        self.gen = gen = self.gen + 1
        flags = self.flags
        flags[self.POSTED] = gen
        with self.cond:
            if self.sleeping:
                self.cond.notify_all()
        _spin.post_and_wait(flags, self.GO, gen, self.taken, self.size, self.budget, self.settle)
        first = _run_share(fn, bounds[0], bounds[1])
        while not _spin.wait_all(flags, self.done, self.size, gen, self.budget):
            time.sleep(1e-4)  # a long share: check now and then
        results = [first] + [self.results[i] for i in range(count)]
        self.results = [None] * self.size  # nothing of this split outlives it here
        for value, error in results:
            if error is not None:
                raise error
        return [value for value, _ in results]


def _run_share(fn, lo, hi):
    """``(fn(lo, hi), None)``, or ``(None, the exception)``, marked as running a share."""
    _share.active = True
    try:
        return fn(lo, hi), None
    except BaseException as error:  # noqa: BLE001 (re-raised by the caller of the split)
        return None, error
    finally:
        _share.active = False


def _team(size):
    """The team with at least ``size`` threads (a fresh one in a forked child, whose copy of
    the parent's team has no threads behind it, and when more threads are asked for; the
    threads of a replaced team sleep for good after their spin)."""
    with _lock:
        team = _state["team"]
        if team is None or team.size < size or _state["pid"] != os.getpid():
            team = _state["team"] = _Team(size)
            _state["pid"] = os.getpid()
        return team


def _blas():
    """``(get, set)`` of each BLAS library's thread count, for the libraries loaded in this
    process (found once through threadpoolctl; the caller holds ``_blas_lock``).

    Every split sets BLAS to one thread and back, dozens of times a training step, so OpenBLAS on
    its own threads (a process-wide setting) is driven through its C functions, the ones
    threadpoolctl ends up calling: threadpoolctl's bookkeeping around them costs many times the
    calls (``benchmarks/results-2026-12-cpu-overheads.md``). Other libraries go through
    threadpoolctl.
    """
    if _state["blas"] is None:
        from threadpoolctl import ThreadpoolController
        libs = ThreadpoolController().select(user_api="blas").lib_controllers
        _state["blas"] = [_blas_handles(lib) for lib in libs]
    return _state["blas"]


def _blas_handles(lib):
    """``(get, set)`` for one of threadpoolctl's library controllers (see :func:`_blas`)."""
    symbol = getattr(lib, "_get_symbol", None)  # threadpoolctl >= 3.5 (name affixes included)
    if getattr(lib, "internal_api", None) == "openblas" and symbol is not None and \
            getattr(lib, "threading_layer", None) != "openmp":
        get, set_ = symbol("openblas_get_num_threads"), symbol("openblas_set_num_threads")
        if get is not None and set_ is not None:
            return get, set_
    return lib.get_num_threads, functools.partial(_set_through_threadpoolctl, lib)


def _set_through_threadpoolctl(lib, n):
    """Set a library's thread count through threadpoolctl.

    threadpoolctl lets only one "controlling" Python thread change OpenBLAS's process-wide
    setting and silently ignores the others, so a restore from any other thread would leave
    BLAS at one thread. The reference count of :func:`one_blas_thread` already keeps threads
    from fighting, so control is taken for the change and given up right after.
    """
    release = getattr(type(lib), "clear_controlling_thread", None)  # threadpoolctl >= 3.6
    if release is not None:
        release(force=True)
    lib.set_num_threads(n)
    if release is not None:
        release()


def _set_blas_threads(counts):
    """Set each BLAS library's thread count (``counts`` in :func:`_blas` order)."""
    for (_, set_), n in zip(_blas(), counts):
        set_(n)


def _after_fork_in_child():
    """A forked child has only the forking thread: fresh locks (another thread may have held
    one at the fork), no BLAS users, and BLAS's own setting back if a split was running."""
    global _lock, _blas_lock
    _lock, _blas_lock = threading.Lock(), threading.Lock()
    if _state["blas_users"]:
        _set_blas_threads(_state["saved"])
    _state["blas_users"], _state["saved"] = 0, None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def one_blas_thread():
    """Context manager: BLAS at one thread meanwhile, for a split or a product run outside one.

    The limit is process-wide, so it is reference-counted under a lock: the first thread to
    enter saves BLAS's setting and sets one thread, the last to leave restores the setting, and
    Python threads calling fastconv concurrently never leave BLAS at one thread for good. (While
    any of them is inside, every BLAS call of the process runs on one thread.)
    """
    return _ONE_BLAS_THREAD


class _OneBlasThread:
    """:func:`one_blas_thread`'s context manager: a class, which enters and exits in a third of
    a generator-based one's time, since every split enters it."""

    def __enter__(self):
        with _blas_lock:
            if _state["blas_users"] == 0:
                libs = _blas()
                _state["saved"] = [get() for get, _ in libs]
                _set_blas_threads([1] * len(libs))
            _state["blas_users"] += 1

    def __exit__(self, *exc):
        with _blas_lock:
            _state["blas_users"] -= 1
            if _state["blas_users"] == 0:
                _set_blas_threads(_state["saved"])
                _state["saved"] = None


_ONE_BLAS_THREAD = _OneBlasThread()


def shares(n_items, parts=None):
    """Bounds ``[b0, b1, ..., b_parts]`` of ``n_items`` split into ``parts`` near-equal shares."""
    parts = max(1, min(threads() if parts is None else parts, n_items))
    return [n_items * i // parts for i in range(parts + 1)]


def split(fn, n_items, parts=None):
    """``[fn(lo, hi), ...]`` over contiguous shares of ``range(n_items)``, one share per thread.

    The first share runs in the calling thread, the others in the pool, with BLAS limited to one
    thread meanwhile. With one share (one thread, or one item) ``fn`` simply runs here; so do
    all the shares, in order, when the caller is itself running a share of a split (a split
    inside a share would wait on pool threads that are busy running the outer shares).
    """
    bounds = shares(n_items, parts)
    if len(bounds) == 2 or getattr(_share, "active", False):
        return [fn(lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    team = _team(len(bounds) - 2)
    if not team.busy.acquire(blocking=False):  # another thread's split has the team
        return [fn(lo, hi) for lo, hi in zip(bounds, bounds[1:])]
    try:
        with one_blas_thread():
            return team.run(fn, bounds)
    finally:
        team.busy.release()


_share = threading.local()  # .active: this thread is running a share of a split
