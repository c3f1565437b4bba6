"""fastconv.onnx with hostile or broken files and arguments (issue 21): external data stays in the
model's folder, tiny files cannot exhaust memory, axes are never wrapped, every error is a
ValueError naming the file, node or tensor, and the command line answers a bad argument with one
``error:`` line, no traceback, and nothing written.
"""
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, external_data_helper, helper, numpy_helper

import fastconv as fc
import fastconv.onnx as fo
from fastconv.onnx import __main__ as cli

from helpers import rel_error

W = (np.arange(18, dtype=np.float32).reshape(2, 1, 3, 3) - 9) / 10
SECRET = np.full(18, 7.0, np.float32)  # what a file outside the model's folder holds


def model_of(nodes, inits=(), x=("N", 1, 5, 5), y=("N", 2, 3, 3), opset=17):
    xi = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x))
    yi = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(y))
    graph = helper.make_graph(nodes, "g", [xi], [yi], initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def ort_agrees(proto, model, shape, seed=0):
    """``model`` computes what ONNX Runtime computes from ``proto`` (a ModelProto or a file)."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    source = str(proto) if isinstance(proto, Path) else proto.SerializeToString()
    sess = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return rel_error(model.forward(x), sess.run(None, {"x": x})[0]) < 1e-5


# --- 1. external data is read from the model's folder only -------------------------------------

def external_tensor(location, values=W, **info):
    t = numpy_helper.from_array(values.reshape(W.shape), "w")
    external_data_helper.set_external_data(t, location, **info)
    t.ClearField("raw_data")
    return t


def conv_with(t, in_constant):
    """Conv(x, w) with ``w`` a Constant node's tensor or an initializer."""
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    if in_constant:
        return model_of([helper.make_node("Constant", [], ["w"], name="weights", value=t), conv])
    return model_of([conv], [t])


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """``models/`` for the model, ``work/`` (the working directory) holding secrets."""
    models, work = tmp_path / "models", tmp_path / "work"
    models.mkdir()
    (work / ".ssh").mkdir(parents=True)
    for secret in (work / "w.bin", work / ".ssh" / "key.bin"):
        secret.write_bytes(SECRET.tobytes())
    monkeypatch.chdir(work)
    return models, work


def save(proto, path):
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.mark.parametrize("in_constant", [True, False])
def test_external_data_is_read_from_the_model_folder_not_the_working_directory(folders, in_constant):
    models, _ = folders
    (models / "w.bin").write_bytes(W.tobytes())
    model = fo.load(save(conv_with(external_tensor("w.bin"), in_constant), models / "m.onnx"))
    np.testing.assert_array_equal(model.state_dict()["0.weight"], W)


@pytest.mark.parametrize("in_constant", [True, False])
def test_external_data_missing_from_the_model_folder_is_not_taken_from_the_working_directory(folders, in_constant):
    models, _ = folders
    path = save(conv_with(external_tensor(".ssh/key.bin"), in_constant), models / "m.onnx")
    with pytest.raises(ValueError, match=r"tensor 'w'.*external data file .*key\.bin' does not exist"):
        fo.load(path)


@pytest.mark.parametrize("in_constant", [True, False])
@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink_file", "symlink_dir"])
def test_external_data_outside_the_model_folder_is_refused(folders, in_constant, where):
    models, work = folders
    location = {"absolute": str(work / "w.bin"), "dotdot": "../work/w.bin", "symlink_file": "link.bin",
                "symlink_dir": "linked/w.bin"}[where]
    if where == "symlink_file":
        os.symlink(work / "w.bin", models / "link.bin")
    if where == "symlink_dir":
        os.symlink(work, models / "linked")
    path = save(conv_with(external_tensor(location), in_constant), models / "m.onnx")
    with pytest.raises(ValueError, match=r"'w'.*external data location .*(relative to|leaves|symbolic link)") as info:
        fo.load(path)
    assert "m.onnx" in str(info.value)


def test_a_model_in_memory_with_external_data_is_refused(folders):
    for in_constant in (True, False):
        with pytest.raises(ValueError, match="external data files.*no folder to read them from.*path"):
            fo.load(conv_with(external_tensor("w.bin"), in_constant))


@pytest.mark.parametrize("info, want", [(dict(length=40), "need 72 bytes"), (dict(offset=8), "has 72 bytes; the tensor needs 72 from offset 8"),
                                        (dict(offset=-1), "need 72 bytes")])
def test_external_data_of_the_wrong_size_is_refused_before_reading(folders, info, want):
    models, _ = folders
    (models / "w.bin").write_bytes(W.tobytes())
    with pytest.raises(ValueError, match=want):
        fo.load(save(conv_with(external_tensor("w.bin", **info), False), models / "m.onnx"))


def test_onnx_save_with_external_data_loads_from_anywhere(folders):
    models, _ = folders
    proto = conv_with(numpy_helper.from_array(W, "w"), False)
    onnx.save_model(proto, models / "m.onnx", save_as_external_data=True, location="weights.data",
                    size_threshold=0)
    assert (models / "weights.data").exists()
    model = fo.load(models / "m.onnx")
    np.testing.assert_array_equal(model.state_dict()["0.weight"], W)
    assert ort_agrees(models / "m.onnx", model, (2, 1, 5, 5))


# --- 2. memory: sizes are checked before anything is allocated ---------------------------------

def fold_model(nodes, inits=(), out="c"):
    """A graph whose folded constant ``out`` is added to the input (as a tiny attacker writes it)."""
    return model_of(nodes + [helper.make_node("Add", ["x", out], ["y"], name="add")], inits, x=("N", 3), y=("N", 3))


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def peak_of_failing_load(source, match, limit):
    """Load ``source``: its peak traced allocation must stay under ``limit`` bytes, and it must
    fail with a ValueError matching ``match``."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            fo.load(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, f"peak {peak / 2**20:.1f} MiB"
    assert re.search(match, str(info.value)), str(info.value)


def test_constant_of_shape_in_a_tiny_file_is_refused_before_allocating(tmp_path):
    path = save(fold_model([helper.make_node("ConstantOfShape", ["s"], ["c"], name="zeros")],
                           [ints("s", [4, 4194304])]), tmp_path / "tiny.onnx")
    assert path.stat().st_size < 200
    # the 64 MiB are never allocated
    peak_of_failing_load(path, r"node 'zeros' \(ConstantOfShape\): folding it would allocate 67,108,864 bytes", 2**20)


@pytest.mark.parametrize("shape", [[2**31, 2**31, 4], [2**62, 2**62], [2**22, 2**22]])
def test_a_huge_constant_of_shape_is_a_value_error_not_a_memory_error(shape):
    with pytest.raises(ValueError, match=r"node 'zeros' \(ConstantOfShape\): folding it would allocate .*FOLD_LIMIT"):
        fo.load(fold_model([helper.make_node("ConstantOfShape", ["s"], ["c"], name="zeros")], [ints("s", shape)]))


def doubling():
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["c0"], name="c0")]
    nodes += [helper.make_node("Concat", [f"c{i}", f"c{i}"], [f"c{i + 1}"], name=f"c{i + 1}", axis=0) for i in range(4)]
    return fold_model(nodes, [ints("s", [2**20])], out="c4"), "c2"


def many():
    nodes = [helper.make_node("ConstantOfShape", ["s"], [f"z{i}"], name=f"z{i}") for i in range(8)]
    nodes += [helper.make_node("Add", [f"z{i}", f"z{i + 1}" if i == 0 else f"a{i}"], [f"a{i + 1}"], name=f"a{i + 1}")
              for i in range(7)]
    return fold_model(nodes, [ints("s", [2**20])], out="a7"), "z4"


def broadcast():
    col, row = (numpy_helper.from_array(np.ones(s, np.float32), n) for s, n in (((4096, 1), "col"), ((1, 4096), "row")))
    return fold_model([helper.make_node("Add", ["col", "row"], ["c"], name="outer")], [col, row]), "outer"


def gather():
    data, idx = numpy_helper.from_array(np.ones((1, 4096), np.float32), "d"), ints("i", np.zeros((4096, 1)))
    return fold_model([helper.make_node("Gather", ["d", "i"], ["c"], name="take", axis=0)], [data, idx]), "take"


@pytest.mark.parametrize("build", [doubling, many, broadcast, gather])
def test_what_folding_allocates_in_all_is_bounded(build):
    """Each step stays small, but the graph's total (or one broadcast) would be 32-64 MiB."""
    proto, node = build()
    peak_of_failing_load(proto, rf"node '{node}' \(\w+\): folding it would allocate", 20 * 2**20)


@pytest.mark.parametrize("op, inputs", [("Expand", [[1], [2**40, 2**40]]), ("Tile", [[1], [2**40]]),
                                        ("Range", [0, 2**40, 1])])
def test_ops_that_grow_constants_and_are_not_folded_allocate_nothing(op, inputs):
    inits = [ints(f"i{k}", v) for k, v in enumerate(inputs)]
    proto = fold_model([helper.make_node(op, [t.name for t in inits], ["c"], name="grow")], inits)
    peak_of_failing_load(proto, rf"node 'grow' \({op}\)", 2**20)


def test_small_folded_constants_still_load():
    """A ConstantOfShape of zeros read as a bias, under the limit, is still folded."""
    nodes = [helper.make_node("ConstantOfShape", ["s"], ["b"], name="zeros"),
             helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)]
    proto = model_of(nodes, [ints("s", [4]), numpy_helper.from_array(np.ones((4, 3), np.float32), "w")],
                     x=("N", 3), y=("N", 4))
    model = fo.load(proto)
    assert ort_agrees(proto, model, (5, 3))


