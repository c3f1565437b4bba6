"""fastconv.viz's gradient pictures: the patterns each filter responds to most (gradient ascent on
the input) and saliency maps. The maths on tiny models (ascent raises its objective step by step;
a linear model's saliency is its weight row; gradients match finite differences, also through a
Residual block), seeds and shapes, the model left untouched, bad arguments, and the PNGs (size,
repeatable, atomic, a clear error without matplotlib). Tiny models, 8x8 images, no training."""
import os
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv as fc
from fastconv import viz
from fastconv.datasets import load_mnist, normalize
from fastconv.losses import CrossEntropyLoss
from fastconv.viz._backprop import find_layer, input_gradient, private_copy, tapped_prefix
from helpers import assert_png, mnist_folder, numeric_grad, pixels


def conv_net(seed=0, dtype=np.float64):
    """8x8 single-channel input -> 3 classes; batch norm and dropout make eval mode matter."""
    rng = np.random.default_rng(seed)
    model = fc.Sequential(
        fc.Conv2d(1, 4, 3, padding=1, rng=rng), fc.BatchNorm2d(4), fc.ReLU(), fc.MaxPool2d(2),
        fc.Conv2d(4, 5, 3, rng=rng), fc.ReLU(), fc.Flatten(), fc.Dropout(0.5, rng=rng), fc.Linear(20, 3, rng=rng))
    model[1].running_mean[:] = rng.normal(size=4)
    model[1].running_var[:] = rng.uniform(0.5, 2.0, size=4)
    return model.to(dtype)


def residual_net(seed=0):
    """A Conv2d inside a Residual's body, the block inside a nested Sequential (float64)."""
    rng = np.random.default_rng(seed)
    body = fc.Sequential(fc.Conv2d(3, 3, 3, padding=1, rng=rng), fc.Tanh(), fc.Conv2d(3, 3, 3, padding=1, rng=rng))
    return fc.Sequential(fc.Conv2d(1, 3, 3, padding=1, rng=rng), fc.Tanh(),
                         fc.Sequential(fc.Residual(body), fc.Tanh()),
                         fc.Flatten(), fc.Linear(3 * 6 * 6, 2, rng=rng)).to(np.float64)


def images(n=4, seed=1, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=(n, 1, 8, 8)).astype(dtype)


PLAIN = dict(input_shape=(1, 8, 8), jitter=0, blur_every=0)  # gradient ascent and nothing else


# --- filter patterns: the maths -----------------------------------------------------------

def test_ascent_raises_the_activation_every_step():
    model = conv_net()
    patterns, act, objective = viz.filter_patterns(model, 4, channels=5, steps=25, lr=0.02, decay=0.0,
                                                   history=True, **PLAIN)
    assert patterns.shape == (5, 1, 8, 8) and act.shape == objective.shape == (26, 5)
    np.testing.assert_array_equal(act, objective)  # no penalty without decay
    assert (np.diff(act, axis=0) >= 0).all()
    fired = act[0] > 0  # a channel off everywhere at the start may stay off (no gradient through its ReLU)
    assert fired.sum() >= 3 and (act[-1, fired] > act[0, fired] + 0.1).all()


@pytest.mark.parametrize("rectify", [True, False])
def test_ascent_raises_the_objective_with_its_l2_penalty(rectify):
    model = conv_net()
    _, act, objective = viz.filter_patterns(model, "4", channels=[1, 4], steps=25, lr=0.01, decay=2.0,
                                            rectify=rectify, history=True, **PLAIN)
    assert (act[0] > 0).all() or not rectify  # both channels fire from the start: the ReLU has a gradient
    assert (np.diff(objective, axis=0) >= 0).all()
    assert (objective[-1] > objective[0]).all()
    assert (objective < act).all()  # the penalty is there


def test_gradient_through_a_tapped_layer_inside_a_residual_block_matches_finite_differences():
    model = residual_net()
    name, layer = find_layer(model, "2.0.body.2")
    assert layer is model[2][0].body[2]
    net, tap = tapped_prefix(private_copy(model), name)
    x = np.ascontiguousarray(images(1)[:, :, :6, :6])
    w = np.random.default_rng(2).normal(size=(1, 3, 6, 6))

    def output():
        net.forward(x)
        return np.asarray(tap.output)
    _, dx = input_gradient(net, x, lambda y: w, tap)
    numeric = numeric_grad(output, x, w, h=1e-6)
    np.testing.assert_allclose(dx, numeric, rtol=1e-6, atol=1e-8)


