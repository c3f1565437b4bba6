"""Export: a fastconv model -> an ONNX ``ModelProto`` (:func:`to_onnx`) or file (:func:`export`).

The graph is built node by node with ``onnx.helper``: one exporter per layer class (see
:mod:`fastconv.onnx.exporters`), initialisers named after the model's ``state_dict`` keys
(``"0.weight"``, ``"3.running_var"``, ...), the model always in its eval form (BatchNorm with its
running statistics, Dropout as ONNX's inference-mode identity).
"""
import os
import sys
import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .._io import atomic_write
from ..layers import Module
from .exporters import export_layer

__all__ = ["EXPORT_OPSETS", "to_onnx", "export", "GraphBuilder"]

#: Opsets :func:`export` writes (up to 28, or the newest the installed onnx knows); the
#: operators used have the same semantics in all of them.
EXPORT_OPSETS = range(13, min(28, onnx.defs.onnx_opset_version()) + 1)

_ELEM = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE}


class GraphBuilder:
    """The graph under construction: nodes, initialisers and unique value names.

    Parameters
    ----------
    state : dict
        The model's ``state_dict()``; :meth:`weight` takes its arrays by key.
    dtype : numpy dtype
        float32 or float64: every initialiser and activation has this type.
    opset : int
        The default-domain opset the graph is written for.
    """

    def __init__(self, state, dtype, opset):
        self.state, self.dtype, self.opset = state, np.dtype(dtype), int(opset)
        self.elem_type = _ELEM[self.dtype]
        self.nodes, self.initializers = [], []
        self.problems = []  # what could not be exported, one line per layer
        self._names = set()

    def _unique(self, name):
        base, i = name, 1
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def weight(self, key, array=None):
        """Add the state-dict entry ``key`` (or ``array`` under that name) as an initialiser in the
        model dtype; returns its name, which is ``key``."""
        value = self.state[key] if array is None else array
        self._names.add(key)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=self.dtype), key))
        return key

    def constant(self, name, array):
        """Add ``array`` (its own dtype: int64 shapes and pads, float scalars) as an initialiser
        under a unique name derived from ``name``; returns the name."""
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def scalar(self, name, value):
        """A 0-d initialiser of the model dtype holding ``value``; returns its name."""
        return self.constant(name, np.asarray(value, dtype=self.dtype))

    def node(self, op, inputs, key, **attrs):
        """Append ``op`` reading ``inputs`` (``""`` for a skipped optional input); returns the
        name of its (first) output. Node and output names start with the layer's ``key``."""
        name = self._unique(f"{key or 'model'}/{op}")
        out = self._unique(f"{name}_output")
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=name, **attrs))
        return out


def _model_dtype(model):
    dtypes = {p.dtype for p in model.parameters()}
    dtypes |= {np.dtype(b.dtype) for _, b in model.named_buffers() if np.dtype(b.dtype).kind == "f"}
    if len(dtypes) > 1:
        raise ValueError(f"cannot export a model that mixes dtypes {sorted(str(d) for d in dtypes)}: "
                         "convert it with model.to(np.float32) first")
    dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
    if dtype not in _ELEM:
        raise ValueError(f"cannot export parameters of dtype {dtype}: use float32 or float64")
    return dtype


def _check_arguments(model, input_shape, opset):
    if not isinstance(model, Module):
        raise TypeError(f"model must be a fastconv Module (e.g. a Sequential), got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or opset not in EXPORT_OPSETS:
        raise ValueError(f"opset must be an int in {EXPORT_OPSETS.start}..{EXPORT_OPSETS.stop - 1}, "
                         f"got {opset!r}")
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a sequence of ints (batch first), got {input_shape!r}") from None
    if len(shape) < 2 or min(shape) < 1 or any(s != v for s, v in zip(shape, input_shape)):
        raise ValueError(f"input_shape must be positive ints, batch first, e.g. (1, 1, 28, 28); "
                         f"got {tuple(input_shape)!r}")
    model.output_shape(shape)  # the layer's own ValueError when the shape does not fit
    return shape


def _value_info(name, elem_type, shape, dynamic_batch):
    dims = ["N", *shape[1:]] if dynamic_batch else list(shape)
    return helper.make_tensor_value_info(name, elem_type, dims)


def to_onnx(model, input_shape, opset=17, dynamic_batch=True):
    """The ONNX ``ModelProto`` of ``model`` for inputs of ``input_shape``, checked.

    Parameters
    ----------
    model : fastconv.Module
        Usually a :class:`~fastconv.Sequential`; exported as in eval mode whatever its mode
        (a ``UserWarning`` says so when it is training). Its mode is not changed.
    input_shape : tuple of int
        One input batch's shape, batch first, e.g. ``(1, 1, 28, 28)``.
    opset : int, default 17
        Default-domain opset, in :data:`EXPORT_OPSETS`.
    dynamic_batch : bool, default True
        Name the batch axis ``"N"`` so any batch size runs; False fixes it to ``input_shape[0]``.

    Returns
    -------
    onnx.ModelProto
        Input ``"input"`` and output ``"output"`` in the model dtype (float32 or float64);
        passes ``onnx.checker.check_model(full_check=True)``.

    Raises
    ------
    ValueError
        Listing every layer (by state-dict key) that cannot be exported, or a shape that does not
        fit the model, or containers nested too deeply to walk, before anything is written.
    """
    try:
        return _to_onnx(model, input_shape, opset, dynamic_batch)
    except RecursionError:  # containers recurse through export_layer, output_shape, modules()
        raise ValueError(f"cannot export to ONNX: the model nests containers too deeply for Python's recursion "
                         f"limit ({sys.getrecursionlimit()})") from None


def _to_onnx(model, input_shape, opset, dynamic_batch):
    shape = _check_arguments(model, input_shape, opset)
    if any(m.training for m in model.modules()):
        warnings.warn(f"{type(model).__name__} is in training mode; it is exported as in eval mode "
                      "(BatchNorm uses its running statistics, Dropout is the identity)", stacklevel=3)
    dtype = _model_dtype(model)
    g = GraphBuilder(model.state_dict(), dtype, opset)
    out = export_layer(g, model, "", "input", shape)
    if g.problems:
        raise ValueError("cannot export to ONNX: " + "; ".join(g.problems))
    g.nodes.append(helper.make_node("Identity", [out], ["output"], name="output"))
    out_shape = model.output_shape(shape)
    graph = helper.make_graph(g.nodes, type(model).__name__,
                              [_value_info("input", g.elem_type, shape, dynamic_batch)],
                              [_value_info("output", g.elem_type, out_shape, dynamic_batch)],
                              initializer=g.initializers)
    opsets = [helper.make_opsetid("", int(opset))]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="fastconv",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(model, path, input_shape, opset=17, dynamic_batch=True):
    """Write ``model`` to the ONNX file ``path``, atomically; returns ``path``.

    The arguments are :func:`to_onnx`'s. The file is written to a temporary file in the same
    folder, flushed and renamed over ``path``, so an error or interruption never leaves a partial
    file (an existing ``path`` keeps its content). Initialisers carry the weights, named after
    ``model.state_dict()``'s keys; ONNX Runtime and :func:`fastconv.onnx.load` read it.
    """
    path = os.fspath(path)
    data = to_onnx(model, input_shape, opset=opset, dynamic_batch=dynamic_batch).SerializeToString()
    return atomic_write(path, lambda f: f.write(data))
