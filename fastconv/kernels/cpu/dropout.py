"""cpu dropout: the naive tier's NumPy generator and ufuncs (already vectorised), so a seed gives
the same mask on both tiers."""
from ..naive.dropout import dropout, dropout2d, dropout2d_backward, dropout_backward

__all__ = ["dropout", "dropout_backward", "dropout2d", "dropout2d_backward"]
