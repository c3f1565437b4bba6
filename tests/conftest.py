"""Session-wide test setup.

The cuda tier's tests run on Numba's CUDA simulator unless ``FASTCONV_REAL_GPU=1`` asks for the
real device; the variable must be set before anything imports ``numba.cuda``.

``FASTCONV_REQUIRE_ALL=1`` (set by ``.ci/run``) turns every skip for a missing package, tier or
data file into a failure of the run: in CI a parity test that did not run is a test that failed.
A user's ``pip install -e ".[test]"`` has no PyTorch, ONNX or MPI, and those tests skip there.
"""
import os

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
    if _missing:
        terminalreporter.write_sep("=", "FASTCONV_REQUIRE_ALL: skipped for a missing package or file")
        for line in _missing:
            terminalreporter.write_line(line)
