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

EXAMPLES = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "train_mnist.py"))
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


# --- graphs: residual blocks and concatenations -------------------------------------------------

class TorchResidual(nn.Module):
    """fastconv.Residual's twin: ``body(x) + shortcut(x)`` (children ``body`` and ``shortcut``)."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class TorchConcat(nn.ModuleList):
    """fastconv.Concat's twin: the branches' outputs concatenated along dim 1."""

    def forward(self, x):
        return torch.cat([b(x) for b in self], 1)


def torch_resnet(width):
    """The twin of ``examples/train_mnist.py``'s resnet: basic blocks, the last two with strided
    1x1 projection shortcuts."""
    def conv_bn(c_in, c_out, kernel=3, stride=1):
        return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)]

    def block(c_in, c_out, stride):
        body = nn.Sequential(*conv_bn(c_in, c_out, stride=stride), nn.ReLU(), *conv_bn(c_out, c_out))
        short = nn.Sequential(*conv_bn(c_in, c_out, 1, stride)) if stride != 1 or c_in != c_out else None
        return [TorchResidual(body, short), nn.ReLU()]
    w1, w2, w3 = width, 2 * width, 4 * width
    return nn.Sequential(*conv_bn(1, w1), nn.ReLU(), *block(w1, w1, 1), *block(w1, w2, 2), *block(w2, w3, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w3, 10))


def with_fastconv_weights(model, fastconv_model, seed=0):
    """``model`` (a torch twin) with ``fastconv_model``'s initial weights and random BatchNorm
    statistics and affine parameters, in eval mode."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, value in fastconv_model.state_dict().items():
        value = np.asarray(value)
        stem = key.rsplit(".", 1)[0]
        if f"{stem}.running_var" in model.state_dict() and not key.endswith("num_batches_tracked"):
            value = (rng.uniform(0.5, 1.5, value.shape) if key.endswith(("running_var", "weight"))
                     else rng.normal(0, 0.3, value.shape)).astype(np.float32)
        state[key] = torch.from_numpy(value)
    model.load_state_dict(state)
    return model.eval()


def one_training_step(imported, n=8, seed=0):
    """One SGD step on random data: every parameter gets a finite gradient and changes."""
    imported.train()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, n)
    before = {k: v.copy() for k, v in imported.state_dict().items()}
    loss, opt = CrossEntropyLoss(), SGD(imported.parameters(), lr=0.01)
    value = loss.forward(imported.forward(x), y)
    imported.backward(loss.backward())
    opt.step()
    assert np.isfinite(value)
    after = imported.state_dict()
    for name, p in imported.named_parameters():
        assert np.all(np.isfinite(p.grad)) and not np.array_equal(before[name], after[name]), name


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "unfolded"])
def test_a_torch_resnet_with_projection_shortcuts_imports_and_trains(fold, tmp_path):
    fc.manual_seed(0)
    model = with_fastconv_weights(torch_resnet(4), EXAMPLES["ARCHS"]["resnet"]["build"](width=4))
    imported = fo.load(torch_export(model, tmp_path / "resnet.onnx", fold=fold))
    blocks = [m for m in imported if isinstance(m, fc.Residual)]
    assert len(blocks) == 3 and [b.shortcut is None for b in blocks] == [True, False, False]
    assert outputs_match(model, imported) < TOL
    if not fold:  # unfolded, the import has PyTorch's layers and state-dict keys
        assert imported.state_dict().keys() == model.state_dict().keys()
    one_training_step(imported)


def test_a_torch_inception_block_imports_as_a_concat(tmp_path):
    torch.manual_seed(0)
    branches = TorchConcat([nn.Conv2d(4, 3, 1), nn.Sequential(nn.Conv2d(4, 2, 1), nn.ReLU(), nn.Conv2d(2, 3, 3, padding=1)),
                            nn.Sequential(nn.MaxPool2d(3, 1, padding=1), nn.Conv2d(4, 2, 1)), nn.Identity()])
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.ReLU(), branches, nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(12, 10)).eval()
    imported = fo.load(torch_export(model, tmp_path / "inception.onnx"))
    concat = [m for m in imported if isinstance(m, fc.Concat)]
    assert len(concat) == 1 and len(concat[0]) == 4 and isinstance(concat[0][3], fc.Identity)
    assert imported.state_dict().keys() == model.state_dict().keys()
    assert outputs_match(model, imported) < TOL
    one_training_step(imported)


def test_torch_exports_of_the_normalisations_and_softplus_import(tmp_path):
    """GroupNorm (Reshape, InstanceNormalization, Reshape, Mul, Add), InstanceNorm2d (GroupNorm(C, C)),
    LayerNorm (LayerNormalization) and Softplus, folded and unfolded."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=3), nn.GroupNorm(2, 4), nn.Softplus(), nn.GroupNorm(4, 4, affine=False),
                          nn.InstanceNorm2d(4, affine=True), nn.Softplus(), nn.LayerNorm((9, 9)), nn.Flatten(),
                          nn.Linear(324, 10))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)) and m.weight is not None:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.3)
    model.eval()
    for fold in (True, False):
        imported = fo.load(torch_export(model, tmp_path / f"norms{fold}.onnx", fold=fold))
        assert [type(m).__name__ for m in imported] == ["Conv2d", "GroupNorm", "Softplus", "GroupNorm", "GroupNorm",
                                                        "Softplus", "LayerNorm", "Flatten", "Linear"]
        assert outputs_match(model, imported) < TOL
    one_training_step(imported)


def test_a_torch_export_with_reflect_padding_leaky_relu_adaptive_pool_and_softmax_imports(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.LeakyReLU(0.1),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3), nn.Softmax(dim=1)).eval()
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and folding notes
        torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "N"}})
    imported = fo.load(path)
    assert [type(m).__name__ for m in imported] == ["Conv2d", "LeakyReLU", "AdaptiveAvgPool2d", "Flatten",
                                                     "Linear", "Softmax"]
    assert imported[0].padding_mode == "reflect"
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert rel_error(imported.forward(x), want) < TOL
