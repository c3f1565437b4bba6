"""Session-wide test setup.

The cuda tier's tests run on Numba's CUDA simulator unless ``FASTCONV_REAL_GPU=1`` asks for the
real device; the variable must be set before anything imports ``numba.cuda``.

``FASTCONV_REQUIRE_ALL=1`` (set by ``.ci/run``) turns every skip for a missing package, tier or
data file into a failure of the run: in CI a parity test that did not run is a test that failed.
A user's ``pip install -e ".[test]"`` has no PyTorch, ONNX or MPI, and those tests skip there.
Hypothesis profiles: ``ci`` (the default) runs a fixed, repeatable 40 examples per randomised
test, the same ones every run; ``thorough`` (``pytest --hypothesis-profile=thorough``) explores:
1000 fresh random examples per test each run (the simulator's cuda tests scale theirs the same
way, from 4-6 to 100-150), and a failure prints the blob that reproduces it.
"""
import os

import numpy as np
import pytest
from hypothesis import settings

if os.environ.get("FASTCONV_REAL_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

#: Fragments of the skip reasons that mean "something was not installed or not found".
MISSING = ("could not import", "No module named", "not installed", "unavailable", "not found in")
_missing = []


def _check_skip(report):
    if report.skipped and os.environ.get("FASTCONV_REQUIRE_ALL") == "1":
        reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
        if any(fragment in reason for fragment in MISSING):
            _missing.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report):
    _check_skip(report)


def pytest_collectreport(report):
    _check_skip(report)


def pytest_sessionfinish(session, exitstatus):
    if _missing:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    _report_gaps(terminalreporter)
    if _missing:
        terminalreporter.write_sep("=", "FASTCONV_REQUIRE_ALL: skipped for a missing package or file")
        for line in _missing:
            terminalreporter.write_line(line)
settings.register_profile("ci", max_examples=40, derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("thorough", max_examples=1000, derandomize=False, database=None,
                          deadline=None, print_blob=True)
settings.load_profile("ci")  # hypothesis's --hypothesis-profile option loads its own afterwards


# The cuda tier's fixtures: usable from any test file (a test parameterised over tiers asks for
# ``G`` only in its cuda case). helpers is imported in the fixture, not here: importing it now
# would build its Hypothesis settings before ``--hypothesis-profile`` is loaded.

_GAPS = {}


@pytest.fixture(scope="session")
def G():
    """The cuda kernel tier (skips when numba.cuda has neither a GPU nor the simulator)."""
    try:
        from fastconv.kernels import cuda
    except (ImportError, RuntimeError) as exc:
        pytest.skip(f"cuda tier unavailable: {exc}")
    return cuda




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
        from helpers import host
        got, want = host(got), np.asarray(want)
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


def _report_gaps(terminalreporter):
    if _GAPS:
        terminalreporter.write_sep("-", "largest cuda-vs-reference difference")
        for dtype, (gap, name) in sorted(_GAPS.items()):
            terminalreporter.write_line(f"{dtype}: {gap:.3g} (in {name})")
