"""What every picture shares: matplotlib loaded on demand, a figure on its own Agg canvas, the
atomic PNG write, argument checks and the small layout helpers (mosaics, tile display, labels)."""
import math

import numpy as np

from .._checks import positive_int as _positive_int  # noqa: F401 - the viz modules import it from here
from .._io import atomic_write
from .._shapes import pair
from ..layers import Conv2d

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


def _short(layer):
    """A layer's label without keyword noise: ``Conv2d(1, 32, 3x3)``, ``MaxPool2d(2x2)``."""
    if isinstance(layer, Conv2d):
        return f"Conv2d({layer.in_channels}, {layer.out_channels}, {'x'.join(map(str, layer.kernel_size))})"
    kernel = getattr(layer, "kernel_size", None)
    if kernel is not None:
        return f"{type(layer).__name__}({'x'.join(map(str, pair(kernel, 'kernel_size')))})"
    return type(layer).__name__


def _bare(ax):
    """No ticks and no frame on ``ax`` (an image tile)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