def test_patterns_of_a_layer_inside_a_residual_block_raise_its_activation():
    model = residual_net()
    _, act, _ = viz.filter_patterns(model, model[2][0].body[0], channels=3, steps=10, lr=0.05,
                                    input_shape=(1, 6, 6), history=True)
    assert (act[-1] > act[0]).all()


# --- filter patterns: arguments, seeds, the model untouched ---------------------------------

def test_patterns_seeds_dtype_range_and_the_ways_to_name_a_layer():
    model = conv_net(dtype=np.float32)
    kw = dict(channels=[3, 0], steps=6, input_shape=(1, 8, 8), value_range=(-1.0, 2.0))
    a = viz.filter_patterns(model, 4, seed=5, **kw)
    assert a.shape == (2, 1, 8, 8) and a.dtype == np.float32
    assert a.min() >= -1.0 and a.max() <= 2.0
    np.testing.assert_array_equal(a, viz.filter_patterns(model, "4", seed=5, **kw))
    np.testing.assert_array_equal(a, viz.filter_patterns(model, model[4], seed=5, **kw))
    np.testing.assert_array_equal(a, viz.filter_patterns(model, 4, seed=np.random.default_rng(5), **kw))
    assert not np.array_equal(a, viz.filter_patterns(model, 4, seed=6, **kw))
    first = viz.filter_patterns(model, 4, channels=4, steps=6, seed=5, input_shape=(1, 8, 8), value_range=(-1, 2))
    np.testing.assert_array_equal(first[[3, 0]], a)  # a channel's pattern does not depend on the others


def state(model):
    return ({k: v.copy() for k, v in model.state_dict().items()},
            [None if p.grad is None else p.grad.copy() for p in model.parameters()],
            [m.training for m in model.modules()])


def test_patterns_and_saliency_leave_the_model_as_it_was():
    """Run between a training forward and its backward: weights, gradients, train flags, the
    dropout generator and the caches the backward needs are as in a model that never drew."""
    x, y = images(), np.array([0, 1, 2, 0])
    model, reference = conv_net().train(), conv_net().train()
    loss, reference_loss = CrossEntropyLoss(), CrossEntropyLoss()
    loss(model.forward(x), y)
    reference_loss(reference.forward(x), y)
    before = state(model)
    viz.filter_patterns(model, 0, channels=2, steps=3, **PLAIN)
    viz.saliency(model, x)
    after = state(model)
    for a, b in zip(before[0].values(), after[0].values()):
        np.testing.assert_array_equal(a, b)
    assert after[1] == [None] * len(after[1]) and after[2] == before[2] == [True] * len(before[2])
    model.backward(loss.backward())
    reference.backward(reference_loss.backward())
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad)
    np.testing.assert_array_equal(model.forward(x), reference.forward(x))  # the same dropout draws


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(layer=9), ValueError, "no layer named '9'"),
    (dict(layer=fc.Conv2d(1, 2, 3)), ValueError, "not a layer of the model"),
    (dict(layer=1.5), TypeError, "layer must be"),
    (dict(layer=8), ValueError, "not maps"),
    (dict(channels=6), ValueError, "channel 5 is out of range: layer 4 has 5 channels"),
    (dict(channels=0), ValueError, "channels must be a positive int"),
    (dict(channels=[]), ValueError, "non-empty sequence"),
    (dict(channels=[1, -1]), ValueError, "channel indices"),
    (dict(channels=2.0), TypeError, "channels must be an int"),
    (dict(steps=0), ValueError, "steps must be a positive int"),
    (dict(lr=0), ValueError, "lr must be > 0"),
    (dict(lr="1"), TypeError, "lr must be a finite number"),
    (dict(decay=-1), ValueError, "decay must be >= 0"),
    (dict(jitter=1.5), TypeError, "jitter must be an int"),
    (dict(blur_every=-1), ValueError, "blur_every must be an int >= 0"),
    (dict(value_range=(1, 0)), ValueError, "low < high"),
    (dict(value_range=3), TypeError, "value_range must be None or"),
    (dict(input_shape=(8, 8)), ValueError, r"input_shape must be \(C, H, W\)"),
    (dict(input_shape=(2, 8, 8)), ValueError, "Conv2d"),  # the layer's own message
    (dict(seed="x"), TypeError, "rng must be"),
])
def test_bad_pattern_arguments(kwargs, error, match):
    args = dict(layer=4, channels=2, steps=2, input_shape=(1, 8, 8))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        viz.filter_patterns(conv_net(), **args)


