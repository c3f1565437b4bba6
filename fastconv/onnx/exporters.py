"""One exporter per layer class: how a fastconv layer becomes ONNX nodes.

An exporter is ``fn(g, layer, key, x, shape) -> y``: it appends nodes to the
:class:`~fastconv.onnx.export.GraphBuilder` ``g`` for ``layer`` (whose state-dict prefix is
``key``), reading the value named ``x`` of static shape ``shape`` (batch first), and returns the
name of its output value; it raises :class:`Unsupported` for a setting ONNX (or this exporter)
cannot express. ``@exporter("ClassName")`` registers it. The registry is keyed by class name and
an entry counts only while ``fastconv.layers`` has a layer class of that name, so exporters for layers
still to come (written against PyTorch's attribute names) are inert until the layer exists.
Settings a layer does not have yet are read with ``getattr`` and PyTorch's default.
"""
import numpy as np

from .. import layers as nn

from .._shapes import conv_padding, pair
from .attrs import Unsupported  # one exception for what ONNX cannot carry, either way

__all__ = ["Unsupported", "exporter", "export_layer", "exportable_layers"]

_EXPORTERS = {}


def exporter(*names):
    """Register the decorated function as the exporter of the layer classes ``names``."""
    def register(fn):
        for name in names:
            _EXPORTERS[name] = fn
        return fn
    return register


def _find(layer):
    for cls in type(layer).__mro__:
        fn = _EXPORTERS.get(cls.__name__)
        if fn is not None and getattr(nn, cls.__name__, None) is cls:
            return fn
    return None


def exportable_layers():
    """The names of the fastconv layer classes :func:`fastconv.onnx.export` can write, sorted."""
    return sorted(name for name in _EXPORTERS if isinstance(getattr(nn, name, None), type))


def export_layer(g, layer, key, x, shape):
    """Export ``layer`` (containers recurse through here); returns its output value's name.

    A layer that cannot be exported is described in ``g.problems`` (its key, what it is, why)
    and a placeholder name is returned, so that every problem in the model is found in one pass.
    """
    fn = _find(layer)
    try:
        if fn is None:
            raise Unsupported(f"no ONNX exporter for {type(layer).__name__}")
        return fn(g, layer, key, x, tuple(shape))
    except Unsupported as exc:
        where = f"layer {key} ({layer._label()})" if key else type(layer).__name__
        g.problems.append(f"{where}: {exc}")
        return f"{key}/unsupported"


