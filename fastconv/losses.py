"""Loss functions with PyTorch's names, options and semantics.

A loss class checks its own constructor options; its ``forward`` calls :mod:`fastconv.functional`'s
``cross_entropy``, ``nll_loss``, ``binary_cross_entropy_with_logits`` or ``mse_loss``, which
validate the inputs and run the kernel tier's numerics, so every backend supplies its own and
device arrays stay on the device. The interface is the one :class:`fastconv.Trainer` drives:
``forward(input, target)`` (also ``__call__``) returns the loss (a float, or with
``reduction="none"`` an array of per-sample losses) and keeps its gradient;
``backward(grad_output=None)`` returns ``dloss/dinput``. An empty batch gives what PyTorch gives,
in the class as in the function: NaN for ``"mean"``, 0 for ``"sum"``, an empty array for ``"none"``.

:func:`class_weights` computes per-class weights from label counts, for imbalanced data.
:class:`CrossEntropyLoss` also takes any ``fn(logits, labels) -> (loss, dlogits)``.
"""
import numbers

import numpy as np

from . import functional as F
from ._backend import is_device_array, to_numpy as _host
from ._checks import integer, number, positive_int, reduction as check_reduction
from .functional.loss import _scale_grad

__all__ = ["log_softmax", "softmax_cross_entropy", "class_weights", "CrossEntropyLoss", "NLLLoss",
           "BCEWithLogitsLoss", "MSELoss"]


