"""Reused memory for the cpu tier's large arrays: a cache of blocks that the arrays gave back.

With glibc's default settings a large NumPy array is mapped fresh from the kernel and faults in
page by page, which on some machines cost a conv forward + backward more than its GEMMs
(``python -m benchmarks.overheads`` measures it; figures in
``benchmarks/results-2026-12-cpu-overheads.md``). :func:`empty` hands out arrays whose memory
comes from this cache, and gives a block back when the last view of its array is gone, so the
next call of the same size (the next training step) reuses memory that is already mapped.

How a block comes back: the block is a ``memoryview``; each array handed out is a view of one
``np.frombuffer`` array over it. NumPy points every further view (slices, reshapes) at that
array, since it is the first ``base`` that is not itself a view of an ndarray, so a weak
reference's callback on it runs only once nothing can reach the memory any more (a plain
``weakref.ref``, kept in :data:`_lent` until then: ``weakref.finalize`` cost several times more,
and a training step takes dozens of arrays). At most :data:`CACHE_BYTES` are kept.
"""
import math
import threading
import weakref

import numpy as np

#: Most bytes the cache holds in blocks that no array uses.
CACHE_BYTES = 512 * 2**20

#: Smaller arrays come from ``np.empty``: malloc serves them from its own free lists.
MIN_BYTES = 128 * 2**10

_free = {}  # nbytes -> [memoryview, ...]
_lent = {}  # id of the weakref to an array's owner -> (the weakref, its block)
_held = [0]
_lock = threading.Lock()


def _give_back(ref):
    block = _lent.pop(id(ref))[1]
    with _lock:
        if _held[0] + block.nbytes <= CACHE_BYTES:
            _free.setdefault(block.nbytes, []).append(block)
            _held[0] += block.nbytes


def empty(shape, dtype):
    """An uninitialised C-contiguous array like ``np.empty(shape, dtype)``, from the cache."""
    dtype = np.dtype(dtype)
    nbytes = int(math.prod(shape)) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        blocks = _free.get(nbytes)
        block = blocks.pop() if blocks else None
        if block is not None:
            _held[0] -= nbytes
    if block is None:
        block = memoryview(np.empty(nbytes, np.uint8))
    owner = np.frombuffer(block, dtype=np.uint8)
    ref = weakref.ref(owner, _give_back)
    _lent[id(ref)] = ref, block
    return owner.view(dtype).reshape(shape)


def cached_bytes():
    """Bytes held in blocks that no array uses (for tests and the memory benchmark)."""
    return _held[0]


def clear():
    """Drop every cached block (their memory goes back to the allocator)."""
    with _lock:
        _free.clear()
        _held[0] = 0
