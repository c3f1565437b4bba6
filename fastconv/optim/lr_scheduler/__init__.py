"""Learning-rate schedulers with torch.optim.lr_scheduler's semantics.

Every scheduler uses PyTorch's chainable (recursive) form, operation for
operation, so each step sets the same learning rate as torch's, bit for bit,
and schedulers compose with each other and with changes made to
``group["lr"]`` from outside. Construction performs the initial step
(``last_epoch`` becomes 0). Call ``step()`` after the optimizer's step:
once per epoch, or once per batch for :class:`OneCycleLR`. ``step()`` takes
no ``epoch`` argument (deprecated in PyTorch); the closed forms serve
:class:`SequentialLR`'s milestones, as in PyTorch.

``state_dict()`` is every attribute but the optimizer (deep-copied, Python
scalars, lists and dicts only, so :func:`fastconv.optim.flatten_state` can
store it); :class:`LambdaLR` saves its lambdas' ``__dict__`` only when they
are callable objects (functions and lambdas are not saved), as PyTorch.
"""
from .base import LRScheduler
from .one_cycle import OneCycleLR
from .plateau import ReduceLROnPlateau
from .schedules import (CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR, MultiStepLR,
                        SequentialLR, StepLR)

__all__ = ["LRScheduler", "LambdaLR", "StepLR", "MultiStepLR", "LinearLR", "ExponentialLR",
           "SequentialLR", "CosineAnnealingLR", "OneCycleLR", "ReduceLROnPlateau"]
