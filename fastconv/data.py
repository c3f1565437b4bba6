"""Data sets that need not fit in memory: :class:`Dataset`, :class:`TensorDataset`,
:class:`Subset` and :class:`IDXDataset` (a memory-mapped IDX file such as MNIST's), and the
IDX reader: :func:`read_idx` (into memory) and :func:`memmap_idx` (mapped).

The :class:`fastconv.Trainer` takes a Dataset wherever it takes arrays (``fit``,
``evaluate``, ``validation_data``) and asks it for one batch at a time, by an array of
sample indices, so only the batches in use are in memory.
"""
import contextlib
import gzip
import hashlib
import io
import math
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["Dataset", "TensorDataset", "Subset", "IDXDataset", "read_idx", "memmap_idx", "is_dataset"]


class Dataset:
    """A data set read a batch at a time (the protocol the Trainer uses).

    Any object with these two methods is one (subclassing this class is optional):

    - ``__len__()``: the number of samples ``N``;
    - ``__getitem__(indices)``: ``indices`` is a 1-D integer array of ``k`` distinct sample
      indices in ``[0, N)`` (``k >= 1``, in any order); returns the batch ``(x, y)`` with
      ``x`` of shape ``(k, ...)`` (float images ``(k, C, H, W)`` for the Trainer) and ``y``
      the ``k`` integer labels, sample ``j`` of the batch being sample ``indices[j]``.

    It must return the same batch for the same indices every time: the Trainer's
    repeatability (and exact resume) rests on it; randomness belongs in the Trainer's
    ``augment``, which draws from the Trainer's seeded generators. Unlike PyTorch's
    ``Dataset`` (indexed one sample at a time, then collated), the whole batch is asked for
    at once, so a memory-mapped file is read with one fancy index per batch.
    """

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def __getitem__(self, indices):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__(indices)")


def is_dataset(obj):
    """Whether the Trainer treats ``obj`` as a :class:`Dataset` rather than an array: a Dataset
    instance, or any object with ``__len__`` and ``__getitem__`` that is not array-like (not a
    NumPy or device array, list or tuple, and without ``__array__``)."""
    if isinstance(obj, Dataset):
        return True
    if isinstance(obj, (np.ndarray, list, tuple, str, bytes, dict)):
        return False
    if hasattr(obj, "__array__") or hasattr(obj, "__array_interface__") \
            or hasattr(obj, "__cuda_array_interface__"):
        return False
    return callable(getattr(obj, "__len__", None)) and callable(getattr(obj, "__getitem__", None))


