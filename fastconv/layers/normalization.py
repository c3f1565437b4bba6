"""Normalisation layers: :class:`BatchNorm1d`, :class:`BatchNorm2d`."""
import math

import numpy as np

from .. import functional as F
from .module import Module, Parameter, _accumulate, _float_dtype, _positive

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _BatchNorm(Module):
    """Batch normalisation over every axis but the channel axis 1, with PyTorch's semantics.

    Training: normalise with the batch mean and biased variance; update
    ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* variance, and
    count ``num_batches_tracked``. Eval: normalise with the running statistics. ``weight`` (ones)
    and ``bias`` (zeros) are (C,). The arithmetic, the running-statistics update included, is
    :func:`fastconv.functional.batch_norm`'s, on the host or on the device (after ``to("cuda")``
    the running statistics are device arrays; ``num_batches_tracked`` stays a host counter).
    """

    _param_names = ("weight", "bias")
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        self.num_features = _positive(num_features, "num_features")
        self.eps, self.momentum = float(eps), float(momentum)
        dt = _float_dtype(dtype)
        self.weight = Parameter(np.ones(self.num_features, dtype=dt))
        self.bias = Parameter(np.zeros(self.num_features, dtype=dt))
        self.running_mean = np.zeros(self.num_features, dtype=dt)
        self.running_var = np.ones(self.num_features, dtype=dt)
        self.num_batches_tracked = np.array(0, dtype=np.int64)

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) not in self._ndims or shape[1] != self.num_features:
            want = " or ".join(f"{d}-D" for d in self._ndims)
            raise ValueError(f"{self!r} expects {want} input with {self.num_features} channels on "
                             f"axis 1, got shape {shape}")
        return shape

    def forward(self, x):
        x = self._input(x)
        self.output_shape(x.shape)
        out, cache = F.batch_norm(x, self.weight.data, self.bias.data, self.running_mean,
                                  self.running_var, self.training, self.momentum, self.eps)
        if self.training:
            self.num_batches_tracked += 1  # after F has validated everything
        self._save(cache)
        return out

    def _backward(self, dy, need_dx):
        cache = self._restore()
        dx, dweight, dbias = F.batch_norm_backward(dy, cache, need_dx)
        _accumulate(self.weight, dweight)
        _accumulate(self.bias, dbias)
        return dx

    def _memory(self, in_shape, out_shape, itemsize):
        n = math.prod(out_shape) * itemsize
        return n, n, 0  # keeps its input (x-hat is recomputed from it in backward)

    def _label(self):
        return f"{type(self).__name__}({self.num_features})"

    def __repr__(self):
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                "affine=True, bias=True, track_running_stats=True)")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) per channel (statistics over N, H, W)."""

    _ndims = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) per channel (statistics over N and L)."""

    _ndims = (2, 3)
