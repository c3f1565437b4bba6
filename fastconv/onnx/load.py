"""Import: an ONNX file -> a fastconv :class:`~fastconv.Sequential` (with nested
:class:`~fastconv.Residual` and :class:`~fastconv.Concat` blocks) with its weights.

:func:`read_model` reads and validates the file (truncated, not ONNX, unsupported opset: a
ValueError saying which). :func:`load` then reads the graph once, node by node, without building
anything: constants and shape arithmetic are folded (:data:`~fastconv.onnx.folding.FOLDERS`),
each other node becomes the :class:`~fastconv.onnx.importers.Spec` of a layer
(:data:`~fastconv.onnx.importers.IMPORTERS`), and every node fastconv cannot run is noted. Only
when no problem was found are the layers built.

Each run-time value knows the layers that compute it from the graph input (its ``items``). An
Add of two run-time values is a Residual block and a Concat of several a Concat block: the items
the values share come first, then the block whose branches are what follows their fork (an empty
branch is the block's input: the identity shortcut, an Identity branch). A graph that is not such
a nest of blocks (a layer read by branches that join elsewhere, a tensor added to itself, a
concatenation along the batch axis, other ops of two run-time tensors) is reported.
"""
import os
import sys

import numpy as np
import onnx
from onnx import shape_inference

from ..layers import Sequential
from .. import layers as nn

from .folding import FOLD_LIMIT, FOLDERS
from . import pool_act_importers, shape_importers  # noqa: F401 - register their importers
from .importers import BATCH, IMPORTERS, Block, Tensor, Unsupported, attributes, build_items, item_specs
from .attrs import axis as checked_axis
from .tensors import all_tensors, read_external_data, to_array, type_name

__all__ = ["IMPORT_OPSETS", "MAX_NESTING", "read_model", "load", "importable_ops"]

#: How deep :func:`load` nests Residual / Concat blocks (deeper graphs are reported): fastconv's
#: own methods (forward, export, save) walk a nest recursively, within Python's recursion limit.
MAX_NESTING = 100

#: Default-domain opsets :func:`load` reads (up to 28, or the newest the installed onnx knows).
IMPORT_OPSETS = range(11, min(28, onnx.defs.onnx_opset_version()) + 1)

_FLOAT_INPUTS = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)


def _varint(data, pos):
    value = shift = 0
    while True:
        if pos >= len(data):
            raise EOFError
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


#: ModelProto's fields: number -> wire type (0 varint, 2 length-delimited).
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def _scan(data, where):
    """Walk the top-level protobuf fields of ``data``: ValueError when they are not ModelProto's
    (not ONNX), when the last one runs past the end (truncated), or when ``ir_version`` (field 1),
    ``graph`` (7) or ``opset_import`` (8) is missing."""
    pos, fields = 0, set()
    while pos < len(data):
        start = pos
        try:
            key, pos = _varint(data, pos)
            field, wire = key >> 3, key & 7
            if _MODEL_FIELDS.get(field) != wire:
                raise ValueError(f"byte {start} starts no ModelProto field")
            if wire == 0:
                _, pos = _varint(data, pos)
            else:
                size, pos = _varint(data, pos)
                pos += size
        except EOFError:
            pos = len(data) + 1
        except ValueError as exc:
            raise ValueError(f"{where} is not an ONNX model: {exc}") from None
        if pos > len(data):
            raise ValueError(f"{where} is truncated: field {field} at byte {start} runs past the end of "
                             f"the file ({len(data)} bytes)")
        fields.add(field)
    for field, what in ((1, "the IR version"), (7, "the graph")):
        if field not in fields:
            raise ValueError(f"{where} is not an ONNX model ({what} is missing)")
    if 8 not in fields:
        raise ValueError(f"{where} is truncated or incomplete: it has no opset_import after its graph")


