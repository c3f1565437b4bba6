"""The training loop: :class:`Trainer` (Keras-like ``fit`` / ``evaluate``) and its :class:`History`
(defined in :mod:`fastconv.history`).

Data flows one way: the trainer drives a model, a loss and an optimizer through their public
interfaces. Of the model it calls ``forward``, ``backward``, ``parameters``, ``state_dict`` /
``load_state_dict``, ``predict``, ``train`` and, at the start of each epoch,
``reseed(seed_sequence)`` (:meth:`fastconv.Module.reseed`: every module with a public ``rng``
generator, such as :class:`fastconv.Dropout`, gets a fresh one). It lists ``model.modules()``
only to record each module's ``training`` flag before ``fit`` and set it back afterwards, and,
with ``distributed=True``, to find :class:`fastconv.distributed.SyncBatchNorm` layers; nothing
else below the model is read or changed.

The training and validation data are arrays or any :class:`fastconv.data.Dataset` (``__len__``
and ``__getitem__`` by an array of indices, returning a batch ``(x, y)``), such as a
memory-mapped :class:`fastconv.data.IDXDataset`: then only the batches in use are in memory.

Repeatability
-------------
Every random choice a run makes (the shuffle order, the augmentation, the dropout masks: the
draws of every module's ``rng``) comes from generators derived from ``(seed, epoch)`` at the start
of each epoch, so epoch ``e`` of a run does not depend on how the run got there. That is what
makes ``resume=True`` exact: a run interrupted after epoch 2 and resumed from its checkpoint ends
with the same weights, bit for bit, as the run that was never interrupted (a Dataset must give
the same batch for the same indices every time). (Weight initialisation
is the model's business: use ``fastconv.manual_seed`` or the layers' ``rng`` before building it.)
"""
import contextlib
import math
import sys
import time

import numpy as np
from tqdm import tqdm

from . import _checkpoint as ckpt
from . import distributed as dist
from ._backend import is_device_array, to_device, to_numpy
from ._grad import no_grad
from ._io import atomic_savez, check_writable
from ._batches import source
from ._checks import positive_int
from ._fit import Fit, Run, describe, describe_class, epoch_generators, sigterm_as_interrupt
from .data import is_dataset
from .history import History
from .losses import CrossEntropyLoss
from .optim import SGD, ReduceLROnPlateau, flatten_state

__all__ = ["Trainer", "History"]

def _scaled(a, factor):
    """``a * factor`` as a new array on ``a``'s device."""
    return to_device(to_numpy(a) * factor) if is_device_array(a) else a * factor


