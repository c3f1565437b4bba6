"""One importer per ONNX op: how a node becomes a fastconv layer.

``@importer("Conv", needs=("Conv2d",))`` registers ``fn(ctx, node, x) -> Spec | None``: it reads
the node's one run-time input ``x`` (a :class:`Tensor`, the previous layer's output) and its
constant inputs (``ctx.const``), and returns the :class:`Spec` of the layer to build, or None when
the node is the identity (Identity, Dropout with ratio 0, ...). A Spec of a class fastconv does not
have is Unsupported, so importers of layers still to come are inert until the layer exists;
``needs`` only lists the classes for :func:`fastconv.onnx.importable_ops`. Constant ops (shape
arithmetic) are folded instead: see :mod:`fastconv.onnx.folding`.

The pooling and one-tensor ops (activations, Softmax, Identity, Cast, Dropout) are in
:mod:`fastconv.onnx.pool_act_importers`, Flatten, Reshape and Pad in
:mod:`fastconv.onnx.shape_importers`; the layers with weights are here. Attribute reading and its
checks (axes, pads) are in :mod:`fastconv.onnx.attrs`.

Importers raise :class:`Unsupported` naming the attribute or input they cannot honour; every
attribute a node carries must be one the importer knows (:func:`attributes`), so nothing is
silently ignored. No layer is built here: a :class:`Spec` is built only once the whole graph has
been read without a problem.
"""
import inspect

import numpy as np

from .. import layers as nn

from .._shapes import conv_padding
from .attrs import Unsupported, attributes, axis, decimal, hw_pads, pair, scalar  # noqa: F401 - Unsupported, attributes re-exported

__all__ = ["BATCH", "Symbol", "Tensor", "Spec", "Block", "item_specs", "build_items", "Unsupported", "importer", "attributes", "IMPORTERS"]

IMPORTERS = {}  # op type -> (fn, names of the fastconv classes it builds)


class Symbol:
    """A dimension known only at run time: the batch size (:data:`BATCH`) or an unknown dim.

    Arithmetic on it raises TypeError, so a fold that would need its value fails loudly.
    """

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


BATCH = Symbol("N")


class Tensor:
    """A value computed at run time: ``name`` and ``shape`` (dim 0 is :data:`BATCH`, other dims
    ints or None when unknown; ``shape`` is None when even the rank is unknown), and ``items``:
    the layers (:class:`Spec` and :class:`Block`) that compute it from the graph input, in order
    (None until its node has been imported)."""

    __slots__ = ("name", "shape", "items")

    def __init__(self, name, shape, items=None):
        self.name, self.shape, self.items = name, shape, items

    @property
    def rank(self):
        return None if self.shape is None else len(self.shape)


class Spec:
    """A fastconv layer to build: ``getattr(fastconv.layers, cls)(**kwargs)``, then ``state`` loaded.

    Unsupported when fastconv has no layer class ``cls``. A ``pending`` spec is part of a layer
    that the next node completes (a Pad that is a Conv's ``padding_mode``).
    """

    def __init__(self, cls, kwargs, state=None, pending=False):
        _layer_class(cls)
        self.cls, self.kwargs, self.state, self.pending = cls, dict(kwargs), dict(state or {}), pending

    def build(self):
        if self.pending:
            raise ValueError(f"{self.cls} {self.kwargs} was never completed by the node after it")
        layer = getattr(nn, self.cls)(**self.kwargs)
        if self.state:
            layer.load_state_dict(self.state)
        return layer


class Block:
    """A Residual or Concat block to build from its branches, each a list of :class:`Spec` /
    :class:`Block` items: built as a Sequential, as the one layer when it has one item, and as the
    block's input itself (no shortcut, an Identity branch) when it is empty."""

    def __init__(self, cls, branches, dim=1):
        _layer_class(cls)
        self.cls, self.branches, self.dim = cls, [list(b) for b in branches], dim
        self.depth = 1 + max((i.depth for b in self.branches for i in b if isinstance(i, Block)), default=0)

    def specs(self):
        """Every Spec inside the block, nested blocks included."""
        return [s for b in self.branches for item in b for s in item_specs(item)]

    def build(self):
        seqs = [None if not b else b[0].build() if len(b) == 1 else nn.Sequential(*build_items(b))
                for b in self.branches]
        if self.cls == "Residual":
            return nn.Residual(*seqs)
        return nn.Concat(*(nn.Identity() if s is None else s for s in seqs), dim=self.dim)


