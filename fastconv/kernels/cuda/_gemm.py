"""The cuda tier's shared products: the tiled GEMM (convolution and Linear) and the per-channel
sum fused with the ``(N, K, P) -> (K, N, P)`` transpose that the backward GEMMs need."""
from numba import cuda, float32

from ._launch import (REDUCE_THREADS, TILE, TILE_PAD, _A1, _A2, _A3, _block_sum, _dummy, _empty,
                      _flat, _reduce_launch, _sigs)


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


def _gemm(a, b, trans_a=False, trans_b=False, bias=None, bias_mode=0, pb=None, out=None):
    """op(a) @ op(b) into ``out`` (flat, or a new (M, Ncol) array); see :func:`_gemm_kernel`."""
    m = a.shape[1] if trans_a else a.shape[0]
    ncol = b.shape[0] if trans_b else b.shape[1]
    if out is None:
        out = _empty((m, ncol), a.dtype)
    if m == 0 or ncol == 0:  # nothing to write (a grid with no blocks is an invalid launch)
        return out
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


#: The kernels of this file with example signatures (float32 first); see ``KERNELS`` in
#: :mod:`fastconv.kernels.cuda`.
KERNELS = {
    "_gemm_kernel": (_gemm_kernel,
                     _sigs(f"void({_A2}, {_A2}, boolean, boolean, {_A1}, int64, int64, {_A1})")),
    "_channel_sum_kernel": (_channel_sum_kernel, _sigs(f"void({_A3}, {_A3}, {_A1})")),
}
