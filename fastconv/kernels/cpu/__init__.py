"""The cpu tier: Numba kernels for the data movement, NumPy's BLAS for the products.

One file per op family of :mod:`fastconv.kernels.contract`, the same names as in every tier
(``elementwise`` is the NumPy helpers both host tiers share, :mod:`fastconv.kernels._host`;
:mod:`.optim` fuses SGD and Adam into one pass and takes the rest from
:mod:`fastconv.kernels._host_optim`); ``_common`` holds what the files share: the block and
thread-split thresholds, the BLAS products and the splits.

Convolution: :func:`.conv.algorithm` is the one rule that picks a path per layer from its
shape: direct accumulation (:mod:`.direct`) for few taps, Winograd F(2x2, 3x3)
(:mod:`.winograd`) for 3x3 layers of many channels, the blocked channel layout with generated
register-blocked micro-kernels (:mod:`.blocked`, its loop nests in :mod:`.blocked_kernels`, the
LLVM IR generator in :mod:`.microkernel`) for stride-1 and stride-2 layers whose channels fill
its vectors, and im2col + GEMM (:mod:`.im2col_gemm`) for the rest.

Threads: the conv layers split the batch across Python threads that each run single-threaded
BLAS and ``nogil`` kernels on a block of images at a time (see :mod:`fastconv.kernels._workers`),
so the block stays in cache from im2col to GEMM to layout and BLAS never spins against Numba;
Linear shares the blocks of its products the same way. The other kernels run on the same
threads, each on a range of images, channels or elements. The blocks depend only on the shapes
and partial sums are added in block order, so every thread count gives the same bits. No kernel
is ``parallel=True``: Numba's OpenMP workers busy-wait after each kernel on the core a pool
thread needs next (what that cost: ``benchmarks/results-2026-12-cpu-overheads.md``). Large
outputs come from :mod:`fastconv.kernels._memory`, so repeated calls reuse memory that is
already mapped instead of faulting in fresh pages.
"""
from ..contract import NAMES, bind

# every contract function, from this tier's file of its family
bind(globals(), elementwise="_host")

__all__ = list(NAMES)