def item_specs(item):
    """The Specs of one chain item (itself, or those inside a Block)."""
    return item.specs() if isinstance(item, Block) else [item]


def build_items(items):
    """The layers of a chain of Spec / Block items, built."""
    return [item.build() for item in items]


def importer(op, needs=()):
    """Register the decorated function as the layer importer of ONNX ``op``; ``needs`` names the
    fastconv classes it may build (it is listed by :func:`importable_ops` while one exists)."""
    def register(fn):
        IMPORTERS[op] = (fn, tuple(needs))
        return fn
    return register


def _layer_class(name):
    cls = getattr(nn, name, None)
    if not isinstance(cls, type):
        raise Unsupported(f"fastconv has no {name} layer")
    return cls


def _accepts(cls_name, param):
    return param in inspect.signature(_layer_class(cls_name)).parameters


def _require(issues, cls_name, param, value, default):
    """Pass ``param=value`` to the layer when it differs from ``default`` and the class takes it;
    otherwise note the issue. Returns ``{param: value}`` or ``{}``."""
    if value == default:
        return {}
    if not _accepts(cls_name, param):
        issues.append(f"{param}={value!r} (fastconv.{cls_name} has no {param!r} argument)")
        return {}
    return {param: value}


def _done(issues):
    if issues:
        raise Unsupported("; ".join(issues))


def _rng():
    """A private generator for layers whose random initial weights are overwritten at once, so
    loading a model leaves the default generator (``fastconv.manual_seed``) untouched."""
    return np.random.default_rng(0)


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


# --- layers with weights -----------------------------------------------------------------------

def _same_or_pads(auto_pad, pads, reach, stride, issues):
    """Conv2d's ``padding`` for ONNX ``auto_pad`` and ``pads`` (top, left, bottom, right)."""
    if auto_pad == "VALID":
        return 0
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        even = any(r % 2 == 0 for r in reach)
        if stride != (1, 1) or (auto_pad == "SAME_LOWER" and even):
            issues.append(f"auto_pad={auto_pad} with stride {stride} and kernel reach {reach}")
        return "same"
    if auto_pad != "NOTSET":
        issues.append(f"auto_pad={auto_pad!r}")
        return 0
    top, left, bottom, right = pads
    if (top, left) == (bottom, right):
        return (top, left)
    if stride == (1, 1) and conv_padding("same", reach, stride) == (top, bottom, left, right):
        return "same"  # PyTorch's "same" for even kernels: the extra row and column at the end
    issues.append(f"asymmetric pads {list(pads)} (fastconv pads top=bottom, left=right, or 'same')")
    return 0


@importer("Conv", needs=("Conv2d",))
def _conv(ctx, node, x):
    a = attributes(node, auto_pad="NOTSET", dilations=(1, 1), group=1, kernel_shape=None,
                   pads=(0, 0, 0, 0), strides=(1, 1))
    w = ctx.const(node, 1, "weight")
    if w.ndim != 4:
        raise Unsupported(f"weight of shape {w.shape}: only 2-D convolution (a 4-D weight) is supported")
    issues = []
    if a["kernel_shape"] is not None and tuple(a["kernel_shape"]) != w.shape[2:]:
        issues.append(f"kernel_shape {list(a['kernel_shape'])} differs from the weight's {w.shape[2:]}")
    stride = pair(a["strides"], "convolution", "strides")
    dilation = pair(a["dilations"], "convolution", "dilations")
    reach = tuple(d * (k - 1) + 1 for d, k in zip(dilation, w.shape[2:]))
    padding = _same_or_pads(a["auto_pad"], hw_pads(a["pads"]), reach, stride, issues)
    group = int(a["group"])
    kwargs = dict(in_channels=w.shape[1] * group, out_channels=w.shape[0], kernel_size=w.shape[2:],
                  stride=stride, padding=padding, rng=_rng())
    kwargs.update(_require(issues, "Conv2d", "dilation", dilation, (1, 1)))
    kwargs.update(_require(issues, "Conv2d", "groups", group, 1))
    state = {"weight": _f32(w)}
    b = ctx.const(node, 2, "bias", optional=True)
    if b is not None:
        state["bias"] = _f32(b).reshape(-1)
    kwargs["bias"] = b is not None
    pad = ctx.producer(x)
    if pad is not None and pad.pending:  # Pad + Conv: one Conv2d with that padding_mode
        if padding not in (0, (0, 0)):
            issues.append(f"pads {list(a['pads'])} after a {pad.kwargs['padding_mode']} Pad")
        _done(issues)
        pad.kwargs, pad.state, pad.pending = {**kwargs, **pad.kwargs}, state, False
        return pad
    _done(issues)
    return Spec("Conv2d", kwargs, state)