def read_model(source):
    """Read and validate an ONNX model.

    Parameters
    ----------
    source : str, os.PathLike or onnx.ModelProto
        A file path or a model already in memory. Tensors kept in external data files are read
        from the model file's folder only (never the working directory): a location that is
        absolute, climbs out with ``..`` or goes through a symbolic link is refused, as by
        ``onnx.load`` and ONNX Runtime, and so is external data in a model handed over in memory
        (it has no folder; ``onnx.load`` the file, or pass its path).

    Returns
    -------
    onnx.ModelProto
        Passed ``onnx.checker.check_model``, with a default-domain opset in :data:`IMPORT_OPSETS`.

    Raises
    ------
    ValueError
        The file is a folder, empty, truncated, not ONNX, of an unsupported opset, or invalid, or
        its external data is out of its folder, missing or of the wrong size; the message says which.
    OSError
        The file cannot be opened (FileNotFoundError when there is none).
    """
    if isinstance(source, onnx.ModelProto):
        model, where = source, "the model"
        read_external_data(model, None, where)
    else:
        path = os.fspath(source)
        where = repr(path)
        if os.path.isdir(path):
            raise ValueError(f"{where} is a directory, not an ONNX file")
        with open(path, "rb") as f:
            data = f.read()
        if not data:
            raise ValueError(f"{where} is empty, not an ONNX model")
        _scan(data, where)
        try:
            model = onnx.load_model_from_string(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
            raise ValueError(f"{where} is not an ONNX model: {exc}") from exc
        read_external_data(model, os.path.dirname(os.path.abspath(path)), where)
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ValueError(f"{where} imports no default-domain (ai.onnx) opset")
    if versions[0] not in IMPORT_OPSETS:
        raise ValueError(f"{where} uses opset {versions[0]}: fastconv imports opsets "
                         f"{IMPORT_OPSETS.start} to {IMPORT_OPSETS.stop - 1}")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ValueError(f"{where} is not a valid ONNX model: {exc}") from None
    return model


def importable_ops():
    """The ONNX op types :func:`load` reads with the layers fastconv has, sorted (the arithmetic
    ops among them are folded on constants; Add is also a MatMul's bias)."""
    layers = [op for op, (_, needs) in IMPORTERS.items()
              if not needs or any(isinstance(getattr(nn, n, None), type) for n in needs)]
    return sorted(set(layers) | set(FOLDERS))


_FAILED = object()  # a folded value whose fold failed (the failure is reported once, where it was)


class _Skip(Exception):
    """A node reads a value whose producer already failed: nothing more to report here."""


def _shapes(model):
    """``{value name: shape}`` from ONNX shape inference: dims as ints, None where unknown."""
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True).graph
    except Exception:  # noqa: BLE001 - inference is a help, not a requirement
        inferred = model.graph
    out = {}
    for v in list(inferred.value_info) + list(inferred.input) + list(inferred.output):
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    return out


