"""The cpu tier: Numba kernels for the data movement, NumPy's BLAS for the products.

One file per op family of :mod:`fastconv.kernels.contract`, the same names as in every tier
(``elementwise`` and ``optim`` are the NumPy helpers both host tiers share,
:mod:`fastconv.kernels._host` and :mod:`fastconv.kernels._host_optim`); ``_common`` holds what
the files share: the tunable thresholds, the BLAS products and the splits across threads.

Threads: the conv layers split the batch across Python threads that each run single-threaded
BLAS and ``nogil`` kernels on a block of images at a time (see :mod:`fastconv.kernels._workers`),
so the block stays in cache from im2col to GEMM to layout and BLAS never spins against Numba;
Linear shares the blocks of its products the same way. The other kernels run on the same
threads, each on a range of images, channels or elements. The blocks depend only on the shapes
and partial sums are added in block order, so every thread count gives the same bits. No kernel
is ``parallel=True``: Numba's OpenMP workers busy-wait after each kernel on the core a pool
thread needs next (what that cost: ``benchmarks/results-2026-12-cpu-overheads.md``). Large
outputs come from :mod:`fastconv.kernels._memory`, so repeated calls reuse memory that is
already mapped instead of faulting in fresh pages.
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
