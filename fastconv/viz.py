"""Pictures of a network: learned filters, feature maps, a confusion matrix, the worst mistakes.

Needs matplotlib, the optional extra (``pip install fastconv[plot]``); it is imported only when a
picture is drawn, so ``import fastconv.viz`` works without it and the NumPy helpers
(:func:`confusion_matrix`, :func:`worst_k`, :func:`feature_maps`) never need it.

Every picture is drawn on matplotlib's Agg canvas (no pyplot, no display, no global state) and
written as a PNG atomically: to a temporary file in the target's folder, then renamed over it.
A picture is a function of its inputs only, so the same model and input give the same bytes;
its size in pixels is ``figsize * dpi`` (each function takes both).

    from fastconv import viz
    viz.plot_filters(model[0], "filters.png")
    viz.plot_feature_maps(model, x_test[7], "maps.png")
    viz.plot_confusion(y_test, model.predict(x_test).argmax(1), "confusion.png")
    viz.plot_mistakes(model, x_test, y_test, "mistakes.png", k=25)
"""
import contextlib
import math
import numbers

import numpy as np

import fastconv

from ._backend import to_numpy
from ._io import atomic_write
from ._shapes import pair
from .layers import Conv2d
from .layers.module import eval_mode

__all__ = ["new_figure", "save_figure", "plot_filters", "feature_maps", "plot_feature_maps",
           "confusion_matrix", "plot_confusion", "per_sample_loss", "worst_k", "plot_mistakes"]

INSTALL = "pip install fastconv[plot]"


def _matplotlib(what):
    """matplotlib, with the figure, Agg canvas and colour modules loaded; a clear error without it."""
    try:
        import matplotlib
        import matplotlib.backends.backend_agg
        import matplotlib.colors
        import matplotlib.figure
    except ImportError as exc:
        raise ImportError(f"{what} needs matplotlib: {INSTALL} (or pip install matplotlib)") from exc
    return matplotlib


