"""fastconv.viz and the benchmark chart: each picture is a PNG of the asked size that follows its
input, the NumPy helpers match references (NumPy, PyTorch), and a missing matplotlib says how to
install it. Tiny models, a few 8x8 images, no training."""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import importlib.util
import os
import runpy
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

import fastconv as fc
from fastconv import viz
from helpers import assert_png, mnist_folder, pixels

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results-2026-12-01.md"


def _chart():
    """benchmarks/chart.py, loaded from its file (the benchmarks folder is not an installed package)."""
    spec = importlib.util.spec_from_file_location("fastconv_benchmarks_chart", ROOT / "benchmarks" / "chart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_model(seed=0):
    """8x8 single-channel input -> 3 classes; dropout and batch norm make eval mode matter."""
    rng = np.random.default_rng(seed)
    model = fc.Sequential(
        fc.Conv2d(1, 4, 3, padding=1, rng=rng), fc.BatchNorm2d(4), fc.ReLU(), fc.MaxPool2d(2),
        fc.Conv2d(4, 6, 3, rng=rng), fc.ReLU(), fc.Flatten(), fc.Dropout(0.5, rng=rng), fc.Linear(24, 3, rng=rng))
    bn = model[1]
    bn.running_mean[:] = rng.normal(size=4)
    bn.running_var[:] = rng.uniform(0.5, 2.0, size=4)
    return model


def images(n=6, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 1, 8, 8)).astype(np.float32)


needs_mpl = pytest.mark.usefixtures("matplotlib")


@pytest.fixture
def matplotlib():
    return pytest.importorskip("matplotlib")


# --- filters -------------------------------------------------------------------------------

@needs_mpl
@pytest.mark.parametrize("layer, combine", [(0, "all"), (4, "all"), (4, "mean")])
def test_plot_filters_size_repeatability_and_follows_the_weights(tmp_path, layer, combine):
    model = tiny_model()
    conv = model[layer]
    a, b, c = (tmp_path / f"{s}.png" for s in "abc")
    assert viz.plot_filters(conv, a, combine=combine, figsize=(4, 3), dpi=50) == a
    before = assert_png(a, 150, 200)
    viz.plot_filters(conv, b, combine=combine, figsize=(4, 3), dpi=50)
    assert a.read_bytes() == b.read_bytes()  # same weights, same bytes
    conv.weight.data[1, 0, 1, 1] += 0.5 * np.abs(conv.weight.data).max()
    viz.plot_filters(conv, c, combine=combine, figsize=(4, 3), dpi=50)
    assert not np.array_equal(before, pixels(c))


@needs_mpl
def test_plot_filters_mean_differs_from_all_channels_and_default_size_fits_the_grid(tmp_path):
    conv = tiny_model()[4]
    viz.plot_filters(conv, tmp_path / "side.png", combine="all", dpi=40)
    viz.plot_filters(conv, tmp_path / "mean.png", combine="mean", dpi=40)
    side, mean = pixels(tmp_path / "side.png"), pixels(tmp_path / "mean.png")
    assert side.shape != mean.shape or not np.array_equal(side, mean)
    assert side.shape[1] > side.shape[0]  # 6 filters side by side, 4 input channels down


def test_plot_filters_rejects_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="Conv2d"):
        viz.plot_filters(fc.Linear(3, 2), tmp_path / "x.png")
    with pytest.raises(ValueError, match="combine"):
        viz.plot_filters(fc.Conv2d(1, 2, 3), tmp_path / "x.png", combine="max")
    with pytest.raises(ValueError, match="figsize"):
        viz.plot_filters(fc.Conv2d(1, 2, 3), tmp_path / "x.png", figsize=(0, 3))
    assert not list(tmp_path.iterdir())


# --- feature maps --------------------------------------------------------------------------

