"""The micro-kernel generator (fastconv.kernels.cpu.microkernel) against plain NumPy, and the
target it reads: vector width and registers follow NUMBA_CPU_NAME / NUMBA_CPU_FEATURES."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from numba import njit

from fastconv.kernels.cpu import blocked, blocked_kernels
from fastconv.kernels.cpu import microkernel as mk

from helpers import HYPOTHESIS

#: (rows, nvec, a_rs, a_ls, b_ls, unroll): two shapes of the tests' own and the three kernels
#: the blocked convolution uses (every generated kernel in use is checked).
SHAPES = {"3x2": (3, 2, 5, 2, "lanes", 4),
          "lanes": ("lanes", 1, 1, ("lanes", 2), ("lanes", 1), 3)}
KERNELS = {name: mk.kernel(*shape) for name, shape in SHAPES.items()}
KERNELS["forward"], KERNELS["weights"] = blocked._FORWARD, blocked._WEIGHTS
KERNELS["weights_wide"] = blocked_kernels._WEIGHTS_WIDE
SHAPES["forward"] = (blocked.ROWS, blocked.NVEC, "lanes", 1, "lanes", 4)
SHAPES["weights"] = ("lanes", 1, 1, "lanes", "lanes", 4)
SHAPES["weights_wide"] = (blocked_kernels.WIDE_ROWS, blocked_kernels.WIDE_VEC, 1, "lanes",
                          "lanes", 4)


def _caller(kern):
    """An njit function calling ``kern`` with ``ntaps = len(aoffs)``."""
    @njit
    def call(a, a_off, aoffs, nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs, c_ns, add):
        kern(a, a_off, aoffs, aoffs.shape[0], nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs,
             c_ns, add)
    return call


CALLS = {name: _caller(kern) for name, kern in KERNELS.items()}
_call_3x2, _call_forward = CALLS["3x2"], CALLS["forward"]


def stride(spec, v):
    return v if spec == "lanes" else spec[1] * v if isinstance(spec, tuple) else spec


def reference(args, shape, v):
    """The kernel's definition (module docstring) in float64 NumPy; returns the new c."""
    a, a_off, aoffs, nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs, c_ns, add = args
    rows, nvec, a_rs, a_ls, b_ls = (stride(s, v) for s in shape[:5])
    out = c.astype(np.float64)
    for r in range(rows):
        for j in range(nvec):
            acc = np.zeros(v)
            for t in range(len(aoffs)):
                for step in range(nsteps):
                    s = a[a_off + aoffs[t] + r * a_rs + step * a_ls]
                    o = b_off + t * b_ts + step * b_ls + j * b_ns
                    acc += np.float64(s) * b[o:o + v]
            o = c_off + r * c_rs + j * c_ns
            out[o:o + v] = out[o:o + v] + acc if add else acc
    return out


@given(data=st.data())
@HYPOTHESIS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(SHAPES))
def test_kernel_matches_numpy(name, dtype, data):
    """Random offsets, tap tables and step counts (zero, and remainders of the unrolled steps),
    store and add, on random tiles."""
    v = mk.lanes(dtype)
    shape = SHAPES[name]
    rows, nvec, a_rs, a_ls, b_ls = (stride(s, v) for s in shape[:5])
    draw = lambda lo, hi: data.draw(st.integers(lo, hi))  # noqa: E731
    ntaps, nsteps = draw(0, 3), draw(0, 9)
    a_off = draw(0, 5)
    aoffs = np.array([draw(0, 20) for _ in range(ntaps)], dtype=np.int64)
    b_ts, b_off = draw(0, 40), draw(0, 5)
    b_ns = 10 * b_ls + draw(0, v)
    c_rs, c_off = draw(v, v + 2), draw(0, 5)
    c_ns = rows * c_rs + draw(0, 3)
    add = draw(0, 1)
    rng = np.random.default_rng(draw(0, 2**31))
    a = rng.standard_normal(a_off + 21 + rows * a_rs + 9 * a_ls).astype(dtype)
    b = rng.standard_normal(b_off + 3 * b_ts + 9 * b_ls + nvec * b_ns + v).astype(dtype)
    c = rng.standard_normal(c_off + nvec * c_ns + v).astype(dtype)
    args = (a, a_off, aoffs, nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs, c_ns, add)
    ref = reference(args, shape, v)
    CALLS[name](*args)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(c, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max()))


