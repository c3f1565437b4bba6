"""Loss functions.

The loss validates its inputs; the numerics are the kernel tier's
(:func:`fastconv.functional.cross_entropy`), so every backend supplies its own.
:class:`CrossEntropyLoss` also takes any ``fn(logits, labels) -> (loss, dlogits)``.
"""

import numpy as np

from . import functional as F
from ._backend import is_device_array

__all__ = ["log_softmax", "softmax_cross_entropy", "CrossEntropyLoss", "MSELoss"]


def _check_inputs(logits, labels):
    """Validate and normalise ``(logits, labels)``; return them as arrays."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    if logits.ndim != 2:
        raise ValueError(
            f"logits must be 2-D (N, classes), got shape {logits.shape}")
    if logits.dtype.kind != "f":
        raise ValueError(
            f"logits must be a floating array (float32/float64), got dtype {logits.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    n, classes = logits.shape
    if labels.shape[0] != n:
        raise ValueError(
            f"batch size mismatch: logits shape {logits.shape}, labels shape {labels.shape}")
    if n == 0:
        raise ValueError(f"empty batch: logits shape {logits.shape}")
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        raise ValueError(
            f"labels must lie in [0, {classes}) for logits shape {logits.shape}; "
            f"got out-of-range values {np.unique(labels[bad])[:10].tolist()}")
    return logits, labels


def log_softmax(logits):
    """Numerically stable row-wise log-softmax.

    Parameters
    ----------
    logits : ndarray, shape (N, classes)

    Returns
    -------
    ndarray
        ``logits - logsumexp(logits, axis=1)``, same dtype as ``logits``.
    """
    z = logits - logits.max(axis=1, keepdims=True)
    z -= np.log(np.exp(z).sum(axis=1, keepdims=True))
    return z


def softmax_cross_entropy(logits, labels, backend=None):
    """Mean softmax cross-entropy and its gradient w.r.t. the logits.

    Parameters
    ----------
    logits : ndarray, shape (N, classes), float32 or float64
    labels : ndarray of int, shape (N,)
        Class indices in ``[0, classes)``.
    backend : str, optional
        The kernel tier (:func:`fastconv.functional.cross_entropy` computes it).

    Returns
    -------
    loss : float
        ``-mean(log_softmax(logits)[i, labels[i]])``.
    dlogits : ndarray, shape (N, classes)
        ``(softmax(logits) - onehot(labels)) / N`` in the dtype of ``logits``.

    Raises
    ------
    ValueError
        On bad shapes, dtypes or out-of-range labels.
    """
    if not (is_device_array(logits) or is_device_array(labels)):
        logits, labels = _check_inputs(logits, labels)
    return F.cross_entropy(logits, labels, backend=backend)


class CrossEntropyLoss:
    """Softmax cross-entropy averaged over the batch (as torch's default).

    Parameters
    ----------
    fn : callable, optional
        ``fn(logits, labels) -> (loss, dlogits)``; defaults to
        :func:`softmax_cross_entropy`. Lets a backend swap in its own kernel.

    Examples
    --------
    >>> loss_fn = CrossEntropyLoss()
    >>> loss = loss_fn(logits, labels)   # doctest: +SKIP
    >>> dlogits = loss_fn.backward()     # doctest: +SKIP
    """

    def __init__(self, fn=None):
        self.fn = softmax_cross_entropy if fn is None else fn
        self._dlogits = None

    def forward(self, logits, labels):
        """Return the mean loss (float) and cache the gradient for :meth:`backward`."""
        loss, self._dlogits = self.fn(logits, labels)
        return loss

    __call__ = forward

    def backward(self):
        """Return ``dloss/dlogits`` from the last :meth:`forward` call."""
        if self._dlogits is None:
            raise RuntimeError("backward() called before forward()")
        return self._dlogits


class MSELoss:
    """Mean squared error ``mean((pred - target) ** 2)`` over all elements."""

    def __init__(self):
        self._diff = None

    def forward(self, pred, target):
        """Return the mean loss (float); ``pred`` and ``target`` must share a shape."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(
                f"shape mismatch: pred shape {pred.shape}, target shape {target.shape}")
        if pred.size == 0:
            raise ValueError(f"empty input: pred shape {pred.shape}")
        self._diff = (pred - target).astype(pred.dtype, copy=False)
        return float(np.mean(self._diff * self._diff))

    __call__ = forward

    def backward(self):
        """Return ``dloss/dpred = 2 (pred - target) / size`` in ``pred``'s dtype."""
        if self._diff is None:
            raise RuntimeError("backward() called before forward()")
        return self._diff * (2.0 / self._diff.size)
