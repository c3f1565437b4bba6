"""Trainer and History: training, evaluation, early stopping, schedulers, progress, plots (exact
checkpoint resume: test_trainer_resume.py).

Everything runs on a tiny synthetic task (8x8 images, 3 classes told apart by where a bright
square sits) so the whole file takes seconds.
"""
import sys

import numpy as np
import pytest

import fastconv as fc
from fastconv.datasets import RandomShift, normalize
from fastconv.losses import softmax_cross_entropy
from fastconv.optim import SGD, ReduceLROnPlateau, StepLR
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
