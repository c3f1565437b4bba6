"""Shape arithmetic: the one place that turns sizes, strides and padding into output sizes.

Every tier and every layer asks this module; nothing else computes an output size.
"""
import functools

import numpy as np

from ._checks import integer, pair

__all__ = ["pair", "conv_padding", "conv_output_hw", "check_output_padding",
           "conv_transpose_output_hw", "pad_output_hw"]
__all__ += ["pool_params", "unpool_params", "pool_divisor", "pool_output_hw", "pool_windows",
            "adaptive_output_hw", "adaptive_windows", "unpool_output_hw", "avg_pool_divisors",
            "adaptive_divisors"]


def _int(v, name):
    """An output size: an int, named as one entry of an int-or-pair argument."""
    return integer(v, name, "an int or a pair of ints")


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
# the numbers above as plain ints, which a compiled kernel reads as constants
_REFLECT, _REPLICATE, _CIRCULAR = (PAD_MODES[m] for m in ("reflect", "replicate", "circular"))


def pad_source(i, size, before, n_out, mode):
    """The input index that output index ``i`` (of ``n_out``) copies along a dimension of
    ``size`` padded by ``before`` at its start; -1 for the constant. Plain Python, compiled by
    each tier into its kernels (``njit(inline="always")`` on cpu, a cuda device function)."""
    if mode == _CIRCULAR:  # wrap around the kept indices, those that negative amounts leave
        kept = n_out - max(before, 0) - max(n_out - size - before, 0)
        return max(-before, 0) + (i - max(before, 0)) % max(kept, 1)
    s = i - before
    if mode == _REFLECT:
        if s < 0:
            s = -s
        if s >= size:
            s = 2 * (size - 1) - s
    elif mode == _REPLICATE:
        s = min(max(s, 0), size - 1)
    elif s < 0 or s >= size:
        s = -1
    return s


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


# --- pooling ------------------------------------------------------------------------------------
# One axis at a time, as PyTorch computes them: a window of ``k`` taps ``d`` apart starts at
# ``i * s - p``; taps in the padding are skipped (max pooling's padding is -inf, average pooling's
# is 0 and counted only by ``count_include_pad``).

def pool_params(kernel_size, stride=None, padding=0, dilation=1):
    """Validated ``(kernel, stride, padding, dilation)`` pairs of a pooling window.

    ``stride=None`` means the kernel size. PyTorch's rules: every size positive, padding
    non-negative and at most half the kernel (``p <= k // 2``, whatever the dilation), with
    PyTorch's two messages for a padding that is too large.
    """
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding, dilation = pair(padding, "padding"), pair(dilation, "dilation")
    if min(kernel) < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel}")
    _check_stride(stride)
    if min(padding) < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if min(dilation) < 1:
        raise ValueError(f"dilation must be >= 1, got {dilation}")
    for k, p, d in zip(kernel, padding, dilation):
        if 2 * p > d * (k - 1) + 1:
            raise ValueError(f"pad should be at most half of effective kernel size, but got "
                             f"pad={p}, kernel_size={k} and dilation={d}")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"pad should be smaller than or equal to half of kernel size, but got "
                         f"padW = {padding[1]}, padH = {padding[0]}, kW = {kernel[1]}, kH = {kernel[0]}")
    return kernel, stride, padding, dilation


def unpool_params(kernel_size, stride=None, padding=0):
    """Validated ``(kernel, stride, padding)`` pairs of max unpooling (``stride=None``: the
    kernel size); any padding >= 0, as PyTorch's."""
    kernel, stride, _, _ = pool_params(kernel_size, stride)
    padding = pair(padding, "padding")
    if min(padding) < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    return kernel, stride, padding


def pool_divisor(divisor_override):
    """``divisor_override`` of average pooling: None, or a nonzero int (PyTorch's rule)."""
    if divisor_override is None:
        return None
    value = integer(divisor_override, "divisor_override")
    if value == 0:
        raise ValueError("divisor_override must be nonzero (PyTorch: 'divisor must be not zero')")
    return value


