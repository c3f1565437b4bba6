"""The base of every layer: :class:`Parameter`, :class:`Module` (parameters, buffers, modes,
state dicts, devices, the per-call caches between forward and backward) and the helpers layers
share (generators, dtypes, gradient accumulation).
"""
import contextlib
import math
import numbers
import threading
from collections import namedtuple

import numpy as np

from .._backend import is_device_array, kernels, tier_of, to_device, to_numpy
from .._checks import manual_seed  # noqa: F401 - re-exported (fastconv.manual_seed)
from .._grad import is_grad_enabled

__all__ = ["Parameter", "Module", "manual_seed", "eval_mode"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_DEVICES = ("cpu", "cuda")

IncompatibleKeys = namedtuple("IncompatibleKeys", "missing_keys unexpected_keys")


def _float_dtype(dtype):
    if dtype is None:
        raise TypeError("dtype must be float32 or float64, got None")
    dt = np.dtype(dtype)
    if dt not in _FLOATS:
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


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
    """``param.grad += g`` (on its device); nothing for a parameter with ``requires_grad=False``."""
    if not param.requires_grad or g is None:
        return
    if param.grad is None:
        param.grad = g if is_device_array(g) else g.copy()  # the tier's fresh device array
    else:
        tier_of(param.grad).axpby(param.grad, g, 1, 1)  # grad += g, in place, where grad lives


class Parameter:
    """A trainable array: ``data`` and its gradient ``grad`` (None until a backward).

    ``requires_grad=False`` freezes it: backward leaves ``grad`` None (and skips the product
    that would compute it where the layer can), so optimizers leave it unchanged.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data, requires_grad=True):
        self.data = data if is_device_array(data) else np.asarray(data)
        self.grad = None
        self.requires_grad = bool(requires_grad)

    def requires_grad_(self, requires_grad=True):
        """Set :attr:`requires_grad` in place; returns self (PyTorch's name)."""
        self.requires_grad = bool(requires_grad)
        return self

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
        frozen = "" if self.requires_grad else ", requires_grad=False"
        return f"Parameter(shape={self.shape}, dtype={self.dtype}{device}{frozen})"


_scope = threading.local()


class _ForwardScope:
    """Marks a container's forward: the outermost one (per thread) clears every cache below it, so
    each training forward of a model starts afresh and caches left by a forward that had no
    backward do not pile up."""

    def __init__(self, module):
        self.module = module

    def __enter__(self):
        depth = getattr(_scope, "depth", 0)
        if depth == 0:
            for m in self.module.modules():
                m._caches.clear()
        _scope.depth = depth + 1

    def __exit__(self, *exc):
        _scope.depth -= 1
        return False


_eval = threading.local()


@contextlib.contextmanager
def eval_mode():
    """A ``with`` block (or decorator) in which every module reads as in eval mode (``training``
    False: dropout off, batch norm's running statistics), for the calling thread only.

    The modules' own flags, set by ``train()`` / ``eval()`` and seen by every thread, are neither
    read nor changed, so this is how inference runs on a model that other threads use:
    :meth:`Sequential.predict` and :meth:`fastconv.Trainer.evaluate` run in it. Blocks nest.
    PyTorch has no equivalent (its ``inference_mode`` turns off gradients, not training mode;
    here that is :func:`fastconv.no_grad`).
    """
    _eval.depth = getattr(_eval, "depth", 0) + 1
    try:
        yield
    finally:
        _eval.depth -= 1


class Module:
    """Base class: parameters, buffers, train/eval mode, state dicts, dtype conversion.

    Subclasses name their parameters in ``_param_names`` and their buffers (arrays saved in the
    state dict but not trained, such as BatchNorm's running statistics) in ``_buffer_names``,
    and implement ``forward(x)``, ``_backward(dy, need_dx)`` and ``output_shape(shape)``.

    Caches: each forward in gradient mode keeps what its backward needs with :meth:`_save`, one
    cache per call, and each backward takes back the latest with :meth:`_restore`. So a module
    used several times in one network (the same ReLU object twice, or a Linear whose weights are
    shared) is backpropagated correctly, in reverse order, its gradients accumulating into the
    shared parameters. The outermost forward of a container (and a forward of a module called on
    its own) starts afresh: one outstanding forward per model, as in CS231n's solver. Under
    :func:`fastconv.no_grad` nothing is kept.
    """

    _param_names = ()
    _buffer_names = ()
    input_grad = True

    def __init__(self):
        self.training = True
        self._caches = []
        self._no_grad_forward = False

    @property
    def training(self):
        """Training mode, as ``train()`` / ``eval()`` set it; False inside :func:`eval_mode`
        (in that thread only). Layers read it in each forward."""
        return self._training and not getattr(_eval, "depth", 0)

    @training.setter
    def training(self, mode):
        self._training = bool(mode)

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

    def _save(self, cache):
        """Keep ``cache`` for the backward of this call (nothing under :func:`fastconv.no_grad`)."""
        if not is_grad_enabled():
            self._no_grad_forward = True
            return
        if getattr(_scope, "depth", 0) == 0:
            self._caches.clear()  # called on its own, outside any container: start afresh
        self._no_grad_forward = False
        self._caches.append(cache)

    def _restore(self):
        """The cache of the latest forward that has not been backpropagated yet."""
        if self._caches:
            return self._caches.pop()
        if self._no_grad_forward:
            raise RuntimeError(f"{self._label()}: backward after a forward run under "
                               "fastconv.no_grad(), which keeps nothing for backward; run the "
                               "forward outside no_grad() to train")
        raise RuntimeError(f"{self._label()}: backward called before forward (or more times than "
                           "forward was called since the outermost forward)")

    def _trainable(self):
        """Whether one of this module's own parameters wants a gradient."""
        return any(getattr(self, a) is not None and getattr(self, a).requires_grad
                   for a in self._param_names)

    def _param_backward(self, dy, need_dx, backward, *args):
        """The backward of a layer whose F pair returns ``(dx, *grads)``: runs
        ``backward(dy, cache, *args, need_dx=need_dx)`` on the latest cache and accumulates each
        grad into the parameter named at the same place in ``_param_names`` (None ones skipped).
        Returns None without computing anything when neither dx nor a parameter gradient is wanted."""
        cache = self._restore()
        if not (need_dx or self._trainable()):
            return None
        dx, *grads = backward(dy, cache, *args, need_dx=need_dx)
        for name, g in zip(self._param_names, grads):
            if getattr(self, name) is not None:
                _accumulate(getattr(self, name), g)
        return dx

    def _input(self, x):
        """x as a real array in this layer's parameter dtype, on its device (device arrays pass
        through; a host input to a layer on the device is copied there once). Layers without
        parameters get any array-like as a NumPy array of its own dtype."""
        if is_device_array(x):
            return x
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"{self._label()}: input must be a real numeric array, got dtype {x.dtype}")
        if getattr(self, "weight", None) is None:
            return x  # a layer without parameters keeps the input's dtype
        dtype = self.weight.dtype
        x = x if x.dtype == dtype else x.astype(dtype)
        return to_device(x) if self.weight.device == "cuda" else x

    # -- structure ---------------------------------------------------------------------------
    def named_children(self):
        return []

    def modules(self):
        """This module and every module inside it, depth first, each once (a module used
        twice is listed at its first place, as PyTorch does)."""
        seen = set()

        def walk(m):
            if id(m) in seen:
                return
            seen.add(id(m))
            yield m
            for _, child in m.named_children():
                yield from walk(child)
        yield from walk(self)

    def train(self, mode=True):
        """Set training mode (batch statistics, dropout on) here and below; returns self."""
        self.training = bool(mode)
        for _, child in self.named_children():
            child.train(mode)
        return self

    def eval(self):
        """Set evaluation mode (running statistics, dropout off); returns self."""
        return self.train(False)

    def reseed(self, seed):
        """Give every module here and below that draws from a public ``rng`` a fresh generator.

        The modules reseeded are those of :meth:`modules` (in that order) whose ``rng`` attribute
        is a ``numpy.random.Generator``: :class:`fastconv.Dropout` and any user module that keeps
        its generator there. With ``m`` of them, module ``i`` gets
        ``numpy.random.default_rng(seq.spawn(m)[i])``, so each draws an independent stream that
        depends only on ``seed`` and its place in the model (a trainer calls this at the start
        of each epoch to make the epoch's dropout masks repeatable). PyTorch has no equivalent
        (its modules share the global generator).

        Parameters
        ----------
        seed : numpy.random.SeedSequence, numpy.random.Generator or int
            ``seq`` is the SeedSequence itself, the Generator's (as ``Generator.spawn``) or
            ``SeedSequence(seed)`` for an int >= 0. Spawning advances a SeedSequence's (and a
            Generator's) count of children: the same object passed twice gives new streams.

        Returns
        -------
        self
        """
        if isinstance(seed, np.random.Generator):
            seq = getattr(seed.bit_generator, "seed_seq", None)
            if not isinstance(seq, np.random.SeedSequence):
                raise TypeError("reseed: this Generator has no SeedSequence to spawn from (NumPy >= "
                                "1.25 keeps it as bit_generator.seed_seq); pass a SeedSequence")
        elif isinstance(seed, np.random.SeedSequence):
            seq = seed
        elif isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_)) and seed >= 0:
            seq = np.random.SeedSequence(int(seed))
        else:
            raise TypeError(f"reseed: seed must be a numpy.random.SeedSequence, a numpy.random.Generator "
                            f"or an int >= 0, got {seed!r}")
        owners = [m for m in self.modules() if isinstance(getattr(m, "rng", None), np.random.Generator)]
        for m, child in zip(owners, seq.spawn(len(owners))):
            m.rng = np.random.default_rng(child)
        return self

    def named_parameters(self, prefix=""):
        """``(name, Parameter)`` pairs named as PyTorch names them (``"0.weight"``, ...); a
        parameter shared by several layers is listed once, under its first name (as PyTorch)."""
        seen, out = set(), []
        for name, p, _, _ in self._entries(prefix):
            if isinstance(p, Parameter) and id(p) not in seen:
                seen.add(id(p))
                out.append((name, p))
        return out

    def parameters(self):
        """The list of :class:`Parameter` objects, in :meth:`named_parameters` order, each once."""
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

    def _unique_entries(self):
        """:meth:`_entries` with each (owner, attribute) once: a shared module is moved once."""
        seen, out = set(), []
        for entry in self._entries():
            key = (id(entry[2]), entry[3])
            if key not in seen:
                seen.add(key)
                out.append(entry)
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
        host whatever the module's device. A shared parameter appears under each of its names,
        as in PyTorch's state dicts (so they load into each other)."""
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
            for _, value, owner, attr in self._unique_entries():
                if isinstance(value, Parameter):
                    if value.device != arg:
                        value.data, value.grad = _move(value.data, arg), None
                elif np.dtype(value.dtype).kind == "f":
                    setattr(owner, attr, _move(value, arg))
            return self
        dt = _float_dtype(arg)
        for _, value, owner, attr in self._unique_entries():
            if isinstance(value, Parameter):
                value.data = _astype(value.data, dt)
                if value.grad is not None:
                    value.grad = _astype(value.grad, dt)
            elif np.dtype(value.dtype).kind == "f":
                setattr(owner, attr, _astype(value, dt))
        return self

    def __repr__(self):
        return f"{type(self).__name__}()"
