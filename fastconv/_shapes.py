"""Shape arithmetic: the one place that turns sizes, strides and padding into output sizes.

Every tier and every layer asks this module; nothing else computes an output size.
"""
import numbers

import numpy as np

__all__ = ["pair", "conv_padding", "conv_output_hw", "pool_output_hw"]


def _int(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(v)


def pair(v, name):
    """Return ``(h, w)`` from an int or a length-2 sequence of ints."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {v!r}")
        return _int(v[0], name), _int(v[1], name)
    v = _int(v, name)
    return v, v


def conv_padding(padding, kernel_hw, stride_hw):
    """Resolve ``padding`` to ``(top, bottom, left, right)``.

    ``padding`` is an int, an ``(h, w)`` pair, ``"valid"`` (no padding) or ``"same"`` (stride 1
    only; output keeps H x W; for even kernels the extra row/column goes at the bottom/right,
    as PyTorch does).
    """
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            return 0, 0, 0, 0
        if word == "same":
            if stride_hw != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride {stride_hw}")
            (fh, fw) = kernel_hw
            top, left = (fh - 1) // 2, (fw - 1) // 2
            return top, fh - 1 - top, left, fw - 1 - left
        raise ValueError(f"unknown padding {padding!r}: use an int, an (h, w) pair, 'valid' or 'same'")
    ph, pw = pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got {(ph, pw)}")
    return ph, ph, pw, pw


def _check_stride(stride_hw):
    if min(stride_hw) < 1:
        raise ValueError(f"stride must be >= 1, got {stride_hw}")


def conv_output_hw(in_hw, kernel_hw, stride_hw, pads):
    """``(Hout, Wout)`` of a convolution: ``(H + top + bottom - FH) // sh + 1`` (floor, as PyTorch)."""
    _check_stride(stride_hw)
    (h, w), (fh, fw), (sh, sw) = in_hw, kernel_hw, stride_hw
    top, bottom, left, right = pads
    hp, wp = h + top + bottom, w + left + right
    if fh < 1 or fw < 1:
        raise ValueError(f"kernel size must be >= 1, got {(fh, fw)}")
    if fh > hp or fw > wp:
        raise ValueError(f"kernel {fh}x{fw} is larger than the padded input {hp}x{wp} "
                         f"(input {h}x{w}, padding {pads})")
    return (hp - fh) // sh + 1, (wp - fw) // sw + 1


def pool_output_hw(in_hw, kernel_hw, stride_hw):
    """``(Hout, Wout)`` of a pooling window without padding, floor mode."""
    (h, w), (kh, kw) = in_hw, kernel_hw
    if kh < 1 or kw < 1:
        raise ValueError(f"pool kernel size must be >= 1, got {(kh, kw)}")
    _check_stride(stride_hw)
    if kh > h or kw > w:
        raise ValueError(f"pool window {kh}x{kw} is larger than the input {h}x{w}")
    return conv_output_hw(in_hw, kernel_hw, stride_hw, (0, 0, 0, 0))
