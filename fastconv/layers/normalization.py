"""Normalisation layers, as ``torch.nn``'s: :class:`BatchNorm1d`, :class:`BatchNorm2d` (with
``affine`` and ``track_running_stats``), :class:`GroupNorm` and :class:`LayerNorm`.

A layer without a weight (``affine=False``, ``elementwise_affine=False``) or without a bias
(``bias=False``) has no such parameter and no such state-dict key, as in PyTorch; one that tracks
no running statistics has no running buffers either.
"""
import math
import numbers

import numpy as np

from .. import functional as F
from .._backend import is_device_array, to_device
from .._checks import in_layer, number, positive_int, sizes
from .module import Module, Parameter, _accumulate, _float_dtype

__all__ = ["BatchNorm1d", "BatchNorm2d", "GroupNorm", "LayerNorm"]


class _Normalization(Module):
    """What the normalisation layers share: optional weight and bias, their gradients, the dtype
    and device of the input (those of the first parameter or buffer), and the memory account."""

    _param_names = ("weight", "bias")

    def _make_affine(self, shape, weight, bias, dt):
        self.weight = Parameter(np.ones(shape, dtype=dt)) if weight else None
        self.bias = Parameter(np.zeros(shape, dtype=dt)) if weight and bias else None

    def _reference(self):
        """The array whose dtype and device the input takes (None: the input keeps its own)."""
        return self.weight.data if self.weight is not None else None

    def _input(self, x):
        x = super()._input(x)
        ref = self._reference()
        if ref is None or is_device_array(x):
            return x
        x = x if x.dtype == ref.dtype else x.astype(ref.dtype)
        return to_device(x) if is_device_array(ref) else x

    def _data(self):
        return (None if self.weight is None else self.weight.data,
                None if self.bias is None else self.bias.data)

    def _grads(self, dweight, dbias):
        if self.weight is not None:
            _accumulate(self.weight, dweight)
        if self.bias is not None:
            _accumulate(self.bias, dbias)

    def _memory(self, in_shape, out_shape, itemsize):
        n = math.prod(out_shape) * itemsize
        return n, n, 0  # keeps its input (x-hat is recomputed from it in backward)


