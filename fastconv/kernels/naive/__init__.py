"""The naive tier: Python loops over images and output positions, one small NumPy product per window.

This is how the tutorials write a conv net. It is slow and obviously right: it is the oracle the
other tiers are tested against and the baseline the benchmarks measure them against.

Every tier implements the functions of :mod:`fastconv.kernels.contract` with its signatures, one
file per op family with the same file names in every tier; the ``elementwise`` and ``optim``
families are the NumPy helpers and optimizer updates both host tiers share
(:mod:`fastconv.kernels._host`, :mod:`fastconv.kernels._host_optim`).
"""
from ..contract import NAMES
from .._host import axpby, clamp, full, scale_rows, zeros_like
from .._host_optim import adagrad_update, adam_update, rmsprop_update, sgd_update
from .activation import (activate, activate_backward, prelu, prelu_backward, relu, relu_backward,
                         sigmoid, sigmoid_backward, softmax, softmax_backward, tanh, tanh_backward)
from .combine import add, concat, split
from .conv import col2im, conv2d, conv2d_backward, conv2d_memory, im2col
from .conv_transpose import conv_transpose2d, conv_transpose2d_backward
from .dropout import dropout, dropout2d, dropout2d_backward, dropout_backward
from .grouped import (depthwise_conv2d, depthwise_conv2d_backward, grouped_conv2d,
                      grouped_conv2d_backward)
from .linear import linear, linear_backward
from .loss import (binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss,
                   softmax_cross_entropy)
from .normalization import batch_norm, batch_norm_backward, group_norm, group_norm_backward
from .padding import pad, pad_backward
from .pooling import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, adaptive_max_pool2d,
                      avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward, max_unpool2d,
                      max_unpool2d_backward)

__all__ = list(NAMES)
