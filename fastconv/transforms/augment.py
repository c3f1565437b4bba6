"""Batch augmentations: callables ``t(x, rng) -> x`` on float batches ``(N, C, H, W)``, each
image drawn independently from ``rng``.

* :class:`RandomCrop` (with padding) and :class:`RandomHorizontalFlip` (torchvision's, on a batch);
* :class:`RandomShift`, :class:`RandomAffine` and :class:`ElasticDistortion` (the classes of
  :func:`random_shift`, :func:`random_affine` and :func:`elastic_distortion`; whole-pixel
  translation is :func:`shift_images`), which fill uncovered pixels with each image's minimum;
* :class:`Compose` to chain transforms (the fitted preprocessing of
  :mod:`fastconv.transforms.preprocess` included).

Shape (but for RandomCrop's size) and dtype are preserved and the output depends only on the
input and the state of ``rng``.
"""
import numbers

import numpy as np

from .._checks import generator, pair

__all__ = ["RandomCrop", "RandomHorizontalFlip", "Compose", "shift_images", "random_shift",
           "random_affine", "elastic_distortion", "RandomShift", "RandomAffine", "ElasticDistortion"]


def _batch(x, what):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{what}: expected a batch of shape (N, C, H, W), got shape {x.shape}")
    return x


def _positive_pair(v, name):
    hw = pair(v, name)
    if min(hw) < 1:
        raise ValueError(f"{name} must be a positive int or a pair (h, w) of them, got {v!r}")
    return hw


def _padding(padding):
    """torchvision's padding: int, (left/right, top/bottom) or (left, top, right, bottom)."""
    if padding is None:
        return (0, 0, 0, 0)
    p = (padding,) if isinstance(padding, numbers.Integral) else tuple(padding)
    if len(p) not in (1, 2, 4) or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                          and v >= 0 for v in p):
        raise ValueError(f"padding must be an int >= 0 or a tuple of 2 or 4 of them, got {padding!r}")
    p = tuple(int(v) for v in p)
    return p * 4 if len(p) == 1 else (p * 2 if len(p) == 2 else p)


_PAD_MODES = ("constant", "edge", "reflect", "symmetric")  # np.pad's modes of those names


class RandomCrop:
    """Crop each image of a batch at a random place, after optional padding
    (``torchvision.transforms.RandomCrop`` on a batch).

    Parameters
    ----------
    size : int or (h, w)
        Of the output images.
    padding : int or tuple, optional
        Added on each border first: an int for all four, ``(left/right, top/bottom)`` or
        ``(left, top, right, bottom)`` (torchvision's order). E.g. ``RandomCrop(28, padding=2)``
        shifts MNIST digits by up to 2 pixels; ``RandomCrop(32, 4)`` is the CIFAR recipe.
    fill : number
        The value of constant padding.
    padding_mode : {"constant", "edge", "reflect", "symmetric"}
        As torchvision (NumPy's ``np.pad`` modes of the same names).

    ``t(x, rng)``: x (N, C, H, W) -> (N, C, h, w) in x's dtype. Per image the top offset is drawn
    first for the whole batch (``rng.integers(0, H' - h + 1, N)``), then the left one, uniformly
    over the padded size H' x W'.
    """

    def __init__(self, size, padding=None, fill=0, padding_mode="constant"):
        self.size = _positive_pair(size, "size")
        self.padding = _padding(padding)
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"padding_mode must be one of {_PAD_MODES}, got {padding_mode!r}")
        if not isinstance(fill, numbers.Real) or isinstance(fill, bool):
            raise ValueError(f"fill must be a number, got {fill!r}")
        self.fill, self.padding_mode = fill, padding_mode

    def __call__(self, x, rng=None):
        x = _batch(x, "RandomCrop")
        rng = generator(rng, fresh=True)
        left, top, right, bottom = self.padding
        if any(self.padding):
            kwargs = {"constant_values": self.fill} if self.padding_mode == "constant" else {}
            x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)),
                       mode=self.padding_mode, **kwargs)
        n, c, hp, wp = x.shape
        h, w = self.size
        if h > hp or w > wp:
            raise ValueError(f"RandomCrop: crop size {self.size} is larger than the padded images "
                             f"({hp}, {wp})")
        i = rng.integers(0, hp - h + 1, n)
        j = rng.integers(0, wp - w + 1, n)
        rows = (i[:, None] + np.arange(h))[:, None, :, None]
        cols = (j[:, None] + np.arange(w))[:, None, None, :]
        return x[np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None], rows, cols]

    def __repr__(self):
        extra = "" if self.padding_mode == "constant" else f", padding_mode={self.padding_mode!r}"
        fill = "" if self.fill == 0 else f", fill={self.fill}"
        return f"RandomCrop(size={self.size}, padding={self.padding}{fill}{extra})"