class _BatchNorm(_Normalization):
    """Batch normalisation over every axis but the channel axis 1, with PyTorch's semantics.

    Training: normalise with the batch mean and biased variance; update
    ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* variance, and
    count ``num_batches_tracked`` (``momentum=None``: the cumulative average, factor
    ``1 / num_batches_tracked``). Eval: normalise with the running statistics.
    ``track_running_stats=False``: no running buffers, batch statistics in eval too.
    ``affine=False``: no ``weight`` (ones) or ``bias`` (zeros); ``bias=False``: no bias.
    The arithmetic, the running-statistics update included, is :func:`fastconv.functional.batch_norm`'s,
    on the host or on the device (after ``to("cuda")`` the running statistics are device arrays;
    ``num_batches_tracked`` stays a host counter).
    """

    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 dtype=np.float32, *, bias=True):
        super().__init__()
        self.num_features = positive_int(num_features, "num_features")
        self.eps = number(eps, "eps", minimum=0)
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)):
            raise TypeError(f"momentum must be a number or None, got {momentum!r}")
        self.momentum = None if momentum is None else float(momentum)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        dt = _float_dtype(dtype)
        self._make_affine(self.num_features, self.affine, bias, dt)
        if self.track_running_stats:
            self.running_mean = np.zeros(self.num_features, dtype=dt)
            self.running_var = np.ones(self.num_features, dtype=dt)
            self.num_batches_tracked = np.array(0, dtype=np.int64)
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def _reference(self):
        return self.weight.data if self.weight is not None else self.running_mean

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) not in self._ndims or shape[1] != self.num_features:
            want = " or ".join(f"{d}-D" for d in self._ndims)
            raise ValueError(f"{self._label()} expects {want} input with {self.num_features} channels "
                             f"on axis 1, got shape {shape}")
        return shape

    def forward(self, x):
        return self._forward(x)

    def _forward(self, x, relu=False):
        """The forward; ``relu``: then a ReLU in the same pass (and its gradient in this layer's
        backward), for :class:`fastconv.layers.Sequential` when a ReLU follows."""
        x = self._input(x)
        self.output_shape(x.shape)
        batch_stats = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        momentum = self.momentum
        if update and momentum is None:
            momentum = 1.0 / (int(self.num_batches_tracked) + 1)
        weight, bias = self._data()
        out, cache = F.batch_norm(x, weight, bias, self.running_mean if update or not batch_stats else None,
                                  self.running_var if update or not batch_stats else None, batch_stats,
                                  0.0 if momentum is None else momentum, self.eps, relu=relu)
        if update:
            self.num_batches_tracked += 1  # after F has validated everything
        self._save(cache)
        return out

    def _backward(self, dy, need_dx):
        cache = self._restore()
        dx, dweight, dbias = F.batch_norm_backward(dy, cache, need_dx)
        self._grads(dweight, dbias)
        return dx

    def _label(self):
        return f"{type(self).__name__}({self.num_features})"

    def __repr__(self):
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats})")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) per channel (statistics over N, H, W)."""

    _ndims = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) per channel (statistics over N and L)."""

    _ndims = (2, 3)


class _PerSampleNorm(_Normalization):
    """GroupNorm and LayerNorm: statistics of each sample, the same in training and eval; the
    subclass names its F pair as ``_normalize(x, weight, bias)`` and ``_normalize_backward``.
    F validates the input; ``_check_channels`` checks only what F cannot know."""

    def _check_channels(self, shape):
        pass

    def forward(self, x):
        x = self._input(x)
        self._check_channels(x.shape)
        with in_layer(self, x.shape):
            out, cache = self._normalize(x, *self._data())
        self._save(cache)
        return out

    def _backward(self, dy, need_dx):
        return self._param_backward(dy, need_dx, self._normalize_backward)


class GroupNorm(_PerSampleNorm):
    """Group normalisation of (N, C, *): each image's C channels form ``num_groups`` groups of
    consecutive channels, each normalised by its own mean and biased variance (over its channels
    and positions), the same in training and eval; then ``* weight[c] + bias[c]`` per channel
    (``affine``; ``weight`` ones, ``bias`` zeros, (C,)). ``GroupNorm(1, C)`` normalises each
    image as a whole, ``GroupNorm(C, C)`` each channel (instance normalisation).
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=np.float32, *, bias=True):
        super().__init__()
        self.num_groups = positive_int(num_groups, "num_groups")
        self.num_channels = positive_int(num_channels, "num_channels")
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_channels ({self.num_channels}) must be divisible by num_groups "
                             f"({self.num_groups})")
        self.eps, self.affine = number(eps, "eps", minimum=0), bool(affine)
        self._make_affine(self.num_channels, self.affine, bias, _float_dtype(dtype))

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) < 2 or shape[1] != self.num_channels:
            raise ValueError(f"{self._label()} expects input (N, {self.num_channels}, *), got shape {shape}")
        return shape

    def _check_channels(self, shape):
        # num_channels is this layer's own option: F.group_norm sees a channel count only through
        # the weight, and there is none with affine=False
        self.output_shape(shape)

    def _normalize(self, x, weight, bias):
        return F.group_norm(x, self.num_groups, weight, bias, eps=self.eps)

    _normalize_backward = staticmethod(F.group_norm_backward)

    def _label(self):
        return f"GroupNorm({self.num_groups}, {self.num_channels})"

    def __repr__(self):
        return (f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None})")


class LayerNorm(_PerSampleNorm):
    """Layer normalisation over the trailing ``normalized_shape`` dimensions of (*, *normalized_shape):
    each slice normalised by its own mean and biased variance, then ``* weight + bias`` elementwise
    (``elementwise_affine``; ``weight`` ones and ``bias`` zeros of ``normalized_shape``; ``bias=False``
    keeps the weight only).
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=np.float32):
        super().__init__()
        self.normalized_shape = sizes(normalized_shape, "normalized_shape")
        self.eps, self.elementwise_affine = number(eps, "eps", minimum=0), bool(elementwise_affine)
        self._make_affine(self.normalized_shape, self.elementwise_affine, bias, _float_dtype(dtype))

    def output_shape(self, shape):
        shape, k = tuple(shape), len(self.normalized_shape)
        if len(shape) < k or shape[len(shape) - k:] != self.normalized_shape:
            dims = ", ".join(map(str, self.normalized_shape))
            raise ValueError(f"{self._label()} expects input (*, {dims}), got shape {shape}")
        return shape

    def _normalize(self, x, weight, bias):
        return F.layer_norm(x, self.normalized_shape, weight, bias, eps=self.eps)

    _normalize_backward = staticmethod(F.layer_norm_backward)

    def _label(self):
        return f"LayerNorm({self.normalized_shape})"

    def __repr__(self):
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None})")