class TensorDataset(Dataset):
    """Arrays of the same length, indexed together (PyTorch's ``TensorDataset``).

    Parameters
    ----------
    *arrays : array-like, each of shape (N, ...)
        Kept as given (a NumPy memmap stays on disk); lists are converted with ``np.asarray``.

    ``dataset[indices]`` is ``tuple(a[indices] for a in arrays)``: for the Trainer, two arrays
    ``(x, y)`` give batches ``(x[indices], y[indices])``.

    Attributes
    ----------
    tensors : tuple of arrays
        PyTorch's name.
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        arrays = tuple(a if hasattr(a, "shape") else np.asarray(a) for a in arrays)
        lengths = [a.shape[0] if len(a.shape) else None for a in arrays]
        if None in lengths or len(set(lengths)) != 1:
            shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
            raise ValueError(f"TensorDataset: size mismatch between arrays: shapes {shapes} "
                             "(all need the same first dimension)")
        self.tensors = arrays

    def __len__(self):
        return int(self.tensors[0].shape[0])

    def __getitem__(self, indices):
        return tuple(a[indices] for a in self.tensors)

    def __repr__(self):
        return f"TensorDataset({', '.join(str(tuple(a.shape)) for a in self.tensors)})"


def _index_array(indices, n, what):
    """``indices`` as a 1-D int64 array with every element in ``[0, n)``, else a ValueError."""
    arr = np.asarray(indices)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"{what}: indices must be a 1-D sequence of ints, got shape {arr.shape} "
                         f"dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = arr[(arr < 0) | (arr >= n)][0]
        raise ValueError(f"{what}: index {bad} is out of range for a data set of {n} samples")
    return arr


class Subset(Dataset):
    """The samples ``indices`` of ``dataset``, in that order (PyTorch's ``Subset``).

    Parameters
    ----------
    dataset : Dataset
    indices : sequence of int, shape (M,)
        Positions in ``dataset``, each in ``[0, len(dataset))`` (checked here).

    ``len(subset) == M`` and ``subset[j] == dataset[indices[j]]`` for an index array ``j``.

    Attributes
    ----------
    dataset, indices : the arguments (``indices`` as an int64 array)
    """

    def __init__(self, dataset, indices):
        if not is_dataset(dataset):
            raise TypeError(f"Subset: dataset must be a Dataset (__len__ and __getitem__), got "
                            f"{type(dataset).__name__}")
        self.dataset = dataset
        self.indices = _index_array(indices, len(dataset), "Subset")

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, indices):
        return self.dataset[self.indices[indices]]

    def __repr__(self):
        return f"Subset({self.dataset!r}, {len(self)} samples)"


# --- the IDX reader: read_idx (in memory) and memmap_idx (mapped) ---------------------------------

# What a damaged gzip stream raises while it is decompressed (a bad header or CRC, a stream cut
# short, a bad deflate block): each becomes a ValueError naming the file.
_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _is_gzip(path):
    """Whether the file ``path`` is gzip-compressed, by its magic bytes (a name ending in .gz
    without them is a ValueError)."""
    with open(path, "rb") as f:
        if f.read(2) == b"\x1f\x8b":
            return True
    if path.suffix == ".gz":
        raise ValueError(f"{path}: not a gzip file (name ends in .gz but no gzip magic bytes)")
    return False


def _gunzip(path, out):
    """Stream the content of the gzip file ``path`` into the binary file ``out``."""
    with gzip.open(path, "rb") as src:
        while True:
            try:
                chunk = src.read(1 << 20)
            except _GZIP_ERRORS as exc:
                raise ValueError(f"{path}: corrupt gzip data ({exc})") from None
            if not chunk:
                break
            out.write(chunk)


def decompressed_bytes(path):
    """The content of the file ``path``, decompressed when it is gzip (detected by its magic
    bytes); damaged gzip data is a ValueError naming the file."""
    path = Path(path)
    if not _is_gzip(path):
        return path.read_bytes()
    out = io.BytesIO()
    _gunzip(path, out)
    return out.getbuffer()


def _idx_layout(path, head, size):
    """``(dims, offset)`` of the IDX file ``path`` of ``size`` bytes from its first bytes
    ``head`` (16, or all of a shorter file), or a ValueError naming it: a bad magic number,
    a truncated header, or a payload size other than the product of the dimensions. The
    product is a Python int: dimensions up to 2^32 - 1 each cannot overflow it (in int64,
    2^31 x 2^31 x 4 wraps to 0 and an empty payload would pass)."""
    if size < 4:
        raise ValueError(f"{path}: too short for an IDX header ({size} bytes)")
    magic = int.from_bytes(head[:4], "big")
    if head[:2] != b"\0\0" or head[2] != 0x08:
        raise ValueError(
            f"{path}: bad magic number 0x{magic:08x}; expected 2051 (0x00000803, images) "
            "or 2049 (0x00000801, labels) with type byte 0x08 (unsigned byte)"
        )
    ndim = head[3]
    if ndim not in (1, 3):
        raise ValueError(
            f"{path}: bad magic number 0x{magic:08x}: the header says {ndim} dimensions; "
            "expected 3 (images, magic 2051) or 1 (labels, magic 2049)"
        )
    start = 4 + 4 * ndim
    if size < start:
        raise ValueError(f"{path}: truncated header ({size} of {start} bytes)")
    dims = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected, actual = math.prod(dims), size - start
    if actual != expected:
        problem = "truncated" if actual < expected else "trailing bytes"
        raise ValueError(
            f"{path}: {problem}: payload has {actual} bytes but dimensions {dims} need {expected}"
        )
    return dims, start


def _cache_name(path):
    """``(prefix, name)`` of the decompressed copy of the gzip file ``path``: its base name, a
    digest of its absolute path (so folders holding files of the same names, such as MNIST's and
    Fashion-MNIST's, never share a copy) and a digest of its identity: size, modification time
    and the gzip trailer (the CRC-32 and length of the content), so a file rewritten or replaced
    gets a new copy, even within one tick of the clock, and a stale one is never served.
    ``prefix`` is common to every copy of this path."""
    source = path.resolve()
    with open(source, "rb") as f:
        st = os.fstat(f.fileno())
        f.seek(max(st.st_size - 8, 0))
        trailer = f.read(8)
    where = hashlib.sha256(os.fsencode(source)).hexdigest()[:12]
    what = hashlib.sha256(f"{st.st_size}:{st.st_mtime_ns}:".encode() + trailer).hexdigest()[:12]
    prefix = f"{path.stem if path.suffix == '.gz' else path.name + '.raw'}.{where}"
    return prefix, f"{prefix}-{what}"


def _uncompressed(path, cache_dir):
    """``path`` itself, or (a gzip file) its content decompressed once into ``cache_dir``
    (default: a ``fastconv-cache`` folder next to it) under the name :func:`_cache_name` gives;
    older copies of the same path are removed after a new one is written."""
    if not _is_gzip(path):
        return path
    folder = Path(cache_dir) if cache_dir is not None else path.parent / "fastconv-cache"
    prefix, name = _cache_name(path)
    target = folder / name
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=name + ".", suffix=".tmp")
    except OSError as exc:
        raise OSError(f"{path} is gzip-compressed and a memory map needs the plain file; cannot "
                      f"write the decompressed copy in {folder} ({exc}): pass cache_dir= a "
                      "writable folder, or decompress it yourself (gunzip)") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            _gunzip(path, out)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):  # never leave the partial copy behind
            os.unlink(tmp)
        raise
    for old in folder.iterdir():  # copies of earlier versions of this file
        if old.name.startswith(prefix + "-") and old.name != name and not old.name.endswith(".tmp"):
            with contextlib.suppress(OSError):
                old.unlink()
    return target


def read_idx(path):
    """Read an IDX file (MNIST's format, gzip-compressed or plain) into memory.

    Parameters
    ----------
    path : str or Path
        An IDX file of unsigned bytes: magic 2051 (images, 3 dimensions) or
        2049 (labels, 1 dimension). Gzip compression is detected automatically.

    Returns
    -------
    ndarray of uint8
        Shape ``(N, rows, cols)`` for images, ``(N,)`` for labels.

    Raises
    ------
    ValueError
        Naming the file, if it is not valid gzip, has a bad magic number (type
        byte other than 0x08 or a dimension count other than 1 or 3), or if its
        payload is shorter (truncated) or longer (trailing bytes) than the
        product of the dimensions in the header.
    """
    return _read_idx(path, mapped=False)


def memmap_idx(path, cache_dir=None):
    """Memory-map an IDX file of unsigned bytes (the format :func:`read_idx` reads) without
    reading its payload.

    Parameters
    ----------
    path : str or Path
        Magic 2051 (images, 3 dimensions) or 2049 (labels, 1 dimension). A gzip file is
        decompressed once (streamed, written atomically) into ``cache_dir``, by default a
        ``fastconv-cache`` folder next to it, and that copy is mapped. The copy's name holds a
        digest of the gzip file's absolute path and identity (size, modification time, the
        CRC-32 of its content), so a cache folder shared by several data sets never mixes them
        up, and a changed file is decompressed again.
    cache_dir : str or Path, optional

    Returns
    -------
    numpy.memmap of uint8, read-only
        Shape ``(N, rows, cols)`` or ``(N,)``.

    Raises
    ------
    ValueError
        Naming the file, on corrupt gzip data (no partial copy is left in the cache), a bad
        magic number, a truncated header, or a size other than the header's dimensions give
        (the same errors as ``read_idx``).
    """
    return _read_idx(path, cache_dir, mapped=True)


def _read_idx(path, cache_dir=None, mapped=True):
    """The IDX reader: the header checked (:func:`_idx_layout`, errors naming the user's file,
    not a decompressed copy), then the payload mapped from the plain file (a gzip file's copy
    in ``cache_dir``) or read into memory."""
    source = Path(path)
    if mapped:
        plain = _uncompressed(source, cache_dir)
        with open(plain, "rb") as f:
            head = f.read(16)
            size = os.fstat(f.fileno()).st_size
    else:
        content = decompressed_bytes(source)
        head, size = bytes(content[:16]), len(content)
    dims, start = _idx_layout(source, head, size)
    if not mapped:
        return np.frombuffer(content, dtype=np.uint8, offset=start).reshape(dims).copy()
    if math.prod(dims) == 0:  # nothing to map
        return np.zeros(dims, np.uint8)
    return np.memmap(plain, dtype=np.uint8, mode="r", offset=start, shape=dims)


class IDXDataset(Dataset):
    """Images and labels from a pair of IDX files (MNIST's format), memory-mapped.

    Only the batches asked for are read from disk (the operating system caches the rest).

    Parameters
    ----------
    images_path, labels_path : str or Path
        IDX files of ``N`` images (magic 2051) and ``N`` labels (magic 2049), plain or gzip
        (see :func:`memmap_idx`: a gzip file is decompressed once into ``cache_dir``).
    transform : callable, optional
        ``transform(images) -> x`` applied to each batch of ``uint8`` images ``(k, rows, cols)``,
        e.g. :func:`fastconv.datasets.normalize` (MNIST: ``/255``, then MNIST's mean and std,
        giving float32 ``(k, 1, rows, cols)``). Without one the batches are the raw ``uint8``
        images, which the Trainer refuses (it does not guess how to scale them).
    cache_dir : str or Path, optional

    ``dataset[indices]`` is ``(transform(images[indices]), labels[indices])`` with the labels
    as int64, the same values as :func:`read_idx` of the two files.

    Attributes
    ----------
    images, labels : numpy.memmap of uint8
        ``(N, rows, cols)`` and ``(N,)``.
    """

    def __init__(self, images_path, labels_path, transform=None, cache_dir=None):
        if transform is not None and not callable(transform):
            raise TypeError(f"IDXDataset: transform must be callable (images -> x), got {transform!r}")
        self.images = memmap_idx(images_path, cache_dir)
        self.labels = memmap_idx(labels_path, cache_dir)
        if self.images.ndim != 3 or self.labels.ndim != 1:
            raise ValueError(f"IDXDataset: expected images (N, rows, cols) in {images_path} and labels "
                             f"(N,) in {labels_path}, got shapes {self.images.shape} and "
                             f"{self.labels.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"IDXDataset: {len(self.images)} images in {images_path} but "
                             f"{len(self.labels)} labels in {labels_path}")
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, indices):
        images = np.asarray(self.images[indices])
        labels = np.asarray(self.labels[indices]).astype(np.int64)
        return (images if self.transform is None else self.transform(images)), labels

    def __repr__(self):
        return f"IDXDataset({len(self)} images {self.images.shape[1:]}, transform={self.transform!r})"
