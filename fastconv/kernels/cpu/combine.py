"""cpu combining of branch outputs: the naive tier's NumPy sum, concatenation and split."""
from ..naive.combine import add, concat, split

__all__ = ["add", "concat", "split"]
