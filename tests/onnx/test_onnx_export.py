"""fastconv.onnx export: every layer, layer option and example architecture runs in ONNX Runtime as
in fastconv, and the round trip fastconv -> ONNX -> fastconv gives the same layers and outputs.

Every exported model runs in ONNX Runtime (CPU provider) on the same random batch as fastconv,
at batch sizes 1 and 33 from one file with a dynamic batch axis; the largest relative error
(``max|ort - fastconv| / max|fastconv|``) must stay under 1e-5 in float32. (Errors, the importer's
rules, the command line and real MNIST: test_onnx_import.py.)
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import runpy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastconv as fc
import fastconv.onnx as fo
from fastconv.onnx import importers

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import HYPOTHESIS, rel_error

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = runpy.run_path(str(ROOT / "examples" / "train_mnist.py"))
ARCHS = ("tutorial", "lenet", "best")
TOL = 1e-5


def randomise_statistics(model, seed=0):
    """Give every BatchNorm non-trivial weights and running statistics (fresh ones are 1, 0, 0, 1)."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, (fc.BatchNorm1d, fc.BatchNorm2d, fc.GroupNorm, fc.LayerNorm)):
            state = m.state_dict()  # the variants (affine=False, ...) have fewer entries
            fill = {"weight": lambda s: rng.uniform(0.5, 1.5, s), "bias": lambda s: rng.normal(0, 0.3, s),
                    "running_mean": lambda s: rng.normal(0, 0.5, s), "running_var": lambda s: rng.uniform(0.5, 2, s),
                    "num_batches_tracked": lambda s: np.array(7)}
            m.load_state_dict({k: fill[k](v.shape) for k, v in state.items()})
    return model


