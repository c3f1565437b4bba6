"""Trainer and History: training, evaluation, early stopping, exact checkpoint resume, progress, plots.

Everything runs on a tiny synthetic task (8x8 images, 3 classes told apart by where a bright
square sits) so the whole file takes seconds.
"""
import os
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv.datasets import RandomShift, normalize
from fastconv.losses import softmax_cross_entropy
from fastconv.optim import SGD, Adam, ReduceLROnPlateau, StepLR, flatten_state, unflatten_state
from fastconv.trainer import History, Trainer


def make_data(n=96, seed=0, flip=False):
    """(x float32 (n, 1, 8, 8), y int64 (n,)): class c has a bright 3x3 square at (2c, 2c)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 0, 2 * c:2 * c + 3, 2 * c:2 * c + 3] += 1.5
    return x, ((y + 1) % 3 if flip else y)


def make_model(seed=0, dropout=False, batchnorm=False):
    fc.manual_seed(seed)
    layers = [fc.Conv2d(1, 4, 3, padding=1)]
    layers += [fc.BatchNorm2d(4)] if batchnorm else []
    layers += [fc.ReLU(), fc.MaxPool2d(2), fc.Flatten()]
    layers += [fc.Dropout(0.3)] if dropout else []
    return fc.Sequential(*layers, fc.Linear(64, 3))


def weights(model):
    return model.state_dict()


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_fit_reduces_loss_and_records_history():
    x, y = make_data()
    xv, yv = make_data(48, seed=1)
    trainer = Trainer(make_model())
    h = trainer.fit(x, y, epochs=5, batch_size=16, validation_data=(xv, yv), seed=0, progress=False)
    assert trainer.history is h and len(h) == 5 and h.epoch == [0, 1, 2, 3, 4]
    assert h.loss[-1] < 0.5 * h.loss[0]
    assert h.val_loss[-1] < h.val_loss[0] and h.val_accuracy[-1] > 0.9
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds", "images_per_second"):
        values = getattr(h, name)
        assert len(values) == 5 and all(isinstance(v, float) for v in values), name
        assert h.history[name] is values
    assert h.lr == [0.01] * 5  # the default optimizer: SGD(lr=0.01, momentum=0.9)
    assert all(v > 0 for v in h.seconds + h.images_per_second)
    assert h.params["seed"] == 0 and h.params["samples"] == 96 and h.params["validation_samples"] == 48
    assert "5 epochs" in repr(h)


def test_history_without_validation_has_no_val_keys():
    x, y = make_data()
    h = Trainer(make_model()).fit(x, y, epochs=2, progress=False)
    assert h.val_loss == [None, None] and h.val_accuracy == [None, None]
    assert set(h.history) == {"loss", "accuracy", "lr", "seconds", "images_per_second"}
    assert isinstance(h.params["seed"], int)  # drawn and recorded


def test_evaluate_matches_a_direct_computation():
    x, y = make_data()
    model = make_model()
    trainer = Trainer(model)
    trainer.fit(x, y, epochs=1, seed=0, progress=False)
    result = trainer.evaluate(x, y, batch_size=7)
    logits = model.eval().forward(x)
    loss, _ = softmax_cross_entropy(logits, y)
    assert set(result) == {"loss", "accuracy"}
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["accuracy"] == np.mean(logits.argmax(1) == y)


def test_same_seed_same_weights_and_different_seed_differs():
    x, y = make_data()
    runs = []
    for seed in (3, 3, 4):
        model = make_model(dropout=True)
        Trainer(model).fit(x, y, epochs=2, batch_size=16, seed=seed, augment=RandomShift(1), progress=False)
        runs.append(weights(model))
    assert_same_state(runs[0], runs[1])
    assert not np.array_equal(runs[0]["5.weight"], runs[2]["5.weight"])


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.bool_])
def test_integer_images_are_refused_not_guessed(dtype):
    # The trainer used to normalise any uint8 input with MNIST's mean and std, reinterpreting
    # e.g. CIFAR pixels silently. Now integer images get a TypeError that says how to convert.
    x = np.zeros((8, 1, 8, 8), dtype)
    y = np.zeros(8, np.int64)
    trainer = Trainer(make_model())
    before = weights(trainer.model)
    match = "fastconv.datasets.normalize" if dtype != np.bool_ else "float images"
    with pytest.raises(TypeError, match=match):
        trainer.fit(x, y, epochs=1, progress=False)
    with pytest.raises(TypeError, match=match):
        trainer.evaluate(x, y)
    with pytest.raises(TypeError, match="validation_data"):
        trainer.fit(x.astype(np.float32), y, epochs=1, validation_data=(x, y), progress=False)
    assert_same_state(weights(trainer.model), before)


def test_explicitly_normalised_uint8_images_train():
    rng = np.random.default_rng(0)
    x8 = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 3, 40)
    fc.manual_seed(1)
    model = fc.Sequential(fc.Conv2d(1, 2, 5, stride=3), fc.ReLU(), fc.Flatten(), fc.Linear(128, 3))
    trainer = Trainer(model)
    h = trainer.fit(normalize(x8), y, epochs=1, batch_size=8, seed=0, progress=False)
    assert len(h) == 1 and np.isfinite(h.loss[0])
    x = normalize(x8)
    assert trainer.evaluate(x, y)["accuracy"] == np.mean(model.predict(x).argmax(1) == y)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(x=np.zeros((4, 8, 8), np.int16)), TypeError, "float images"),
    (dict(x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(5, int)), ValueError, "4 samples"),
    (dict(x=np.zeros(4, np.float32)), ValueError, "shape"),
    (dict(x=np.zeros((4, 8), np.uint8)), TypeError, "normalize"),
    (dict(y=np.zeros(4)), ValueError, "1-D integer"),
    (dict(early_stopping=2), ValueError, "validation"),
    (dict(resume=True), ValueError, "checkpoint"),
    (dict(validation_split=1.0), ValueError, "validation_split"),
    (dict(validation_split=0.5, validation_data=(np.zeros((2, 1, 8, 8)), [0, 1])), ValueError, "not both"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(augment="shift"), TypeError, "callable"),
    (dict(progress="yes"), ValueError, "progress"),
])
def test_fit_rejects_bad_arguments(kwargs, error, match):
    args = dict(x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(4, np.int64), epochs=1, progress=False)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        Trainer(make_model()).fit(**args)


class Noise(fc.Module):
    """Adds N(0, sigma) noise in training, drawn from its public ``rng`` (a user's random layer)."""

    def __init__(self, sigma, rng):
        super().__init__()
        self.sigma, self.rng = sigma, rng

    def forward(self, x):
        return x + self.rng.normal(0, self.sigma, x.shape).astype(x.dtype) if self.training else x

    def _backward(self, dy, need_dx):
        return dy


def test_every_module_with_a_public_rng_is_reseeded_per_epoch(tmp_path):
    # The trainer reaches the layers through modules() only, and treats any module with a public
    # generator ``rng`` as Dropout: built with different generators, the same seed gives the same
    # run, and a resumed run is exact.
    x, y = make_data()

    def model(init_rng):
        fc.manual_seed(0)
        return fc.Sequential(fc.Flatten(), Noise(0.5, np.random.default_rng(init_rng)), fc.Linear(64, 3))

    a, b, c = model(1), model(2), model(3)
    Trainer(a).fit(x, y, epochs=2, batch_size=16, seed=5, progress=False)
    Trainer(b).fit(x, y, epochs=2, batch_size=16, seed=5, progress=False)
    assert_same_state(weights(a), weights(b))
    ckpt = tmp_path / "run.npz"
    Trainer(model(4)).fit(x, y, epochs=1, batch_size=16, seed=5, checkpoint=ckpt, progress=False)
    Trainer(c).fit(x, y, epochs=2, batch_size=16, seed=5, checkpoint=ckpt, resume=True, progress=False)
    assert_same_state(weights(a), weights(c))


def test_evaluate_and_validation_run_under_no_grad():
    # The trainer's evaluation (validation after each epoch, evaluate()) runs the model's predict
    # under fastconv.no_grad() whatever the model's own predict does; training forwards do not.
    model = make_model()
    forward, predict = model.forward, model.predict
    seen = []

    def recording_forward(x):
        seen.append(("forward", model.training, fc.is_grad_enabled()))
        return forward(x)

    def recording_predict(x, batch_size=256):
        seen.append(("predict", model.training, fc.is_grad_enabled()))
        return predict(x, batch_size)

    model.forward, model.predict = recording_forward, recording_predict
    x, y = make_data()
    trainer = Trainer(model)
    trainer.fit(x, y, epochs=1, batch_size=48, validation_split=0.5, seed=0, progress=False)
    assert seen == [("forward", True, True), ("predict", True, False), ("forward", False, False)]
    seen.clear()
    trainer.evaluate(x, y, batch_size=64)
    assert seen == [("predict", True, False)] + [("forward", False, False)] * 2
    assert fc.is_grad_enabled()


def test_validation_split_holds_out_the_last_fraction():
    x, y = make_data()
    trainer = Trainer(make_model())
    h = trainer.fit(x, y, epochs=1, validation_split=0.25, seed=0, progress=False)
    assert h.params["samples"] == 72 and h.params["validation_samples"] == 24
    assert h.val_loss[0] == trainer.evaluate(x[72:], y[72:])["loss"]


def test_early_stopping_restores_the_best_weights():
    # Validation labels are a relabelling of the training ones, so once the network learns the
    # training task its validation loss rises: the best epoch is early and training stops.
    x, y = make_data()
    xv, yv = make_data(48, seed=1, flip=True)
    model = make_model()
    trainer = Trainer(model, optimizer=SGD(model.parameters(), lr=0.05, momentum=0.9))
    h = trainer.fit(x, y, epochs=20, batch_size=16, validation_data=(xv, yv), seed=0,
                    early_stopping=2, progress=False)
    assert h.best_epoch == int(np.argmin(h.val_loss))
    assert h.stopped_epoch == h.best_epoch + 2 == len(h) - 1 < 19
    assert trainer.evaluate(xv, yv)["loss"] == h.val_loss[h.best_epoch]
    # The same run cut at the best epoch ends with exactly those weights.
    reference = make_model()
    Trainer(reference, optimizer=SGD(reference.parameters(), lr=0.05, momentum=0.9)).fit(
        x, y, epochs=h.best_epoch + 1, batch_size=16, seed=0, progress=False)
    assert_same_state(weights(model), weights(reference))


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


def test_schedulers_are_stepped_per_epoch():
    x, y = make_data()
    model = make_model()
    opt = SGD(model.parameters(), lr=0.1)
    h = Trainer(model, optimizer=opt, scheduler=StepLR(opt, step_size=1, gamma=0.5)).fit(
        x, y, epochs=3, seed=0, progress=False)
    assert h.lr == [0.1, 0.05, 0.025]

    # ReduceLROnPlateau sees the validation loss: replaying it through a fresh scheduler gives the lrs.
    model = make_model()
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    h = Trainer(model, optimizer=opt, scheduler=ReduceLROnPlateau(opt, factor=0.5, patience=0)).fit(
        x, y, epochs=4, validation_data=make_data(30, seed=2, flip=True), seed=0, progress=False)
    replay = ReduceLROnPlateau(SGD(make_model().parameters(), lr=0.1), factor=0.5, patience=0)
    expected = []
    for val_loss in h.val_loss:
        expected.append(replay.optimizer.lr)
        replay.step(val_loss)
    assert h.lr == expected and min(h.lr) < 0.1

    with pytest.raises(ValueError, match="different optimizer"):
        Trainer(make_model(), scheduler=StepLR(SGD(make_model().parameters(), lr=0.1), 1))


def test_progress_modes(capsys):
    x, y = make_data()
    Trainer(make_model()).fit(x, y, epochs=2, seed=0, progress=False)
    assert capsys.readouterr() == ("", "")

    Trainer(make_model()).fit(x, y, epochs=2, seed=0, validation_split=0.25)
    out, err = capsys.readouterr()
    assert out == "" and "Epoch 2/2" in err and "img/s" in err and "val_acc=" in err

    Trainer(make_model()).fit(x, y, epochs=2, seed=0, progress="epoch")
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == "" and len(lines) == 2 and lines[1].startswith("Epoch 2/2") and "img/s" in lines[1]


def test_history_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    x, y = make_data()
    h = Trainer(make_model()).fit(x, y, epochs=2, seed=0, validation_split=0.25, progress=False)
    path = tmp_path / "curves.png"
    assert h.plot(path) == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="empty"):
        History().plot(tmp_path / "none.png")


def test_an_interrupted_history_plot_leaves_the_previous_png_intact(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    x, y = make_data()
    h = Trainer(make_model()).fit(x, y, epochs=1, seed=0, progress=False)
    path = tmp_path / "curves.png"
    h.plot(path)
    good = path.read_bytes()

    def broken(self, f, **kwargs):
        f.write(b"half a png")
        raise KeyboardInterrupt
    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(KeyboardInterrupt):
        h.plot(path)
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]


def test_history_plot_without_matplotlib_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"pip install fastconv\[plot\]"):
        History().plot(tmp_path / "x.png")
