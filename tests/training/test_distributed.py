"""Data-parallel training on MPI: equivalence with one process, sharding, resume on other rank
counts, faults, SyncBatchNorm.

The MPI runs are this file run as a script under ``mpiexec`` (``python tests/training/test_distributed.py
<scenario> <json arguments>``, each rank single-threaded); the pytest process itself never
initialises MPI and computes the single-process references. Everything is small: each run takes
a few seconds, most of it starting Python.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run by mpiexec: import this checkout's fastconv
    sys.path.insert(0, str(ROOT))

import fastconv as fc  # noqa: E402
from fastconv import distributed as dist  # noqa: E402
from fastconv.optim import SGD, StepLR, unflatten_state  # noqa: E402
from fastconv._fit import epoch_generators  # noqa: E402
from fastconv.trainer import Trainer  # noqa: E402


# --- what every rank runs ---------------------------------------------------------------------

def make_data(n, size=28, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (n, 1, size, size)).astype(dtype), rng.integers(0, 10, n)


def make_model(kind, dtype="float32", bn=None):
    """``lenet``: conv 32, pool, conv 64, pool, linear 128, linear 10 (no dropout) on 28x28;
    ``small``: conv 4 on 8x8, pool, linear 10. ``bn``: None, "bn" (BatchNorm2d after each conv)
    or "sync" (SyncBatchNorm)."""
    fc.manual_seed(0)
    norm = {None: None, "bn": fc.BatchNorm2d, "sync": dist.SyncBatchNorm}[bn]

    def conv(c_in, c_out):
        return [fc.Conv2d(c_in, c_out, 3, padding=1)] + ([norm(c_out)] if norm else []) + [fc.ReLU(),
                                                                                          fc.MaxPool2d(2)]
    if kind == "lenet":
        layers = conv(1, 32) + conv(32, 64) + [fc.Flatten(), fc.Linear(7 * 7 * 64, 128), fc.ReLU(),
                                               fc.Linear(128, 10)]
    else:
        layers = conv(1, 4) + [fc.Flatten(), fc.Linear(64, 10)]
    return fc.Sequential(*layers).to(np.dtype(dtype))


def make_trainer(model, distributed, scheduler=False):
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Trainer(model, optimizer=opt, scheduler=StepLR(opt, 1, gamma=0.5) if scheduler else None,
                   distributed=distributed)


def scenario_train(out, kind, n, batch_size, epochs=1, dtype="float32", bn=None, scheduler=False,
                   checkpoint=None, resume=False, validation=0, fail=None):
    """Fit; every rank writes its final state and history. ``fail=[rank, call]``: that rank's
    augmentation raises on its ``call``-th batch (from 0, counted over the epochs)."""
    rank, _ = dist.init()
    side = 28 if kind == "lenet" else 8
    x, y = make_data(n, side, dtype=dtype)
    val = make_data(validation, side, seed=1, dtype=dtype) if validation else None
    model = make_model(kind, dtype, bn)
    calls = [0]

    def failing(xb, rng):
        if rank == fail[0] and calls[0] == fail[1]:
            raise RuntimeError("injected fault")
        calls[0] += 1
        return xb

    h = make_trainer(model, True, scheduler).fit(
        x, y, epochs=epochs, batch_size=batch_size, seed=3, progress=False, validation_data=val,
        checkpoint=checkpoint, resume=resume, augment=None if fail is None else failing)
    np.savez(Path(out) / f"rank{rank}.npz", **model.state_dict())
    with open(Path(out) / f"history{rank}.json", "w") as f:
        json.dump({"loss": h.loss, "accuracy": h.accuracy, "val_loss": h.val_loss,
                   "val_accuracy": h.val_accuracy, "epoch": h.epoch, "ranks": h.params["ranks"]}, f)


def scenario_shards(out, n, batch_size, epochs):
    """Every rank records which samples it trained on at each step (sample i's pixels are all i)."""
    rank, size = dist.init()
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 1, 2, 2)).copy()
    y = np.arange(n) % 3
    seen = []

    def record(xb, rng):
        seen.append(xb[:, 0, 0, 0].astype(int).tolist())
        return xb

    fc.manual_seed(0)
    trainer = Trainer(fc.Sequential(fc.Flatten(), fc.Linear(4, 3)), distributed=True)
    trainer.fit(x, y, epochs=epochs, batch_size=batch_size, seed=5, augment=record, progress=False)
    steps = -(-n // batch_size)  # every share of this test is non-empty: one call per step
    with open(Path(out) / f"shards{rank}.json", "w") as f:
        json.dump([seen[e * steps:(e + 1) * steps] for e in range(epochs)], f)


def scenario_mismatch(out, what):
    """Rank 1 is given other labels (``labels``), or the batches leave a rank without a sample
    where SyncBatchNorm needs one (``syncbn``)."""
    rank, _ = dist.init()
    x, y = make_data(40, 8)
    if what == "labels" and rank == 1:
        y = (y + 1) % 10
    model = make_model("small", bn="sync" if what == "syncbn" else None)
    make_trainer(model, True).fit(x, y, epochs=1, batch_size=16 if what == "labels" else 13, progress=False)


def scenario_syncbn(out, dtype):
    """Rank r normalises its share of one 7-sample batch (shares of 3, 2, 2 on 3 ranks)."""
    rank, size = dist.init()
    rng = np.random.default_rng(0)
    x = (rng.normal(2.0, 3.0, (7, 3, 4, 5))).astype(dtype)
    dy = rng.normal(0, 1, x.shape).astype(dtype)
    start, stop = dist.shard_bounds(7, rank, size)
    layer = dist.SyncBatchNorm(3, momentum=0.3, dtype=dtype)
    layer.weight.data[...] = [0.5, 1.5, -2.0]
    layer.bias.data[...] = [0.1, -0.2, 0.3]
    out_x = layer.forward(x[start:stop])
    dx = layer.backward(dy[start:stop])
    results = {"out": out_x, "dx": dx, "dweight": layer.weight.grad, "dbias": layer.bias.grad,
               "running_mean": layer.running_mean, "running_var": layer.running_var,
               "tracked": layer.num_batches_tracked, "eval": layer.eval().forward(x[start:stop])}
    np.savez(Path(out) / f"syncbn{rank}.npz", **results)


# --- running the scenarios ---------------------------------------------------------------------

def mpiexec():
    found = Path(sys.executable).parent / "mpiexec"
    path = str(found) if found.exists() else shutil.which("mpiexec")
    assert path, "mpi4py is installed but no mpiexec was found (pip install mpich)"
    return path


def run_ranks(ranks, scenario, out, check=True, **kwargs):
    """Run ``scenario`` on ``ranks`` processes (0: one process without mpiexec)."""
    pytest.importorskip("mpi4py")  # the mpi extra; CI installs it (and fails on this skip)
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    script = [sys.executable, str(Path(__file__).resolve()), scenario, json.dumps(dict(kwargs, out=str(out)))]
    command = script if ranks == 0 else [mpiexec(), "-n", str(ranks)] + script
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    proc.seconds = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise AssertionError(f"{scenario} on {ranks} ranks failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def reference(kind, n, batch_size, epochs=1, dtype="float32", bn=None, validation=0, scheduler=False):
    """The single-process run (no MPI), as scenario_train would do it."""
    x, y = make_data(n, 28 if kind == "lenet" else 8, dtype=dtype)
    model = make_model(kind, dtype, {"sync": "bn"}.get(bn, bn))
    val = make_data(validation, 28 if kind == "lenet" else 8, seed=1, dtype=dtype) if validation else None
    h = make_trainer(model, False, scheduler).fit(x, y, epochs=epochs, batch_size=batch_size, seed=3,
                                                  progress=False, validation_data=val)
    return model.state_dict(), h


def max_errors(a, b):
    """(max absolute difference, max difference relative to each tensor's largest value)."""
    abs_err = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a)
    rel_err = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k])) / max(np.max(np.abs(b[k])), 1e-30))
                  for k in a)
    return abs_err, rel_err


