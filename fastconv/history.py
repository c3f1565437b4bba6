"""The record of a :meth:`fastconv.Trainer.fit` run: :class:`History` (Keras's ``History``), with
its plot."""
import math

__all__ = ["History"]

_FIELDS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second")


class History:
    """Per-epoch record of a :meth:`Trainer.fit` run (one entry per completed epoch).

    Attributes
    ----------
    loss, accuracy : list of float
        Mean training loss and accuracy over the epoch (in training mode, as they were seen).
    val_loss, val_accuracy : list of float or None
        On the validation data after the epoch; None when there was none.
    lr : list of float
        Learning rate (of the first parameter group) used during the epoch.
    seconds : list of float
        Wall time of the epoch: training and validation (not the checkpoint write).
    images_per_second : list of float
        Training throughput of the epoch (training pass only).
    epoch : list of int
        Epoch indices, from 0.
    params : dict
        The run's settings: ``epochs``, ``batch_size``, ``samples``, ``shuffle``, ``seed``,
        ``augment``, ``validation_split``, ``validation_samples``, ``early_stopping``, the class
        names of the ``loss``, ``optimizer`` and ``scheduler`` (None for none) and ``ranks``.
    best_epoch, stopped_epoch : int or None
        With early stopping: the epoch whose weights were restored, and the epoch it stopped
        after (None if it ran to the end).
    """

    def __init__(self):
        for name in _FIELDS:
            setattr(self, name, [])
        self.epoch = []
        self.params = {}
        self.best_epoch = None
        self.stopped_epoch = None

    @property
    def history(self):
        """``{metric: list}`` as Keras's ``History.history`` (no ``val_*`` keys without validation)."""
        d = {name: getattr(self, name) for name in _FIELDS}
        if all(v is None for v in self.val_loss):
            del d["val_loss"], d["val_accuracy"]
        return d

    def __len__(self):
        return len(self.epoch)

    def __repr__(self):
        last = ", ".join(f"{k}={v[-1]:.4g}" for k, v in self.history.items() if v and v[-1] is not None)
        return f"History({len(self)} epochs{': ' + last if last else ''})"

    def _append(self, epoch, **values):
        self.epoch.append(epoch)
        for name in _FIELDS:
            setattr(self, name, getattr(self, name) + [values[name]])

    def _state(self):
        state = {name: list(getattr(self, name)) for name in _FIELDS + ("epoch",)}
        state.update(params=dict(self.params), best_epoch=self.best_epoch, stopped_epoch=self.stopped_epoch)
        return state

    @classmethod
    def _from_state(cls, state):
        h = cls()
        for key, value in state.items():
            setattr(h, key, list(value) if isinstance(value, (list, tuple)) else value)
        return h

    def plot(self, path):
        """Write a PNG of the loss, accuracy and learning-rate curves to ``path``; return ``path``.

        Needs matplotlib (the optional extra: ``pip install fastconv[plot]``).
        """
        from .viz import new_figure, save_figure  # imported here: matplotlib only when drawing

        fig = new_figure((12, 3.6), "History.plot")
        from matplotlib.ticker import MaxNLocator

        if not self.epoch:
            raise ValueError("History.plot: the history is empty (no completed epoch)")
        epochs = [e + 1 for e in self.epoch]
        axes = fig.subplots(1, 3)
        for ax, key in zip(axes, ("loss", "accuracy")):
            ax.plot(epochs, getattr(self, key), "o-", label="train")
            val = getattr(self, "val_" + key)
            if any(v is not None for v in val):
                ax.plot(epochs, [math.nan if v is None else v for v in val], "o-", label="validation")
            ax.set(title=key, xlabel="epoch")
            ax.grid(alpha=0.3)
            ax.legend()
        axes[2].plot(epochs, self.lr, "o-")
        axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
        axes[2].grid(alpha=0.3)
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return save_figure(fig, path)
