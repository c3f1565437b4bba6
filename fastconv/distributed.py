"""Data-parallel training on MPI: ranks, broadcasts, sharding, gradient sums, SyncBatchNorm, and
the Trainer's coordination of its ranks (:func:`check_same_run`, :func:`broadcast_start`,
:func:`broadcast_buffers`, :func:`read_on_root`).

Launch the same script on several processes, ``mpiexec -n 4 python train.py`` (on one machine or
on several hosts); every process (rank) builds the same model and loads the same data set, and
``Trainer(model, ..., distributed=True)`` does the rest, Horovod-style:

- the parameters, buffers, optimizer and scheduler state are broadcast from rank 0 at the start
  of :meth:`Trainer.fit` and after a resume, so every rank starts from the same state;
- each optimizer step takes one *global* batch of ``batch_size`` samples from the epoch's
  shuffled order (one seed shared by all ranks), and rank ``r`` of ``size`` trains on its
  elements ``r, r + size, ...`` (:func:`batch_shards`): every sample is used exactly once per
  epoch, the last shards may be uneven, nothing is repeated or dropped;
- each rank weights its loss gradient by its share of the global batch, so after backward the
  sum over the ranks of the parameter gradients is the gradient of the global batch's mean loss;
  that sum is one ``Allreduce`` of one contiguous buffer per step, the parameters in a fixed
  order (:class:`GradientAllreduce`); every rank then takes the same optimizer step;
- BatchNorm keeps per-rank batch statistics (the running statistics are broadcast from rank 0
  after every epoch); :class:`SyncBatchNorm` normalises with the statistics of the global batch.

A single process started without mpiexec is rank 0 of 1 and trains unchanged. Needs mpi4py and
an MPI library: ``pip install fastconv[mpi]`` (mpi4py and mpich); this module imports mpi4py only
when a function below first needs it.
"""
import contextlib
import sys
import time
import traceback

import numpy as np

from . import _checkpoint as ckpt
from . import functional as F
from ._backend import is_device_array, to_numpy
from .layers import BatchNorm2d
from .optim import flatten_state, unflatten_state

__all__ = ["init", "rank", "size", "is_main", "batch_shards", "shard_bounds", "broadcast_arrays",
           "allreduce_sum", "barrier", "allgather", "GradientAllreduce", "abort_on_error", "SyncBatchNorm"]

_state = {"comm": None}

#: Seconds :func:`abort_on_error` waits between printing the error and aborting the job.
ABORT_DELAY = 0.5


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("fastconv.distributed needs mpi4py and an MPI library: "
                          "pip install fastconv[mpi] (installs mpi4py and mpich)") from exc
    return MPI


def init():
    """Join the MPI job (``MPI.COMM_WORLD``; idempotent) and return ``(rank, size)``.

    Started without mpiexec the process is a job of its own: ``(0, 1)``.
    """
    if _state["comm"] is None:
        _state["comm"] = _mpi().COMM_WORLD
    return _state["comm"].Get_rank(), _state["comm"].Get_size()


def _comm():
    init()
    return _state["comm"]


def rank():
    """This process's rank, from 0 (calls :func:`init`)."""
    return init()[0]


def size():
    """How many processes (ranks) the job has (calls :func:`init`)."""
    return init()[1]


def is_main():
    """Whether this is rank 0: the one that prints, writes checkpoints and plots."""
    return rank() == 0


# --- sharding ----------------------------------------------------------------------------------

def batch_shards(order, batch_size, rank, size):
    """The samples rank ``rank`` of ``size`` trains on at each step of an epoch.

    Parameters
    ----------
    order : ndarray of int, shape (n,)
        The epoch's order of the samples, the same on every rank.
    batch_size : int
        The global batch: samples per optimizer step, over all ranks together.
    rank, size : int

    Yields
    ------
    (local, global_count) : (ndarray of int (k,), int)
        Step ``s``'s global batch is ``order[s * batch_size:(s + 1) * batch_size]`` (the last
        one holds the remainder) and this rank's share of it is every ``size``-th element from
        position ``rank``: the shares of a step are disjoint, differ in length by at most one
        (a share is empty when the global batch has fewer than ``size`` samples) and together
        are the global batch, so over the epoch every sample is used exactly once.
    """
    for start in range(0, len(order), batch_size):
        window = order[start:start + batch_size]
        yield window[rank::size], len(window)


