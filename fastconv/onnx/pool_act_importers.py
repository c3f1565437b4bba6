"""Importers of the ONNX pooling ops and of the one-tensor ops (activations, Softmax, Identity,
Cast, Dropout): each node becomes a parameter-free fastconv layer (see
:mod:`fastconv.onnx.importers` for the registry and the contract; :mod:`fastconv.onnx.load`
imports this module so that these importers are registered).
"""
import math

from .. import layers as nn

from .attrs import Unsupported, attributes, axis, cast_dtype, decimal, hw_pads, pair, scalar, square
from .importers import Spec, importer, _require, _done

__all__ = []


# --- pooling -----------------------------------------------------------------------------------

def _pool(cls, ctx, node, extra):
    a = attributes(node, auto_pad="NOTSET", ceil_mode=0, dilations=(1, 1), kernel_shape=(),
                   pads=(0, 0, 0, 0), strides=(1, 1), **extra)
    issues = []
    if a["auto_pad"] != "NOTSET":
        issues.append(f"auto_pad={a['auto_pad']!r}")
    kernel = pair(a["kernel_shape"], "pooling", "kernel_shape")
    top, left, bottom, right = hw_pads(a["pads"])
    if (top, left) != (bottom, right):
        issues.append(f"asymmetric pads {list(a['pads'])}")
    kwargs = dict(kernel_size=square(kernel), stride=square(pair(a["strides"], "pooling", "strides")))
    kwargs.update(_require(issues, cls, "padding", (top, left), (0, 0)))
    kwargs.update(_require(issues, cls, "dilation", pair(a["dilations"], "pooling", "dilations"), (1, 1)))
    kwargs.update(_require(issues, cls, "ceil_mode", bool(a["ceil_mode"]), False))
    return a, kwargs, issues


@importer("MaxPool", needs=("MaxPool2d",))
def _max_pool(ctx, node, x):
    a, kwargs, issues = _pool("MaxPool2d", ctx, node, dict(storage_order=0))
    ctx.unused_outputs(node, "the Indices output")
    _done(issues)
    return Spec("MaxPool2d", kwargs)


@importer("AveragePool", needs=("AvgPool2d",))
def _average_pool(ctx, node, x):
    a, kwargs, issues = _pool("AvgPool2d", ctx, node, dict(count_include_pad=0))
    if kwargs.get("padding") is not None:  # count_include_pad only matters with padding
        kwargs.update(_require(issues, "AvgPool2d", "count_include_pad", bool(a["count_include_pad"]), True))
    _done(issues)
    return Spec("AvgPool2d", kwargs)


def _global_pool(adaptive, plain):
    def import_global(ctx, node, x):
        attributes(node)
        if ctx.rank(x) != 4:
            raise Unsupported(f"input rank {x.rank}: only (N, C, H, W) is supported")
        if isinstance(getattr(nn, adaptive, None), type):
            return Spec(adaptive, dict(output_size=1))
        if None in x.shape[2:]:
            raise Unsupported(f"fastconv has no {adaptive} and the input's H, W are not static")
        return Spec(plain, dict(kernel_size=square(tuple(x.shape[2:]))))  # one window over the whole plane
    return import_global


importer("GlobalAveragePool", needs=("AvgPool2d",))(_global_pool("AdaptiveAvgPool2d", "AvgPool2d"))
importer("GlobalMaxPool", needs=("MaxPool2d",))(_global_pool("AdaptiveMaxPool2d", "MaxPool2d"))


# --- elementwise -------------------------------------------------------------------------------

def _elementwise(cls, **attrs):
    """An importer of a one-input op building ``cls``; ``attrs``: ONNX name -> (layer arg, default)."""
    def import_elementwise(ctx, node, x):
        a = attributes(node, **{name: default for name, (_, default) in attrs.items()})
        return Spec(cls, {arg: decimal(a[name]) if isinstance(a[name], float) else a[name]
                          for name, (arg, _) in attrs.items()})
    return import_elementwise


importer("Relu", needs=("ReLU",))(_elementwise("ReLU"))
importer("Sigmoid", needs=("Sigmoid",))(_elementwise("Sigmoid"))
importer("Tanh", needs=("Tanh",))(_elementwise("Tanh"))
importer("LeakyRelu", needs=("LeakyReLU",))(_elementwise("LeakyReLU", alpha=("negative_slope", 0.01)))
importer("Elu", needs=("ELU",))(_elementwise("ELU", alpha=("alpha", 1.0)))
importer("Gelu", needs=("GELU",))(_elementwise("GELU", approximate=("approximate", "none")))