# --- tests -------------------------------------------------------------------------------------

def test_batch_shards_cover_each_sample_once_with_uneven_last_shards():
    for n, batch, size in [(101, 16, 2), (101, 16, 3), (7, 16, 3), (10, 3, 4), (64, 64, 2)]:
        order = np.random.default_rng(n).permutation(n)
        steps = [list(dist.batch_shards(order, batch, r, size)) for r in range(size)]
        assert len({len(s) for s in steps}) == 1  # every rank takes the same number of steps
        for step, shares in enumerate(zip(*steps)):
            window = order[step * batch:(step + 1) * batch]
            local = [s for s, _ in shares]
            assert all(count == len(window) for _, count in shares)
            assert sorted(np.concatenate(local).tolist()) == sorted(window.tolist())
            assert max(map(len, local)) - min(map(len, local)) <= 1
        used = np.concatenate([s for r in steps for s, _ in r])
        assert sorted(used.tolist()) == list(range(n))
    for n, size in [(10, 3), (2, 3), (9, 3)]:
        bounds = [dist.shard_bounds(n, r, size) for r in range(size)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_without_mpi4py_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(dist._state, "comm", None)
    with pytest.raises(ImportError, match=r"pip install fastconv\[mpi\]"):
        dist.init()
    with pytest.raises(ImportError, match=r"pip install fastconv\[mpi\]"):
        Trainer(make_model("small"), distributed=True)


@pytest.mark.parametrize("dtype, bn", [("float32", None), ("float64", None), ("float32", "sync")])
def test_two_ranks_of_32_take_the_steps_of_one_process_of_64(dtype, bn, tmp_path):
    # lenet, 5 SGD-momentum steps of 64 samples: 2 ranks x 32 against 1 process x 64. The sums
    # over the batch are split in two and added after the Allreduce, so the weights agree to the
    # rounding of the dtype, not bit for bit (not in float64 either: BLAS sums 64 rows in another
    # order than 32 + 32).
    ref, h_ref = reference("lenet", 320, 64, dtype=dtype, bn=bn, validation=40)
    run_ranks(2, "train", tmp_path, kind="lenet", n=320, batch_size=64, dtype=dtype, bn=bn, validation=40)
    got = [load(tmp_path / f"rank{r}.npz") for r in range(2)]
    for key in got[0]:  # the ranks hold the same model, bit for bit
        np.testing.assert_array_equal(got[0][key], got[1][key], err_msg=key)
    abs_err, rel_err = max_errors(got[0], ref)
    tol = {"float32": 2e-5, "float64": 1e-12}[dtype]
    print(f"\n{dtype} bn={bn}: max |2 ranks - 1 process| = {abs_err:.3g} ({rel_err:.3g} of the tensor's max)")
    assert rel_err < tol, (abs_err, rel_err)
    for key in ref:  # and they did move: 5 steps changed every parameter
        assert got[0][key].dtype == ref[key].dtype
    history = json.loads((tmp_path / "history0.json").read_text())
    assert history["ranks"] == 2
    for name in ("loss", "accuracy", "val_loss", "val_accuracy"):  # reduced over both ranks
        assert history[name] == pytest.approx(getattr(h_ref, name), rel=10 * tol, abs=1e-12), name


def test_one_rank_without_mpiexec_is_the_single_process_run(tmp_path):
    ref, h_ref = reference("small", 100, 16, epochs=2, bn="bn", validation=20)
    run_ranks(0, "train", tmp_path, kind="small", n=100, batch_size=16, epochs=2, bn="bn", validation=20)
    got = load(tmp_path / "rank0.npz")
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    history = json.loads((tmp_path / "history0.json").read_text())
    assert history["loss"] == h_ref.loss and history["val_loss"] == h_ref.val_loss and history["ranks"] == 1


@pytest.mark.parametrize("ranks", [2, 3])
def test_every_sample_is_used_once_per_epoch(ranks, tmp_path):
    n, batch = 101, 16  # divisible by neither 2 nor 3; the last batch holds 5
    run_ranks(ranks, "shards", tmp_path, n=n, batch_size=batch, epochs=2)
    seen = [json.loads((tmp_path / f"shards{r}.json").read_text()) for r in range(ranks)]
    for epoch in range(2):
        order = epoch_generators(5, epoch, 0)[0].permutation(n)  # the one shared shuffle
        steps = [seen[r][epoch] for r in range(ranks)]
        assert len({len(s) for s in steps}) == 1
        for step, shares in enumerate(zip(*steps)):
            assert sorted(sum(shares, [])) == sorted(order[step * batch:(step + 1) * batch].tolist())
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
        used = sum((sum(s, []) for s in steps), [])
        assert sorted(used) == list(range(n)) and len(used) == n  # each sample exactly once
    assert seen[0][0] != seen[0][1]  # reshuffled every epoch


def test_resume_on_one_and_on_three_ranks_continues_the_two_rank_run(tmp_path):
    # The steps (which samples, in which global batches) do not depend on the rank count, so a
    # 2-rank checkpoint resumed on 1 or 3 ranks ends, to float32 rounding, where the
    # uninterrupted 2-rank run ends. SyncBatchNorm's statistics are the global batch's too; with
    # per-rank BatchNorm, augmentation or dropout it would not: their batch statistics and
    # random draws depend on how the batch is split.
    common = dict(kind="small", n=150, batch_size=32, bn="sync", scheduler=True, validation=30)
    straight = tmp_path / "straight"
    straight.mkdir()
    run_ranks(2, "train", straight, epochs=2, **common)
    first = tmp_path / "first"
    first.mkdir()
    run_ranks(2, "train", first, epochs=1, checkpoint=str(first / "run.npz"), **common)
    want = load(straight / "rank0.npz")
    want_history = json.loads((straight / "history0.json").read_text())
    for ranks in (0, 3):
        folder = tmp_path / f"resumed{ranks}"
        folder.mkdir()
        shutil.copy(first / "run.npz", folder / "run.npz")
        run_ranks(ranks, "train", folder, epochs=2, checkpoint=str(folder / "run.npz"), resume=True, **common)
        got = [load(folder / f"rank{r}.npz") for r in range(max(ranks, 1))]
        for other in got[1:]:
            for key in want:
                np.testing.assert_array_equal(got[0][key], other[key], err_msg=key)
        abs_err, rel_err = max_errors(got[0], want)
        print(f"\nresumed on {max(ranks, 1)} rank(s): max difference from the 2-rank run {abs_err:.3g} "
              f"({rel_err:.3g} relative)")
        assert rel_err < 2e-5, (ranks, abs_err, rel_err)
        history = json.loads((folder / "history0.json").read_text())
        assert history["epoch"] == [0, 1] and history["ranks"] == max(ranks, 1)
        assert history["loss"][0] == want_history["loss"][0]  # epoch 0 comes from the checkpoint
        assert history["val_loss"] == pytest.approx(want_history["val_loss"], rel=1e-5)
        state = unflatten_state(np.load(folder / "run.npz"))
        assert state["epoch"] == 2 and state["history"]["params"]["ranks"] == max(ranks, 1)


@pytest.mark.parametrize("failing", [1, 0])
def test_a_failing_rank_ends_the_job_and_keeps_the_checkpoint(failing, tmp_path):
    # Rank `failing` raises in the middle of the second epoch, while the other waits in the
    # gradient Allreduce: the job ends (MPI Abort) with a message naming the rank, and the
    # checkpoint of the first epoch is whole and resumes.
    ckpt = tmp_path / "run.npz"
    common = dict(kind="small", n=96, batch_size=16, epochs=3, checkpoint=str(ckpt))
    proc = run_ranks(2, "train", tmp_path, check=False, fail=[failing, 6 + 2], **common)  # 6 steps an epoch
    print(f"\nrank {failing} failed: the job ended {proc.seconds:.1f} s after it started")
    assert proc.returncode != 0
    assert f"rank {failing} of 2 failed (RuntimeError: injected fault)" in proc.stderr
    assert "aborting all 2 ranks" in proc.stderr
    assert not list(tmp_path.glob("rank*.npz"))  # neither rank got to the end
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]
    state = unflatten_state(np.load(ckpt))
    assert state["epoch"] == 1
    if failing == 1:
        # the same augmentation (a resume checks it), without the fault
        run_ranks(2, "train", tmp_path, resume=True, fail=[failing, 10**6], **common)
        assert json.loads((tmp_path / "history0.json").read_text())["epoch"] == [0, 1, 2]