@importer("ConvTranspose", needs=("ConvTranspose2d",))
def _conv_transpose(ctx, node, x):
    a = attributes(node, auto_pad="NOTSET", dilations=(1, 1), group=1, kernel_shape=None,
                   output_padding=(0, 0), output_shape=None, pads=(0, 0, 0, 0), strides=(1, 1))
    w = ctx.const(node, 1, "weight")
    if w.ndim != 4:
        raise Unsupported(f"weight of shape {w.shape}: only 2-D transposed convolution is supported")
    issues = []
    if a["auto_pad"] != "NOTSET" or a["output_shape"] is not None:
        issues.append("auto_pad / output_shape (give pads and output_padding)")
    top, left, bottom, right = hw_pads(a["pads"])
    if (top, left) != (bottom, right):
        issues.append(f"asymmetric pads {list(a['pads'])}")
    group = int(a["group"])
    kwargs = dict(in_channels=w.shape[0], out_channels=w.shape[1] * group, kernel_size=w.shape[2:],
                  stride=pair(a["strides"], "convolution", "strides"), padding=(top, left),
                  output_padding=pair(a["output_padding"], "convolution", "output_padding"),
                  groups=group, dilation=pair(a["dilations"], "convolution", "dilations"))
    state = {"weight": _f32(w)}
    b = ctx.const(node, 2, "bias", optional=True)
    if b is not None:
        state["bias"] = _f32(b).reshape(-1)
    kwargs["bias"] = b is not None
    _done(issues)
    return Spec("ConvTranspose2d", kwargs, state)


def _linear_spec(weight, bias):
    """A Linear of weight (out, in) and bias (out,) or None."""
    out_features, in_features = weight.shape
    state = {"weight": _f32(weight)}
    if bias is not None:
        state["bias"] = _f32(bias)
    return Spec("Linear", dict(in_features=in_features, out_features=out_features, bias=bias is not None,
                               rng=_rng()), state)


def _bias_vector(c, out_features, what):
    c = np.asarray(c)
    if c.size not in (1, out_features) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
        raise Unsupported(f"{what} of shape {c.shape} does not broadcast as a bias of {out_features} features")
    return np.broadcast_to(c.reshape(-1), (out_features,))


def _matrix_input(x, op):
    if x.rank is not None and x.rank != 2:
        raise Unsupported(f"{op} of a {x.rank}-D input: fastconv.Linear takes (N, features)")


@importer("Gemm", needs=("Linear",))
def _gemm(ctx, node, x):
    a = attributes(node, alpha=1.0, beta=1.0, transA=0, transB=0)
    if ctx.position(node, x) != 0 or a["transA"]:
        raise Unsupported("the runtime input must be A, untransposed (transA=0)")
    _matrix_input(x, "Gemm")
    b = ctx.const(node, 1, "B")
    if b.ndim != 2:
        raise Unsupported(f"B of shape {b.shape} is not a matrix")
    weight = (b if a["transB"] else b.T).astype(np.float64) * a["alpha"]
    c = ctx.const(node, 2, "C", optional=True)
    bias = None if c is None else _bias_vector(c, weight.shape[0], "C").astype(np.float64) * a["beta"]
    return _linear_spec(weight, bias)


@importer("MatMul", needs=("Linear",))
def _matmul(ctx, node, x):
    attributes(node)
    if ctx.position(node, x) != 0:
        raise Unsupported("the runtime input must be the left operand")
    _matrix_input(x, "MatMul")
    b = ctx.const(node, 1, "B")
    if b.ndim != 2:
        raise Unsupported(f"B of shape {b.shape} is not a matrix")
    return _linear_spec(b.T, None)


def _per_channel(c, x, what):
    """Constant ``c`` as one value per channel of ``x`` (N, C, *): shape (C, 1, ...), (1, C, 1, ...),
    or one value for all (torch.onnx multiplies a GroupNorm without affine by ones of (1, 1, 1))."""
    channels = x.shape[1]
    core = (channels,) + (1,) * (len(x.shape) - 2)
    c = np.asarray(c)
    if c.size == 1 and c.ndim <= len(x.shape):
        return np.full(channels, c.reshape(-1)[0], dtype=np.float32)
    if c.shape[c.ndim - len(core):] != core or any(d != 1 for d in c.shape[:c.ndim - len(core)]) or c.ndim < len(core):
        raise Unsupported(f"{what} of shape {c.shape} is not one value per channel of a {tuple(x.shape)} input")
    return _f32(c).reshape(-1)