def test_a_model_that_is_not_a_module():
    with pytest.raises(TypeError, match="fastconv Module"):
        viz.filter_patterns(lambda x: x, 0)
    with pytest.raises(TypeError, match="fastconv Module"):
        viz.saliency(object(), images())


# --- saliency -------------------------------------------------------------------------------

@pytest.mark.parametrize("softmax", [False, True])
def test_saliency_of_a_linear_model_is_its_weight_row(softmax):
    rng = np.random.default_rng(0)
    layers = [fc.Flatten(), fc.Linear(2 * 5 * 6, 4, rng=rng)] + [fc.Softmax(dim=1)] * softmax
    model = fc.Sequential(*layers)
    x = rng.normal(size=(3, 2, 5, 6)).astype(np.float32)
    w = model[1].weight.data.reshape(4, 2, 5, 6)
    got = viz.saliency(model, x, target=[0, 3, 1])
    assert got.shape == (3, 5, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.abs(w[[0, 3, 1]]).max(axis=1), rtol=1e-6)
    predicted = (x.reshape(3, -1) @ model[1].weight.data.T + model[1].bias.data).argmax(axis=1)
    np.testing.assert_allclose(viz.saliency(model, x), np.abs(w[predicted]).max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(viz.saliency(model, x, target=2), np.abs(w[[2, 2, 2]]).max(axis=1), rtol=1e-6)


def test_saliency_matches_finite_differences_in_batches():
    model, x = conv_net(), images(5)
    got = viz.saliency(model, x, target=[2, 0, 1, 1, 2], batch_size=2)
    eps = 1e-6
    for n, c in enumerate([2, 0, 1, 1, 2]):
        plus = np.repeat(x[n:n + 1], 64, axis=0)
        minus = plus.copy()
        plus.reshape(64, 64)[np.arange(64), np.arange(64)] += eps
        minus.reshape(64, 64)[np.arange(64), np.arange(64)] -= eps
        numeric = (model.predict(plus)[:, c] - model.predict(minus)[:, c]) / (2 * eps)
        np.testing.assert_allclose(got[n].ravel(), np.abs(numeric), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("x, kwargs, error, match", [
    (images()[0], {}, ValueError, r"\(N, C, H, W\)"),
    (images().astype(complex), {}, TypeError, "real numeric"),
    (images(), dict(target=3), ValueError, "target class 3 is out of range for 3 classes"),
    (images(), dict(target=[0, 1]), ValueError, "one per image"),
    (images(), dict(target=0.5), TypeError, "target must be an int"),
    (images(), dict(target=-1), ValueError, "negative"),
    (images(), dict(batch_size=0), ValueError, "batch_size"),
])
def test_bad_saliency_arguments(x, kwargs, error, match):
    with pytest.raises(error, match=match):
        viz.saliency(conv_net(), x, **kwargs)


def test_saliency_needs_class_scores():
    with pytest.raises(ValueError, match=r"class scores \(N, classes\)"):
        viz.saliency(fc.Sequential(fc.Conv2d(1, 2, 3, rng=0)), images(dtype=np.float32))


# --- the pictures ---------------------------------------------------------------------------

PICTURES = {
    "plot_filter_patterns": lambda m, p, **kw: viz.plot_filter_patterns(m, 4, p, channels=3, steps=3,
                                                                        input_shape=(1, 8, 8), **kw),
    "plot_saliency": lambda m, p, **kw: viz.plot_saliency(m, images(3), p, y=[0, 1, 2], **kw),
    "plot_mistake_saliency": lambda m, p, **kw: viz.plot_mistake_saliency(m, images(6), [0, 1, 2, 0, 1, 2], p,
                                                                          k=2, **kw),
}


@pytest.mark.parametrize("what", PICTURES)
def test_pictures_have_their_size_repeat_and_follow_the_weights(what, tmp_path):
    pytest.importorskip("matplotlib")
    draw, model = PICTURES[what], conv_net()
    a = tmp_path / "a.png"
    assert draw(model, a, figsize=(4, 3), dpi=50) == a
    first = assert_png(a, 150, 200)
    draw(model, tmp_path / "again.png", figsize=(4, 3), dpi=50)
    np.testing.assert_array_equal(first, pixels(tmp_path / "again.png"))
    draw(conv_net(seed=3), tmp_path / "other.png", figsize=(4, 3), dpi=50)
    assert not np.array_equal(first, pixels(tmp_path / "other.png"))


def test_a_failed_write_leaves_the_old_picture(tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib.figure")
    path = tmp_path / "s.png"
    PICTURES["plot_saliency"](conv_net(), path, dpi=30)
    good = path.read_bytes()

    def broken(self, f, **kwargs):
        f.write(b"half a png")
        raise OSError("disk full")
    monkeypatch.setattr(matplotlib.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        PICTURES["plot_saliency"](conv_net(seed=3), path, dpi=30)
    assert path.read_bytes() == good and sorted(os.listdir(tmp_path)) == ["s.png"]


def test_missing_matplotlib_names_the_plot_extra(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    model = conv_net()
    for what, draw in PICTURES.items():
        with pytest.raises(ImportError, match=rf"{what} needs matplotlib: pip install fastconv\[plot\]"):
            draw(model, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
    # the arrays need no matplotlib
    assert viz.filter_patterns(model, 0, channels=1, steps=1, input_shape=(1, 8, 8)).shape == (1, 1, 8, 8)
    assert viz.saliency(model, images(2)).shape == (2, 8, 8)


# --- the example ------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def example(monkeypatch):
    """examples/visualize.py's globals and the MNIST folder (skipped without the files)."""
    pytest.importorskip("matplotlib")
    data = mnist_folder()
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # the example imports train_mnist's builders
    return runpy.run_path(str(ROOT / "examples" / "visualize.py")), data


def test_the_example_draws_a_checkpoints_training_curves(example, tmp_path, capsys):
    example, data = example
    (x, y), (x_test, y_test) = load_mnist(data, download=False)
    fc.manual_seed(1)
    model = example["ARCHS"]["lenet"]["build"]()
    checkpoint = tmp_path / "run.npz"
    fc.Trainer(model).fit(normalize(x[:64]), y[:64], epochs=2, batch_size=32, validation_split=0.25,
                          checkpoint=checkpoint, progress=False)
    out = tmp_path / "pictures"
    result = example["main"](["--load", str(checkpoint), "--out", str(out), "--data-dir", str(data),
                              "--test-limit", "20", "--k", "3", "--channels", "2", "--patterns", "1",
                              "--steps", "2", "--saliency", "2"])
    assert "training_curves.png" in os.listdir(out)
    assert len(result["history"]) == 2 and None not in result["history"].val_loss
    assert "(a checkpoint after 2 epochs)" in capsys.readouterr().out
    # the checkpoint's weights were loaded: the accuracy is that of the trained model
    assert result["accuracy"] == np.mean(model.predict(normalize(x_test[:20])).argmax(axis=1) == y_test[:20])


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--val-split", "1"], "--val-split must be in [0, 1)"),
    (["--load", "missing.npz"], "--load missing.npz: no such file"),
])
def test_the_example_refuses_bad_options(example, argv, message, capsys):
    with pytest.raises(SystemExit):
        example[0]["main"](argv)
    assert message in capsys.readouterr().err


def test_the_example_says_why_it_cannot_load_a_file(example, tmp_path):
    bad = tmp_path / "notes.npz"
    bad.write_text("not an archive")
    with pytest.raises(SystemExit, match=r"visualize.py: --load: cannot read .*notes.npz"):
        example[0]["main"](["--load", str(bad), "--data-dir", str(example[1]), "--out", str(tmp_path)])
