"""cuda combining of branch outputs: elementwise sum, and one block-copy kernel that writes a part
into its slice of a concatenation (or reads it back out, for the split)."""
from numba import cuda

from . import activation
from ._launch import _A1, _A3, _dev, _empty, _flat, _launch, _sigs


@cuda.jit(cache=True)
def _add_kernel(a, b, out):
    """out = a + b over flat arrays."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = a[i] + b[i]


@cuda.jit(cache=True)
def _block_copy_kernel(part, whole, offset, into):
    """part (A, B, C) and whole (A, D, C): ``whole[:, offset:offset + B] = part`` (``into``) or
    ``part = whole[:, offset:offset + B]``; one thread per element of part."""
    _, b_n, c_n = part.shape
    for t in range(cuda.grid(1), part.size, cuda.gridsize(1)):
        c = t % c_n
        r = t // c_n
        b = r % b_n
        a = r // b_n
        if into:
            whole[a, offset + b, c] = part[a, b, c]
        else:
            part[a, b, c] = whole[a, offset + b, c]


def add(a, b, relu=False):
    """a + b on the device, both of one shape and dtype; then the ReLU kernel when ``relu``."""
    a = _dev(a)
    b = _dev(b, a.dtype)
    out = _empty(a.shape, a.dtype)
    if out.size:
        _add_kernel[_launch(out.size)](_flat(a), _flat(b), _flat(out))
    return activation.relu(out) if relu else out


def concat(parts):
    """Concatenate (A, B_i, C) arrays along axis 1 -> (A, sum B_i, C) on the device."""
    parts = [_dev(p) for p in parts]
    parts = [parts[0]] + [_dev(p, parts[0].dtype) for p in parts[1:]]
    a_n, _, c_n = parts[0].shape
    whole = _empty((a_n, sum(p.shape[1] for p in parts), c_n), parts[0].dtype)
    offset = 0
    for p in parts:
        if p.size:
            _block_copy_kernel[_launch(p.size)](p, whole, offset, True)
        offset += p.shape[1]
    return whole


def split(a, sizes):
    """Split a (A, D, C) along axis 1 into (A, B_i, C) device arrays, ``sum(sizes) == D``."""
    a = _dev(a)
    out, offset = [], 0
    for size in sizes:
        part = _empty((a.shape[0], size, a.shape[2]), a.dtype)
        if part.size:
            _block_copy_kernel[_launch(part.size)](part, a, offset, False)
        out.append(part)
        offset += size
    return out


KERNELS = {
    "_add_kernel": (_add_kernel, _sigs(f"void({_A1}, {_A1}, {_A1})")),
    "_block_copy_kernel": (_block_copy_kernel, _sigs(f"void({_A3}, {_A3}, int64, boolean)")),
}
