"""Naive grouped convolution: a loop over the groups, and depthwise convolution by kernel taps.

Groups split the C input and K output channels into ``groups`` equal slices; output slice g is
the convolution of input slice g with ``w[g*K/groups:(g+1)*K/groups]`` (w is (K, C/groups, FH,
FW)). Depthwise convolution is the case ``groups == C``: output channel k reads input channel
``k // m`` only, with ``m = K / C`` the channel multiplier; here it is one broadcast product per
kernel tap (fy, fx) over the whole batch.
"""
import numpy as np

from ..._shapes import conv_output_hw
from .conv import _padded, _unpad, conv2d, conv2d_backward


def _slices(c, k, groups):
    cg, kg = c // groups, k // groups
    return [(slice(g * cg, (g + 1) * cg), slice(g * kg, (g + 1) * kg)) for g in range(groups)]


def grouped_conv2d(x, w, b, stride, pads, dilation, groups):
    """x (N, C, H, W), w (K, C/groups, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), None)."""
    n_img, c = x.shape[:2]
    k = w.shape[0]
    ho, wo = conv_output_hw(x.shape[2:], w.shape[2:], stride, pads, dilation)
    out = np.zeros((n_img, k, ho, wo), dtype=x.dtype)
    for cs, ks in _slices(c, k, groups):
        out[:, ks] = conv2d(x[:, cs], w[ks], None if b is None else b[ks], stride, pads,
                            dilation)[0]
    return out, None


def grouped_conv2d_backward(dout, x, w, has_bias, stride, pads, dilation, groups, saved, need_dx):
    """Gradients of :func:`grouped_conv2d`: dout (N, K, Hout, Wout) -> (dx or None, dw, db or None)."""
    dx = np.zeros_like(x) if need_dx else None
    dw = np.zeros_like(w)
    for cs, ks in _slices(x.shape[1], w.shape[0], groups):
        dxg, dw[ks], _ = conv2d_backward(dout[:, ks], x[:, cs], w[ks], False, stride, pads, None,
                                         need_dx, dilation)
        if need_dx:
            dx[:, cs] = dxg
    return dx, dw, (dout.sum(axis=(0, 2, 3)) if has_bias else None)


def _taps(w, stride, dilation, ho, wo):
    """``(fy, fx, rows, cols)`` for each kernel tap: the slices of the padded input it reads."""
    (sh, sw), (dh, dw) = stride, dilation
    for fy in range(w.shape[2]):
        for fx in range(w.shape[3]):
            yield (fy, fx, slice(fy * dh, fy * dh + sh * (ho - 1) + 1, sh),
                   slice(fx * dw, fx * dw + sw * (wo - 1) + 1, sw))


def depthwise_conv2d(x, w, b, stride, pads, dilation):
    """x (N, C, H, W), w (m*C, 1, FH, FW), b (m*C,) or None -> (out (N, m*C, Hout, Wout), None)."""
    c, k = x.shape[1], w.shape[0]
    ho, wo = conv_output_hw(x.shape[2:], w.shape[2:], stride, pads, dilation)
    xp = np.repeat(_padded(x, pads), k // c, axis=1)  # channel k holds input channel k // m
    out = np.zeros((x.shape[0], k, ho, wo), dtype=x.dtype)
    for fy, fx, rows, cols in _taps(w, stride, dilation, ho, wo):
        out += w[:, 0, fy, fx].reshape(1, k, 1, 1) * xp[:, :, rows, cols]
    if b is not None:
        out += b.reshape(1, k, 1, 1)
    return out, None


def depthwise_conv2d_backward(dout, x, w, has_bias, stride, pads, dilation, saved, need_dx):
    """Gradients of :func:`depthwise_conv2d`: dout (N, m*C, Hout, Wout) -> (dx, dw, db)."""
    n_img, c = x.shape[:2]
    k, ho, wo = dout.shape[1:]
    xp = np.repeat(_padded(x, pads), k // c, axis=1)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for fy, fx, rows, cols in _taps(w, stride, dilation, ho, wo):
        dw[:, 0, fy, fx] = (dout * xp[:, :, rows, cols]).sum(axis=(0, 2, 3))
        if need_dx:
            dxp[:, :, rows, cols] += w[:, 0, fy, fx].reshape(1, k, 1, 1) * dout
    dx = None
    if need_dx:
        dxp = dxp.reshape(n_img, c, k // c, *dxp.shape[2:]).sum(axis=2)
        dx = np.ascontiguousarray(_unpad(dxp, pads))
    return dx, dw, (dout.sum(axis=(0, 2, 3)) if has_bias else None)
