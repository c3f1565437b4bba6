"""Shape arithmetic: the one place that turns sizes, strides and padding into output sizes.

Every tier and every layer asks this module; nothing else computes an output size.
"""
import numbers

import numpy as np

__all__ = ["pair", "conv_padding", "conv_output_hw", "check_output_padding",
           "conv_transpose_output_hw", "pad_output_hw", "pool_output_hw"]


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


def conv_padding(padding, kernel_hw, stride_hw, dilation_hw=(1, 1)):
    """Resolve ``padding`` to ``(top, bottom, left, right)``.

    ``padding`` is an int, an ``(h, w)`` pair, ``"valid"`` (no padding) or ``"same"`` (stride 1
    only; output keeps H x W). For ``"same"`` the total padding of a dimension is
    ``dilation * (kernel - 1)``, its smaller half at the top/left and the extra row/column at the
    bottom/right, as PyTorch does.
    """
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            return 0, 0, 0, 0
        if word == "same":
            if tuple(stride_hw) != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions, got "
                                 f"stride {tuple(stride_hw)}")
            (fh, fw), (dh, dw) = kernel_hw, dilation_hw
            th, tw = dh * (fh - 1), dw * (fw - 1)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        raise ValueError(f"unknown padding {padding!r}: use an int, an (h, w) pair, 'valid' or 'same'")
    ph, pw = pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ValueError(f"padding must be >= 0, got {(ph, pw)}")
    return ph, ph, pw, pw


def _check_stride(stride_hw):
    if min(stride_hw) < 1:
        raise ValueError(f"stride must be >= 1, got {stride_hw}")


def _check_dilation(dilation_hw):
    if min(dilation_hw) < 1:
        raise ValueError(f"dilation must be >= 1, got {tuple(dilation_hw)}")


def conv_output_hw(in_hw, kernel_hw, stride_hw, pads, dilation_hw=(1, 1)):
    """``(Hout, Wout)`` of a convolution, floor mode as PyTorch:
    ``(H + top + bottom - dh*(FH - 1) - 1) // sh + 1``."""
    _check_stride(stride_hw)
    _check_dilation(dilation_hw)
    (h, w), (fh, fw), (sh, sw), (dh, dw) = in_hw, kernel_hw, stride_hw, dilation_hw
    top, bottom, left, right = pads
    hp, wp = h + top + bottom, w + left + right
    if fh < 1 or fw < 1:
        raise ValueError(f"kernel size must be >= 1, got {(fh, fw)}")
    eh, ew = dh * (fh - 1) + 1, dw * (fw - 1) + 1
    if eh > hp or ew > wp:
        what = f"kernel {fh}x{fw}" if (dh, dw) == (1, 1) else \
            f"dilated kernel {eh}x{ew} (kernel {fh}x{fw}, dilation {(dh, dw)})"
        raise ValueError(f"{what} is larger than the padded input {hp}x{wp} "
                         f"(input {h}x{w}, padding {pads})")
    return (hp - eh) // sh + 1, (wp - ew) // sw + 1


def check_output_padding(output_padding_hw, stride_hw, dilation_hw):
    """ValueError unless each ``output_padding`` is >= 0 and smaller than its stride or dilation."""
    (oph, opw), (sh, sw), (dh, dw) = output_padding_hw, stride_hw, dilation_hw
    if min(oph, opw) < 0 or not (oph < max(sh, dh) and opw < max(sw, dw)):
        raise ValueError("output padding must be smaller than either stride or dilation, but got "
                         f"output_padding {(oph, opw)}, stride {(sh, sw)}, dilation {(dh, dw)}")


def conv_transpose_output_hw(in_hw, kernel_hw, stride_hw, padding_hw, output_padding_hw,
                             dilation_hw=(1, 1)):
    """``(Hout, Wout)`` of a transposed convolution, as PyTorch:
    ``(H - 1)*sh - 2*ph + dh*(FH - 1) + oph + 1``.

    ``output_padding`` must be smaller than the stride or the dilation (of each dimension).
    """
    _check_stride(stride_hw)
    _check_dilation(dilation_hw)
    (h, w), (fh, fw), (sh, sw) = in_hw, kernel_hw, stride_hw
    (ph, pw), (oph, opw), (dh, dw) = padding_hw, output_padding_hw, dilation_hw
    if fh < 1 or fw < 1:
        raise ValueError(f"kernel size must be >= 1, got {(fh, fw)}")
    if min(ph, pw) < 0:
        raise ValueError(f"padding must be >= 0, got {(ph, pw)}")
    check_output_padding(output_padding_hw, stride_hw, dilation_hw)
    ho = (h - 1) * sh - 2 * ph + dh * (fh - 1) + oph + 1
    wo = (w - 1) * sw - 2 * pw + dw * (fw - 1) + opw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"transposed convolution of input {h}x{w} (kernel {fh}x{fw}, stride "
                         f"{(sh, sw)}, padding {(ph, pw)}, dilation {(dh, dw)}) would give an "
                         f"output of {ho}x{wo}: output size is too small")
    return ho, wo


#: The padding modes of :func:`fastconv.functional.pad`, as the tiers number them.
PAD_MODES = {"constant": 0, "reflect": 1, "replicate": 2, "circular": 3}


def pad_output_hw(in_hw, pad, mode):
    """``(H + top + bottom, W + left + right)`` for ``pad = (left, right, top, bottom)``.

    Amounts may be negative (rows or columns are cut off), as in PyTorch; ``"reflect"`` needs
    every amount smaller than the input size of its dimension, and ``"circular"`` (which wraps
    around what is left after the cut) at most the size left (no wrapping around more than
    once). The result may have zero rows or columns.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"unrecognised padding mode {mode!r}: use one of {', '.join(PAD_MODES)}")
    (h, w), (left, right, top, bottom) = in_hw, pad
    for size, amounts, dim in ((w, (left, right), "width"), (h, (top, bottom), "height")):
        if mode == "reflect" and max(amounts) >= size:
            raise ValueError(f"reflect padding {amounts} of the {dim} must be smaller than the "
                             f"input {dim} {size} (input {h}x{w})")
        kept = size + min(amounts[0], 0) + min(amounts[1], 0)
        if mode == "circular" and max(amounts) > kept:
            raise ValueError(f"circular padding {amounts} of the {dim} would wrap around more "
                             f"than once: at most the {kept} of the input {dim} {size} left after "
                             f"cutting (input {h}x{w})")
    ho, wo = h + top + bottom, w + left + right
    if ho < 0 or wo < 0:
        raise ValueError(f"padding {tuple(pad)} removes more than the input {h}x{w} holds "
                         f"(output {ho}x{wo})")
    return ho, wo


def pool_output_hw(in_hw, kernel_hw, stride_hw):
    """``(Hout, Wout)`` of a pooling window without padding, floor mode."""
    (h, w), (kh, kw) = in_hw, kernel_hw
    if kh < 1 or kw < 1:
        raise ValueError(f"pool kernel size must be >= 1, got {(kh, kw)}")
    _check_stride(stride_hw)
    if kh > h or kw > w:
        raise ValueError(f"pool window {kh}x{kw} is larger than the input {h}x{w}")
    return conv_output_hw(in_hw, kernel_hw, stride_hw, (0, 0, 0, 0))
