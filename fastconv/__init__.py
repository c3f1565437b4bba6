"""fastconv: a from-scratch convolutional-network engine whose hot paths are Numba JIT kernels."""
from . import data, datasets, functional, init, losses, optim, transforms, utils, viz
from ._backend import get_backend, set_backend, to_device, to_numpy
from ._grad import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .kernels._workers import get_num_threads, set_num_threads
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Dropout2d, Flatten, Linear, MaxPool2d,
                     Module, Parameter, ReLU, Sequential, Sigmoid, Tanh, manual_seed)
from .layers import AdaptiveAvgPool2d, AdaptiveMaxPool2d, MaxUnpool2d
from .layers import ConvTranspose2d
from .layers import CircularPad2d, ConstantPad2d, ReflectionPad2d, ReplicationPad2d, ZeroPad2d
from .layers import (ELU, GELU, SELU, Hardtanh, Identity, LeakyReLU, LogSoftmax, PReLU, SiLU, Softmax,
                     Softplus)
from .layers import GroupNorm, LayerNorm
from .layers import Concat, Residual
from .trainer import History, Trainer
from .ensemble import Ensemble

__version__ = "0.1.0"
__all__ = ["data", "datasets", "functional", "init", "losses", "optim", "transforms", "utils", "viz", "get_backend", "set_backend", "to_device", "to_numpy"]
__all__ += ["no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled", "get_num_threads", "set_num_threads"]
__all__ += ["AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout", "Dropout2d", "Flatten", "Linear", "MaxPool2d",
            "Module", "Parameter", "ReLU", "Sigmoid", "Tanh", "manual_seed", "Sequential"]
__all__ += ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "MaxUnpool2d"]
__all__ += ["Trainer", "History", "Ensemble"]
__all__ += ["ConvTranspose2d", "ZeroPad2d", "ConstantPad2d", "ReflectionPad2d", "ReplicationPad2d",
            "CircularPad2d"]
__all__ += ["LeakyReLU", "ELU", "SELU", "GELU", "SiLU", "Softplus", "Hardtanh", "PReLU", "Softmax",
            "LogSoftmax", "Identity"]
__all__ += ["GroupNorm", "LayerNorm"]
__all__ += ["Residual", "Concat"]
