"""Where a network looks: saliency maps, the absolute input gradient of a class score (Simonyan,
Vedaldi and Zisserman 2013): :func:`saliency`, :func:`plot_saliency` and, for the worst mistakes,
:func:`plot_mistake_saliency`."""
import math

import numpy as np

from ._backprop import input_gradient, logits_net, private_copy
from ._figure import _bare, _display, _matplotlib, _positive_int, _size, new_figure, save_figure
from .mistakes import _worst

__all__ = ["saliency", "plot_saliency", "plot_mistake_saliency"]


def _images(x):
    xs = np.asarray(x)
    if xs.ndim != 4 or xs.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of images (N, C, H, W), got shape {xs.shape}")
    if xs.dtype.kind not in "biuf":
        raise TypeError(f"x must be a real numeric array, got dtype {xs.dtype}")
    return xs


def _targets(target, n):
    """None, or ``target`` as an int array of shape (n,) (one int is every sample's class)."""
    if target is None:
        return None
    t = np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must be an int class or an int array, got {target!r}")
    if t.ndim == 0:
        t = np.full(n, int(t))
    if t.shape != (n,):
        raise ValueError(f"target must be one class or one per image, {n} of them; got shape {t.shape}")
    if t.min() < 0:
        raise ValueError(f"target holds a negative class ({t.min()})")
    return t.astype(np.int64)


def saliency(model, x, target=None, batch_size=64):
    """``|d score / d x|`` of one class score per image, the largest over the image's channels.

    Parameters
    ----------
    model : fastconv.Module
        Gives class scores ``(N, classes)``; a final Softmax or LogSoftmax of a Sequential is
        left out, so the score is the pre-softmax logit (as in Simonyan et al.).
    x : ndarray, shape (N, C, H, W)
        Images as the model takes them (normalised as for training).
    target : int or array_like of int, shape (N,), optional
        The class whose score is differentiated; default each image's predicted class.
    batch_size : int
        Images per forward/backward.

    Returns
    -------
    ndarray, shape (N, H, W)
        In the model's dtype. The model runs in eval mode (for this thread only) on a private
        copy: its weights, gradients, caches and train/eval flags are not touched.
    """
    xs = _images(x)
    targets = _targets(target, len(xs))
    batch_size = _positive_int(batch_size, "batch_size")
    net = logits_net(private_copy(model))
    out = []
    for i in range(0, len(xs), batch_size):
        chosen = None if targets is None else targets[i:i + batch_size]

        def seed(z, chosen=chosen):
            if z.ndim != 2:
                raise ValueError(f"the model must output class scores (N, classes), got shape {z.shape}")
            c = z.argmax(axis=1) if chosen is None else chosen
            if c.max() >= z.shape[1]:
                raise ValueError(f"target class {c.max()} is out of range for {z.shape[1]} classes")
            dz = np.zeros_like(z)
            dz[np.arange(len(z)), c] = 1
            return dz
        _, dx = input_gradient(net, xs[i:i + batch_size], seed)
        out.append(np.abs(dx).max(axis=1))
    return np.concatenate(out)


def _group_columns(n, width):
    """Groups of ``width`` tiles per row for ``n`` groups, so that the grid is near square."""
    return max(1, min(n, round(math.sqrt(n / width))))


def _map(ax, image, smap, vmax, title):
    """``smap`` on a black-to-yellow scale up to ``vmax``, the image's outline over it in cyan."""
    ax.imshow(smap, cmap="inferno", vmin=0, vmax=vmax or 1.0, interpolation="nearest")
    gray = np.asarray(image, dtype=np.float64).mean(axis=0)
    lo, hi = gray.min(), gray.max()
    if hi > lo:
        ax.contour(gray, levels=[(lo + hi) / 2], colors="cyan", linewidths=0.5)
    _bare(ax)
    ax.set_title(title, fontsize=7, pad=2)


def _picture(ax, image, title, color="black"):
    shown = _display(image)
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, interpolation="nearest")
    _bare(ax)
    ax.set_title(title, fontsize=7, pad=2, color=color)