#: (segments, length, nvec, a_rs, a_ls, b_ls, unroll): one of the tests' own and the blocked
#: tiles' segment kernel.
SEGMENT_SHAPES = {"2x3x2": (2, 3, 2, 2, 1, "lanes", 4),
                  "forward": (blocked_kernels.SEGMENTS, blocked_kernels.SEG_LEN, blocked.NVEC,
                              "lanes", 1, "lanes", 4)}


def _segment_caller(kern):
    @njit
    def call(a, a_off, aoffs, nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs, c_ns, add, seg, s0):
        kern(a, a_off, aoffs, aoffs.shape[0], nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs,
             c_ns, add, seg, s0)
    return call


SEGMENT_CALLS = {"2x3x2": _segment_caller(mk.segment_kernel(*SEGMENT_SHAPES["2x3x2"])),
                 "forward": _segment_caller(blocked_kernels._SEGMENT_FORWARD)}


@given(data=st.data())
@HYPOTHESIS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(SEGMENT_SHAPES))
def test_segment_kernel_matches_numpy(name, dtype, data):
    """Segments at random starts (apart, so no output is written twice), read from ``seg[s0:]``:
    each segment is the plain kernel's tile of ``length`` rows moved to its start, in a and c."""
    v = mk.lanes(dtype)
    segments, length, nvec, a_rs, a_ls, b_ls, _ = SEGMENT_SHAPES[name]
    a_rs, a_ls, b_ls = (stride(x, v) for x in (a_rs, a_ls, b_ls))
    draw = lambda lo, hi: data.draw(st.integers(lo, hi))  # noqa: E731
    ntaps, nsteps = draw(0, 3), draw(0, 9)
    aoffs = np.array([draw(0, 20) for _ in range(ntaps)], dtype=np.int64)
    b_ts, b_off = draw(0, 40), draw(0, 5)
    b_ns = 10 * b_ls + draw(0, v)
    c_rs, c_off, add = draw(v, v + 2), draw(0, 5), draw(0, 1)
    c_ns = length * c_rs + draw(0, 3)
    span = max((length - 1) * c_rs + (nvec - 1) * c_ns + v, length * a_rs)
    s0 = draw(0, 2)
    starts = np.cumsum([draw(0, 9)] + [span + draw(0, 9) for _ in range(segments + 1)])
    seg = np.asarray(starts, dtype=np.int64)
    rng = np.random.default_rng(draw(0, 2**31))
    a = rng.standard_normal(seg[-1] + 21 + length * a_rs + 9 * a_ls).astype(dtype)
    b = rng.standard_normal(b_off + 3 * b_ts + 9 * b_ls + nvec * b_ns + v).astype(dtype)
    c = rng.standard_normal(c_off + seg[-1] + span + v).astype(dtype)
    ref = c.astype(np.float64)
    for i in range(segments):
        args = (a, seg[s0 + i], aoffs, nsteps, b, b_off, b_ts, b_ns, ref, c_off + seg[s0 + i],
                c_rs, c_ns, add)
        ref = reference(args, (length, nvec, a_rs, a_ls, b_ls), v)
    SEGMENT_CALLS[name](a, 0, aoffs, nsteps, b, b_off, b_ts, b_ns, c, c_off, c_rs, c_ns, add,
                        seg, s0)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(c, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max()))