# --- 6. axes out of range are refused, not wrapped ----------------------------------------------

def two_branches(op_attrs):
    return model_of([helper.make_node("Relu", ["x"], ["a"], name="relu"), helper.make_node("Sigmoid", ["x"], ["b"]),
                     helper.make_node("Concat", ["a", "b"], ["y"], name="cat", **op_attrs)], x=("N", 2, 4, 4),
                    y=("N", 4, 4, 4))


def folded(node):
    """``node`` (reading the constant ``k`` of shape (2, 3)) folded, then added to the input."""
    return fold_model([node], [numpy_helper.from_array(np.ones((2, 3), np.float32), "k")] +
                      [ints(n, v) for n, v in (("ax", [3]), ("st", [0]), ("en", [1]), ("ix", [0]))])


BAD_AXES = {
    "Softmax": (model_of([helper.make_node("Softmax", ["x"], ["y"], name="n", axis=4)], y=("N", 1, 5, 5)), "axis=4"),
    "LogSoftmax": (model_of([helper.make_node("LogSoftmax", ["x"], ["y"], name="n", axis=-5)], y=("N", 1, 5, 5)),
                   "axis=-5"),
    "Flatten": (model_of([helper.make_node("Flatten", ["x"], ["y"], name="n", axis=5)], y=(1, 25)), "axis=5"),
    "LayerNormalization": (model_of([helper.make_node("LayerNormalization", ["x", "g"], ["y"], name="n", axis=3)],
                                    [numpy_helper.from_array(np.ones(6, np.float32), "g")], x=("N", 4, 6), y=("N", 4, 6)),
                           "axis=3"),
    "Concat": (two_branches(dict(axis=4)), "axis=4"),
    "Unsqueeze": (folded(helper.make_node("Unsqueeze", ["k", "ax"], ["c"], name="n")), "axes=3"),
    "Squeeze": (folded(helper.make_node("Squeeze", ["k", "ax"], ["c"], name="n")), "axes=3"),
    "Slice": (folded(helper.make_node("Slice", ["k", "st", "en", "ax"], ["c"], name="n")), "axes=3"),
    "Gather": (folded(helper.make_node("Gather", ["k", "ix"], ["c"], name="n", axis=-3)), "axis=-3"),
}


