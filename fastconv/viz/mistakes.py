"""The confusion matrix and the worst mistakes: :func:`confusion_matrix`, :func:`plot_confusion`,
:func:`per_sample_loss`, :func:`worst_k` and :func:`plot_mistakes`."""
import math

import numpy as np

from ._figure import _display, _matplotlib, _positive_int, _size, new_figure, save_figure

__all__ = ["confusion_matrix", "plot_confusion", "per_sample_loss", "worst_k", "plot_mistakes"]


def _labels(y, name):
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of class labels, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"{name} holds a negative label ({y.min()})")
    return y.astype(np.int64)


def confusion_matrix(y_true, y_pred, num_classes=None):
    """Counts ``C[i, j]``: samples of true class ``i`` predicted as class ``j``.

    Parameters
    ----------
    y_true, y_pred : array_like of int, shape (N,)
    num_classes : int, optional
        Default: one more than the largest label in either array.

    Returns
    -------
    ndarray of int64, shape (num_classes, num_classes)
        Rows are true classes, columns predictions (scikit-learn's layout); the diagonal holds
        the correct predictions and ``C.sum() == N``.
    """
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {t.shape} and {p.shape}")
    top = int(max(t.max(), p.max()))
    n = top + 1 if num_classes is None else _positive_int(num_classes, "num_classes")
    if top >= n:
        raise ValueError(f"label {top} is out of range for num_classes={n}")
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n)


