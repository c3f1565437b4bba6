"""cpu dropout: the naive tier's NumPy generator and ufuncs (already vectorised), so a seed gives
the same mask on both tiers."""
from ..naive.dropout import dropout, dropout_backward

__all__ = ["dropout", "dropout_backward"]