@importer("Softplus", needs=("Softplus",))
def _softplus(ctx, node, x):
    """``Softplus``; after a Mul by beta, the middle of ``Softplus(beta * x) / beta``."""
    attributes(node)
    spec = ctx.producer(x)
    if spec is not None and spec.cls == "Softplus" and spec.pending:
        div = ctx.consumer(node)
        if div is None or div.op_type != "Div":
            raise Unsupported(f"Softplus(beta * x) with beta={spec.kwargs['beta']} is not divided by beta")
        return spec
    return Spec("Softplus", {})


@importer("Div", needs=("Softplus",))
def _div(ctx, node, x):
    """The division by beta that completes ``Softplus(beta * x) / beta``."""
    attributes(node)
    spec = ctx.producer(x)
    if ctx.position(node, x) != 0 or spec is None or spec.cls != "Softplus" or not spec.pending:
        raise Unsupported("division is supported only as the end of Softplus(beta * x) / beta")
    d = ctx.const(node, 1, "divisor")
    if d.size != 1 or decimal(d) != spec.kwargs["beta"]:
        raise Unsupported(f"Softplus(beta * x) with beta={spec.kwargs['beta']} divided by {d.reshape(-1)[:3]}")
    spec.pending = False
    return spec


@importer("Swish", needs=("SiLU",))
def _swish(ctx, node, x):
    a = attributes(node, alpha=1.0)
    if a["alpha"] != 1.0:
        raise Unsupported(f"alpha={a['alpha']}: SiLU is x * sigmoid(x)")
    return Spec("SiLU", {})


@importer("Selu", needs=("SELU",))
def _selu(ctx, node, x):
    a = attributes(node, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875)
    if not (math.isclose(a["alpha"], 1.6732632, rel_tol=1e-6) and math.isclose(a["gamma"], 1.0507010, rel_tol=1e-6)):
        raise Unsupported(f"alpha={a['alpha']}, gamma={a['gamma']}: SELU has fixed constants")
    return Spec("SELU", {})


@importer("Clip", needs=("Hardtanh",))
def _clip(ctx, node, x):
    attributes(node)
    low, high = ctx.const(node, 1, "min", optional=True), ctx.const(node, 2, "max", optional=True)
    return Spec("Hardtanh", dict(min_val=-math.inf if low is None else float(scalar(low, "min")),
                                 max_val=math.inf if high is None else float(scalar(high, "max"))))


def _softmax(cls):
    def import_softmax(ctx, node, x):
        a = attributes(node, axis=-1 if ctx.opset >= 13 else 1)
        dim = axis(a["axis"], ctx.rank(x))
        if ctx.opset < 13 and dim != x.rank - 1:  # before opset 13 the axis flattens what follows it
            raise Unsupported(f"axis={a['axis']} over a {x.rank}-D input (opset {ctx.opset} semantics)")
        return Spec(cls, dict(dim=dim))
    return import_softmax


importer("Softmax", needs=("Softmax",))(_softmax("Softmax"))
importer("LogSoftmax", needs=("LogSoftmax",))(_softmax("LogSoftmax"))


@importer("Identity")
def _identity(ctx, node, x):
    attributes(node)
    return None


@importer("Cast")
def _cast(ctx, node, x):
    dtype = cast_dtype(node)
    if dtype.kind != "f":
        raise Unsupported(f"cast of an activation to {dtype}")
    return None  # fastconv computes in float32 throughout


@importer("Dropout", needs=("Dropout",))
def _dropout(ctx, node, x):
    a = attributes(node, seed=0, **({} if ctx.opset >= 12 else {"ratio": 0.5}))
    ctx.unused_outputs(node, "the mask output")
    ratio = ctx.const(node, 1, "ratio", optional=True) if ctx.opset >= 12 else a.get("ratio")
    training = ctx.const(node, 2, "training_mode", optional=True)
    if training is not None and bool(scalar(training, "training_mode")):
        raise Unsupported("training_mode=True: export the model in eval mode")
    p = 0.5 if ratio is None else decimal(ratio, "ratio")
    return Spec("Dropout", dict(p=p)) if p > 0 else None