def plot_confusion(y_true, y_pred, path, num_classes=None, class_names=None, figsize=None, dpi=100,
                   title=None):
    """The confusion matrix as a heat map, each cell with its count; returns ``path``.

    Parameters
    ----------
    y_true, y_pred, num_classes
        As for :func:`confusion_matrix`.
    path : str or Path
        The PNG to write.
    class_names : sequence of str, optional
        Tick labels (default: the class numbers).
    figsize, dpi, title
        Figure size in inches (default (6.4, 5.6)), resolution, an optional title (default: the
        accuracy and the most frequent confusion).

    The colour of a cell is the fraction of its true class (its row) on a log scale from 0.01% to
    100%, so that single mistakes show beside the large diagonal; empty cells stay white.
    """
    cm = confusion_matrix(y_true, y_pred, num_classes)
    n = cm.shape[0]
    names = [str(i) for i in range(n)] if class_names is None else [str(s) for s in class_names]
    if len(names) != n:
        raise ValueError(f"class_names has {len(names)} names for {n} classes")
    mpl = _matplotlib("plot_confusion")
    fraction = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = new_figure(_size(figsize, (6.4, 5.6)), "plot_confusion")
    ax = fig.subplots()
    shown = np.ma.masked_equal(fraction, 0)
    im = ax.imshow(shown, cmap=mpl.colormaps["Blues"].with_extremes(bad="white"),
                   norm=mpl.colors.LogNorm(vmin=1e-4, vmax=1.0), interpolation="nearest")
    if n <= 30:
        size = 8 if n <= 12 else 6
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=size,
                    color="white" if fraction[i, j] > 0.1 else "black")
    ax.set_xticks(range(n), names, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    if title is None:
        off = cm - np.diag(np.diag(cm))
        title = f"{np.trace(cm) / cm.sum():.2%} of {cm.sum():,} correct"
        if off.any():
            i, j = np.unravel_index(np.argmax(off), off.shape)
            title += f"; most confused: true {names[i]} as {names[j]} ({off[i, j]}x)"
    ax.set_title(title, fontsize=9)
    bar = fig.colorbar(im, ax=ax, shrink=0.85, label="share of the true class (log scale)")
    bar.set_ticks([1e-4, 1e-3, 1e-2, 1e-1, 1.0], labels=["0.01%", "0.1%", "1%", "10%", "100%"])
    bar.minorticks_off()
    return save_figure(fig, path, dpi)


def per_sample_loss(logits, y):
    """Softmax cross-entropy of every sample and its class probabilities, in float64.

    Parameters
    ----------
    logits : array_like, shape (N, classes)
    y : array_like of int, shape (N,)

    Returns
    -------
    loss : ndarray, shape (N,)
        ``logsumexp(logits[n]) - logits[n, y[n]]``, computed stably (the row maximum subtracted).
    probs : ndarray, shape (N, classes)
        ``softmax(logits[n])``.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"logits must be (N, classes) with N >= 1, got shape {z.shape}")
    y = _labels(y, "y")
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"{y.shape[0]} labels for {z.shape[0]} samples")
    if y.max() >= z.shape[1]:
        raise ValueError(f"label {y.max()} is out of range for {z.shape[1]} classes")
    shifted = z - z.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(y)), y], np.exp(log_probs)


def _worst(logits, y, k):
    loss, probs = per_sample_loss(logits, y)
    k = _positive_int(k, "k")
    if k > len(loss):
        raise ValueError(f"k={k} is more than the {len(loss)} samples")
    order = np.argsort(-loss, kind="stable")[:k]
    return order, loss, probs


def worst_k(model, x, y, k, batch_size=256):
    """The ``k`` samples with the highest cross-entropy loss under ``model.predict``.

    Parameters
    ----------
    model : fastconv.Sequential
        Its ``predict(x)`` gives logits ``(N, classes)`` (eval mode).
    x : ndarray, shape (N, ...)
    y : array_like of int, shape (N,)
    k : int
        ``1 <= k <= N``.

    Returns
    -------
    indices : ndarray of int, shape (k,)
        Into ``x``, highest loss first (ties keep the earlier sample first).
    losses : ndarray of float64, shape (k,)
        Their losses (:func:`per_sample_loss`), non-increasing.
    """
    order, loss, _ = _worst(model.predict(x, batch_size=batch_size), y, k)
    return order, loss[order]


def plot_mistakes(model, x, y, path, k=25, class_names=None, batch_size=256, figsize=None, dpi=100,
                  title=None):
    """The ``k`` samples with the highest loss, each with its true and predicted label.

    Parameters
    ----------
    model, x, y, k, batch_size
        As for :func:`worst_k`; ``x`` holds images ``(N, C, H, W)`` as the model takes them.
    path : str or Path
        The PNG to write.
    class_names : sequence of str, optional
        Labels to print instead of the class numbers.
    figsize, dpi, title
        Figure size in inches (default from the grid), resolution, an optional title.

    Tiles are in order of loss, highest first, left to right; each is titled ``true t -> p``
    with the probability the model gave its prediction ``p`` and the sample's loss. A correctly
    classified sample among them (possible when ``k`` exceeds the mistakes) is titled in black,
    a mistake in red. Returns ``path``.
    """
    xs = np.asarray(x)
    if xs.ndim != 4:
        raise ValueError(f"x must be images (N, C, H, W), got shape {xs.shape}")
    order, loss, probs = _worst(model.predict(xs, batch_size=batch_size), y, k)
    y = np.asarray(y)
    names = None if class_names is None else [str(s) for s in class_names]
    if names is not None and len(names) != probs.shape[1]:
        raise ValueError(f"class_names has {len(names)} names for {probs.shape[1]} classes")

    def name(c):
        return names[c] if names else str(c)
    cols = min(len(order), max(1, math.ceil(math.sqrt(len(order)))))
    rows = math.ceil(len(order) / cols)
    fig = new_figure(_size(figsize, (1.45 * cols + 0.3, 1.6 * rows + 0.5)), "plot_mistakes")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, order):
        pred = int(np.argmax(probs[i]))
        image = _display(xs[i])
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        ax.set_title(f"true {name(int(y[i]))} \u2192 {name(pred)}\np={probs[i, pred]:.2f}  loss {loss[i]:.1f}",
                     fontsize=7, color="black" if pred == y[i] else "tab:red", pad=2)
    fig.suptitle(title or f"The {len(order)} samples with the highest loss (of {len(y):,}), highest first",
                 fontsize=10)
    return save_figure(fig, path, dpi)
