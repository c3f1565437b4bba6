"""What every op family of the cpu tier shares: the tunable block and thread-split thresholds
(the ONE place they live; the thresholds that pick a convolution path live with
:func:`.conv.algorithm`, and the measurements behind both in
``benchmarks/results-2026-12-thresholds.md``), the products through BLAS, the splits of
elementwise and per-plane work across the threads of :mod:`fastconv.kernels._workers`, and
per-thread temporaries.

Family modules read the thresholds as attributes of this module at call time
(``_common.BLOCK_BYTES``), so setting one here (a test forcing every path) changes every family.
"""
import math
import threading

import numpy as np

from .. import _workers
from .._workers import one_blas_thread, split

#: The column matrix of a whole batch (short-row layouts only) is kept for backward only up to
#: this many bytes; past it, and for wide rows, each block's columns are unfolded again.
WORKSPACE_BYTES = 192 * 2**20

#: Each thread works through its images in blocks whose columns take at most this many bytes,
#: so a block's columns, products and gradients stay in cache between the kernels and GEMMs.
BLOCK_BYTES = 2 * 2**20

#: Conv backward sums dW per chunk of blocks and adds the chunks' sums in order; it keeps at
#: most this many bytes of them (fewer, larger chunks for layers with a large dW).
PARTIAL_BYTES = 64 * 2**20

#: A convolution is split across the threads only with at least this many forward FLOPs and
#: SPLIT_IMAGES images per thread; otherwise it runs in the calling thread, since a split has a
#: fixed cost (``python -m benchmarks.overheads``) that smaller layers do not win back. Shape E
#: (``benchmarks/cases.py``) sits near the line; its timings on one and two threads:
#: ``benchmarks/results-2026-12-thresholds.md``. This and the two SPLIT_*ELEMENTS thresholds
#: were cut by 8 once the spinning team of :mod:`.._workers` made splits cheaper
#: (``benchmarks/results-2026-12-07-segments.md``).
SPLIT_FLOPS = 2.5e6
SPLIT_IMAGES = 2


