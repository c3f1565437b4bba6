"""An ONNX model's tensors, read as untrusted input.

:func:`read_external_data` reads every tensor stored outside the model file (initializers,
Constant values, any attribute's tensors, in subgraphs and functions too) from the model file's
own folder, refusing locations that leave it (absolute, ``..``, symbolic links) as ``onnx.load``
and ONNX Runtime do, and reading exactly the bytes the tensor's dims declare.
:func:`to_array` checks a tensor's data type and that its data holds as many values as its dims
declare before converting it. Both raise ValueError naming the tensor and the expected size.
"""
import math
import os
import stat

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

__all__ = ["all_tensors", "declared", "read_external_data", "to_array", "np_dtype", "type_name"]

_T = onnx.TensorProto
#: Bits per element of the packed sub-byte types (those the installed onnx knows).
_PACKED_BITS = {getattr(_T, name): bits for name, bits in
                (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2),
                 ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6)) if hasattr(_T, name)}


def type_name(code):
    """The name of ONNX data type ``code`` (``FLOAT``), or ``data type 109`` for an unknown one."""
    try:
        return _T.DataType.Name(code)
    except ValueError:
        return f"data type {code}"


def np_dtype(code, what):
    """The NumPy dtype of ONNX data type ``code``; ValueError naming ``what`` for an unknown one."""
    try:
        if code == _T.UNDEFINED:
            raise KeyError(code)
        return np.dtype(helper.tensor_dtype_to_np_dtype(code))
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"{what} has an unknown ONNX data type {code}") from None


def declared(tensor):
    """``(dims, elements, bytes)`` that ``tensor`` declares, in Python ints (no overflow); ValueError
    for a negative dim or an unknown data type."""
    what = f"tensor {tensor.name!r}"
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise ValueError(f"{what} has negative dims {dims}")
    dtype = np_dtype(tensor.data_type, what)
    count = math.prod(dims)
    bits = _PACKED_BITS.get(tensor.data_type, dtype.itemsize * 8)
    return dims, count, -(-count * bits // 8)


def _stored(tensor, count):
    """How many entries of its typed field ``tensor`` should hold for ``count`` values."""
    code = tensor.data_type
    if code in (_T.COMPLEX64, _T.COMPLEX128):
        return 2 * count
    if _PACKED_BITS.get(code) in (2, 4):  # packed into the bytes of int32_data, as onnx writes them
        return -(-count * _PACKED_BITS[code] // 8)
    return count


def to_array(tensor):
    """``tensor`` as a NumPy array, after checking its data type and that its data has exactly the
    size its dims declare (ValueError naming the tensor and the expected size otherwise)."""
    what = f"tensor {tensor.name!r}"
    dims, count, nbytes = declared(tensor)
    shown = f"{what} ({type_name(tensor.data_type)}, dims {dims})"
    if external_data_helper.uses_external_data(tensor):
        raise ValueError(f"{shown} keeps its data in an external file that was not read")
    if tensor.HasField("segment"):
        raise ValueError(f"{shown} is a segment of a tensor, which fastconv does not read")
    if tensor.HasField("raw_data"):
        if len(tensor.raw_data) != nbytes:
            raise ValueError(f"{shown} has {len(tensor.raw_data)} bytes of raw_data; its dims and type "
                             f"need {nbytes}")
    else:
        field = helper.tensor_dtype_to_field(tensor.data_type)
        have, want = len(getattr(tensor, field)), _stored(tensor, count)
        if have != want:
            raise ValueError(f"{shown} has {have} values in {field}; its dims need {want}")
    try:
        return numpy_helper.to_array(tensor)
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{shown} cannot be read: {exc}") from None


def all_tensors(model):
    """Every TensorProto in ``model``: initializers (sparse ones' values and indices too) and the
    tensors of every attribute, in subgraphs and functions, walked without recursion."""
    graphs = [model.graph] + [g for t in model.training_info for g in (t.initialization, t.algorithm)]
    node_lists = [f.node for f in model.functions]
    while graphs or node_lists:
        if graphs:
            g = graphs.pop()
            yield from g.initializer
            for s in g.sparse_initializer:
                yield from (s.values, s.indices)
            node_lists.append(g.node)
            continue
        for node in node_lists.pop():
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                for s in list(a.sparse_tensors) + ([a.sparse_tensor] if a.HasField("sparse_tensor") else []):
                    yield from (s.values, s.indices)
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)


def _location(base, location, what):
    """The file ``location`` names inside folder ``base``; ValueError when it is absolute, climbs
    out with ``..``, goes through a symbolic link, or is not a regular file there."""
    parts = location.replace("\\", "/").split("/")
    if not location or os.path.isabs(location) or os.path.splitdrive(location)[0] or location.startswith(("/", "\\")):
        raise ValueError(f"{what}: external data location {location!r} must be a path relative to the "
                         f"model's folder {base!r}")
    if ".." in parts:
        raise ValueError(f"{what}: external data location {location!r} leaves the model's folder {base!r}")
    path = base
    for part in (p for p in parts if p not in ("", ".")):
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise ValueError(f"{what}: external data location {location!r} goes through the symbolic link "
                             f"{path!r}; fastconv reads only files inside the model's folder {base!r}")
    real = os.path.realpath(path)
    if os.path.commonpath([real, os.path.realpath(base)]) != os.path.realpath(base):
        raise ValueError(f"{what}: external data location {location!r} leaves the model's folder {base!r}")
    if not os.path.isfile(path):
        raise ValueError(f"{what}: external data file {path!r} does not exist or is not a file")
    return path


def _read_one(tensor, base):
    what = f"tensor {tensor.name!r}"
    dims, count, nbytes = declared(tensor)
    info = {e.key: e.value for e in tensor.external_data}
    try:
        offset = int(info.get("offset") or 0)
        length = None if info.get("length") in (None, "") else int(info["length"])
    except ValueError:
        raise ValueError(f"{what}: external data offset {info.get('offset')!r} / length {info.get('length')!r} "
                         "are not integers") from None
    if offset < 0 or (length is not None and length != nbytes):
        raise ValueError(f"{what}: external data offset {offset}, length {length}; its dims {dims} and type "
                         f"{type_name(tensor.data_type)} need {nbytes} bytes")
    path = _location(base, info.get("location", ""), what)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ValueError(f"{what}: cannot open its external data file {path!r}: {exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size < offset + nbytes:
            raise ValueError(f"{what}: external data file {path!r} has {st.st_size} bytes; the tensor needs "
                             f"{nbytes} from offset {offset}")
        f.seek(offset)
        data = f.read(nbytes)
    if len(data) != nbytes:
        raise ValueError(f"{what}: read {len(data)} of {nbytes} bytes from {path!r}")
    tensor.raw_data = data
    tensor.data_location = _T.DEFAULT
    del tensor.external_data[:]


def read_external_data(model, base, where):
    """Read every tensor of ``model`` that uses external data into its ``raw_data``, from folder
    ``base`` (the model file's; None for a model handed over in memory, which is then a
    ValueError). ``where`` names the model in messages."""
    external = [t for t in all_tensors(model) if external_data_helper.uses_external_data(t)]
    if not external:
        return
    if base is None:
        names = ", ".join(repr(t.name) for t in external[:3]) + (", ..." if len(external) > 3 else "")
        raise ValueError(f"{where} keeps tensors ({names}) in external data files, but a model handed over "
                         "in memory has no folder to read them from: pass the .onnx file's path instead")
    for t in external:
        try:
            _read_one(t, base)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
