"""Layers with PyTorch's names: each a :class:`Module` with ``forward(x) -> y`` and ``backward(dy) -> dx``.

A layer keeps only bookkeeping (shape checks, the cache between forward and backward); the
arithmetic is :mod:`fastconv.functional`'s, so a layer works with whatever array type F returns
(NumPy arrays, or Numba CUDA device arrays once :meth:`Module.to` has moved the model with
``"cuda"``; F picks the tier from the arrays it is handed).

Conventions
-----------
* Parameters are :class:`Parameter` objects with PyTorch's shapes (``Conv2d.weight`` is
  ``(out, in, FH, FW)``, ``Linear.weight`` is ``(out, in)``), float32 unless ``dtype`` says
  otherwise. Layers with parameters cast their input to the parameter dtype (as Keras does);
  use :meth:`Module.to` (``np.float64``) for float64 work such as gradient checks.
* ``backward`` accumulates into ``.grad`` (``grad += g``, or a fresh copy when ``grad`` is None,
  which is what optimizers' ``zero_grad`` leaves; on the device ``grad += g`` is the tier's
  ``axpby`` and the tier's gradient, a fresh device array, is kept as it is) and returns the input
  gradient. Layers never update their own weights.
* Devices: ``model.to("cuda")`` moves every parameter and floating buffer to the GPU (the
  simulator's with ``NUMBA_ENABLE_CUDASIM=1``), ``to("cpu")`` brings them back; a parameter's
  :attr:`Parameter.device` follows its array. A layer with parameters on the device copies a host
  input there once (:meth:`Module._input`); activations, caches and gradients then stay there.
* Initialisation: PyTorch's defaults, so a model starts where its PyTorch twin would: Conv2d and
  Linear weights ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
  ``fan_in = in * FH * FW`` (conv) or ``in`` (linear), and biases from the same distribution.
  Every layer that draws random numbers takes ``rng`` (a ``np.random.Generator`` or an int
  seed); without one it draws from the module's default generator, which :func:`manual_seed`
  resets, so ``manual_seed(0)`` followed by building a model gives the same weights every time.
* ``input_grad``: when False, ``backward`` skips the input gradient and returns None (Conv2d and
  Linear pass ``need_dx=False`` to F, saving the largest product of a network's first layer).
  Set it only on a network's first layer; :class:`fastconv.Sequential` decides this by itself
  from its own ``input_grad`` and ignores the attribute of the layers it holds.
"""
from .activation import ReLU, Sigmoid, Tanh
from .activation import (ELU, GELU, SELU, Hardtanh, Identity, LeakyReLU, LogSoftmax, PReLU, SiLU,
                         Softmax, Softplus)
from .container import Sequential
from .container import Concat, Residual
from .conv import Conv2d, ConvTranspose2d
from .dropout import Dropout, Dropout2d
from .flatten import Flatten
from .linear import Linear
from .module import Module, Parameter, manual_seed
from .normalization import BatchNorm1d, BatchNorm2d
from .normalization import GroupNorm, LayerNorm
from .padding import CircularPad2d, ConstantPad2d, ReflectionPad2d, ReplicationPad2d, ZeroPad2d
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d, MaxUnpool2d

__all__ = ["Parameter", "Module", "manual_seed", "Sequential", "Conv2d", "Linear", "MaxPool2d",
           "AvgPool2d", "ReLU", "Sigmoid", "Tanh", "Flatten", "Dropout", "Dropout2d",
           "BatchNorm1d", "BatchNorm2d"]
__all__ += ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "MaxUnpool2d"]
__all__ += ["ConvTranspose2d", "ZeroPad2d", "ConstantPad2d", "ReflectionPad2d", "ReplicationPad2d",
            "CircularPad2d"]
__all__ += ["LeakyReLU", "ELU", "SELU", "GELU", "SiLU", "Softplus", "Hardtanh", "PReLU", "Softmax",
            "LogSoftmax", "Identity"]
__all__ += ["GroupNorm", "LayerNorm"]
__all__ += ["Residual", "Concat"]
