"""Dropout layers: :class:`Dropout` (elementwise) and :class:`Dropout2d` (whole channels)."""
import math

import numpy as np

from .. import functional as F
from .._checks import generator, in_layer
from .module import Module

__all__ = ["Dropout", "Dropout2d"]


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale the rest
    by 1/(1-p); the identity in eval mode. Each forward draws an int seed from the layer's generator
    (``rng``, else one spawned from the default generator at construction) and calls F.dropout.
    """

    _fns = (F.dropout, F.dropout_backward)  # forward, backward

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        gen = generator(rng)
        self._rng = np.random.default_rng(int(gen.integers(2**63))) if rng is None else gen

    @property
    def rng(self):
        """The ``np.random.Generator`` each training forward draws its mask seed from (assignable,
        e.g. by a trainer that makes every epoch's masks repeatable)."""
        return self._rng

    @rng.setter
    def rng(self, generator):
        if not isinstance(generator, np.random.Generator):
            raise TypeError(f"Dropout.rng must be a numpy.random.Generator, got {type(generator).__name__}")
        self._rng = generator

    def _check_identity(self, shape):
        """The input check of a forward that returns x unchanged (F checks the others)."""

    def forward(self, x):
        x = self._input(x)
        if not self.training or self.p == 0:
            self._check_identity(tuple(x.shape))
            self._save(())
            return x
        with in_layer(self, x.shape):
            out, mask = self._fns[0](x, self.p, int(self._rng.integers(2**62)))
        self._save((mask,))
        return out

    def _backward(self, dy, need_dx):
        cache = self._restore()
        if not need_dx:
            return None
        return self._fns[1](dy, cache[0]) if cache else dy

    def _memory(self, in_shape, out_shape, itemsize):
        n = math.prod(out_shape) * itemsize
        return n, n, 0

    def _label(self):
        return f"Dropout(p={self.p})"

    def __repr__(self):
        return f"Dropout(p={self.p}, inplace=False)"


class Dropout2d(Dropout):
    """Channel dropout (``torch.nn.Dropout2d``): in training each channel ``x[n, c]`` of an
    (N, C, H, W) input is zeroed as a whole with probability ``p`` in [0, 1] and the others are
    scaled by 1/(1-p); the identity in eval mode. For convolutional features, whose neighbouring
    pixels are correlated, so elementwise dropout hardly regularises them (Tompson et al. 2015).
    The mask seed comes from the layer's ``rng`` as in :class:`Dropout` (the Trainer reseeds it
    every epoch).

    Only 4-D input is taken (PyTorch reads 3-D input as (N, C, L) with a warning).
    """

    def __init__(self, p=0.5, rng=None):
        if not 0 <= p <= 1:
            raise ValueError(f"dropout2d probability must be in [0, 1], got {p}")
        super().__init__(0.0, rng)
        self.p = float(p)

    _fns = (F.dropout2d, F.dropout2d_backward)

    def _check_identity(self, shape):
        if len(shape) != 4:
            raise ValueError(f"{self._label()}: input must be 4-D (N, C, H, W), got shape {shape}")

    def _memory(self, in_shape, out_shape, itemsize):
        return math.prod(out_shape) * itemsize, math.prod(out_shape[:2]) * itemsize, 0

    def _label(self):
        return f"Dropout2d(p={self.p})"

    def __repr__(self):
        return f"Dropout2d(p={self.p}, inplace=False)"
