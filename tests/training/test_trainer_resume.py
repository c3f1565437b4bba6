"""Trainer checkpoints: a resumed run equals an uninterrupted one bit for bit, interrupted runs
and writes leave the last good checkpoint, and a resume that does not fit the setup changes nothing.

The tiny synthetic task and model of test_trainer.py.
"""
import os

import numpy as np
import pytest

import fastconv as fc
from fastconv.datasets import RandomShift
from fastconv.optim import SGD, Adam, ReduceLROnPlateau, StepLR, flatten_state, unflatten_state
from fastconv.trainer import Trainer

from test_trainer import assert_same_state, make_data, make_model, weights


def _setup(variant, init_seed=0):
    """(model, trainer, fit kwargs) for a resume scenario."""
    if variant == "sgd":
        model = make_model(init_seed)
        return model, Trainer(model), {}
    if variant == "dropout-augment-steplr":
        model = make_model(init_seed, dropout=True, batchnorm=True)
        opt = SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
        return model, Trainer(model, optimizer=opt, scheduler=StepLR(opt, 1, gamma=0.5)), \
            {"augment": RandomShift(1)}
    model = make_model(init_seed, dropout=True)
    opt = Adam(model.parameters(), lr=0.01)
    return model, Trainer(model, optimizer=opt, scheduler=ReduceLROnPlateau(opt, factor=0.5, patience=0)), \
        {"validation_data": make_data(30, seed=5, flip=True), "early_stopping": 5}


@pytest.mark.parametrize("variant", ["sgd", "dropout-augment-steplr", "adam-plateau-earlystop"])
def test_resume_equals_an_uninterrupted_run_bit_for_bit(variant, tmp_path):
    x, y = make_data()
    common = dict(batch_size=16, seed=7, progress=False)
    straight, trainer, extra = _setup(variant)
    h_straight = trainer.fit(x, y, epochs=3, **common, **extra)
    opt_straight = flatten_state(trainer.optimizer.state_dict())

    ckpt = tmp_path / "run.npz"
    _, first, extra = _setup(variant)
    first.fit(x, y, epochs=2, checkpoint=ckpt, **common, **extra)
    resumed, second, extra = _setup(variant, init_seed=99)  # different init: weights must come from ckpt
    h = second.fit(x, y, epochs=3, checkpoint=ckpt, resume=True, **common, **extra)

    assert_same_state(weights(resumed), weights(straight))
    opt_resumed = flatten_state(second.optimizer.state_dict())
    assert opt_resumed.keys() == opt_straight.keys()
    for key in opt_straight:
        np.testing.assert_array_equal(opt_resumed[key], opt_straight[key], err_msg=key)
    for name in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert getattr(h, name) == getattr(h_straight, name), name
    state = unflatten_state(np.load(ckpt))
    assert state["epoch"] == 3 and state["seed"] == 7


class InterruptingAugment:
    """RandomShift(1) that raises KeyboardInterrupt on its ``fail_at``-th call (0-based)."""

    def __init__(self, fail_at=None):
        self.calls, self.fail_at, self.shift = 0, fail_at, RandomShift(1)

    def __call__(self, xb, rng):
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        self.calls += 1
        return self.shift(xb, rng)


def test_keyboard_interrupt_keeps_the_last_checkpoint_and_resume_is_exact(tmp_path):
    x, y = make_data()  # 96 samples, batch 16: 6 batches an epoch
    common = dict(batch_size=16, seed=1, progress=False, epochs=3)
    straight = make_model(dropout=True)
    Trainer(straight).fit(x, y, augment=InterruptingAugment(), **common)

    ckpt = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_model(dropout=True)).fit(x, y, augment=InterruptingAugment(fail_at=9),
                                              checkpoint=ckpt, **common)
    assert os.listdir(tmp_path) == ["run.npz"]
    assert unflatten_state(np.load(ckpt))["epoch"] == 1
    resumed = make_model(seed=5, dropout=True)
    h = Trainer(resumed).fit(x, y, augment=InterruptingAugment(), checkpoint=ckpt, resume=True, **common)
    assert len(h) == 3
    assert_same_state(weights(resumed), weights(straight))


def test_an_interrupted_checkpoint_write_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    x, y = make_data()
    ckpt = tmp_path / "run.npz"
    Trainer(make_model()).fit(x, y, epochs=1, seed=0, checkpoint=ckpt, progress=False)
    before = ckpt.read_bytes()

    def failing_savez(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="No space left"):
        Trainer(make_model()).fit(x, y, epochs=2, seed=0, checkpoint=ckpt, resume=True, progress=False)
    assert ckpt.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.npz"]


def test_resume_checks_the_run_settings(tmp_path):
    x, y = make_data()
    ckpt = tmp_path / "run.npz"
    Trainer(make_model()).fit(x, y, epochs=1, seed=0, checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="seed=0"):
        Trainer(make_model()).fit(x, y, epochs=2, seed=1, checkpoint=ckpt, resume=True, progress=False)
    model = make_model(seed=3)
    before = weights(model)
    with pytest.raises(ValueError, match="batch_size=64"):
        Trainer(model).fit(x, y, epochs=2, batch_size=8, checkpoint=ckpt, resume=True, progress=False)
    assert_same_state(weights(model), before)  # checked before anything was loaded
    ckpt.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        Trainer(make_model()).fit(x, y, epochs=2, checkpoint=ckpt, resume=True, progress=False)


