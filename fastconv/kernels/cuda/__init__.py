"""The cuda tier: the kernel contract of :mod:`fastconv.kernels.naive` as ``numba.cuda`` kernels.

Every function takes NumPy arrays or Numba device arrays (NumPy inputs are copied to the device
once) and returns device arrays in the input's dtype (float32 or float64, never upcast: float32
kernels contain no float64 instruction, which ``tests/kernels/cuda/test_ptx.py`` checks in the PTX).
Caches, switches and optimizer state stay on the device; only what the contract returns as Python
values comes back to the host: the loss of the losses (the per-row losses of the fused
:func:`softmax_cross_entropy`; three numbers, the loss sum, the mean's denominator and the count of
bad labels, for the others) and the ``ok`` flag of :func:`max_pool2d_backward`. Without a GPU,
``NUMBA_ENABLE_CUDASIM=1`` runs the same kernels on Numba's simulator. No cuBLAS, no CuPy: every
kernel is in this package, one file per op family of :mod:`fastconv.kernels.contract` with the
same names as in every tier (``optim``: the SGD, Adam, RMSprop and Adagrad updates;
``elementwise``: ``axpby``, ``clamp``, ``full``, ``scale_rows``, ``zeros_like`` and the unary and binary maps the
activations and dropout use), plus ``_gemm`` (the shared product) and ``_launch`` (launch sizes
and device-array helpers).

Launch configurations (``THREADS = 256``, ``TILE = 16``, ``REDUCE_THREADS = 256``)
------------------------------------------------------------------------------------
* Elementwise and gather kernels (``_im2col_kernel``, ``_col2im_kernel``, ``_max_pool_kernel``,
  ``_route_kernel``, ``_gather_kernel``, ``_avg_pool_kernel``, ``_avg_pool_backward_kernel``,
  ``_unary_kernel``, ``_binary_kernel``, ``_scale_rows_kernel``, ``_dropout_kernel``,
  ``_sgd_kernel``, ``_adam_kernel``, ``_rmsprop_kernel``, ``_adagrad_kernel``, ``_bn_affine_kernel``,
  ``_bn_dx_kernel``, ``_axpby_kernel``, ``_clamp_kernel``, ``_softmax_xent_kernel``,
  ``_target_weight_kernel``,
  ``_xent_kernel``, ``_nll_kernel``, ``_bce_logits_kernel``, ``_mse_kernel``): 1-D grid of
  ``THREADS``-thread blocks (fewer threads, a multiple of the 32-thread warp, when n is small),
  ``min(ceil(n / THREADS), MAX_BLOCKS)`` blocks, and a grid-stride loop over the n elements of the
  array the threads *write*.
  Thread t owns element t of a C-contiguous output, so a warp writes 32 consecutive addresses
  (coalesced). Reads are coalesced too where the index math allows: im2col reads an input row at
  stride ``sw`` (contiguous for stride 1); col2im and the pooling gathers read ``cols``/``dout``
  along output columns, consecutive for stride 1. Gathers (col2im, the pooling backwards) give
  each thread one input element that sums its own contributions in a fixed order: no atomics,
  the same bits on every run, and the same accumulation order as the cpu tier. Softmax
  cross-entropy (fused and general) and NLL run one thread per row: class counts are small (10),
  and the rows are few.
* ``_gemm_kernel`` (convolution and Linear): ``TILE x TILE`` threads per block, one output element
  per thread, grid ``(ceil(cols / TILE), ceil(rows / TILE))``. Each step stages a ``TILE x TILE``
  tile of both operands in shared memory; ``threadIdx.x`` runs along the operand's contiguous axis,
  so global loads are coalesced for plain and transposed operands alike (a transposed operand is
  stored transposed into shared memory, padded to ``TILE + 1`` columns against bank conflicts).
  Each global element is loaded ``TILE`` times fewer than in a naive product. The epilogue adds a
  per-row (conv) or per-column (Linear) bias and can write the ``(K, N*P)`` product straight into
  NCHW order (``pb = P``), so the convolution needs no transpose afterwards.
* Reductions (``_channel_sum_kernel``, ``_bn_stats_kernel``, ``_bn_grad_sums_kernel``,
  ``_switch_bounds_kernel``; ``_sum_kernel``, the losses' sums, is a single such block): one block
  per channel / output row or column, of ``REDUCE_THREADS`` threads (a smaller power of two, at
  least a warp, when a block has fewer elements to reduce), a block-stride loop that accumulates in
  registers (reading along the contiguous axis), then a shared-memory tree reduction
  (``_block_sum``; deterministic: fixed order). ``_channel_sum_kernel`` also writes the ``(N, K, P)
  -> (K, N, P)`` transpose the backward GEMMs need (coalesced reads and writes along P): it is the
  bias gradient fused with that copy. Batch norm splits each pass into a per-channel reduction
  (statistics, or the two gradient sums) and an elementwise kernel over all of x, so the bulk of
  its traffic runs on the full grid rather than on C blocks.
* ``_route_kernel`` does not know the window geometry (the contract passes only the
  switches), so ``_switch_bounds_kernel`` first finds, for every output row and column, the range of
  input rows / columns its switches point into; each input element then scans only the outputs
  whose ranges contain it (``ceil(kh / sh) * ceil(kw / sw)`` of them for a real pooling) and checks
  their switches. The same pass counts out-of-range switches for the ``ok`` flag. Max unpooling
  is the same gather, keeping the last value instead of the sum.
* ``_global_pool_kernel`` (adaptive pooling to (1, 1)): one block per plane, as the reductions
  above; the max carries its index through the tree (first maximum, first NaN).
* ``_dropout_kernel`` gives each thread a ``numba.cuda.random`` xoroshiro128+ state, seeded on the
  device from draws ``2t`` and ``2t + 1`` of SplitMix64(seed) (no host-side jump-ahead); the keep
  test compares the top 53 random bits with an integer threshold, so it costs no float work and the
  mask depends only on ``(seed, x.size)``.

Expected bottleneck on a modern GPU (e.g. H100)
-----------------------------------------------
The GEMM: every FMA of its inner loop needs two shared-memory loads (one a broadcast), i.e. two
shared-memory wavefronts per warp-wide FMA, so it is bound by shared-memory bandwidth at about an
eighth of the FP32 FMA peak (H100: of the order of 8 of 60 TFLOP/s); register tiling (several
outputs per thread) or tensor cores would be the next step. Everything else is memory-bound:
im2col writes ``C*FH*FW`` times the input, which dominates the convolution's traffic for few
channels. At the small batches of MNIST-sized networks the grids are only a few hundred blocks and
launch latency plus Numba's allocator (a ``cudaMalloc`` per output array; an EMM plugin such as
RMM pools them) cost more than the arithmetic: the per-call overhead, not the GPU, is the limit.
"""
from importlib import import_module

