"""What every functional op shares: array conversion and shape checks."""
import numpy as np

from .._backend import is_device_array

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _array(a, name, dtype=None):
    """``a`` as a C-contiguous float array (``dtype``, else its own float dtype, else float32)."""
    if (type(a) is np.ndarray and a.dtype in _FLOATS and (dtype is None or a.dtype == dtype)
            and a.flags.c_contiguous):
        return a  # the common case, checked first: per-call overhead decides batch-1 speed
    if is_device_array(a):
        if np.dtype(a.dtype) not in _FLOATS or (dtype is not None and a.dtype != dtype):
            raise TypeError(f"{name}: device array of dtype {a.dtype} where {dtype or 'float32/float64'}"
                            " was expected")
        return a
    arr = np.asarray(a)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} is complex ({arr.dtype}); fastconv works on real arrays")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if dtype is None:
        dtype = arr.dtype if arr.dtype in _FLOATS else np.dtype(np.float32)
    return np.asarray(arr, dtype=dtype) if arr.ndim == 0 else np.ascontiguousarray(arr, dtype=dtype)


def _ndim4(a, name, what):
    if len(a.shape) != 4:
        raise ValueError(f"{name} must be 4-D {what}, got shape {tuple(a.shape)}")


def _shape4(shape):
    """A 4-D input shape; the batch N may be 0 (an empty batch), the other sizes are positive."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4 or shape[0] < 0 or min(shape[1:]) < 1:
        raise ValueError(f"input_shape must be 4 sizes (N, C, H, W), N >= 0 and the others "
                         f"positive, got {shape}")
    return shape


def _same_shape(a, shape, name):
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(a.shape)}, expected {tuple(shape)}")