def new_figure(figsize, what="fastconv.viz"):
    """A matplotlib ``Figure`` of ``figsize`` inches on its own Agg canvas, constrained layout.

    ``what`` names the caller in the ImportError raised when matplotlib is missing.
    """
    mpl = _matplotlib(what)
    fig = mpl.figure.Figure(figsize=figsize, layout="constrained")
    mpl.backends.backend_agg.FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi=100):
    """Write ``fig`` to ``path`` as a PNG of ``figsize * dpi`` pixels, atomically (an interrupted
    write leaves ``path`` as it was, see ``fastconv._io.atomic_write``); return ``path``."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def _positive_int(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _size(figsize, default):
    if figsize is None:
        return default
    try:
        w, h = (float(v) for v in figsize)
    except (TypeError, ValueError):
        raise ValueError(f"figsize must be (width, height) in inches, got {figsize!r}") from None
    if not (w > 0 and h > 0):
        raise ValueError(f"figsize must be positive, got {figsize!r}")
    return w, h


# --- filters -------------------------------------------------------------------------------

def _grid_columns(n):
    """Columns of a near-square grid of ``n`` tiles, a power of two (32 -> 8 x 4)."""
    return min(n, 2 ** math.ceil(math.log2(math.sqrt(n)))) if n > 1 else 1


def _mosaic(tiles, rows, cols, gap=1):
    """``tiles`` (n, h, w) laid out row-major on a ``rows x cols`` grid, ``gap`` NaN pixels between tiles."""
    n, h, w = tiles.shape
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for i in range(n):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tiles[i]
    return out


def plot_filters(conv, path, combine="all", figsize=None, dpi=100, title=None):
    """Every filter of a :class:`~fastconv.Conv2d` as images on one symmetric colour scale.

    Parameters
    ----------
    conv : Conv2d
        Its ``weight`` is ``(out, in, FH, FW)``.
    path : str or Path
        The PNG to write.
    combine : {"all", "mean"}
        ``"all"``: every input-channel slice, one column per filter (output channel) with input
        channel ``c`` in row ``c``; a layer with one input channel is laid out as a near-square
        grid instead, filter ``i`` at row ``i // cols``, column ``i % cols``. ``"mean"``: each
        filter averaged over its input channels, on that grid.
    figsize : (float, float), optional
        Inches; default from the layout.
    dpi : int
    title : str, optional

    The colour scale is ``[-m, m]`` with ``m`` the largest ``|weight|``: red positive, blue
    negative, white zero; a colour bar gives the values. Returns ``path``.
    """
    if not isinstance(conv, Conv2d):
        raise TypeError(f"plot_filters needs a fastconv Conv2d layer, got {type(conv).__name__}")
    if combine not in ("all", "mean"):
        raise ValueError(f"combine must be 'all' or 'mean', got {combine!r}")
    w = np.asarray(to_numpy(conv.weight.data), dtype=np.float64)
    if combine == "mean":
        w = w.mean(axis=1, keepdims=True)
    n_out, n_in, fh, fw = w.shape
    if n_in == 1:
        cols = _grid_columns(n_out)
        rows = math.ceil(n_out / cols)
        image = _mosaic(w[:, 0], rows, cols)
        ticks_x = [(c * (fw + 1) + (fw - 1) / 2, str(c)) for c in range(cols)]
        ticks_y = [(r * (fh + 1) + (fh - 1) / 2, str(r * cols)) for r in range(rows)]
        xlabel, ylabel = "filter number = row label + column label", ""
    else:
        rows, cols = n_in, n_out
        image = _mosaic(w.transpose(1, 0, 2, 3).reshape(n_in * n_out, fh, fw), rows, cols)
        step_x, step_y = max(1, math.ceil(cols / 32)), max(1, math.ceil(rows / 32))
        ticks_x = [(c * (fw + 1) + (fw - 1) / 2, str(c)) for c in range(0, cols, step_x)]
        ticks_y = [(r * (fh + 1) + (fh - 1) / 2, str(r)) for r in range(0, rows, step_y)]
        xlabel, ylabel = "filter (output channel)", "input channel"
    m = float(np.nanmax(np.abs(image))) or 1.0
    height, width = image.shape
    scale = min(10.0 / width, 6.0 / height)  # inches per pixel of the mosaic
    default = (max(5.0, width * scale + 2.0), max(3.0, height * scale + 1.2))
    fig = new_figure(_size(figsize, default), "plot_filters")
    ax = fig.subplots()
    cmap = _matplotlib("plot_filters").colormaps["RdBu_r"].with_extremes(bad="0.55")  # grey gaps
    im = ax.imshow(image, cmap=cmap, vmin=-m, vmax=m, interpolation="nearest")
    ax.set_xticks([t for t, _ in ticks_x], [s for _, s in ticks_x], fontsize=7)
    ax.set_yticks([t for t, _ in ticks_y], [s for _, s in ticks_y], fontsize=7)
    ax.tick_params(length=0)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    for spine in ax.spines.values():
        spine.set_visible(False)
    mean = ", averaged over input channels" if combine == "mean" and conv.in_channels > 1 else ""
    ax.set_title(title or f"The {n_out} filters of {_short(conv)}{mean}", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, label="weight")
    return save_figure(fig, path, dpi)


# --- feature maps --------------------------------------------------------------------------

def _leaves(model, prefix=""):
    """``(name, layer)`` for every layer of ``model`` in forward order, nested containers opened."""
    children = model.named_children()
    if not children:
        return [(prefix.rstrip(".") or "0", model)]
    out = []
    for name, child in children:
        if child.named_children():
            out.extend(_leaves(child, f"{prefix}{name}."))
        else:
            out.append((prefix + name, child))
    return out


def _one_input(x):
    x = to_numpy(x) if hasattr(x, "copy_to_host") else np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"feature maps need one input (C, H, W) or (1, C, H, W), got shape {x.shape}")
    if x.dtype.kind not in "biuf":
        raise TypeError(f"the input must be a real numeric array, got dtype {x.dtype}")
    return x


def feature_maps(model, x, layers=None):
    """The activations of one input after each chosen layer, as NumPy arrays.

    Parameters
    ----------
    model : fastconv.Sequential (or any Module; nested containers are opened)
    x : ndarray
        One input, ``(C, H, W)`` or ``(1, C, H, W)``, as the model's first layer takes it
        (normalised as for training).
    layers : sequence of str or int, optional
        Names from ``model.named_children()`` (``"0"``, ``"3"``; ``"2.1"`` inside a nested
        Sequential); an int ``i`` means the name ``str(i)``. Default: every layer whose output is
        a stack of maps ``(N, C, H, W)`` (convolutions, activations and pools before the Flatten).

    Returns
    -------
    list of (name, layer, ndarray)
        In forward order; each array is the layer's output for the input without the batch axis:
        ``(C, H, W)`` for maps, ``(F,)`` after Flatten or Linear.

    The model runs in eval mode (dropout off, batch norm's running statistics), under
    ``fastconv.no_grad()`` when fastconv has it, for this call's thread only (see
    :func:`fastconv.layers.module.eval_mode`): the modules' own train/eval flags are not changed.
    """
    x = _one_input(x)
    leaves = _leaves(model)
    names = [name for name, _ in leaves]
    if layers is None:
        wanted, shape = set(), x.shape
        for name, layer in leaves:
            shape = layer.output_shape(shape)
            if len(shape) == 4:
                wanted.add(name)
    else:
        if isinstance(layers, (str, numbers.Integral)):
            layers = [layers]
        wanted = {str(int(n)) if isinstance(n, numbers.Integral) else n for n in layers}
        unknown = sorted(wanted - set(names), key=str)
        if unknown:
            raise ValueError(f"no layer named {', '.join(map(repr, unknown))}; the layers are {names}")
    if not wanted:
        raise ValueError("the model has no layer with feature-map output (N, C, H, W); pass layers=")
    last = max(names.index(n) for n in wanted)
    grad = fastconv.no_grad() if hasattr(fastconv, "no_grad") else contextlib.nullcontext()
    out = []
    with grad, eval_mode():  # eval mode for this thread only: the modules' flags stay as they are
        h = x
        for name, layer in leaves[:last + 1]:
            h = layer.forward(h)
            if name in wanted:
                out.append((name, layer, np.array(to_numpy(h))[0]))
    return out


def _short(layer):
    """A layer's label without keyword noise: ``Conv2d(1, 32, 3x3)``, ``MaxPool2d(2x2)``."""
    if isinstance(layer, Conv2d):
        return f"Conv2d({layer.in_channels}, {layer.out_channels}, {'x'.join(map(str, layer.kernel_size))})"
    kernel = getattr(layer, "kernel_size", None)
    if kernel is not None:
        return f"{type(layer).__name__}({'x'.join(map(str, pair(kernel, 'kernel_size')))})"
    return type(layer).__name__


