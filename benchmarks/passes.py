"""Per-pass efficiency: GFLOP/s of a convolution's forward, input gradient and weight gradient on
one thread, beside the SGEMM rate of the same process.

Every pass of a dense convolution costs the same ``2*N*K*C*FH*FW*Hout*Wout`` FLOPs (forward:
each output is a C*FH*FW dot product; dx and dW are the transposed products of the same sizes).
Each is timed through :mod:`fastconv.functional` on the cpu tier, so it measures whatever path
the tier picks for the shape:

* ``fwd``: ``conv2d``;
* ``dW``: ``conv2d_backward(..., need_dx=False)`` (dW and the tiny db);
* ``dx``: ``conv2d_backward`` with dx, minus the dW call of the same round (the functional API
  has no dx-only call), so its spread is the widest.

Beside each, OpenBLAS's SGEMM (``np.matmul``, float32) of the im2col product with the same FLOPs
(:func:`gemm_dims`) and of a square product, timed in the same interleaved rounds. Numba, the cpu
tier's pool and BLAS all get one thread for this section (the others run on ``--threads``).
"""
from collections import namedtuple

import numpy as np

from fastconv import functional as F

from . import cases

SHAPES = ("B", "D")
PASSES = ("fwd", "dx", "dw")
LABELS = {"fwd": "forward", "dx": "dx", "dw": "dW (+db)"}

PassRow = namedtuple("PassRow", "shape pass_ flops gemm conv gemm_rate square_rate ratio square_ratio")
PassRow.__doc__ = ("conv: Stat of seconds; gemm: (m, k, n); *_rate: GFLOP/s of the medians; "
                   "ratio: Stat of fastconv GFLOP/s / SGEMM GFLOP/s per round (same product; square).")


def pass_flops(s):
    """FLOPs of each pass of conv shape ``s``: ``{"fwd", "dx", "dw"}`` -> ``2*N*K*C*FH*FW*Ho*Wo``."""
    ho = (s.h + 2 * s.pad - s.fh) // s.stride + 1
    wo = (s.w + 2 * s.pad - s.fw) // s.stride + 1
    flops = 2 * s.n * s.k * s.c * s.fh * s.fw * ho * wo
    return dict.fromkeys(PASSES, flops)


def gemm_dims(s, pass_):
    """``(m, k, n)`` of the im2col product of ``pass_``: an (m, k) @ (k, n) SGEMM of the same FLOPs.

    fwd: w (K, C*FH*FW) @ cols (C*FH*FW, N*P); dx: w.T (C*FH*FW, K) @ dout (K, N*P);
    dW: dout (K, N*P) @ cols.T (N*P, C*FH*FW), with P = Hout*Wout.
    """
    ho = (s.h + 2 * s.pad - s.fh) // s.stride + 1
    wo = (s.w + 2 * s.pad - s.fw) // s.stride + 1
    rows, cols = s.c * s.fh * s.fw, s.n * ho * wo
    return {"fwd": (s.k, rows, cols), "dx": (rows, s.k, cols), "dw": (s.k, cols, rows)}[pass_]


def _gemm_case(m, k, n, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), dtype=np.float32)
    return cases.Case(lambda: np.matmul(a, b, out=c), 1.0)


def pass_cases(name, square):
    """impl -> :class:`cases.Case` for shape ``name``: the three conv calls and the four SGEMMs."""
    s = cases.CONV_SHAPES[name]
    x, w, b, dout = cases.conv_arrays(s)
    cache = F.conv2d(x, w, b, s.stride, s.pad, backend="cpu")[1]
    fns = {"fwd": cases.Case(lambda: F.conv2d(x, w, b, s.stride, s.pad, backend="cpu"), 1.0),
           "bwd": cases.Case(lambda: F.conv2d_backward(dout, cache), 1.0),
           "dw": cases.Case(lambda: F.conv2d_backward(dout, cache, need_dx=False), 1.0)}
    for i, p in enumerate(PASSES):
        fns["gemm_" + p] = _gemm_case(*gemm_dims(s, p), seed=10 + i)
    fns["gemm_square"] = _gemm_case(square, square, square, seed=20)
    return fns


def run(args, interleave, stat):
    """:class:`PassRow` per shape of :data:`SHAPES` (in ``args.shapes``) and pass, on one thread.

    ``interleave`` and ``stat`` are the report's (passed in to keep one timing loop).
    """
    square = 1024 if args.quick else 2048
    rows = []
    cases.configure_threads(1)
    try:
        for name in (n for n in SHAPES if n in args.shapes):
            s = cases.CONV_SHAPES[name]
            times = interleave(pass_cases(name, square), args.rounds, args.min_time, args.settle)
            times["dx"] = [a - b if a is not None and b is not None else None
                           for a, b in zip(times["bwd"], times["dw"])]
            sq_flops = 2 * square ** 3
            for p, flops in pass_flops(s).items():
                conv, gemm = times[p], times["gemm_" + p]
                m, k, n = gemm_dims(s, p)
                # same FLOPs: the GFLOP/s ratio is the time ratio, SGEMM over fastconv
                ratio = stat([g / c for g, c in zip(gemm, conv) if c and c > 0])
                square_ratio = stat([(flops / c) / (sq_flops / q) for q, c in zip(times["gemm_square"], conv)
                                     if c and c > 0])
                rows.append(PassRow(name, p, flops, (m, k, n), stat(conv),
                                    2 * m * k * n / stat(gemm).median / 1e9,
                                    sq_flops / stat(times["gemm_square"]).median / 1e9, ratio, square_ratio))
    finally:
        cases.configure_threads()
    return rows, square


def table(rows, square, ms, ratio_cell):
    """Markdown lines of the per-pass table (``ms`` and ``ratio_cell`` format Stats)."""
    lines = [f"| shape | pass | GFLOP | fastconv ms | fastconv GFLOP/s | SGEMM GFLOP/s (same product m x k x n) "
             f"| fastconv/SGEMM | SGEMM {square}^3 GFLOP/s | fastconv/SGEMM {square}^3 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rate = f"{r.flops / r.conv.median / 1e9:.1f}" if r.conv and r.conv.median > 0 else "-"
        m, k, n = r.gemm
        lines.append(f"| {r.shape} | {LABELS[r.pass_]} | {r.flops / 1e9:.3f} | {ms(r.conv)} | {rate} | "
                     f"{r.gemm_rate:.1f} ({m} x {k} x {n}) | {ratio_cell(r.ratio)} | {r.square_rate:.1f} | "
                     f"{ratio_cell(r.square_ratio)} |")
    return lines
