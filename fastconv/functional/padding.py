"""Padding of the last two dimensions: :func:`pad` and its gradient :func:`pad_backward`."""
import numbers

import numpy as np

from .._backend import kernels, resolve
from .._shapes import pad_output_hw
from ._common import _array, _ndim4, _same_shape, _shape4

__all__ = ["pad", "pad_backward"]


def _pads(pad, mode):
    """``pad`` as ``(left, right, top, bottom)``: 2 amounts pad the width only (mode "constant"
    only, as PyTorch for 4-D input)."""
    if not isinstance(pad, (tuple, list)):
        raise TypeError(f"pad must be a tuple of ints (left, right[, top, bottom]), got {pad!r}")
    if len(pad) % 2:
        raise ValueError(f"padding length must be divisible by 2, got pad {tuple(pad)}")
    if len(pad) not in (2, 4):
        raise ValueError(f"pad {tuple(pad)}: only the last two dimensions (W, H) of an (N, C, H, "
                         "W) input can be padded, so pad has 2 or 4 amounts")
    for v in pad:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
            raise TypeError(f"pad must hold ints, got {tuple(pad)}")
    pads = tuple(int(v) for v in pad)
    if len(pads) == 2 and mode != "constant":
        raise ValueError(f"padding mode {mode!r} of a 4-D input takes 4 amounts (left, right, top, "
                         f"bottom), got pad {pads}")
    return pads + (0, 0) if len(pads) == 2 else pads


def pad(x, pad, mode="constant", value=0.0, backend=None):
    """Pad the last two dimensions, as ``torch.nn.functional.pad`` does for them.

    Parameters
    ----------
    x : (N, C, H, W) array
    pad : (left, right, top, bottom) ints, or (left, right) for "constant"; a negative amount cuts
        rows/columns off
    mode : "constant" (``value``), "reflect" (mirror about the edge, the edge not repeated; each
        amount below the size of its dimension), "replicate" (repeat the edge) or "circular"
        (wrap around; each amount at most the size of its dimension)
    value : the fill of "constant" (None means 0); the other modes take none

    Returns
    -------
    out : (N, C, H + top + bottom, W + left + right), x's dtype
    """
    name = resolve(backend, x)
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a string, got {mode!r}")
    pads = _pads(pad, mode)
    if value is None:
        value = 0.0
    if mode != "constant" and value != 0:
        raise ValueError(f"padding mode {mode!r} doesn't take a value argument (got {value!r})")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"value must be a real number, got {value!r}")
    x = _array(x, "x")
    _ndim4(x, "x", "(N, C, H, W)")
    pad_output_hw(x.shape[2:], pads, mode)
    return kernels(name).pad(x, pads, mode, value)


def pad_backward(dout, input_shape, pad, mode="constant", backend=None):
    """Gradient of :func:`pad`: dout (N, C, Hout, Wout) -> dx of ``input_shape`` (N, C, H, W).

    Each input element receives the sum of the gradients of every output element copied from it.
    """
    name = resolve(backend, dout)
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a string, got {mode!r}")
    pads = _pads(pad, mode)
    shape = _shape4(input_shape)
    hw = pad_output_hw(shape[2:], pads, mode)
    dout = _array(dout, "dout")
    _same_shape(dout, shape[:2] + hw, "dout")
    return kernels(name).pad_backward(dout, shape, pads, mode)
