"""Gradient mode: whether forward passes keep what backward needs (PyTorch's names).

``with fastconv.no_grad():`` (or ``@fastconv.no_grad()`` on a function) runs forward passes that
keep no caches, so inference holds no im2col columns, switches or masks; a backward after such a
forward raises a RuntimeError that says why. The mode is per thread, as in PyTorch.
"""
import functools
import threading

__all__ = ["no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled"]

_local = threading.local()


def is_grad_enabled():
    """True unless the calling thread is inside :class:`no_grad` (or ``set_grad_enabled(False)``)."""
    return getattr(_local, "enabled", True)


class _Mode:
    """A ``with`` block or decorator that runs with gradient mode ``_mode``, then restores it."""

    _mode = True

    def __enter__(self):
        self._prev = getattr(self, "_prev", [])
        self._prev.append(is_grad_enabled())
        _local.enabled = self._mode
        return self

    def __exit__(self, *exc):
        _local.enabled = self._prev.pop()
        return False

    def __call__(self, fn):
        mode = self._mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with _Fixed(mode):
                return fn(*args, **kwargs)
        return wrapper


class _Fixed(_Mode):
    def __init__(self, mode):
        self._mode = bool(mode)


class no_grad(_Mode):
    """Context manager and decorator: forward passes inside keep no caches for backward."""

    _mode = False


class enable_grad(_Mode):
    """Context manager and decorator: gradient mode on again inside a :class:`no_grad` block."""

    _mode = True


class set_grad_enabled(_Mode):
    """Gradient mode ``mode`` for a ``with`` block or a decorated function (then restored).

    Called as a plain statement it sets the mode for the calling thread, as PyTorch's does.
    """

    def __init__(self, mode):
        self._mode = bool(mode)
        self._prev = [is_grad_enabled()]
        _local.enabled = self._mode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _local.enabled = self._prev[0]
        return False

    def __call__(self, fn):
        _local.enabled = self._prev[0]  # decorating changes nothing until the function runs
        return super().__call__(fn)
