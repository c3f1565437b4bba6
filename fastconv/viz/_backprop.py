"""Input gradients of a model without touching the model: what filter patterns and saliency share.

fastconv has no autograd: a gradient comes from the layers' own ``forward`` (which keeps a cache
per call) and ``_backward`` (which takes it back and adds to every trainable ``Parameter.grad``).
Run on the model itself, that would add to its gradients and clear the caches a training step in
another thread is waiting for. So the pictures run on :func:`private_copy`: the same modules
(a shared module stays shared), fresh Parameter objects that hold the model's own weight arrays
(read, never written) frozen with ``requires_grad=False``, the buffers themselves, no caches.
Eval mode comes from :func:`fastconv.layers.module.eval_mode`, for the calling thread only, and
gradient mode from :func:`fastconv.enable_grad` (also per thread).
"""
import copy

import numpy as np

from .._backend import is_device_array, to_device, to_numpy
from .._grad import enable_grad, no_grad
from ..layers import Module, Parameter, Sequential
from ..layers.activation import LogSoftmax, Softmax
from ..layers.module import eval_mode
from .filters import _leaves


def private_copy(model):
    """A structural copy of ``model`` sharing its weight and buffer arrays; see the module docstring."""
    if not isinstance(model, Module):
        raise TypeError(f"the model must be a fastconv Module, got {type(model).__name__}")
    memo = {}
    for m in model.modules():
        memo[id(m._caches)] = []
    for _, p in model.named_parameters():
        memo[id(p)] = Parameter(p.data, requires_grad=False)
    for _, b in model.named_buffers():
        memo[id(b)] = b
    return copy.deepcopy(model, memo)


def find_layer(model, layer):
    """``(name, module)`` of ``layer`` in ``model``: the module itself, its name in the dotted
    names :func:`fastconv.viz.feature_maps` uses (``"3"``, ``"2.body.0"``) or an int ``i`` for
    ``"i"``. ValueError naming the layers when there is no such layer."""
    leaves = _leaves(model)
    if isinstance(layer, Module):
        for name, m in leaves:
            if m is layer:
                return name, m
        raise ValueError(f"{type(layer).__name__} layer {layer!r} is not a layer of the model")
    if isinstance(layer, (bool, np.bool_)) or not isinstance(layer, (str, int, np.integer)):
        raise TypeError(f"layer must be a module, a layer name or an int index, got {layer!r}")
    name = layer if isinstance(layer, str) else str(int(layer))
    for n, m in leaves:
        if n == name:
            return n, m
    raise ValueError(f"no layer named {name!r}; the layers are {[n for n, _ in leaves]}")


class Tap(Module):
    """Wraps the chosen layer: records its output in forward; in backward sends ``seed`` (dL/d
    output, set before the backward) into the layer instead of ``dy``. The objective depends on
    this output only, so the ``dy`` from the layers after it is zero and is not needed."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.output, self.seed = inner, None, None

    def named_children(self):
        return [("inner", self.inner)]

    def forward(self, x):
        self.output = self.inner.forward(x)
        return self.output

    def _backward(self, dy, need_dx):
        return self.inner._backward(self.seed, need_dx)

    def output_shape(self, shape):
        return self.inner.output_shape(shape)


def _replace(block, child, new):
    """Put ``new`` where ``block`` (a private copy) holds ``child``: an attribute or a list item."""
    for attr, value in vars(block).items():
        if value is child:
            setattr(block, attr, new)
            return
        if isinstance(value, list) and any(v is child for v in value):
            setattr(block, attr, [new if v is child else v for v in value])
            return
    raise ValueError(f"cannot reach {type(child).__name__} inside {type(block).__name__} "
                     "(it is not an attribute or in a list attribute)")


def tapped_prefix(copy_, name):
    """The part of ``copy_`` (a :func:`private_copy`) that computes layer ``name``, that layer
    wrapped in a :class:`Tap`: Sequentials from the top down are cut after the child that holds
    the layer; a block that needs all its children (a Residual, a Concat) is kept whole, the
    layer replaced in place. Returns ``(net, tap)``."""
    def cut(module, path, truncate):
        if not path:
            return Tap(module)
        child = dict(module.named_children())[path[0]]
        if truncate and isinstance(module, Sequential):
            return Sequential(*module.layers[:int(path[0])], cut(child, path[1:], True))
        _replace(module, child, cut(child, path[1:], False))
        return module
    net = cut(copy_, name.split(".") if copy_.named_children() else [], True)
    return net, next(m for m in net.modules() if isinstance(m, Tap))


def logits_net(copy_):
    """``copy_`` without a final Softmax / LogSoftmax, so that its output is the class scores."""
    if isinstance(copy_, Sequential) and len(copy_) > 1 and isinstance(copy_[-1], (Softmax, LogSoftmax)):
        return copy_[:-1]
    return copy_


def input_gradient(net, x, seed, tap=None):
    """Forward ``x`` through ``net`` (eval mode for this thread, caches kept), then backward.

    ``seed(y)`` gives dL/dy for ``y``, the host copy of the output of ``tap`` (or of ``net``
    without one). Returns ``(y, dL/dx)``, both on the host.
    """
    with enable_grad(), eval_mode():
        out = net.forward(x)
        y = _host(out if tap is None else tap.output)
        dy = np.ascontiguousarray(seed(y), dtype=y.dtype)
        if tap is not None:
            tap.seed, dy = _like(dy, tap.output), np.zeros(tuple(out.shape), dtype=y.dtype)
        dx = net._backward(_like(dy, out), True)
    return y, _host(dx)


def layer_output(net, x, tap=None):
    """The host output of ``tap`` (or of ``net``) for ``x``: a forward only, keeping nothing."""
    with no_grad(), eval_mode():
        out = net.forward(x)
    return _host(out if tap is None else tap.output)


def _host(a):
    return to_numpy(a) if is_device_array(a) else np.asarray(a)


def _like(a, ref):
    """Host array ``a`` where ``ref`` is: copied to the device for a device ``ref``."""
    return to_device(a) if is_device_array(ref) else a