def test_feature_maps_are_the_eval_mode_activations_and_modes_are_restored():
    model, x = tiny_model(), images(1)[0]
    model.train()
    model[7].training = False  # a mixed state must come back exactly
    before = [m.training for m in model.modules()]
    maps = viz.feature_maps(model, x)
    assert [m.training for m in model.modules()] == before
    assert [name for name, _, _ in maps] == ["0", "1", "2", "3", "4", "5"]  # every (N, C, H, W) output
    model.eval()
    for name, layer, a in maps:
        i = int(name)
        assert layer is model[i]
        expected = model[:i + 1].forward(x[None])[0]
        np.testing.assert_allclose(a, expected, rtol=1e-6, atol=1e-6)
    assert [a.shape for _, _, a in maps][-1] == (6, 2, 2)


def test_feature_maps_chosen_layers_nested_names_and_errors():
    model, x = tiny_model(), images(1)[0]
    maps = viz.feature_maps(model, x[None], layers=["4", 0, "8"])
    assert [n for n, _, _ in maps] == ["0", "4", "8"]  # forward order
    assert maps[2][2].shape == (3,)  # the logits, dropout off
    np.testing.assert_allclose(maps[2][2], model.predict(x[None])[0], rtol=1e-5, atol=1e-6)
    nested = fc.Sequential(fc.Sequential(model[0], model[1]), model[2])
    assert [n for n, _, _ in viz.feature_maps(nested, x)] == ["0.0", "0.1", "1"]
    with pytest.raises(ValueError, match="no layer named '9'"):
        viz.feature_maps(model, x, layers=[9])
    with pytest.raises(ValueError, match=r"one input .* got shape \(2, 1, 8, 8\)"):
        viz.feature_maps(model, images(2))
    with pytest.raises(ValueError, match="no layer with feature-map output"):
        viz.feature_maps(fc.Sequential(fc.Flatten(), fc.Linear(64, 2)), x)


def test_feature_maps_runs_under_no_grad(monkeypatch):
    # every layer's forward sees gradients off, and the caller's mode is the same afterwards
    model, x = tiny_model(), images(1)[0]
    modes = []
    for layer in model:
        forward = layer.forward
        monkeypatch.setattr(layer, "forward", lambda h, f=forward: modes.append(fc.is_grad_enabled()) or f(h))
    maps = viz.feature_maps(model, x)
    assert modes and not any(modes)
    assert fc.is_grad_enabled()
    monkeypatch.undo()
    for (_, _, a), (_, _, b) in zip(maps, viz.feature_maps(model, x)):
        np.testing.assert_array_equal(a, b)


@needs_mpl
def test_plot_feature_maps_size_repeatability_and_follows_input_and_weights(tmp_path):
    model, xs = tiny_model(), images(2)
    model.train()
    path = tmp_path / "maps.png"
    assert viz.plot_feature_maps(model, xs[0], path, figsize=(6, 5), dpi=40) == path
    first = assert_png(path, 200, 240)
    viz.plot_feature_maps(model, xs[0], tmp_path / "again.png", figsize=(6, 5), dpi=40)
    assert path.read_bytes() == (tmp_path / "again.png").read_bytes()  # eval mode: dropout off
    assert all(m.training for m in model.modules())
    viz.plot_feature_maps(model, xs[1], tmp_path / "other.png", figsize=(6, 5), dpi=40)
    assert not np.array_equal(first, pixels(tmp_path / "other.png"))
    model[4].weight.data *= -1
    viz.plot_feature_maps(model, xs[0], tmp_path / "flipped.png", figsize=(6, 5), dpi=40)
    assert not np.array_equal(first, pixels(tmp_path / "flipped.png"))
    with pytest.raises(ValueError, match=r"layer 6 \(Flatten\) outputs shape \(1, 24\)"):
        viz.plot_feature_maps(model, xs[0], tmp_path / "bad.png", layers=["0", "6"])
    with pytest.raises(ValueError, match="max_channels"):
        viz.plot_feature_maps(model, xs[0], tmp_path / "bad.png", max_channels=0)


