"""Session-wide test setup.

The cuda tier's tests run on Numba's CUDA simulator unless ``FASTCONV_REAL_GPU=1`` asks for the
real device; the variable must be set before anything imports ``numba.cuda``.
"""
import os

if os.environ.get("FASTCONV_REAL_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