class _Graph:
    """The walk over one graph: values so far (a run-time Tensor knows the layers that compute it
    from the input), the problems found."""

    def __init__(self, model):
        graph = model.graph
        self.opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
        self.problems = []
        self.values = {t.name: to_array(t) for t in graph.initializer}
        # What folding may allocate: FOLD_LIMIT beyond twice the tensor data the file holds.
        self.fold_budget = FOLD_LIMIT + 2 * sum(t.ByteSize() for t in all_tensors(model))
        self._shapes = _shapes(model)
        self._producer = {}
        self._broken = set()  # outputs of layer nodes that could not be imported
        self.output = None
        self.static_batch = None
        self.nodes = self._needed(graph)
        self._uses = {}
        for node in self.nodes:
            for name in node.input:
                self._uses[name] = self._uses.get(name, 0) + 1
        for v in graph.output:
            self._uses[v.name] = self._uses.get(v.name, 0) + 1

    @staticmethod
    def _needed(graph):
        """The nodes the graph's outputs depend on, in graph order."""
        needed, keep = {v.name for v in graph.output}, []
        for node in reversed(graph.node):
            if any(name in needed for name in node.output):
                keep.append(node)
                needed.update(name for name in node.input if name)
        return keep[::-1]

    # -- helpers for importers -----------------------------------------------------------------
    def const(self, node, index, what, optional=False, symbolic=False):
        """Constant input ``index`` of ``node`` as an array (None for an absent optional one)."""
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            if optional:
                return None
            raise Unsupported(f"the {what} input is missing")
        value = self.values.get(name)
        if value is _FAILED:
            raise _Skip
        if isinstance(value, Tensor):
            raise Unsupported(f"the {what} ({name!r}) is computed at run time, not a constant")
        if value.dtype == object and not symbolic:
            raise Unsupported(f"the {what} ({name!r}) depends on the run-time input shape")
        return value

    def rank(self, x):
        """The rank of Tensor ``x``; Unsupported when unknown (skipped quietly when ``x`` comes
        from a node already reported, whose output shape could not be inferred)."""
        if x.shape is None:
            if x.name in self._broken:
                raise _Skip
            raise Unsupported(f"the rank of {x.name!r} is unknown (no shape inferred)")
        return len(x.shape)

    def position(self, node, x):
        """Which input of ``node`` the run-time tensor ``x`` is."""
        return list(node.input).index(x.name)

    def producer(self, x):
        """The Spec whose layer outputs ``x`` (None when ``x`` is not a layer's output)."""
        if x.name in self._broken:
            raise _Skip  # its layer was already reported
        return self._producer.get(x.name)

    def consumer(self, node):
        """The one node that reads ``node``'s first output (None when several, or the graph, do)."""
        name = node.output[0]
        readers = [n for n in self.nodes if name in n.input]
        return readers[0] if len(readers) == 1 and self._uses.get(name) == 1 else None

    def unused_outputs(self, node, what):
        """Unsupported when an output of ``node`` beyond the first is used."""
        if any(self._uses.get(name) for name in node.output[1:] if name):
            raise Unsupported(f"{what} is used")

    def tensor(self, name):
        shape = self._shapes.get(name)
        return Tensor(name, None if shape is None else (BATCH,) + tuple(shape[1:]))

    # -- the walk ------------------------------------------------------------------------------
    def read_input(self, graph):
        inputs = [v for v in graph.input if v.name not in self.values]
        if len(inputs) != 1:
            self.problems.append(f"the graph has {len(inputs)} run-time inputs "
                                 f"{[v.name for v in inputs]}; fastconv models take one")
            return
        v = inputs[0]
        t = v.type.tensor_type
        if t.elem_type not in _FLOAT_INPUTS:
            self.problems.append(f"input {v.name!r} has element type {type_name(t.elem_type)}; "
                                 "fastconv takes float input")
        if t.HasField("shape") and t.shape.dim:
            first = t.shape.dim[0]
            self.static_batch = first.dim_value if first.HasField("dim_value") else None
        self.values[v.name] = Tensor(v.name, self.tensor(v.name).shape, ())

    def walk(self):
        for i, node in enumerate(self.nodes):
            label = f"node {node.name or '#' + str(i)!r} ({node.op_type})"
            try:
                self._node(node)
            except _Skip:
                self._broken.update(node.output)
            except Unsupported as exc:
                self._broken.update(node.output)
                self.problems.append(f"{label}: {exc}")
            except (TypeError, ValueError, IndexError, KeyError, ArithmeticError) as exc:
                # A malformed node no importer foresaw (an attribute of the wrong type, say): still
                # one problem that names the node, never a bare Python error.
                self._broken.update(node.output)
                self.problems.append(f"{label}: {type(exc).__name__}: {exc}")

    def _fail(self, node, runtime):
        for name in node.output:
            if name:
                self.values[name] = self.tensor(name) if runtime else _FAILED

    def _node(self, node):
        inputs = [self.values.get(name) if name else None for name in node.input]
        runtime = [v for v in inputs if isinstance(v, Tensor)]
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            self._fail(node, bool(runtime))
            raise Unsupported(f"op {node.domain}.{op} is not an ONNX standard operator")
        if op in FOLDERS and (not runtime or op == "Shape"):
            self._fail(node, False)
            if any(v is _FAILED for v in inputs):
                return
            try:
                value = FOLDERS[op](self, node, inputs)
            except (TypeError, ValueError, IndexError, ArithmeticError) as exc:  # NumPy's AxisError is a ValueError
                raise Unsupported(f"cannot fold it at import time ({exc})") from None
            self.values[node.output[0]] = np.asarray(value)
            return
        self._fail(node, bool(runtime))  # until the importer succeeds
        out = self.values[node.output[0]]
        if op == "Concat" or (op == "Add" and len(runtime) > 1):
            if any(t.items is None for t in runtime):
                raise _Skip  # it joins the output of a node already reported
            out.items = self._join(node, runtime, len(inputs))
            return
        if op not in IMPORTERS:
            raise Unsupported(f"op {op} is not supported" + ("" if runtime else " (on constants)"))
        fn = IMPORTERS[op][0]
        if len(runtime) != 1:
            raise Unsupported(f"it reads {len(runtime)} run-time tensors; fastconv joins tensors only with "
                              "Add (a Residual block) and Concat")
        x = runtime[0]
        spec = fn(self, node, x)
        if spec is not None:
            self._producer[node.output[0]] = spec
        elif x.name in self._producer:
            self._producer[node.output[0]] = self._producer[x.name]
        fresh = spec is not None and not any(item is spec for item in (x.items or ()))
        if spec is not None and not fresh and self._uses.get(x.name, 0) > 1:
            raise Unsupported(f"it completes the {spec.cls} layer that computes {x.name!r}, which other nodes "
                              "read too (they would see the completed layer)")
        if x.items is not None:  # None: x comes from a node already reported; this one is checked all the same
            out.items = x.items + (spec,) if fresh else x.items

    def _join(self, node, runtime, n_inputs):
        """The items of an Add of two run-time tensors (a Residual block) or a Concat of several
        (a Concat block): the layers they share, then the block of what follows the fork. Unsupported
        for a graph that is not a nest of such blocks."""
        if len(runtime) != n_inputs:
            raise Unsupported(f"it mixes {len(runtime)} run-time tensors with constants")
        chains = [t.items for t in runtime]
        if len(chains) == 1:
            attributes(node, axis=None)
            return chains[0]  # a Concat of one tensor is the identity
        n = 0
        while all(len(c) > n and c[n] is chains[0][n] for c in chains):
            n += 1
        rests = [c[n:] for c in chains]
        seen = {}
        for i, rest in enumerate(rests):
            for item in rest:
                for spec in item_specs(item):
                    if seen.setdefault(id(spec), i) != i:
                        raise Unsupported(f"a {spec.cls} layer feeds branches {seen[id(spec)]} and {i} of this "
                                          "join after they forked: the graph is not a nest of Residual / "
                                          "Concat blocks, which is all fastconv expresses")
        if node.op_type == "Add":
            attributes(node)
            if not any(rests):
                raise Unsupported(f"it adds {node.input[0]!r} to itself (not a Residual block)")
            body, shortcut = rests if rests[0] else rests[::-1]
            return chains[0][:n] + (self._nested(Block("Residual", [body, shortcut] if shortcut else [body])),)
        axis = attributes(node, axis=None)["axis"]
        if axis is None:
            raise Unsupported("the axis attribute is missing")
        if checked_axis(axis, self.rank(runtime[0])) == 0:
            raise Unsupported(f"axis={axis} concatenates along the batch axis")
        return chains[0][:n] + (self._nested(Block("Concat", rests, dim=int(axis))),)

    @staticmethod
    def _nested(block):
        if block.depth > MAX_NESTING:
            raise Unsupported(f"it nests {block.cls} blocks {block.depth} deep; fastconv.onnx.load nests at most "
                              f"MAX_NESTING = {MAX_NESTING}")
        return block

    def read_output(self, graph):
        if len(graph.output) != 1:
            self.problems.append(f"the graph has {len(graph.output)} outputs; fastconv models have one")
            return
        name = graph.output[0].name
        if not isinstance(self.values.get(name), Tensor):
            self.problems.append(f"output {name!r} is a constant, not computed from the input")
        elif self.values[name].items is not None:
            self.output = self.values[name]


