"""fastconv.onnx files: export errors and atomic writes, import errors, the importer's rules
(Gemm, Reshape), the command line, and a LeNet trained on real MNIST scoring the same in ONNX
Runtime. (Exports of every layer and the round trip: test_onnx_export.py.)
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import fastconv as fc
import fastconv.onnx as fo
from fastconv.datasets import load_mnist, normalize
from fastconv.onnx import __main__ as cli
from fastconv.onnx import importers

from helpers import MNIST_DIR as DATA, rel_error
from test_onnx_export import EXAMPLES, ROOT, TOL, session


# --- export errors and the file ----------------------------------------------------------------

class Custom(fc.Module):
    def forward(self, x):
        return x


def test_export_lists_every_unsupported_layer_and_writes_nothing(tmp_path):
    model = fc.Sequential(fc.Conv2d(1, 2, 3), Custom(), fc.ReLU(), fc.Sequential(Custom())).eval()
    path = tmp_path / "m.onnx"
    with pytest.raises(ValueError, match=r"layer 1 .*no ONNX exporter for Custom.*layer 3\.0 .*Custom"):
        fo.export(model, path, (1, 1, 5, 5))
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"previous")
    with pytest.raises(ValueError):
        fo.export(model, path, (1, 1, 5, 5))
    assert path.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [path]


def test_export_replaces_a_file_atomically(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    fo.export(fc.Sequential(fc.Linear(3, 2)).eval(), path, (1, 3))
    assert onnx.load(str(path)).graph.initializer[0].name == "0.weight"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert list(tmp_path.iterdir()) == [path]


def test_export_argument_errors():
    model = fc.Sequential(fc.Conv2d(1, 2, 3), fc.Flatten(), fc.Linear(18, 2)).eval()
    with pytest.raises(ValueError, match=r"Conv2d.*expects input \(N, 1, H, W\)"):
        fo.to_onnx(model, (1, 3, 5, 5))
    with pytest.raises(ValueError, match="Linear.*18 input features"):
        fo.to_onnx(model, (1, 1, 6, 6))
    with pytest.raises(ValueError, match="opset must be an int in 13"):
        fo.to_onnx(model, (1, 1, 5, 5), opset=12)
    with pytest.raises(ValueError, match="input_shape must be positive"):
        fo.to_onnx(model, (0, 1, 5, 5))
    with pytest.raises(TypeError, match="input_shape must be a sequence"):
        fo.to_onnx(model, 5)
    with pytest.raises(TypeError, match="fastconv Module"):
        fo.to_onnx(object(), (1, 1, 5, 5))
    mixed = fc.Sequential(fc.Linear(3, 2), fc.Linear(2, 2, dtype=np.float64)).eval()
    with pytest.raises(ValueError, match="mixes dtypes"):
        fo.to_onnx(mixed, (1, 3))


def test_import_fastconv_does_not_import_onnx():
    code = "import sys, fastconv; print('onnx' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_without_onnx_the_error_says_what_to_install():
    code = "import sys; sys.modules['onnx'] = None\nimport fastconv.onnx"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode != 0 and "pip install fastconv[onnx]" in out.stderr


# --- import errors -------------------------------------------------------------------------------

def small_file(tmp_path):
    fc.manual_seed(0)
    return fo.export(EXAMPLES["tutorial"]().eval(), tmp_path / "tutorial.onnx", (1, 1, 28, 28))


def test_a_truncated_file_is_named_truncated(tmp_path):
    data = Path(small_file(tmp_path)).read_bytes()
    for cut in (len(data) // 2, 30, len(data) - 1):
        bad = tmp_path / f"cut{cut}.onnx"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="is truncated"):
            fo.load(bad)


@pytest.mark.parametrize("content", [b"", b"hello, this is text\n", bytes(range(256)) * 4, b"\x89PNG\r\n\x1a\n"])
def test_a_file_that_is_not_onnx_says_so(tmp_path, content):
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is empty|is not an ONNX model"):
        fo.load(path)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fo.load(tmp_path / "missing.onnx")


def relu_model(opset, nodes=None, domain_opsets=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph(nodes or [helper.make_node("Relu", ["x"], ["y"], name="r")], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *domain_opsets])


@pytest.mark.parametrize("opset", [7, 10, 99])
def test_an_unsupported_opset_is_named(tmp_path, opset):
    path = tmp_path / "old.onnx"
    path.write_bytes(relu_model(opset).SerializeToString())
    with pytest.raises(ValueError, match=f"uses opset {opset}: fastconv imports opsets 11 to"):
        fo.load(path)


def test_an_invalid_model_is_reported_by_the_checker(tmp_path):
    bad = relu_model(17, [helper.make_node("Relu", ["nowhere"], ["y"], name="r")])
    with pytest.raises(ValueError, match="is not a valid ONNX model"):
        fo.load(bad)


def conv_graph():
    """A graph with one supported node and five problems, each on a named node."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal((5, 36)).astype(np.float32), "fc")]
    inits += [numpy_helper.from_array(np.ones(4, np.float32), name) for name in ("bn_s", "bn_b", "bn_m", "bn_v")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], name="good_conv", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2"], ["c2"], name="strided_same", auto_pad="SAME_UPPER",
                              strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c2", "bn_s", "bn_b", "bn_m", "bn_v"], ["r"], name="bn_training",
                              training_mode=1),
             helper.make_node("Sin", ["r"], ["s"], name="sine"),
             helper.make_node("Flatten", ["s"], ["f"], name="flat"),
             helper.make_node("Gemm", ["fc", "f"], ["g"], name="gemm_a_const", transB=1),
             helper.make_node("Add", ["g", "g"], ["y"], name="residual")]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])
    graph = helper.make_graph(nodes, "problems", [x], [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_every_unsupported_node_is_listed_before_anything_is_built(monkeypatch):
    built = []
    monkeypatch.setattr(importers.Spec, "build", lambda self: built.append(self.cls))
    with pytest.raises(ValueError) as info:
        fo.load(conv_graph())
    msg = str(info.value)
    assert "(4 problems)" in msg, msg  # the Add reads the failed Gemm's output: not reported again
    assert "node 'strided_same' (Conv): auto_pad=SAME_UPPER with stride (2, 2)" in msg
    assert "node 'bn_training' (BatchNormalization): training_mode=1" in msg
    assert "node 'sine' (Sin): op Sin is not supported" in msg
    assert "node 'gemm_a_const' (Gemm): the runtime input must be A" in msg
    assert "residual" not in msg
    assert "good_conv" not in msg and "flat" not in msg
    assert built == []


def test_non_standard_domains_and_graph_shapes_are_reported():
    custom = relu_model(17, [helper.make_node("Gelu", ["x"], ["y"], name="ms", domain="com.microsoft")],
                        [helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(ValueError, match="node 'ms' .*com.microsoft.Gelu is not an ONNX standard operator"):
        fo.load(custom)
    a, b, y, z = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in "abyz")
    nodes = [helper.make_node("Relu", ["a"], ["y"]), helper.make_node("Relu", ["b"], ["z"])]
    two = helper.make_model(helper.make_graph(nodes, "g", [a, b], [y, z]), opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ValueError, match="2 run-time inputs.*2 outputs"):
        fo.load(two)
    uint8 = relu_model(17)
    uint8.graph.input[0].type.tensor_type.elem_type = TensorProto.UINT8
    uint8.graph.output[0].type.tensor_type.elem_type = TensorProto.UINT8
    with pytest.raises(ValueError, match="element type UINT8"):
        fo.load(uint8)


def gemm_model(weight, c, **attrs):
    inits = [numpy_helper.from_array(weight.astype(np.float32), "B")]
    if c is not None:
        inits.append(numpy_helper.from_array(c.astype(np.float32), "C"))
    node = helper.make_node("Gemm", ["x", "B"] + (["C"] if c is not None else []), ["y"], name="gemm", **attrs)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])
    graph = helper.make_graph([node], "g", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("trans_b, c_shape, alpha, beta", [
    (0, (4,), 1.0, 1.0), (1, (1, 4), 0.5, 2.0), (0, None, 2.0, 1.0), (1, (1,), 1.0, -1.0)])
def test_gemm_variants_fold_into_one_linear(trans_b, c_shape, alpha, beta):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 6) if trans_b else (6, 4))
    c = None if c_shape is None else rng.standard_normal(c_shape)
    proto = gemm_model(weight, c, transB=trans_b, alpha=alpha, beta=beta)
    model = fo.load(proto)
    assert [type(m).__name__ for m in model] == ["Linear"]
    x = rng.standard_normal((5, 6)).astype(np.float32)
    assert rel_error(model.forward(x), session(proto).run(None, {"x": x})[0]) < TOL