def log_softmax(logits):
    """Numerically stable row-wise log-softmax.

    Parameters
    ----------
    logits : ndarray, shape (N, classes)

    Returns
    -------
    ndarray
        ``logits - logsumexp(logits, axis=1)``, same dtype as ``logits``
        (:func:`fastconv.functional.log_softmax` along ``dim=1``).
    """
    return F.log_softmax(logits, 1)


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
        On bad shapes or out-of-range labels (TypeError on a non-numeric array).
    """
    return F.cross_entropy(logits, labels, backend=backend)


def class_weights(labels, num_classes=None, mode="balanced", dtype=np.float32):
    """Per-class loss weights from the label counts of (imbalanced) training data.

    ``mode="balanced"`` is scikit-learn's ``class_weight="balanced"`` rule, ``n_samples /
    (n_classes * count[c])``: a class with half the average count weighs 2, and the weighted
    counts are equal for every class (the only mode; the argument names the rule).

    Parameters
    ----------
    labels : int array (N,)
        Class indices in ``[0, num_classes)``.
    num_classes : int, optional
        Default ``labels.max() + 1``.
    mode : {"balanced"}
    dtype : float dtype of the result

    Returns
    -------
    ndarray (num_classes,)
        For ``CrossEntropyLoss(weight=...)`` or ``NLLLoss(weight=...)``.

    Raises
    ------
    ValueError
        On labels outside ``[0, num_classes)`` or a class without any sample (its weight would be
        infinite: leave it out, or give it a weight of your choice).
    """
    if mode != "balanced":
        raise ValueError(f"class_weights: unknown mode {mode!r}; the rule is 'balanced' "
                         "(n_samples / (n_classes * count))")
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.size == 0:
        raise ValueError(f"class_weights: labels must be a non-empty 1-D integer array, got shape "
                         f"{labels.shape} dtype {labels.dtype}")
    num_classes = (int(labels.max()) + 1 if num_classes is None
                   else positive_int(num_classes, "class_weights: num_classes"))
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"class_weights: labels must lie in [0, {num_classes}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    counts = np.bincount(labels, minlength=num_classes)
    if not counts.all():
        raise ValueError(f"class_weights: classes {np.flatnonzero(counts == 0)[:10].tolist()} have "
                         "no sample, so their balanced weight would be infinite")
    return (labels.size / (num_classes * counts.astype(np.float64))).astype(dtype)


def _array_option(a):
    """A weight option as given: None, a device array, or a NumPy array."""
    return a if a is None or is_device_array(a) else np.asarray(a)


class _Loss:
    """What the losses share: the reduction, the cached gradient and the chain rule of
    :meth:`backward`."""

    _per_row = True  # reduction="none": one loss per row (the class losses), else per element

    def __init__(self, reduction):
        self.reduction = check_reduction(reduction)
        self._grad = None
        self._loss_shape = None

    def _options(self, **options):
        """``name=value`` for the options that differ from their defaults (for the reprs)."""
        shown = []
        for name, (value, default) in options.items():
            if value is None and default is None:
                continue
            if value is not None and not isinstance(value, (str, numbers.Number)):
                value = np.round(np.asarray(_host(value), dtype=np.float64), 4).tolist()
            if value != default:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    def _keep(self, loss, grad):
        self._grad = grad
        self._loss_shape = tuple(loss.shape) if self.reduction == "none" else ()
        return loss

    def backward(self, grad_output=None):
        """``dloss/dinput`` of the last :meth:`forward` call, times ``grad_output``.

        Parameters
        ----------
        grad_output : float or array, optional
            The upstream gradient: a number (default 1) for ``reduction="mean"``/``"sum"``; for
            ``"none"`` it is required and has the shape of the per-sample losses.
        """
        if self._grad is None:
            raise RuntimeError("backward() called before forward()")
        if self.reduction != "none":
            if grad_output is None or (np.ndim(grad_output) == 0
                                       and not is_device_array(grad_output)
                                       and float(grad_output) == 1.0):
                return self._grad
            if np.ndim(grad_output) != 0 or is_device_array(grad_output):
                raise ValueError(f"grad_output of a reduced loss (reduction={self.reduction!r}) "
                                 f"is a number, got shape {np.shape(grad_output)}")
            return _scale_grad(self._grad, float(grad_output), self._per_row)
        if grad_output is None:
            raise ValueError("reduction='none' gives one loss per sample: pass backward(grad_output) "
                             f"with the losses' shape {self._loss_shape}")
        if tuple(np.shape(grad_output) if not is_device_array(grad_output)
                 else grad_output.shape) != self._loss_shape:
            raise ValueError(f"grad_output has shape {tuple(np.shape(grad_output))}, expected the "
                             f"losses' shape {self._loss_shape}")
        return _scale_grad(self._grad, grad_output, self._per_row)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy with PyTorch's options (``torch.nn.CrossEntropyLoss``).

    Parameters
    ----------
    weight : array (C,), optional
        A weight per class (e.g. from :func:`class_weights`).
    ignore_index : int
        Targets equal to it count for nothing (loss, gradient, the mean's denominator).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the summed weight of the targets kept (their count without
        ``weight``), as PyTorch.
    label_smoothing : float in [0, 1]
        Mixes the one-hot target with the uniform distribution (PyTorch's rule with weights:
        see :func:`fastconv.functional.cross_entropy`).
    fn : callable, optional (keyword)
        ``fn(logits, labels) -> (loss, dlogits)`` replacing the computation (then the other
        options must keep their defaults). Lets a backend swap in its own kernel.

    ``forward(logits (N, C), labels (N,))`` returns the loss; :meth:`backward` its gradient
    ``(N, C)``.

    Examples
    --------
    >>> loss_fn = CrossEntropyLoss()
    >>> loss = loss_fn(logits, labels)   # doctest: +SKIP
    >>> dlogits = loss_fn.backward()     # doctest: +SKIP
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, *,
                 fn=None):
        super().__init__(reduction)
        self.weight = _array_option(weight)
        self.ignore_index = integer(ignore_index, "ignore_index")
        self.label_smoothing = number(label_smoothing, "label_smoothing", 0, 1)
        if fn is not None and (weight is not None or self.ignore_index != -100
                               or self.reduction != "mean" or self.label_smoothing != 0):
            raise ValueError("CrossEntropyLoss: fn= replaces the whole computation; it cannot be "
                             "combined with weight, ignore_index, reduction or label_smoothing")
        self.fn = fn

    def forward(self, logits, labels):
        """Return the loss (a float; an array (N,) for ``reduction="none"``) and keep its
        gradient for :meth:`backward`."""
        if self.fn is not None:
            loss, self._grad = self.fn(logits, labels)
            self._loss_shape = ()
            return loss
        return self._keep(*F.cross_entropy(logits, labels, self.weight, self.ignore_index,
                                           self.reduction, self.label_smoothing))

    __call__ = forward

    def __repr__(self):
        return self._options(weight=(self.weight, None), ignore_index=(self.ignore_index, -100),
                             reduction=(self.reduction, "mean"),
                             label_smoothing=(self.label_smoothing, 0.0))


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (``torch.nn.NLLLoss``).

    Parameters
    ----------
    weight, ignore_index, reduction
        As in :class:`CrossEntropyLoss`; sample i's loss is ``-weight[y_i] * input[i, y_i]``.

    ``forward(input (N, C), labels (N,))`` takes log-probabilities (e.g. :func:`log_softmax` of
    logits), so ``NLLLoss()(log_softmax(z), y)`` equals ``CrossEntropyLoss()(z, y)``.
    """

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.weight = _array_option(weight)
        self.ignore_index = integer(ignore_index, "ignore_index")

    def forward(self, input, target):
        """Return the loss (float, or array (N,) for ``"none"``) and keep its gradient."""
        return self._keep(*F.nll_loss(input, target, self.weight, self.ignore_index,
                                      self.reduction))

    __call__ = forward

    def __repr__(self):
        return self._options(weight=(self.weight, None), ignore_index=(self.ignore_index, -100),
                             reduction=(self.reduction, "mean"))