@njit
def _transpose(a, aoffs, nload, c, coffs, nstore, bias, b_off):
    mk.transpose(a, aoffs, nload, c, coffs, nstore, bias, b_off)


@given(data=st.data())
@HYPOTHESIS
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_matches_numpy(dtype, data):
    """Rows loaded from random offsets (the last ``V - nload`` zero), their columns stored at
    other offsets with a bias added, only the first ``nstore``."""
    v = mk.lanes(dtype)
    nload, nstore, b_off = (data.draw(st.integers(0, v)) for _ in range(3))
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(40 * v).astype(dtype)
    aoffs = rng.integers(0, 39 * v, v).astype(np.int64)
    coffs = (rng.permutation(v) * (v + 3) + rng.integers(0, 3)).astype(np.int64)
    c = np.full(v * (v + 3) + 3 + v, 7, dtype)
    bias = rng.standard_normal(2 * v + 1).astype(dtype)
    rows = np.stack([a[o:o + v] if i < nload else np.zeros(v, dtype)
                     for i, o in enumerate(aoffs)])
    ref = c.copy()
    for j in range(nstore):
        ref[coffs[j]:coffs[j] + v] = rows[:, j] + bias[b_off + j]
    _transpose(a, aoffs, nload, c, coffs, nstore, bias, b_off)
    np.testing.assert_array_equal(c, ref)


def test_nonfinite_propagates():
    """inf times a lane's weight gives inf, inf times zero NaN, as IEEE arithmetic says."""
    v = mk.lanes(np.float32)
    a = np.zeros(16, np.float32)
    a[0] = np.inf
    b = np.ones(2 * 6 * v + v, np.float32)
    b[1] = 0
    c = np.zeros(2 * 3 * v + v, np.float32)
    _call_3x2(a, 0, np.zeros(1, np.int64), 1, b, 0, 0, 6 * v, c, 0, v, 3 * v, 0)
    assert np.isinf(c[0]) and np.isnan(c[1]) and (c[v:2 * v] == 0).all()


def test_target_native_matches_host_flags():
    """This machine: 16 float32 lanes and 32 registers where the CPU has AVX-512, 8 and 16 with
    AVX2 only; a kernel's assembly uses the registers of that width."""
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES") is not None:
        pytest.skip("the target is overridden in this environment")
    asm = next(iter(_call_forward.inspect_asm().values()))
    if " avx512f" in flags:
        assert mk.target() == (64, 32) and mk.lanes(np.float32) == 16
        assert "zmm" in asm
    elif " avx2" in flags:
        assert mk.target() == (32, 16) and mk.lanes(np.float64) == 4
        assert "ymm" in asm and "zmm" not in asm


def test_avx2_emulation_emits_no_zmm():
    """NUMBA_CPU_NAME=haswell with NUMBA_CPU_FEATURES empty: Numba compiles for Haswell's own
    features, so the target is 8 float32 lanes and 16 registers and the kernel has FMAs on ymm
    registers only (NUMBA_CPU_NAME alone would keep the host's AVX-512 features)."""
    script = textwrap.dedent("""
        import numpy as np
        from numba import njit
        from fastconv.kernels.cpu import microkernel as mk
        k = mk.kernel(3, 2, 1, 1, "lanes")
        @njit
        def f(a, o, b, c):
            k(a, 0, o, 1, 2, b, 0, 0, 16, c, 0, 8, 24, 0)
        a, b, c = np.ones(8, np.float32), np.ones(64, np.float32), np.zeros(64, np.float32)
        f(a, np.zeros(1, np.int64), b, c)
        asm = next(iter(f.inspect_asm().values()))
        print(mk.target(), mk.lanes(np.float32), mk.lanes(np.float64), 'zmm' in asm,
              'ymm' in asm, 'vfmadd' in asm, c[0], c[8])
    """)
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["(32,", "16)", "8", "4", "False", "True", "True", "2.0",
                                  "2.0"], res.stdout