def plot_feature_maps(model, x, path, layers=None, max_channels=16, figsize=None, dpi=100, title=None):
    """The input and its activations after each chosen layer, one row per layer.

    Parameters
    ----------
    model, x, layers
        As for :func:`feature_maps`; every chosen layer must output maps ``(N, C, H, W)``.
    path : str or Path
        The PNG to write.
    max_channels : int
        The first this many channels of each layer are shown (the row's label says how many
        there are).
    figsize, dpi, title
        Figure size in inches (default from the layout), resolution, an optional title.

    Each row is labelled with the layer's name, its type and its output shape (C, H, W) and has
    its own colour scale and colour bar: signed outputs (convolutions) on a symmetric red-blue
    scale, non-negative ones (ReLU, pools after it) from black (0) to yellow. Returns ``path``.
    """
    max_channels = _positive_int(max_channels, "max_channels")
    maps = feature_maps(model, x, layers)
    flat = [(name, layer, a.shape) for name, layer, a in maps if a.ndim != 3]
    if flat:
        name, layer, shape = flat[0]
        raise ValueError(f"layer {name} ({_short(layer)}) outputs shape {(1,) + shape}, not feature maps "
                         "(N, C, H, W); choose layers before the Flatten")
    x = _one_input(x)[0].astype(np.float64)
    rows = [("input", None, x)] + maps
    cols = min(max_channels, max(a.shape[0] for _, _, a in rows))
    default = (0.75 * cols + 3.0, 0.85 * len(rows) + 0.5)
    fig = new_figure(_size(figsize, default), "plot_feature_maps")
    mpl = _matplotlib("plot_feature_maps")
    axes = np.asarray(fig.subplots(len(rows), 1, squeeze=False))[:, 0]
    for ax, (name, layer, a) in zip(axes, rows):
        shown = a[:cols]
        lo, hi = float(np.min(shown)), float(np.max(shown))
        if layer is None:
            cmap, vmin, vmax = mpl.colormaps["gray"], lo, hi
        elif lo < 0:
            m = max(abs(lo), abs(hi)) or 1.0
            cmap, vmin, vmax = mpl.colormaps["RdBu_r"], -m, m
        else:
            cmap, vmin, vmax = mpl.colormaps["inferno"], 0.0, hi or 1.0
        w = shown.shape[2]
        gap = max(1, round(w / 7))  # in proportion to the maps, so that every row is equally wide
        im = ax.imshow(_mosaic(shown, 1, cols, gap), cmap=cmap.with_extremes(bad="white"), vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        ax.set_xticks([c * (w + gap) + (w - 1) / 2 for c in range(shown.shape[0])],
                      [str(c) for c in range(shown.shape[0])], fontsize=6)
        ax.set_yticks([])
        ax.tick_params(length=0, pad=1)
        for spine in ax.spines.values():
            spine.set_visible(False)
        label = "input" if layer is None else f"{name}: {_short(layer)}"
        more = f"\nfirst {cols} of {a.shape[0]}" if a.shape[0] > cols else ""
        ax.set_ylabel(f"{label}\n{a.shape}{more}", rotation=0, ha="right", va="center", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.9, aspect=8, pad=0.01).ax.tick_params(labelsize=6)
    axes[-1].set_xlabel("channel", fontsize=8)
    fig.suptitle(title or "Feature maps of one input, layer by layer (eval mode)", fontsize=10)
    return save_figure(fig, path, dpi)


# --- confusion matrix ----------------------------------------------------------------------

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


# --- mistakes ------------------------------------------------------------------------------

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


def _display(image):
    """One sample (C, H, W) as something imshow shows: (H, W) gray, or (H, W, 3) RGB in [0, 1]."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        return a
    if a.ndim != 3:
        raise ValueError(f"samples must be images (C, H, W), got shape {a.shape}")
    if a.shape[0] == 3:
        lo, hi = a.min(), a.max()
        return np.moveaxis((a - lo) / ((hi - lo) or 1.0), 0, -1)
    return a.mean(axis=0)


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
