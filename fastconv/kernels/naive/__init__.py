"""The naive tier: Python loops over images and output positions, one small NumPy product per window.

This is how the tutorials write a conv net. It is slow and obviously right: it is the oracle the
other tiers are tested against and the baseline the benchmarks measure them against.

Every tier implements the same functions with the same signatures, one file per op family with
the same file names in every tier (``conv``, ``pooling``, ``activation``, ``linear``, ``dropout``,
``loss``, ``normalization``). The arguments arrive validated by :mod:`fastconv.functional`: arrays
are C-contiguous and share one float dtype, ``stride`` is ``(sh, sw)``, ``pads`` is ``(top,
bottom, left, right)``, kernels are ``(kh, kw)``.
"""
from .activation import relu, relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward
from .activation import (activate, activate_backward, prelu, prelu_backward, softmax,
                         softmax_backward)
from .combine import add, concat, split
from .conv import col2im, conv2d, conv2d_backward, conv2d_memory, im2col
from .conv_transpose import conv_transpose2d, conv_transpose2d_backward
from .dropout import dropout, dropout2d, dropout2d_backward, dropout_backward
from .grouped import (depthwise_conv2d, depthwise_conv2d_backward, grouped_conv2d,
                      grouped_conv2d_backward)
from .linear import linear, linear_backward
from .loss import (binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss,
                   softmax_cross_entropy)
from .normalization import batch_norm, batch_norm_backward
from .pooling import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, adaptive_max_pool2d,
                      avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward, max_unpool2d,
                      max_unpool2d_backward)
from .padding import pad, pad_backward
from .normalization import group_norm, group_norm_backward

__all__ = ["batch_norm", "batch_norm_backward", "conv2d", "conv2d_backward", "im2col", "col2im",
           "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "relu",
           "relu_backward", "sigmoid", "sigmoid_backward", "tanh", "tanh_backward", "linear",
           "linear_backward", "dropout", "dropout_backward", "dropout2d",
           "dropout2d_backward", "softmax_cross_entropy", "cross_entropy",
           "nll_loss", "binary_cross_entropy_with_logits", "mse_loss"]
__all__ += ["adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d", "max_unpool2d",
            "max_unpool2d_backward"]
__all__ += ["grouped_conv2d", "grouped_conv2d_backward", "depthwise_conv2d",
            "depthwise_conv2d_backward", "conv_transpose2d", "conv_transpose2d_backward", "pad",
            "pad_backward"]
__all__ += ["activate", "activate_backward", "prelu", "prelu_backward", "softmax",
            "softmax_backward", "group_norm", "group_norm_backward", "add", "concat",
            "split"]
