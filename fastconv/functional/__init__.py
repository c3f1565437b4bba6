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
from .conv import ConvCache, col2im, conv2d, conv2d_backward, im2col
from .dropout import dropout, dropout_backward
from .linear import LinearCache, linear, linear_backward
from .loss import cross_entropy
from .normalization import BatchNormCache, batch_norm, batch_norm_backward
from .normalization import NormCache, group_norm, group_norm_backward, layer_norm, layer_norm_backward
from .pooling import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

__all__ = ["conv2d", "conv2d_backward", "im2col", "col2im", "max_pool2d", "max_pool2d_backward",
           "avg_pool2d", "avg_pool2d_backward", "relu", "relu_backward", "sigmoid",
           "sigmoid_backward", "tanh", "tanh_backward", "linear", "linear_backward", "dropout",
           "dropout_backward", "cross_entropy", "batch_norm", "batch_norm_backward"]

__all__ += ["ConvCache", "LinearCache", "BatchNormCache"]
__all__ += ["leaky_relu", "leaky_relu_backward", "elu", "elu_backward", "selu", "selu_backward", "gelu",
            "gelu_backward", "silu", "silu_backward", "softplus", "softplus_backward", "hardtanh",
            "hardtanh_backward", "prelu", "prelu_backward", "softmax", "softmax_backward",
            "log_softmax", "log_softmax_backward"]
__all__ += ["group_norm", "group_norm_backward", "layer_norm", "layer_norm_backward", "NormCache"]
__all__ += ["add", "cat", "split"]
