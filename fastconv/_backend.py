"""The one place that picks a backend: ``"naive"``, ``"cpu"`` or ``"cuda"``.

Each backend is a module in :mod:`fastconv.kernels` with the same functions and signatures (the
contract, :mod:`fastconv.kernels.contract`). Operations pick theirs with :func:`resolve` (an
explicit backend, else the arrays' device, else the default); code that updates arrays where they
already live (optimizer state, gradients, running statistics) takes :func:`tier_of` them. Nothing
else branches on the device.
"""
import importlib
import os

import numpy as np

BACKENDS = ("naive", "cpu", "cuda")
_state = {"name": None}


def _check(name):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return name


def set_backend(name):
    """Set the default backend for every operation that is not given one explicitly."""
    if name == "cuda":
        kernels("cuda")  # fail now, with the clear message, if no GPU or simulator is present
    _state["name"] = _check(name)


def get_backend():
    """The default backend: the last :func:`set_backend`, else env ``FASTCONV_BACKEND``, else "cpu"."""
    if _state["name"] is None:
        _state["name"] = _check(os.environ.get("FASTCONV_BACKEND", "cpu") or "cpu")
    return _state["name"]


def is_device_array(a):
    """True for a Numba CUDA device array, real or the simulator's (without importing numba.cuda)."""
    if isinstance(a, np.ndarray) or a is None:
        return False
    return hasattr(a, "copy_to_host") and (hasattr(a, "__cuda_array_interface__")
                                           or type(a).__name__ == "FakeCUDAArray")


def resolve(backend, *arrays):
    """The backend name to use: the explicit one, else "cuda" for device arrays, else the default.

    An explicit host backend ("naive", "cpu") handed a device array is a TypeError.
    """
    if backend is not None:
        return check_host(_check(backend), *arrays)
    if any(is_device_array(a) for a in arrays):
        return "cuda"
    return get_backend()


def tier_of(*arrays):
    """The kernel module of the tier that holds ``arrays``: cuda's when any is a device array,
    else the default host tier's (cpu's when the default is cuda)."""
    name = resolve(None, *arrays)
    if name == "cuda" and not any(is_device_array(a) for a in arrays):
        name = "cpu"
    return kernels(name)


def check_host(name, *arrays):
    """``name``, after checking that a host backend is handed no device array (TypeError)."""
    if name != "cuda" and any(is_device_array(a) for a in arrays):
        raise TypeError(f"backend {name!r} runs on host (NumPy) arrays but was handed a CUDA device "
                        "array: copy it to the host with fastconv.to_numpy(), or use backend='cuda'")
    return name


_modules = {}


def kernels(name):
    """The kernel module of backend ``name``."""
    module = _modules.get(name)
    if module is None:
        module = _modules[name] = importlib.import_module(f"fastconv.kernels.{_check(name)}")
    return module


def to_numpy(a):
    """A NumPy array from any array the engine returns (host or device)."""
    if isinstance(a, np.ndarray):
        return a
    if is_device_array(a):
        return a.copy_to_host()
    return np.asarray(a)


def to_device(a):
    """A device copy of host array ``a`` (one host-to-device transfer, ``numba.cuda.to_device``).

    Raises the cuda tier's RuntimeError (which names ``NUMBA_ENABLE_CUDASIM=1``) when there is
    neither a GPU nor the simulator.
    """
    kernels("cuda")
    from numba import cuda
    return cuda.to_device(np.ascontiguousarray(a))