@importer("Add", needs=("Linear", "GroupNorm"))
def _add(ctx, node, x):
    """A constant added to a bias-free Linear's output is its bias (MatMul + Add, or Gemm without C);
    one per channel added to a GroupNorm that has a weight and no bias is its bias."""
    attributes(node)
    spec = ctx.producer(x)
    c = ctx.const(node, 1 - ctx.position(node, x), "addend")
    if spec is not None and spec.cls == "GroupNorm" and not spec.pending and not np.any(c):
        _per_channel(c, x, "the addend")
        return spec  # torch.onnx's zeros after a GroupNorm without affine
    if spec is not None and spec.cls == "GroupNorm" and spec.kwargs.get("affine") and not spec.kwargs["bias"]:
        spec.state["bias"] = _per_channel(c, x, "the addend")
        spec.kwargs["bias"] = True
        return spec
    if spec is None or spec.cls != "Linear" or spec.kwargs["bias"]:
        raise Unsupported("adding a constant is supported only as the bias of a MatMul, a bias-free Gemm or "
                          "a GroupNorm (a residual Add of two tensors needs a Residual block)")
    spec.state["bias"] = _f32(_bias_vector(c, spec.kwargs["out_features"], "addend"))
    spec.kwargs["bias"] = True
    return spec  # the same layer, now with its bias: the Add node is folded into it


@importer("Mul", needs=("GroupNorm", "Softplus"))
def _mul(ctx, node, x):
    """One constant per channel multiplying a GroupNorm without weight is its weight; a scalar
    ``beta`` read by a Softplus starts ``Softplus(beta * x) / beta`` (fastconv's export of beta)."""
    attributes(node)
    spec = ctx.producer(x)
    c = ctx.const(node, 1 - ctx.position(node, x), "factor")
    reader = ctx.consumer(node)
    if reader is not None and reader.op_type == "Softplus" and np.asarray(c).size == 1 and float(scalar(c, "factor")) > 0:
        return Spec("Softplus", dict(beta=decimal(c)), pending=True)
    if spec is None or spec.cls != "GroupNorm" or spec.pending or spec.kwargs.get("affine", True):
        raise Unsupported("multiplying by a constant is supported only as the weight of a group normalisation "
                          "(Reshape, InstanceNormalization, Reshape, Mul, Add)")
    weight = _per_channel(c, x, "the factor")
    if np.all(weight == 1) and np.asarray(c).size == 1:
        return spec  # torch.onnx's ones after a GroupNorm without affine: it stays without weight
    spec.state["weight"] = weight
    spec.kwargs.update(affine=True, bias=False)
    return spec


def _unit_affine(ctx, node, groups):
    """InstanceNormalization's scale and bias inside a group normalisation: ones and zeros."""
    scale, bias = ctx.const(node, 1, "scale"), ctx.const(node, 2, "B")
    if scale.size != groups or bias.size != groups or np.any(scale != 1) or np.any(bias != 0):
        raise Unsupported(f"InstanceNormalization of {groups} groups with scale {scale.shape} / B {bias.shape} "
                          "other than ones and zeros (the group normalisation's affine part follows it)")


@importer("InstanceNormalization", needs=("GroupNorm",))
def _instance_norm(ctx, node, x):
    """The middle of a group normalisation (after the Reshape to (N, groups, -1)); alone, over
    (N, C, *) with a scale and B per channel, it is ``GroupNorm(C, C)``."""
    a = attributes(node, epsilon=1e-5)
    spec = ctx.producer(x)
    if spec is not None and spec.cls == "GroupNorm" and spec.pending:
        _unit_affine(ctx, node, spec.kwargs["num_groups"])
        spec.kwargs["eps"] = decimal(a["epsilon"])
        return spec
    if ctx.rank(x) < 3 or x.shape[1] is None:
        raise Unsupported(f"input of shape {x.shape}: fastconv instance-normalises (N, C, *) with static C")
    c = x.shape[1]
    state = {"weight": _f32(ctx.const(node, 1, "scale")).reshape(-1), "bias": _f32(ctx.const(node, 2, "B")).reshape(-1)}
    if state["weight"].size != c or state["bias"].size != c:
        raise Unsupported(f"scale / B of {state['weight'].size} / {state['bias'].size} values for {c} channels")
    return Spec("GroupNorm", dict(num_groups=c, num_channels=c, eps=decimal(a["epsilon"])), state)


