"""Optimizers and learning-rate schedulers with torch.optim's names and semantics.

See :mod:`fastconv.optim.optimizer` for the parameter, backend, regulariser
and checkpoint contracts shared by every optimizer, and
:mod:`fastconv.optim.lr_scheduler` for the schedulers (also importable from
here).
"""

from . import lr_scheduler
from .adagrad import Adagrad, adagrad_update
from .adam import Adam, AdamW, adam_update
from .lr_scheduler import (CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR, LRScheduler,
                           MultiStepLR, OneCycleLR, ReduceLROnPlateau, SequentialLR, StepLR)
from .optimizer import Optimizer
from .rmsprop import RMSprop, rmsprop_update
from .serialization import flatten_state, unflatten_state
from .sgd import SGD, sgd_update

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
           "LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "LinearLR", "ExponentialLR",
           "SequentialLR", "CosineAnnealingLR", "OneCycleLR", "ReduceLROnPlateau",
           "sgd_update", "adam_update", "rmsprop_update", "adagrad_update",
           "flatten_state", "unflatten_state", "lr_scheduler"]