def session(proto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def ort_vs_fastconv(model, sample_shape, batches=(1, 33), seed=0):
    """Export ``model`` once (dynamic batch) and return the largest relative error over ``batches``."""
    model.eval()
    proto = fo.to_onnx(model, (1,) + tuple(sample_shape))
    sess = session(proto)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for n in batches:
        x = rng.standard_normal((n,) + tuple(sample_shape)).astype(np.float32)
        got = sess.run(None, {"input": x})[0]
        want = fc.to_numpy(model.forward(x))
        assert got.shape == want.shape
        worst = max(worst, rel_error(got, want))
    return worst, proto


LAYERS = {
    "conv": (lambda: fc.Conv2d(3, 4, 3), (3, 9, 8)),
    "conv_stride_pad": (lambda: fc.Conv2d(3, 5, 3, stride=2, padding=1), (3, 9, 8)),
    "conv_rect": (lambda: fc.Conv2d(2, 3, (3, 5), stride=(2, 1), padding=(1, 2), bias=False), (2, 9, 8)),
    "conv_same_even": (lambda: fc.Conv2d(2, 3, 4, padding="same"), (2, 7, 6)),
    "conv_valid": (lambda: fc.Conv2d(2, 3, 2, padding="valid"), (2, 5, 5)),
    "conv_groups_dilation": (lambda: fc.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2), (4, 9, 8)),
    "conv_depthwise": (lambda: fc.Conv2d(3, 6, 3, padding=1, groups=3), (3, 7, 6)),
    "conv_reflect": (lambda: fc.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 7, 6)),
    "conv_replicate": (lambda: fc.Conv2d(2, 3, 3, padding=(1, 2), padding_mode="replicate"), (2, 7, 6)),
    "conv_transpose": (lambda: fc.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), (3, 5, 4)),
    "zero_pad": (lambda: fc.ZeroPad2d((1, 2, 0, 3)), (2, 4, 5)),
    "constant_pad": (lambda: fc.ConstantPad2d(1, 0.5), (2, 4, 5)),
    "reflection_pad": (lambda: fc.ReflectionPad2d((1, 2, 2, 1)), (2, 4, 5)),
    "replication_pad": (lambda: fc.ReplicationPad2d(2), (2, 4, 5)),
    "linear": (lambda: fc.Linear(7, 5), (7,)),
    "linear_no_bias": (lambda: fc.Linear(7, 5, bias=False), (7,)),
    "maxpool": (lambda: fc.MaxPool2d(2), (3, 8, 9)),
    "maxpool_overlap": (lambda: fc.MaxPool2d(3, 2), (3, 9, 8)),
    "maxpool_rect": (lambda: fc.MaxPool2d((2, 3), (1, 2)), (2, 7, 9)),
    "avgpool": (lambda: fc.AvgPool2d(2), (3, 8, 9)),
    "avgpool_overlap": (lambda: fc.AvgPool2d(3, 2), (3, 9, 8)),
    "maxpool_options": (lambda: fc.MaxPool2d(3, 2, padding=1, dilation=1, ceil_mode=True), (3, 9, 8)),
    "maxpool_dilated": (lambda: fc.MaxPool2d(2, 1, dilation=2), (2, 7, 9)),
    "avgpool_options": (lambda: fc.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False),
                        (3, 9, 8)),
    "avgpool_pad_counted": (lambda: fc.AvgPool2d(3, 2, padding=1), (3, 9, 8)),
    "global_avgpool": (lambda: fc.AdaptiveAvgPool2d(1), (3, 5, 4)),
    "global_maxpool": (lambda: fc.AdaptiveMaxPool2d((1, 1)), (3, 5, 4)),
    "relu": (lambda: fc.ReLU(), (3, 4, 5)),
    "leaky_relu": (lambda: fc.LeakyReLU(0.2), (3, 4, 5)),
    "elu": (lambda: fc.ELU(0.7), (3, 4, 5)),
    "selu": (lambda: fc.SELU(), (3, 4, 5)),
    "silu": (lambda: fc.SiLU(), (3, 4, 5)),
    "hardtanh": (lambda: fc.Hardtanh(-0.5, 0.75), (3, 4, 5)),
    "prelu": (lambda: fc.PReLU(3, 0.1), (3, 4, 5)),
    "softmax": (lambda: fc.Softmax(dim=1), (7,)),
    "log_softmax": (lambda: fc.LogSoftmax(dim=1), (3, 4, 5)),
    "identity": (lambda: fc.Identity(), (3, 4, 5)),
    "sigmoid": (lambda: fc.Sigmoid(), (3, 4, 5)),
    "tanh": (lambda: fc.Tanh(), (6,)),
    "flatten": (lambda: fc.Flatten(), (3, 4, 5)),
    "flatten_inner": (lambda: fc.Flatten(2, 3), (3, 4, 5)),
    "flatten_middle": (lambda: fc.Flatten(1, 2), (3, 4, 5)),
    "dropout": (lambda: fc.Dropout(0.3), (3, 4, 5)),
    "batchnorm2d": (lambda: fc.BatchNorm2d(3, eps=1e-3), (3, 4, 5)),
    "batchnorm1d": (lambda: fc.BatchNorm1d(6), (6,)),
    "batchnorm1d_3d": (lambda: fc.BatchNorm1d(4), (4, 5)),
    "batchnorm2d_no_affine": (lambda: fc.BatchNorm2d(3, affine=False), (3, 4, 5)),
    "batchnorm2d_no_bias": (lambda: fc.BatchNorm2d(3, bias=False), (3, 4, 5)),
    "batchnorm2d_batch_stats": (lambda: fc.BatchNorm2d(3, track_running_stats=False), (3, 4, 5)),
    "batchnorm1d_batch_stats": (lambda: fc.BatchNorm1d(4, affine=False, track_running_stats=False), (4, 5)),
    "group_norm": (lambda: fc.GroupNorm(2, 4), (4, 5, 3)),
    "group_norm_no_affine": (lambda: fc.GroupNorm(4, 4, affine=False), (4, 5, 3)),
    "layer_norm": (lambda: fc.LayerNorm((5, 3)), (4, 5, 3)),
    "layer_norm_no_bias": (lambda: fc.LayerNorm(6, bias=False), (6,)),
    "softplus": (lambda: fc.Softplus(), (3, 4, 5)),
    "softplus_beta": (lambda: fc.Softplus(beta=2.5, threshold=30.0), (3, 4, 5)),
    "dropout2d": (lambda: fc.Dropout2d(0.3), (3, 4, 5)),
    "residual": (lambda: fc.Residual(fc.Sequential(fc.Conv2d(3, 3, 3, padding=1), fc.BatchNorm2d(3), fc.ReLU())),
                 (3, 6, 5)),
    "residual_projection": (lambda: fc.Residual(fc.Sequential(fc.Conv2d(3, 4, 3, stride=2, padding=1)),
                                                fc.Sequential(fc.Conv2d(3, 4, 1, stride=2), fc.BatchNorm2d(4))),
                            (3, 7, 6)),
    "concat": (lambda: fc.Concat(fc.Identity(), fc.Sequential(fc.Conv2d(3, 2, 1), fc.ReLU()),
                                 fc.MaxPool2d(3, 1, padding=1)), (3, 6, 5)),
    "concat_features": (lambda: fc.Concat(fc.Linear(6, 2), fc.Sequential(fc.Linear(6, 3), fc.Tanh()), dim=-1),
                        (6,)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_every_layer_runs_in_onnxruntime_as_in_fastconv(name):
    build, sample = LAYERS[name]
    fc.manual_seed(1)
    model = randomise_statistics(fc.Sequential(build()))
    err, proto = ort_vs_fastconv(model, sample)
    assert err < TOL, (name, err)
    # initialisers carry the weights under the state-dict keys
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for key, value in model.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(init[key].reshape(value.shape), value)  # PReLU: (C, 1, 1)


def test_circular_padding_needs_opset_19_and_then_runs_in_onnxruntime():
    fc.manual_seed(1)
    model = fc.Sequential(fc.CircularPad2d((1, 2, 2, 1)), fc.Conv2d(2, 3, 3, padding=1, padding_mode="circular")).eval()
    with pytest.raises(ValueError, match="19"):
        fo.to_onnx(model, (1, 2, 5, 6))
    sess = session(fo.to_onnx(model, (1, 2, 5, 6), opset=19))
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 6)).astype(np.float32)
    assert rel_error(sess.run(None, {"input": x})[0], model.forward(x)) < TOL


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_needs_opset_20_and_then_runs_in_onnxruntime(approximate):
    model = fc.Sequential(fc.GELU(approximate=approximate)).eval()
    with pytest.raises(ValueError, match="20"):
        fo.to_onnx(model, (1, 3, 4, 5))
    sess = session(fo.to_onnx(model, (1, 3, 4, 5), opset=20))
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    assert rel_error(sess.run(None, {"input": x})[0], model.forward(x)) < TOL