def conv_parts(macs, n, units):
    """How many thread shares a convolution of ``macs`` multiply-adds over ``n`` images, cut
    into ``units`` blocks, runs in: one unless the work pays for a split (SPLIT_FLOPS, and
    SPLIT_IMAGES images a share), else as many as there are threads and blocks."""
    if 2 * macs < SPLIT_FLOPS:
        return 1
    return max(1, min(_workers.threads(), units, n // max(SPLIT_IMAGES, 1)))


def block_count(n, most, split):
    """How many blocks of images (at most ``most`` images each) a batch of ``n`` is cut into:
    where the work is split (``split``), a multiple of 4 blocks while images last, so that 1, 2
    and 4 threads get even runs. It depends on the shapes only, never on the thread count."""
    blocks = -(-n // max(most, 1)) if n else 1
    if split:
        blocks = min(n, -(-blocks // 4) * 4)
    return max(blocks, 1)

#: Elementwise kernels on fewer elements run in the calling thread: one thread streams them
#: (ReLU, float32) in less time than a split must save to pay for itself
#: (``benchmarks/results-2026-12-thresholds.md``).
SPLIT_ELEMENTS = 2**18

#: Pooling and batch-norm kernels (more work per element) split from this many input elements.
SPLIT_PLANE_ELEMENTS = 2**15

#: GEMMs of fewer multiply-adds than this run in the calling thread as one product; bigger ones
#: are cut into blocks that the threads share (a split has a fixed cost, see SPLIT_FLOPS).
SPLIT_GEMM = 2**23

#: The blocks of a cut GEMM hold about this many multiply-adds each, their count rounded up to a
#: multiple of 4 (even runs for 1, 2 and 4 threads). The cut depends only on the shapes. Each
#: block costs a repack of one operand and a shorter product, so blocks are large: 2**23 cut
#: best's 256 x 3136 @ 3136 x 256 into 28 blocks of 9 rows, 3x the time of 4 blocks (this and
#: what more blocks cost on lenet's 800 -> 500 product: ``benchmarks/results-2026-12-thresholds.md``).
#: Products under 2**28 multiply-adds thus use at most 4 threads.
GEMM_BLOCK_MACS = 2**26

#: OpenBLAS runs products of at least this many multiply-adds on all its threads, whose workers
#: then busy-spin against ours: below SPLIT_GEMM they run with BLAS at one thread.
BLAS_THREADED_GEMM = 2**18

_local = threading.local()


def _product_blocks(a, b, out):
    """``out = a @ b`` (2-D) as a list of products ``[(a_i, b_i, out_i), ...]``.

    Below :data:`SPLIT_GEMM` multiply-adds, one product; above, blocks of the rows of ``a`` or
    of the columns of ``b`` (whichever makes the operand that every block packs again the
    smaller one) of about :data:`GEMM_BLOCK_MACS`. The blocks depend only on the shapes, so
    every thread count runs the same BLAS calls: each output element gets the same bits.
    """
    m, k = a.shape
    n = b.shape[1]
    macs = m * k * n
    if macs < SPLIT_GEMM:
        return [(a, b, out)]
    by_columns = n > m  # each block then packs a (m x k) again, else b (k x n)
    size = n if by_columns else m
    blocks = -(-macs // GEMM_BLOCK_MACS)
    count = min(size, -(-blocks // 4) * 4)
    bounds = [size * i // count for i in range(count + 1)]
    if by_columns:
        return [(a, b[:, lo:hi], out[:, lo:hi]) for lo, hi in zip(bounds, bounds[1:])]
    return [(a[lo:hi], b, out[lo:hi]) for lo, hi in zip(bounds, bounds[1:])]


def _products(products):
    """Run ``[(a, b, out), ...]`` (``out = a @ b`` each, through NumPy's BLAS) on the threads, a
    contiguous run of them each, with BLAS at one thread when they are large enough for BLAS
    to thread them."""
    def run(lo, hi):
        for a, b, out in products[lo:hi]:
            np.matmul(a, b, out=out)

    macs = sum(a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in products)
    if macs < BLAS_THREADED_GEMM:
        run(0, len(products))
        return
    with one_blas_thread():
        split(run, len(products))


def _matmul(a, b, out):
    """``out = a @ b`` for 2-D arrays, in the blocks of :func:`_product_blocks`; returns out."""
    _products(_product_blocks(a, b, out))
    return out


def _elements(fn, size):
    """``fn(lo, hi)`` over ``range(size)``: split across the threads when that pays."""
    return split(fn, size, None if size >= SPLIT_ELEMENTS else 1)


def _planes(fn, a, axis=0):
    """``fn(lo, hi)`` over the images (``axis=0``) or channels (``axis=1``) of ``a``, split when
    the array is large enough."""
    return split(fn, a.shape[axis], None if a.size >= SPLIT_PLANE_ELEMENTS else 1)


def _buffer(slot, shape, dtype):
    """A reusable temporary of ``shape`` for this thread; its contents are undefined."""
    size = math.prod(shape)
    pool = _local.__dict__.setdefault("pool", {})
    buf = pool.get((slot, np.dtype(dtype)))
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype=dtype)
        pool[(slot, np.dtype(dtype))] = buf
    return buf[:size].reshape(shape)


def _zeroed_buffer(slot, shape, dtype):
    """A reusable temporary of exactly ``shape`` for this thread, zero when first made.

    Kernels that write only part of it (the valid columns of a wide layout) rely on the rest
    staying zero, so each shape has its own buffer, and ``slot`` must name everything that
    decides which part is written (e.g. ``("dout_t", Wout)``): two layers whose buffers have
    the same shape but write different parts must not share one.
    """
    pool = _local.__dict__.setdefault("zeroed", {})
    key = (slot, tuple(shape), np.dtype(dtype))
    buf = pool.get(key)
    if buf is None:
        # many layer shapes: start again rather than grow without bound. 64: the blocked
        # path keeps two per layer shape (one image's packed input and dout, small), so a
        # network of 9 such shapes (VGG) would otherwise zero fresh buffers every call
        if len(pool) >= 64:
            pool.clear()
        buf = pool[key] = np.zeros(shape, dtype=dtype)
    return buf
