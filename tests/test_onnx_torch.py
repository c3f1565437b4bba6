"""fastconv.onnx.load of models written by ``torch.onnx.export``: PyTorch twins of the example
architectures reproduce PyTorch's outputs, and the imported model trains.

``torch.onnx.export`` in torch 2.13 defaults to the dynamo exporter, which needs the separate
``onnxscript`` package; these tests use the TorchScript exporter (``dynamo=False``), the one that
writes the Shape/Gather/Unsqueeze/Concat flatten chains the importer folds.
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

import runpy
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fastconv as fc
import fastconv.onnx as fo
from fastconv.losses import CrossEntropyLoss
from fastconv.optim import SGD

from helpers import rel_error

EXAMPLES = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "train_mnist.py"))
TOL = 1e-5


def twin(arch):
    """The torch.nn.Sequential of ``examples/train_mnist.py``'s ``arch``, layer for layer."""
    if arch == "tutorial":
        return nn.Sequential(nn.Conv2d(1, 8, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(13 * 13 * 8, 10))
    if arch == "lenet":
        return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(7 * 7 * 64, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*block(1, 32), *block(32, 32), nn.MaxPool2d(2), *block(32, 64), *block(64, 64),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(7 * 7 * 64, 256, bias=False), nn.BatchNorm1d(256),
                         nn.ReLU(), nn.Dropout(0.4), nn.Linear(256, 10))


def torch_model(arch, seed=0):
    """The twin in eval mode, with fastconv's initial weights (same state-dict keys) and, for the
    BatchNorm layers, random running statistics and affine parameters."""
    fc.manual_seed(seed)
    state = EXAMPLES[arch]().state_dict()
    rng = np.random.default_rng(seed)
    for key in state:
        if key.endswith("running_mean") or key.endswith(".bias") and f"{key[:-5]}.running_var" in state:
            state[key] = rng.normal(0, 0.3, state[key].shape).astype(np.float32)
        elif key.endswith("running_var") or key.endswith(".weight") and f"{key[:-7]}.running_var" in state:
            state[key] = rng.uniform(0.5, 1.5, state[key].shape).astype(np.float32)
    model = twin(arch)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return model.eval()


def torch_export(model, path, opset=17, dynamic=True, fold=True, batch=2):
    x = torch.zeros(batch, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=opset, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}} if dynamic else None,
                          do_constant_folding=fold)
    return path


def outputs_match(model, imported, batches=(1, 33), seed=1):
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in batches:
        x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        worst = max(worst, rel_error(imported.forward(x), want))
    return worst


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "unfolded"])
@pytest.mark.parametrize("arch", ["tutorial", "lenet", "best"])
def test_torch_exports_of_the_example_architectures_reproduce_pytorch(arch, fold, tmp_path):
    model = torch_model(arch)
    imported = fo.load(torch_export(model, tmp_path / f"{arch}.onnx", fold=fold))
    assert outputs_match(model, imported) < TOL
    layers = [type(m).__name__ for m in imported]
    if arch == "best":  # folding merges each BatchNorm2d into its Conv; BatchNorm1d stays a layer
        assert layers.count("BatchNorm2d") == (0 if fold else 4) and layers.count("BatchNorm1d") == 1
    assert "Dropout" not in layers  # eval-mode exports leave dropout out


def test_the_imported_weights_are_pytorchs(tmp_path):
    model = torch_model("lenet")
    imported = fo.load(torch_export(model, tmp_path / "lenet.onnx"))
    state = imported.state_dict()
    want = {k: v.numpy() for k, v in model.state_dict().items()}
    # torch leaves the Dropout (index 9) out, so the last Linear is layer 9 here, 10 there
    np.testing.assert_array_equal(state["0.weight"], want["0.weight"])
    np.testing.assert_array_equal(state["7.bias"], want["7.bias"])
    np.testing.assert_array_equal(state["9.weight"], want["10.weight"])


@pytest.mark.parametrize("opset", [11, 13, 17, 20])
def test_every_opset_torch_writes(opset, tmp_path):
    model = torch_model("best")
    imported = fo.load(torch_export(model, tmp_path / "best.onnx", opset=opset, fold=False))
    assert outputs_match(model, imported) < TOL


def test_a_static_batch_export_imports_for_any_batch(tmp_path):
    model = torch_model("lenet")
    imported = fo.load(torch_export(model, tmp_path / "lenet.onnx", dynamic=False, batch=4))
    assert outputs_match(model, imported, batches=(4, 1, 33)) < TOL


class ViewFlatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class ReshapeFlatten(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.features = features

    def forward(self, x):
        return x.reshape(-1, self.features)


class FunctionalFlatten(nn.Module):
    def forward(self, x):
        return torch.flatten(x, 1)


class MatMulLinear(nn.Module):
    """``x @ weight.T + bias`` written out: exported as MatMul + Add instead of Gemm."""

    def __init__(self, linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x):
        return torch.matmul(x, self.weight.t()) + self.bias


FLATTENS = {"view": lambda: ViewFlatten(), "reshape": lambda: ReshapeFlatten(13 * 13 * 8),
            "torch.flatten": lambda: FunctionalFlatten()}


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "unfolded"])
@pytest.mark.parametrize("flatten", sorted(FLATTENS))
def test_flatten_chains_and_matmul_add_fold_into_layers(flatten, fold, dynamic, tmp_path):
    base = torch_model("tutorial")
    model = nn.Sequential(base[0], nn.AvgPool2d(2), FLATTENS[flatten](), MatMulLinear(base[3])).eval()
    imported = fo.load(torch_export(model, tmp_path / "m.onnx", fold=fold, dynamic=dynamic))
    assert [type(m).__name__ for m in imported] == ["Conv2d", "AvgPool2d", "Flatten", "Linear"]
    assert outputs_match(model, imported, batches=(2,) if not dynamic else (1, 33)) < TOL


@pytest.mark.parametrize("arch", ["tutorial", "lenet", "best"])
def test_an_imported_model_trains(arch, tmp_path):
    model = torch_model(arch)
    imported = fo.load(torch_export(model, tmp_path / f"{arch}.onnx", fold=False)).train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    before = {k: v.copy() for k, v in imported.state_dict().items()}
    loss = CrossEntropyLoss()
    opt = SGD(imported.parameters(), lr=0.01)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        losses.append(loss.forward(imported.forward(x), y))
        imported.backward(loss.backward())
        for name, p in imported.named_parameters():
            assert p.grad is not None and p.grad.shape == p.shape and np.all(np.isfinite(p.grad)), name
        opt.step()
    after = imported.state_dict()
    for name, _ in imported.named_parameters():
        assert not np.array_equal(before[name], after[name]), name
    assert losses[-1] < losses[0]


def test_the_first_training_step_matches_pytorchs(tmp_path):
    """tutorial has neither dropout nor batch statistics, so one step is deterministic in both."""
    model = torch_model("tutorial")
    imported = fo.load(torch_export(model, tmp_path / "t.onnx")).train()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    loss = CrossEntropyLoss()
    value = loss.forward(imported.forward(x), y)
    imported.backward(loss.backward())
    model.train()
    want = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    want.backward()
    assert abs(value - want.item()) < 1e-5 * abs(want.item())
    grads = dict(model.named_parameters())
    for name, p in imported.named_parameters():
        assert rel_error(p.grad, grads[name].grad.numpy()) < 1e-4, name
