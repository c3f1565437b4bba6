"""Model ensembles for prediction: :class:`Ensemble` (mean of probabilities, or majority vote)."""
import numpy as np

from ._checks import positive_int

__all__ = ["Ensemble"]

_MODES = ("mean", "vote")


def _softmax(logits):
    """Row-wise softmax in float64: (N, K) -> (N, K)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


class Ensemble:
    """Several trained classifiers predicting together.

    Nielsen's network3 MNIST result (99.67%) came from five nets voting; averaging the predicted
    probabilities of nets trained from different seeds is the usual form (Hansen & Salamon 1990).

    Parameters
    ----------
    models : iterable of models
        Each with ``predict(x, batch_size=...)`` returning logits ``(N, K)`` (a
        :class:`fastconv.Sequential`, on any device); every model must give the same K.
    mode : {"mean", "vote"}
        ``"mean"``: the class of highest mean softmax probability. ``"vote"``: every model votes
        for its own most probable class and the class with the most votes wins; a tie between
        classes with as many votes is broken by the highest mean probability, and an exact tie of
        that too by the lowest class index. (Within one model, and in ``"mean"`` mode, equal
        probabilities also go to the lowest class index, as ``argmax``.)

    Examples
    --------
    >>> ensemble = Ensemble([net_a, net_b, net_c], mode="vote")   # doctest: +SKIP
    >>> accuracy = (ensemble.predict(x_test) == y_test).mean()    # doctest: +SKIP
    """

    def __init__(self, models, mode="mean"):
        self.models = list(models)
        if not self.models:
            raise ValueError("Ensemble needs at least one model, got none")
        for i, m in enumerate(self.models):
            if not callable(getattr(m, "predict", None)):
                raise TypeError(f"Ensemble: model {i} ({type(m).__name__}) has no predict() method")
        if mode not in _MODES:
            raise ValueError(f"Ensemble mode must be 'mean' or 'vote', got {mode!r}")
        self.mode = mode

    def __len__(self):
        return len(self.models)

    def __iter__(self):
        return iter(self.models)

    def __getitem__(self, i):
        return self.models[i]

    def __repr__(self):
        return f"Ensemble({len(self.models)} models, mode={self.mode!r})"

    def _probabilities(self, x, batch_size):
        """(models, N, K) softmax probabilities of every model, in float64."""
        batch_size = positive_int(batch_size, "batch_size")
        probs = []
        for i, m in enumerate(self.models):
            logits = np.asarray(m.predict(x, batch_size=batch_size))
            if logits.ndim != 2:
                raise ValueError(f"Ensemble: model {i} predicts shape {logits.shape}, expected "
                                 "logits (N, classes)")
            if probs and logits.shape != probs[0].shape:
                raise ValueError(f"Ensemble: model {i} predicts shape {logits.shape}, model 0 "
                                 f"{probs[0].shape}: every model must give the same classes")
            probs.append(_softmax(logits))
        return np.stack(probs)

    def predict_proba(self, x, batch_size=256):
        """The mean of the models' softmax probabilities.

        Parameters
        ----------
        x : array (N, C, H, W) (whatever the models take)
        batch_size : int
            Passed to each model's ``predict``.

        Returns
        -------
        ndarray (N, K), float64
            Rows sum to 1.
        """
        return self._probabilities(x, batch_size).mean(axis=0)

    def predict(self, x, batch_size=256):
        """The ensemble's class for each sample, by ``mode`` (see the class docstring).

        Parameters
        ----------
        x : array (N, C, H, W)
        batch_size : int

        Returns
        -------
        ndarray (N,), int64
        """
        probs = self._probabilities(x, batch_size)
        mean = probs.mean(axis=0)
        if self.mode == "mean":
            return mean.argmax(axis=1).astype(np.int64)
        n, k = mean.shape
        votes = np.zeros((n, k), dtype=np.int64)
        choice = probs.argmax(axis=2)  # (models, N)
        for c in choice:
            votes[np.arange(n), c] += 1
        most = votes == votes.max(axis=1, keepdims=True)
        return np.where(most, mean, -np.inf).argmax(axis=1).astype(np.int64)