def _trained_setup(opt_name, scheduler_name, dtype=np.float32, width=4):
    """A model, optimizer and scheduler with non-trivial state (one epoch trained, no checkpoint)."""
    fc.manual_seed(11)
    model = fc.Sequential(fc.Conv2d(1, width, 3, padding=1, dtype=dtype), fc.ReLU(), fc.MaxPool2d(2),
                          fc.Flatten(), fc.Linear(16 * width, 3, dtype=dtype))
    opt = (Adam(model.parameters(), lr=0.01) if opt_name == "adam"
           else SGD(model.parameters(), lr=0.05, momentum=0.9))
    scheduler = {"steplr": lambda: StepLR(opt, 1, gamma=0.5),
                 "plateau": lambda: ReduceLROnPlateau(opt, patience=0), None: lambda: None}[scheduler_name]()
    trainer = Trainer(model, optimizer=opt, scheduler=scheduler)
    x, y = make_data()
    trainer.fit(x, y, epochs=1, batch_size=32, seed=3, progress=False)
    return trainer


def _snapshot(trainer):
    scheduler = None if trainer.scheduler is None else dict(trainer.scheduler.state_dict())
    return weights(trainer.model), flatten_state(trainer.optimizer.state_dict()), scheduler


@pytest.mark.parametrize("change, match", [
    (dict(opt="adam"), r"optimizer='SGD' there, optimizer='Adam' here"),
    (dict(scheduler="plateau"), r"scheduler='StepLR' there, scheduler='ReduceLROnPlateau' here"),
    (dict(scheduler=None), r"scheduler='StepLR' there, scheduler=None here"),
    (dict(augment=RandomShift(2)), r"augment='RandomShift\(max_shift=1\)' there, "
                                   r"augment='RandomShift\(max_shift=2\)' here"),
    (dict(fit=dict(validation_split=0.25)), r"validation_split=0.0 there, validation_split=0.25 here"),
    (dict(fit=dict(validation_data=make_data(12, seed=4), early_stopping=3)),
     r"validation_samples=0 there.*early_stopping=None there, early_stopping=3 here"),
    (dict(dtype=np.float64), r"model 0.weight is float32 there, float64 here"),
    (dict(width=5), r"model 0.weight has shape \(4, 1, 3, 3\) there, \(5, 1, 3, 3\) here"),
])
def test_a_failed_resume_changes_nothing(change, match, tmp_path):
    # The checkpoint: SGD + StepLR, RandomShift(1), no validation. Each resume below differs in
    # one setting; it must fail with a ValueError naming it, before the model, the optimizer or
    # the scheduler changed (an Adam trainer used to raise KeyError('step') with the weights
    # already overwritten).
    x, y = make_data()
    ckpt = tmp_path / "run.npz"
    model = make_model()
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    Trainer(model, optimizer=opt, scheduler=StepLR(opt, 1, gamma=0.5)).fit(
        x, y, epochs=1, batch_size=32, seed=3, augment=RandomShift(1), checkpoint=ckpt, progress=False)
    checkpoint_bytes = ckpt.read_bytes()

    trainer = _trained_setup(change.get("opt", "sgd"), change.get("scheduler", "steplr"),
                             change.get("dtype", np.float32), change.get("width", 4))
    before = _snapshot(trainer)
    kwargs = dict(epochs=2, batch_size=32, seed=3, augment=change.get("augment", RandomShift(1)),
                  checkpoint=ckpt, resume=True, progress=False, **change.get("fit", {}))
    with pytest.raises(ValueError, match=match) as info:
        trainer.fit(x, y, **kwargs)
    assert "nothing was loaded" in str(info.value)
    after = _snapshot(trainer)
    assert_same_state(after[0], before[0])
    assert_same_state(after[1], before[1])
    assert after[2] == before[2]
    assert ckpt.read_bytes() == checkpoint_bytes


def test_resume_accepts_the_same_setup_built_afresh(tmp_path):
    # The counterpart of the test above: the same settings with new objects (an augment instance
    # without a repr of its own included: compared by class, not by address) resume.
    x, y = make_data()
    ckpt = tmp_path / "run.npz"
    Trainer(make_model()).fit(x, y, epochs=1, seed=0, augment=InterruptingAugment(), checkpoint=ckpt,
                              progress=False)
    h = Trainer(make_model(seed=4)).fit(x, y, epochs=2, seed=0, augment=InterruptingAugment(),
                                        checkpoint=ckpt, resume=True, progress=False)
    assert len(h) == 2 and h.params["augment"].endswith("InterruptingAugment")
    assert h.params["optimizer"] == "SGD" and h.params["scheduler"] is None
    assert h.params["loss"] == "CrossEntropyLoss"


def test_resume_without_a_checkpoint_file_starts_afresh(tmp_path):
    x, y = make_data()
    a, b = make_model(), make_model()
    Trainer(a).fit(x, y, epochs=2, seed=0, progress=False)
    Trainer(b).fit(x, y, epochs=2, seed=0, checkpoint=tmp_path / "new.npz", resume=True, progress=False)
    assert_same_state(weights(a), weights(b))
