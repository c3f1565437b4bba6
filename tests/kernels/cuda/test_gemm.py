"""The cuda tier's GEMM (fastconv.kernels.cuda._gemm) on Numba's simulator: tiles, transposes,
the bias and the NCHW epilogue that the convolutions use."""
import numpy as np
import pytest

from helpers import random
from op_helpers import cuda_test


@cuda_test
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_tiles_transposes_bias_and_nchw_epilogue(G, close, trans_a, trans_b):
    """17 x 18 @ 18 x 6 crosses tile borders in M and K; bias and the blocked layout ride along."""
    from fastconv.kernels.cuda._gemm import _gemm
    from fastconv.kernels.cuda._launch import _dev, _empty
    rng = np.random.default_rng(int(trans_a) * 2 + trans_b)
    a, b = random(rng, (17, 18), np.float32), random(rng, (18, 6), np.float32)
    bias = random(rng, 17, np.float32)
    got = _gemm(_dev(np.ascontiguousarray(a.T) if trans_a else a),
                _dev(np.ascontiguousarray(b.T) if trans_b else b),
                trans_a, trans_b, bias=_dev(bias), bias_mode=1)
    close("gemm", got, a @ b + bias[:, None])
    # columns as 3 images of 2 positions, written as (3, 17, 2) with a per-column bias
    out = _empty((3, 17, 2), np.float32)
    _gemm(_dev(a), _dev(b), bias=_dev(bias[:6]), bias_mode=2, pb=2, out=out)
    close("gemm nchw", out, (a @ b + bias[:6]).reshape(17, 3, 2).transpose(1, 0, 2))