# --- confusion matrix ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_confusion_matrix_matches_a_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    n, classes = int(rng.integers(1, 200)), int(rng.integers(1, 12))
    y_true, y_pred = rng.integers(0, classes, n), rng.integers(0, classes, n).astype(np.uint8)
    expected = np.zeros((classes + 2, classes + 2), dtype=np.int64)
    np.add.at(expected, (y_true, y_pred), 1)
    np.testing.assert_array_equal(viz.confusion_matrix(y_true, y_pred, num_classes=classes + 2), expected)
    top = max(y_true.max(), y_pred.max()) + 1
    got = viz.confusion_matrix(list(y_true), y_pred)
    assert got.dtype == np.int64 and got.shape == (top, top) and got.sum() == n
    np.testing.assert_array_equal(got, expected[:top, :top])


def test_confusion_matrix_rejects_bad_labels():
    with pytest.raises(ValueError, match="same length"):
        viz.confusion_matrix([0, 1], [0])
    with pytest.raises(TypeError, match="integer class labels"):
        viz.confusion_matrix([0.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="negative"):
        viz.confusion_matrix([0, -1], [0, 1])
    with pytest.raises(ValueError, match="out of range for num_classes=2"):
        viz.confusion_matrix([0, 2], [0, 1], num_classes=2)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        viz.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int))


@needs_mpl
def test_plot_confusion_size_and_follows_the_predictions(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 300)
    pred = np.where(rng.random(300) < 0.9, y, rng.integers(0, 10, 300))
    a = tmp_path / "a.png"
    assert viz.plot_confusion(y, pred, a, num_classes=10, figsize=(5, 4), dpi=60) == a
    first = assert_png(a, 240, 300)
    pred[pred == y] = (pred[pred == y] + 1) % 10  # every correct one now wrong
    viz.plot_confusion(y, pred, tmp_path / "b.png", num_classes=10, figsize=(5, 4), dpi=60)
    assert not np.array_equal(first, pixels(tmp_path / "b.png"))
    with pytest.raises(ValueError, match="class_names has 2 names for 10 classes"):
        viz.plot_confusion(y, pred, tmp_path / "c.png", num_classes=10, class_names=["a", "b"])


# --- losses and mistakes ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_sample_loss_matches_torch_cross_entropy_and_is_stable(dtype):
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(7, 5)) * 30 + np.array([[1000.0], [-1000], [0], [0], [0], [0], [0]])).astype(dtype)
    y = rng.integers(0, 5, 7)
    loss, probs = viz.per_sample_loss(logits, y)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits.astype(np.float64)),
                                                 torch.from_numpy(y), reduction="none").numpy()
    assert np.isfinite(loss).all()
    np.testing.assert_allclose(loss, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(logits.astype(np.float64)), 1).numpy(),
                               rtol=1e-12, atol=1e-15)