def test_a_gemm_bias_that_is_per_sample_is_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"C of shape \(5, 4\) does not broadcast as a bias"):
        fo.load(gemm_model(rng.standard_normal((4, 6)), rng.standard_normal((5, 4)), transB=1))


def test_reshapes_that_are_not_a_flatten_are_refused():
    shape = numpy_helper.from_array(np.array([-1, 3, 2], dtype=np.int64), "shape")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"], name="unflatten")], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 2])], initializer=[shape])
    want = r"node .unflatten. \(Reshape\): Reshape of a \(N, 6\) tensor to \[-1, 3, 2\] is not a flatten"
    with pytest.raises(ValueError, match=want):
        fo.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


# --- the command line ----------------------------------------------------------------------------

def test_cli_export_check_and_run(tmp_path, capsys):
    if not (DATA / "t10k-labels-idx1-ubyte.gz").exists() and not (DATA / "t10k-labels-idx1-ubyte").exists():
        pytest.skip(f"MNIST files not found in {DATA} (set FASTCONV_DATA)")
    fc.manual_seed(0)
    weights = tmp_path / "lenet.npz"
    model = EXAMPLES["lenet"]()
    model.save(weights)
    out = tmp_path / "lenet.onnx"
    arch = f"{ROOT / 'examples' / 'train_mnist.py'}:lenet"
    assert cli.main(["export", str(out), "--arch", arch, "--weights", str(weights)]) == 0
    assert "any batch size" in capsys.readouterr().out
    assert cli.main(["check", str(out)]) == 0
    text = capsys.readouterr().out
    assert "valid ONNX (IR 8, opset 17, producer fastconv" in text and "Linear(3136, 128)" in text
    accuracies = []
    for runtime in ("fastconv", "onnxruntime"):
        assert cli.main(["run", str(out), "--runtime", runtime, "--limit", "300", "--data-dir", str(DATA)]) == 0
        line = capsys.readouterr().out.strip()
        assert line.endswith(f"/300 MNIST test images, {runtime})"), line
        accuracies.append(line.split()[1])
    assert accuracies[0] == accuracies[1]
    (_, _), (x_test, y_test) = load_mnist(DATA, download=False)
    want = np.mean(model.predict(normalize(x_test[:300])).argmax(axis=1) == y_test[:300])
    assert accuracies[0] == f"{want:.4f}"


