"""Naive losses: vectorised NumPy, written as the formulas read (shared by the cpu tier).

The reductions follow PyTorch: ``"mean"`` divides by the summed weight of the targets that count
(cross-entropy and NLL; the number of targets without weights) or by the number of elements (BCE,
MSE); ``"sum"`` sums; ``"none"`` returns the per-sample (per-element) losses. Each function
returns ``(loss, grad)``: ``loss`` a float for ``"mean"``/``"sum"``, an array for ``"none"``;
``grad`` the gradient of ``loss`` (for ``"none"``: of each sample's own loss) with respect to
the input, in the input's dtype.
"""
import numpy as np


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of logits (N, classes) against int labels (N,) -> (loss, dlogits).

    No rows: the loss is NaN (PyTorch's mean of nothing) and dlogits is (0, classes).
    """
    n = logits.shape[0]
    if n == 0:
        return float("nan"), np.zeros(logits.shape, logits.dtype)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(total)
    loss = -log_probs[np.arange(n), labels].mean()
    grad = exp / total
    grad[np.arange(n), labels] -= 1
    grad *= grad.dtype.type(1.0 / n)
    return float(loss), grad


def _targets(labels, weight, ignore_index, classes, dtype):
    """``(kept (N,) bool, target (N,) with ignored rows set to class 0, target weights (N,))``;
    the weight of an ignored row is 0, of a kept row ``weight[label]`` (1 without weights)."""
    kept = labels != ignore_index
    target = np.where(kept, labels, 0)
    w = np.ones(classes, dtype) if weight is None else weight
    return kept, target, np.where(kept, w[target], dtype.type(0)), w


def _reduce(per_sample, grad, denominator, reduction):
    """Apply ``reduction`` to the per-sample losses and scale ``grad`` (in place) to match."""
    if reduction == "none":
        return per_sample, grad
    total = per_sample.sum()
    if reduction == "sum":
        return float(total), grad
    if denominator == 0:  # nothing counts: 0 / 0, as PyTorch; the gradient stays 0
        return float("nan"), grad
    grad /= denominator
    return float(total / denominator), grad


def cross_entropy(logits, labels, weight, ignore_index, reduction, label_smoothing):
    """Softmax cross-entropy with PyTorch's options.

    Parameters
    ----------
    logits : ndarray (N, C)
    labels : ndarray of int64 (N,)
        In ``[0, C)`` or equal to ``ignore_index`` (checked by the caller).
    weight : ndarray (C,) in logits' dtype, or None
    ignore_index : int
    reduction : {"mean", "sum", "none"}
    label_smoothing : float in [0, 1]

    Returns
    -------
    loss, dlogits (N, C)
        Sample i's loss is ``(1 - e) * w[y] * (-log p[y]) + e / C * sum_c w[c] * (-log p[c])``
        (0 when ignored); ``"mean"`` divides the sum by ``sum(w[y_i])`` over the rows kept.
    """
    n, classes = logits.shape
    dt = logits.dtype
    kept, target, wy, w = _targets(labels, weight, ignore_index, classes, dt)
    eps = label_smoothing
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(total)
    per_sample = -log_probs[rows, target] * wy * dt.type(1 - eps)
    coef = wy * dt.type(1 - eps)
    if eps:
        smooth = -(log_probs * w).sum(axis=1)
        per_sample += np.where(kept, smooth, dt.type(0)) * dt.type(eps / classes)
        coef = np.where(kept, coef + w.sum() * dt.type(eps / classes), dt.type(0))
    per_sample = np.where(kept, per_sample, dt.type(0))
    grad = exp / total * coef[:, None]
    grad[rows, target] -= wy * dt.type(1 - eps)
    if eps:
        grad -= np.where(kept[:, None], w * dt.type(eps / classes), dt.type(0))
    return _reduce(per_sample, grad, wy.sum(), reduction)


def nll_loss(log_probs, labels, weight, ignore_index, reduction):
    """Negative log-likelihood of log-probabilities (N, C): sample i's loss is ``-w[y] * x[i, y]``
    (0 when ignored). Same arguments and results as :func:`cross_entropy` (without smoothing)."""
    n, classes = log_probs.shape
    dt = log_probs.dtype
    kept, target, wy, _ = _targets(labels, weight, ignore_index, classes, dt)
    rows = np.arange(n)
    per_sample = np.where(kept, -(log_probs[rows, target] * wy), dt.type(0))
    grad = np.zeros_like(log_probs)
    grad[rows, target] = -wy
    return _reduce(per_sample, grad, wy.sum(), reduction)


def binary_cross_entropy_with_logits(x, target, weight, pos_weight, reduction):
    """``-w * (pw * t * log(sigmoid(x)) + (1 - t) * log(1 - sigmoid(x)))`` per element, in the
    stable form ``(1 - t) * x + (1 + (pw - 1) * t) * log(1 + exp(-x))`` with ``log(1 + exp(-x)) =
    log1p(exp(-|x|)) + max(-x, 0)``.

    ``weight`` and ``pos_weight`` are None or arrays of x's shape and dtype (broadcast by the
    caller); ``"mean"`` divides by ``x.size``. Returns ``(loss, dx)``.
    """
    dt = x.dtype
    one = dt.type(1)
    softplus_neg = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, dt.type(0))
    e = np.exp(-np.abs(x))
    sigmoid = np.where(x >= 0, one / (one + e), e / (one + e))
    if pos_weight is None:
        log_weight, positive = one, target
    else:
        log_weight, positive = (pos_weight - one) * target + one, pos_weight * target
    per_element = (one - target) * x + log_weight * softplus_neg
    grad = log_weight * sigmoid - positive
    if weight is not None:
        per_element *= weight
        grad *= weight
    return _reduce(per_element, grad.astype(dt, copy=False), x.size, reduction)


def mse_loss(pred, target, reduction):
    """``(pred - target) ** 2`` per element; ``"mean"`` divides by the size. Returns ``(loss, dpred)``
    with ``dpred = 2 (pred - target)`` (divided by the size for ``"mean"``)."""
    diff = pred - target
    per_element = diff * diff
    if reduction == "mean":
        return float(np.mean(per_element)), diff * diff.dtype.type(2.0 / diff.size)
    grad = diff * diff.dtype.type(2)
    return (float(per_element.sum()) if reduction == "sum" else per_element), grad
