"""The dense layer's kernels (linear, linear_backward) of the cuda tier against the cpu tier and
the naive oracle on Numba's simulator (tiny shapes). The cpu tier's splits of Linear:
tests/kernels/cpu/test_splits.py and test_threads.py; Linear as a layer: tests/layers/."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv.kernels import cpu, naive

from helpers import DTYPES, random
from op_helpers import cuda_test, share_on_simulator
from op_helpers import both  # noqa: F401  (a fixture)

#: A tenth of the profile's examples (at least 4): the simulator runs each GPU thread as Python.
FEW = share_on_simulator(10, 4)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(n=st.integers(1, 4), fin=st.integers(1, 20), fout=st.integers(1, 10), bias=st.booleans(),
       need_dx=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_matches_cpu_and_naive(G, both, dtype, n, fin, fout, bias, need_dx, seed):
    rng = np.random.default_rng(seed)
    x, w = random(rng, (n, fin), dtype), random(rng, (fout, fin), dtype)
    b = random(rng, fout, dtype) if bias else None
    both("linear", G.linear(x, w, b), cpu.linear(x, w, b), naive.linear(x, w, b))
    dout = random(rng, (n, fout), dtype)
    got = G.linear_backward(dout, x, w, bias, need_dx)
    ref = cpu.linear_backward(dout, x, w, bias, need_dx)
    ref_naive = naive.linear_backward(dout, x, w, bias, need_dx)
    for name, g, r, o in zip(("dx", "dw", "db"), got, ref, ref_naive):
        assert (g is None) == (r is None) == (o is None), name
        if r is not None:
            both(f"linear_backward {name}", g, r, o)
