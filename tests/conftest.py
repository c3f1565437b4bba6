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
    if _missing:
        terminalreporter.write_sep("=", "FASTCONV_REQUIRE_ALL: skipped for a missing package or file")
        for line in _missing:
            terminalreporter.write_line(line)
settings.register_profile("ci", max_examples=40, derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("thorough", max_examples=1000, derandomize=False, database=None,
                          deadline=None, print_blob=True)
settings.load_profile("ci")  # hypothesis's --hypothesis-profile option loads its own afterwards