def test_settings_onnx_cannot_express_are_reported():
    model = fc.Sequential(fc.Conv2d(3, 4, 3, padding=1, padding_mode="circular")).eval()
    with pytest.raises(ValueError, match=r"layer 0 .*circular padding needs opset >= 19"):
        fo.to_onnx(model, (1, 3, 6, 6), opset=17)
    with pytest.raises(ValueError, match="GELU needs opset >= 20"):
        fo.to_onnx(fc.Sequential(fc.GELU()).eval(), (1, 4), opset=17)
    with pytest.raises(ValueError, match="divisor_override"):
        fo.to_onnx(fc.Sequential(fc.AvgPool2d(2, divisor_override=3)).eval(), (1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"output_size \(2, 2\): only 1"):
        fo.to_onnx(fc.Sequential(fc.AdaptiveAvgPool2d((2, 2))).eval(), (1, 2, 4, 4))


def test_silu_before_opset_24_runs_in_onnxruntime():
    model = fc.Sequential(fc.SiLU()).eval()
    proto = fo.to_onnx(model, (1, 5), opset=17)
    assert [n.op_type for n in proto.graph.node][:2] == ["Sigmoid", "Mul"]
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert rel_error(got[0], model.forward(x)) < TOL


def test_every_exportable_layer_is_exercised():
    tested = {type(build()).__name__ for build, _ in LAYERS.values()} | {"Sequential", "CircularPad2d", "GELU"}
    assert set(fo.exportable_layers()) <= tested


@pytest.mark.parametrize("arch", ARCHS)
def test_example_architectures_run_in_onnxruntime_as_in_fastconv(arch):
    fc.manual_seed(0)
    model = randomise_statistics(EXAMPLES[arch]())
    err, proto = ort_vs_fastconv(model, (1, 28, 28))
    assert err < TOL, (arch, err)
    onnx.checker.check_model(proto, full_check=True)
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim][:1] == ["N"]