def test_worst_k_are_the_k_largest_losses():
    model, x = tiny_model(), images(40)
    y = np.random.default_rng(4).integers(0, 3, 40)
    logits = model.predict(x).astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    explicit = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(40), y]  # -log softmax[y]
    idx, losses = viz.worst_k(model, x, y, 7)
    assert idx.shape == (7,) and losses.shape == (7,)
    np.testing.assert_allclose(losses, explicit[idx], rtol=1e-10)
    assert np.all(np.diff(losses) <= 0)
    assert losses[-1] >= np.delete(explicit, idx).max()
    np.testing.assert_array_equal(idx, np.argsort(-explicit)[:7])
    assert list(viz.worst_k(model, x, y, 40)[0]) == list(np.argsort(-explicit, kind="stable"))
    for bad, error in ((0, ValueError), (41, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match="k"):
            viz.worst_k(model, x, y, bad)
    with pytest.raises(ValueError, match="out of range for 3 classes"):
        viz.worst_k(model, x, np.full(40, 3), 2)


@needs_mpl
def test_plot_mistakes_size_and_follows_the_labels(tmp_path):
    model, x = tiny_model(), images(12)
    y = np.random.default_rng(5).integers(0, 3, 12)
    a = tmp_path / "a.png"
    assert viz.plot_mistakes(model, x, y, a, k=6, figsize=(6, 4), dpi=50) == a
    first = assert_png(a, 200, 300)
    viz.plot_mistakes(model, x, y, tmp_path / "again.png", k=6, figsize=(6, 4), dpi=50)
    assert a.read_bytes() == (tmp_path / "again.png").read_bytes()
    viz.plot_mistakes(model, x, (y + 1) % 3, tmp_path / "b.png", k=6, figsize=(6, 4), dpi=50)
    assert not np.array_equal(first, pixels(tmp_path / "b.png"))
    rgb = np.random.default_rng(6).normal(size=(5, 3, 8, 8)).astype(np.float32)
    rgb_model = fc.Sequential(fc.Conv2d(3, 2, 3, rng=0), fc.Flatten(), fc.Linear(72, 4, rng=1))
    viz.plot_mistakes(rgb_model, rgb, [0, 1, 2, 3, 0], tmp_path / "rgb.png", k=5, class_names="abcd", dpi=30)
    assert pixels(tmp_path / "rgb.png").shape[2] in (3, 4)
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\)"):
        viz.plot_mistakes(model, x[:, 0], y, tmp_path / "c.png")


# --- files and the missing extra ----------------------------------------------------------

@needs_mpl
def test_save_figure_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "f.png"
    viz.plot_filters(fc.Conv2d(1, 2, 3, rng=0), path, dpi=20)
    good = path.read_bytes()
    fig = viz.new_figure((2, 2))
    fig.subplots().plot([0, 1], [1, 0])

    def broken(f, **kwargs):
        f.write(b"half a png")
        raise OSError("disk full")
    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        viz.save_figure(fig, path)
    assert path.read_bytes() == good and sorted(os.listdir(tmp_path)) == ["f.png"]


