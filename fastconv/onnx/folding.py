"""Constant folding: the ONNX ops that compute constants and shapes, evaluated at import time.

``@folder("Gather")`` registers ``fn(ctx, node, inputs) -> ndarray``, run when none of the node's
inputs is a run-time tensor (``Shape`` excepted: it reads only its input's shape). Shape vectors
are object arrays whose batch entry is the symbol :data:`~fastconv.onnx.importers.BATCH`, so the
``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains that exporters write for a flatten
fold to a target shape ``[N, -1]``, which the Reshape importer turns into a Flatten; arithmetic
that would need the batch's value raises TypeError, reported as a fold that cannot be done.
"""
import numpy as np
from onnx import helper, numpy_helper

from .attrs import Unsupported, attributes
from .importers import BATCH, Symbol

__all__ = ["FOLDERS", "folder", "shape_vector"]

FOLDERS = {}  # op type -> fn


def folder(*ops):
    """Register the decorated function as the constant folder of the ONNX ``ops``."""
    def register(fn):
        for op in ops:
            FOLDERS[op] = fn
        return fn
    return register


def shape_vector(t):
    """The shape of Tensor ``t`` (of known rank) as a 1-D object array: :data:`BATCH` first, then
    the dims (a :class:`Symbol` for an unknown one)."""
    dims = [BATCH] + [Symbol(f"{t.name}[{i}]") if d is None else int(d) for i, d in enumerate(t.shape[1:], 1)]
    return np.array(dims, dtype=object)


def _normalise(a):
    """An object array without symbols becomes int64 (so NumPy's own dtypes carry on)."""
    a = np.asarray(a)
    if a.dtype == object and not any(isinstance(v, Symbol) for v in a.reshape(-1)):
        return a.astype(np.int64)
    return a


def _axes(node, inputs, index, ctx):
    """Axes from the attribute (before opset 13) or from input ``index`` (from 13)."""
    if ctx.opset < 13:
        return attributes(node, axes=None)["axes"]
    attributes(node)
    return None if len(inputs) <= index or inputs[index] is None else [int(v) for v in inputs[index]]


@folder("Constant")
def _constant(ctx, node, inputs):
    a = attributes(node, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None)
    if a["value"] is not None:
        return numpy_helper.to_array(a["value"])
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                        ("value_ints", np.int64)):
        if a[name] is not None:
            return np.array(a[name], dtype=dtype)
    raise Unsupported("a Constant without value")


@folder("ConstantOfShape")
def _constant_of_shape(ctx, node, inputs):
    a = attributes(node, value=None)
    fill = np.zeros(1, np.float32) if a["value"] is None else numpy_helper.to_array(a["value"]).reshape(-1)
    return np.full([int(v) for v in inputs[0]], fill[0], dtype=fill.dtype)


@folder("Shape")
def _shape(ctx, node, inputs):
    a = attributes(node, start=0, end=None)
    ctx.rank(inputs[0])  # Unsupported (or skipped after an earlier problem) when unknown
    vec = shape_vector(inputs[0])
    return _normalise(vec[a["start"]:a["end"]])


@folder("Identity")
def _fold_identity(ctx, node, inputs):
    attributes(node)
    return inputs[0]


@folder("Cast")
def _fold_cast(ctx, node, inputs):
    a = attributes(node, to=None, saturate=1)
    dtype = helper.tensor_dtype_to_np_dtype(a["to"])
    x = inputs[0]
    if x.dtype == object:  # a shape vector with symbols stays symbolic through an integer cast
        if dtype.kind not in "iu":
            raise Unsupported(f"cast of a run-time shape to {dtype}")
        return x
    return x.astype(dtype)


@folder("Gather")
def _gather(ctx, node, inputs):
    a = attributes(node, axis=0)
    return _normalise(np.take(inputs[0], inputs[1].astype(np.int64), axis=a["axis"]))


@folder("Unsqueeze")
def _unsqueeze(ctx, node, inputs):
    x, axes = inputs[0], _axes(node, inputs, 1, ctx)
    rank = x.ndim + len(axes)
    for axis in sorted(ax % rank for ax in axes):
        x = np.expand_dims(x, axis)
    return x


@folder("Squeeze")
def _squeeze(ctx, node, inputs):
    x, axes = inputs[0], _axes(node, inputs, 1, ctx)
    return np.squeeze(x, axis=None if axes is None else tuple(ax % x.ndim for ax in axes))


@folder("Concat")
def _concat(ctx, node, inputs):
    a = attributes(node, axis=None)
    if any(np.asarray(v).dtype == object for v in inputs):  # a shape vector: keep its symbols
        return _normalise(np.concatenate([np.asarray(v, dtype=object) for v in inputs], axis=a["axis"]))
    return np.concatenate(inputs, axis=a["axis"])


@folder("Slice")
def _slice(ctx, node, inputs):
    attributes(node)
    x, starts, ends = inputs[0], inputs[1], inputs[2]
    axes = range(len(starts)) if len(inputs) < 4 or inputs[3] is None else inputs[3]
    steps = [1] * len(starts) if len(inputs) < 5 or inputs[4] is None else inputs[4]
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[int(ax) % x.ndim] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


@folder("Transpose")
def _transpose(ctx, node, inputs):
    a = attributes(node, perm=None)
    return np.transpose(inputs[0], a["perm"])


@folder("Add", "Sub", "Mul", "Div")
def _arithmetic(ctx, node, inputs):
    attributes(node)
    a, b = (np.asarray(v) for v in inputs)
    if node.op_type == "Div" and a.dtype.kind in "iuO" and b.dtype.kind in "iuO":
        return _normalise(a // b)  # the shapes folded here are non-negative: floor is truncation
    return _normalise({"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[node.op_type](a, b))


@folder("Reshape")
def _fold_reshape(ctx, node, inputs):
    attributes(node, allowzero=0)
    return np.reshape(inputs[0], [int(v) for v in inputs[1]])
