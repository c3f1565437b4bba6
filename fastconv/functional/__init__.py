"""The functional API: validate once, pick the tier, call it.

Arrays are NCHW. Every function takes ``backend=None`` ("naive", "cpu" or "cuda"); None means a
device array's own backend, else :func:`fastconv.get_backend`. Inputs may be any real array:
float32 and float64 are kept, other real dtypes become float32, complex is a ``TypeError``;
weights and gradients are used in the input's dtype. Non-contiguous views are accepted.
Bad shapes raise ``ValueError`` naming them, before any kernel runs.
"""
from .activation import relu, relu_backward, sigmoid, sigmoid_backward, tanh, tanh_backward
from .activation import (elu, elu_backward, gelu, gelu_backward, hardtanh, hardtanh_backward,
                         leaky_relu, leaky_relu_backward, log_softmax, log_softmax_backward, prelu,
                         prelu_backward, selu, selu_backward, silu, silu_backward, softmax,
                         softmax_backward, softplus, softplus_backward)
from .combine import add, cat, split
from .conv import (ConvCache, ConvTransposeCache, col2im, conv2d, conv2d_backward, conv2d_memory,
                   conv_transpose2d, conv_transpose2d_backward, im2col)
from .dropout import dropout, dropout2d, dropout2d_backward, dropout_backward
from .linear import LinearCache, linear, linear_backward
from .loss import binary_cross_entropy_with_logits, cross_entropy, mse_loss, nll_loss
from .normalization import BatchNormCache, batch_norm, batch_norm_backward
from .pooling import (adaptive_avg_pool2d, adaptive_avg_pool2d_backward, adaptive_max_pool2d,
                      adaptive_max_pool2d_backward, avg_pool2d, avg_pool2d_backward, max_pool2d,
                      max_pool2d_backward, max_unpool2d, max_unpool2d_backward)
from .padding import pad, pad_backward
from .normalization import NormCache, group_norm, group_norm_backward, layer_norm, layer_norm_backward

__all__ = ["conv2d", "conv2d_backward", "im2col", "col2im", "max_pool2d", "max_pool2d_backward",
           "avg_pool2d", "avg_pool2d_backward", "relu", "relu_backward", "sigmoid",
           "sigmoid_backward", "tanh", "tanh_backward", "linear", "linear_backward", "dropout",
           "dropout_backward", "dropout2d", "dropout2d_backward", "cross_entropy", "nll_loss",
           "binary_cross_entropy_with_logits", "mse_loss", "batch_norm", "batch_norm_backward"]

__all__ += ["adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "adaptive_max_pool2d",
            "adaptive_max_pool2d_backward", "max_unpool2d", "max_unpool2d_backward"]
__all__ += ["ConvCache", "LinearCache", "BatchNormCache"]
__all__ += ["conv_transpose2d", "conv_transpose2d_backward", "ConvTransposeCache", "pad", "pad_backward"]
__all__ += ["conv2d_memory"]
__all__ += ["leaky_relu", "leaky_relu_backward", "elu", "elu_backward", "selu", "selu_backward", "gelu",
            "gelu_backward", "silu", "silu_backward", "softplus", "softplus_backward", "hardtanh",
            "hardtanh_backward", "prelu", "prelu_backward", "softmax", "softmax_backward",
            "log_softmax", "log_softmax_backward"]
__all__ += ["group_norm", "group_norm_backward", "layer_norm", "layer_norm_backward", "NormCache"]
__all__ += ["add", "cat", "split"]