def test_missing_matplotlib_names_the_plot_extra(monkeypatch, tmp_path):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    model, x = tiny_model(), images(4)
    y = np.array([0, 1, 2, 0])
    calls = {
        "plot_filters": lambda p: viz.plot_filters(model[0], p),
        "plot_feature_maps": lambda p: viz.plot_feature_maps(model, x[0], p),
        "plot_confusion": lambda p: viz.plot_confusion(y, y, p),
        "plot_mistakes": lambda p: viz.plot_mistakes(model, x, y, p, k=2),
        "benchmarks.report --plot": lambda p: _chart().plot_speed([_chart().Ratio("A", "fwd", 1, 1, 1)], p),
    }
    for what, call in calls.items():
        with pytest.raises(ImportError, match=rf"{what} needs matplotlib: pip install fastconv\[plot\]"):
            call(tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
    # the NumPy helpers need no matplotlib
    assert viz.confusion_matrix(y, y).trace() == 4
    assert viz.worst_k(model, x, y, 2)[0].shape == (2,)
    assert len(viz.feature_maps(model, x[0])) == 6


# --- the benchmark chart --------------------------------------------------------------------

def test_chart_reads_the_reports_conv_table():
    chart = _chart()
    ratios, info = chart.from_markdown(RESULTS)
    assert len(ratios) == 18
    assert ratios[0] == chart.Ratio("A", "fwd", 2.12, 1.93, 2.91)
    assert ratios[-1] == chart.Ratio("F", "fwdbwd", 0.68, 0.59, 0.75)
    assert [r.pass_ for r in ratios[:3]] == ["fwd", "bwd", "fwdbwd"]
    assert info["machine"].startswith("AMD EPYC, 2 logical CPUs")
    assert info["torch"] == "2.13.0+cpu" and info["date"] == "2026-12-01 21:22 UTC"
    assert info["shapes"]["E"] == "10,20,12x12,40,5x5,s1,p0"


def test_chart_takes_the_reports_rows():
    chart = _chart()
    Stat = namedtuple("Stat", "median q1 q3 lo hi n")
    Row = namedtuple("Row", "kind op shape pass_ flops images times ratio")  # report.Row's fields
    rows = [Row("conv", "conv2d", "A", "fwd", 1, None, {}, Stat(0.5, 0.4, 0.7, 0.3, 0.8, 5)),
            Row("conv", "conv2d", "B", "bwd", 1, None, {}, None),  # no torch time
            Row("pool", "maxpool", "P1", "fwd", None, None, {}, Stat(2, 2, 2, 2, 2, 1))]
    assert chart.from_rows(rows) == [chart.Ratio("A", "fwd", 0.5, 0.4, 0.7)]


def test_chart_rejects_a_file_without_the_table(tmp_path):
    bad = tmp_path / "notes.md"
    bad.write_text("# some notes\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    with pytest.raises(ValueError, match="no '### conv2d' section"):
        _chart().from_markdown(bad)
    bad.write_text("### conv2d (x)\n\n| shape | pass | cpu ms |\n|---|---|---:|\n| A | fwd | 1 |\n")
    with pytest.raises(ValueError, match="cpu/torch time"):
        _chart().from_markdown(bad)


@needs_mpl
def test_chart_png_size_and_follows_the_ratios(tmp_path):
    chart = _chart()
    ratios, info = chart.from_markdown(RESULTS)
    a = tmp_path / "speed.png"
    assert chart.plot_speed(ratios, a, info["machine"], info["torch"], info["date"], info["shapes"]) == a
    first = assert_png(a, 500, 1100)
    ratios[4] = ratios[4]._replace(median=0.3, q1=0.25, q3=0.35)
    chart.plot_speed(ratios, tmp_path / "b.png", info["machine"], info["torch"], info["date"], info["shapes"])
    assert not np.array_equal(first, pixels(tmp_path / "b.png"))


@needs_mpl
def test_report_draws_the_chart_from_a_saved_markdown_report(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import report
    out = tmp_path / "speed.png"
    report.main(["--from-markdown", str(RESULTS), "--plot", str(out)])
    assert "18 conv2d ratios" in capsys.readouterr().out
    assert_png(out, 500, 1100)
    with pytest.raises(SystemExit):
        report.main(["--from-markdown", str(RESULTS)])
    with pytest.raises(SystemExit):
        report.main(["--plot", str(out), "--skip", "conv"])


# --- the example ----------------------------------------------------------------------------

@needs_mpl
def test_the_visualize_example_writes_every_picture(tmp_path, monkeypatch, capsys):
    data = mnist_folder()
    monkeypatch.syspath_prepend(str(ROOT / "examples"))  # the example imports train_mnist's builders
    example = runpy.run_path(str(ROOT / "examples" / "visualize.py"))
    fc.manual_seed(1)
    weights = tmp_path / "lenet.npz"
    example["ARCHS"]["lenet"]["build"]().save(weights)  # untrained: no training in tests
    out = tmp_path / "pictures"
    result = example["main"](["--load", str(weights), "--out", str(out), "--data-dir", str(data),
                              "--test-limit", "40", "--k", "4", "--channels", "3",
                              "--patterns", "2", "--steps", "3", "--saliency", "2"])
    assert sorted(os.listdir(out)) == ["confusion.png", "feature_maps.png", "filters_layer0.png",
                                       "filters_layer3.png", "mistake_saliency.png", "mistakes.png",
                                       "patterns_layer0.png", "patterns_layer3.png", "saliency.png"]
    assert result["confusion"].shape == (10, 10) and result["confusion"].sum() == 40
    assert f"test accuracy {result['accuracy']:.4f} on 40 images" in capsys.readouterr().out
