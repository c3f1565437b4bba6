"""Fixtures of the cuda-tier tests: the tier module and a recorder of cuda-vs-reference gaps.

Without a GPU the tier runs on Numba's simulator (``tests/conftest.py`` sets
``NUMBA_ENABLE_CUDASIM=1``); if neither is available the tests are skipped.
"""
import numpy as np
import pytest

_GAPS = {}


@pytest.fixture(scope="session")
def G():
    """The cuda kernel tier (skips when numba.cuda has neither a GPU nor the simulator)."""
    try:
        from fastconv.kernels import cuda
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"cuda tier unavailable: {exc}")
    return cuda


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def _simulated():
    from numba.cuda import config
    return bool(config.ENABLE_CUDASIM)


@pytest.fixture
def close():
    """``close(name, got, want)``: assert a cuda result matches the reference to its dtype's
    rounding and record the largest absolute gap per dtype. ``exact=True`` asks for the same bits
    where the cuda kernel does the reference's operations in its order; that holds on the
    simulator, while a real GPU may fuse a multiply and an add into one FMA (one rounding fewer),
    so there it is checked to the dtype's rounding like the rest."""
    def check(name, got, want, exact=False, rtol=None, atol=None):
        got, want = _host(got), np.asarray(want)
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
        if exact and _simulated():
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            f32 = want.dtype == np.float32
            np.testing.assert_allclose(got, want, rtol=rtol or (1e-4 if f32 else 1e-11),
                                       atol=atol or (1e-5 if f32 else 1e-12), err_msg=name)
        if got.size and want.dtype.kind == "f":
            finite = np.isfinite(want)
            gap = float(np.max(np.abs(got[finite].astype(np.float64) - want[finite]), initial=0.0))
            key = str(want.dtype)
            if gap >= _GAPS.get(key, (-1.0, ""))[0]:
                _GAPS[key] = (gap, name)
        return got
    return check


def pytest_terminal_summary(terminalreporter):
    if _GAPS:
        terminalreporter.write_sep("-", "largest cuda-vs-reference difference")
        for dtype, (gap, name) in sorted(_GAPS.items()):
            terminalreporter.write_line(f"{dtype}: {gap:.3g} (in {name})")
