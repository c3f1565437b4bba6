"""Losses computed by the tiers: cross-entropy, NLL, binary cross-entropy with logits, MSE.

Every function returns ``(loss, grad)``. ``loss`` is a float for ``reduction="mean"`` or
``"sum"`` and an array of the per-sample (per-element) losses for ``"none"``, on the input's
device. ``grad`` has the input's shape and dtype: the gradient of ``loss`` with respect to the
input; for ``"none"`` row (element) i holds the gradient of ``loss[i]``, so an upstream gradient
``g`` gives ``g[:, None] * grad`` (``g * grad`` for the elementwise losses). The options, their
defaults and the reductions are PyTorch's (``torch.nn.functional``); an empty batch gives NaN for
``"mean"`` (0 / 0, as PyTorch), 0 for ``"sum"`` and an empty array for ``"none"``.
"""
import numpy as np

from .._backend import is_device_array, kernels, resolve, tier_of, to_numpy
from .._checks import integer, number, reduction as check_reduction
from ._common import _array

__all__ = ["cross_entropy", "nll_loss", "binary_cross_entropy_with_logits", "mse_loss"]


def _host_weights(a, name, shape, dtype):
    """``a`` (host or device) as a C-contiguous host array of ``dtype`` broadcast to ``shape``
    (``a``'s own shape when ``shape`` is None); None stays None."""
    if a is None:
        return None
    arr = np.asarray(to_numpy(a))
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if shape is not None:
        try:
            arr = np.broadcast_to(arr, shape)
        except ValueError:
            raise ValueError(f"{name} of shape {arr.shape} does not broadcast to the input's shape "
                             f"{tuple(shape)}") from None
    return np.ascontiguousarray(arr, dtype=dtype)


def _class_input(x, labels, weight, ignore_index, what):
    """Checked ``(x (N, C), int64 labels (N,), weight (C,) or None, any ignored row)``; labels
    on the host are checked to lie in [0, C) or equal ignore_index (the cuda tier checks device
    labels itself; ``ignored`` is None for them: unknown)."""
    x = _array(x, what)
    if len(x.shape) != 2:
        raise ValueError(f"{what} must be 2-D (N, classes), got shape {tuple(x.shape)}")
    n, classes = x.shape
    ignored = None
    if not is_device_array(labels):
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        ignored = False
        if labels.size:
            outside = (labels < 0) | (labels >= classes)
            if outside.any():
                bad = outside & (labels != ignore_index)
                if bad.any():
                    raise ValueError(
                        f"labels must lie in [0, {classes}) (or equal ignore_index={ignore_index}) "
                        f"for {what} shape {tuple(x.shape)}; got out-of-range values "
                        f"{np.unique(labels[bad])[:10].tolist()}")
                ignored = True
            elif 0 <= ignore_index < classes:
                ignored = bool((labels == ignore_index).any())
    if tuple(labels.shape) != (n,):
        raise ValueError(f"batch size mismatch: {what} {tuple(x.shape)} needs 1-D labels ({n},), "
                         f"got labels of shape {tuple(labels.shape)}")
    if weight is not None:
        weight = _host_weights(weight, "weight", None, np.dtype(x.dtype))
        if weight.shape != (classes,):
            raise ValueError(f"weight must be 1-D with one entry per class ({classes},) for {what} "
                             f"{tuple(x.shape)}, got shape {weight.shape}")
    return x, labels, weight, ignored


def _empty(x, loss_shape, reduction):
    """The result for an input with no elements: NaN ("mean"), 0 ("sum") or an empty array."""
    dt, tier = np.dtype(x.dtype), tier_of(x)
    grad, per = tier.full(tuple(x.shape), 0, dt), tier.full(loss_shape, 0, dt)
    loss = {"mean": float("nan"), "sum": 0.0}.get(reduction, per)
    return loss, grad