@pytest.mark.parametrize("op", sorted(BAD_AXES))
def test_an_axis_out_of_range_is_a_value_error_naming_the_node(op):
    proto, axis = BAD_AXES[op]
    name = "cat" if op == "Concat" else "n"
    with pytest.raises(ValueError, match=rf"node '{name}' \({op}\): {axis} is out of range for a \d-D tensor"):
        fo.load(proto)


@pytest.mark.parametrize("op, attrs, x, y, want", [
    ("Softmax", dict(axis=-1), ("N", 2, 3, 4), ("N", 2, 3, 4), dict(dim=3)),
    ("LogSoftmax", dict(axis=-3), ("N", 2, 3, 4), ("N", 2, 3, 4), dict(dim=1)),
    ("Flatten", dict(axis=-3), ("N", 2, 3, 4), ("N", 24), {}),
])
def test_negative_axes_in_range_still_work(op, attrs, x, y, want):
    proto = model_of([helper.make_node(op, ["x"], ["y"], **attrs)], x=x, y=y)
    model = fo.load(proto)
    assert [type(m).__name__ for m in model] == [op] and all(getattr(model[0], k) == v for k, v in want.items())
    assert ort_agrees(proto, model, (2,) + x[1:])


def test_negative_axes_in_a_concat_block_and_a_folded_flatten_still_work():
    proto = two_branches(dict(axis=-3))
    assert ort_agrees(proto, fo.load(proto), (3, 2, 4, 4))
    nodes = [helper.make_node("Shape", ["x"], ["shape"]), helper.make_node("Gather", ["shape", "zero"], ["n"], axis=-1),
             helper.make_node("Unsqueeze", ["n", "last"], ["n1"]), helper.make_node("Concat", ["n1", "minus1"], ["t"], axis=-1),
             helper.make_node("Reshape", ["x", "t"], ["y"])]
    proto = model_of(nodes, [ints("zero", 0), ints("last", [-1]), ints("minus1", [-1])], x=("N", 2, 3, 4), y=("N", 24))
    model = fo.load(proto)
    assert [type(m).__name__ for m in model] == ["Flatten"] and ort_agrees(proto, model, (3, 2, 3, 4))


