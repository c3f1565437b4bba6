"""The ONNX converters written ahead for the layers and options of the layer-coverage issue
(grouped / dilated / reflect-padded convolution, ConvTranspose2d, pooling options, global pools,
activations, softmax, padding layers), checked now against ONNX Runtime.

Where fastconv lacks the class or the option, the case runs with a stand-in: a fastconv Module of
the same name with PyTorch's constructor, attributes and state-dict keys, computing with PyTorch.
Once fastconv has the real layer (and its constructor takes the case's arguments) the same case
runs with it, so these become the real layers' export and import tests without an edit.
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

import inspect
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import fastconv as fc
import fastconv.onnx as fo

from helpers import rel_error

TOL = 1e-5


def stand_in(name):
    """A fastconv Module class called ``name`` that wraps ``torch.nn.<name>``."""
    torch_cls = getattr(nn, name)

    class StandIn(fc.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()
            kwargs.pop("rng", None)  # fastconv's seed argument; PyTorch has none
            self._torch = module = torch_cls(*args, **kwargs).eval()
            self._param_names = tuple(n for n, _ in module.named_parameters(recurse=False))
            for n, p in module.named_parameters(recurse=False):
                setattr(self, n, fc.Parameter(p.detach().numpy()))  # shares PyTorch's memory
            if "bias" in module._parameters and module.bias is None:
                self.bias = None

        def __getattr__(self, attr):  # PyTorch's attribute names: dilation, groups, negative_slope, ...
            module = self.__dict__.get("_torch")
            if module is None or attr.startswith("_"):
                raise AttributeError(attr)
            return getattr(module, attr)

        def forward(self, x):
            with torch.no_grad():
                return self._torch(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

        def output_shape(self, shape):
            with torch.no_grad():
                return tuple(self._torch(torch.zeros(shape)).shape)

        def _label(self):
            return repr(self._torch)

    StandIn.__name__ = StandIn.__qualname__ = name
    StandIn.__signature__ = inspect.signature(torch_cls)
    return StandIn


def layer_class(monkeypatch, name, kwargs):
    """fastconv's ``name`` when it exists and takes ``kwargs``, else a stand-in put in its place."""
    cls = getattr(fc, name, None)
    if isinstance(cls, type) and set(kwargs) <= set(inspect.signature(cls).parameters):
        return cls
    cls = stand_in(name)
    monkeypatch.setattr(fc, name, cls, raising=False)
    return cls


CASES = {  # id: (class name, constructor kwargs, one sample's shape, opset)
    "conv_groups_dilation": ("Conv2d", dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, dilation=2,
                                            padding=2), (4, 9, 8), 17),
    "conv_depthwise": ("Conv2d", dict(in_channels=3, out_channels=6, kernel_size=3, groups=3), (3, 7, 7), 17),
    "conv_dilated_same": ("Conv2d", dict(in_channels=2, out_channels=3, kernel_size=4, dilation=2, padding="same"),
                          (2, 9, 9), 17),
    "conv_reflect": ("Conv2d", dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
                     (3, 6, 7), 17),
    "conv_replicate": ("Conv2d", dict(in_channels=3, out_channels=4, kernel_size=3, padding=(2, 1),
                                      padding_mode="replicate"), (3, 6, 7), 17),
    "conv_circular": ("Conv2d", dict(in_channels=3, out_channels=4, kernel_size=3, padding=1,
                                     padding_mode="circular"), (3, 6, 7), 19),
    "conv_transpose": ("ConvTranspose2d", dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1,
                                               output_padding=1), (3, 5, 6), 17),
    "conv_transpose_groups": ("ConvTranspose2d", dict(in_channels=4, out_channels=6, kernel_size=2, groups=2,
                                                      dilation=2, bias=False), (4, 5, 5), 17),
    "maxpool_padding": ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1), (2, 9, 8), 17),
    "maxpool_ceil": ("MaxPool2d", dict(kernel_size=2, ceil_mode=True), (2, 7, 9), 17),
    "maxpool_dilation": ("MaxPool2d", dict(kernel_size=3, stride=1, dilation=2), (2, 9, 8), 17),
    "avgpool_padding": ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1), (2, 9, 8), 17),
    "avgpool_exclude_pad": ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                            (2, 9, 8), 17),
    "avgpool_ceil": ("AvgPool2d", dict(kernel_size=2, ceil_mode=True), (2, 7, 9), 17),
    "adaptive_avg": ("AdaptiveAvgPool2d", dict(output_size=1), (3, 5, 6), 17),
    "adaptive_max": ("AdaptiveMaxPool2d", dict(output_size=(1, 1)), (3, 5, 6), 17),
    "leaky_relu": ("LeakyReLU", dict(negative_slope=0.2), (3, 4, 5), 17),
    "elu": ("ELU", dict(alpha=0.7), (3, 4, 5), 17),
    "selu": ("SELU", {}, (3, 4, 5), 17),
    "gelu": ("GELU", {}, (3, 4, 5), 20),
    "gelu_tanh": ("GELU", dict(approximate="tanh"), (6,), 20),
    "silu": ("SiLU", {}, (3, 4, 5), 24),
    "hardtanh": ("Hardtanh", dict(min_val=-0.5, max_val=2.0), (3, 4, 5), 17),
    "softmax": ("Softmax", dict(dim=1), (6,), 17),
    "softmax_channels": ("Softmax", dict(dim=1), (3, 4, 5), 17),
    "log_softmax": ("LogSoftmax", dict(dim=-1), (6,), 17),
    "identity": ("Identity", {}, (3, 4), 17),
    "prelu_channels": ("PReLU", dict(num_parameters=3), (3, 4, 5), 17),
    "prelu_one": ("PReLU", {}, (6,), 17),
    "zero_pad": ("ZeroPad2d", dict(padding=(1, 2, 0, 3)), (2, 4, 5), 17),
    "constant_pad": ("ConstantPad2d", dict(padding=2, value=0.5), (2, 4, 5), 17),
    "reflection_pad": ("ReflectionPad2d", dict(padding=(1, 1, 2, 0)), (2, 4, 5), 17),
    "replication_pad": ("ReplicationPad2d", dict(padding=1), (2, 4, 5), 17),
    "circular_pad": ("CircularPad2d", dict(padding=(2, 1, 1, 2)), (2, 4, 5), 19),
}


def randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    model.load_state_dict({k: rng.uniform(-0.5, 0.5, v.shape) for k, v in model.state_dict().items()})
    return model


@pytest.mark.parametrize("case", sorted(CASES))
def test_coming_layer_exports_to_onnxruntime_and_imports_back(case, monkeypatch):
    name, kwargs, sample, opset = CASES[case]
    cls = layer_class(monkeypatch, name, kwargs)
    model = randomise(fc.Sequential(cls(**kwargs))).eval()
    proto = fo.to_onnx(model, (1,) + sample, opset=opset)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    back = fo.load(proto)
    assert [type(m).__name__ for m in back] in ([name], [])  # Identity imports as nothing
    rng = np.random.default_rng(1)
    for n in (1, 3):
        x = rng.standard_normal((n,) + sample).astype(np.float32)
        want = model.forward(x)
        assert rel_error(session.run(None, {"input": x})[0], want) < TOL, case
        assert rel_error(back.forward(x), want) < TOL, case


def test_settings_onnx_cannot_express_are_reported(monkeypatch):
    conv = layer_class(monkeypatch, "Conv2d", dict(padding_mode="circular"))
    model = fc.Sequential(conv(3, 4, 3, padding=1, padding_mode="circular")).eval()
    with pytest.raises(ValueError, match=r"layer 0 .*circular padding needs opset >= 19"):
        fo.to_onnx(model, (1, 3, 6, 6), opset=17)
    gelu = layer_class(monkeypatch, "GELU", {})
    with pytest.raises(ValueError, match="GELU needs opset >= 20"):
        fo.to_onnx(fc.Sequential(gelu()).eval(), (1, 4), opset=17)
    pool = layer_class(monkeypatch, "AvgPool2d", dict(divisor_override=3))
    with pytest.raises(ValueError, match="divisor_override"):
        fo.to_onnx(fc.Sequential(pool(2, divisor_override=3)).eval(), (1, 2, 4, 4))
    adaptive = layer_class(monkeypatch, "AdaptiveAvgPool2d", {})
    with pytest.raises(ValueError, match=r"output_size \(2, 2\): only 1"):
        fo.to_onnx(fc.Sequential(adaptive((2, 2))).eval(), (1, 2, 4, 4))


def test_silu_before_opset_24_runs_in_onnxruntime(monkeypatch):
    silu = layer_class(monkeypatch, "SiLU", {})
    model = fc.Sequential(silu()).eval()
    proto = fo.to_onnx(model, (1, 5), opset=17)
    assert [n.op_type for n in proto.graph.node][:2] == ["Sigmoid", "Mul"]
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert rel_error(got[0], model.forward(x)) < TOL


def test_a_torch_export_with_coming_layers_imports(monkeypatch, tmp_path):
    for name, kwargs in (("Conv2d", dict(padding_mode="reflect")), ("LeakyReLU", {}), ("AdaptiveAvgPool2d", {}),
                         ("Softmax", {})):
        layer_class(monkeypatch, name, kwargs)
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
