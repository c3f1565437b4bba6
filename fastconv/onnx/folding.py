"""Constant folding: the ONNX ops that compute constants and shapes, evaluated at import time.

``@folder("Gather")`` registers ``fn(ctx, node, inputs) -> ndarray``, run when none of the node's
inputs is a run-time tensor (``Shape`` excepted: it reads only its input's shape). Shape vectors
are object arrays whose batch entry is the symbol :data:`~fastconv.onnx.importers.BATCH`, so the
``Shape -> Gather -> Unsqueeze -> Concat -> Reshape`` chains that exporters write for a flatten
fold to a target shape ``[N, -1]``, which the Reshape importer turns into a Flatten; arithmetic
that would need the batch's value raises TypeError, reported as a fold that cannot be done.

A file is untrusted: every folder that allocates first checks the size of what it is about to
allocate against what is left of the graph's budget (:data:`FOLD_LIMIT`, see
:func:`reserve`), and every axis against the rank (:func:`~fastconv.onnx.attrs.axis`).
"""
import math

import numpy as np

from .attrs import Unsupported, attributes, axis, cast_dtype, scalar
from .importers import BATCH, Symbol
from .tensors import to_array

__all__ = ["FOLDERS", "FOLD_LIMIT", "folder", "reserve", "shape_vector"]

FOLDERS = {}  # op type -> fn

#: Bytes that constant folding may allocate for one model, beyond twice the size of the tensors
#: the model holds: ConstantOfShape, broadcasting arithmetic, Concat, Gather and Cast outputs all
#: count, checked before they are allocated; views (Reshape, Transpose, Slice, ...) are free. A
#: small file thus cannot make :func:`fastconv.onnx.load` allocate much more than its own size.
FOLD_LIMIT = 16 * 2**20


def reserve(ctx, shape, dtype):
    """Take the bytes of an array of ``shape`` and ``dtype`` from ``ctx.fold_budget`` (what is
    left of :data:`FOLD_LIMIT` plus twice the model's tensor data) before allocating it;
    Unsupported when they do not fit."""
    shape = [int(d) for d in shape]
    if any(d < 0 for d in shape):
        raise Unsupported(f"the folded shape {shape} has a negative dimension")
    need = math.prod(shape) * np.dtype(dtype).itemsize
    if need > ctx.fold_budget:
        raise Unsupported(f"folding it would allocate {need:,} bytes (shape {shape}, {np.dtype(dtype)}): more than "
                          f"the {ctx.fold_budget:,} left of what constant folding may allocate (FOLD_LIMIT "
                          f"{FOLD_LIMIT:,} bytes plus twice the model's tensor data)")
    ctx.fold_budget -= need


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


def _axes(node, inputs, index, ctx, rank):
    """Axes from the attribute (before opset 13) or from input ``index`` (from 13), each in
    ``[0, rank)``; Unsupported for one out of range or repeated."""
    if ctx.opset < 13:
        axes = attributes(node, axes=None)["axes"]
    else:
        attributes(node)
        axes = None if len(inputs) <= index or inputs[index] is None else list(np.asarray(inputs[index]).reshape(-1))
    if axes is None:
        return None
    axes = [axis(v, rank, "axes") for v in axes]
    if len(set(axes)) != len(axes):
        raise Unsupported(f"axes {axes} repeat an axis")
    return axes


@folder("Constant")
def _constant(ctx, node, inputs):
    a = attributes(node, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None)
    if a["value"] is not None:
        try:
            return to_array(a["value"])
        except ValueError as exc:
            raise Unsupported(str(exc)) from None
    for name, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                        ("value_ints", np.int64)):
        if a[name] is not None:
            return np.array(a[name], dtype=dtype)
    raise Unsupported("a Constant without value")