@pytest.mark.parametrize("arch", ["resnet", "mobilenet"])
def test_residual_and_depthwise_architectures_run_in_onnxruntime_and_round_trip(arch):
    """The full-width example models, built from ARCHS: batch 1 and 33 in ONNX Runtime, and the
    import rebuilds the same Residual blocks, keys and outputs."""
    fc.manual_seed(0)
    model = randomise_statistics(EXAMPLES["ARCHS"][arch]["build"]())
    err, proto = ort_vs_fastconv(model, (1, 28, 28))
    assert err < TOL, (arch, err)
    ops = {n.op_type for n in proto.graph.node}
    assert ("Add" in ops) == (arch == "resnet")
    back = fo.load(proto)
    assert repr(back) == repr(model)
    assert back.state_dict().keys() == model.state_dict().keys()
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(x), model.forward(x))


def test_nested_blocks_round_trip():
    """Residual inside Concat inside Residual, an identity branch and a Concat of the input; a
    branch of one layer comes back as that layer, of several as a Sequential."""
    fc.manual_seed(4)
    inner = fc.Residual(fc.Sequential(fc.Conv2d(2, 2, 3, padding=1), fc.ReLU()))
    model = randomise_statistics(fc.Sequential(
        fc.Conv2d(1, 2, 1),
        fc.Residual(fc.Sequential(fc.Concat(inner, fc.Identity(), fc.Conv2d(2, 2, 1)), fc.Conv2d(6, 2, 1)),
                    fc.BatchNorm2d(2)),
        fc.Concat(fc.Identity(), fc.MaxPool2d(3, 1, padding=1)), fc.Flatten(), fc.Linear(4 * 5 * 5, 3)))
    err, proto = ort_vs_fastconv(model, (1, 5, 5))
    assert err < TOL
    back = fo.load(proto)
    x = np.random.default_rng(2).standard_normal((4, 1, 5, 5)).astype(np.float32)
    assert rel_error(back.forward(x), model.forward(x)) < TOL
    assert back.state_dict().keys() == model.state_dict().keys()


@settings(HYPOTHESIS, max_examples=15)
@given(c_in=st.integers(1, 3), c_out=st.integers(1, 3), stride=st.integers(1, 2), size=st.integers(3, 6),
       widths=st.lists(st.integers(1, 3), min_size=2, max_size=3), identity=st.booleans(), seed=st.integers(0, 9))
def test_random_residual_and_concat_blocks_run_in_onnxruntime_and_round_trip(c_in, c_out, stride, size, widths,
                                                                            identity, seed):
    fc.manual_seed(seed)
    project = stride != 1 or c_in != c_out
    body = fc.Sequential(fc.Conv2d(c_in, c_out, 3, stride=stride, padding=1), fc.ReLU(), fc.Conv2d(c_out, c_out, 1))
    shortcut = fc.Sequential(fc.Conv2d(c_in, c_out, 1, stride=stride), fc.BatchNorm2d(c_out)) if project else None
    branches = [fc.Sequential(fc.Conv2d(c_out, w, 1), fc.Tanh()) for w in widths] + [fc.Identity()] * identity
    model = randomise_statistics(fc.Sequential(fc.Residual(body, shortcut), fc.Concat(*branches)))
    sample = (c_in, size, size)
    err, proto = ort_vs_fastconv(model, sample, batches=(1, 3), seed=seed)
    assert err < TOL
    back = fo.load(proto)
    assert back.state_dict().keys() == model.state_dict().keys()
    x = np.random.default_rng(seed).standard_normal((2,) + sample).astype(np.float32)
    np.testing.assert_array_equal(back.forward(x), model.forward(x))


def test_softplus_with_a_threshold_onnx_cannot_honour_is_refused():
    with pytest.raises(ValueError, match=r"layer 0 \(.*threshold=5.0 .*threshold >= 15"):
        fo.to_onnx(fc.Sequential(fc.Softplus(threshold=5.0)).eval(), (1, 4))


