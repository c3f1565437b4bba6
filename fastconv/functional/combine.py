"""Combining branch outputs, for :class:`fastconv.Residual` and :class:`fastconv.Concat`: the
elementwise sum :func:`add`, :func:`cat` and its inverse :func:`split` (PyTorch's ``torch.add``,
``torch.cat`` and ``torch.split`` for these uses). Host arrays or device arrays, any shape."""
import numbers

import numpy as np

from .._backend import kernels, resolve
from .._checks import integer, positive_int
from ._common import _array

__all__ = ["add", "cat", "split"]


def add(a, b, backend=None, *, relu=False):
    """``a + b`` for two arrays of one shape (no broadcasting); b is taken in a's dtype.
    ``relu=True`` applies :func:`relu` to the sum in the same pass (a residual block's add and
    ReLU)."""
    name = resolve(backend, a, b)
    a = _array(a, "a")
    b = _array(b, "b", a.dtype)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"add: the arrays have shapes {tuple(a.shape)} and {tuple(b.shape)}; they must "
                         "be equal")
    return kernels(name).add(a, b, bool(relu))


def _dim(dim, ndim, fn):
    dim = integer(dim, f"{fn}: dim")
    if not -ndim <= dim < ndim:
        raise ValueError(f"{fn}: dimension out of range (expected to be in range of [{-ndim}, "
                         f"{ndim - 1}], but got {dim})")
    return int(dim) % ndim


def _view3(a, dim, size=None):
    shape = tuple(a.shape)
    return a.reshape(int(np.prod(shape[:dim], dtype=np.int64)), shape[dim] if size is None else size,
                     int(np.prod(shape[dim + 1:], dtype=np.int64)))


def cat(arrays, dim=0, backend=None):
    """Concatenate arrays along ``dim``: every array has the same number of dimensions and the same
    sizes except along ``dim``; all are taken in the first one's dtype."""
    arrays = list(arrays)
    if not arrays:
        raise ValueError("cat: expected a non-empty sequence of arrays")
    name = resolve(backend, *arrays)
    first = _array(arrays[0], "arrays[0]")
    arrays = [first] + [_array(a, f"arrays[{i}]", first.dtype) for i, a in enumerate(arrays[1:], 1)]
    if len(first.shape) == 0:
        raise ValueError("cat: zero-dimensional arrays cannot be concatenated")
    dim = _dim(dim, len(first.shape), "cat")
    base = tuple(first.shape)
    for i, a in enumerate(arrays):
        shape = tuple(a.shape)
        if len(shape) != len(base) or shape[:dim] + shape[dim + 1:] != base[:dim] + base[dim + 1:]:
            raise ValueError(f"cat: sizes must match except in dimension {dim}: array 0 has shape "
                             f"{base}, array {i} has shape {shape}")
    out = kernels(name).concat([_view3(a, dim) for a in arrays])
    return out.reshape(base[:dim] + (out.shape[1],) + base[dim + 1:])


def split(a, split_size_or_sections, dim=0, backend=None):
    """Split ``a`` along ``dim`` into pieces of ``split_size_or_sections`` (an int: equal pieces,
    the last one smaller if need be; a list: those sizes, summing to ``a.shape[dim]``), as
    ``torch.split``; the pieces are C-contiguous copies."""
    name = resolve(backend, a)
    a = _array(a, "a")
    if len(a.shape) == 0:
        raise ValueError("split: a zero-dimensional array cannot be split")
    dim = _dim(dim, len(a.shape), "split")
    total = a.shape[dim]
    sizes = split_size_or_sections
    if isinstance(sizes, numbers.Integral) and not isinstance(sizes, (bool, np.bool_)):
        sizes = positive_int(sizes, "split: split_size")
        sizes = [min(sizes, total - lo) for lo in range(0, total, sizes)] or [0]
    else:
        sizes = list(sizes)
        if any(isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral) or s < 0
               for s in sizes):
            raise ValueError(f"split: sections must be non-negative ints, got {split_size_or_sections!r}")
        if sum(sizes) != total:
            raise ValueError(f"split: sections {sizes} sum to {sum(sizes)}, but dimension {dim} of the "
                             f"array of shape {tuple(a.shape)} has size {total}")
    shape = tuple(a.shape)
    parts = kernels(name).split(_view3(a, dim), [int(s) for s in sizes])
    return [p.reshape(shape[:dim] + (int(s),) + shape[dim + 1:]) for p, s in zip(parts, sizes)]