@folder("ConstantOfShape")
def _constant_of_shape(ctx, node, inputs):
    a = attributes(node, value=None)
    try:
        fill = np.zeros(1, np.float32) if a["value"] is None else to_array(a["value"])
    except ValueError as exc:
        raise Unsupported(str(exc)) from None
    fill = np.asarray(scalar(fill, "value"), dtype=fill.dtype)
    shape = np.asarray(inputs[0])
    if shape.ndim != 1 or shape.dtype.kind not in "iu":
        raise Unsupported(f"the shape input {node.input[0]!r} is not a 1-D vector of integers")
    reserve(ctx, shape, fill.dtype)
    return np.full([int(v) for v in shape], fill, dtype=fill.dtype)


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
    dtype = cast_dtype(node)
    x = inputs[0]
    if x.dtype == object:  # a shape vector with symbols stays symbolic through an integer cast
        if dtype.kind not in "iu":
            raise Unsupported(f"cast of a run-time shape to {dtype}")
        return x
    reserve(ctx, x.shape, dtype)
    return x.astype(dtype)


@folder("Gather")
def _gather(ctx, node, inputs):
    a = attributes(node, axis=0)
    x, indices = np.asarray(inputs[0]), np.asarray(inputs[1])
    ax = axis(a["axis"], x.ndim)
    if indices.dtype.kind not in "iu":
        raise Unsupported(f"the indices {node.input[1]!r} are {indices.dtype}, not integers")
    reserve(ctx, x.shape[:ax] + indices.shape + x.shape[ax + 1:], x.dtype)
    return _normalise(np.take(x, indices.astype(np.int64), axis=ax))


@folder("Unsqueeze")
def _unsqueeze(ctx, node, inputs):
    x = np.asarray(inputs[0])
    if ctx.opset < 13:
        n = len(attributes(node, axes=())["axes"])
    else:
        n = 0 if len(inputs) < 2 or inputs[1] is None else np.asarray(inputs[1]).size
    axes = _axes(node, inputs, 1, ctx, x.ndim + n)
    if axes is None:
        raise Unsupported("the axes are missing")
    for ax in sorted(axes):
        x = np.expand_dims(x, ax)
    return x


@folder("Squeeze")
def _squeeze(ctx, node, inputs):
    x = np.asarray(inputs[0])
    axes = _axes(node, inputs, 1, ctx, x.ndim)
    return np.squeeze(x, axis=None if axes is None else tuple(axes))


@folder("Concat")
def _concat(ctx, node, inputs):
    a = attributes(node, axis=None)
    inputs = [np.asarray(v) for v in inputs]
    if a["axis"] is None:
        raise Unsupported("the axis attribute is missing")
    ax = axis(a["axis"], inputs[0].ndim)
    reserve(ctx, [sum(v.size for v in inputs)], np.result_type(*inputs))
    if any(v.dtype == object for v in inputs):  # a shape vector: keep its symbols
        return _normalise(np.concatenate([v.astype(object) for v in inputs], axis=ax))
    return np.concatenate(inputs, axis=ax)


@folder("Slice")
def _slice(ctx, node, inputs):
    attributes(node)
    x, starts, ends = inputs[0], inputs[1], inputs[2]
    axes = range(len(starts)) if len(inputs) < 4 or inputs[3] is None else inputs[3]
    steps = [1] * len(starts) if len(inputs) < 5 or inputs[4] is None else inputs[4]
    index = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        index[axis(ax, x.ndim, "axes")] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


@folder("Transpose")
def _transpose(ctx, node, inputs):
    a = attributes(node, perm=None)
    return np.transpose(inputs[0], a["perm"])


@folder("Add", "Sub", "Mul", "Div")
def _arithmetic(ctx, node, inputs):
    attributes(node)
    a, b = (np.asarray(v) for v in inputs)
    reserve(ctx, np.broadcast_shapes(a.shape, b.shape), np.result_type(a, b))
    if node.op_type == "Div" and a.dtype.kind in "iuO" and b.dtype.kind in "iuO":
        return _normalise(a // b)  # the shapes folded here are non-negative: floor is truncation
    return _normalise({"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[node.op_type](a, b))


@folder("Reshape")
def _fold_reshape(ctx, node, inputs):
    attributes(node, allowzero=0)
    x = np.asarray(inputs[0])
    if not x.flags.c_contiguous:  # a copy
        reserve(ctx, x.shape, x.dtype)
    return np.reshape(x, [int(v) for v in inputs[1]])
