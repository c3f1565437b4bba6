"""The state of one :meth:`fastconv.Trainer.fit`: what it was asked (:class:`Fit`), what it
carries from epoch to epoch and records in its checkpoint (:class:`Run`), each epoch's random
streams (:func:`epoch_generators`), how its settings are recorded (:func:`describe`) and SIGTERM
during it (:func:`sigterm_as_interrupt`).
"""
import contextlib
import dataclasses
import math
import signal
import threading
import types

import numpy as np

from .history import History

__all__ = ["Fit", "Run", "epoch_generators", "describe", "describe_class", "sigterm_as_interrupt"]


def epoch_generators(seed, epoch, rank=0, size=1):
    """Epoch ``epoch``'s independent streams: the shuffle and augment generators, and the
    SeedSequence the model's random modules are reseeded from (``model.reseed``).

    In a job of several ranks the shuffle is the same on every rank and the others are the
    rank's own."""
    shuffle, augment, modules = np.random.SeedSequence([seed, epoch]).spawn(3)
    if size > 1:
        augment, modules = augment.spawn(size)[rank], modules.spawn(size)[rank]
    return np.random.default_rng(shuffle), np.random.default_rng(augment), modules


def describe(obj):
    """A description of ``obj`` that is the same in every process: its repr when its class
    defines one (``RandomShift(max_shift=2)``), else its qualified name (functions) or its
    class's (instances), never a memory address."""
    if obj is None:
        return None
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, type)):
        return f"{obj.__module__}.{obj.__qualname__}"
    if type(obj).__repr__ is object.__repr__:
        return f"{type(obj).__module__}.{type(obj).__qualname__}"
    return repr(obj)


def describe_class(obj):
    return None if obj is None else type(obj).__qualname__


@dataclasses.dataclass(frozen=True)
class Fit:
    """What one ``fit`` call asked for, checked: the data sources and the loop's settings."""
    data: object
    val: object
    epochs: int
    batch_size: int
    shuffle: bool
    augment: object
    progress: object
    patience: object  # early_stopping: epochs without improvement, or None
    checkpoint: object


@dataclasses.dataclass
class Run:
    """What a ``fit`` carries from epoch to epoch, and its checkpoint records of it."""
    seed: object  # None until fit draws one
    history: History = dataclasses.field(default_factory=History)
    best_loss: float = math.inf  # early stopping: the best validation loss so far,
    best_state: object = None  # the model's state dict at that epoch,
    wait: int = 0  # the epochs since it,
    stopped: bool = False  # and whether patience ran out
    start: int = 0  # the first epoch to run (a resumed run's epochs done)
    saved: object = None  # the epochs the last checkpoint written holds

    def early_stopping(self, epoch, val_loss, patience, model):
        """Keep the best epoch's weights; stop after ``patience`` epochs without improvement."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_state, self.wait = val_loss, model.state_dict(), 0
            self.history.best_epoch = epoch
        else:
            self.wait += 1
            if self.wait >= patience:
                self.stopped = True
                self.history.stopped_epoch = epoch

    def checkpoint_state(self):
        return {"seed": self.seed, "history": self.history._state(),
                "early_stopping": {"best_loss": self.best_loss, "best_state": self.best_state,
                                   "wait": self.wait, "stopped": self.stopped}}

    def restore(self, state):
        """Continue from a checked checkpoint's state."""
        es = state["early_stopping"]
        self.history = History._from_state(state["history"])
        self.best_loss, self.best_state, self.wait, self.stopped = (
            es["best_loss"], es["best_state"], es["wait"], es["stopped"])
        self.start = self.saved = state["epoch"]
        self.seed = state["seed"]


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt inside the block, so that a terminated run ends as an
    interrupted one does (the last checkpoint whole, no temporary file left); the previous
    handler comes back afterwards. Only the main thread can handle signals: elsewhere this does
    nothing."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum} (SIGTERM)")

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
