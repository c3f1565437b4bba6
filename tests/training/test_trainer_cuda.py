"""A whole network trains on the device: ``model.to("cuda")``, optimizers, loss and Trainer.

Runs on Numba's CUDA simulator (tests/conftest.py), where every GPU thread is Python: shapes are
tiny. The ``transfers`` fixture counts every host<->device copy (``numba.cuda.to_device``,
``copy_to_device`` from the host, ``copy_to_host``) and makes the simulator's arrays as strict
as real device arrays: the simulator would otherwise hand NumPy attributes, ``np.asarray`` and
arithmetic straight to the host array it wraps, hiding a host round trip. A layer that brought an
activation to the host would therefore fail the exact per-batch counts below.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv.optim import SGD, Adam

pytestmark = [pytest.mark.cuda,
              pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
              pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]

_ARITHMETIC = ("__add__", "__sub__", "__mul__", "__floordiv__", "__truediv__", "__mod__", "__pow__")
_COMPARISONS = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__")
#: Attributes a real DeviceNDArray has that the simulator forwards to the wrapped NumPy array.
_DEVICE_ATTRS = frozenset(("dtype", "size", "ndim", "strides", "itemsize", "flags"))


class Transfers:
    """Log of host<->device copies: ``"h2d"`` / ``"d2h"`` events between ``mark(label)`` calls."""

    def __init__(self):
        self.log = []

    def mark(self, label):
        self.log.append(label)

    def counts(self, label):
        """``[{"h2d": n, "d2h": m}, ...]``, one per interval opened by ``mark(label)``, up to the
        next mark of any label."""
        out = []
        for event in self.log:
            if event in ("h2d", "d2h"):
                if out and out[-1] is not None:
                    out[-1][event] += 1
            elif event == label:
                out.append({"h2d": 0, "d2h": 0})
            else:
                out.append(None)
        return [c for c in out if c is not None]


@pytest.fixture
def transfers(G, monkeypatch):
    """Count host<->device copies and make simulator arrays as strict as real ones."""
    from numba import cuda
    from numba.cuda import config
    if not config.ENABLE_CUDASIM:
        pytest.skip("transfer counting instruments the simulator's device arrays")
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
    rec = Transfers()
    to_device, to_host, copy_in = cuda.to_device, FakeCUDAArray.copy_to_host, FakeCUDAArray.copy_to_device

    def counted_to_device(ary, *args, **kwargs):
        rec.log.append("h2d")
        return to_device(ary, *args, **kwargs)

    def counted_copy_to_host(self, *args, **kwargs):
        rec.log.append("d2h")
        return to_host(self, *args, **kwargs)

    def counted_copy_to_device(self, ary, *args, **kwargs):
        if not isinstance(ary, FakeCUDAArray):
            rec.log.append("h2d")
        return copy_in(self, ary, *args, **kwargs)

    def strict_getattr(self, name):
        if name in _DEVICE_ATTRS:
            return getattr(self._ary, name)
        raise AttributeError(f"device arrays have no attribute {name!r}")

    def no_arithmetic(self, other):
        raise TypeError("device arrays have no host arithmetic")

    monkeypatch.setattr(cuda, "to_device", counted_to_device)
    monkeypatch.setattr(FakeCUDAArray, "copy_to_host", counted_copy_to_host)
    monkeypatch.setattr(FakeCUDAArray, "copy_to_device", counted_copy_to_device)
    monkeypatch.setattr(FakeCUDAArray, "__getattr__", strict_getattr)
    # as DeviceNDArray.__array__: np.asarray(device array) is a (counted) copy to the host
    monkeypatch.setattr(FakeCUDAArray, "__array__",
                        lambda self, dtype=None, copy=None: self.copy_to_host(), raising=False)
    for name in _ARITHMETIC:
        monkeypatch.setattr(FakeCUDAArray, name, no_arithmetic)
    for name in _COMPARISONS:  # object's: identity, as a real device array
        monkeypatch.setattr(FakeCUDAArray, name, lambda self, other: NotImplemented)
    return rec


def on_device(a):
    return fc._backend.is_device_array(a)


def net(bn=False, dtype=np.float32, seed=0, dropout=0.0):
    """conv(1->2, 3x3, same) [-> BatchNorm2d] -> ReLU -> MaxPool2d(2) -> Flatten [-> Dropout]
    -> Linear(8, 3), for (N, 1, 4, 4) input. With batch norm the conv has no bias: its true gradient
    is zero, and Adam would blow the gradient's rounding noise up to lr-sized steps."""
    layers = [fc.Conv2d(1, 2, 3, padding=1, bias=not bn, rng=seed, dtype=dtype)]
    if bn:
        layers.append(fc.BatchNorm2d(2, dtype=dtype))
    layers += [fc.ReLU(), fc.MaxPool2d(2), fc.Flatten()]
    if dropout:
        layers.append(fc.Dropout(dropout, rng=seed + 2))
    layers.append(fc.Linear(8, 3, rng=seed + 1, dtype=dtype))
    return fc.Sequential(*layers)


