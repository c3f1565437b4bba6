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
  (He normal, ``std = sqrt(2 / fan_in)``, started the lenet MNIST net at a loss of 7 instead of
  2.3 and trained it worse.) Every layer that
  draws random numbers takes ``rng`` (a ``np.random.Generator`` or an int seed); without one it
  draws from the module's default generator, which :func:`manual_seed` resets, so
  ``manual_seed(0)`` followed by building a model gives the same weights every time.
* ``input_grad``: when False, ``backward`` skips the input gradient and returns None (Conv2d and
  Linear pass ``need_dx=False`` to F, saving the largest product of a network's first layer).
  Set it only on a network's first layer; :class:`fastconv.Sequential` decides this by itself
  from its own ``input_grad`` and ignores the attribute of the layers it holds.
"""
import math
import numbers
from collections import namedtuple

import numpy as np

from . import functional as F
from ._backend import is_device_array, kernels, to_device, to_numpy
from ._shapes import conv_output_hw, conv_padding, pair, pool_output_hw

__all__ = ["Parameter", "Module", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "Sigmoid", "Tanh",
           "Flatten", "Linear", "Dropout", "BatchNorm1d", "BatchNorm2d", "manual_seed"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_DEVICES = ("cpu", "cuda")
_default = {"rng": np.random.default_rng()}

IncompatibleKeys = namedtuple("IncompatibleKeys", "missing_keys unexpected_keys")


def manual_seed(seed):
    """Reset the default generator that layers built without ``rng`` draw from.

    Until the first call it is seeded from OS entropy (NumPy's default), so unseeded models differ.
    """
    _default["rng"] = np.random.default_rng(seed)


def _generator(rng):
    if rng is None:
        return _default["rng"]
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")


def _float_dtype(dtype):
    if dtype is None:
        raise TypeError("dtype must be float32 or float64, got None")
    dt = np.dtype(dtype)
    if dt not in _FLOATS:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _positive(v, name):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def _uniform_init(shape, fan_in, dtype, rng):
    """PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. ``kaiming_uniform_(a=sqrt(5))``.

    Drawn in float64, so the same seed gives the same values in either dtype.
    """
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(dtype)


def _move(a, device):
    """``a`` on ``device`` ("cpu" or "cuda"); the same object when it is there already."""
    if (device == "cuda") == is_device_array(a):
        return a
    return to_device(a) if device == "cuda" else to_numpy(a)


def _astype(a, dtype):
    """``a`` in ``dtype`` on its own device (no copy when the dtype matches)."""
    if np.dtype(a.dtype) == dtype:
        return a
    if is_device_array(a):
        return to_device(a.copy_to_host().astype(dtype))
    return a.astype(dtype)


def _accumulate(param, g):
    if param.grad is None:
        param.grad = g if is_device_array(g) else g.copy()  # the tier's fresh device array
    elif is_device_array(param.grad):
        kernels("cuda").axpby(param.grad, g, 1, 1)  # grad = grad * 1 + g * 1, in place
    else:
        param.grad += g


class Parameter:
    """A trainable array: ``data`` and its gradient ``grad`` (None until a backward)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data if is_device_array(data) else np.asarray(data)
        self.grad = None

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return np.dtype(self.data.dtype)

    @property
    def size(self):
        return math.prod(self.shape)

    @property
    def device(self):
        """``"cuda"`` when ``data`` is a device array, else ``"cpu"``."""
        return "cuda" if is_device_array(self.data) else "cpu"

    def __repr__(self):
        device = ", device='cuda'" if self.device == "cuda" else ""
        return f"Parameter(shape={self.shape}, dtype={self.dtype}{device})"


class Module:
    """Base class: parameters, buffers, train/eval mode, state dicts, dtype conversion.

    Subclasses name their parameters in ``_param_names`` and their buffers (arrays saved in the
    state dict but not trained, such as BatchNorm's running statistics) in ``_buffer_names``,
    and implement ``forward(x)``, ``_backward(dy, need_dx)`` and ``output_shape(shape)``.
    """

    _param_names = ()
    _buffer_names = ()
    input_grad = True

    def __init__(self):
        self.training = True

    # -- computation -------------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    def backward(self, dy):
        """Accumulate parameter gradients; return dL/dx (None when ``input_grad`` is False)."""
        return self._backward(dy, self.input_grad)

    def _backward(self, dy, need_dx):
        raise NotImplementedError

    def output_shape(self, shape):
        """The output shape for an input of ``shape``; raises ValueError naming the layer if invalid."""
        return tuple(shape)

    def _memory(self, in_shape, out_shape, itemsize):
        """Bytes ``(output, kept for backward, im2col workspace)`` for one forward/backward."""
        return math.prod(out_shape) * itemsize, 0, 0

    def _label(self):
        return repr(self)

    def _cached(self, cache):
        if cache is None:
            raise RuntimeError(f"{self._label()}: backward called before forward")
        return cache

    def _input(self, x):
        """x as a real array in this layer's parameter dtype, on its device (device arrays pass
        through; a host input to a layer on the device is copied there once)."""
        if is_device_array(x):
            return x
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{self._label()}: input must be a real numeric array, got dtype {x.dtype}")
        dtype = self.weight.dtype
        x = x if x.dtype == dtype else x.astype(dtype)
        return to_device(x) if self.weight.device == "cuda" else x

    # -- structure ---------------------------------------------------------------------------
    def named_children(self):
        return []

    def modules(self):
        """This module and every module inside it, depth first."""
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def train(self, mode=True):
        """Set training mode (batch statistics, dropout on) here and below; returns self."""
        self.training = bool(mode)
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self):
        """Set evaluation mode (running statistics, dropout off); returns self."""
        return self.train(False)

    def named_parameters(self, prefix=""):
        """``(name, Parameter)`` pairs named as PyTorch names them (``"0.weight"``, ...)."""
        return [(name, p) for name, p, _, _ in self._entries(prefix) if isinstance(p, Parameter)]

    def parameters(self):
        """The list of :class:`Parameter` objects, in :meth:`named_parameters` order."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix=""):
        return [(name, b) for name, b, _, _ in self._entries(prefix) if not isinstance(b, Parameter)]

    def _entries(self, prefix=""):
        """``(key, value, owner, attr)`` in state-dict order: own parameters, own buffers, children."""
        out = []
        for attr in self._param_names + self._buffer_names:
            value = getattr(self, attr)
            if value is not None:
                out.append((prefix + attr, value, self, attr))
        for name, child in self.named_children():
            out.extend(child._entries(f"{prefix}{name}."))
        return out

    def zero_grad(self):
        """Set every parameter's gradient to None."""
        for p in self.parameters():
            p.grad = None

    @property
    def device(self):
        """``"cuda"`` or ``"cpu"``: where the first parameter lives ("cpu" without parameters)."""
        params = self.parameters()
        return params[0].device if params else "cpu"

    # -- state -------------------------------------------------------------------------------
    def state_dict(self):
        """``{key: NumPy array}`` with PyTorch's keys (buffers included); values are copies, on the
        host whatever the module's device."""
        return {key: np.array(to_numpy(v.data if isinstance(v, Parameter) else v))
                for key, v, _, _ in self._entries()}

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers, cast to their dtypes (as PyTorch).

        On a module on the device the arrays are copied into its device arrays.
        Every key and shape is checked before anything changes; on a problem a ValueError lists
        the missing and unexpected keys (``strict=False`` allows those) and each shape mismatch
        with both shapes, and the module is left untouched.
        Returns ``IncompatibleKeys(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of key -> array, got {type(state_dict).__name__}")
        entries = {key: (value, owner, attr) for key, value, owner, attr in self._entries()}
        missing = [k for k in entries if k not in state_dict]
        unexpected = [k for k in state_dict if k not in entries]
        problems, ready = [], []
        for key in entries:
            if key not in state_dict:
                continue
            value, owner, attr = entries[key]
            try:
                arr = np.asarray(state_dict[key])
            except Exception as exc:  # noqa: BLE001 - report any unconvertible value by key
                problems.append(f"{key}: cannot be read as an array ({exc})")
                continue
            if arr.dtype.kind not in "biuf":
                problems.append(f"{key}: dtype {arr.dtype} is not a real numeric type")
            elif tuple(arr.shape) != tuple(value.shape):
                problems.append(f"size mismatch for {key}: checkpoint has shape {tuple(arr.shape)}, "
                                f"the model has {tuple(value.shape)}")
            else:
                ready.append((value, owner, attr, arr))
        if strict and (missing or unexpected):
            problems[:0] = [f"missing keys: {missing}"] * bool(missing) + \
                           [f"unexpected keys: {unexpected}"] * bool(unexpected)
        if problems:
            raise ValueError(f"cannot load state dict into {type(self).__name__}: " + "; ".join(problems))
        for value, owner, attr, arr in ready:
            target = value.data if isinstance(value, Parameter) else value
            if is_device_array(target):
                target.copy_to_device(np.ascontiguousarray(arr, dtype=target.dtype))
            elif isinstance(value, Parameter):
                np.copyto(value.data, arr, casting="unsafe")
            else:
                setattr(owner, attr, arr.astype(value.dtype, copy=True))
        return IncompatibleKeys(missing, unexpected)

    def to(self, dtype_or_device):
        """Move to a device, or convert to a dtype; returns self (the Parameter objects stay the
        same, their ``.data`` is replaced).

        A device is ``"cpu"`` or ``"cuda"``: every parameter's ``.data`` and every floating buffer
        (BatchNorm's running statistics) is copied there, and the gradients of moved parameters
        reset to None (as after ``zero_grad``); integer buffers (``num_batches_tracked``, a counter
        the layer keeps) stay on the host. ``"cuda"`` with neither a GPU nor the simulator raises
        the cuda tier's RuntimeError, before anything moves. A dtype is float32 or float64
        (``to(np.float64)`` is PyTorch's ``.double()``); parameters, grads and floating buffers
        are converted on their device. Move or convert before building an optimizer: its state
        buffers keep the device and dtype they were made in.
        """
        arg = dtype_or_device
        if isinstance(arg, str):
            if arg not in _DEVICES:
                raise ValueError(f"unknown device {arg!r}: choose one of {', '.join(_DEVICES)} "
                                 "(for a dtype pass np.float32 or np.float64)")
            if arg == "cuda":
                kernels("cuda")  # the tier's clear error when there is no GPU and no simulator
            for _, value, owner, attr in self._entries():
                if isinstance(value, Parameter):
                    if value.device != arg:
                        value.data, value.grad = _move(value.data, arg), None
                elif np.dtype(value.dtype).kind == "f":
                    setattr(owner, attr, _move(value, arg))
            return self
        dt = _float_dtype(arg)
        for _, value, owner, attr in self._entries():
            if isinstance(value, Parameter):
                value.data = _astype(value.data, dt)
                if value.grad is not None:
                    value.grad = _astype(value.grad, dt)
            elif np.dtype(value.dtype).kind == "f":
                setattr(owner, attr, _astype(value, dt))
        return self

    def __repr__(self):
        return f"{type(self).__name__}()"


# --- layers with weights -----------------------------------------------------------------------

class Conv2d(Module):
    """2-D convolution, ``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True)``.

    x (N, in, H, W) -> (N, out, Hout, Wout), ``Hout = (H + 2*ph - FH) // sh + 1``.
    ``padding`` is an int, an (h, w) pair, "valid" or "same" (stride 1). ``weight`` is
    (out, in, FH, FW), He-normal; ``bias`` (out,) zeros, or None with ``bias=False``.
    ``input_grad`` (default True): when False, backward computes only the parameter gradients
    and returns None (see the module docstring).
    """

    _param_names = ("weight", "bias")

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 rng=None, dtype=np.float32):
        super().__init__()
        self.in_channels = _positive(in_channels, "in_channels")
        self.out_channels = _positive(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size!r}, {stride!r}")
        conv_padding(padding, self.kernel_size, self.stride)  # validates
        self.padding = padding.lower() if isinstance(padding, str) else pair(padding, "padding")
        self.input_grad = True
        fh, fw = self.kernel_size
        shape = (self.out_channels, self.in_channels, fh, fw)
        fan_in, gen, dt = self.in_channels * fh * fw, _generator(rng), _float_dtype(dtype)
        self.weight = Parameter(_uniform_init(shape, fan_in, dt, gen))
        self.bias = Parameter(_uniform_init(self.out_channels, fan_in, dt, gen)) if bias else None
        self._cache = None

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 4 or shape[1] != self.in_channels:
            raise ValueError(f"{self!r} expects input (N, {self.in_channels}, H, W), got shape {shape}")
        pads = conv_padding(self.padding, self.kernel_size, self.stride)
        try:
            hw = conv_output_hw(shape[2:], self.kernel_size, self.stride, pads)
        except ValueError as exc:
            raise ValueError(f"{self!r} cannot take input of shape {shape}: {exc}") from None
        return (shape[0], self.out_channels) + hw

    def forward(self, x):
        x = self._input(x)
        self.output_shape(x.shape)
        b = None if self.bias is None else self.bias.data
        out, self._cache = F.conv2d(x, self.weight.data, b, self.stride, self.padding)
        return out

    def _backward(self, dy, need_dx):
        dx, dw, db = F.conv2d_backward(dy, self._cached(self._cache), need_dx=need_dx)
        _accumulate(self.weight, dw)
        if self.bias is not None:
            _accumulate(self.bias, db)
        return dx

    def _memory(self, in_shape, out_shape, itemsize):
        fh, fw = self.kernel_size
        cols = in_shape[1] * fh * fw * out_shape[0] * out_shape[2] * out_shape[3] * itemsize
        return math.prod(out_shape) * itemsize, cols, cols

    def __repr__(self):
        s = (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s + (", bias=False)" if self.bias is None else ")")


class Linear(Module):
    """Fully connected layer: x (N, in) -> x @ weight.T + bias, (N, out).

    ``weight`` (out, in) He-normal, ``bias`` (out,) zeros or None. ``input_grad`` as Conv2d.
    """

    _param_names = ("weight", "bias")

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = _positive(in_features, "in_features")
        self.out_features = _positive(out_features, "out_features")
        self.input_grad = True
        shape = (self.out_features, self.in_features)
        gen, dt = _generator(rng), _float_dtype(dtype)
        self.weight = Parameter(_uniform_init(shape, self.in_features, dt, gen))
        self.bias = Parameter(_uniform_init(self.out_features, self.in_features, dt, gen)) if bias else None
        self._cache = None

    def _label(self):
        return f"Linear({self.in_features}, {self.out_features})"

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 2:
            raise ValueError(f"{self._label()} expects 2-D input (N, {self.in_features}), got shape "
                             f"{shape}" + ("; add a Flatten() before it" if len(shape) > 2 else ""))
        if shape[1] != self.in_features:
            raise ValueError(f"{self._label()} expects {self.in_features} input features, got "
                             f"{shape[1]} (input shape {shape})")
        return (shape[0], self.out_features)

    def forward(self, x):
        x = self._input(x)
        self.output_shape(x.shape)
        b = None if self.bias is None else self.bias.data
        out, self._cache = F.linear(x, self.weight.data, b)
        return out

    def _backward(self, dy, need_dx):
        dx, dw, db = F.linear_backward(dy, self._cached(self._cache), need_dx=need_dx)
        _accumulate(self.weight, dw)
        if self.bias is not None:
            _accumulate(self.bias, db)
        return dx

    def __repr__(self):
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None})")


