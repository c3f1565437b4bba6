"""fastconv: a from-scratch convolutional-network engine whose hot paths are Numba JIT kernels."""
from . import datasets, functional, losses, optim
from ._backend import get_backend, set_backend, to_device, to_numpy
from ._grad import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, MaxPool2d,
                     Module, Parameter, ReLU, Sequential, Sigmoid, Tanh, manual_seed)
from .layers import (ELU, GELU, SELU, Hardtanh, Identity, LeakyReLU, LogSoftmax, PReLU, SiLU, Softmax,
                     Softplus)
from .layers import GroupNorm, LayerNorm
from .layers import Concat, Residual
from .trainer import History, Trainer

__version__ = "0.1.0"
__all__ = ["datasets", "functional", "losses", "optim", "get_backend", "set_backend", "to_device", "to_numpy"]
__all__ += ["no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled"]
__all__ += ["AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout", "Flatten", "Linear", "MaxPool2d",
            "Module", "Parameter", "ReLU", "Sigmoid", "Tanh", "manual_seed", "Sequential"]
__all__ += ["Trainer", "History"]
__all__ += ["LeakyReLU", "ELU", "SELU", "GELU", "SiLU", "Softplus", "Hardtanh", "PReLU", "Softmax",
            "LogSoftmax", "Identity"]
__all__ += ["GroupNorm", "LayerNorm"]
__all__ += ["Residual", "Concat"]