def test_cli_errors(tmp_path, capsys):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert cli.main(["check", str(junk)]) == 2
    assert "is not an ONNX model" in capsys.readouterr().err
    assert cli.main(["check", str(tmp_path / "none.onnx")]) == 2
    unsupported = tmp_path / "sin.onnx"
    unsupported.write_bytes(relu_model(17, [helper.make_node("Sin", ["x"], ["y"], name="s")]).SerializeToString())
    assert cli.main(["check", str(unsupported)]) == 1
    assert "node 's' (Sin): op Sin is not supported" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no function 'nope'"):
        cli.main(["export", str(tmp_path / "o.onnx"), "--arch", f"{ROOT / 'examples' / 'train_mnist.py'}:nope"])


# --- real data ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_lenet_trained_on_mnist_has_the_same_test_accuracy_in_onnxruntime(tmp_path):
    try:
        (x_train, y_train), (x_test, y_test) = load_mnist(DATA, download=False)
    except FileNotFoundError:
        pytest.skip(f"MNIST files not found in {DATA} (set FASTCONV_DATA)")
    fc.manual_seed(0)
    model = EXAMPLES["lenet"]()
    trainer = fc.Trainer(model, optimizer=fc.optim.Adam(model.parameters(), lr=1e-3))
    trainer.fit(normalize(x_train[:2000]), y_train[:2000], epochs=1, batch_size=32, seed=0, progress=False)
    x = normalize(x_test)
    fc_accuracy = trainer.evaluate(x, y_test)["accuracy"]
    path = fo.export(model.eval(), tmp_path / "lenet.onnx", (1, 1, 28, 28))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"input": x[i:i + 500]})[0] for i in range(0, len(x), 500)])
    ort_accuracy = np.mean(logits.argmax(axis=1) == y_test)
    assert fc_accuracy > 0.85
    assert f"{ort_accuracy:.4f}" == f"{fc_accuracy:.4f}"
    assert rel_error(logits, model.predict(x)) < TOL

