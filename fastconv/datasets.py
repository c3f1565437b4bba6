"""MNIST / Fashion-MNIST loading, normalisation and batch augmentations.

Pure NumPy + standard library. Images are returned as ``uint8`` arrays of shape
``(N, 28, 28)`` and labels as ``int64`` arrays of shape ``(N,)``; :func:`normalize`
turns images into the ``(N, 1, 28, 28)`` float batches the network layers use, and
the augmentations act on such float batches ``(N, C, H, W)``.

Every augmentation is a callable ``(x_batch, rng) -> x_batch`` (use the classes
:class:`RandomShift`, :class:`RandomAffine`, :class:`ElasticDistortion` as a
trainer's ``augment=``); shape and dtype are preserved and the output depends only
on the input and the state of ``rng``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import sys
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ._io import atomic_write
from .data import _GZIP_ERRORS, _corrupt_gzip, _idx_layout

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "MIRRORS",
    "DownloadError",
    "load_mnist",
    "read_idx",
    "normalize",
    "shift_images",
    "random_shift",
    "random_affine",
    "elastic_distortion",
    "RandomShift",
    "RandomAffine",
    "ElasticDistortion",
]

#: Mean and standard deviation of the MNIST training pixels scaled to [0, 1]
#: (33.318 / 255 and 78.567 / 255).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# Base names, in the order (train images, train labels, test images, test labels).
_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: Download mirrors per kind, tried in turn. Each serves ``<name>.gz``.
MIRRORS = {
    "digits": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}

# Digits: SHA-256 of the *decompressed* files (the original LeCun et al. bytes),
# so any faithful gzip wrapper is accepted.
_DIGITS_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# Fashion: we do not know reliable SHA-256s of the decompressed files, so we check
# the published MD5 of the official .gz files (Fashion-MNIST README / torchvision).
# Both mirrors serve those exact .gz files; a recompressed copy would be rejected.
_FASHION_GZ_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}

_TITLE = {"digits": "MNIST", "fashion": "Fashion-MNIST"}

# Module-level so tests can replace it with a fake opener (no network in tests).
_urlopen = urllib.request.urlopen


class DownloadError(OSError):
    """A dataset file could not be fetched and verified from any mirror."""


# --------------------------------------------------------------------------- IDX


def _read_bytes(path):
    """Raw (decompressed if gzip) content of ``path``; gzip is detected by magic."""
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except _GZIP_ERRORS as e:
            raise _corrupt_gzip(path, e) from None
    if path.suffix == ".gz":
        raise ValueError(f"{path}: not a gzip file (name ends in .gz but no gzip magic bytes)")
    return data


def read_idx(path):
    """Read an MNIST IDX file (gzip-compressed or plain).

    Parameters
    ----------
    path : str or Path
        An IDX file of unsigned bytes: magic 2051 (images, 3 dimensions) or
        2049 (labels, 1 dimension). Gzip compression is detected automatically.

    Returns
    -------
    ndarray of uint8
        Shape ``(N, rows, cols)`` for images, ``(N,)`` for labels.

    Raises
    ------
    ValueError
        Naming the file, if it is not valid gzip, has a bad magic number (type
        byte other than 0x08 or a dimension count other than 1 or 3), or if its
        payload is shorter (truncated) or longer (trailing bytes) than the
        product of the dimensions in the header.
    """
    path = Path(path)
    data = _read_bytes(path)
    dims, start = _idx_layout(path, data[:16], len(data))
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims).copy()


# ---------------------------------------------------------------------- download


def _verify(kind, name, gz_bytes):
    """Return None if ``gz_bytes`` is the genuine ``name``.gz, else the problem."""
    if kind == "fashion":
        got = hashlib.md5(gz_bytes, usedforsecurity=False).hexdigest()
        want = _FASHION_GZ_MD5[name]
        return None if got == want else f"MD5 of .gz is {got}, expected {want}"
    try:
        raw = gzip.decompress(gz_bytes)
    except (OSError, EOFError, zlib.error) as e:
        return f"not valid gzip data ({e})"
    got, want = hashlib.sha256(raw).hexdigest(), _DIGITS_SHA256[name]
    return None if got == want else f"SHA-256 of decompressed data is {got}, expected {want}"


def _download(name, directory, kind, mirrors):
    """Fetch ``name``.gz from the first mirror whose copy verifies; write atomically."""
    dest = Path(directory) / f"{name}.gz"
    problems = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + dest.name
        print(f"fastconv: downloading {url}", file=sys.stderr)
        try:
            with _urlopen(url, timeout=60) as response:
                data = response.read()
        except (OSError, ValueError, http.client.HTTPException) as e:
            problems.append(f"{url}: {e}")
            continue
        problem = _verify(kind, name, data)
        if problem:
            problems.append(f"{url}: {problem}")
            continue
        atomic_write(dest, lambda f: f.write(data))
        return dest
    raise DownloadError(
        f"could not download a verified {dest.name} into {dest.parent}; tried:\n  "
        + "\n  ".join(problems)
        + "\nPut the file there yourself, or point FASTCONV_DATA / root= at a folder holding it."
    )


# ------------------------------------------------------------------------ loader


def _search_dirs(root, kind):
    """Directories to look in, in order; the first is where downloads go."""
    root = root if root is not None else os.environ.get("FASTCONV_DATA") or None
    if root is None:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return [Path(cache) / "fastconv" / kind]
    root = Path(root).expanduser()
    return [root] if kind == "digits" else [root / "fashion", root]


def _find(directory, name):
    for fname in (f"{name}.gz", name):
        if (directory / fname).is_file():
            return directory / fname
    return None


def _is_digits(labels_path):
    """True if ``labels_path`` is the MNIST-digits training-label file (60 KB, cheap)."""
    raw = _read_bytes(labels_path)
    return hashlib.sha256(raw).hexdigest() == _DIGITS_SHA256["train-labels-idx1-ubyte"]


def _check_pair(images, labels, image_path, label_path):
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path}: expected 28x28 images, got array of shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{label_path}: expected labels (1 dimension), got shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(
            f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{label_path}: label {labels.max()} out of range 0..9")


def load_mnist(root=None, kind="digits", download=True, mirrors=None):
    """Load MNIST digits or Fashion-MNIST as NumPy arrays.

    Parameters
    ----------
    root : str or Path, optional
        Folder holding the four IDX files ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each gzipped (``.gz``) or plain. Defaults to
        the environment variable ``FASTCONV_DATA``, else the cache folder
        ``$XDG_CACHE_HOME/fastconv/<kind>`` (``~/.cache/fastconv/<kind>``).
        When ``root`` is given (argument or ``FASTCONV_DATA``), digits are read
        from ``root`` itself, and Fashion-MNIST from ``root/fashion`` or else
        ``root`` (skipped if it holds the digits files); Fashion-MNIST downloads
        go to ``root/fashion``.
    kind : {"digits", "fashion"}
        Which dataset.
    download : bool
        Fetch missing files from :data:`MIRRORS` (verified, written atomically).
    mirrors : sequence of str, optional
        Base URLs to try in turn instead of ``MIRRORS[kind]``.

    Returns
    -------
    (x_train, y_train), (x_test, y_test)
        Images ``uint8`` of shape ``(60000, 28, 28)`` / ``(10000, 28, 28)``,
        labels ``int64`` of shape ``(60000,)`` / ``(10000,)`` with values 0..9.

    Raises
    ------
    ValueError
        Unknown ``kind``, or a malformed file (the message names it).
    FileNotFoundError
        Files missing and ``download=False``; the message lists the paths tried.
    DownloadError
        No mirror delivered a file that passed verification.
    """
    if kind not in MIRRORS:
        raise ValueError(f"unknown kind {kind!r}; expected 'digits' or 'fashion'")
    dirs = _search_dirs(root, kind)
    paths, skipped = None, ""
    for d in dirs:
        found = [_find(d, n) for n in _NAMES]
        if all(found) and kind == "fashion" and _is_digits(found[1]):
            skipped = f"\n(the files in {d} are MNIST digits, not Fashion-MNIST)"
        elif all(found):
            paths = found
            break
    if paths is None:
        if not download:
            tried = "\n  ".join(str(d / f"{n}[.gz]") for d in dirs for n in _NAMES)
            raise FileNotFoundError(
                f"{_TITLE[kind]} files not found. Looked for:\n  {tried}{skipped}\n"
                "Set FASTCONV_DATA to the folder holding them, pass root=..., "
                "or call load_mnist(download=True)."
            )
        dirs[0].mkdir(parents=True, exist_ok=True)
        mirrors = MIRRORS[kind] if mirrors is None else mirrors
        paths = [_find(dirs[0], n) or _download(n, dirs[0], kind, mirrors) for n in _NAMES]
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    _check_pair(x_train, y_train, paths[0], paths[1])
    _check_pair(x_test, y_test, paths[2], paths[3])
    return (x_train, y_train.astype(np.int64)), (x_test, y_test.astype(np.int64))


# ------------------------------------------------------------------ normalisation


def normalize(x, mean=MNIST_MEAN, std=MNIST_STD, dtype=np.float32):
    """Scale and standardise images into a float batch.

    Parameters
    ----------
    x : ndarray
        ``uint8`` images ``(N, H, W)`` or ``(N, C, H, W)``: divided by 255 to
        [0, 1] first (a channel axis is added to 3-D input). Floating input
        must be ``(N, C, H, W)`` and is standardised as is (not divided by 255).
    mean, std : float or sequence of float
        Subtracted / divided after scaling; a sequence gives one value per channel.
        Defaults are the MNIST training statistics.
    dtype : dtype
        Output floating dtype.

    Returns
    -------
    ndarray of ``dtype``, shape ``(N, C, H, W)``
        ``(x / 255 - mean) / std`` (uint8 input) or ``(x - mean) / std``.
    """
    x = np.asarray(x)
    if x.dtype == np.uint8:
        if x.ndim == 3:
            x = x[:, None]
        out = x.astype(dtype) * np.dtype(dtype).type(1 / 255)
    elif np.issubdtype(x.dtype, np.floating):
        out = x.astype(dtype, copy=True)
    else:
        raise TypeError(f"expected uint8 or floating images, got {x.dtype}")
    if out.ndim != 4:
        raise ValueError(f"expected (N, H, W) uint8 or (N, C, H, W) input, got shape {x.shape}")
    mean = np.asarray(mean, dtype=dtype).reshape(-1, 1, 1)
    std = np.asarray(std, dtype=dtype).reshape(-1, 1, 1)
    out -= mean
    out /= std
    return out


# ------------------------------------------------------------------ augmentations


def _rng(rng):
    """A Generator (or Generator-like object) as is; None or a seed -> ``default_rng``."""
    return rng if hasattr(rng, "integers") else np.random.default_rng(rng)


def _check_batch(x):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected a batch of shape (N, C, H, W), got {x.shape}")
    return x


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
    x = _check_batch(x)
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
    x = _check_batch(x)
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
    x = _check_batch(x)
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
    x = _check_batch(x)
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
