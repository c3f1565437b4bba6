"""Convolution: :func:`conv2d` (strided, padded, dilated, grouped, depthwise), the transposed
convolution :func:`conv_transpose2d`, their gradients, :func:`im2col` and :func:`col2im`.

A convolution with ``groups == 1`` runs the tier's dense kernel, one with ``groups`` equal to the
input channels (depthwise, any channel multiplier) the tier's depthwise kernel, and any other
grouping the tier's loop over the groups.
"""
from collections import namedtuple

from .._backend import check_host, kernels, resolve
from .._checks import positive_int
from .._shapes import conv_output_hw, conv_padding, conv_transpose_output_hw, pair
from ._common import _array, _ndim4, _same_shape, _shape4

__all__ = ["conv2d", "conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward", "im2col",
           "col2im", "conv2d_memory", "ConvCache", "ConvTransposeCache"]

# Both caches hold the forward's inputs, then its geometry in the forward's argument order, then
# the tier's saved state and the tier's name.
ConvCache = namedtuple("ConvCache", "x w has_bias stride pads dilation groups saved backend")
ConvCache.__doc__ = ("What :func:`conv2d` hands to :func:`conv2d_backward`; ``pads`` is (top, "
                     "bottom, left, right).")

ConvTransposeCache = namedtuple("ConvTransposeCache", "x w has_bias stride padding output_padding "
                                "dilation groups saved backend")
ConvTransposeCache.__doc__ = ("What :func:`conv_transpose2d` hands to "
                              ":func:`conv_transpose2d_backward`; ``padding`` is the symmetric "
                              "(ph, pw).")


def _conv_geometry(x_shape, kernel, stride, padding, dilation=1):
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    pads = conv_padding(padding, kernel, stride, dilation)
    return stride, pads, dilation, conv_output_hw(x_shape[2:], kernel, stride, pads, dilation)


def _weights(x, w, b, groups, transposed):
    """Check x, w, b against each other; ``(x, w, b, groups)`` as arrays of x's dtype."""
    x = _array(x, "x")
    w = _array(w, "w", x.dtype)
    _ndim4(x, "x", "(N, C, H, W)")
    _ndim4(w, "w", "(C, K/groups, FH, FW)" if transposed else "(K, C/groups, FH, FW)")
    groups = positive_int(groups, "groups")
    c = x.shape[1]
    if c % groups:
        raise ValueError(f"x {tuple(x.shape)}: its {c} channels are not divisible by groups={groups}")
    if transposed:
        expects, k = w.shape[0], w.shape[1] * groups
    else:
        expects, k = w.shape[1] * groups, w.shape[0]
        if k % groups:
            raise ValueError(f"w {tuple(w.shape)}: its {k} output channels are not divisible by "
                             f"groups={groups}")
    if expects != c:
        extra = f" with groups={groups}" if groups != 1 else ""
        raise ValueError(f"channel mismatch: x {tuple(x.shape)} has {c} channels, "
                         f"w {tuple(w.shape)}{extra} expects {expects}, x (N, {expects}, H, W)")
    if b is not None:
        b = _array(b, "b", x.dtype)
        if tuple(b.shape) != (k,):
            raise ValueError(f"bias has shape {tuple(b.shape)}, expected ({k},) for w {tuple(w.shape)}")
    return x, w, b, groups


def conv_kernels(tier, channels, groups):
    """The tier's (forward, backward, extra keyword arguments) for this grouping (also what
    :func:`fastconv.compile`'s plans call)."""
    if groups == 1:
        return tier.conv2d, tier.conv2d_backward, {}
    if groups == channels:
        return tier.depthwise_conv2d, tier.depthwise_conv2d_backward, {}
    return tier.grouped_conv2d, tier.grouped_conv2d_backward, {"groups": groups}


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, backend=None):
    """2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

    Parameters
    ----------
    x : (N, C, H, W) array
    w : (K, C/groups, FH, FW) array
    b : (K,) array or None
    stride : int or (sh, sw)
    padding : int, (ph, pw), "valid" or "same" (stride 1; total padding ``dilation*(F - 1)``,
        the extra row/column at the bottom/right)
    dilation : int or (dh, dw), the spacing of the kernel taps
    groups : int dividing C and K; input slice g of C/groups channels makes output slice g of
        K/groups channels. ``groups == C`` is depthwise (K = m*C for a channel multiplier m).

    Returns
    -------
    out : (N, K, Hout, Wout), ``Hout = (H + 2*ph - dh*(FH - 1) - 1) // sh + 1``
    cache : :class:`ConvCache` for :func:`conv2d_backward`
    """
    name = resolve(backend, x, w, b)
    x, w, b, groups = _weights(x, w, b, groups, transposed=False)
    stride, pads, dilation, _ = _conv_geometry(x.shape, tuple(w.shape[2:]), stride, padding,
                                               dilation)
    forward, _, extra = conv_kernels(kernels(name), x.shape[1], groups)
    out, saved = forward(x, w, b, stride, pads, dilation, **extra)
    return out, ConvCache(x, w, b is not None, stride, pads, dilation, groups, saved, name)