@importer("GroupNormalization", needs=("GroupNorm",))
def _group_normalization(ctx, node, x):
    a = attributes(node, epsilon=1e-5, num_groups=None, stash_type=1)
    if ctx.rank(x) < 3 or x.shape[1] is None:
        raise Unsupported(f"input of shape {x.shape}: fastconv group-normalises (N, C, *) with static C")
    c, groups = x.shape[1], int(a["num_groups"])
    scale, bias = _f32(ctx.const(node, 1, "scale")).reshape(-1), _f32(ctx.const(node, 2, "bias")).reshape(-1)
    if scale.size != c or bias.size != c or c % groups:
        raise Unsupported(f"scale / bias of {scale.size} / {bias.size} values (one per group is opset 18's "
                          f"form) for {c} channels in {groups} groups: fastconv takes one per channel")
    return Spec("GroupNorm", dict(num_groups=groups, num_channels=c, eps=decimal(a["epsilon"])),
                {"weight": scale, "bias": bias})


@importer("BatchNormalization", needs=("BatchNorm1d", "BatchNorm2d"))
def _batch_norm(ctx, node, x):
    a = attributes(node, epsilon=1e-5, momentum=0.9, training_mode=0)
    if a["training_mode"]:
        raise Unsupported("training_mode=1 (batch statistics): export the model in eval mode")
    ctx.unused_outputs(node, "running mean and variance outputs (training mode)")
    if ctx.rank(x) not in (2, 3, 4):
        raise Unsupported(f"input rank {x.rank}: BatchNorm1d takes 2-D/3-D, BatchNorm2d 4-D input")
    names = ("weight", "bias", "running_mean", "running_var")
    state = {n: _f32(ctx.const(node, i, n)).reshape(-1) for i, n in enumerate(names, 1)}
    state["num_batches_tracked"] = np.array(0, dtype=np.int64)
    cls = "BatchNorm2d" if x.rank == 4 else "BatchNorm1d"
    kwargs = dict(num_features=state["weight"].size, eps=decimal(a["epsilon"]),
                  momentum=round(1.0 - decimal(a["momentum"]), 12))  # ONNX keeps 1 - PyTorch's momentum
    return Spec(cls, kwargs, state)


@importer("PRelu", needs=("PReLU",))
def _prelu(ctx, node, x):
    attributes(node)
    slope = ctx.const(node, 1, "slope")
    if slope.size > 1:  # one slope per channel must broadcast along axis 1 of (N, C, ...)
        per_channel = (x.shape[1],) + (1,) * (ctx.rank(x) - 2)
        core = slope.shape[slope.ndim - len(per_channel):]
        if core != per_channel or any(d != 1 for d in slope.shape[:slope.ndim - len(per_channel)]):
            raise Unsupported(f"slope of shape {slope.shape} is neither one value nor one per channel")
    return Spec("PReLU", dict(num_parameters=slope.size), {"weight": _f32(slope).reshape(-1)})


@importer("LayerNormalization", needs=("LayerNorm",))
def _layer_norm(ctx, node, x):
    a = attributes(node, axis=-1, epsilon=1e-5, stash_type=1)
    ctx.unused_outputs(node, "the Mean / InvStdDev outputs")
    start = axis(a["axis"], ctx.rank(x))
    shape = tuple(x.shape[start:])
    if start == 0 or None in shape:
        raise Unsupported(f"axis={a['axis']} over a {tuple(x.shape)} input: fastconv.LayerNorm normalises "
                          "static trailing axes after the batch")
    scale = ctx.const(node, 1, "scale")
    bias = ctx.const(node, 2, "bias", optional=True)
    for what, v in (("scale", scale), ("bias", bias)):
        if v is not None and v.shape != shape:
            raise Unsupported(f"{what} of shape {v.shape}: fastconv.LayerNorm takes one of the normalised "
                              f"shape {shape}")
    state = {"weight": _f32(scale)}
    if bias is not None:
        state["bias"] = _f32(bias)
    return Spec("LayerNorm", dict(normalized_shape=shape, eps=decimal(a["epsilon"]), bias=bias is not None), state)
