"""Losses computed by the tiers: softmax cross-entropy."""
import numpy as np

from .._backend import is_device_array, kernels, resolve, to_device
from ._common import _array

__all__ = ["cross_entropy"]


def cross_entropy(logits, labels, backend=None):
    """Mean softmax cross-entropy: logits (N, classes), int labels (N,) -> (loss float, dlogits)."""
    name = resolve(backend, logits, labels)
    logits = _array(logits, "logits")
    if len(logits.shape) != 2:
        raise ValueError(f"logits must be 2-D (N, classes), got shape {tuple(logits.shape)}")
    if not is_device_array(labels):
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1]):
            raise ValueError(f"labels must lie in [0, {logits.shape[1]}), got values in "
                             f"[{labels.min()}, {labels.max()}]")
    if tuple(labels.shape) != (logits.shape[0],):
        raise ValueError(f"labels have shape {tuple(labels.shape)}, expected ({logits.shape[0]},) "
                         f"for logits {tuple(logits.shape)}")
    if logits.shape[0] == 0:  # the mean over no samples: NaN, as PyTorch gives
        dlogits = np.zeros(tuple(logits.shape), np.dtype(logits.dtype))
        return float("nan"), (to_device(dlogits) if is_device_array(logits) else dlogits)
    return kernels(name).softmax_cross_entropy(logits, labels)
