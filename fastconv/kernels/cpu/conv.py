"""cpu convolution: the one rule (:func:`algorithm`) that picks a path for each layer, its
thresholds, and the entry points that dispatch to the path.

The paths, each with its own module: :mod:`.direct` (direct accumulation, stride-1 layers of few
taps), :mod:`.winograd` (F(2x2, 3x3), stride-1 3x3 layers), :mod:`.blocked` (the generated
register-blocked micro-kernels of :mod:`.microkernel` on a blocked channel layout),
:mod:`.pointwise` (1x1 stride-1 layers: one GEMM per image on NCHW) and :mod:`.im2col_gemm`
(im2col + GEMM, every other layer; also the public ``im2col``/``col2im``).
:data:`ALGORITHM` is the one switch that forces a path; the entry points read it here.
"""
import numpy as np

from ..._shapes import conv_output_hw
from . import blocked, direct, im2col_gemm, pointwise, winograd
# what other modules and tests import from here: the im2col path's kernels and geometry
from .im2col_gemm import (GENERAL, _col2im_kernel, _Geometry, _im2col_kernel,  # noqa: F401
                          _valid_range, col2im, im2col)

#: The convolution algorithm: None lets :func:`algorithm` choose; "im2col", "winograd", "direct",
#: "pointwise" or "blocked" forces one wherever it applies (tests and benchmarks compare the
#: paths in one process).
ALGORITHM = None


