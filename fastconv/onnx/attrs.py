"""Reading a node's attributes for the importers and folders, with the checks ONNX Runtime makes.

Every attribute a node carries must be one its reader knows (:func:`attributes`), so nothing is
silently ignored; an axis out of ``[-rank, rank)`` (:func:`axis`) or ``pads`` of the wrong length
(:func:`hw_pads`) is :class:`Unsupported`, reported with the node's name, never wrapped modulo
the rank or unpacked into a bare Python error.
"""
import numpy as np
from onnx import helper

from .tensors import np_dtype

__all__ = ["Unsupported", "attributes", "axis", "cast_dtype", "hw_pads", "pair", "square", "scalar",
           "decimal"]


class Unsupported(Exception):
    """What fastconv cannot carry across ONNX, either way: a node it cannot run, or a layer or
    setting it cannot write; the message names the op, layer, attribute or input and why."""


def attributes(node, **defaults):
    """The node's attributes as ``{name: value}`` with ``defaults`` filled in (strings decoded).

    Raises Unsupported for an attribute not in ``defaults``: every attribute is either honoured
    or reported.
    """
    values = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        values[a.name] = v.decode() if isinstance(v, bytes) else v
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise Unsupported(f"attribute{'s' * (len(unknown) > 1)} {', '.join(unknown)} not supported")
    return {**defaults, **values}


def cast_dtype(node):
    """The NumPy dtype a Cast ``node`` converts to (its ``to`` attribute); Unsupported for an
    unknown ONNX data type."""
    a = attributes(node, to=None, saturate=1)
    try:
        return np_dtype(a["to"], "attribute 'to'")
    except ValueError as exc:
        raise Unsupported(str(exc)) from None


def axis(value, rank, name="axis", end=False):
    """``value`` as an axis of a ``rank``-D tensor, in ``[0, rank)`` (``[0, rank]`` when ``end``:
    Flatten's axis may be the rank). Unsupported outside ``[-rank, rank)`` (``[-rank, rank]``),
    as ONNX Runtime refuses it: NumPy-style wrapping would silently pick another axis."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise Unsupported(f"{name}={value!r} is not an integer")
    value, top = int(value), rank + bool(end)
    if not -rank <= value < top:
        raise Unsupported(f"{name}={value} is out of range for a {rank}-D tensor (ONNX takes {-rank} to {top - 1})")
    return value + rank if value < 0 else value


def hw_pads(values, what="pads"):
    """``(top, left, bottom, right)`` from the 2-D ONNX ``pads`` (begins then ends); Unsupported
    unless there are four non-negative values."""
    pads = [int(v) for v in values]
    if len(pads) != 4:
        raise Unsupported(f"{what}={pads} has {len(pads)} values: a 2-D op takes 4 "
                          "(top, left, bottom, right)")
    if min(pads) < 0:
        raise Unsupported(f"{what}={pads}: negative padding is not supported")
    return tuple(pads)


def pair(values, name, node_attr):
    """Two ints (H, W) from a 2-D attribute; Unsupported for another count."""
    values = tuple(int(v) for v in values)
    if len(values) != 2:
        raise Unsupported(f"{node_attr}={list(values)}: only 2-D {name} is supported")
    return values


def square(hw):
    """``k`` for ``(k, k)``, as a PyTorch user writes a square pooling window."""
    return hw[0] if hw[0] == hw[1] else hw


def scalar(value, what):
    """One number from a constant input or attribute; Unsupported for several."""
    a = np.asarray(value)
    if a.size != 1 or a.dtype == object:
        raise Unsupported(f"the {what} of shape {a.shape} is not one number")
    return a.reshape(-1)[0]


def decimal(v, what="value"):
    """The shortest decimal that a float32 attribute rounds from: 1e-05, not 9.99999974e-06."""
    return float(str(np.float32(scalar(v, what))))
