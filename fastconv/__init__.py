"""fastconv: a from-scratch convolutional-network engine whose hot paths are Numba JIT kernels."""
from . import functional
from ._backend import get_backend, set_backend, to_numpy

__version__ = "0.1.0"
__all__ = ["functional", "get_backend", "set_backend", "to_numpy"]