# --- 10. every failure is the documented ValueError naming the file -----------------------------

def test_an_unknown_tensor_data_type_names_the_file_and_the_tensor(tmp_path):
    w = numpy_helper.from_array(W, "w")
    w.data_type = 109
    path = save(conv_with(w, False), tmp_path / "odd.onnx")
    with pytest.raises(ValueError, match=r"'.*odd\.onnx'.*tensor 'w' has an unknown ONNX data type 109"):
        fo.load(path)
    with pytest.raises(ValueError, match=r"node 'weights' \(Constant\): tensor 'w' has an unknown ONNX data type 109"):
        fo.load(conv_with(w, True))


def test_an_unknown_input_type_is_named():
    proto = model_of([helper.make_node("Relu", ["x"], ["y"])], y=("N", 1, 5, 5))
    proto.graph.input[0].type.tensor_type.elem_type = 109
    with pytest.raises(ValueError, match="input 'x' has element type data type 109; fastconv takes float input"):
        fo.load(proto)


def nest(depth):
    """Relu r0 .. r{depth-1} in a row, then Adds joining them back from the inside out: Residual
    blocks nested ``depth - 1`` deep."""
    nodes = [helper.make_node("Relu", ["x" if i == 0 else f"r{i - 1}"], [f"r{i}"]) for i in range(depth)]
    cur = f"r{depth - 1}"
    for i in range(depth - 1, 0, -1):
        nodes += [helper.make_node("Add", [cur, f"r{i - 1}"], [f"s{i}"], name=f"s{i}"),
                  helper.make_node("Relu", [f"s{i}"], [f"t{i}"])]
        cur = f"t{i}"
    return model_of(nodes + [helper.make_node("Identity", [cur], ["y"])], x=("N", 4), y=("N", 4))