def load(source):
    """Build a fastconv model from an ONNX model.

    Parameters
    ----------
    source : str, os.PathLike or onnx.ModelProto
        An ONNX file (for instance from :func:`fastconv.onnx.export` or ``torch.onnx.export``)
        whose graph is a chain of supported ops (:func:`fastconv.onnx.importable_ops`), or a nest
        of residual Adds and Concats of such chains (a ResNet, an Inception-like block).

    Returns
    -------
    fastconv.Sequential
        The layers with the file's weights, float32, in eval mode (call ``.train()`` to
        fine-tune: it is an ordinary model). Its input is the ONNX graph's input, e.g.
        (N, C, H, W).

    Raises
    ------
    ValueError
        For a file that cannot be read (see :func:`read_model`; external data only from the
        file's folder), a tensor whose data does not match its dims or has an unknown type, or
        one ValueError listing every node fastconv cannot run (op, attribute, axis or input, with
        the node's name); nothing is built before the whole graph has been read. Memory is
        checked before it is taken: constant folding (ConstantOfShape, shape arithmetic, ...)
        may allocate :data:`~fastconv.onnx.folding.FOLD_LIMIT` (16 MiB) beyond twice the tensor
        data the file holds, and Residual / Concat blocks nest at most :data:`MAX_NESTING`
        (100) deep; a model past either is reported, never a MemoryError or RecursionError.
    OSError
        The file cannot be opened (FileNotFoundError when there is none).
    """
    model = read_model(source)
    where = "the model" if isinstance(source, onnx.ModelProto) else repr(os.fspath(source))
    try:
        return _load(model, where)
    except RecursionError:  # a safety net: MAX_NESTING keeps fastconv's own recursion in bounds
        raise ValueError(f"cannot import {where}: its graph nests too deeply for Python's recursion "
                         f"limit ({sys.getrecursionlimit()})") from None


def _load(model, where):
    try:
        g = _Graph(model)
    except ValueError as exc:
        raise ValueError(f"cannot import {where}: {exc}") from None
    g.read_input(model.graph)
    g.walk()
    g.read_output(model.graph)
    if g.problems:
        raise ValueError(f"cannot import {where} into fastconv ({len(g.problems)} problem"
                         f"{'s' * (len(g.problems) > 1)}): " + "; ".join(g.problems))
    try:
        layers = build_items(g.output.items)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cannot import {where}: building its layers failed: {exc}") from exc
    return Sequential(*layers).eval()
