"""fastconv: a from-scratch convolutional-network engine whose hot paths are Numba JIT kernels."""
from . import data, datasets, functional, init, layers, losses, optim, transforms, utils, viz
from ._backend import get_backend, set_backend, to_device, to_numpy
from ._grad import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .kernels._workers import get_num_threads, set_num_threads
from .layers import *  # noqa: F401,F403 - every name of fastconv.layers.__all__ (Module, Conv2d, ...)
from .trainer import History, Trainer
from .ensemble import Ensemble
from .fuse import fuse
from .plan import Plan, compile  # noqa: A004 - PyTorch's name, as torch.compile

__version__ = "0.1.0"
__all__ = ["data", "datasets", "functional", "init", "losses", "optim", "transforms", "utils", "viz", "get_backend", "set_backend", "to_device", "to_numpy"]
__all__ += ["no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled", "get_num_threads", "set_num_threads"]
__all__ += layers.__all__
__all__ += ["Trainer", "History", "Ensemble", "fuse", "compile", "Plan"]