def test_blocks_nested_too_deeply_are_a_value_error_naming_the_file(tmp_path):
    path = save(nest(251), tmp_path / "deep.onnx")
    with pytest.raises(ValueError, match=r"'.*deep\.onnx'.*nests Residual blocks 101 deep.*MAX_NESTING = 100"):
        fo.load(path)
    proto = nest(fo.MAX_NESTING + 1)
    assert ort_agrees(proto, fo.load(proto), (3, 4))


def test_exporting_a_model_nested_too_deeply_is_a_value_error():
    inner = fc.ReLU()
    for _ in range(250):
        inner = fc.Residual(fc.Sequential(fc.Linear(4, 4), inner))
    with pytest.raises(ValueError, match="cannot export to ONNX: the model nests containers too deeply"):
        fo.to_onnx(fc.Sequential(inner).eval(), (1, 4))


# --- 11. errors name the tensor or node and the expected size -----------------------------------

def test_raw_data_of_the_wrong_size_names_the_tensor_and_the_size():
    w = numpy_helper.from_array(W, "w")
    w.raw_data += b"\0" * 4
    want = r"tensor 'w' \(FLOAT, dims \[2, 1, 3, 3\]\) has 76 bytes of raw_data; its dims and type need 72"
    with pytest.raises(ValueError, match=want):
        fo.load(conv_with(w, False))
    with pytest.raises(ValueError, match=r"node 'weights' \(Constant\): " + want):
        fo.load(conv_with(w, True))


def padded(op, pads):
    inits = [numpy_helper.from_array(W, "w")] if op.startswith("Conv") else []
    attrs = dict(kernel_shape=[3, 3]) if op.endswith("Pool") else {}
    return model_of([helper.make_node(op, ["x"] + [t.name for t in inits], ["y"], name="p", pads=pads, **attrs)],
                    inits)


@pytest.mark.parametrize("op", ["Conv", "ConvTranspose", "MaxPool", "AveragePool"])
@pytest.mark.parametrize("pads", [[1, 1, 1], [1, 1, 1, 1, 1, 1]])
def test_pads_of_the_wrong_length_name_the_node_and_the_count(op, pads):
    with pytest.raises(ValueError, match=re.escape(f"node 'p' ({op}): pads={pads} has {len(pads)} values: a 2-D op takes 4")):
        fo.load(padded(op, [int(p) for p in pads]))


def test_pad_inputs_and_scalars_of_the_wrong_size_name_the_node():
    proto = model_of([helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")], [ints("pads", [0, 0, 1, 1, 0, 0, 1])],
                     y=("N", 1, 7, 7))
    with pytest.raises(ValueError, match=r"node 'pad' \(Pad\): pads \[0, 0, 1, 1, 0, 0, 1\] has 7 values: .* takes 8"):
        fo.load(proto)
    low = numpy_helper.from_array(np.zeros(2, np.float32), "low")
    proto = model_of([helper.make_node("Clip", ["x", "low"], ["y"], name="clip")], [low], y=("N", 1, 5, 5))
    with pytest.raises(ValueError, match=r"node 'clip' \(Clip\): the min of shape \(2,\) is not one number"):
        fo.load(proto)


# --- 16. the command line: one error line, no traceback, nothing written ------------------------

def cli_error(capsys, argv):
    """Run the CLI in-process; its one ``error:`` line (any other exception fails the test)."""
    try:
        code = cli.main(argv)
        message = ""
    except SystemExit as exc:
        code, message = (exc.code, "") if isinstance(exc.code, int) else (1, str(exc.code))
    captured = capsys.readouterr()
    err = captured.err + message
    assert code not in (0, None), (captured.out, err)
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def tiny_onnx(tmp_path):
    fc.manual_seed(0)
    return str(fo.export(fc.Sequential(fc.Flatten(), fc.Linear(784, 10)).eval(), tmp_path / "tiny.onnx", (1, 1, 28, 28)))


@pytest.fixture
def fake_mnist(monkeypatch):
    """MNIST replaced by 100 random images: these tests never read or download the real one."""
    calls = []

    def load_mnist(root=None, **kw):
        calls.append(root)
        rng = np.random.default_rng(0)
        images, labels = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8), rng.integers(0, 10, 100)
        return (images, labels), (images, labels)

    monkeypatch.setattr(cli, "load_mnist", load_mnist)
    return calls


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--batch-size", "-5"), ("--limit", "-9990"),
                                           ("--limit", "0"), ("--batch-size", "many")])
