"""cpu losses: the naive tier's NumPy versions (a few classes per row, or one elementwise pass:
the ufuncs are already the fast path)."""
from ..naive.loss import (binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss,
                          softmax_cross_entropy)

__all__ = ["softmax_cross_entropy", "cross_entropy", "nll_loss", "binary_cross_entropy_with_logits",
           "mse_loss"]
