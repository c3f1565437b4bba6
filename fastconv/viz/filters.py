"""Filters and feature maps: a Conv2d's weights as images (:func:`plot_filters`) and one input's
activations layer by layer (:func:`feature_maps`, :func:`plot_feature_maps`)."""
import math
import numbers

import numpy as np

from .._backend import to_numpy
from .._grad import no_grad
from ..layers import Conv2d
from ..layers.module import eval_mode
from ._figure import _grid_columns, _matplotlib, _mosaic, _positive_int, _short, _size, new_figure, save_figure

__all__ = ["plot_filters", "feature_maps", "plot_feature_maps"]


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
    :func:`fastconv.no_grad`, for this call's thread only (see
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
    out = []
    with no_grad(), eval_mode():  # eval mode for this thread only: the modules' flags stay as they are
        h = x
        for name, layer in leaves[:last + 1]:
            h = layer.forward(h)
            if name in wanted:
                out.append((name, layer, np.array(to_numpy(h))[0]))
    return out


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