def test_cli_run_refuses_bad_numbers_before_reading_mnist(capsys, tiny_onnx, fake_mnist, option, value):
    line = cli_error(capsys, ["run", tiny_onnx, option, value])
    assert f"argument {option}: expected a positive integer, got {value!r}" in line
    assert fake_mnist == []


def test_cli_run_refuses_a_mistyped_data_dir_and_creates_nothing(capsys, tmp_path, tiny_onnx, fake_mnist):
    typo = tmp_path / "mnsit"
    line = cli_error(capsys, ["run", tiny_onnx, "--data-dir", str(typo)])
    assert f"argument --data-dir: no such folder {str(typo)!r}" in line
    assert not typo.exists() and fake_mnist == []
    assert cli.main(["run", tiny_onnx, "--data-dir", str(tmp_path), "--limit", "30", "--batch-size", "7"]) == 0
    assert capsys.readouterr().out.strip().endswith("/30 MNIST test images, fastconv)")


def test_cli_run_reads_the_model_before_mnist(capsys, tmp_path, fake_mnist):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    for runtime in ("fastconv", "onnxruntime"):
        assert "is not an ONNX model" in cli_error(capsys, ["run", str(junk), "--runtime", runtime])
    assert fake_mnist == []


def test_cli_check_of_a_folder_a_file_failing_inference_or_of_an_unknown_type(capsys, tmp_path):
    assert f"{str(tmp_path)!r} is a folder, not an ONNX file" in cli_error(capsys, ["check", str(tmp_path)])
    differ = model_of([helper.make_node("Relu", ["x"], ["y"])], x=("N", 3), y=("N", 4))
    line = cli_error(capsys, ["check", str(save(differ, tmp_path / "differ.onnx"))])
    assert "differ.onnx' fails ONNX's full check (shape inference)" in line
    w = numpy_helper.from_array(W, "w")
    w.data_type = 109
    line = cli_error(capsys, ["check", str(save(conv_with(w, True), tmp_path / "odd.onnx"))])
    assert "odd.onnx" in line and "109" in line


def test_cli_export_refuses_bad_arguments_before_building_anything(capsys, tmp_path, tiny_onnx):
    out = tmp_path / "out.onnx"
    arch = tmp_path / "arch.py"
    arch.write_text("import fastconv as fc\n\ndef build():\n    return fc.Sequential(fc.Flatten(), fc.Linear(784, 10))\n")
    for args, want in [(["--arch", "nosuchmodule:build"], "argument --arch: no module named 'nosuchmodule'"),
                       (["--arch", f"{arch}:nope"], "has no function 'nope'"),
                       (["--arch", f"{arch}:build", "--opset", "5"], "argument --opset: expected an opset"),
                       (["--arch", f"{arch}:build", "--input-shape", "0,1,28,28"], "argument --input-shape"),
                       (["--arch", f"{arch}:build", "--weights", str(tmp_path / "none.npz")],
                        "argument --weights: no such file")]:
        assert want in cli_error(capsys, ["export", str(out)] + args)
    assert "argument output: cannot write" in cli_error(capsys, ["export", str(tmp_path / "no" / "o.onnx"), "--arch",
                                                                 f"{arch}:build"])
    assert sorted(os.listdir(tmp_path)) == ["arch.py", "tiny.onnx"]  # no output, no __pycache__


def test_cli_in_a_fresh_process_prints_one_error_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(fc.__file__).resolve().parents[1]))
    before = sorted(os.listdir(tmp_path))
    for argv in (["export", "o.onnx", "--arch", "nosuchmodule:build"], ["check", "."]):
        out = subprocess.run([sys.executable, "-m", "fastconv.onnx", *argv], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        assert len([line for line in out.stderr.splitlines() if "error:" in line]) == 1, out.stderr
    assert sorted(os.listdir(tmp_path)) == before
