"""Preprocessing: :func:`normalize` (scale and standardise images with given statistics, MNIST's
by default), and transforms fitted on the training set, then applied to every split:

* :class:`Standardize`: per-channel mean and standard deviation.
* :class:`PCAWhitening` and :class:`ZCAWhitening`: decorrelate the pixels and scale every
  principal direction to unit variance (CS231n, "Neural Networks Part 2"; Krizhevsky 2009,
  appendix; Coates & Ng 2011).

Each fitted one has ``fit(x) -> self``, ``transform(x)``, ``fit_transform(x)``, ``state_dict()`` /
``load_state_dict()`` (NumPy arrays, for ``np.savez``) and is callable as ``t(x, rng=None)``.
Statistics are computed in float64, a batch at a time (no float64 copy of the whole data set);
the output has the input's float dtype (float32 for integer pixels).
"""
import numbers

import numpy as np

__all__ = ["MNIST_MEAN", "MNIST_STD", "normalize", "Standardize", "PCAWhitening", "ZCAWhitening"]

#: Samples per chunk of the float64 passes over a data set.
_CHUNK = 4096

#: Mean and standard deviation of the MNIST training pixels scaled to [0, 1]
#: (33.318 / 255 and 78.567 / 255).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def _data(x, what, min_ndim=2):
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{what}: expected a real numeric array, got dtype {x.dtype}")
    if x.ndim < min_ndim or x.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty batch with at least {min_ndim} dimensions "
                         f"(N, C, ...), got shape {x.shape}")
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
