"""cpu softmax cross-entropy: the naive tier's NumPy version (a few classes per row: the ufuncs
are already the fast path)."""
from ..naive.loss import softmax_cross_entropy

__all__ = ["softmax_cross_entropy"]