def _grid(n, width, figsize, what):
    groups = _group_columns(n, width)
    rows = math.ceil(n / groups)
    fig = new_figure(_size(figsize, (1.1 * width * groups + 0.3, 1.25 * rows + 0.6)), what)
    axes = np.asarray(fig.subplots(rows, width * groups, squeeze=False))
    for ax in axes.ravel():
        ax.axis("off")
    return fig, [axes[i // groups, (i % groups) * width:(i % groups + 1) * width] for i in range(n)]


def _namer(class_names, classes):
    names = None if class_names is None else [str(s) for s in class_names]
    if names is not None and len(names) != classes:
        raise ValueError(f"class_names has {len(names)} names for {classes} classes")
    return (lambda c: names[c]) if names else str


def plot_saliency(model, x, path, target=None, y=None, class_names=None, batch_size=64, figsize=None,
                  dpi=100, title=None):
    """Each image beside its saliency map (:func:`saliency`); returns ``path``.

    Parameters
    ----------
    model, x, target, batch_size
        As for :func:`saliency`; every image of ``x`` is drawn, so pass a few.
    path : str or Path
        The PNG to write.
    y : array_like of int, shape (N,), optional
        True labels: the image's title then reads ``true t -> p`` (red for a mistake).
    class_names : sequence of str, optional
    figsize, dpi, title

    Each map has its own scale, from 0 (black) to its largest value (yellow), with the image's
    outline (half way between its darkest and brightest pixel) in cyan.
    """
    _matplotlib("plot_saliency")  # before the gradients: without matplotlib, fail at once
    xs = _images(x)
    maps = saliency(model, xs, target, batch_size)
    scores = model.predict(xs, batch_size=batch_size)
    pred = scores.argmax(axis=1)
    used = pred if target is None else _targets(target, len(xs))
    name = _namer(class_names, scores.shape[1])
    truth = None if y is None else np.asarray(y)
    if truth is not None and truth.shape != (len(xs),):
        raise ValueError(f"y must hold one label per image, {len(xs)}; got shape {truth.shape}")
    fig, cells = _grid(len(xs), 2, figsize, "plot_saliency")
    for (a, b), image, smap, p, c, i in zip(cells, xs, maps, pred, used, range(len(xs))):
        a.axis("on")
        b.axis("on")
        if truth is None:
            _picture(a, image, f"predicted {name(int(p))}")
        else:
            _picture(a, image, f"true {name(int(truth[i]))} \u2192 {name(int(p))}",
                     "black" if truth[i] == p else "tab:red")
        _map(b, image, smap, float(smap.max()), f"|\u2202z{name(int(c))}/\u2202x|")
    fig.suptitle(title or "Saliency |\u2202z/\u2202x|: each image beside the gradient of\n"
                 "the class score z named over its map (max over channels)", fontsize=9)
    return save_figure(fig, path, dpi)


def plot_mistake_saliency(model, x, y, path, k=8, class_names=None, batch_size=256, figsize=None, dpi=100,
                          title=None):
    """The ``k`` samples with the highest loss (as :func:`plot_mistakes`), each beside two saliency
    maps: of the predicted class's score and of the true class's score; returns ``path``.

    Parameters
    ----------
    model, x, y, k, class_names, batch_size
        As for :func:`fastconv.viz.plot_mistakes`.
    path : str or Path
    figsize, dpi, title

    The two maps of a sample share one scale (0 to the larger maximum), so their brightness
    compares: where the predicted class's map is bright and the true class's dark, those pixels
    drove the mistake. The image's outline is drawn in cyan over both.
    """
    _matplotlib("plot_mistake_saliency")
    xs = _images(x)
    order, loss, probs = _worst(model.predict(xs, batch_size=batch_size), y, k)
    y = np.asarray(y)
    pred = probs.argmax(axis=1)[order]
    name = _namer(class_names, probs.shape[1])
    picked = xs[order]
    both = saliency(model, np.concatenate([picked, picked]), np.concatenate([pred, y[order]]), batch_size)
    fig, cells = _grid(len(order), 3, figsize, "plot_mistake_saliency")
    for (a, b, c), i, image, p, s_pred, s_true in zip(cells, order, picked, pred, both[:len(order)],
                                                     both[len(order):]):
        for ax in (a, b, c):
            ax.axis("on")
        t = int(y[i])
        _picture(a, image, f"true {name(t)} \u2192 {name(int(p))}\np={probs[i, p]:.2f} loss {loss[i]:.1f}",
                 "black" if p == t else "tab:red")
        vmax = float(max(s_pred.max(), s_true.max()))
        _map(b, image, s_pred, vmax, f"of {name(int(p))} (predicted)")
        _map(c, image, s_true, vmax, f"of {name(t)} (true)")
    fig.suptitle(title or f"Saliency |\u2202z/\u2202x| of the {len(order)} samples with the highest loss "
                 f"(of {len(y):,}):\nthe score z of the predicted class, then of the true class, on one scale",
                 fontsize=9)
    return save_figure(fig, path, dpi)