def _pool_size(size, k, s, p, d, ceil_mode):
    """PyTorch's output length of one axis: ``floor`` (or ``ceil``) of
    ``(size + 2p - d(k - 1) - 1) / s`` plus one; in ceil mode the last window must start inside
    the input or its left padding."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


@functools.lru_cache(maxsize=512)
def pool_windows(size, kernel, stride, padding, dilation, ceil_mode):
    """The windows of one axis: a read-only int64 array (out, 3) of ``first`` (the first tap
    inside the input), ``count`` (its taps inside the input, ``dilation`` apart) and ``extent``
    (the window clipped to the input and its padding: average pooling's ``count_include_pad``
    divisor, for dilation 1).

    Raises ValueError when the output is empty or a dilated window holds no input element (there
    PyTorch returns -inf with an index outside the input).
    """
    k, s, p, d = kernel, stride, padding, dilation
    out = _pool_size(size, k, s, p, d, ceil_mode)
    if out < 1:
        raise ValueError(f"output size {out} is too small")
    start = np.arange(out, dtype=np.int64) * s - p
    skip = np.maximum(0, -start + d - 1) // d          # taps in the left padding
    last = np.minimum(k - 1, (size - 1 - start) // d)  # the last tap inside the input
    count = last - skip + 1
    if count.min() < 1:
        i = int(np.argmin(count))
        taps = list(range(int(start[i]), int(start[i]) + d * k, d))
        raise ValueError(f"pooling window {i} (taps at {taps}) holds no element of an input of "
                         f"size {size}: kernel {k} with dilation {d} and padding {p} steps over it")
    extent = np.minimum(start + k, size + p) - start
    table = np.stack([start + skip * d, count, extent], axis=1)
    table.flags.writeable = False
    return table


def pool_output_hw(in_hw, kernel_hw, stride_hw, padding_hw=(0, 0), dilation_hw=(1, 1),
                   ceil_mode=False):
    """``(Hout, Wout)`` of a pooling window (PyTorch's formula; floor mode by default).

    Raises ValueError naming the window and the input when the output would be empty, or when a
    dilated window holds no input element.
    """
    (h, w), (kh, kw) = in_hw, kernel_hw
    if kh < 1 or kw < 1:
        raise ValueError(f"pool kernel size must be >= 1, got {(kh, kw)}")
    _check_stride(stride_hw)
    padding_hw, dilation_hw = tuple(padding_hw), tuple(dilation_hw)
    axes = list(zip(in_hw, kernel_hw, stride_hw, padding_hw, dilation_hw))
    sizes = [_pool_size(n, k, s, p, d, ceil_mode) for n, k, s, p, d in axes]
    if min(sizes) < 1:
        window = f"pool window {kh}x{kw}"
        if dilation_hw != (1, 1):
            window += f" with dilation {dilation_hw}"
        where = f"the input {h}x{w}" + (f" padded by {padding_hw}" if padding_hw != (0, 0) else "")
        raise ValueError(f"{window} is larger than {where}: output size {sizes[0]}x{sizes[1]} "
                         "is too small")
    for n, k, s, p, d in axes:
        pool_windows(int(n), k, s, p, d, bool(ceil_mode))  # a dilated window over no input?
    return tuple(sizes)


def adaptive_output_hw(in_hw, output_size):
    """``(Hout, Wout)`` of adaptive pooling: ``output_size`` is an int or a pair whose entries are
    ints or None (None keeps the input's size). Sizes are >= 0, as PyTorch's."""
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or a pair (Hout, Wout), got {output_size!r}")
        sizes = tuple(n if v is None else _int(v, "output_size") for v, n in zip(output_size, in_hw))
    else:
        sizes = (_int(output_size, "output_size"),) * 2
    if min(sizes) < 0:
        raise ValueError(f"output_size must be >= 0 (or None), got {output_size!r}")
    return tuple(int(v) for v in sizes)


@functools.lru_cache(maxsize=512)
def adaptive_windows(size, out):
    """The bins of one axis of adaptive pooling: a read-only int64 array (out, 3) of ``first``
    (``floor(i * size / out)``), ``count`` (up to ``ceil((i + 1) * size / out)``) and ``count``
    again (the bin is all input: the divisor of an average)."""
    i = np.arange(out, dtype=np.int64)
    first = i * size // out
    count = ((i + 1) * size + out - 1) // out - first
    table = np.stack([first, count, count], axis=1)
    table.flags.writeable = False
    return table


def unpool_output_hw(in_hw, kernel_hw, stride_hw, padding_hw, output_size=None):
    """``(Hout, Wout)`` of max unpooling: ``(H - 1) * s + k - 2p`` per axis, or ``output_size``
    ((H, W) or (N, C, H, W)), which must lie strictly within one stride of that (PyTorch's rule)."""
    default = tuple((n - 1) * s + k - 2 * p
                    for n, k, s, p in zip(in_hw, kernel_hw, stride_hw, padding_hw))
    if output_size is None:
        sizes = default
    else:
        if not isinstance(output_size, (tuple, list)) and not hasattr(output_size, "__len__"):
            raise TypeError(f"output_size must be a sequence of 2 or 4 ints, got {output_size!r}")
        output_size = tuple(output_size)
        if len(output_size) == 4:
            output_size = output_size[2:]
        if len(output_size) != 2:
            raise ValueError(f"output_size should be a sequence containing 2 or 4 elements, but "
                             f"it has a length of '{len(output_size)}'")
        sizes = tuple(_int(v, "output_size") for v in output_size)
        for d, (v, n, s) in enumerate(zip(sizes, default, stride_hw)):
            if not n - s < v < n + s:
                raise ValueError(f'invalid output_size "{sizes}" (dim {d} must be between '
                                 f'{n - s} and {n + s})')
    if min(sizes) < 1:
        raise ValueError(f"max_unpool2d output size {sizes} is not positive (input {tuple(in_hw)}, "
                         f"kernel {tuple(kernel_hw)}, stride {tuple(stride_hw)}, "
                         f"padding {tuple(padding_hw)})")
    return sizes


def _divisors(rows, cols, col, divisor_override, dtype):
    if divisor_override is not None:
        div = np.full((len(rows), len(cols)), divisor_override, dtype=np.float64)
    else:
        div = np.outer(rows[:, col], cols[:, col]).astype(np.float64)
    div = div.astype(dtype)
    div.flags.writeable = False
    return div


@functools.lru_cache(maxsize=256)
def avg_pool_divisors(in_hw, kernel, stride, padding, ceil_mode, count_include_pad,
                      divisor_override, dtype):
    """The divisor of every average-pooling window: a read-only (Hout, Wout) array of ``dtype``.

    PyTorch's rule: ``divisor_override`` if given, else the window's size clipped to the input
    and its padding (``count_include_pad=True``) or to the input alone.
    """
    rows, cols = (pool_windows(n, k, s, p, 1, ceil_mode) for n, k, s, p in
                  zip(in_hw, kernel, stride, padding))
    return _divisors(rows, cols, 2 if count_include_pad else 1, divisor_override, dtype)


@functools.lru_cache(maxsize=256)
def adaptive_divisors(in_hw, out_hw, dtype):
    """The size of every adaptive-pooling bin: a read-only (Hout, Wout) array of ``dtype``."""
    rows, cols = (adaptive_windows(n, o) for n, o in zip(in_hw, out_hw))
    return _divisors(rows, cols, 1, None, dtype)


def pool_tables(in_hw, kernel, stride, padding, dilation, ceil_mode):
    """``(rows, cols)``: the :func:`pool_windows` table of each axis, as the kernels read them."""
    return tuple(pool_windows(n, k, s, p, d, bool(ceil_mode)) for n, k, s, p, d in
                 zip(in_hw, kernel, stride, padding, dilation))


def adaptive_tables(in_hw, out_hw):
    """``(rows, cols)``: the :func:`adaptive_windows` table of each axis."""
    return tuple(adaptive_windows(n, o) for n, o in zip(in_hw, out_hw))


def adaptive_avg_geometry(in_hw, out_hw, dtype):
    """``(rows, cols, divisors)`` of adaptive average pooling: what the tiers' average-pool
    kernels take (the adaptive counterpart of :func:`avg_pool_geometry`)."""
    in_hw, out_hw = tuple(in_hw), tuple(out_hw)
    return adaptive_tables(in_hw, out_hw) + (adaptive_divisors(in_hw, out_hw, np.dtype(dtype)),)


def avg_pool_geometry(in_hw, kernel, stride, padding, ceil_mode, count_include_pad,
                      divisor_override, dtype):
    """``(rows, cols, div)`` of an average pooling: its window tables and divisors."""
    key = (tuple(in_hw), tuple(kernel), tuple(stride), tuple(padding), bool(ceil_mode))
    return pool_tables(in_hw, kernel, stride, padding, (1, 1), ceil_mode) + (
        avg_pool_divisors(*key, bool(count_include_pad), divisor_override, np.dtype(dtype)),)