class RandomHorizontalFlip:
    """Mirror each image of a batch left-right with probability ``p``
    (``torchvision.transforms.RandomHorizontalFlip`` on a batch).

    ``t(x, rng)``: x (N, C, H, W) -> same shape and dtype; image n is flipped where
    ``rng.random(N)[n] < p``. (Not for digits, whose mirror images are other symbols.)
    """

    def __init__(self, p=0.5):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)

    def __call__(self, x, rng=None):
        x = _batch(x, "RandomHorizontalFlip")
        flip = generator(rng, fresh=True).random(len(x)) < self.p
        return np.where(flip[:, None, None, None], x[..., ::-1], x)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply transforms in order, each as ``t(x, rng)`` with the same generator
    (``torchvision.transforms.Compose`` for batches). Fitted preprocessing (``Standardize``, ...)
    and the callables of :mod:`fastconv.datasets` may be mixed in.
    """

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable as t(x, rng)")

    def __call__(self, x, rng=None):
        rng = generator(rng, fresh=True)
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"


# --- shifts, affine maps and elastic distortion (background fill) ----------------------------

def _rng(rng):
    """A Generator (or any object with its ``integers``, ``uniform`` methods: a stub in tests)
    as is; None or any seed ``default_rng`` takes -> ``default_rng(rng)``. Wider than
    :func:`fastconv._checks.generator`, as these functions have always been."""
    return rng if hasattr(rng, "integers") else np.random.default_rng(rng)


def _background(x):
    """Per-image, per-channel minimum, shape ``(N, C, 1, 1)``: the fill value."""
    return x.min(axis=(2, 3), keepdims=True)


def shift_images(x, dy, dx):
    """Translate each image by a whole number of pixels.

    Parameters
    ----------
    x : ndarray, shape ``(N, C, H, W)``
    dy, dx : int or int array of shape ``(N,)``
        Shift down / right (negative: up / left): ``out[..., i, j] = x[..., i - dy, j - dx]``.
        Uncovered pixels get the minimum of that image and channel (the background).

    Returns
    -------
    ndarray, same shape and dtype as ``x``
    """
    x = _batch(x, "shift_images")
    n, c, h, w = x.shape
    dy = np.broadcast_to(np.asarray(dy, dtype=np.intp), (n,))
    dx = np.broadcast_to(np.asarray(dx, dtype=np.intp), (n,))
    rows = np.arange(h) - dy[:, None]  # (N, H) source row of each output row
    cols = np.arange(w) - dx[:, None]  # (N, W)
    valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    out = x[
        np.arange(n)[:, None, None, None],
        np.arange(c)[None, :, None, None],
        rows.clip(0, h - 1)[:, None, :, None],
        cols.clip(0, w - 1)[:, None, None, :],
    ]
    return np.where(valid[:, None], out, _background(x))


def random_shift(x, max_shift=2, rng=None):
    """Shift each image by integers ``dy, dx`` drawn uniformly in ``[-max_shift, max_shift]``.

    Parameters
    ----------
    x : ndarray, shape ``(N, C, H, W)``
    max_shift : int
    rng : numpy.random.Generator or int seed, optional

    Returns
    -------
    ndarray, same shape and dtype as ``x`` (background fill as in :func:`shift_images`)
    """
    x = _batch(x, "random_shift")
    dy, dx = _rng(rng).integers(-max_shift, max_shift + 1, size=(2, len(x)))
    return shift_images(x, dy, dx)


def _sample_bilinear(x, sy, sx):
    """Sample ``x (N, C, H, W)`` at float source coordinates ``sy, sx (N, H, W)``.

    Neighbours outside the image read the per-image background (minimum).
    """
    n, c, h, w = x.shape
    y0, x0 = np.floor(sy).astype(np.intp), np.floor(sx).astype(np.intp)
    wy, wx = (sy - y0)[:, None], (sx - x0)[:, None]
    fill = _background(x)
    ni, ci = np.arange(n)[:, None, None, None], np.arange(c)[None, :, None, None]

    def tap(yi, xi):
        valid = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w))[:, None]
        v = x[ni, ci, yi.clip(0, h - 1)[:, None], xi.clip(0, w - 1)[:, None]]
        return np.where(valid, v, fill)

    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bottom = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    return (top * (1 - wy) + bottom * wy).astype(x.dtype)


def random_affine(x, degrees=10.0, translate=2.0, scale=(0.9, 1.1), rng=None):
    """Random rotation, scaling and translation of each image (bilinear, about the centre).

    Parameters
    ----------
    x : ndarray, shape ``(N, C, H, W)``, floating
    degrees : float
        Rotation angle drawn uniformly in ``[-degrees, degrees]``.
    translate : float
        Shift in pixels drawn uniformly in ``[-translate, translate]`` per axis.
    scale : (float, float)
        Zoom factor drawn uniformly in ``[scale[0], scale[1]]``.
    rng : numpy.random.Generator or int seed, optional

    Returns
    -------
    ndarray, same shape and dtype as ``x``
        Each output pixel is read from its inverse-mapped source position;
        pixels mapped from outside the image get the image's minimum.
    """
    x = _batch(x, "random_affine")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"random_affine expects a floating batch, got {x.dtype}")
    n, _, h, w = x.shape
    rng = _rng(rng)
    theta = np.deg2rad(rng.uniform(-degrees, degrees, n))[:, None, None]
    s = rng.uniform(scale[0], scale[1], n)[:, None, None]
    ty, tx = rng.uniform(-translate, translate, (2, n))[:, :, None, None]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w]
    oy, ox = yy - cy - ty, xx - cx - tx  # output coordinates relative to the moved centre
    cos, sin = np.cos(theta), np.sin(theta)
    sx = (cos * ox + sin * oy) / s + cx  # inverse rotation then inverse scale
    sy = (-sin * ox + cos * oy) / s + cy
    return _sample_bilinear(x, sy, sx)


def _gaussian_blur(f, sigma):
    """Separable Gaussian blur of ``f (N, H, W)`` over the last two axes (zero padding)."""
    r = max(1, int(round(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        f = np.lib.stride_tricks.sliding_window_view(np.pad(f, pad), len(k), axis=axis) @ k
    return f


def elastic_distortion(x, alpha=34.0, sigma=4.0, rng=None):
    """Elastic distortion (Simard et al., 2003): a smoothed random displacement field.

    Parameters
    ----------
    x : ndarray, shape ``(N, C, H, W)``, floating
    alpha : float
        Displacement strength in pixels (0: identity).
    sigma : float
        Standard deviation of the Gaussian smoothing the field, in pixels.
    rng : numpy.random.Generator or int seed, optional

    Returns
    -------
    ndarray, same shape and dtype as ``x``
    """
    x = _batch(x, "elastic_distortion")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"elastic_distortion expects a floating batch, got {x.dtype}")
    n, _, h, w = x.shape
    field = _rng(rng).uniform(-1, 1, (2, n, h, w))
    dy, dx = (alpha * _gaussian_blur(f, sigma) for f in field)
    yy, xx = np.mgrid[0:h, 0:w]
    return _sample_bilinear(x, yy + dy, xx + dx)


class RandomShift:
    """Callable ``(x, rng) -> x`` applying :func:`random_shift` with ``max_shift``."""

    def __init__(self, max_shift=2):
        self.max_shift = max_shift

    def __call__(self, x, rng=None):
        return random_shift(x, self.max_shift, rng)

    def __repr__(self):
        return f"RandomShift(max_shift={self.max_shift})"


class RandomAffine:
    """Callable ``(x, rng) -> x`` applying :func:`random_affine` with fixed ranges."""

    def __init__(self, degrees=10.0, translate=2.0, scale=(0.9, 1.1)):
        self.degrees, self.translate, self.scale = degrees, translate, tuple(scale)

    def __call__(self, x, rng=None):
        return random_affine(x, self.degrees, self.translate, self.scale, rng)

    def __repr__(self):
        return (
            f"RandomAffine(degrees={self.degrees}, translate={self.translate}, "
            f"scale={self.scale})"
        )


class ElasticDistortion:
    """Callable ``(x, rng) -> x`` applying :func:`elastic_distortion`."""

    def __init__(self, alpha=34.0, sigma=4.0):
        self.alpha, self.sigma = alpha, sigma

    def __call__(self, x, rng=None):
        return elastic_distortion(x, self.alpha, self.sigma, rng)

    def __repr__(self):
        return f"ElasticDistortion(alpha={self.alpha}, sigma={self.sigma})"