@pytest.mark.parametrize("what, message", [
    ("labels", r"rank 1 called fit with data=.* where rank 0 has data="),
    ("syncbn", r"SyncBatchNorm needs a sample on every rank at every step, but with 40 samples, "
               r"batch_size=13 and 2 ranks a step has 1 samples"),
])
def test_ranks_given_different_data_or_too_small_a_step_stop_with_a_clear_error(what, message, tmp_path):
    import re
    proc = run_ranks(2, "mismatch", tmp_path, check=False, what=what)
    assert proc.returncode != 0
    assert re.search(message, proc.stderr), proc.stderr


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sync_batchnorm_on_three_uneven_shares_is_batchnorm_of_the_whole_batch(dtype, tmp_path):
    torch = pytest.importorskip("torch")
    run_ranks(3, "syncbn", tmp_path, dtype=dtype)
    got = [load(tmp_path / f"syncbn{r}.npz") for r in range(3)]
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (7, 3, 4, 5)).astype(dtype)
    dy = rng.normal(0, 1, x.shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    w = torch.tensor(np.array([0.5, 1.5, -2.0], dtype), requires_grad=True)
    b = torch.tensor(np.array([0.1, -0.2, 0.3], dtype), requires_grad=True)
    rm, rv = torch.zeros(3, dtype=xt.dtype), torch.ones(3, dtype=xt.dtype)
    out = torch.nn.functional.batch_norm(xt, rm, rv, w, b, training=True, momentum=0.3, eps=1e-5)
    out.backward(torch.tensor(dy))
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.concatenate([g["out"] for g in got]), out.detach().numpy(), **tol)
    np.testing.assert_allclose(np.concatenate([g["dx"] for g in got]), xt.grad.numpy(), **tol)
    # parameter gradients are per rank; their sum (the trainer's Allreduce) is the whole batch's
    np.testing.assert_allclose(sum(g["dweight"] for g in got), w.grad.numpy(), **tol)
    np.testing.assert_allclose(sum(g["dbias"] for g in got), b.grad.numpy(), **tol)
    for g in got:
        assert g["out"].dtype == np.dtype(dtype) and g["dx"].dtype == np.dtype(dtype)
        np.testing.assert_allclose(g["running_mean"], rm.numpy(), **tol)
        np.testing.assert_allclose(g["running_var"], rv.numpy(), **tol)
        assert int(g["tracked"]) == 1
    eval_out = torch.nn.functional.batch_norm(torch.tensor(x), rm, rv, w, b, training=False, eps=1e-5)
    np.testing.assert_allclose(np.concatenate([g["eval"] for g in got]), eval_out.detach().numpy(), **tol)


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]](**json.loads(sys.argv[2]))