# --- pooling -----------------------------------------------------------------------------------

class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self._kernel = pair(kernel_size, "kernel_size")
        self._stride = pair(self.stride, "stride")
        if min(self._kernel) < 1 or min(self._stride) < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size!r}, {stride!r}")
        self._cache = None

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError(f"{self!r} expects 4-D input (N, C, H, W), got shape {shape}")
        try:
            hw = pool_output_hw(shape[2:], self._kernel, self._stride)
        except ValueError as exc:
            raise ValueError(f"{self!r} cannot take input of shape {shape}: {exc}") from None
        return shape[:2] + hw

    def _label(self):
        return f"{type(self).__name__}({self.kernel_size}, stride={self.stride})"


class MaxPool2d(_Pool2d):
    """Max pooling (floor mode), ``MaxPool2d(kernel_size, stride=None)``; stride defaults to the kernel.

    x (N, C, H, W) -> (N, C, Hout, Wout). Keeps the argmax switches (int64, out's shape) for backward;
    the first maximum in row-major window order receives the whole gradient.
    """

    def forward(self, x):
        self.output_shape(x.shape)
        out, switches = F.max_pool2d(x, self._kernel, self._stride)
        self._cache = (switches, tuple(x.shape))
        return out

    def _backward(self, dy, need_dx):
        switches, shape = self._cached(self._cache)
        return F.max_pool2d_backward(dy, switches, shape) if need_dx else None

    def _memory(self, in_shape, out_shape, itemsize):
        n = math.prod(out_shape)
        return n * itemsize, n * 8, 0

    def __repr__(self):
        return (f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride}, padding=0, "
                "dilation=1, ceil_mode=False)")