try:
    from numba import cuda
    import numba.cuda.random  # noqa: F401  (the dropout kernel's generator)
    _AVAILABLE = cuda.is_available()
except ImportError:  # numba without numba-cuda
    _AVAILABLE = False

if not _AVAILABLE:
    raise RuntimeError(
        "backend 'cuda' needs an NVIDIA GPU and none was found (numba.cuda.is_available() is "
        "False, or numba-cuda is not installed). Set NUMBA_ENABLE_CUDASIM=1 to run the cuda tier "
        "on Numba's CUDA simulator (slow, for tests), or `pip install fastconv[cuda]` to install "
        "numba-cuda on a machine with a GPU; other backends: 'cpu', 'naive'.")

# the GPU (or the simulator) is there: now the family files may define their kernels
from ..contract import NAMES, bind

# every contract function, from this tier's file of its family
bind(globals())

__all__ = list(NAMES) + ["KERNELS"]

#: Every kernel of the tier with example signatures (float32 first), for ahead-of-time checks:
#: ``numba.cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))``. Each family file lists its own.
#: (``dropout`` and ``linear`` name the contract's functions here, so the files are looked up.)
KERNELS = {}
for _family in ("conv", "_gemm", "pooling", "normalization", "elementwise", "dropout", "loss",
                "optim", "activation", "combine"):
    KERNELS.update(import_module(f"{__name__}.{_family}").KERNELS)
for _family in ("grouped", "conv_transpose", "padding"):
    KERNELS.update(import_module(f"{__name__}.{_family}").KERNELS)
del _family

