"""Faults around the files fastconv writes (issue 21, items 3, 7, 8 and 9): files created under
the umask, a diverging run and its last good checkpoint, unwritable checkpoint paths, SIGTERM
during fit and during a checkpoint write, and temporary files left by killed writers.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fastconv import _io
from fastconv.optim import SGD, unflatten_state
from fastconv.trainer import Trainer
from test_trainer import make_data, make_model

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes, signals and flock")

# --- item 3: the umask ---------------------------------------------------------------------------

@posix_only
@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o022, 0o644)])
def test_new_files_respect_the_umask_and_replaced_files_keep_their_mode(umask, mode, tmp_path):
    old = os.umask(umask)
    try:
        _io.atomic_write(tmp_path / "raw.bin", lambda f: f.write(b"x"))
        make_model().save(tmp_path / "model.npz")
        x, y = make_data(32)
        Trainer(make_model()).fit(x, y, epochs=1, seed=0, checkpoint=tmp_path / "run.npz", progress=False)
        for name in ("raw.bin", "model.npz", "run.npz"):
            assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(mode), name
        os.chmod(tmp_path / "model.npz", 0o640)
        make_model(seed=1).save(tmp_path / "model.npz")
        assert oct((tmp_path / "model.npz").stat().st_mode & 0o777) == oct(0o640)
    finally:
        os.umask(old)


# --- item 7: a diverging run keeps the last good checkpoint --------------------------------------

class PoisonedSGD(SGD):
    """SGD whose ``at``-th step leaves a NaN in the first weight or its momentum buffer."""

    def __init__(self, params, at, what, **kwargs):
        super().__init__(params, **kwargs)
        self.calls, self.at, self.what = 0, at, what

    def step(self):
        super().step()
        self.calls += 1
        if self.calls == self.at:
            p = self.param_groups[0]["params"][0]
            target = p.data if self.what == "weight" else self.state[id(p)]["momentum_buffer"]
            target.reshape(-1)[0] = np.nan


@pytest.mark.parametrize("what", ["weight", "momentum"])
@pytest.mark.parametrize("at, kept", [(12, "keeps the checkpoint of epoch 1"),
                                      (6, "no checkpoint of this run was written")])
def test_a_diverging_run_keeps_the_last_good_checkpoint(what, at, kept, tmp_path):
    # 96 samples, batch 16: 6 steps an epoch; the poisoned step is the last of epoch at // 6, and
    # its loss was finite: only the weights (or the optimizer state) say the run diverged
    x, y = make_data()
    path = tmp_path / "run.npz"
    model = make_model()
    opt = PoisonedSGD(model.parameters(), at=at, what=what, lr=0.05, momentum=0.9)
    with pytest.raises(FloatingPointError, match=kept) as info:
        Trainer(model, optimizer=opt).fit(x, y, epochs=3, batch_size=16, seed=0, checkpoint=path,
                                          progress=False)
    assert ("model 0.weight" if what == "weight" else "optimizer state 0.momentum_buffer") in str(info.value)
    if at == 12:
        with np.load(path) as archive:
            state = unflatten_state(archive)
        assert state["epoch"] == 1
        assert all(np.isfinite(v).all() for v in state["model"].values())
        assert sorted(os.listdir(tmp_path)) == ["run.npz"]
    else:
        assert os.listdir(tmp_path) == []


# --- item 8: an unwritable checkpoint path fails before training ---------------------------------

class CountingAugment:
    def __init__(self):
        self.calls = 0

    def __call__(self, xb, rng):
        self.calls += 1
        return xb


def read_only_for_us(folder):
    """Whether creating a file in ``folder`` fails for this process."""
    try:
        os.close(os.open(folder / "fastconv-probe.tmp", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError:
        return True
    os.unlink(folder / "fastconv-probe.tmp")
    return False


@pytest.mark.parametrize("case", ["missing folder", "folder", "read-only folder"])
def test_an_unwritable_checkpoint_path_fails_before_the_first_step(case, tmp_path):
    if case == "read-only folder":
        if os.name == "posix" and os.geteuid() != 0:
            (tmp_path / "ro").mkdir(mode=0o500)
            path = tmp_path / "ro" / "run.npz"
        else:  # root writes into any 0o500 folder; sysfs refuses new files even to root
            path = Path("/sys/run.npz")
            if not read_only_for_us(path.parent):
                pytest.skip("no folder here refuses this user a new file")
    elif case == "folder":
        path = tmp_path
    else:
        path = tmp_path / "no" / "such" / "run.npz"
    x, y = make_data(32)
    augment = CountingAugment()
    with pytest.raises(ValueError, match="checkpoint") as info:
        Trainer(make_model()).fit(x, y, epochs=2, seed=0, checkpoint=path, augment=augment, progress=False)
    assert augment.calls == 0
    assert repr(str(path)) in str(info.value) and ".tmp" not in str(info.value)


def test_atomic_write_errors_name_the_target_not_the_temporary_file(tmp_path):
    path = tmp_path / "no" / "such" / "model.npz"
    with pytest.raises(FileNotFoundError) as info:
        make_model().save(path)
    assert info.value.filename == str(path) and ".tmp" not in str(info.value)


# --- item 9: SIGTERM and stale temporary files ---------------------------------------------------

def tmp_names(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@posix_only
def test_a_stale_temporary_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "ck.npz"
    # a writer killed mid-write (SIGKILL: no cleanup runs), as an MPI abort kills a rank
    script = ("import importlib.util, os, signal, sys\n"
              "spec = importlib.util.spec_from_file_location('fio', sys.argv[1])\n"
              "fio = importlib.util.module_from_spec(spec); spec.loader.exec_module(fio)\n"
              "def write(f):\n"
              "    f.write(b'half a checkpoint'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
              "fio.atomic_write(sys.argv[2], write)\n")
    done = subprocess.run([sys.executable, "-c", script, _io.__file__, str(target)], timeout=60)
    assert done.returncode == -signal.SIGKILL
    stale = tmp_names(tmp_path)
    assert len(stale) == 1 and stale[0].startswith("ck.npz.")
    old = time.time() - 3600
    os.utime(tmp_path / stale[0], (old, old))
    # files that are not stale temporaries of ck.npz stay: a fresh one (a writer may be about to
    # lock it), other targets', other names
    keep = ["ck.npz.abcd1234.tmp", "other.npz.abcd1234.tmp", "ck.npz.ABCD1234.tmp", "ck.npz.abcd12345.tmp",
            "ck.npz.abcd1234.tmp.bak"]
    for name in keep:
        (tmp_path / name).write_bytes(b"")
        if name != "ck.npz.abcd1234.tmp":
            os.utime(tmp_path / name, (old, old))
    make_model().save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["ck.npz"])
    make_model().load(target)


@posix_only
def test_a_temporary_being_written_is_never_removed(tmp_path):
    # a concurrent writer of the same target holds its file's lock: however old the file looks,
    # another write's cleanup leaves it, and the first writer completes
    target = tmp_path / "ck.bin"
    writing, release, errors = threading.Event(), threading.Event(), []

    def slow(f):
        f.write(b"first")
        writing.set()
        release.wait(30)

    def first():
        try:
            _io.atomic_write(target, slow)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    assert writing.wait(30)
    (busy,) = tmp_names(tmp_path)
    old = time.time() - 3600
    os.utime(tmp_path / busy, (old, old))
    _io.atomic_write(target, lambda f: f.write(b"second"))
    assert tmp_names(tmp_path) == [busy] and target.read_bytes() == b"second"
    release.set()
    thread.join(30)
    assert errors == [] and target.read_bytes() == b"first" and tmp_names(tmp_path) == []


class Terminated(Exception):
    """What the test's own SIGTERM handler raises: fit must replace it while it runs."""