def cross_entropy(logits, labels, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0, backend=None):
    """Softmax cross-entropy with PyTorch's options (``torch.nn.functional.cross_entropy``).

    Parameters
    ----------
    logits : array (N, C), float32 or float64
    labels : int array (N,)
        Class indices in ``[0, C)``, or ``ignore_index``.
    weight : array (C,), optional
        A rescaling weight per class (cast to the logits' dtype).
    ignore_index : int
        Targets equal to it contribute nothing, to the loss or to the mean's denominator.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides the sum by ``sum(weight[labels[i]])`` over the rows kept (their count
        without ``weight``); NaN when no row is kept.
    label_smoothing : float in [0, 1]
        ``e``: the target becomes ``(1 - e) * onehot + e / C``; with ``weight`` row i's loss is
        ``(1 - e) * w[y] * (-log p[y]) + e / C * sum_c w[c] * (-log p[c])`` (PyTorch's rule).

    Returns
    -------
    loss : float, or array (N,) for ``"none"``
    dlogits : array (N, C)

    The defaults (no weight, no ignored row, ``"mean"``, no smoothing) run the tier's fused
    ``softmax_cross_entropy`` kernel, the training hot path.
    """
    name = resolve(backend, logits, labels)
    ignore_index = integer(ignore_index, "ignore_index")
    reduction = check_reduction(reduction)
    label_smoothing = number(label_smoothing, "label_smoothing", 0, 1)
    logits, labels, weight, ignored = _class_input(logits, labels, weight, ignore_index, "logits")
    if logits.shape[0] == 0:
        return _empty(logits, (0,), reduction)
    tier = kernels(name)
    if weight is None and reduction == "mean" and label_smoothing == 0:
        if ignored is False:
            return tier.softmax_cross_entropy(logits, labels)
        if ignored is None and not 0 <= ignore_index < logits.shape[1]:
            # device labels: the fused kernel refuses labels outside [0, C), the only place the
            # ignore_index can be; then the general kernel ignores them (or names the bad ones)
            try:
                return tier.softmax_cross_entropy(logits, labels)
            except ValueError:
                pass
    return tier.cross_entropy(logits, labels, weight, ignore_index, reduction, label_smoothing)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean", backend=None):
    """Negative log-likelihood (``torch.nn.functional.nll_loss``) of log-probabilities.

    Parameters
    ----------
    input : array (N, C)
        Log-probabilities (e.g. :func:`fastconv.losses.log_softmax` of logits).
    target : int array (N,)
        Class indices in ``[0, C)``, or ``ignore_index``.
    weight, ignore_index, reduction
        As in :func:`cross_entropy`: sample i's loss is ``-weight[y] * input[i, y]``.

    Returns
    -------
    loss : float, or array (N,) for ``"none"``
    dinput : array (N, C)
    """
    name = resolve(backend, input, target)
    ignore_index = integer(ignore_index, "ignore_index")
    reduction = check_reduction(reduction)
    x, labels, weight, _ = _class_input(input, target, weight, ignore_index, "input")
    if x.shape[0] == 0:
        return _empty(x, (0,), reduction)
    return kernels(name).nll_loss(x, labels, weight, ignore_index, reduction)


def _pair(input, target):
    """``(input, target)`` as float arrays of one shape and input's dtype."""
    x = _array(input, "input")
    t = _array(target, "target", np.dtype(x.dtype)) if not is_device_array(target) else target
    if is_device_array(t) and np.dtype(t.dtype) != np.dtype(x.dtype):
        raise TypeError(f"target: device array of dtype {t.dtype} where the input's {x.dtype} was "
                        "expected")
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"target size {tuple(t.shape)} must be the same as input size "
                         f"{tuple(x.shape)}")
    return x, t


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean", pos_weight=None,
                                     backend=None):
    """Sigmoid and binary cross-entropy in one stable step
    (``torch.nn.functional.binary_cross_entropy_with_logits``).

    Element i's loss is ``-w * (pw * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x)))``,
    computed as ``(1 - t) * x + (1 + (pw - 1) * t) * (log1p(exp(-|x|)) + max(-x, 0))``, finite for
    any finite logit.

    Parameters
    ----------
    input : array, any shape
        Logits.
    target : array of input's shape
        Targets in [0, 1] (soft targets allowed), cast to input's dtype.
    weight : array broadcastable to input's shape, optional
        Rescales each element's loss.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of elements.
    pos_weight : array broadcastable to input's shape, optional
        The weight of the positive term, e.g. ``(C,)`` for ``(N, C)`` multi-label logits:
        ``negatives / positives`` per class balances them.

    Returns
    -------
    loss : float, or array of input's shape for ``"none"``
    dinput : array of input's shape

    ``weight`` and ``pos_weight`` are broadcast on the host to the input's shape.
    """
    name = resolve(backend, input, target)
    reduction = check_reduction(reduction)
    x, t = _pair(input, target)
    dt, shape = np.dtype(x.dtype), tuple(x.shape)
    weight = _host_weights(weight, "weight", shape, dt)
    pos_weight = _host_weights(pos_weight, "pos_weight", shape, dt)
    if x.size == 0:
        return _empty(x, shape, reduction)
    return kernels(name).binary_cross_entropy_with_logits(x, t, weight, pos_weight, reduction)


def mse_loss(input, target, reduction="mean", backend=None):
    """Squared error ``(input - target) ** 2`` per element (``torch.nn.functional.mse_loss``).

    Parameters
    ----------
    input : array, any shape
    target : array of input's shape (PyTorch would broadcast it, with a warning; a different
        shape is a ValueError here)
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    loss : float, or array of input's shape for ``"none"``
    dinput : array of input's shape: ``2 (input - target)``, divided by the size for ``"mean"``
    """
    name = resolve(backend, input, target)
    reduction = check_reduction(reduction)
    x, t = _pair(input, target)
    if x.size == 0:
        return _empty(x, tuple(x.shape), reduction)
    return kernels(name).mse_loss(x, t, reduction)


def _scale_grad(grad, grad_output, per_row):
    """The chain rule for a loss's gradient: ``grad`` times the upstream ``grad_output``.

    ``grad_output`` is a number (for a reduced loss), or for ``reduction="none"`` an array of the
    per-sample losses' shape: ``(N,)`` scales the rows of ``grad`` (``per_row``), else it has
    grad's shape and scales elementwise. A new array on grad's device.
    """
    size = int(np.prod(grad.shape))
    if np.ndim(grad_output) == 0:  # a number: one row
        rows, s = 1, np.full(1, to_numpy(grad_output), dtype=grad.dtype)
    else:
        rows = grad.shape[0] if per_row else size
        s = grad_output if hasattr(grad_output, "reshape") else np.asarray(grad_output)
        s = s.reshape(rows)
    return tier_of(grad).scale_rows(grad.reshape(rows, size // max(rows, 1)), s).reshape(grad.shape)