def test_group_normalization_of_opset_21_imports_as_a_group_norm():
    rng = np.random.default_rng(0)
    scale, bias = rng.uniform(0.5, 1.5, 6).astype(np.float32), rng.normal(0, 0.3, 6).astype(np.float32)
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], name="gn", num_groups=3, epsilon=1e-3)
    graph = helper.make_graph([node], "gn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 4, 5])],
                              initializer=[numpy_helper.from_array(scale, "s"), numpy_helper.from_array(bias, "b")])
    back = fo.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    want = fc.GroupNorm(3, 6, eps=1e-3)
    want.load_state_dict({"weight": scale, "bias": bias})
    assert repr(back[0]) == repr(want)
    x = rng.standard_normal((2, 6, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(x), want.eval().forward(x))


def _dag(nodes, inits=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", "C", "H", "W"])
    graph = helper.make_graph(nodes, "dag", [x], [y], initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_dags_that_are_no_nest_of_blocks_get_one_error_before_anything_is_built(monkeypatch):
    built = []
    monkeypatch.setattr(importers.Spec, "build", lambda self: built.append(self.cls))
    relu = lambda i, o: helper.make_node("Relu", [i], [o], name=f"relu_{o}")  # noqa: E731
    cases = {
        # a = f(x); c = a + g(x); y = c + a: f feeds both sides of the second join
        "feeds branches": [relu("x", "a"), relu("x", "b"), helper.make_node("Add", ["a", "b"], ["c"], name="j1"),
                           helper.make_node("Add", ["c", "a"], ["y"], name="j2")],
        "to itself": [relu("x", "a"), helper.make_node("Add", ["a", "a"], ["y"], name="double")],
        "batch axis": [relu("x", "a"), helper.make_node("Concat", ["x", "a"], ["y"], name="cat0", axis=0)],
        "with constants": [helper.make_node("Concat", ["x", "k"], ["y"], name="catk", axis=1)],
        "Mul": [relu("x", "a"), helper.make_node("Mul", ["x", "a"], ["y"], name="gate")],
        # the bias Add would complete the Linear that the other branch reads without it
        "other nodes read too": [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
                                 helper.make_node("MatMul", ["f", "w"], ["m"], name="mm"),
                                 helper.make_node("Add", ["m", "b"], ["mb"], name="bias"),
                                 helper.make_node("Add", ["mb", "m"], ["y"], name="res")],
    }
    k = numpy_helper.from_array(np.zeros((1, 2, 4, 4), np.float32), "k")
    wb = [numpy_helper.from_array(np.ones((32, 5), np.float32), "w"), numpy_helper.from_array(np.ones(5, np.float32), "b")]
    for what, nodes in cases.items():
        with pytest.raises(ValueError, match="cannot import") as info:
            fo.load(_dag(nodes, [k] if what == "with constants" else wb if what == "other nodes read too" else []))
        assert what in str(info.value) and "(1 problem)" in str(info.value), str(info.value)
    assert built == []


def test_nested_sequential_exports_with_nested_keys():
    fc.manual_seed(2)
    model = fc.Sequential(fc.Sequential(fc.Conv2d(1, 2, 3), fc.ReLU()), fc.Flatten(), fc.Linear(2 * 4 * 4, 3))
    err, proto = ort_vs_fastconv(model, (1, 6, 6))
    assert err < TOL
    assert {t.name for t in proto.graph.initializer} == {"0.0.weight", "0.0.bias", "2.weight", "2.bias"}


def test_a_model_in_training_mode_is_exported_in_eval_form_and_left_in_training_mode():
    fc.manual_seed(0)
    model = randomise_statistics(EXAMPLES["best"]())
    model.train()
    with pytest.warns(UserWarning, match="training mode.*exported as in eval mode"):
        proto = fo.to_onnx(model, (1, 1, 28, 28))
    assert all(m.training for m in model.modules())
    x = np.random.default_rng(3).standard_normal((4, 1, 28, 28)).astype(np.float32)
    got = session(proto).run(None, {"input": x})[0]
    assert rel_error(got, model.predict(x)) < TOL  # predict runs in eval mode


@pytest.mark.parametrize("opset", [fo.EXPORT_OPSETS.start, 17, fo.EXPORT_OPSETS.stop - 1])
def test_every_supported_opset_runs(opset):
    fc.manual_seed(0)
    model = randomise_statistics(EXAMPLES["best"]()).eval()
    proto = fo.to_onnx(model, (1, 1, 28, 28), opset=opset)
    assert proto.opset_import[0].version == opset
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert rel_error(session(proto).run(None, {"input": x})[0], model.forward(x)) < TOL


def test_static_batch_fixes_the_batch_axis():
    fc.manual_seed(0)
    model = EXAMPLES["tutorial"]().eval()
    proto = fo.to_onnx(model, (5, 1, 28, 28), dynamic_batch=False)
    dims = [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim]
    assert dims == [5, 10]
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    assert rel_error(session(proto).run(None, {"input": x})[0], model.forward(x)) < TOL
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session(proto).run(None, {"input": x[:2]})


def test_float64_models_export_in_float64():
    fc.manual_seed(0)
    model = fc.Sequential(fc.Linear(6, 4), fc.Tanh(), fc.BatchNorm1d(4), fc.Linear(4, 3)).to(np.float64)
    randomise_statistics(model).eval()
    proto = fo.to_onnx(model, (1, 6))
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    assert {t.data_type for t in proto.graph.initializer if t.name.endswith("weight")} == {TensorProto.DOUBLE}
    x = np.random.default_rng(0).standard_normal((9, 6))
    assert rel_error(session(proto).run(None, {"input": x})[0], model.forward(x)) < 1e-12
    back = fo.load(proto)  # an import is float32
    assert back[0].weight.dtype == np.float32
    assert rel_error(back.forward(x.astype(np.float32)), model.forward(x)) < TOL


# --- layer options: exported at their opset and imported back ----------------------------------

#: Layer options, each exported at its opset to ONNX Runtime and imported back: id -> (class name,
#: constructor kwargs, one sample's shape, opset).
LAYER_OPTIONS = {
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


@pytest.mark.parametrize("case", sorted(LAYER_OPTIONS))
def test_layer_option_exports_to_onnxruntime_and_imports_back(case):
    name, kwargs, sample, opset = LAYER_OPTIONS[case]
    model = randomise(fc.Sequential(getattr(fc, name)(**kwargs))).eval()
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


# --- the round trip fastconv -> ONNX -> fastconv ---------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_gives_the_same_layers_weights_and_outputs(arch, tmp_path):
    fc.manual_seed(0)
    model = randomise_statistics(EXAMPLES[arch]()).eval()
    path = fo.export(model, tmp_path / f"{arch}.onnx", (1, 1, 28, 28))
    back = fo.load(path)
    assert [type(m).__name__ for m in back] == [type(m).__name__ for m in model]
    assert repr(back) == repr(model)  # every hyperparameter, eps and momentum included
    state, want = back.state_dict(), model.state_dict()
    assert state.keys() == want.keys()
    for key in want:
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(state[key], want[key])
    assert not any(m.training for m in back.modules())
    x = np.random.default_rng(1).standard_normal((33, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(back.forward(x), model.forward(x))


#: Exports whose ONNX pattern the importer does not read back (batch statistics as ReduceMean
#: arithmetic).
NOT_IMPORTED = {"batchnorm2d_batch_stats", "batchnorm1d_batch_stats"}


def test_round_trip_of_every_layer():
    for name, (build, sample) in sorted(LAYERS.items()):
        if name in NOT_IMPORTED:
            with pytest.raises(ValueError, match="cannot import"):
                fo.load(fo.to_onnx(fc.Sequential(build()).eval(), (1,) + sample))
            continue
        fc.manual_seed(3)
        model = randomise_statistics(fc.Sequential(build())).eval()
        # SiLU is Sigmoid * Mul before opset 24 (an import pattern not supported); Swish from 24
        back = fo.load(fo.to_onnx(model, (1,) + sample, opset=24 if name == "silu" else 17))
        x = np.random.default_rng(0).standard_normal((4,) + sample).astype(np.float32)
        assert rel_error(back.forward(x), model.forward(x)) < TOL, name


def test_importable_ops_cover_the_exported_ones():
    fc.manual_seed(0)
    ops = set()
    for arch in ARCHS + ("resnet", "mobilenet"):
        ops |= {n.op_type for n in fo.to_onnx(EXAMPLES[arch]().eval(), (1, 1, 28, 28)).graph.node}
    for name, (build, sample) in LAYERS.items():
        if name not in NOT_IMPORTED:
            ops |= {n.op_type for n in fo.to_onnx(fc.Sequential(build()).eval(), (1,) + sample).graph.node}
    assert ops <= set(fo.importable_ops())
    assert {"Conv", "Gemm", "MatMul", "Reshape", "Shape", "Gather", "Unsqueeze", "Concat", "Add",
            "InstanceNormalization", "GroupNormalization", "LayerNormalization", "Softplus"} <= set(fo.importable_ops())