def conv2d_backward(dout, cache, need_dx=True):
    """Gradients of :func:`conv2d`.

    dout : (N, K, Hout, Wout). Returns ``(dx, dw, db)``: dx as x (None when ``need_dx`` is false,
    e.g. for a network's first layer), dw as w, db (K,) or None when there was no bias.
    """
    x, w = cache.x, cache.w
    hw = conv_output_hw(x.shape[2:], tuple(w.shape[2:]), cache.stride, cache.pads, cache.dilation)
    check_host(cache.backend, dout)
    dout = _array(dout, "dout", x.dtype)
    _same_shape(dout, (x.shape[0], w.shape[0]) + hw, "dout")
    _, backward, extra = conv_kernels(kernels(cache.backend), x.shape[1], cache.groups)
    return backward(dout, x, w, cache.has_bias, cache.stride, cache.pads, dilation=cache.dilation,
                    saved=cache.saved, need_dx=need_dx, **extra)


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                     backend=None):
    """2-D transposed convolution (as ``torch.nn.functional.conv_transpose2d``): the input
    gradient of the convolution with the same weights, stride, padding and dilation.

    Parameters
    ----------
    x : (N, C, H, W) array
    w : (C, K/groups, FH, FW) array (PyTorch's layout: input channels first)
    b : (K,) array or None
    stride, padding, dilation : int or pair
    output_padding : int or pair, extra rows/columns at the bottom/right of the output; each must
        be smaller than the stride or the dilation of its dimension
    groups : int dividing C and K

    Returns
    -------
    out : (N, K, Hout, Wout), ``Hout = (H - 1)*sh - 2*ph + dh*(FH - 1) + oph + 1``
    cache : :class:`ConvTransposeCache` for :func:`conv_transpose2d_backward`
    """
    name = resolve(backend, x, w, b)
    x, w, b, groups = _weights(x, w, b, groups, transposed=True)
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    output_padding, dilation = pair(output_padding, "output_padding"), pair(dilation, "dilation")
    conv_transpose_output_hw(x.shape[2:], w.shape[2:], stride, padding, output_padding, dilation)
    out, saved = kernels(name).conv_transpose2d(x, w, b, stride, padding, output_padding, dilation,
                                                groups)
    return out, ConvTransposeCache(x, w, b is not None, stride, padding, output_padding, dilation,
                                   groups, saved, name)


def conv_transpose2d_backward(dout, cache, need_dx=True):
    """Gradients of :func:`conv_transpose2d`: dout (N, K, Hout, Wout) -> ``(dx, dw, db)``.

    dx (as x; None when ``need_dx`` is false) is the convolution of dout with w, dw as w, db (K,)
    or None when there was no bias.
    """
    c = cache
    hw = conv_transpose_output_hw(c.x.shape[2:], c.w.shape[2:], c.stride, c.padding,
                                  c.output_padding, c.dilation)
    check_host(c.backend, dout)
    dout = _array(dout, "dout", c.x.dtype)
    _same_shape(dout, (c.x.shape[0], c.w.shape[1] * c.groups) + hw, "dout")
    return kernels(c.backend).conv_transpose2d_backward(
        dout, c.x, c.w, c.has_bias, c.stride, c.padding, c.output_padding, c.dilation, c.groups,
        c.saved, need_dx)


def conv2d_memory(input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1, itemsize=4,
                  backend=None):
    """Bytes ``(kept, workspace)`` that :func:`conv2d` of these shapes allocates on the tier
    beyond its input and output: what it keeps for :func:`conv2d_backward`, and its scratch.

    The grouping picks the kernel as :func:`conv2d` does: a depthwise convolution unfolds nothing;
    each group of a grouped one is a convolution of its own (their kept columns add up, their
    scratch is reused). ``backend`` None is the default tier.
    """
    n, c, h, wd = (int(v) for v in input_shape)
    k, cg, fh, fw = (int(v) for v in weight_shape)
    stride, pads, dilation, _ = _conv_geometry((n, c, h, wd), (fh, fw), stride, padding, dilation)
    if groups > 1 and groups == c:
        return 0, 0
    kept, work = kernels(resolve(backend)).conv2d_memory((n, c // groups, h, wd),
                                                         (k // groups, cg, fh, fw), stride, pads,
                                                         dilation, itemsize)
    return groups * kept, work


def im2col(x, kernel_size, stride=1, padding=0, dilation=1, backend=None):
    """Unfold receptive fields: x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout).

    Row ``(c*FH + fy)*FW + fx`` holds channel c at kernel offset (fy, fx) (input row
    ``oh*sh + fy*dh - top``); column ``(n*Hout + oh)*Wout + ow`` is output position (oh, ow) of
    image n. Hence ``w.reshape(K, -1) @ cols`` reshaped to (K, N, Hout, Wout) is the convolution.
    """
    name = resolve(backend, x)
    x = _array(x, "x")
    _ndim4(x, "x", "(N, C, H, W)")
    kernel = pair(kernel_size, "kernel_size")
    stride, pads, dilation, _ = _conv_geometry(x.shape, kernel, stride, padding, dilation)
    return kernels(name).im2col(x, kernel, stride, pads, dilation)


def col2im(cols, input_shape, kernel_size, stride=1, padding=0, dilation=1, backend=None):
    """The adjoint of :func:`im2col`: cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W), overlaps summed."""
    name = resolve(backend, cols)
    cols = _array(cols, "cols")
    shape = _shape4(input_shape)
    kernel = pair(kernel_size, "kernel_size")
    stride, pads, dilation, (ho, wo) = _conv_geometry(shape, kernel, stride, padding, dilation)
    _same_shape(cols, (shape[1] * kernel[0] * kernel[1], shape[0] * ho * wo), "cols")
    return kernels(name).col2im(cols, shape, kernel, stride, pads, dilation)
