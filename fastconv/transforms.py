"""Preprocessing fitted on the training set, and batch augmentations.

Preprocessing (fit on the training images, then apply the same transform to every split):

* :class:`Standardize`: per-channel mean and standard deviation.
* :class:`PCAWhitening` and :class:`ZCAWhitening`: decorrelate the pixels and scale every
  principal direction to unit variance (CS231n, "Neural Networks Part 2"; Krizhevsky 2009,
  appendix; Coates & Ng 2011).

Each has ``fit(x) -> self``, ``transform(x)``, ``fit_transform(x)``, ``state_dict()`` /
``load_state_dict()`` (NumPy arrays, for ``np.savez``) and is callable as ``t(x, rng=None)``.
Statistics are computed in float64, a batch at a time (no float64 copy of the whole data set);
the output has the input's float dtype (float32 for integer pixels).

Augmentations of a batch ``(N, C, H, W)``, each image drawn independently from ``rng``:

* :class:`RandomCrop` (with padding), :class:`RandomHorizontalFlip`, and :class:`Compose` to chain
  transforms.

They are callables ``t(x, rng) -> x`` with the signature of :meth:`fastconv.Trainer.fit`'s
``augment``: the Trainer passes each batch with its per-epoch generator, derived from
``(seed, epoch)``, so an augmented run repeats from its seed and ``resume=True`` stays exact. With
``rng`` None (or an int seed) they draw from ``np.random.default_rng(rng)``. Their reprs name
their settings, which is what a checkpoint records of them. The augmentations of
:mod:`fastconv.datasets` (``RandomShift``, ``RandomAffine``, ``ElasticDistortion``) compose with
these.
"""
import numbers

import numpy as np

__all__ = ["Standardize", "PCAWhitening", "ZCAWhitening", "RandomCrop", "RandomHorizontalFlip",
           "Compose"]

#: Samples per chunk of the float64 passes over a data set.
_CHUNK = 4096


def _generator(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_))):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be a numpy.random.Generator, an int seed or None, got {rng!r}")


def _data(x, what, min_ndim=2):
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{what}: expected a real numeric array, got dtype {x.dtype}")
    if x.ndim < min_ndim or x.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty batch with at least {min_ndim} dimensions "
                         f"(N, C, ...), got shape {x.shape}")
    return x


def _batch(x, what):
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{what}: expected a batch of shape (N, C, H, W), got shape {x.shape}")
    return x


def _out_dtype(x):
    return x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)


def _chunks(n):
    return ((i, min(i + _CHUNK, n)) for i in range(0, n, _CHUNK))