def raise_terminated(signum, frame):
    raise Terminated


class TerminatingAugment:
    """Sends this process SIGTERM on its ``at``-th call (0-based)."""

    def __init__(self, at):
        self.calls, self.at = 0, at

    def __call__(self, xb, rng):
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGTERM)
        self.calls += 1
        return xb


@posix_only
def test_sigterm_during_fit_ends_it_as_a_keyboard_interrupt_does(tmp_path):
    x, y = make_data()  # batch 16: 6 steps an epoch; SIGTERM in the second epoch
    path = tmp_path / "run.npz"
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        model = make_model()
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            Trainer(model).fit(x, y, epochs=3, batch_size=16, seed=0, checkpoint=path,
                               augment=TerminatingAugment(at=9), progress=False)
        assert signal.getsignal(signal.SIGTERM) is raise_terminated
        assert model.training  # fit set the modules' modes back, as after a KeyboardInterrupt
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert os.listdir(tmp_path) == ["run.npz"]
    with np.load(path) as archive:
        assert unflatten_state(archive)["epoch"] == 1
    h = Trainer(make_model(seed=3)).fit(x, y, epochs=3, batch_size=16, seed=0, checkpoint=path, resume=True,
                                        augment=TerminatingAugment(at=-1), progress=False)
    assert len(h) == 3


@posix_only
def test_sigterm_during_a_checkpoint_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    x, y = make_data(32)
    path = tmp_path / "run.npz"
    real_savez, calls = np.savez, []

    def savez(f, **arrays):
        calls.append(1)
        if len(calls) == 2:  # the second epoch's checkpoint: half written, then terminated
            f.write(b"PK\x03\x04 half an archive")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        real_savez(f, **arrays)

    monkeypatch.setattr(np, "savez", savez)
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        with pytest.raises(KeyboardInterrupt):
            Trainer(make_model()).fit(x, y, epochs=3, seed=0, checkpoint=path, progress=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert os.listdir(tmp_path) == ["run.npz"]
    with np.load(path) as archive:
        assert unflatten_state(archive)["epoch"] == 1


def test_fit_in_another_thread_leaves_signal_handling_alone(tmp_path):
    x, y = make_data(32)
    before, results = signal.getsignal(signal.SIGTERM), []
    thread = threading.Thread(target=lambda: results.append(Trainer(make_model()).fit(
        x, y, epochs=1, seed=0, checkpoint=tmp_path / "run.npz", progress=False)))
    thread.start()
    thread.join(120)
    assert len(results) == 1 and len(results[0]) == 1
    assert signal.getsignal(signal.SIGTERM) is before