def _key(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _ints(values):
    return [int(v) for v in values]


# --- containers --------------------------------------------------------------------------------

@exporter("Sequential")
def _sequential(g, model, key, x, shape):
    for name, layer in model.named_children():
        x = export_layer(g, layer, _key(key, name), x, shape)
        shape = layer.output_shape(shape)
    return x


@exporter("Residual")
def _residual(g, block, key, x, shape):
    """``body(x) + shortcut(x)`` (or ``+ x``): both branches read ``x``, an Add joins them."""
    y = export_layer(g, block.body, _key(key, "body"), x, shape)
    s = x if block.shortcut is None else export_layer(g, block.shortcut, _key(key, "shortcut"), x, shape)
    return g.node("Add", [y, s], key)


@exporter("Concat")
def _concat(g, block, key, x, shape):
    """Every branch reads ``x``; one Concat node joins their outputs along ``dim``."""
    outs = [export_layer(g, b, _key(key, name), x, shape) for name, b in block.named_children()]
    return g.node("Concat", outs, key, axis=block.dim % len(block.output_shape(shape)))


# --- layers with weights -----------------------------------------------------------------------

_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _pad(g, key, x, pads_hw, mode, value=0.0):
    """A Pad node over H and W; ``pads_hw`` is (top, bottom, left, right)."""
    top, bottom, left, right = pads_hw
    if mode == "wrap" and g.opset < 19:
        raise Unsupported(f"circular padding needs opset >= 19 (ONNX Pad mode 'wrap'), got {g.opset}")
    pads = g.constant(f"{key}.pads", np.array([0, 0, top, left, 0, 0, bottom, right], dtype=np.int64))
    inputs = [x, pads] + ([g.scalar(f"{key}.value", value)] if mode == "constant" else [])
    return g.node("Pad", inputs, key, mode=mode)


@exporter("Conv2d")
def _conv2d(g, layer, key, x, shape):
    dilation = pair(getattr(layer, "dilation", 1), "dilation")
    groups = int(getattr(layer, "groups", 1))
    reach = tuple(d * (k - 1) + 1 for d, k in zip(dilation, layer.kernel_size))
    top, bottom, left, right = conv_padding(layer.padding, reach, layer.stride)
    mode = getattr(layer, "padding_mode", "zeros")
    if mode != "zeros":
        if mode not in _PAD_MODES:
            raise Unsupported(f"padding_mode {mode!r}")
        x = _pad(g, key, x, (top, bottom, left, right), _PAD_MODES[mode])
        top = bottom = left = right = 0
    inputs = [x, g.weight(_key(key, "weight"))]
    if layer.bias is not None:
        inputs.append(g.weight(_key(key, "bias")))
    return g.node("Conv", inputs, key, kernel_shape=_ints(layer.kernel_size), strides=_ints(layer.stride),
                  pads=[top, left, bottom, right], dilations=_ints(dilation), group=groups)


@exporter("ConvTranspose2d")
def _conv_transpose2d(g, layer, key, x, shape):
    if getattr(layer, "padding_mode", "zeros") != "zeros":
        raise Unsupported(f"padding_mode {layer.padding_mode!r}")
    ph, pw = pair(layer.padding, "padding")
    inputs = [x, g.weight(_key(key, "weight"))]
    if layer.bias is not None:
        inputs.append(g.weight(_key(key, "bias")))
    return g.node("ConvTranspose", inputs, key, kernel_shape=_ints(pair(layer.kernel_size, "kernel_size")),
                  strides=_ints(pair(layer.stride, "stride")), pads=[ph, pw, ph, pw],
                  output_padding=_ints(pair(layer.output_padding, "output_padding")),
                  dilations=_ints(pair(layer.dilation, "dilation")), group=int(layer.groups))


@exporter("Linear")
def _linear(g, layer, key, x, shape):
    inputs = [x, g.weight(_key(key, "weight"))]
    if layer.bias is not None:
        inputs.append(g.weight(_key(key, "bias")))
    return g.node("Gemm", inputs, key, transB=1)


def _affine_or_constant(g, layer, key, name, fill, shape):
    """The layer's ``name`` parameter (``weight`` / ``bias``) reshaped to ``shape``, or a constant
    of ``fill`` when the layer has none (``affine=False``, ``bias=False``)."""
    if getattr(layer, name) is not None:
        return g.weight(_key(key, name), g.state[_key(key, name)].reshape(shape))
    return g.constant(f"{key}.{name}", np.full(shape, fill, dtype=g.dtype))


def _normalize(g, key, x, axes, eps):
    """``(x - mean) / sqrt(var + eps)`` over ``axes`` (biased variance) with ReduceMean, whose
    axes are an attribute before opset 18 and an input from 18."""
    def mean(v):
        if g.opset >= 18:
            return g.node("ReduceMean", [v, g.constant(f"{key}.axes", np.array(axes, dtype=np.int64))], key,
                          keepdims=1)
        return g.node("ReduceMean", [v], key, axes=_ints(axes), keepdims=1)
    centred = g.node("Sub", [x, mean(x)], key)
    var = mean(g.node("Mul", [centred, centred], key))
    std = g.node("Sqrt", [g.node("Add", [var, g.scalar(f"{key}.eps", eps)], key)], key)
    return g.node("Div", [centred, std], key)


@exporter("BatchNorm1d", "BatchNorm2d")
def _batch_norm(g, layer, key, x, shape):
    """BatchNormalization with the running statistics (ones and zeros stand in for a missing weight
    and bias); ``track_running_stats=False`` normalises with the batch statistics in eval too,
    written as ReduceMean arithmetic over every axis but 1."""
    c = layer.num_features
    if layer.running_mean is None:
        per_channel = (c,) + (1,) * (len(shape) - 2)
        y = _normalize(g, key, x, [0] + list(range(2, len(shape))), layer.eps)
        y = g.node("Mul", [y, _affine_or_constant(g, layer, key, "weight", 1.0, per_channel)], key)
        return g.node("Add", [y, _affine_or_constant(g, layer, key, "bias", 0.0, per_channel)], key)
    names = [_affine_or_constant(g, layer, key, "weight", 1.0, (c,)),
             _affine_or_constant(g, layer, key, "bias", 0.0, (c,)),
             g.weight(_key(key, "running_mean")), g.weight(_key(key, "running_var"))]
    momentum = 0.9 if layer.momentum is None else 1.0 - layer.momentum  # only read in training
    return g.node("BatchNormalization", [x] + names, key, epsilon=layer.eps, momentum=momentum)


@exporter("GroupNorm")
def _group_norm(g, layer, key, x, shape):
    """As torch.onnx writes it: Reshape to (N, groups, -1), InstanceNormalization with unit scale
    and zero bias, Reshape back, then Mul by weight and Add bias (C, 1, ...)."""
    groups = layer.num_groups
    grouped = g.node("Reshape", [x, g.constant(f"{key}.group_shape", np.array([0, groups, -1], dtype=np.int64))],
                     key)
    norm = g.node("InstanceNormalization", [grouped, g.constant(f"{key}.ones", np.ones(groups, g.dtype)),
                                            g.constant(f"{key}.zeros", np.zeros(groups, g.dtype))],
                  key, epsilon=layer.eps)
    y = g.node("Reshape", [norm, g.constant(f"{key}.shape", np.array([0, *shape[1:]], dtype=np.int64))], key)
    per_channel = (layer.num_channels,) + (1,) * (len(shape) - 2)
    if layer.weight is None:
        return y
    y = g.node("Mul", [y, _affine_or_constant(g, layer, key, "weight", 1.0, per_channel)], key)
    return g.node("Add", [y, _affine_or_constant(g, layer, key, "bias", 0.0, per_channel)], key)


@exporter("LayerNorm")
def _layer_norm(g, layer, key, x, shape):
    """LayerNormalization over the trailing ``normalized_shape`` axes (opset 17 on), ReduceMean
    arithmetic before."""
    k = len(layer.normalized_shape)
    norm_shape = tuple(layer.normalized_shape)
    if g.opset >= 17:
        inputs = [x, _affine_or_constant(g, layer, key, "weight", 1.0, norm_shape)]
        if layer.bias is not None:
            inputs.append(g.weight(_key(key, "bias")))
        return g.node("LayerNormalization", inputs, key, axis=-k, epsilon=layer.eps)
    y = _normalize(g, key, x, list(range(len(shape) - k, len(shape))), layer.eps)
    if layer.weight is None:
        return y
    y = g.node("Mul", [y, g.weight(_key(key, "weight"))], key)
    return y if layer.bias is None else g.node("Add", [y, g.weight(_key(key, "bias"))], key)


@exporter("PReLU")
def _prelu(g, layer, key, x, shape):
    slope = g.state[_key(key, "weight")]
    if slope.size > 1:  # one slope per channel: broadcast along axis 1 of (N, C, ...)
        slope = slope.reshape((slope.size,) + (1,) * (len(shape) - 2))
    return g.node("PRelu", [x, g.weight(_key(key, "weight"), slope)], key)


# --- pooling -----------------------------------------------------------------------------------

def _pool_attrs(layer):
    ph, pw = pair(getattr(layer, "padding", 0), "padding")
    return dict(kernel_shape=_ints(pair(layer.kernel_size, "kernel_size")),
                strides=_ints(pair(layer.kernel_size if layer.stride is None else layer.stride, "stride")),
                pads=[ph, pw, ph, pw], ceil_mode=int(bool(getattr(layer, "ceil_mode", False))))


@exporter("MaxPool2d")
def _max_pool2d(g, layer, key, x, shape):
    if getattr(layer, "return_indices", False):
        raise Unsupported("return_indices=True (the indices are a second output)")
    return g.node("MaxPool", [x], key, dilations=_ints(pair(getattr(layer, "dilation", 1), "dilation")),
                  **_pool_attrs(layer))


@exporter("AvgPool2d")
def _avg_pool2d(g, layer, key, x, shape):
    if getattr(layer, "divisor_override", None) is not None:
        raise Unsupported("divisor_override (ONNX AveragePool divides by the window or its valid part)")
    return g.node("AveragePool", [x], key, count_include_pad=int(bool(getattr(layer, "count_include_pad", True))),
                  **_pool_attrs(layer))


def _global_pool(op):
    def export_pool(g, layer, key, x, shape):
        if getattr(layer, "return_indices", False):
            raise Unsupported("return_indices=True")
        if pair(layer.output_size, "output_size") != (1, 1):
            raise Unsupported(f"output_size {layer.output_size!r}: only 1 (global pooling) is exported")
        return g.node(op, [x], key)
    return export_pool


exporter("AdaptiveAvgPool2d")(_global_pool("GlobalAveragePool"))
exporter("AdaptiveMaxPool2d")(_global_pool("GlobalMaxPool"))


# --- elementwise -------------------------------------------------------------------------------

def _elementwise(op, **attrs):
    """An exporter writing one ``op`` node; ``attrs`` maps ONNX attribute -> layer attribute."""
    def export_elementwise(g, layer, key, x, shape):
        return g.node(op, [x], key, **{a: float(getattr(layer, name)) for a, name in attrs.items()})
    return export_elementwise


exporter("ReLU")(_elementwise("Relu"))
exporter("Sigmoid")(_elementwise("Sigmoid"))
exporter("Tanh")(_elementwise("Tanh"))
exporter("LeakyReLU")(_elementwise("LeakyRelu", alpha="negative_slope"))
exporter("ELU")(_elementwise("Elu", alpha="alpha"))
exporter("SELU")(_elementwise("Selu"))


@exporter("GELU")
def _gelu(g, layer, key, x, shape):
    if g.opset < 20:
        raise Unsupported(f"GELU needs opset >= 20 (ONNX Gelu), got {g.opset}")
    return g.node("Gelu", [x], key, approximate=getattr(layer, "approximate", "none"))


@exporter("SiLU")
def _silu(g, layer, key, x, shape):
    """ONNX Swish from opset 24 (which :func:`fastconv.onnx.load` reads back), x * Sigmoid(x) before."""
    if g.opset >= 24:
        return g.node("Swish", [x], key)
    return g.node("Mul", [x, g.node("Sigmoid", [x], key)], key)


#: The smallest ``threshold`` at which Softplus's linear branch equals ``log(1 + exp(t))`` in
#: float32 (``log1p(exp(-t)) < 2**-24 * t``): ONNX Softplus has no threshold.
SOFTPLUS_THRESHOLD_MIN = 15.0


@exporter("Softplus")
def _softplus(g, layer, key, x, shape):
    """ONNX Softplus (``log(1 + exp(x))``), as ``Softplus(beta * x) / beta`` when ``beta != 1``."""
    if layer.threshold < SOFTPLUS_THRESHOLD_MIN:
        raise Unsupported(f"threshold={layer.threshold} (ONNX Softplus has no threshold; fastconv's linear "
                          f"branch matches it only for threshold >= {SOFTPLUS_THRESHOLD_MIN})")
    if layer.beta == 1.0:
        return g.node("Softplus", [x], key)
    beta = g.scalar(f"{key}.beta", layer.beta)
    return g.node("Div", [g.node("Softplus", [g.node("Mul", [x, beta], key)], key), beta], key)


@exporter("Hardtanh")
def _hardtanh(g, layer, key, x, shape):
    bounds = [g.scalar(f"{key}.min_val", layer.min_val), g.scalar(f"{key}.max_val", layer.max_val)]
    return g.node("Clip", [x] + bounds, key)


def _softmax(op):
    def export_softmax(g, layer, key, x, shape):
        if layer.dim is None:
            raise Unsupported("dim=None (PyTorch's implicit dim is deprecated): give dim")
        return g.node(op, [x], key, axis=int(layer.dim))
    return export_softmax


exporter("Softmax")(_softmax("Softmax"))
exporter("LogSoftmax")(_softmax("LogSoftmax"))


@exporter("Identity")
def _identity(g, layer, key, x, shape):
    return x


@exporter("Dropout")
def _dropout(g, layer, key, x, shape):
    """ONNX Dropout without ``training_mode``: the identity, keeping ``p`` for an importer."""
    return g.node("Dropout", [x, g.scalar(f"{key}.ratio", layer.p)], key)


# --- reshaping and padding ---------------------------------------------------------------------

@exporter("Flatten")
def _flatten(g, layer, key, x, shape):
    nd = len(shape)
    start, end = layer.start_dim % nd, layer.end_dim % nd
    if (start, end) == (1, nd - 1):
        return g.node("Flatten", [x], key, axis=1)
    # 0 copies a leading (batch) dim, -1 is the merged one, trailing dims are static
    target = [0] * start + [-1] + list(shape[end + 1:])
    return g.node("Reshape", [x, g.constant(f"{key}.shape", np.array(target, dtype=np.int64))], key)


def _padding_layer(mode):
    def export_padding(g, layer, key, x, shape):
        left, right, top, bottom = (tuple(layer.padding) if isinstance(layer.padding, (tuple, list))
                                    else (layer.padding,) * 4)
        return _pad(g, key, x, (top, bottom, left, right), mode, getattr(layer, "value", 0.0))
    return export_padding


exporter("ZeroPad2d", "ConstantPad2d")(_padding_layer("constant"))
exporter("ReflectionPad2d")(_padding_layer("reflect"))
exporter("ReplicationPad2d")(_padding_layer("edge"))
exporter("CircularPad2d")(_padding_layer("wrap"))