class BCEWithLogitsLoss(_Loss):
    """Sigmoid plus binary cross-entropy in one numerically stable step
    (``torch.nn.BCEWithLogitsLoss``), for binary and multi-label targets.

    Parameters
    ----------
    weight : array broadcastable to the input's shape, optional
        Rescales each element's loss.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of elements.
    pos_weight : array broadcastable to the input's shape, optional
        Weight of the positive term per class, e.g. ``(C,)`` for ``(N, C)`` logits;
        ``negatives / positives`` of a class balances it.

    ``forward(input, target)`` takes logits and targets in [0, 1] of one shape.
    """

    _per_row = False

    def __init__(self, weight=None, reduction="mean", pos_weight=None):
        super().__init__(reduction)
        self.weight = _array_option(weight)
        self.pos_weight = _array_option(pos_weight)

    def forward(self, input, target):
        """Return the loss (float, or array of input's shape for ``"none"``); keep its gradient."""
        return self._keep(*F.binary_cross_entropy_with_logits(input, target, self.weight,
                                                              self.reduction, self.pos_weight))

    __call__ = forward

    def __repr__(self):
        return self._options(weight=(self.weight, None), reduction=(self.reduction, "mean"),
                             pos_weight=(self.pos_weight, None))


class MSELoss(_Loss):
    """Squared error, ``mean((pred - target) ** 2)`` over all elements by default
    (``torch.nn.MSELoss``; ``reduction`` ``"sum"`` or ``"none"`` as there).

    ``pred`` and ``target`` must share a shape (PyTorch would broadcast them with a warning).
    """

    _per_row = False

    def __init__(self, reduction="mean"):
        super().__init__(reduction)

    def forward(self, pred, target):
        """Return the loss (float, or array of pred's shape for ``"none"``); keep its gradient
        ``2 (pred - target)`` (divided by the size for ``"mean"``) in ``pred``'s dtype."""
        return self._keep(*F.mse_loss(pred, target, self.reduction))

    __call__ = forward

    def __repr__(self):
        return self._options(reduction=(self.reduction, "mean"))