def shard_bounds(n, rank, size):
    """``(start, stop)`` of rank ``rank``'s contiguous share of ``n`` samples (for evaluation):
    the shares are in rank order, differ in length by at most one and cover ``range(n)``."""
    return rank * n // size, (rank + 1) * n // size


# --- collectives -------------------------------------------------------------------------------

def broadcast_arrays(arrays, root=0):
    """Every rank gets the root's ``{key: ndarray}`` (copies; other ranks pass None).

    The keys, dtypes and shapes go first (one small pickled broadcast), then all the data in
    one ``Bcast`` of a single byte buffer. Any fixed-size dtype (numbers, strings) travels.
    """
    comm = _comm()
    if comm.Get_rank() == root:
        arrays = {key: np.array(a, order="C", copy=None) for key, a in arrays.items()}  # 0-d stays 0-d
        layout = [(key, a.dtype.str, a.shape) for key, a in arrays.items()]
    else:
        layout = None
    layout = comm.bcast(layout, root=root)
    sizes = [int(np.dtype(dt).itemsize * np.prod(shape, dtype=np.int64)) for _, dt, shape in layout]
    data = np.empty(sum(sizes), np.uint8)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    if comm.Get_rank() == root:
        for (key, _, _), a, b in zip(layout, offsets[:-1], offsets[1:]):
            data[a:b] = arrays[key].reshape(-1).view(np.uint8)
    comm.Bcast(data, root=root)
    return {key: data[a:b].view(dt).reshape(shape).copy()
            for (key, dt, shape), a, b in zip(layout, offsets[:-1], offsets[1:])}


def allreduce_sum(values):
    """The sum over the ranks of ``values`` (float64 array), the same on every rank."""
    buf = np.array(values, dtype=np.float64)
    _comm().Allreduce(_mpi().IN_PLACE, buf, op=_mpi().SUM)
    return buf


def barrier():
    """Wait until every rank has called it."""
    _comm().Barrier()


def allgather(value):
    """``[value of rank 0, value of rank 1, ...]`` on every rank (small picklable values)."""
    return _comm().allgather(value)


class GradientAllreduce:
    """Sums the parameters' gradients over the ranks: one ``Allreduce`` of one buffer per call.

    The gradients are copied into one contiguous buffer in the order of ``params`` (fixed, the
    same on every rank), followed by one flag per parameter (1 where it has a gradient); after
    the ``Allreduce`` (in place, ``MPI.SUM``) each gradient is overwritten with the sum, and a
    parameter that no rank gave a gradient keeps ``grad = None``. A rank that has no gradient
    for a parameter (an empty share of the batch) contributes zeros. Gradients on the device
    are copied to the host for the exchange and back.

    Parameters
    ----------
    params : list of Parameter
        All of one floating dtype (the buffer's).

    Attributes
    ----------
    nbytes : int
        Size of the buffer sent per step.
    seconds : float
        Wall time spent inside ``Allreduce`` so far (waiting for slower ranks included).
    steps : int
        Calls so far.
    """

    def __init__(self, params):
        self.params = list(params)
        dtypes = {np.dtype(p.data.dtype) for p in self.params}
        if len(dtypes) > 1:
            raise ValueError(f"GradientAllreduce: the parameters have several dtypes "
                             f"({', '.join(sorted(map(str, dtypes)))}); convert the model with "
                             "model.to(dtype) first")
        dtype = dtypes.pop() if dtypes else np.dtype(np.float32)
        sizes = [int(np.prod(p.shape, dtype=np.int64)) for p in self.params]
        self._bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self._bounds[-1])
        self._buffer = np.empty(total + len(self.params), dtype)
        self._flags = self._buffer[total:]
        self.nbytes = self._buffer.nbytes
        self.seconds, self.steps = 0.0, 0

    def __call__(self):
        """Replace every parameter's gradient by its sum over the ranks (in place)."""
        buf, flags = self._buffer, self._flags
        for i, p in enumerate(self.params):
            part = buf[self._bounds[i]:self._bounds[i + 1]]
            if p.grad is None:
                part[...] = 0
                flags[i] = 0
            else:
                part[...] = to_numpy(p.grad).reshape(-1)
                flags[i] = 1
        start = time.perf_counter()
        _comm().Allreduce(_mpi().IN_PLACE, buf, op=_mpi().SUM)
        self.seconds += time.perf_counter() - start
        self.steps += 1
        for i, p in enumerate(self.params):
            part = buf[self._bounds[i]:self._bounds[i + 1]].reshape(p.shape)
            if flags[i] == 0:
                p.grad = None
            elif p.grad is None:
                p.grad = part.copy()
            elif is_device_array(p.grad):
                p.grad.copy_to_device(part)
            else:
                np.copyto(p.grad, part)


