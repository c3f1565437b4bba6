"""Session-wide test setup.

The cuda tier's tests run on Numba's CUDA simulator unless ``FASTCONV_REAL_GPU=1`` asks for the
real device; the variable must be set before anything imports ``numba.cuda``.

Hypothesis profiles: ``ci`` (the default) runs a fixed, repeatable 40 examples per randomised
test, the same ones every run; ``thorough`` (``pytest --hypothesis-profile=thorough``) explores:
1000 fresh random examples per test each run (the simulator's cuda tests scale theirs the same
way, from 4-6 to 100-150), and a failure prints the blob that reproduces it.
"""
import os

from hypothesis import settings

if os.environ.get("FASTCONV_REAL_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

settings.register_profile("ci", max_examples=40, derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("thorough", max_examples=1000, derandomize=False, database=None,
                          deadline=None, print_blob=True)
settings.load_profile("ci")  # hypothesis's --hypothesis-profile option loads its own afterwards