class _Fitted:
    """What the fitted transforms share: the fitted check, ``fit_transform``, ``__call__`` and
    the state dict of the attributes named in ``_state``."""

    _state = ()
    _options = ()

    def _check_fitted(self, x, what):
        if getattr(self, self._state[0]) is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(x_train) first")
        x = _data(x, what)
        if x.shape[1:] != self.shape_:
            raise ValueError(f"{type(self).__name__} was fitted on samples of shape {self.shape_}, "
                             f"got a batch of shape {x.shape}")
        return x

    def fit_transform(self, x):
        """:meth:`fit` on ``x``, then :meth:`transform` it."""
        return self.fit(x).transform(x)

    def __call__(self, x, rng=None):
        """:meth:`transform` (``rng`` is ignored: deterministic), so it composes with augmentations."""
        return self.transform(x)

    def state_dict(self):
        """The fitted statistics, the options they depend on (``_options``; -1 stands for None)
        and ``shape_``, as ``{name: ndarray}``."""
        if getattr(self, self._state[0]) is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit(x_train) first")
        state = {name: np.array(getattr(self, name)) for name in self._state}
        for name in self._options:
            value = getattr(self, name)
            state[name] = np.array(-1 if value is None else value)
        state["shape_"] = np.array(self.shape_, dtype=np.int64)
        return state

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned (after checking every key is there); returns
        self."""
        missing = [k for k in self._state + self._options + ("shape_",) if k not in state]
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: missing keys {missing}")
        for name in self._state:
            setattr(self, name, np.asarray(state[name], dtype=np.float64))
        for name in self._options:
            value = np.asarray(state[name]).item()
            setattr(self, name, None if value == -1 else value)
        self.shape_ = tuple(int(s) for s in np.asarray(state["shape_"]))
        self._prepare()
        return self

    def _prepare(self):
        """Derive what :meth:`transform` uses from the fitted statistics."""


class Standardize(_Fitted):
    """Per-channel standardisation ``(x - mean[c]) / std[c]`` with the training set's statistics.

    ``mean_`` and ``std_`` (C,) are taken over every sample and position of channel c (axis 1);
    ``std_`` is the population standard deviation (``ddof=0``). A channel that is constant in the
    training data gets ``std_ = 1`` (scikit-learn's rule), so it is centred, not divided by 0.

    Parameters
    ----------
    dtype : float dtype, optional
        Of the output; default the input's float dtype (float32 for integer pixels).
    """

    _state = ("mean_", "std_")

    def __init__(self, dtype=None):
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.mean_ = self.std_ = None
        self.shape_ = None

    def fit(self, x):
        """Compute ``mean_`` and ``std_`` per channel of ``x`` (N, C, ...) in float64; returns self."""
        x = _data(x, "Standardize.fit")
        axes = (0,) + tuple(range(2, x.ndim))
        count = x.size // x.shape[1]
        total = sum(np.sum(x[a:b], axis=axes, dtype=np.float64) for a, b in _chunks(len(x)))
        mean = total / count
        shape = (1, -1) + (1,) * (x.ndim - 2)
        sq = sum(np.sum(np.square(x[a:b] - mean.reshape(shape)), axis=axes) for a, b in _chunks(len(x)))
        std = np.sqrt(sq / count)
        self.mean_, self.std_ = mean, np.where(std > 0, std, 1.0)
        self.shape_ = x.shape[1:]
        return self

    def transform(self, x):
        """``(x - mean_) / std_`` per channel, in float64, returned in the output dtype."""
        x = self._check_fitted(x, "Standardize.transform")
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean, std = self.mean_.reshape(shape), self.std_.reshape(shape)
        out = np.empty(x.shape, self.dtype or _out_dtype(x))
        for a, b in _chunks(len(x)):
            out[a:b] = (x[a:b] - mean) / std
        return out

    def __repr__(self):
        return "Standardize()" if self.dtype is None else f"Standardize(dtype={self.dtype})"


class _Whitening(_Fitted):
    """Mean, covariance and its eigendecomposition over flattened samples (shared by PCA/ZCA)."""

    _state = ("mean_", "eigenvalues_", "components_")
    _options = ("epsilon",)

    def __init__(self, epsilon=1e-5, dtype=None):
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon >= 0:
            raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.mean_ = self.eigenvalues_ = self.components_ = None
        self.shape_ = None

    def fit(self, x):
        """Fit on ``x`` (N, ...), flattened to (N, D): ``mean_`` (D,), the covariance
        ``(X - mean)^T (X - mean) / N`` (the population estimate, as CS231n), its eigenvalues
        ``eigenvalues_`` (D,) in decreasing order (negative rounding clipped to 0) and unit
        eigenvectors as the rows of ``components_`` (D, D), each signed so that its entry of
        largest magnitude is positive (the signs are otherwise arbitrary). In float64; returns
        self."""
        x = _data(x, f"{type(self).__name__}.fit")
        n = len(x)
        flat = x.reshape(n, -1)
        mean = sum(np.sum(flat[a:b], axis=0, dtype=np.float64) for a, b in _chunks(n)) / n
        cov = np.zeros((flat.shape[1], flat.shape[1]))
        for a, b in _chunks(n):
            centred = flat[a:b] - mean
            cov += centred.T @ centred
        cov /= n
        values, vectors = np.linalg.eigh(cov)
        order = np.argsort(values)[::-1]
        values, vectors = np.clip(values[order], 0.0, None), vectors[:, order].T
        signs = np.sign(vectors[np.arange(len(vectors)), np.abs(vectors).argmax(axis=1)])
        self.mean_, self.eigenvalues_, self.components_ = mean, values, vectors * signs[:, None]
        self.shape_ = x.shape[1:]
        self._prepare()
        return self

    def _apply(self, x, matrix, out_shape):
        """``(flatten(x) - mean_) @ matrix`` in float64, a chunk at a time, into ``out_shape``."""
        flat = x.reshape(len(x), -1)
        out = np.empty((len(x), matrix.shape[1]), self.dtype or _out_dtype(x))
        for a, b in _chunks(len(x)):
            out[a:b] = (flat[a:b] - self.mean_) @ matrix
        return out.reshape(out_shape)

    def _inverse_sqrt(self):
        scale = self.eigenvalues_ + self.epsilon
        if not np.all(scale > 0):
            raise ValueError(f"{type(self).__name__}: the covariance is singular (an eigenvalue is "
                             "0) and epsilon is 0: use epsilon > 0")
        return 1.0 / np.sqrt(scale)


class PCAWhitening(_Whitening):
    """PCA whitening: ``x_white = (x - mean) @ U / sqrt(S + epsilon)``, the projections on the
    principal axes U of the training covariance, each scaled by its eigenvalue S to unit variance.

    Parameters
    ----------
    epsilon : float
        Added to every eigenvalue before the square root: it bounds the gain of the low-variance
        directions (mostly noise) and keeps a singular covariance (more pixels than samples, or
        constant pixels) finite. The default 1e-5 is CS231n's (``Xrot / np.sqrt(S + 1e-5)``) for
        data of unit scale; raw pixels in [0, 255], or a stronger smoothing (Krizhevsky uses 0.01,
        Coates & Ng 0.1 for normalised patches), want a larger one. The whitened training data
        then has covariance ``diag(S / (S + epsilon))``: the identity up to ``epsilon / S``.
    n_components : int, optional
        Keep the first k principal directions (dimension reduction); default all D.
    dtype : float dtype, optional
        Of the output; default the input's float dtype (float32 for integer pixels).

    ``transform(x)`` returns (N, k): PCA-whitened data are coordinates, not images (use
    :class:`ZCAWhitening` to keep the image layout).
    """

    def __init__(self, epsilon=1e-5, n_components=None, dtype=None):
        super().__init__(epsilon, dtype)
        if n_components is not None and (isinstance(n_components, bool) or not isinstance(
                n_components, numbers.Integral) or n_components < 1):
            raise ValueError(f"n_components must be a positive int or None, got {n_components!r}")
        self.n_components = n_components

    _options = ("epsilon", "n_components")

    def _prepare(self):
        d = self.eigenvalues_.size
        k = d if self.n_components is None else self.n_components
        if k > d:
            raise ValueError(f"n_components={k} but the samples have only {d} dimensions")
        self._matrix = self.components_[:k].T * self._inverse_sqrt()[:k]

    def transform(self, x):
        """(N, ...) -> (N, k) whitened coordinates with the training statistics."""
        x = self._check_fitted(x, "PCAWhitening.transform")
        return self._apply(x, self._matrix, (len(x), self._matrix.shape[1]))

    def __repr__(self):
        extra = "" if self.n_components is None else f", n_components={self.n_components}"
        return f"PCAWhitening(epsilon={self.epsilon}{extra})"


class ZCAWhitening(_Whitening):
    """ZCA whitening: ``x_white = (x - mean) @ U diag(1 / sqrt(S + epsilon)) U^T``, PCA whitening
    rotated back into pixel space (Bell & Sejnowski 1997): of all whitening transforms the one
    closest to the input, so whitened images still look like (edge-enhanced) images.

    Parameters
    ----------
    epsilon : float
        As for :class:`PCAWhitening` (default 1e-5, CS231n's); the whitened training data has
        covariance ``U diag(S / (S + epsilon)) U^T``.
    dtype : float dtype, optional
        Of the output; default the input's float dtype (float32 for integer pixels).

    ``transform(x)`` keeps the input's shape (N, C, H, W).
    """

    def _prepare(self):
        u = self.components_
        self._matrix = (u.T * self._inverse_sqrt()) @ u

    def transform(self, x):
        """(N, ...) -> whitened, same shape, with the training statistics."""
        x = self._check_fitted(x, "ZCAWhitening.transform")
        return self._apply(x, self._matrix, x.shape)

    def __repr__(self):
        return f"ZCAWhitening(epsilon={self.epsilon})"


def _pair(v, name):
    if isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)):
        v = (v, v)
    v = tuple(v)
    if len(v) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                              and s >= 1 for s in v):
        raise ValueError(f"{name} must be a positive int or a pair (h, w) of them, got {v!r}")
    return tuple(int(s) for s in v)


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
        self.size = _pair(size, "size")
        self.padding = _padding(padding)
        if padding_mode not in _PAD_MODES:
            raise ValueError(f"padding_mode must be one of {_PAD_MODES}, got {padding_mode!r}")
        if not isinstance(fill, numbers.Real) or isinstance(fill, bool):
            raise ValueError(f"fill must be a number, got {fill!r}")
        self.fill, self.padding_mode = fill, padding_mode

    def __call__(self, x, rng=None):
        x = _batch(x, "RandomCrop")
        rng = _generator(rng)
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
        flip = _generator(rng).random(len(x)) < self.p
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
        rng = _generator(rng)
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"