@contextlib.contextmanager
def abort_on_error():
    """In a job of several ranks, turn any exception into the end of the whole job.

    A rank that raises while the others wait in a collective would leave them waiting forever.
    Inside this context an exception (KeyboardInterrupt included) on any rank prints a line
    naming the rank and the exception, then the traceback, to stderr, waits :data:`ABORT_DELAY`
    seconds (the launcher forwards output asynchronously and kills the job at the abort), then
    calls ``MPI.COMM_WORLD.Abort(1)``, which ends every rank of the job (mpiexec returns 1). In
    a job of one rank the exception propagates as usual.
    """
    try:
        yield
    except BaseException as exc:
        r, s = init()
        if s == 1:
            raise
        print(f"fastconv.distributed: rank {r} of {s} failed ({type(exc).__name__}: {exc}); "
              f"aborting all {s} ranks", file=sys.stderr, flush=True)
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        time.sleep(ABORT_DELAY)
        _comm().Abort(1)
        raise


# --- the Trainer's coordination of its ranks ---------------------------------------------------

def check_same_run(settings, model, n, batch_size):
    """That every rank called ``fit`` with the same ``settings`` (a dict of the run's settings
    and digests of its data), else a ValueError on every rank naming what differs; and that with
    SyncBatchNorm layers every step of ``n`` samples in global batches of ``batch_size`` gives
    each rank at least one sample."""
    ranks = allgather(settings)
    for r, theirs in enumerate(ranks):
        diff = sorted(k for k in settings if theirs.get(k) != ranks[0].get(k))
        if diff:
            got = ", ".join(f"{k}={theirs.get(k)!r}" for k in diff)
            want = ", ".join(f"{k}={ranks[0].get(k)!r}" for k in diff)
            raise ValueError(f"rank {r} called fit with {got} where rank 0 has {want}: every rank "
                             "must pass the same data and settings")
    ranks = len(ranks)
    smallest = n % batch_size or batch_size  # the last step's global batch
    if smallest < ranks and any(isinstance(m, SyncBatchNorm) for m in model.modules()):
        raise ValueError(f"SyncBatchNorm needs a sample on every rank at every step, but with "
                         f"{n} samples, batch_size={batch_size} and {ranks} ranks a step "
                         f"has {smallest} samples: choose a batch_size whose remainder is 0 or "
                         f">= {ranks}")