def batches(dtype, count=3, n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, 1, 4, 4)).astype(dtype), rng.integers(0, 3, n)) for _ in range(count)]


def train_steps(model, opt, data, transfers=None):
    loss_fn, losses = fc.losses.CrossEntropyLoss(), []
    for x, y in data:
        if transfers is not None:
            transfers.mark("step")
        losses.append(loss_fn(model(x), y))  # host x and labels: the first layer and the loss copy them
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    if transfers is not None:
        transfers.mark("done")
    return losses


# --- (a) three training steps: the same weights on cuda and cpu ------------------------------------

@pytest.mark.parametrize("bn, optimizer, dtype", [
    (False, "sgd", np.float32), (False, "adam", np.float64),
    (True, "sgd", np.float64), (True, "adam", np.float32)])
def test_three_steps_give_the_cpu_weights(G, close, transfers, bn, optimizer, dtype):
    def make_opt(model):
        if optimizer == "sgd":
            return SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        return Adam(model.parameters(), lr=0.01, amsgrad=True)

    data = batches(dtype)
    cpu = net(bn, dtype)
    gpu = net(bn, dtype).to("cuda")
    assert all(p.device == "cuda" for p in gpu.parameters()) and gpu.device == "cuda"
    cpu_opt, gpu_opt = make_opt(cpu), make_opt(gpu)
    cpu_losses = train_steps(cpu, cpu_opt, data)
    gpu_losses = train_steps(gpu, gpu_opt, data, transfers)
    tol = dict(rtol=1e-5) if dtype == np.float32 else dict(rtol=1e-12)
    np.testing.assert_allclose(gpu_losses, cpu_losses, **tol)
    want, got = cpu.state_dict(), gpu.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert isinstance(got[key], np.ndarray)
        close(f"{'bn ' if bn else ''}{optimizer} 3 steps: {key}", got[key], want[key])
    for p in gpu.parameters():  # everything stayed on the device
        assert on_device(p.data) and on_device(p.grad)
    if bn:
        assert on_device(gpu[1].running_mean) and on_device(gpu[1].running_var)
        assert int(gpu[1].num_batches_tracked) == 3
    want_state, got_state = cpu_opt.state_dict(), gpu_opt.state_dict()
    for index, state in want_state["state"].items():
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                close(f"{optimizer} state {key}", got_state["state"][index][key], value)
            else:
                assert got_state["state"][index][key] == value
    # per step after the first (which allocates optimizer state): x copied up by the first layer,
    # the labels by the loss; back come the loss and the max-pool backward's switch check
    assert transfers.counts("step")[1:] == [{"h2d": 2, "d2h": 2}] * 2


# --- (b) Trainer: each batch is copied to the device once ---------------------------------------

def test_fit_copies_each_batch_once_and_checkpoints_numpy(G, transfers, monkeypatch, tmp_path):
    model = net(dropout=0.5).to("cuda")
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = fc.Trainer(model, optimizer=opt)
    save = trainer._save

    def mark_batch(xb, rng):  # the augmentation hook runs on the host batch, before its copy up
        transfers.mark("batch")
        return xb

    def marked_save(*args):
        transfers.mark("save")
        return save(*args)

    monkeypatch.setattr(trainer, "_save", marked_save)
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((6, 1, 4, 4)).astype(np.float32), rng.integers(0, 3, 6)
    path = tmp_path / "ckpt.npz"
    history = trainer.fit(x, y, epochs=1, batch_size=2, seed=0, progress=False, checkpoint=path,
                          augment=mark_batch)
    assert len(history) == 1 and np.isfinite(history.loss[0]) and 0 <= history.accuracy[0] <= 1

    per_batch = transfers.counts("batch")
    assert len(per_batch) == 3
    # one copy up each of images and labels; back: the loss, the (2, 3) logits for the accuracy,
    # the max-pool backward's switch check (the tier's contract returns it as a host bool)
    assert per_batch[1:] == [{"h2d": 2, "d2h": 3}] * 2
    # the first batch also makes the 4 momentum buffers (zeros copied up) and, once per process
    # and dtype, the tier's placeholder for absent operands
    assert per_batch[0]["d2h"] == 3 and per_batch[0]["h2d"] - 2 - 4 in (0, 1)
    # the checkpoint: 4 parameters and 4 momentum buffers copied down, nothing up
    assert transfers.counts("save") == [{"h2d": 0, "d2h": 8}]

    with np.load(path) as archive:
        saved = {k: archive[k] for k in archive.files}
    state = model.state_dict()
    for key, value in state.items():
        np.testing.assert_array_equal(saved["model." + key], value)
    momentum = opt.state_dict()["state"][0]["momentum_buffer"]
    assert isinstance(momentum, np.ndarray)
    np.testing.assert_array_equal(saved["optimizer.state.0.momentum_buffer"], momentum)

    # evaluate: each batch up once, its logits back once; the same numbers as on the host
    transfers.mark("evaluate")
    metrics = trainer.evaluate(x, y, batch_size=4)
    assert transfers.counts("evaluate") == [{"h2d": 2, "d2h": 2}]
    host = net(dropout=0.5)
    host.load_state_dict(state)
    want = fc.Trainer(host).evaluate(x, y, batch_size=4)
    assert metrics["accuracy"] == want["accuracy"]
    assert metrics["loss"] == pytest.approx(want["loss"], rel=1e-5)


