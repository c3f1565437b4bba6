"""Inference fusion: a convolution (or Linear) followed by batch normalisation in eval mode is one
affine map, so it folds into one layer with adjusted weights and bias.

In eval mode BatchNorm computes ``y = (z - mean) * gamma / sqrt(var + eps) + beta`` per channel
with its running statistics, and ``z = w * x + b`` is linear in ``w`` and ``b`` per output
channel, so with ``scale = gamma / sqrt(var + eps)``::

    w' = w * scale (each output channel's filter)       b' = (b - mean) * scale + beta

gives ``w' * x + b' = y``. The fold is computed in float64 and rounded once to the layer's
dtype, so a float32 model's results change only by float32 rounding (the unfused network rounds
after the convolution and again in the normalisation; the fused one once). Dense, grouped and
depthwise convolutions fold alike (the scale is per output channel, whatever the grouping).

A BatchNorm without running statistics (``track_running_stats=False``) normalises with the
batch's own statistics even in eval mode and is not folded.

:func:`fuse` returns a folded copy of a model; :func:`fastconv.compile` folds while it builds
its plan (:mod:`fastconv.plan`).
"""
import copy

import numpy as np

from ._backend import to_device, to_numpy
from .layers import BatchNorm1d, BatchNorm2d, Conv2d, Identity, Linear, Sequential
from .layers.module import Parameter

__all__ = ["fuse", "foldable", "fold", "uses"]


def foldable(layer, norm):
    """Whether ``norm`` right after ``layer`` folds into it: a Conv2d then a BatchNorm2d, or a
    Linear then a BatchNorm1d, of the same channels, the norm keeping running statistics."""
    pair = ((type(layer) is Conv2d and type(norm) is BatchNorm2d)  # a subclass may override
            or (type(layer) is Linear and type(norm) is BatchNorm1d))  # forward: not folded
    if not pair or norm.running_mean is None:
        return False
    channels = layer.out_channels if type(layer) is Conv2d else layer.out_features
    return channels == norm.num_features


def fold(layer, norm):
    """The folded ``(weight, bias)`` host arrays of ``layer`` (Conv2d or Linear) followed by
    ``norm`` (its BatchNorm in eval mode; see :func:`foldable`), in the layer's dtype.

    weight: the layer's shape, each output channel's filter times ``gamma / sqrt(var + eps)``;
    bias (out,): ``(b - running_mean) * scale + beta`` (``b`` 0 for a layer without bias).
    """
    w = to_numpy(layer.weight.data)
    dtype = w.dtype
    wide = np.float64
    mean = to_numpy(norm.running_mean).astype(wide)
    var = to_numpy(norm.running_var).astype(wide)
    gamma = to_numpy(norm.weight.data).astype(wide) if norm.weight is not None else 1.0
    beta = to_numpy(norm.bias.data).astype(wide) if norm.bias is not None else 0.0
    scale = gamma / np.sqrt(var + norm.eps)
    b = to_numpy(layer.bias.data).astype(wide) if layer.bias is not None else 0.0
    weight = w.astype(wide) * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    bias = (b - mean) * scale + beta
    return (np.ascontiguousarray(weight, dtype=dtype),
            np.ascontiguousarray(np.broadcast_to(bias, scale.shape), dtype=dtype))


def uses(model):
    """How many places of ``model`` each module fills, by ``id``: a layer used twice (shared
    weights) is folded nowhere, since the fold would change its other use too."""
    counts = {}

    def walk(m):
        counts[id(m)] = counts.get(id(m), 0) + 1
        if counts[id(m)] == 1:
            for _, child in m.named_children():
                walk(child)
    walk(model)
    return counts


def _fold_sequence(seq, counts):
    """Fold each foldable (layer, norm) pair of ``seq`` in place: the layer takes the folded
    weights (and a bias), the norm becomes an Identity (so indexes and the other layers' names
    stay those of the original)."""
    layers = seq.layers
    for i in range(len(layers) - 1):
        layer, norm = layers[i], layers[i + 1]
        if not foldable(layer, norm) or counts[id(layer)] > 1 or counts[id(norm)] > 1:
            continue
        weight, bias = fold(layer, norm)
        device = layer.weight.device
        move = (lambda a: to_device(a)) if device == "cuda" else (lambda a: a)
        layer.weight = Parameter(move(weight))
        layer.bias = Parameter(move(bias))
        layers[i + 1] = Identity()


def fuse(model):
    """An inference copy of ``model`` with every Conv2d + BatchNorm2d (and Linear + BatchNorm1d)
    pair of its Sequentials folded into the conv (or Linear), in eval mode.

    Parameters
    ----------
    model : Module
        Left unchanged (its weights, statistics and mode are not touched).

    Returns
    -------
    Module
        A deep copy in eval mode whose folded layers carry the adjusted weights and a bias, each
        folded BatchNorm replaced by :class:`fastconv.Identity` (same positions, so ``fused[i]`` is
        still the i-th layer). Its outputs equal ``model``'s in eval mode up to rounding in the
        model's dtype. It is for inference only: training it would train a different network (no
        normalisation), so ``fuse`` again after training the original.

    Example
    -------
    >>> fused = fastconv.fuse(model)
    >>> logits = fused(images)  # as model.eval()(images), with fewer passes over the activations
    """
    from .layers.module import Module
    if not isinstance(model, Module):
        raise TypeError(f"fuse: model is a {type(model).__name__}, not a fastconv Module")
    fused = copy.deepcopy(model)
    for m in fused.modules():
        m._caches = []  # forward caches the original held are not the copy's
    fused.eval()
    counts = uses(fused)
    for m in list(fused.modules()):
        if type(m) is Sequential:  # a subclass's forward may not run its layers in order
            _fold_sequence(m, counts)
    return fused