def algorithm(x_shape, w_shape, stride, pads, dilation=(1, 1)):
    """The ONE rule that picks the cpu convolution path: ``"direct"``, ``"pointwise"``,
    ``"winograd"``, ``"blocked"`` or ``"im2col"``. In this order:

    1. direct (:mod:`.direct`): stride 1, undilated, at most DIRECT_TAPS taps ``C*FH*FW`` and at
       most DIRECT_PASSES passes ``C*FH*ceil(FW/3)`` over each output plane;
    1b. pointwise (:mod:`.pointwise`): 1x1 kernels at stride 1 without padding, which are one
       GEMM per image on NCHW as it is (no packing or layout pass at all; against the blocked
       path: ``benchmarks/results-2026-12-07-pointwise.md``);
    2. Winograd (:mod:`.winograd`): stride-1 undilated 3x3 kernels with output planes of at least
       2x2, at least WINO_BIG_C input and WINO_BIG_K output channels, and planes its 2x2 output
       tiles cover with at most WINO_WASTE more outputs (7x7 takes 8x8: 31% more);
    3. blocked (:mod:`.blocked`): stride 1 or 2, at least BLOCKED_C input and BLOCKED_K output
       channels, more than one tap unless the stride is 1, and a padded width (over the stride)
       under 4/3 of the output width (the blocked forward computes rows of that width);
    4. Winograd again for those 3x3 layers with at least WINO_CHANNELS input and output channels;
    5. im2col + GEMM (:mod:`.im2col_gemm`) otherwise.

    Why: with few taps im2col's GEMM has too short an inner dimension to pay for its copies, so
    direct accumulation wins; with many channels F(2x2, 3x3)'s 2.25x fewer multiplications beat
    the micro-kernels running at the FMA ceiling, while with few channels its transforms cost
    more than the GEMM saves. The blocked micro-kernels beat im2col where whole channel blocks
    fill their vectors and the padded rows they compute add little work. Sizes only, no per-CPU
    tuning (grouped and depthwise layers take their own kernels in :mod:`.grouped`). The
    measurements behind each threshold: ``benchmarks/results-2026-12-thresholds.md``; the conv2d
    and passes sections of ``python -m benchmarks.report`` time the path the rule picks, and
    setting :data:`ALGORITHM` compares the paths on one shape.
    """
    n, c, h, wd = x_shape
    k, _, fh, fw = w_shape
    ho, wo = conv_output_hw((h, wd), (fh, fw), stride, pads, dilation)
    unit = tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
    fits = (fh, fw) == (3, 3) and unit and min(ho, wo) >= 2
    if ALGORITHM is not None:
        if ALGORITHM == "winograd" and fits:
            return "winograd"
        if ALGORITHM == "blocked" and c > 0:  # every dense convolution with inputs
            return "blocked"
        if ALGORITHM == "pointwise" and c > 0 and pointwise.applies(w_shape, stride, pads):
            return "pointwise"
        return "direct" if ALGORITHM == "direct" and unit else "im2col"
    if unit and c * fh * fw <= DIRECT_TAPS and c * fh * -(-fw // 3) <= DIRECT_PASSES:
        return "direct"
    if c > 0 and pointwise.applies(w_shape, stride, pads):
        return "pointwise"
    if fits and c >= WINO_BIG_C and k >= WINO_BIG_K and \
            4 * -(-ho // 2) * -(-wo // 2) <= (1 + WINO_WASTE) * ho * wo:
        return "winograd"
    if max(stride) <= 2 and c >= BLOCKED_C and k >= BLOCKED_K and \
            (fh * fw > 1 or max(stride) == 1) and \
            3 * -(-(wd + pads[2] + pads[3]) // stride[1]) < 4 * wo:
        return "blocked"
    return "winograd" if fits and min(c, k) >= WINO_CHANNELS else "im2col"


#: Fewest input and output channels for which :func:`algorithm` picks Winograd where the
#: blocked path does not apply.
WINO_CHANNELS = 16

#: Fewest input (WINO_BIG_C) and output (WINO_BIG_K) channels for which Winograd goes before
#: the blocked path (see :func:`algorithm`).
WINO_BIG_C = 32
WINO_BIG_K = 64

#: Most extra outputs (a fraction) that Winograd's 2x2 output tiles may add for it to go before
#: the blocked path: a 7x7 plane takes 8x8 (31% more), and there the blocked path is faster
#: (``benchmarks/results-2026-12-07-segments.md``).
WINO_WASTE = 0.1

#: Fewest input and output channels for the blocked path: its weight gradient computes whole
#: blocks of input channels, and its forward whole blocks of output channels, so fewer channels
#: leave vector lanes idle (benchmarks/results-2026-12-thresholds.md).
BLOCKED_C = 8
BLOCKED_K = 16

#: Most taps ``C*FH*FW`` (the inner dimension of im2col's GEMM), and most passes over each
#: output plane ``C*FH*ceil(FW/3)`` (the direct path takes up to three taps of a kernel row per
#: pass), for which :func:`algorithm` picks the direct path at stride 1.
DIRECT_TAPS = 32
DIRECT_PASSES = 10


def conv2d_memory(x_shape, w_shape, stride, pads, dilation, itemsize):
    """Bytes ``(kept for backward, workspace)`` that :func:`conv2d` and :func:`conv2d_backward`
    allocate beyond their inputs and outputs, for :meth:`fastconv.Sequential.summary`: those of
    the path :func:`algorithm` picks."""
    path = algorithm(x_shape, w_shape, stride, pads, dilation)
    if path == "blocked":
        return blocked.memory(x_shape, w_shape, stride, pads, dilation, itemsize)
    if path == "pointwise":
        return pointwise.memory(x_shape, w_shape, itemsize)
    if path != "im2col":
        return (winograd if path == "winograd" else direct).memory(x_shape, w_shape, pads, itemsize)
    return im2col_gemm.memory(x_shape, w_shape, stride, pads, dilation, itemsize)


def conv2d(x, w, b, stride, pads, dilation=(1, 1)):
    """x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved), by
    the path :func:`algorithm` picks; ``saved`` is the im2col path's kept columns, else None."""
    path = algorithm(x.shape, w.shape, stride, pads, dilation)
    if path == "blocked":
        return blocked.conv2d(x, w, b, stride, pads, dilation)
    if path == "pointwise":
        return pointwise.conv2d(x, w, b)
    if path != "im2col":
        return (winograd if path == "winograd" else direct).conv2d(x, w, b, pads)
    return im2col_gemm.conv2d(x, w, b, stride, pads, dilation)


def conv2d_backward(dout, x, w, has_bias, stride, pads, saved, need_dx=True, dilation=(1, 1)):
    """dout (N, K, Hout, Wout) -> (dx or None, dw, db or None), by the path of :func:`conv2d`.

    Every path adds its partial sums in an order fixed by the shapes, so the result does not
    depend on the thread count.
    """
    path = algorithm(x.shape, w.shape, stride, pads, dilation)
    if path == "blocked" and need_dx and not np.isfinite(w).all():
        # the blocked dx also multiplies w by the zeros around dout: inf * 0 would make NaN
        # where the sum over the valid positions has inf; im2col adds only those (saved is None)
        path = "im2col"
    if path == "blocked":
        return blocked.conv2d_backward(dout, x, w, has_bias, stride, pads, need_dx, dilation)
    if path == "pointwise":
        return pointwise.conv2d_backward(dout, x, w, has_bias, need_dx)
    if path != "im2col":
        return (winograd if path == "winograd" else direct).conv2d_backward(
            dout, x, w, has_bias, pads, need_dx)
    return im2col_gemm.conv2d_backward(dout, x, w, has_bias, stride, pads, saved, need_dx,
                                       dilation)
