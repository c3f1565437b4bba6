"""Reshaping layers: :class:`Flatten`."""
import math

from .module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    """Merge dimensions ``start_dim..end_dim`` (default: all but the batch): (N, C, H, W) -> (N, C*H*W).

    The output is a ``.reshape`` of the input (a view for contiguous arrays).
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)

    def output_shape(self, shape):
        shape = tuple(shape)
        nd = len(shape)
        start = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        end = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not 0 <= start <= end < nd:
            raise ValueError(f"{self!r} cannot flatten input of shape {shape} ({nd}-D)")
        return shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]

    def forward(self, x):
        x = self._input(x)
        self._save(tuple(x.shape))
        return x.reshape(self.output_shape(x.shape))

    def _backward(self, dy, need_dx):
        shape = self._restore()
        return dy.reshape(shape) if need_dx else None

    def _memory(self, in_shape, out_shape, itemsize):
        return 0, 0, 0

    def _label(self):
        return "Flatten()" if (self.start_dim, self.end_dim) == (1, -1) else repr(self)

    def __repr__(self):
        return f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim})"
