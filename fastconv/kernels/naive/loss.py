"""Naive softmax cross-entropy (shared by the cpu tier)."""
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
