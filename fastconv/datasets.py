"""MNIST / Fashion-MNIST files: where they are looked for, their download (mirrors, checksums,
atomic writes) and :func:`load_mnist`.

Images are returned as ``uint8`` arrays of shape ``(N, 28, 28)`` and labels as ``int64`` arrays
of shape ``(N,)``. The IDX format itself is read by :func:`fastconv.data.read_idx`.
:func:`normalize`, the MNIST statistics and the augmentations ``RandomShift``, ``RandomAffine``,
``ElasticDistortion`` (and their functions) live in :mod:`fastconv.transforms` and are
re-exported here under the names they have always had.
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
from .data import decompressed_bytes, read_idx
from .transforms import (MNIST_MEAN, MNIST_STD, ElasticDistortion, RandomAffine, RandomShift, elastic_distortion,
                         normalize, random_affine, random_shift, shift_images)

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
    raw = decompressed_bytes(labels_path)
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