class AvgPool2d(_Pool2d):
    """Average pooling (floor mode, no padding), ``AvgPool2d(kernel_size, stride=None)``."""

    def forward(self, x):
        self.output_shape(x.shape)
        self._cache = tuple(x.shape)
        return F.avg_pool2d(x, self._kernel, self._stride)

    def _backward(self, dy, need_dx):
        shape = self._cached(self._cache)
        return F.avg_pool2d_backward(dy, shape, self._kernel, self._stride) if need_dx else None

    def __repr__(self):
        return f"AvgPool2d(kernel_size={self.kernel_size}, stride={self.stride}, padding=0)"


# --- elementwise and reshaping -----------------------------------------------------------------

class _Activation(Module):
    """An elementwise function whose backward needs only its output (kept; counted as the output)."""

    _fn = _grad = None

    def __init__(self):
        super().__init__()
        self._cache = None

    def forward(self, x):
        self._cache = out = type(self)._fn(x)
        return out

    def _backward(self, dy, need_dx):
        out = self._cached(self._cache)
        return type(self)._grad(dy, out) if need_dx else None


class ReLU(_Activation):
    """max(x, 0), any shape."""

    _fn, _grad = F.relu, F.relu_backward


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)), any shape."""

    _fn, _grad = F.sigmoid, F.sigmoid_backward


class Tanh(_Activation):
    """tanh(x), any shape."""

    _fn, _grad = F.tanh, F.tanh_backward


class Flatten(Module):
    """Merge dimensions ``start_dim..end_dim`` (default: all but the batch): (N, C, H, W) -> (N, C*H*W).

    The output is a ``.reshape`` of the input (a view for contiguous arrays).
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = int(start_dim), int(end_dim)
        self._cache = None

    def output_shape(self, shape):
        shape = tuple(shape)
        nd = len(shape)
        start = self.start_dim + nd if self.start_dim < 0 else self.start_dim
        end = self.end_dim + nd if self.end_dim < 0 else self.end_dim
        if not 0 <= start <= end < nd:
            raise ValueError(f"{self!r} cannot flatten input of shape {shape} ({nd}-D)")
        return shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]

    def forward(self, x):
        self._cache = tuple(x.shape)
        return x.reshape(self.output_shape(x.shape))

    def _backward(self, dy, need_dx):
        shape = self._cached(self._cache)
        return dy.reshape(shape) if need_dx else None

    def _memory(self, in_shape, out_shape, itemsize):
        return 0, 0, 0

    def _label(self):
        return "Flatten()" if (self.start_dim, self.end_dim) == (1, -1) else repr(self)

    def __repr__(self):
        return f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim})"


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale the rest
    by 1/(1-p); the identity in eval mode. Each forward draws an int seed from the layer's generator
    (``rng``, else one spawned from the default generator at construction) and calls F.dropout.
    """

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        gen = _generator(rng)
        self._rng = np.random.default_rng(int(gen.integers(2**63))) if rng is None else gen
        self._cache = None

    @property
    def rng(self):
        """The ``np.random.Generator`` each training forward draws its mask seed from (assignable,
        e.g. by a trainer that makes every epoch's masks repeatable)."""
        return self._rng

    @rng.setter
    def rng(self, generator):
        if not isinstance(generator, np.random.Generator):
            raise TypeError(f"Dropout.rng must be a numpy.random.Generator, got {type(generator).__name__}")
        self._rng = generator

    def forward(self, x):
        if not self.training or self.p == 0:
            self._cache = ()
            return x
        out, mask = F.dropout(x, self.p, int(self._rng.integers(2**62)))
        self._cache = (mask,)
        return out

    def _backward(self, dy, need_dx):
        cache = self._cached(self._cache)
        if not need_dx:
            return None
        return F.dropout_backward(dy, cache[0]) if cache else dy

    def _memory(self, in_shape, out_shape, itemsize):
        n = math.prod(out_shape) * itemsize
        return n, n, 0

    def _label(self):
        return f"Dropout(p={self.p})"

    def __repr__(self):
        return f"Dropout(p={self.p}, inplace=False)"


# --- batch normalisation -----------------------------------------------------------------------

class _BatchNorm(Module):
    """Batch normalisation over every axis but the channel axis 1, with PyTorch's semantics.

    Training: normalise with the batch mean and biased variance; update
    ``running = (1 - momentum) * running + momentum * batch`` with the *unbiased* variance, and
    count ``num_batches_tracked``. Eval: normalise with the running statistics. ``weight`` (ones)
    and ``bias`` (zeros) are (C,). The arithmetic, the running-statistics update included, is
    :func:`fastconv.functional.batch_norm`'s, on the host or on the device (after ``to("cuda")``
    the running statistics are device arrays; ``num_batches_tracked`` stays a host counter).
    """

    _param_names = ("weight", "bias")
    _buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    _ndims = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__()
        self.num_features = _positive(num_features, "num_features")
        self.eps, self.momentum = float(eps), float(momentum)
        dt = _float_dtype(dtype)
        self.weight = Parameter(np.ones(self.num_features, dtype=dt))
        self.bias = Parameter(np.zeros(self.num_features, dtype=dt))
        self.running_mean = np.zeros(self.num_features, dtype=dt)
        self.running_var = np.ones(self.num_features, dtype=dt)
        self.num_batches_tracked = np.array(0, dtype=np.int64)
        self._cache = None

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) not in self._ndims or shape[1] != self.num_features:
            want = " or ".join(f"{d}-D" for d in self._ndims)
            raise ValueError(f"{self!r} expects {want} input with {self.num_features} channels on "
                             f"axis 1, got shape {shape}")
        return shape

    def forward(self, x):
        x = self._input(x)
        self.output_shape(x.shape)
        if self.training:
            self.num_batches_tracked += 1
        out, self._cache = F.batch_norm(x, self.weight.data, self.bias.data, self.running_mean,
                                        self.running_var, self.training, self.momentum, self.eps)
        return out

    def _backward(self, dy, need_dx):
        cache = self._cached(self._cache)
        dx, dweight, dbias = F.batch_norm_backward(dy, cache, need_dx)
        _accumulate(self.weight, dweight)
        _accumulate(self.bias, dbias)
        return dx

    def _memory(self, in_shape, out_shape, itemsize):
        n = math.prod(out_shape) * itemsize
        return n, n, 0  # keeps its input (x-hat is recomputed from it in backward)

    def _label(self):
        return f"{type(self).__name__}({self.num_features})"

    def __repr__(self):
        return (f"{type(self).__name__}({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                "affine=True, bias=True, track_running_stats=True)")


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) per channel (statistics over N, H, W)."""

    _ndims = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) per channel (statistics over N and L)."""

    _ndims = (2, 3)
