"""The cuda tier: the kernel contract of :mod:`fastconv.kernels.naive` as ``numba.cuda`` kernels.

Every function takes NumPy arrays or Numba device arrays (NumPy inputs are copied to the device
once) and returns device arrays in the input's dtype (float32 or float64, never upcast: float32
kernels contain no float64 instruction, which ``tests/cuda/test_ptx.py`` checks in the PTX).
Caches, switches and optimizer state stay on the device; only two results come back to the host,
because the contract returns them as Python values: the loss of :func:`softmax_cross_entropy` and
the ``ok`` flag of :func:`max_pool2d_backward`. Without a GPU, ``NUMBA_ENABLE_CUDASIM=1`` runs the
same kernels on Numba's simulator. No cuBLAS, no CuPy: every kernel is below.

Launch configurations (``THREADS = 256``, ``TILE = 16``, ``REDUCE_THREADS = 256``)
------------------------------------------------------------------------------------
* Elementwise and gather kernels (``_im2col_kernel``, ``_col2im_kernel``, ``_max_pool_kernel``,
  ``_max_pool_backward_kernel``, ``_avg_pool_kernel``, ``_avg_pool_backward_kernel``,
  ``_unary_kernel``, ``_binary_kernel``, ``_dropout_kernel``, ``_sgd_kernel``, ``_adam_kernel``,
  ``_bn_affine_kernel``, ``_bn_dx_kernel``, ``_axpby_kernel``, ``_softmax_xent_kernel``): 1-D grid of
  ``THREADS``-thread blocks (fewer threads, a multiple of the 32-thread warp, when n is small),
  ``min(ceil(n / THREADS), MAX_BLOCKS)`` blocks, and a grid-stride loop over the n elements of the
  array the threads *write*.
  Thread t owns element t of a C-contiguous output, so a warp writes 32 consecutive addresses
  (coalesced). Reads are coalesced too where the index math allows: im2col reads an input row at
  stride ``sw`` (contiguous for stride 1); col2im and the pooling gathers read ``cols``/``dout``
  along output columns, consecutive for stride 1. Gathers (col2im, both pooling backwards) give
  each thread one input element that sums its own contributions in a fixed order: no atomics,
  the same bits on every run, and the same accumulation order as the cpu tier. Softmax
  cross-entropy runs one thread per row: class counts are small (10), and the rows are few.
* ``_gemm_kernel`` (convolution and Linear): ``TILE x TILE`` threads per block, one output element
  per thread, grid ``(ceil(cols / TILE), ceil(rows / TILE))``. Each step stages a ``TILE x TILE``
  tile of both operands in shared memory; ``threadIdx.x`` runs along the operand's contiguous axis,
  so global loads are coalesced for plain and transposed operands alike (a transposed operand is
  stored transposed into shared memory, padded to ``TILE + 1`` columns against bank conflicts).
  Each global element is loaded ``TILE`` times fewer than in a naive product. The epilogue adds a
  per-row (conv) or per-column (Linear) bias and can write the ``(K, N*P)`` product straight into
  NCHW order (``pb = P``), so the convolution needs no transpose afterwards.
* Reductions (``_channel_sum_kernel``, ``_bn_stats_kernel``, ``_bn_grad_sums_kernel``,
  ``_switch_bounds_kernel``): one block per channel / output row or column, of ``REDUCE_THREADS``
  threads (a smaller power of two, at least a warp, when a block has fewer elements to reduce), a
  block-stride loop that accumulates in registers (reading along the contiguous axis), then a
  shared-memory tree reduction (``_block_sum``; deterministic: fixed order). ``_channel_sum_kernel``
  also writes the ``(N, K, P) -> (K, N, P)`` transpose the backward GEMMs need (coalesced reads and
  writes along P): it is the bias gradient fused with that copy. Batch norm splits each pass into a
  per-channel reduction (statistics, or the two gradient sums) and an elementwise kernel over all
  of x, so the bulk of its traffic runs on the full grid rather than on C blocks.
* ``_max_pool_backward_kernel`` does not know the window geometry (the contract passes only the
  switches), so ``_switch_bounds_kernel`` first finds, for every output row and column, the range of
  input rows / columns its switches point into; each input element then scans only the outputs
  whose ranges contain it (``ceil(kh / sh) * ceil(kw / sw)`` of them for a real pooling) and checks
  their switches. The same pass counts out-of-range switches for the ``ok`` flag.
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
import math

import numpy as np

try:
    from numba import cuda, float32, float64, int64, uint32, uint64, void
    from numba.cuda.random import xoroshiro128p_dtype, xoroshiro128p_next, xoroshiro128p_type
    _AVAILABLE = cuda.is_available()
except ImportError:  # numba without numba-cuda
    _AVAILABLE = False

if not _AVAILABLE:
    raise RuntimeError(
        "backend 'cuda' needs an NVIDIA GPU and none was found (numba.cuda.is_available() is "
        "False, or numba-cuda is not installed). Set NUMBA_ENABLE_CUDASIM=1 to run the cuda tier "
        "on Numba's CUDA simulator (slow, for tests), or `pip install fastconv[cuda]` to install "
        "numba-cuda on a machine with a GPU; other backends: 'cpu', 'naive'.")

from .._shapes import conv_output_hw, pool_output_hw

__all__ = ["batch_norm", "batch_norm_backward", "conv2d", "conv2d_backward", "im2col", "col2im",
           "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "relu",
           "relu_backward", "sigmoid", "sigmoid_backward",
           "tanh", "tanh_backward", "linear", "linear_backward", "dropout", "dropout_backward",
           "softmax_cross_entropy", "sgd_update", "adam_update", "axpby", "zeros_like",
           "KERNELS"]

#: Threads per block of the 1-D (elementwise and gather) kernels.
THREADS = 256
#: Upper bound on the blocks of a 1-D launch; larger arrays are covered by the grid-stride loops.
MAX_BLOCKS = 4096
#: Side of the square GEMM tile (threads per block: TILE * TILE).
TILE = 16
TILE_PAD = TILE + 1
#: Threads per block of the reductions (a power of two).
REDUCE_THREADS = 256

_RELU, _SIGMOID, _TANH = 0, 1, 2
_RELU_BACK, _SIGMOID_BACK, _TANH_BACK, _MUL = 0, 1, 2, 3
_GOLDEN = 0x9E3779B97F4A7C15


# ---------------------------------------------------------------------------------------------
# Kernels. Each writes into preallocated outputs. Constants are float32(...) literals or arguments
# in the data's dtype, never Python floats or int/float mixes (Numba types int64 op float32 as
# float64): float32 kernels stay in float32, and float64 data promotes the float32 literals exactly.

@cuda.jit(cache=True)
def _im2col_kernel(x, fh, fw, sh, sw, top, left, ho, wo, cols):
    """x (N, C, H, W) -> cols, flat view of (C*fh*fw, N*ho*wo)."""
    n_img, _, h, wd = x.shape
    p = ho * wo
    ncols = n_img * p
    for t in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
        q = t // ncols
        col = t - q * ncols
        n = col // p
        r = col - n * p
        oh = r // wo
        ow = r - oh * wo
        c = q // (fh * fw)
        f = q - c * (fh * fw)
        fy = f // fw
        y = oh * sh + fy - top
        xx = ow * sw + (f - fy * fw) - left
        if y >= 0 and y < h and xx >= 0 and xx < wd:
            cols[t] = x[n, c, y, xx]
        else:
            cols[t] = 0


@cuda.jit(cache=True)
def _col2im_kernel(cols, fh, fw, sh, sw, top, left, ho, wo, dx):
    """cols (C*fh*fw, N*ho*wo) -> dx (N, C, H, W); each thread gathers one dx element."""
    n_img, c_in, h, wd = dx.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        xx = t % wd
        r = t // wd
        y = r % h
        r = r // h
        c = r % c_in
        n = r // c_in
        acc = float32(0)
        for fy in range(fh):
            ty = y + top - fy
            if ty >= 0 and ty % sh == 0 and ty // sh < ho:
                base = (n * ho + ty // sh) * wo
                for fx in range(fw):
                    tx = xx + left - fx
                    if tx >= 0 and tx % sw == 0 and tx // sw < wo:
                        acc += cols[(c * fh + fy) * fw + fx, base + tx // sw]
        dx[n, c, y, xx] = acc


@cuda.jit(cache=True)
def _gemm_kernel(a, b, trans_a, trans_b, bias, bias_mode, pb, c):
    """c = op(a) @ op(b) (+ bias) with op(a) (M, K) and op(b) (K, Ncol).

    ``a`` is stored (K, M) when trans_a, ``b`` (Ncol, K) when trans_b.
    bias_mode 0: none, 1: bias[row], 2: bias[col]. Element (row, col) goes to the flat ``c`` at
    ``((col // pb) * M + row) * pb + col % pb``: row-major (M, Ncol) for pb = Ncol, and
    (Ncol // pb, M, pb) for the convolution's NCHW output.
    """
    sa = cuda.shared.array((TILE, TILE_PAD), dtype=a.dtype)
    sb = cuda.shared.array((TILE, TILE_PAD), dtype=a.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    if trans_a:
        kdim, m = a.shape
    else:
        m, kdim = a.shape
    ncol = b.shape[0] if trans_b else b.shape[1]
    row0 = cuda.blockIdx.y * TILE
    col0 = cuda.blockIdx.x * TILE
    row = row0 + ty
    col = col0 + tx
    acc = float32(0)
    for k0 in range(0, kdim, TILE):
        if trans_a:  # a[k, m]: consecutive tx read consecutive m
            if k0 + ty < kdim and row0 + tx < m:
                sa[tx, ty] = a[k0 + ty, row0 + tx]
            else:
                sa[tx, ty] = 0
        else:  # a[m, k]: consecutive tx read consecutive k
            if row < m and k0 + tx < kdim:
                sa[ty, tx] = a[row, k0 + tx]
            else:
                sa[ty, tx] = 0
        if trans_b:  # b[n, k]
            if col0 + ty < ncol and k0 + tx < kdim:
                sb[tx, ty] = b[col0 + ty, k0 + tx]
            else:
                sb[tx, ty] = 0
        else:  # b[k, n]
            if k0 + ty < kdim and col < ncol:
                sb[ty, tx] = b[k0 + ty, col]
            else:
                sb[ty, tx] = 0
        cuda.syncthreads()
        for i in range(TILE):
            acc += sa[ty, i] * sb[i, tx]
        cuda.syncthreads()
    if row < m and col < ncol:
        if bias_mode == 1:
            acc += bias[row]
        elif bias_mode == 2:
            acc += bias[col]
        blk = col // pb
        c[(blk * m + row) * pb + col - blk * pb] = acc


@cuda.jit(device=True, cache=True)
def _block_sum(part, v):
    """The sum of ``v`` over the block's threads by a shared-memory tree (``part`` holds at least
    blockDim.x elements; blockDim.x a power of two); every thread gets it. All threads must call."""
    tid = cuda.threadIdx.x
    part[tid] = v
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if tid < s:
            part[tid] += part[tid + s]
        cuda.syncthreads()
        s //= 2
    total = part[0]
    cuda.syncthreads()  # part is free for the caller's next reduction
    return total


@cuda.jit(cache=True)
def _channel_sum_kernel(src, dst, sums):
    """src (N, K, P) -> dst (K, N, P), and sums[k] = the sum of src[:, k, :]; one block per k."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=src.dtype)
    n_img, k_out, p = src.shape
    tid = cuda.threadIdx.x
    for k in range(cuda.blockIdx.x, k_out, cuda.gridDim.x):
        acc = float32(0)
        for t in range(tid, n_img * p, cuda.blockDim.x):
            n = t // p
            i = t - n * p
            v = src[n, k, i]
            dst[k, n, i] = v
            acc += v
        total = _block_sum(part, acc)
        if tid == 0:
            sums[k] = total


@cuda.jit(cache=True)
def _bn_stats_kernel(x, training, eps, one, inv_count, mean, var, inv_std):
    """x (N, C, L), one block per channel. Training: mean and biased var of the batch (two passes);
    always inv_std = 1 / sqrt(var + eps). ``eps``, ``one``, ``inv_count`` are in x's dtype."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=x.dtype)
    n_img, c_in, length = x.shape
    tid = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, c_in, cuda.gridDim.x):
        if training:
            acc = float32(0)
            for t in range(tid, n_img * length, cuda.blockDim.x):
                acc += x[t // length, c, t % length]
            mu = _block_sum(part, acc) * inv_count
            acc = float32(0)
            for t in range(tid, n_img * length, cuda.blockDim.x):
                d = x[t // length, c, t % length] - mu
                acc += d * d
            v = _block_sum(part, acc) * inv_count
            if tid == 0:
                mean[c] = mu
                var[c] = v
        if tid == 0:
            inv_std[c] = one / math.sqrt(var[c] + eps)


@cuda.jit(cache=True)
def _bn_affine_kernel(x, weight, bias, mean, inv_std, out):
    """out = (x - mean) * inv_std * weight + bias per channel of x (N, C, L), as scale and shift."""
    n_img, c_in, length = x.shape
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        i = t % length
        r = t // length
        c = r % c_in
        scale = weight[c] * inv_std[c]
        out[r // c_in, c, i] = x[r // c_in, c, i] * scale + (bias[c] - mean[c] * scale)


@cuda.jit(cache=True)
def _bn_grad_sums_kernel(dout, x, mean, inv_std, dweight, dbias):
    """Per channel of (N, C, L), one block each: dbias = sum(dout), dweight = sum(dout * xhat)."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=x.dtype)
    n_img, c_in, length = x.shape
    tid = cuda.threadIdx.x
    for c in range(cuda.blockIdx.x, c_in, cuda.gridDim.x):
        mu = mean[c]
        acc_g = float32(0)
        acc_gx = float32(0)
        for t in range(tid, n_img * length, cuda.blockDim.x):
            g = dout[t // length, c, t % length]
            acc_g += g
            acc_gx += g * (x[t // length, c, t % length] - mu)
        sum_g = _block_sum(part, acc_g)
        sum_gx = _block_sum(part, acc_gx)
        if tid == 0:
            dbias[c] = sum_g
            dweight[c] = sum_gx * inv_std[c]


@cuda.jit(cache=True)
def _bn_dx_kernel(dout, x, weight, mean, inv_std, dweight, dbias, training, inv_count, dx):
    """dx of batch norm on (N, C, L) from the per-channel sums of :func:`_bn_grad_sums_kernel`."""
    n_img, c_in, length = x.shape
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        i = t % length
        r = t // length
        c = r % c_in
        n = r // c_in
        s = inv_std[c]
        k = weight[c] * s
        if training:
            a = dbias[c] * inv_count
            b = dweight[c] * s * inv_count
            dx[n, c, i] = k * (dout[n, c, i] - a - (x[n, c, i] - mean[c]) * b)
        else:
            dx[n, c, i] = k * dout[n, c, i]


@cuda.jit(cache=True)
def _max_pool_kernel(x, kh, kw, sh, sw, out, switches):
    """x (N, C, H, W) -> out, switches (N, C, Ho, Wo); first maximum wins, a NaN beats numbers."""
    n_img, c_in, h, wd = x.shape
    _, _, ho, wo = out.shape
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        ow = t % wo
        r = t // wo
        oh = r % ho
        r = r // ho
        c = r % c_in
        n = r // c_in
        y0 = oh * sh
        x0 = ow * sw
        best = x[n, c, y0, x0]
        arg = y0 * wd + x0
        for i in range(kh):
            for j in range(kw):
                v = x[n, c, y0 + i, x0 + j]
                if v > best or (v != v and best == best):
                    best = v
                    arg = (y0 + i) * wd + x0 + j
        out[n, c, oh, ow] = best
        switches[n, c, oh, ow] = arg


@cuda.jit(cache=True)
def _switch_bounds_kernel(switches, wd, hw, bounds, bad):
    """switches (NC, Ho, Wo). Block b < Ho: bounds[b] = (min, max) input row of output row b's
    in-range switches and bad[b] = its count of out-of-range ones; block Ho + j: input-column
    bounds of output column j. An empty range is (hw, -1)."""
    lo_s = cuda.shared.array(REDUCE_THREADS, dtype=int64)
    hi_s = cuda.shared.array(REDUCE_THREADS, dtype=int64)
    bad_s = cuda.shared.array(REDUCE_THREADS, dtype=int64)
    nc, ho, wo = switches.shape
    tid = cuda.threadIdx.x
    nthr = cuda.blockDim.x
    for blk in range(cuda.blockIdx.x, ho + wo, cuda.gridDim.x):
        lo = hw
        hi = -1
        nbad = 0
        if blk < ho:
            for t in range(tid, nc * wo, nthr):
                pl = t // wo
                s = switches[pl, blk, t - pl * wo]
                if s < 0 or s >= hw:
                    nbad += 1
                else:
                    lo = min(lo, s // wd)
                    hi = max(hi, s // wd)
        else:
            j = blk - ho
            for t in range(tid, nc * ho, nthr):
                pl = t // ho
                s = switches[pl, t - pl * ho, j]
                if s >= 0 and s < hw:
                    lo = min(lo, s % wd)
                    hi = max(hi, s % wd)
        lo_s[tid] = lo
        hi_s[tid] = hi
        bad_s[tid] = nbad
        cuda.syncthreads()
        s = nthr // 2
        while s > 0:
            if tid < s:
                lo_s[tid] = min(lo_s[tid], lo_s[tid + s])
                hi_s[tid] = max(hi_s[tid], hi_s[tid + s])
                bad_s[tid] += bad_s[tid + s]
            cuda.syncthreads()
            s //= 2
        if tid == 0:
            bounds[blk, 0] = lo_s[0]
            bounds[blk, 1] = hi_s[0]
            if blk < ho:
                bad[blk] = bad_s[0]
        cuda.syncthreads()


@cuda.jit(cache=True)
def _max_pool_backward_kernel(dout, switches, bounds, dx):
    """dout, switches (NC, Ho, Wo) -> dx (NC, H, W): each input element sums the gradients whose
    switch points at it, in row-major output order (the cpu tier's order)."""
    nc, h, wd = dx.shape
    _, ho, wo = dout.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        xx = t % wd
        r = t // wd
        y = r % h
        pl = r // h
        target = y * wd + xx
        acc = float32(0)
        for oh in range(ho):
            if bounds[oh, 0] <= y and y <= bounds[oh, 1]:
                for ow in range(wo):
                    if bounds[ho + ow, 0] <= xx and xx <= bounds[ho + ow, 1]:
                        if switches[pl, oh, ow] == target:
                            acc += dout[pl, oh, ow]
        dx[pl, y, xx] = acc


@cuda.jit(cache=True)
def _avg_pool_kernel(x, kh, kw, sh, sw, scale, out):
    """x (N, C, H, W) -> out (N, C, Ho, Wo), window sums times ``scale``."""
    n_img, c_in, h, wd = x.shape
    _, _, ho, wo = out.shape
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        ow = t % wo
        r = t // wo
        oh = r % ho
        r = r // ho
        c = r % c_in
        n = r // c_in
        acc = x[n, c, oh * sh, ow * sw]
        for i in range(kh):
            for j in range(kw):
                if i > 0 or j > 0:
                    acc += x[n, c, oh * sh + i, ow * sw + j]
        out[n, c, oh, ow] = acc * scale


@cuda.jit(cache=True)
def _avg_pool_backward_kernel(dout, kh, kw, sh, sw, scale, dx):
    """dout (N, C, Ho, Wo) -> dx (N, C, H, W); each input element gathers its windows' shares."""
    n_img, c_in, h, wd = dx.shape
    _, _, ho, wo = dout.shape
    for t in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        xx = t % wd
        r = t // wd
        y = r % h
        r = r // h
        c = r % c_in
        n = r // c_in
        acc = float32(0)
        for oh in range(max(0, (y - kh + sh) // sh), min(ho - 1, y // sh) + 1):
            for ow in range(max(0, (xx - kw + sw) // sw), min(wo - 1, xx // sw) + 1):
                acc += dout[n, c, oh, ow] * scale
        dx[n, c, y, xx] = acc


@cuda.jit(cache=True)
def _unary_kernel(x, op, one, out):
    """out = relu(x) (op 0), sigmoid(x) (op 1) or tanh(x) (op 2), flat arrays; ``one`` in x's dtype."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        if op == _RELU:
            if v < 0:
                out[i] = 0
            else:
                out[i] = v
        elif op == _SIGMOID:
            e = math.exp(-abs(v))
            if v >= 0:
                out[i] = one / (one + e)
            else:
                out[i] = e / (one + e)
        else:
            out[i] = math.tanh(v)


@cuda.jit(cache=True)
def _binary_kernel(a, b, op, out):
    """Gradients from the forward output b: relu (op 0), sigmoid (1), tanh (2); op 3: a * b."""
    one = float32(1)
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        g = a[i]
        y = b[i]
        if op == _RELU_BACK:
            if y > 0:
                out[i] = g
            else:
                out[i] = 0
        elif op == _SIGMOID_BACK:
            out[i] = g * y * (one - y)
        elif op == _TANH_BACK:
            out[i] = g * (one - y * y)
        else:
            out[i] = g * y


@cuda.jit(cache=True)
def _dropout_kernel(x, threshold, scale, seed, states, out, mask):
    """Keep x[i] (times scale) where the top 53 bits of a xoroshiro128+ draw are >= threshold."""
    tid = cuda.grid(1)
    # this thread's state: draws 2*tid and 2*tid + 1 of SplitMix64 started at seed
    z0 = uint64(seed) + uint64(2 * tid + 1) * uint64(_GOLDEN)
    for d in range(2):
        z = z0 + uint64(d) * uint64(_GOLDEN)
        z = (z ^ (z >> uint32(30))) * uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> uint32(27))) * uint64(0x94D049BB133111EB)
        z = z ^ (z >> uint32(31))
        if d == 0:
            states[tid]["s0"] = z
        else:
            states[tid]["s1"] = z
    for i in range(tid, x.size, cuda.gridsize(1)):
        m = float32(0)
        if (xoroshiro128p_next(states, tid) >> uint32(11)) >= threshold:
            m = scale
        mask[i] = m
        out[i] = x[i] * m


@cuda.jit(cache=True)
def _softmax_xent_kernel(logits, labels, inv_n, dlogits, rows):
    """One thread per row: dlogits = (softmax - onehot) * inv_n; rows[0, i] = the row's loss,
    rows[1, i] = 1 if labels[i] is outside [0, classes)."""
    n, ncls = logits.shape
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        m = logits[i, 0]
        for j in range(1, ncls):
            v = logits[i, j]
            if v > m or v != v:
                m = v
        total = math.exp(logits[i, 0] - m)
        dlogits[i, 0] = total
        for j in range(1, ncls):
            e = math.exp(logits[i, j] - m)
            dlogits[i, j] = e
            total += e
        lab = labels[i]
        ok = lab >= 0 and lab < ncls
        for j in range(ncls):
            g = dlogits[i, j] / total
            if j == lab:
                g -= float32(1)
            dlogits[i, j] = g * inv_n
        if ok:
            rows[0, i] = -((logits[i, lab] - m) - math.log(total))
            rows[1, i] = 0
        else:
            rows[0, i] = 0
            rows[1, i] = 1


@cuda.jit(cache=True)
def _axpby_kernel(y, x, a, b):
    """y = y * a + x * b in place, flat arrays, a and b in y's dtype."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        y[i] = y[i] * a + x[i] * b


@cuda.jit(cache=True)
def _sgd_kernel(data, grad, buf, lr, momentum, one_minus_dampening, weight_decay, nesterov,
                first_step, use_momentum):
    """torch.optim.SGD on flat arrays, in place (see :func:`sgd_update`)."""
    for i in range(cuda.grid(1), data.size, cuda.gridsize(1)):
        p = data[i]
        d = grad[i]
        if weight_decay != 0:
            d = p * weight_decay + d
        if use_momentum:
            if first_step:
                m = d
            elif one_minus_dampening == 1:
                m = buf[i] * momentum + d
            else:
                m = buf[i] * momentum + d * one_minus_dampening
            buf[i] = m
            if nesterov:
                d = m * momentum + d
            else:
                d = m
        data[i] = p - d * lr


@cuda.jit(cache=True)
def _adam_kernel(data, grad, exp_avg, exp_avg_sq, max_sq, weight_decay, w, one_minus_w, small_w,
                 beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps, amsgrad):
    """torch.optim.Adam on flat arrays, in place (see :func:`adam_update`)."""
    for i in range(cuda.grid(1), data.size, cuda.gridsize(1)):
        p = data[i]
        g = grad[i]
        if weight_decay != 0:
            g = p * weight_decay + g
        m = exp_avg[i]
        diff = g - m
        if small_w:  # torch's two-branch lerp
            m = m + diff * w
        else:
            m = g - diff * one_minus_w
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + g * one_minus_beta2 * g
        exp_avg_sq[i] = v
        if amsgrad:
            v = max(max_sq[i], v)
            max_sq[i] = v
        data[i] = p + m * neg_step_size / (math.sqrt(v) / bc2_sqrt + eps)


def _sigs(*templates):
    return [t.format(f=f) for f in ("float32", "float64") for t in templates]


# signature templates: {f} is the float type
_A4, _A3, _A2, _A1, _I = "{f}[:, :, :, ::1]", "{f}[:, :, ::1]", "{f}[:, ::1]", "{f}[::1]", "int64"
_POOL = f"void({_A4}, int64, int64, int64, int64, {{f}}, {_A4})"

#: Every kernel of this module with example signatures (float32 first), for ahead-of-time checks:
#: ``numba.cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))``.
KERNELS = {
    "_im2col_kernel": (_im2col_kernel, _sigs(f"void({_A4}, {', '.join([_I] * 8)}, {_A1})")),
    "_col2im_kernel": (_col2im_kernel, _sigs(f"void({_A2}, {', '.join([_I] * 8)}, {_A4})")),
    "_gemm_kernel": (_gemm_kernel,
                     _sigs(f"void({_A2}, {_A2}, boolean, boolean, {_A1}, int64, int64, {_A1})")),
    "_channel_sum_kernel": (_channel_sum_kernel, _sigs(f"void({_A3}, {_A3}, {_A1})")),
    "_bn_stats_kernel": (_bn_stats_kernel, _sigs(
        f"void({_A3}, boolean, {{f}}, {{f}}, {{f}}, {_A1}, {_A1}, {_A1})")),
    "_bn_affine_kernel": (_bn_affine_kernel, _sigs(f"void({_A3}, {_A1}, {_A1}, {_A1}, {_A1}, {_A3})")),
    "_bn_grad_sums_kernel": (_bn_grad_sums_kernel,
                             _sigs(f"void({_A3}, {_A3}, {_A1}, {_A1}, {_A1}, {_A1})")),
    "_bn_dx_kernel": (_bn_dx_kernel, _sigs(
        f"void({_A3}, {_A3}, {_A1}, {_A1}, {_A1}, {_A1}, {_A1}, boolean, {{f}}, {_A3})")),
    "_max_pool_kernel": (_max_pool_kernel,
                         _sigs(f"void({_A4}, int64, int64, int64, int64, {_A4}, int64[:, :, :, ::1])")),
    "_switch_bounds_kernel": (_switch_bounds_kernel,
                              ["void(int64[:, :, ::1], int64, int64, int64[:, ::1], int64[::1])"]),
    "_max_pool_backward_kernel": (_max_pool_backward_kernel,
                                  _sigs(f"void({_A3}, int64[:, :, ::1], int64[:, ::1], {_A3})")),
    "_avg_pool_kernel": (_avg_pool_kernel, _sigs(_POOL)),
    "_avg_pool_backward_kernel": (_avg_pool_backward_kernel, _sigs(_POOL)),
    "_unary_kernel": (_unary_kernel, _sigs(f"void({_A1}, int64, {{f}}, {_A1})")),
    "_binary_kernel": (_binary_kernel, _sigs(f"void({_A1}, {_A1}, int64, {_A1})")),
    "_dropout_kernel": (_dropout_kernel, [void(f[::1], uint64, f, int64, xoroshiro128p_type[::1],
                                               f[::1], f[::1]) for f in (float32, float64)]),
    "_softmax_xent_kernel": (_softmax_xent_kernel,
                             _sigs(f"void({_A2}, int64[::1], {{f}}, {_A2}, {_A2})")),
    "_axpby_kernel": (_axpby_kernel, _sigs(f"void({_A1}, {_A1}, {{f}}, {{f}})")),
    "_sgd_kernel": (_sgd_kernel, _sigs(
        f"void({_A1}, {_A1}, {_A1}, {{f}}, {{f}}, {{f}}, {{f}}, boolean, boolean, boolean)")),
    "_adam_kernel": (_adam_kernel, _sigs(
        f"void({_A1}, {_A1}, {_A1}, {_A1}, {_A1}, {{f}}, {{f}}, {{f}}, boolean, {{f}}, {{f}}, "
        "{f}, {f}, {f}, boolean)")),
}


# ---------------------------------------------------------------------------------------------
# Host helpers.

_cache = {}


def _is_device(a):
    return hasattr(a, "copy_to_host")


def _dev(a, dtype=None):
    """``a`` as a C-contiguous device array (NumPy arrays are copied to the device)."""
    if not _is_device(a) and hasattr(a, "__cuda_array_interface__"):
        a = cuda.as_cuda_array(a)
    if _is_device(a):
        if not a.is_c_contiguous():
            raise ValueError(f"cuda backend: device array of shape {tuple(a.shape)} is not "
                             "C-contiguous; pass a contiguous array")
        if dtype is not None and np.dtype(a.dtype) != np.dtype(dtype):
            raise TypeError(f"cuda backend: device array of dtype {a.dtype}, expected {np.dtype(dtype)}")
        return a
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def _flat(a):
    return a.reshape(a.size)


def _empty(shape, dtype):
    return cuda.device_array(shape, dtype=dtype)


def _dummy(dtype):
    """A one-element device array standing in for an absent optional operand."""
    key = ("dummy", np.dtype(dtype))
    if key not in _cache:
        _cache[key] = cuda.to_device(np.zeros(1, dtype=dtype))
    return _cache[key]


def _launch(n):
    """(blocks, threads) of a 1-D launch over n elements: THREADS-thread blocks, fewer threads
    (a multiple of the 32-thread warp) when n is small, at most MAX_BLOCKS blocks."""
    threads = min(THREADS, 32 * max(1, (n + 31) // 32))
    return max(1, min((n + threads - 1) // threads, MAX_BLOCKS)), threads


def _reduce_launch(blocks, count):
    """(blocks, threads) of a reduction over ``count`` elements per block: a power of two from 32
    (one warp) to REDUCE_THREADS, so that small reductions do not idle most of a block."""
    threads = 32
    while threads < min(count, REDUCE_THREADS):
        threads *= 2
    return max(1, min(blocks, 65535)), threads


def _gemm(a, b, trans_a=False, trans_b=False, bias=None, bias_mode=0, pb=None, out=None):
    """op(a) @ op(b) into ``out`` (flat, or a new (M, Ncol) array); see :func:`_gemm_kernel`."""
    m = a.shape[1] if trans_a else a.shape[0]
    ncol = b.shape[0] if trans_b else b.shape[1]
    if out is None:
        out = _empty((m, ncol), a.dtype)
    grid = ((ncol + TILE - 1) // TILE, (m + TILE - 1) // TILE)
    _gemm_kernel[grid, (TILE, TILE)](a, b, trans_a, trans_b,
                                     bias if bias is not None else _dummy(a.dtype),
                                     bias_mode, pb or ncol, _flat(out))
    return out


def _channel_sum(src3):
    """src (N, K, P) -> (dst (K, N, P), sums (K,))."""
    n_img, k, p = src3.shape
    dst = _empty((k, n_img, p), src3.dtype)
    sums = _empty(k, src3.dtype)
    _channel_sum_kernel[_reduce_launch(k, n_img * p)](src3, dst, sums)
    return dst, sums


def _scalar(dtype, v):
    return np.dtype(dtype).type(v)


# ---------------------------------------------------------------------------------------------
# The tier contract (see fastconv.kernels.naive for the shapes).

def _im2col_dev(x, kernel, stride, pads, ho, wo):
    (fh, fw), (sh, sw) = kernel, stride
    cols = _empty((x.shape[1] * fh * fw, x.shape[0] * ho * wo), x.dtype)
    _im2col_kernel[_launch(cols.size)](x, fh, fw, sh, sw, pads[0], pads[2], ho, wo,
                                       _flat(cols))
    return cols


def _col2im_dev(cols, x_shape, kernel, stride, pads, ho, wo):
    (fh, fw), (sh, sw) = kernel, stride
    dx = _empty(x_shape, cols.dtype)
    _col2im_kernel[_launch(dx.size)](cols, fh, fw, sh, sw, pads[0], pads[2], ho, wo, dx)
    return dx


def im2col(x, kernel, stride, pads):
    """x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout); layout as :func:`fastconv.kernels.naive.im2col`."""
    x = _dev(x)
    ho, wo = conv_output_hw(x.shape[2:], kernel, stride, pads)
    return _im2col_dev(x, kernel, stride, pads, ho, wo)


def col2im(cols, x_shape, kernel, stride, pads):
    """cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W), overlaps summed by a per-element gather."""
    ho, wo = conv_output_hw(x_shape[2:], kernel, stride, pads)
    return _col2im_dev(_dev(cols), tuple(x_shape), kernel, stride, pads, ho, wo)


def conv2d(x, w, b, stride, pads):
    """x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).

    ``saved`` is the device column matrix (C*FH*FW, N*Hout*Wout), reused by the backward pass.
    """
    x = _dev(x)
    w = _dev(w, x.dtype)
    n_img = x.shape[0]
    k, c, fh, fw = w.shape
    ho, wo = conv_output_hw(x.shape[2:], (fh, fw), stride, pads)
    cols = _im2col_dev(x, (fh, fw), stride, pads, ho, wo)
    out = _empty((n_img, k, ho, wo), x.dtype)
    _gemm(w.reshape(k, c * fh * fw), cols, bias=None if b is None else _dev(b, x.dtype),
          bias_mode=0 if b is None else 1, pb=ho * wo, out=out)
    return out, cols


def conv2d_backward(dout, x, w, has_bias, stride, pads, saved, need_dx=True):
    """dout (N, K, Hout, Wout) -> (dx or None, dw, db or None); see :func:`conv2d`."""
    dout = _dev(dout)
    w = _dev(w, dout.dtype)
    n_img, k, ho, wo = dout.shape
    kernel = tuple(w.shape[2:])
    rows = w.shape[1] * kernel[0] * kernel[1]
    cols = saved if saved is not None else _im2col_dev(_dev(x, dout.dtype), kernel, stride, pads,
                                                       ho, wo)
    dout_t, db = _channel_sum(dout.reshape(n_img, k, ho * wo))
    dout_t = dout_t.reshape(k, n_img * ho * wo)
    dw = _gemm(dout_t, cols, trans_b=True)
    dx = None
    if need_dx:
        dcols = _gemm(w.reshape(k, rows), dout_t, trans_a=True)
        dx = _col2im_dev(dcols, tuple(x.shape), kernel, stride, pads, ho, wo)
    return dx, dw.reshape(w.shape), (db if has_bias else None)


def max_pool2d(x, kernel, stride):
    """x (N, C, H, W) -> (out, switches int64), both on the device; the cpu tier's switch rule."""
    x = _dev(x)
    n_img, c = x.shape[:2]
    ho, wo = pool_output_hw(x.shape[2:], kernel, stride)
    out = _empty((n_img, c, ho, wo), x.dtype)
    switches = _empty((n_img, c, ho, wo), np.int64)
    _max_pool_kernel[_launch(out.size)](x, kernel[0], kernel[1], stride[0], stride[1],
                                        out, switches)
    return out, switches


def max_pool2d_backward(dout, switches, input_shape):
    """Route dout (N, C, Hout, Wout) by switches into dx (input_shape) -> (dx, ok).

    ``ok`` (a host bool, the one value copied back) is False if a switch is outside the plane.
    """
    dout = _dev(dout)
    switches = _dev(switches, np.int64)
    n_img, c, h, wd = input_shape
    ho, wo = dout.shape[2:]
    sw3 = switches.reshape(n_img * c, ho, wo)
    bounds = _empty((ho + wo, 2), np.int64)
    bad = _empty(ho, np.int64)
    _switch_bounds_kernel[_reduce_launch(ho + wo, n_img * c * max(ho, wo))](sw3, wd, h * wd,
                                                                             bounds, bad)
    dx = _empty((n_img * c, h, wd), dout.dtype)
    _max_pool_backward_kernel[_launch(dx.size)](dout.reshape(n_img * c, ho, wo), sw3,
                                                bounds, dx)
    return dx.reshape(tuple(input_shape)), int(bad.copy_to_host().sum()) == 0


def avg_pool2d(x, kernel, stride):
    """x (N, C, H, W) -> (N, C, Hout, Wout), the mean of each window."""
    x = _dev(x)
    ho, wo = pool_output_hw(x.shape[2:], kernel, stride)
    out = _empty(tuple(x.shape[:2]) + (ho, wo), x.dtype)
    scale = _scalar(x.dtype, 1.0 / (kernel[0] * kernel[1]))
    _avg_pool_kernel[_launch(out.size)](x, kernel[0], kernel[1], stride[0], stride[1],
                                        scale, out)
    return out


def avg_pool2d_backward(dout, input_shape, kernel, stride):
    """dout (N, C, Hout, Wout) -> dx (input_shape), each gradient spread evenly over its window."""
    dout = _dev(dout)
    dx = _empty(tuple(input_shape), dout.dtype)
    scale = _scalar(dout.dtype, 1.0 / (kernel[0] * kernel[1]))
    _avg_pool_backward_kernel[_launch(dx.size)](dout, kernel[0], kernel[1], stride[0],
                                                stride[1], scale, dx)
    return dx


def batch_norm(x, weight, bias, mean, var, training, eps):
    """Batch normalisation per channel of x (N, C, L) -> (out, batch_mean, batch_var, saved).

    As :func:`fastconv.kernels.naive.batch_norm`; everything, ``saved = (mean, inv_std)`` too,
    stays on the device.
    """
    x = _dev(x)
    dt = x.dtype
    n_img, c, length = x.shape
    weight, bias = _dev(weight, dt), _dev(bias, dt)
    if training:
        mean, var = _empty(c, dt), _empty(c, dt)
    else:
        mean, var = _dev(mean, dt), _dev(var, dt)
    inv_std = _empty(c, dt)
    _bn_stats_kernel[_reduce_launch(c, n_img * length if training else 1)](
        x, bool(training), _scalar(dt, eps), _scalar(dt, 1), _scalar(dt, 1.0 / (n_img * length)),
        mean, var, inv_std)
    out = _empty(x.shape, dt)
    _bn_affine_kernel[_launch(x.size)](x, weight, bias, mean, inv_std, out)
    return out, (mean if training else None), (var if training else None), (mean, inv_std)


def batch_norm_backward(dout, x, weight, saved, training, need_dx=True):
    """dout (N, C, L) -> (dx or None, dweight (C,), dbias (C,)), all on the device."""
    dout = _dev(dout)
    dt = dout.dtype
    x, weight = _dev(x, dt), _dev(weight, dt)
    mean, inv_std = (_dev(a, dt) for a in saved)
    n_img, c, length = x.shape
    dweight, dbias = _empty(c, dt), _empty(c, dt)
    _bn_grad_sums_kernel[_reduce_launch(c, n_img * length)](dout, x, mean, inv_std, dweight, dbias)
    dx = None
    if need_dx:
        dx = _empty(x.shape, dt)
        _bn_dx_kernel[_launch(x.size)](dout, x, weight, mean, inv_std, dweight, dbias,
                                       bool(training), _scalar(dt, 1.0 / (n_img * length)), dx)
    return dx, dweight, dbias


def _unary(x, op):
    x = _dev(x)
    out = _empty(x.shape, x.dtype)
    _unary_kernel[_launch(x.size)](_flat(x), op, _scalar(x.dtype, 1), _flat(out))
    return out


def _binary(a, b, op):
    b = _dev(b)
    a = _dev(a, b.dtype)
    out = _empty(a.shape, a.dtype)
    _binary_kernel[_launch(a.size)](_flat(a), _flat(b), op, _flat(out))
    return out


def relu(x):
    """max(x, 0), NaN propagating."""
    return _unary(x, _RELU)


def relu_backward(dout, out):
    """dout where the forward output was positive, else 0."""
    return _binary(dout, out, _RELU_BACK)


def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow."""
    return _unary(x, _SIGMOID)


def sigmoid_backward(dout, out):
    return _binary(dout, out, _SIGMOID_BACK)


def tanh(x):
    return _unary(x, _TANH)


def tanh_backward(dout, out):
    return _binary(dout, out, _TANH_BACK)


def linear(x, w, b):
    """x (N, in) @ w.T, w (out, in), plus b (out,) -> (N, out)."""
    x = _dev(x)
    w = _dev(w, x.dtype)
    return _gemm(x, w, trans_b=True, bias=None if b is None else _dev(b, x.dtype),
                 bias_mode=0 if b is None else 2)


def linear_backward(dout, x, w, has_bias, need_dx=True):
    """dout (N, out) -> (dx (N, in) or None, dw (out, in), db (out,) or None)."""
    dout = _dev(dout)
    x = _dev(x, dout.dtype)
    w = _dev(w, dout.dtype)
    n, k = dout.shape
    dout_t, db = _channel_sum(dout.reshape(n, k, 1))
    dw = _gemm(dout_t.reshape(k, n), x)
    dx = _gemm(dout, w) if need_dx else None
    return dx, dw, (db if has_bias else None)


def dropout(x, p, seed):
    """Inverted dropout with the device RNG -> (out, mask); mask holds 0 or 1/(1-p) in x's dtype.

    Each element is kept with probability ``1 - p`` (to 2**-53); the mask is a function of
    ``(seed, x.size)``, so a seed repeats it, but it differs from the cpu tier's NumPy mask.
    """
    x = _dev(x)
    blocks, threads = _launch(x.size)
    key = ("rng", blocks * threads)
    if key not in _cache:  # one state per thread, reused across calls
        _cache[key] = cuda.device_array(blocks * threads, dtype=xoroshiro128p_dtype)
    out = _empty(x.shape, x.dtype)
    mask = _empty(x.shape, x.dtype)
    threshold = np.uint64(min(math.ceil(p * 2.0 ** 53), 2 ** 53))
    _dropout_kernel[blocks, threads](_flat(x), threshold, _scalar(x.dtype, 1.0 / (1.0 - p)),
                                     int(seed) & (2 ** 63 - 1), _cache[key], _flat(out), _flat(mask))
    return out, mask


def dropout_backward(dout, mask):
    return _binary(dout, mask, _MUL)


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of logits (N, classes) against int labels (N,) -> (loss, dlogits).

    ``dlogits`` stays on the device; the per-row losses come back to form the float ``loss``.
    Raises ``ValueError`` if a label is outside ``[0, classes)``.
    """
    logits = _dev(logits)
    labels = _dev(labels, np.int64)
    n, ncls = logits.shape
    dlogits = _empty((n, ncls), logits.dtype)
    rows = _empty((2, n), logits.dtype)
    _softmax_xent_kernel[_launch(n)](logits, labels, _scalar(logits.dtype, 1.0 / n),
                                     dlogits, rows)
    host = rows.copy_to_host()
    if host[1].any():
        raise ValueError(f"labels must lie in [0, {ncls}); {int(host[1].sum())} of {n} do not")
    return float(host[0].mean()), dlogits


def axpby(y, x, a, b):
    """``y = y * a + x * b`` in place on the device (``y`` a device array, ``x`` of its shape).

    For running averages such as BatchNorm's running statistics: ``axpby(running_mean,
    batch_mean, 1 - momentum, momentum)`` is NumPy's ``running_mean *= 1 - momentum;
    running_mean += momentum * batch_mean``, operation for operation.
    """
    y = _in_place(y, "y")
    x = _dev(x, y.dtype)
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"axpby: x has shape {tuple(x.shape)}, y has {tuple(y.shape)}")
    _axpby_kernel[_launch(y.size)](_flat(y), _flat(x), _scalar(y.dtype, a), _scalar(y.dtype, b))


def zeros_like(a):
    """A zero-filled device array of ``a``'s shape and dtype (for optimizer state buffers)."""
    return cuda.to_device(np.zeros(tuple(a.shape), dtype=a.dtype))


def _in_place(a, name):
    if not _is_device(a):
        raise TypeError(f"{name} must be a device array (updated in place), got {type(a).__name__}")
    return _dev(a)


def sgd_update(data, grad, buf, lr, momentum, dampening, nesterov, weight_decay, first_step):
    """One torch.optim.SGD update of ``data``, in place on the device.

    Same arguments as :func:`fastconv.optim.sgd_update`. ``data`` and ``buf`` (the momentum buffer,
    None when ``momentum == 0``) are device arrays updated in place; ``grad`` (data's shape) may
    be a NumPy array. Hyper-parameters are Python floats, applied in data's dtype.
    """
    data = _in_place(data, "data")
    dt = data.dtype
    grad = _dev(grad, dt)
    use_momentum = momentum != 0
    buf = _in_place(buf, "buf") if use_momentum else _dummy(dt)
    _sgd_kernel[_launch(data.size)](
        _flat(data), _flat(grad), _flat(buf), _scalar(dt, lr), _scalar(dt, momentum),
        _scalar(dt, 1.0 - dampening), _scalar(dt, weight_decay), bool(nesterov), bool(first_step),
        use_momentum)


def adam_update(data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
                weight_decay, amsgrad):
    """One torch.optim.Adam update of ``data``, in place on the device.

    Same arguments as :func:`fastconv.optim.adam_update`: ``exp_avg``, ``exp_avg_sq`` and (with
    ``amsgrad``) ``max_exp_avg_sq`` are device arrays updated in place; ``step`` counts this step
    (1 first). Scalars are folded on the host in float64, then applied in data's dtype.
    """
    data = _in_place(data, "data")
    dt = data.dtype
    grad = _dev(grad, dt)
    max_sq = _in_place(max_exp_avg_sq, "max_exp_avg_sq") if amsgrad else _dummy(dt)
    w = 1.0 - beta1
    s = lambda v: _scalar(dt, v)  # noqa: E731
    _adam_kernel[_launch(data.size)](
        _flat(data), _flat(grad), _flat(_in_place(exp_avg, "exp_avg")),
        _flat(_in_place(exp_avg_sq, "exp_avg_sq")), _flat(max_sq), s(weight_decay), s(w),
        s(1.0 - w), abs(w) < 0.5, s(beta2), s(1.0 - beta2), s(-lr / (1.0 - beta1 ** step)),
        s((1.0 - beta2 ** step) ** 0.5), s(eps), bool(amsgrad))
