"""The cpu tier's switch-free max pool (fastconv/kernels/cpu/pooling.py ``max_pool2d_values``,
what compiled plans run): the same maxima as ``max_pool2d`` to the bit, NaN and infinities
included, for the unrolled 2x2 windows and every other window (dilated 2x2 ones too) through the
general kernel."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from fastconv.kernels.cpu import pooling

from helpers import DTYPES, HYPOTHESIS


@HYPOTHESIS
@given(n=st.integers(0, 3), c=st.integers(1, 3), h=st.integers(2, 9), w=st.integers(2, 9),
       window=st.sampled_from([((2, 2), (2, 2), (0, 0), (1, 1)), ((3, 3), (2, 2), (1, 1), (1, 1)),
                               ((2, 2), (1, 1), (0, 0), (1, 1)), ((2, 2), (2, 2), (0, 0), (2, 2))]),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**16), ceil=st.booleans())
def test_maxima_equal_max_pool2d(n, c, h, w, window, dtype, seed, ceil):
    kernel, stride, padding, dilation = window
    if (h - dilation[0] - 1) < 0 or (w - dilation[1] - 1) < 0:  # a dilated window must fit
        dilation = (1, 1)
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, (n, c, h, w)).astype(dtype)  # ties, and +-0 from the sign below
    x *= rng.choice([-1, 1], x.shape).astype(dtype)
    specials = rng.random(x.shape)
    x[specials < 0.05] = np.nan
    x[(specials >= 0.05) & (specials < 0.08)] = np.inf
    x[(specials >= 0.08) & (specials < 0.1)] = -np.inf
    want = pooling.max_pool2d(x, kernel, stride, padding, dilation, ceil)[0]
    got = pooling.max_pool2d_values(x, kernel, stride, padding, dilation, ceil)
    assert got.dtype == x.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_dilated_2x2_stride_2_windows_are_not_the_unrolled_ones():
    """A dilated 2x2 / stride-2 window spans 3x3 pixels: the general kernel's maxima."""
    x = np.random.default_rng(1).standard_normal((1, 2, 8, 8)).astype(np.float32)
    want = pooling.max_pool2d(x, (2, 2), (2, 2), (0, 0), (2, 2))[0]
    np.testing.assert_array_equal(pooling.max_pool2d_values(x, (2, 2), (2, 2), (0, 0), (2, 2)),
                                  want)
