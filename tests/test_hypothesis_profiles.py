"""The Hypothesis profiles of tests/conftest.py: ``ci`` (the default) repeats a fixed 40 examples,
``thorough`` explores, and ``pytest --hypothesis-profile=thorough`` reaches the randomised tests."""
import os
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import HYPOTHESIS

HERE = os.path.dirname(os.path.abspath(__file__))


def test_ci_repeats_40_examples_and_thorough_explores_many():
    ci, thorough = settings.get_profile("ci"), settings.get_profile("thorough")
    assert ci.max_examples == 40 and ci.derandomize and ci.database is None
    assert thorough.max_examples >= 500 and not thorough.derandomize


def test_probe_the_randomised_tests_run_the_loaded_profile(capsys):
    drawn = []

    @HYPOTHESIS
    @given(st.integers())
    def probe(i):
        drawn.append(i)

    probe()
    assert len(drawn) == settings.default.max_examples
    assert HYPOTHESIS.derandomize == settings.default.derandomize
    with capsys.disabled():
        print(f"\nPROBE {len(drawn)} {HYPOTHESIS.derandomize} {hash(tuple(drawn))}")


def _probe(*options):
    probe = "test_hypothesis_profiles.py::test_probe_the_randomised_tests_run_the_loaded_profile"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", f"{HERE}/{probe}",
         *options], capture_output=True, text=True, timeout=300, cwd=os.path.dirname(HERE))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    line = next(s for s in done.stdout.splitlines() if s.startswith("PROBE "))
    count, derandomized, examples = line.split()[1:]
    return int(count), derandomized == "True", examples


def test_the_profile_option_reaches_the_tests():
    ci = _probe()
    assert ci[:2] == (40, True)
    assert _probe() == ci  # the same examples every run
    count, derandomized, examples = _probe("--hypothesis-profile=thorough")
    assert count == 1000 and not derandomized
    assert _probe("--hypothesis-profile=thorough")[2] != examples  # fresh examples each run
