"""cpu grouped convolution: the dense path per group; depthwise layers (``groups == C``) take
the direct kernels of :mod:`.depthwise`, re-exported here as the family's contract names.

``1 < groups < C``: each group is a dense convolution (im2col + GEMM, :mod:`.conv`) of a
contiguous copy of its channel slice; the outputs and gradients are copied into their slices.
"""
import numpy as np

from ..._shapes import conv_output_hw
from .._memory import empty
from .conv import conv2d, conv2d_backward
from .depthwise import depthwise_conv2d, depthwise_conv2d_backward

__all__ = ["grouped_conv2d", "grouped_conv2d_backward", "depthwise_conv2d",
           "depthwise_conv2d_backward"]


def _slices(c, k, groups):
    cg, kg = c // groups, k // groups
    return [(slice(g * cg, (g + 1) * cg), slice(g * kg, (g + 1) * kg)) for g in range(groups)]


def grouped_conv2d(x, w, b, stride, pads, dilation, groups):
    """x (N, C, H, W), w (K, C/groups, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).

    ``saved`` lists each group's state from :func:`.conv.conv2d`.
    """
    ho, wo = conv_output_hw(x.shape[2:], w.shape[2:], stride, pads, dilation)
    out = empty((x.shape[0], w.shape[0], ho, wo), dtype=x.dtype)
    saved = []
    for cs, ks in _slices(x.shape[1], w.shape[0], groups):
        og, sg = conv2d(np.ascontiguousarray(x[:, cs]), w[ks], None if b is None else b[ks],
                        stride, pads, dilation)
        out[:, ks] = og
        saved.append(sg)
    return out, saved


def grouped_conv2d_backward(dout, x, w, has_bias, stride, pads, dilation, groups, saved, need_dx):
    """Gradients of :func:`grouped_conv2d`: dout (N, K, Hout, Wout) -> (dx or None, dw, db or None)."""
    dx = empty(x.shape, dtype=x.dtype) if need_dx else None
    dw = np.empty_like(w)
    db = np.empty(w.shape[0], dtype=w.dtype) if has_bias else None
    for g, (cs, ks) in enumerate(_slices(x.shape[1], w.shape[0], groups)):
        dxg, dw[ks], dbg = conv2d_backward(np.ascontiguousarray(dout[:, ks]),
                                           np.ascontiguousarray(x[:, cs]), w[ks], has_bias,
                                           stride, pads, saved[g], need_dx, dilation)
        if need_dx:
            dx[:, cs] = dxg
        if has_bias:
            db[ks] = dbg
    return dx, dw, db
