"""Reading ``.npz`` archives that may be damaged or hostile.

:class:`NpzReader` reads every member's ``.npy`` header (key, dtype, shape) before any array
data, and checks that the bytes each header declares are the bytes the member holds, so the
caller can compare keys, dtypes and shapes with what it expects and read only the arrays that
fit: a file of a few hundred bytes cannot make it allocate what it claims (np.load allocates
any array a header declares as soon as it is read). Every problem is a ValueError naming the
file and the key.
"""
import math
import os
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a member first / an empty archive
#: What zipfile and np.lib.format raise on a damaged archive (RuntimeError: an encrypted member).
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError)


class Header(NamedTuple):
    """A member's declared array: ``shape`` (tuple), ``dtype`` and its zip entry."""
    shape: tuple
    dtype: np.dtype
    info: zipfile.ZipInfo

    @property
    def nbytes(self):
        return math.prod(self.shape) * self.dtype.itemsize


class NpzReader:
    """An open ``.npz`` archive whose headers were read and checked: ``headers`` maps each key to
    its :class:`Header`; :meth:`read` reads one array. A context manager.

    Parameters
    ----------
    path : str or path
    label : str
        How errors name the file: ``ValueError(f"cannot read {label}: ...")``.

    A missing file is a FileNotFoundError; anything that is not a readable archive of plain
    arrays (another kind of file, a single ``.npy``, a damaged zip or header, a member that is
    not an ``.npy``, object or structured dtypes, a header declaring more or fewer bytes than its
    member holds) is a ValueError.
    """

    def __init__(self, path, label):
        self.path, self.label = os.fspath(path), label
        with open(self.path, "rb") as f:
            head = f.read(8)
        if head.startswith(_NPY_MAGIC):
            self._fail("it holds a single array (.npy), not an .npz archive")
        if not head.startswith(_ZIP_MAGICS):
            hint = " (an ONNX model: load it with fastconv.onnx.load)" if self.path.endswith(".onnx") else ""
            self._fail(f"it is not an .npz archive (a zip of .npy arrays){hint}")
        try:
            self._zip = zipfile.ZipFile(self.path)
        except _DAMAGED as exc:
            self._fail(f"it is a damaged .npz archive ({exc})")
        try:
            self.headers = self._read_headers()
        except BaseException:
            self._zip.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._zip.close()

    def _fail(self, why):
        raise ValueError(f"cannot read {self.label}: {why}")

    def _read_headers(self):
        headers = {}
        for info in self._zip.infolist():
            if info.is_dir() or not info.filename.endswith(".npy"):
                self._fail(f"it holds {info.filename!r}, which is not an .npy array")
            key = info.filename[:-4]
            if key in headers:
                self._fail(f"key {key!r} appears twice")
            try:
                with self._zip.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version not in ((1, 0), (2, 0)):  # 3.0 exists for utf-8 field names only
                        raise ValueError(f".npy format version {version} is not supported")
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                    offset = f.tell()
            except _DAMAGED as exc:
                self._fail(f"key {key!r} has a damaged .npy header ({exc})")
            if dtype.hasobject:
                self._fail(f"key {key!r} holds Python objects (pickled data), which fastconv never "
                           "writes or loads: it is not a fastconv model file or checkpoint")
            if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufcSU":
                self._fail(f"key {key!r} has dtype {dtype}, not a plain numeric or text type")
            header = Header(tuple(shape), dtype, info)
            if offset + header.nbytes != info.file_size:
                self._fail(f"key {key!r} declares shape {header.shape} of {dtype} ({header.nbytes:,} "
                           f"bytes) but holds {max(info.file_size - offset, 0):,} bytes: the file is "
                           "damaged or crafted")
            headers[key] = header
        return headers

    def read(self, key):
        """The array under ``key``, as its header declares it (a damaged member: ValueError)."""
        header = self.headers[key]
        try:
            with self._zip.open(header.info) as f:
                array = np.lib.format.read_array(f, allow_pickle=False)
                trailing = f.read(1)  # reading to the end checks the member's CRC
        except _DAMAGED as exc:
            self._fail(f"key {key!r} is damaged ({exc})")
        if trailing or array.shape != header.shape or array.dtype != header.dtype:
            self._fail(f"key {key!r} does not hold the array its header declares")
        return array


def mismatches(headers, expected, what="the file"):
    """What keeps an archive's arrays (``headers``, from :class:`NpzReader`) from loading into
    ``expected`` (``{key: shape}``): missing and unexpected keys, dtypes that are not real
    numbers, shapes that differ; ``[]`` when they fit."""
    missing = [k for k in expected if k not in headers]
    unexpected = [k for k in headers if k not in expected]
    problems = [f"missing keys: {missing}"] * bool(missing)
    problems += [f"unexpected keys: {unexpected}"] * bool(unexpected)
    for key, want in expected.items():
        h = headers.get(key)
        if h is None:
            continue
        if h.dtype.kind not in "biuf":
            problems.append(f"{key}: dtype {h.dtype} is not a real numeric type")
        elif h.shape != tuple(want):
            problems.append(f"size mismatch for {key}: {what} has shape {h.shape}, "
                            f"the model has {tuple(want)}")
    return problems