# --- (c) moving models and their state --------------------------------------------------------------

def test_to_cuda_and_back_keeps_state_dict_and_files(G, tmp_path):
    model = net(bn=True, seed=3)
    before = model.state_dict()
    params = model.parameters()
    for p in params:
        p.grad = np.ones(p.shape, p.dtype)
    assert model.to("cuda") is model and model.parameters() == params
    assert all(p.device == "cuda" and on_device(p.data) and p.grad is None for p in params)
    bn = model[1]
    assert on_device(bn.running_mean) and on_device(bn.running_var)
    assert isinstance(bn.num_batches_tracked, np.ndarray)  # a host counter
    on = model.state_dict()
    assert list(on) == list(before)
    for key in before:
        assert type(on[key]) is np.ndarray and on[key].dtype == before[key].dtype
        np.testing.assert_array_equal(on[key], before[key])

    path = tmp_path / "model.npz"
    model.save(path)  # from the device: a NumPy archive
    other = net(bn=True, seed=4).to("cuda")
    weight = other[0].weight.data
    assert other.load(path) is other
    assert other[0].weight.data is weight and on_device(other[1].running_var)  # copied in place
    for key, value in other.state_dict().items():
        np.testing.assert_array_equal(value, before[key])
    other.load_state_dict({**before, "1.running_mean": np.full(2, 0.5, np.float64)})
    np.testing.assert_array_equal(fc.to_numpy(other[1].running_mean), [0.5, 0.5])
    assert other[1].running_mean.dtype == np.float32

    assert model.to(np.float64) is model  # converted on the device
    assert all(p.device == "cuda" and p.dtype == np.float64 for p in params)
    assert on_device(bn.running_var) and bn.running_var.dtype == np.float64
    assert model.to("cpu") is model
    assert all(type(p.data) is np.ndarray and p.device == "cpu" for p in params)
    assert type(bn.running_mean) is np.ndarray
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key].astype(value.dtype))
    assert model.to("cpu") is model and model.to("cuda").to("cuda").device == "cuda"
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        model.to("gpu")


NO_GPU_SCRIPT = r"""
import json
import fastconv as fc
report = {}
model = fc.Sequential(fc.Linear(2, 2, rng=0))
try:
    model.to("cuda")
    report["error"] = None
except Exception as exc:
    report["error"] = [type(exc).__name__, str(exc)]
report["device"] = model.device
import numba.cuda
report["gpu"] = numba.cuda.is_available()
print(json.dumps(report))
"""


def test_model_to_cuda_without_gpu_or_simulator_fails_clearly():
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "FASTCONV_BACKEND")}
    done = subprocess.run([sys.executable, "-c", NO_GPU_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["gpu"]:
        pytest.skip("a real GPU is present: there is no missing-GPU error to check")
    kind, message = report["error"]
    assert kind == "RuntimeError" and "NUMBA_ENABLE_CUDASIM=1" in message and "GPU" in message
    assert report["device"] == "cpu"  # nothing moved


# --- (d) optimizer state --------------------------------------------------------------------------

def test_optimizer_state_dict_is_numpy_and_loads_onto_the_device(G, close, transfers):
    data = [(np.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]], np.float32), np.array([0, 1]))] * 3

    def linear():
        return fc.Sequential(fc.Linear(3, 2, rng=7))

    def step(model, opt, batch):
        train_steps(model, opt, [batch])

    cpu, gpu = linear(), linear().to("cuda")
    cpu_opt = Adam(cpu.parameters(), lr=0.01, amsgrad=True)
    gpu_opt = Adam(gpu.parameters(), lr=0.01, amsgrad=True)
    step(cpu, cpu_opt, data[0])
    step(gpu, gpu_opt, data[0])
    assert all(on_device(v) for s in gpu_opt.state.values() for v in s.values() if not isinstance(v, int))
    saved = gpu_opt.state_dict()
    for index, state in cpu_opt.state_dict()["state"].items():
        assert saved["state"][index]["step"] == state["step"] == 1
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            assert type(saved["state"][index][key]) is np.ndarray
            close(f"adam state {key}", saved["state"][index][key], state[key])

    # a fresh cuda optimizer resumes from the NumPy state: its buffers go to the device
    resumed = Adam(gpu.parameters(), lr=0.5)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == 0.01
    assert all(on_device(resumed.state[id(p)]["exp_avg"]) for p in gpu.parameters())
    step(cpu, cpu_opt, data[1])
    step(gpu, resumed, data[1])
    for key, value in cpu.state_dict().items():
        close(f"adam resumed: {key}", gpu.state_dict()[key], value)