def broadcast_start(model, optimizer, scheduler):
    """Rank 0's ``{"model", "optimizer", "scheduler"}`` state sent to every rank: None on rank 0;
    on the others the state to load, after checking that it fits this rank's model and
    optimizer (else a ValueError naming the differences)."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": None if scheduler is None else scheduler.state_dict()}
    root = rank() == 0
    state = unflatten_state(broadcast_arrays(flatten_state(state) if root else None))
    if root:
        return None
    problems = (ckpt.state_mismatches("model", state["model"], model.state_dict(), dtypes=True)
                + ckpt.optimizer_mismatches(state["optimizer"], optimizer))
    if problems:
        raise ValueError(f"rank {rank()}'s model or optimizer differs from rank 0's: " + "; ".join(problems))
    return state


def broadcast_buffers(model):
    """Rank 0's buffers (BatchNorm's running statistics) loaded into ``model`` on every rank."""
    names = {name for name, _ in model.named_parameters()}
    buffers = {k: v for k, v in model.state_dict().items() if k not in names}
    if buffers:
        model.load_state_dict(broadcast_arrays(buffers if rank() == 0 else None), strict=False)


def read_on_root(read, check):
    """The state ``read()`` returns on rank 0 (None: there is none), on every rank: a ValueError
    ``read`` raises is raised on every rank, and the other ranks ``check(state)`` what they
    receive."""
    root = rank() == 0
    state, error = None, None
    if root:
        try:
            state = read()
        except ValueError as exc:
            error = str(exc)
    found, error = allgather((state is not None, error))[0]
    if error is not None:
        raise ValueError(error)
    if not found:
        return None
    arrays = broadcast_arrays(flatten_state(state) if root else None)
    if not root:
        state = unflatten_state(arrays)
        check(state)
    return state


# --- synchronised batch normalisation ------------------------------------------------------------

class _SyncCache:
    __slots__ = ("bn", "count", "mean", "var")

    def __init__(self, bn, count, mean, var):
        self.bn, self.count, self.mean, self.var = bn, count, mean, var


class SyncBatchNorm(BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch, over all ranks.

    In training, each rank computes per-channel counts and shifted sums of its share on the
    host (NumPy, in float64), the ranks exchange them (one ``Allgather`` of ``4 * C`` numbers)
    and combine them in rank order, so every rank normalises its share with the same mean and
    biased variance of the whole batch and updates the running statistics identically (the
    variance unbiased with the global count). The normalisation itself is
    :func:`fastconv.functional.batch_norm`'s with those statistics. Backward sums the two
    per-channel reductions of the input gradient over the ranks (one ``Allreduce`` of
    ``2 * C`` numbers) and builds the input gradient from :func:`~fastconv.functional.batch_norm_backward`
    and one more :func:`~fastconv.functional.batch_norm` pass. ``weight``/``bias`` gradients are
    this rank's (the trainer's gradient Allreduce sums them).

    Gradients are those of the sum of the ranks' losses: with the Trainer (which weights each
    rank's loss by its share of the global batch) that is the global batch's mean loss, so 2 ranks
    of 32 give the gradients of one process with 64. In eval mode, and in a job of one rank, it is
    exactly :class:`fastconv.BatchNorm2d`. Host arrays only (the statistics are reduced on the
    host). Every rank must call forward and backward together, each with at least one sample.

    Parameters
    ----------
    num_features, eps, momentum, dtype
        As :class:`fastconv.BatchNorm2d`. Inputs ``(N, C, H, W)``.
    """

    def forward(self, x):
        if not self.training or size() == 1:
            return super().forward(x)
        x = self._input(x)
        self.output_shape(x.shape)
        if is_device_array(x):
            raise TypeError(f"{self._label()}: SyncBatchNorm reduces its statistics on the host; "
                            "got a device array (use BatchNorm2d on the device)")
        c = self.num_features
        x3 = x.reshape(x.shape[0], c, -1)
        local = np.zeros((4, c), np.float64)  # count, shift, sum(x - shift), sum((x - shift)^2)
        local[0] = x3.shape[0] * x3.shape[2]
        if x3.size:
            shift = x3.mean(axis=(0, 2), dtype=np.float64).astype(x.dtype)
            d = x3 - shift[None, :, None]
            local[1] = shift
            local[2] = d.sum(axis=(0, 2), dtype=np.float64)
            np.square(d, out=d)
            local[3] = d.sum(axis=(0, 2), dtype=np.float64)
        gathered = np.empty((size(), 4, c), np.float64)
        _comm().Allgather(local, gathered)
        counts, shifts, s1, s2 = gathered[:, 0], gathered[:, 1], gathered[:, 2], gathered[:, 3]
        count = float(counts[:, 0].sum())
        if count < 2:
            raise ValueError(f"{self._label()}: expected more than 1 value per channel when training, "
                             f"got {count:.0f} over all ranks")
        mean = (counts * shifts + s1).sum(axis=0) / count
        delta = shifts - mean
        var = np.maximum((s2 + 2 * delta * s1 + counts * delta * delta).sum(axis=0) / count, 0.0)
        mean_x, var_x = mean.astype(x.dtype), var.astype(x.dtype)
        self.num_batches_tracked += 1
        out, bn = F.batch_norm(x, self.weight.data, self.bias.data, mean_x, var_x, training=False,
                               eps=self.eps)
        m = self.momentum
        self.running_mean *= 1 - m
        self.running_mean += (m * mean).astype(self.running_mean.dtype)
        self.running_var *= 1 - m
        self.running_var += (m * count / (count - 1) * var).astype(self.running_var.dtype)
        self._save(_SyncCache(bn, count, mean_x, var_x))
        return out

    def _backward(self, dy, need_dx):
        cache = self._restore()
        if not isinstance(cache, _SyncCache):
            self._caches.append(cache)  # an eval-mode forward: BatchNorm2d's own backward takes it
            return super()._backward(dy, need_dx)
        # eval-mode backward: dx = dy * weight * inv_std, and this rank's sums dweight, dbias
        dx, dweight, dbias = F.batch_norm_backward(dy, cache.bn, need_dx)
        self._grads(dweight, dbias)  # BatchNorm2d's own accumulation into weight.grad, bias.grad
        if not need_dx:
            return None
        sums = allreduce_sum(np.concatenate([dweight, dbias]))
        c, w = self.num_features, self.weight.data.astype(np.float64)
        inv_std = 1 / np.sqrt(cache.var.astype(np.float64) + self.eps)
        scale = -w * inv_std / cache.count
        # dx -= inv_std * (xhat * w * sum(dy * xhat) + w * sum(dy)) / count: batch_norm with the
        # forward's statistics gives (x - mean) * inv_std * a + b for any per-channel a, b
        dtype = cache.bn.x.dtype
        correction, _ = F.batch_norm(cache.bn.x, (scale * sums[:c]).astype(dtype),
                                     (scale * sums[c:]).astype(dtype), cache.mean, cache.var,
                                     training=False, eps=self.eps)
        dx += correction.reshape(dx.shape)
        return dx

    @classmethod
    def convert_sync_batchnorm(cls, module):
        """``module`` with every BatchNorm2d replaced by a SyncBatchNorm (PyTorch's name).

        A BatchNorm2d itself gives a new SyncBatchNorm; a Sequential (nested ones included) has
        its layers replaced in place and is returned. The new layers hold the same Parameter
        objects (an optimizer built before keeps working) and copies of the running statistics.
        """
        if isinstance(module, BatchNorm2d) and not isinstance(module, cls):
            sync = cls(module.num_features, eps=module.eps, momentum=module.momentum,
                       dtype=module.weight.dtype)
            sync.weight, sync.bias = module.weight, module.bias
            sync.running_mean = np.array(to_numpy(module.running_mean))
            sync.running_var = np.array(to_numpy(module.running_var))
            sync.num_batches_tracked = np.array(module.num_batches_tracked)
            sync.training = module.training
            return sync
        layers = getattr(module, "layers", None)
        if isinstance(layers, list):
            module.layers = [cls.convert_sync_batchnorm(layer) for layer in layers]
        return module
