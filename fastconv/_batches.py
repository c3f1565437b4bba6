"""The Trainer's two kinds of data behind one interface: checked arrays (:class:`ArraySource`)
and a :class:`fastconv.data.Dataset` read a batch at a time (:class:`DatasetSource`).

Both give ``len``, ``take(idx)`` (the batch of the samples ``idx``, checked and cast to the
model's dtype), ``part(start, stop)``, ``predict(model, batch_size)`` and ``digest()`` (what
several ranks compare to check they were given the same data). :func:`source` picks one.
"""
import zlib

import numpy as np

from .data import Subset, is_dataset

__all__ = ["check_batch", "source", "ArraySource", "DatasetSource"]


def check_batch(x, y, dtype, name="x", dataset=False):
    """``(x, y)`` as (a contiguous float array in ``dtype``, int64 labels), checked: float images
    (integer pixels are refused, the Trainer never guesses how to scale them), a batch of at
    least 2 dimensions, and as many 1-D integer labels as samples, at least one."""
    x, y = np.asarray(x), np.asarray(y)
    if x.dtype.kind != "f":
        hint = (" (uint8 pixels: e.g. fastconv.datasets.normalize(x) for MNIST-like images, "
                "which scales by 1/255 and uses MNIST's mean and std; other data sets need "
                "their own statistics)" if x.dtype.kind in "iu" else "")
        if dataset and hint:
            hint += (": give the Dataset a transform that does it per batch, e.g. "
                     "IDXDataset(images, labels, transform=fastconv.datasets.normalize)")
        raise TypeError(f"{name}: the Trainer takes float images, got dtype {x.dtype} (shape "
                        f"{x.shape}); it does not guess how to scale them: convert them "
                        f"explicitly" + hint)
    if x.ndim < 2:
        raise ValueError(f"{name}: expected a batch (N, C, H, W), got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=dtype)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"{name}: labels must be a 1-D integer array, "
                         f"got shape {y.shape} dtype {y.dtype}")
    if len(y) != len(x) or len(x) == 0:
        raise ValueError(f"{name}: {len(x)} samples (shape {x.shape}) but {len(y)} labels"
                         + (" (empty)" if len(x) == 0 else ""))
    return x, y.astype(np.int64, copy=False)


def source(x, y, dtype, name="x"):
    """Arrays ``x, y`` (checked and cast once, here) or a Dataset ``x`` (``y`` None, each batch
    checked as it is read) as a source of training or evaluation batches in ``dtype``."""
    if is_dataset(x):
        if y is not None:
            raise ValueError(f"{name} is a Dataset, which gives its own labels: pass y=None "
                             f"(got y of type {type(y).__name__})")
        if len(x) == 0:
            raise ValueError(f"{name}: the Dataset is empty")
        return DatasetSource(x, dtype, name)
    if y is None:
        raise ValueError(f"{name}: labels y are needed with arrays (or pass a fastconv.data.Dataset "
                         f"giving (x, y) batches)")
    return ArraySource(*check_batch(x, y, dtype, name))


def _crc(*arrays):
    return zlib.crc32(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays))


class ArraySource:
    """Training or evaluation data held as checked arrays ``x`` (model dtype) and ``y`` (int64)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def take(self, idx):
        """The batch ``(x[idx], y[idx])`` (``idx`` an index array or a slice)."""
        return self.x[idx], self.y[idx]

    def part(self, start, stop):
        return ArraySource(self.x[start:stop], self.y[start:stop])

    def predict(self, model, batch_size):
        """``(logits, labels)`` of every sample (under the caller's no_grad)."""
        return model.predict(self.x, batch_size=batch_size), self.y

    def digest(self):
        x = self.x
        return tuple(x.shape), str(x.dtype), _crc(x[0], x[-1]), _crc(self.y)


class DatasetSource:
    """A :class:`fastconv.data.Dataset` read a batch at a time, each batch checked and cast to
    ``dtype`` as arrays are (:func:`check_batch`)."""

    def __init__(self, dataset, dtype, name):
        self.dataset, self.dtype, self.name = dataset, dtype, name

    def __len__(self):
        return len(self.dataset)

    def take(self, idx):
        """The checked batch of the samples ``idx`` (an index array or a slice)."""
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(len(self.dataset)))
        batch = self.dataset[idx]
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"{self.name}: a Dataset's __getitem__(indices) must return a pair "
                            f"(x, y), got {type(batch).__name__}")
        x, y = check_batch(*batch, self.dtype, name=f"{self.name} (a batch of "
                           f"{type(self.dataset).__name__})", dataset=True)
        if len(y) != len(idx):
            raise ValueError(f"{self.name}: the Dataset returned {len(y)} samples for {len(idx)} indices")
        return x, y

    def part(self, start, stop):
        return DatasetSource(Subset(self.dataset, np.arange(start, stop)), self.dtype, self.name)

    def predict(self, model, batch_size):
        """``(logits, labels)`` of every sample, ``batch_size`` at a time (the batches
        ``model.predict`` of the arrays would run)."""
        logits, labels = [], []
        for i in range(0, len(self), batch_size):
            x, y = self.take(slice(i, i + batch_size))
            logits.append(model.predict(x, batch_size=batch_size))
            labels.append(y)
        return np.concatenate(logits), np.concatenate(labels)

    def digest(self):
        x, y = self.take(np.unique([0, len(self) - 1]))
        return type(self.dataset).__qualname__, len(self), tuple(x.shape[1:]), str(x.dtype), _crc(x, y)
