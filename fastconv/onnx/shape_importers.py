"""Importers of the ONNX ops that reshape or pad one tensor: Flatten, Reshape (a flatten, or the
Reshapes around a group normalisation) and Pad (a padding layer, or a Conv's ``padding_mode``).
See :mod:`fastconv.onnx.importers` for the registry and the contract; :mod:`fastconv.onnx.load`
imports this module so that these importers are registered.
"""
import math

from .attrs import Unsupported, attributes, axis, scalar
from .importers import BATCH, Spec, Symbol, _accepts, importer

__all__ = []


@importer("Flatten", needs=("Flatten",))
def _flatten(ctx, node, x):
    a = attributes(node, axis=1)
    if axis(a["axis"], ctx.rank(x), end=True) != 1:
        raise Unsupported(f"axis={a['axis']}: only axis 1 (keep the batch, merge the rest) is supported")
    return Spec("Flatten", {})


def _reshape_target(target, dims, allowzero, batch):
    """``target`` resolved against the input ``dims`` (BATCH first): a list with BATCH first and
    the other dims (a -1 inferred where the input's dims allow), or None when the reshape does not
    keep the batch axis. ``batch``: the graph input's static batch size or None."""
    out = []
    for i, t in enumerate(target):
        if t is BATCH or (batch is not None and i == 0 and t == batch):
            out.append(BATCH)
        elif isinstance(t, Symbol):
            return None
        elif t == 0 and not allowzero:
            out.append(dims[i] if i < len(dims) else -1)
        else:
            out.append(int(t))
    known = None not in dims[1:]
    if out and out[0] == -1 and known and all(isinstance(t, int) and t > 0 for t in out[1:]):
        if math.prod(out[1:]) == math.prod(dims[1:]):
            out[0] = BATCH  # [-1, C*H*W]: the -1 is the batch
    if not out or out[0] is not BATCH:
        return None
    if known and out[1:].count(-1) == 1 and out != [BATCH, -1]:
        rest = math.prod(t for t in out[1:] if t != -1)
        if rest > 0 and math.prod(dims[1:]) % rest == 0:
            out[out.index(-1, 1)] = math.prod(dims[1:]) // rest
    return out


def _merged_range(dims, out):
    """``(start, end)`` such that merging ``dims[start:end + 1]`` gives ``out``, or None."""
    for start in range(1, len(dims)):
        for end in range(start + 1, len(dims)):
            merged = dims[start:end + 1]
            if None not in merged and list(dims[:start]) + [math.prod(merged)] + list(dims[end + 1:]) == out:
                return start, end
    return None


def _shown(values):
    return [v if isinstance(v, Symbol) else int(v) for v in values]


def _group_norm_reshape(ctx, node, x, dims, out):
    """The Reshapes around a group normalisation's InstanceNormalization (as torch.onnx and
    fastconv write it): to (N, groups, -1) before, back to the input's shape after. Returns the
    GroupNorm Spec (pending until the second Reshape), or None for any other Reshape."""
    spec = ctx.producer(x)
    if spec is not None and spec.cls == "GroupNorm" and spec.pending:
        if "eps" not in spec.kwargs or out is None or out[1:] != list(spec.restore[1:]):
            raise Unsupported(f"Reshape to {_shown(out or [])} inside a group normalisation of a "
                              f"{tuple(spec.restore)} input (back to that shape after InstanceNormalization)")
        spec.pending = False
        spec.kwargs["affine"] = False
        return spec
    reader = ctx.consumer(node)
    if (reader is None or reader.op_type != "InstanceNormalization" or out is None or len(out) != 3
            or not isinstance(out[1], int) or len(dims) < 3 or None in dims[1:]):
        return None
    groups, channels = out[1], dims[1]
    if groups < 1 or channels % groups or out[2] not in (-1, math.prod(dims[1:]) // groups):
        return None
    spec = Spec("GroupNorm", dict(num_groups=groups, num_channels=channels), pending=True)
    spec.restore = tuple(dims)
    return spec


@importer("Reshape", needs=("Flatten", "GroupNorm"))
def _reshape(ctx, node, x):
    """A Reshape that keeps the batch axis and merges a run of axes is a Flatten."""
    a = attributes(node, allowzero=0)
    if ctx.position(node, x) != 0:
        raise Unsupported("the target shape is computed at run time")
    target = list(ctx.const(node, 1, "shape", symbolic=True).reshape(-1))
    ctx.rank(x)
    dims = list(x.shape)
    out = _reshape_target(target, dims, a["allowzero"], ctx.static_batch)
    group_norm = _group_norm_reshape(ctx, node, x, dims, out)
    if group_norm is not None:
        return group_norm
    if out == dims:
        return None
    if out == [BATCH, -1]:
        return Spec("Flatten", {})
    span = None if out is None else _merged_range(dims, out)
    if span is None:
        raise Unsupported(f"Reshape of a {tuple(x.shape)} tensor to {_shown(target)} is not a flatten "
                          "(fastconv reshapes (N, ...) by merging adjacent axes only)")
    start, end = span
    last = len(dims) - 1
    if (start, end) == (1, last):
        return Spec("Flatten", {})
    return Spec("Flatten", dict(start_dim=start, end_dim=-1 if end == last else end))


_PAD_LAYERS = {"reflect": "ReflectionPad2d", "edge": "ReplicationPad2d", "wrap": "CircularPad2d"}
_CONV_PADDING_MODES = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}


@importer("Pad", needs=("ZeroPad2d", "ConstantPad2d", *_PAD_LAYERS.values()))
def _pad(ctx, node, x):
    """A padding layer; or, when a Conv reads it, that Conv's ``padding_mode`` (PyTorch exports a
    reflect / replicate / circular Conv2d as Pad + Conv)."""
    a = attributes(node, mode="constant")
    mode = a["mode"]
    if mode not in _PAD_LAYERS and mode != "constant":
        raise Unsupported(f"mode={mode!r} (ONNX's modes are constant, reflect, edge and wrap)")
    if ctx.const(node, 3, "axes", optional=True) is not None or ctx.rank(x) != 4:
        raise Unsupported("only pads over all four axes of an (N, C, H, W) input are supported")
    pads = [int(p) for p in ctx.const(node, 1, "pads").reshape(-1)]
    if len(pads) != 8:
        raise Unsupported(f"pads {pads} has {len(pads)} values: a 4-D input takes 8 (the begins, then the ends)")
    if pads[:2] != [0, 0] or pads[4:6] != [0, 0] or min(pads) < 0:
        raise Unsupported(f"pads {pads}: only non-negative padding of H and W is supported")
    top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
    reader = ctx.consumer(node)
    if (mode in _CONV_PADDING_MODES and reader is not None and reader.op_type == "Conv"
            and (top, left) == (bottom, right) and _accepts("Conv2d", "padding_mode")):
        return Spec("Conv2d", dict(padding=(top, left), padding_mode=_CONV_PADDING_MODES[mode]), pending=True)
    kwargs = dict(padding=(left, right, top, bottom))
    if mode != "constant":
        return Spec(_PAD_LAYERS[mode], kwargs)
    value = ctx.const(node, 2, "constant_value", optional=True)
    value = 0.0 if value is None else float(scalar(value, "constant_value"))
    return Spec("ConstantPad2d", dict(kwargs, value=value)) if value else Spec("ZeroPad2d", kwargs)