class Trainer:
    """Fits a classifier: mini-batch training, validation, early stopping, checkpoints.

    Parameters
    ----------
    model : fastconv.Sequential (or any model with forward/backward/parameters/state_dict/predict)
        Outputs logits ``(N, classes)``.
    loss : optional
        ``forward(logits, labels) -> float`` and ``backward() -> dlogits``; default
        :class:`fastconv.losses.CrossEntropyLoss`.
    optimizer : optional
        Default ``SGD(model.parameters(), lr=0.01, momentum=0.9)``.
    scheduler : optional
        Stepped once per epoch after validation: ``ReduceLROnPlateau.step(val_loss)`` (the
        training loss when there is no validation data), otherwise ``scheduler.step()``
        (e.g. :class:`fastconv.optim.StepLR`). Must drive ``optimizer``.
    distributed : bool
        Data-parallel training over the ranks of an MPI job (see below and
        :mod:`fastconv.distributed`; needs ``pip install fastconv[mpi]``). In a job of one rank
        (no mpiexec) training is exactly as with False.

    Inputs
    ------
    Images are float arrays ``(N, C, H, W)`` (any ``(N, ...)`` the model takes), cast to the
    model's parameter dtype (float32 unless ``model.to(np.float64)``). Integer images (``uint8``
    pixels) are refused with a TypeError: how to scale them depends on the data set, so the
    trainer never guesses; convert them first, e.g. ``fastconv.datasets.normalize(x)`` for MNIST
    (``/255``, then MNIST's mean 0.1307 and std 0.3081). Labels are integers ``(N,)``.

    Instead of a pair of arrays ``x, y``, ``fit``, ``evaluate`` and ``validation_data`` take a
    :class:`fastconv.data.Dataset` (``y`` None): the trainer asks it for each batch by an array
    of sample indices (the ones the arrays would be indexed with, so a Dataset holding the same
    samples gives the same run, bit for bit) and checks and casts each batch as above (a Dataset
    of ``uint8`` images needs a ``transform``, e.g. ``IDXDataset(..., transform=normalize)``).
    An array, a ``numpy.memmap`` included, is converted whole up front; wrap a memmap in
    :class:`fastconv.data.TensorDataset` to read it a batch at a time.

    Devices
    -------
    With a model moved by ``model.to("cuda")`` (before the optimizer's first step), data is
    prepared and augmented on the host and each training batch is copied to the device once
    (images and labels: two host-to-device copies); the forward, loss, backward and update stay
    there. Per batch two results come back: the loss (the tier returns it as a float) and the
    ``(N, classes)`` logits for the accuracy (an argmax on the host); plus, by the tier's contract,
    one small flag per MaxPool2d backward. ``evaluate`` copies each batch there and its logits
    back. Checkpoints hold NumPy arrays, whatever the device.

    Several processes (``distributed=True``)
    ----------------------------------------
    Launch the script with ``mpiexec -n R``; every rank builds the same model and calls ``fit``
    (and ``evaluate``) with the same arguments and the whole data set. Rank 0's model, optimizer
    and scheduler state (or the checkpoint, read by rank 0) are broadcast at the start.
    ``batch_size`` is the global batch (as Keras's under a distribution strategy): each step's
    ``batch_size`` samples are split over the ranks (:func:`fastconv.distributed.batch_shards`),
    each rank's loss gradient is weighted by its share, and the gradients are summed over the
    ranks, so R ranks take the steps one process would take, to rounding (BatchNorm layers
    normalise with the statistics of each rank's share; their running statistics are broadcast
    from rank 0 after every epoch; :class:`fastconv.distributed.SyncBatchNorm` uses the global
    batch's). Validation and
    ``evaluate`` split the data over the ranks and reduce the loss and accuracy; the recorded
    training loss and accuracy are over all ranks' samples (``seconds`` and images/s are rank
    0's timing). Only rank 0 shows progress and writes the checkpoint, which holds the global
    state only, so a run can resume on a different number of ranks; its steps are the same, but
    augmentation and dropout draw from per-rank generators, so with those a resume on another
    rank count continues differently. An exception on any rank ends the whole job
    (:func:`fastconv.distributed.abort_on_error`) with a message naming the rank.

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of ranks (0 and 1 unless ``distributed``).
    history : History or None
        The last ``fit``'s.
    """

    def __init__(self, model, loss=None, optimizer=None, scheduler=None, distributed=False):
        for attr in ("forward", "backward", "parameters", "modules", "state_dict", "load_state_dict",
                     "predict", "train", "reseed") + (("named_parameters",) if distributed else ()):
            if not callable(getattr(model, attr, None)):
                raise TypeError(f"Trainer: model has no {attr}() method ({type(model).__name__})")
        self.rank, self.size = dist.init() if distributed else (0, 1)
        self._parallel = self.size > 1
        self.model = model
        self.loss = CrossEntropyLoss() if loss is None else loss
        self.optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9) if optimizer is None else optimizer
        if scheduler is not None and getattr(scheduler, "optimizer", self.optimizer) is not self.optimizer:
            raise ValueError("Trainer: the scheduler drives a different optimizer than the trainer's")
        self.scheduler = scheduler
        self.history = None
        self._allreduce = None

    # -- data ----------------------------------------------------------------------------------
    def _dtype(self):
        params = self.model.parameters()
        return np.dtype(params[0].data.dtype) if params else np.dtype(np.float32)

    def _data(self, x, y, name="x"):
        """Arrays ``x, y`` or a Dataset ``x`` (``y`` None) as a source of checked batches in the
        model's dtype (:mod:`fastconv._batches`)."""
        return source(x, y, self._dtype(), name)

    def evaluate(self, x, y=None, batch_size=256):
        """Mean loss and accuracy of the model in eval mode, under ``fastconv.no_grad()``.

        With ``distributed=True`` every rank must call it with the same data: each evaluates
        its share and the results are reduced over the ranks.

        Parameters
        ----------
        x : ndarray, float (N, C, H, W), or fastconv.data.Dataset
        y : ndarray of int, shape (N,); None with a Dataset
        batch_size : int

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}``.
        """
        data = self._data(x, y)
        batch_size = positive_int(batch_size, "batch_size")
        with self._collective():
            return self._evaluate(data, batch_size)

    def _collective(self):
        """Context for code in which the ranks communicate: with several ranks, an exception on
        one ends the job (the others would wait for it forever)."""
        return dist.abort_on_error() if self._parallel else contextlib.nullcontext()

    def _evaluate(self, data, batch_size):
        n = len(data)
        if self._parallel:
            data = data.part(*dist.shard_bounds(n, self.rank, self.size))
        loss_sum = correct = 0.0
        if len(data):
            with no_grad():
                logits, y = data.predict(self.model, batch_size)
            loss, hits = float(self.loss.forward(logits, y)), logits.argmax(axis=1) == y
            if not self._parallel:
                return {"loss": loss, "accuracy": float(np.mean(hits))}
            loss_sum, correct = loss * len(data), float(np.count_nonzero(hits))
        loss_sum, correct = dist.allreduce_sum([loss_sum, correct])
        return {"loss": float(loss_sum / n), "accuracy": float(correct / n)}

    # -- training ------------------------------------------------------------------------------
    def fit(self, x, y=None, epochs=None, batch_size=64, validation_data=None, validation_split=0.0,
            shuffle=True, seed=None, early_stopping=None, checkpoint=None, resume=False, augment=None,
            progress=True):
        """Train for ``epochs`` epochs; return the :class:`History` (also kept as ``self.history``).

        Parameters
        ----------
        x : ndarray, float (N, C, H, W), or fastconv.data.Dataset
            See the class docstring (integer images are refused).
        y : ndarray of int, shape (N,); None with a Dataset
        epochs : int
            Total epochs of the run (a resumed run counts the ones already done); required.
        batch_size : int
            The last batch of an epoch holds the remainder (no samples are dropped).
        validation_data : (x_val, y_val) or fastconv.data.Dataset, optional
        validation_split : float in [0, 1)
            Hold out the last fraction of ``x`` (before shuffling) for validation, as Keras
            (of a Dataset: two :class:`fastconv.data.Subset`).
        shuffle : bool
            Reshuffle the samples every epoch.
        seed : int, optional
            Seeds shuffling, ``augment`` and the model's random modules (Dropout; see the
            module docstring). None draws one; it is recorded in ``history.params["seed"]``.
        early_stopping : int, optional
            Patience in epochs: stop once the validation loss has not improved for that many
            epochs; at the end the weights of the best epoch are restored. Needs validation data.
        checkpoint : str or path, optional
            A ``.npz`` rewritten atomically after every epoch with the model, optimizer and
            scheduler states, the history, the epoch and the seed; an interrupted write (or a
            KeyboardInterrupt, or SIGTERM, which ``fit`` turns into a KeyboardInterrupt while it
            runs in the main thread) leaves the previous checkpoint intact. That the path can be
            written is checked before training (a ValueError naming it). When the weights or the
            optimizer state are no longer finite at the end of an epoch, the previous checkpoint
            is kept and a FloatingPointError names the epoch it holds.
        resume : bool
            Continue from ``checkpoint`` if the file exists (else start afresh); the result is
            the same, bit for bit, as an uninterrupted run with the same arguments. The whole
            file is checked before anything is loaded: a damaged or malformed file, or one
            written by a run with other settings, is a ValueError and nothing changes.
        augment : callable, optional
            ``augment(x_batch, rng) -> x_batch`` applied to each training batch, e.g.
            ``fastconv.datasets.RandomShift(2)`` or ``RandomAffine()``.
        progress : bool or "epoch"
            True: a tqdm bar per epoch (loss, accuracy, images/s, ETA) on stderr. "epoch": one
            line per epoch on stdout (for logs). False: silent.

        Returns
        -------
        History
        """
        if epochs is None:
            raise TypeError("fit() needs epochs=<number of epochs>")
        epochs = positive_int(epochs, "epochs", minimum=0)
        batch_size = positive_int(batch_size, "batch_size")
        if progress not in (True, False, "epoch"):
            raise ValueError(f"progress must be True, False or 'epoch', got {progress!r}")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be a callable (x_batch, rng) -> x_batch, got {augment!r}")
        if resume and checkpoint is None:
            raise ValueError("resume=True needs checkpoint=<path of the checkpoint to resume from>")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_split and validation_data is not None:
            raise ValueError("pass either validation_data or validation_split, not both")
        data = self._data(x, y)
        val = None
        if validation_split:
            n = len(data)
            n_val = int(n * validation_split)
            if not 0 < n_val < n:
                raise ValueError(f"validation_split={validation_split} of {n} samples leaves "
                                 f"{n_val} for validation")
            data, val = data.part(0, n - n_val), data.part(n - n_val, n)
        elif validation_data is not None:
            if is_dataset(validation_data):
                val = self._data(validation_data, None, "validation_data")
            elif not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val) or a fastconv.data.Dataset")
            else:
                val = self._data(*validation_data, name="validation_data")
        if early_stopping is not None:
            early_stopping = positive_int(early_stopping, "early_stopping")
            if val is None:
                raise ValueError("early_stopping needs validation_data or validation_split")

        params = {"epochs": epochs, "batch_size": batch_size, "samples": len(data), "shuffle": bool(shuffle),
                  "seed": seed, "augment": describe(augment), "validation_split": float(validation_split),
                  "validation_samples": 0 if val is None else len(val), "early_stopping": early_stopping,
                  "loss": describe_class(self.loss), "optimizer": describe_class(self.optimizer),
                  "scheduler": describe_class(self.scheduler), "ranks": self.size}
        fit = Fit(data, val, epochs, batch_size, bool(shuffle), augment, progress, early_stopping, checkpoint)
        run = Run(seed=seed)
        with self._collective(), sigterm_as_interrupt():
            if checkpoint is not None and self.rank == 0:
                check_writable(checkpoint, "checkpoint")  # before training, not after the first epoch
            if self._parallel:
                digests = {"data": data.digest(), "validation": None if val is None else val.digest()}
                dist.check_same_run(dict(params, **digests), self.model, len(data), batch_size)
                self._allreduce = dist.GradientAllreduce(self.model.parameters())
            restored = resume and self._restore(checkpoint, run, params)
            if self._parallel and not restored:
                self._load(dist.broadcast_start(self.model, self.optimizer, self.scheduler))
            if run.seed is None:
                run.seed = int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> 1)
                if self._parallel:
                    run.seed = dist.allgather(run.seed)[0]
            history = self.history = run.history
            history.params = dict(params, seed=run.seed)

            modes = [(m, m.training) for m in self.model.modules()]
            try:
                for epoch in range(run.start, epochs):
                    if run.stopped:
                        break
                    self._epoch(fit, run, epoch)
            finally:
                for m, mode in modes:
                    m.training = mode
        if run.best_state is not None:
            self.model.load_state_dict(run.best_state)
        return history

    def _steps(self, n, batch_size, order):
        """``(indices or slice, global batch size)`` of this rank for each step of an epoch."""
        if self._parallel:
            order = np.arange(n) if order is None else order
            return dist.batch_shards(order, batch_size, self.rank, self.size)
        return ((slice(i, i + batch_size) if order is None else order[i:i + batch_size],
                 min(batch_size, n - i)) for i in range(0, n, batch_size))

    def _epoch(self, fit, run, epoch):
        """One epoch of ``fit``: the steps, validation, the scheduler, early stopping, the
        history's row, the checkpoint and the progress line; ``run`` carries what changes."""
        start = time.perf_counter()
        data, val, augment, progress = fit.data, fit.val, fit.augment, fit.progress
        model, opt, loss_fn, n, dtype = self.model, self.optimizer, self.loss, len(data), self._dtype()
        shuffle_rng, augment_rng, modules_seed = epoch_generators(run.seed, epoch, self.rank, self.size)
        model.reseed(modules_seed)  # e.g. Dropout draws each forward's mask seed from its new generator
        order = shuffle_rng.permutation(n) if fit.shuffle else None
        lr = float(opt.param_groups[0]["lr"])
        on_device = any(is_device_array(p.data) for p in model.parameters())
        model.train()
        total, correct, seen = 0.0, 0, 0
        bar = tqdm(total=n, desc=f"Epoch {epoch + 1}/{fit.epochs}", unit="img", leave=True,
                   disable=progress is not True or self.rank != 0, file=sys.stderr, dynamic_ncols=True)
        with bar:
            for step, (idx, count) in enumerate(self._steps(n, fit.batch_size, order)):
                k = count if isinstance(idx, slice) else len(idx)
                opt.zero_grad()  # a rank with an empty share sends zero gradients
                if k:  # a rank's share is empty when a global batch has fewer samples than ranks
                    xb, yb = data.take(idx)
                    if augment is not None:
                        xb = augment(xb, augment_rng)
                    xin, yin = xb, yb
                    if on_device:  # the batch's one copy to the device; yb stays for the accuracy
                        xin, yin = to_device(np.asarray(xb, dtype=dtype)), to_device(yb)
                    logits = model.forward(xin)
                    loss = loss_fn.forward(logits, yin)
                    if not math.isfinite(loss):
                        raise FloatingPointError(f"epoch {epoch + 1}, batch {step}: the loss is "
                                                 f"{loss}; try a lower learning rate")
                    dlogits = loss_fn.backward()
                    # this rank's share of the global batch's mean loss
                    model.backward(_scaled(dlogits, k / count) if self._parallel else dlogits)
                    total += loss * k
                    correct += int(np.count_nonzero(to_numpy(logits).argmax(axis=1) == yb))
                    seen += k
                if self._parallel:
                    self._allreduce()
                opt.step()
                if not bar.disable:
                    bar.set_postfix_str(f"loss={total / max(seen, 1):.4f}, acc={correct / max(seen, 1):.4f}",
                                        refresh=False)
                    bar.update(count)
            train_seconds = time.perf_counter() - start
            if self._parallel:
                total, correct = dist.allreduce_sum([total, correct])
                dist.broadcast_buffers(model)
            metrics = self._evaluate(val, 256) if val is not None else {"loss": None, "accuracy": None}
            if not bar.disable and val is not None:
                bar.set_postfix_str(f"loss={total / n:.4f}, acc={correct / n:.4f}, "
                                    f"val_loss={metrics['loss']:.4f}, val_acc={metrics['accuracy']:.4f}")

        if isinstance(self.scheduler, ReduceLROnPlateau):
            self.scheduler.step(total / n if val is None else metrics["loss"])
        elif self.scheduler is not None:
            self.scheduler.step()
        if fit.patience is not None:
            run.early_stopping(epoch, metrics["loss"], fit.patience, model)
        h = run.history
        h._append(epoch, loss=float(total / n), accuracy=float(correct / n), val_loss=metrics["loss"],
                  val_accuracy=metrics["accuracy"], lr=lr, seconds=time.perf_counter() - start,
                  images_per_second=n / train_seconds)
        if fit.checkpoint is not None and self.rank == 0:
            self._save(fit.checkpoint, epoch + 1, run)
        if progress == "epoch" and self.rank == 0:
            line = (f"Epoch {epoch + 1}/{fit.epochs} - {h.seconds[-1]:.1f}s - {h.images_per_second[-1]:.0f} img/s"
                    f" - loss {h.loss[-1]:.4f} - acc {h.accuracy[-1]:.4f}")
            if val is not None:
                line += f" - val_loss {h.val_loss[-1]:.4f} - val_acc {h.val_accuracy[-1]:.4f}"
            print(line + f" - lr {lr:.3g}", flush=True)

    # -- checkpoints (the format and its checks: fastconv._checkpoint) ---------------------------
    def _save(self, path, epochs_done, run):
        """Write the checkpoint after ``epochs_done`` epochs, unless the weights or the optimizer
        state are no longer finite: then the last good checkpoint stays and a FloatingPointError
        says which epoch it holds."""
        state = {"format": ckpt.FORMAT, "epoch": epochs_done, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(),
                 "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                 **run.checkpoint_state()}
        bad = ckpt.nonfinite(state)
        if bad:
            kept = (f"{path} keeps the checkpoint of epoch {run.saved}" if run.saved is not None
                    else f"no checkpoint of this run was written to {path}")
            raise FloatingPointError(f"epoch {epochs_done}: {', '.join(bad[:3])}{' ...' * (len(bad) > 3)} "
                                     f"not finite after the epoch's last step; {kept} (not overwritten); "
                                     "try a lower learning rate")
        atomic_savez(path, flatten_state(state))
        run.saved = epochs_done

    #: The run settings a resumed run must share with the run that wrote the checkpoint.
    _RESUME_SETTINGS = ckpt.RESUME_SETTINGS

    def _restore(self, path, run, params):
        """Load the checkpoint at ``path`` (if it exists: return True; else False) into the model,
        optimizer, scheduler and ``run``, after checking, before anything changes, the whole file:
        that it is well formed and was written by a run with the same settings and the same setup
        (:mod:`fastconv._checkpoint`); on a problem a ValueError names it and nothing is loaded.
        With several ranks rank 0 reads the file and broadcasts it; every rank checks it."""
        args = (path, self.model, self.optimizer, self.scheduler, params, run.seed)
        if self._parallel:
            state = dist.read_on_root(lambda: ckpt.load(*args), lambda state: ckpt.check(state, *args))
        else:
            state = ckpt.load(*args)
        if state is None:
            return False
        self._load(state)
        run.restore(state)
        return True

    def _load(self, state):
        """Load a checked ``{"model", "optimizer", "scheduler"}`` state (None: nothing to load)."""
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
