"""fastconv: a from-scratch convolutional-network engine whose hot paths are Numba JIT kernels."""
from . import datasets, functional, init, losses, optim, transforms, utils
from ._backend import get_backend, set_backend, to_device, to_numpy
from ._grad import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Dropout2d, Flatten, Linear, MaxPool2d,
                     Module, Parameter, ReLU, Sequential, Sigmoid, Tanh, manual_seed)
from .trainer import History, Trainer
from .ensemble import Ensemble

__version__ = "0.1.0"
__all__ = ["datasets", "functional", "init", "losses", "optim", "transforms", "utils", "get_backend", "set_backend", "to_device", "to_numpy"]
__all__ += ["no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled"]
__all__ += ["AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Dropout", "Dropout2d", "Flatten", "Linear", "MaxPool2d",
            "Module", "Parameter", "ReLU", "Sigmoid", "Tanh", "manual_seed", "Sequential"]
__all__ += ["Trainer", "History", "Ensemble"]
