"""Model files and checkpoints that are hostile or broken (issue 21, items 2, 12 and 15): .npz
archives whose headers claim more than they hold or keys the model does not have, malformed
checkpoints, and files that are not .npz archives at all. Every one is a ValueError naming the
file, raised before anything is allocated or changed. (Faults while writing: test_file_faults.py.)
"""
import json
import tracemalloc
import zipfile

import numpy as np
import pytest

from fastconv.optim import SGD, StepLR, flatten_state, unflatten_state
from fastconv.trainer import Trainer
from test_trainer import make_data, make_model


def snapshot(trainer):
    """Copies of the model's and the optimizer's state."""
    return trainer.model.state_dict(), flatten_state(trainer.optimizer.state_dict())


def assert_same(a, b):
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def write_checkpoint(path, epochs=1):
    """A real checkpoint (SGD with momentum, StepLR) after ``epochs`` epochs; returns its bytes."""
    model = make_model()
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = make_data()
    Trainer(model, optimizer=opt, scheduler=StepLR(opt, 1, gamma=0.5)).fit(
        x, y, epochs=epochs, batch_size=32, seed=3, checkpoint=path, progress=False)
    return path.read_bytes()


def trained_trainer():
    """A trainer of the same setup as :func:`write_checkpoint`'s with other, trained weights."""
    model = make_model(seed=7)
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    trainer = Trainer(model, optimizer=opt, scheduler=StepLR(opt, 1, gamma=0.5))
    x, y = make_data(seed=1)
    trainer.fit(x, y, epochs=1, batch_size=32, seed=4, progress=False)
    return trainer


def resume(trainer, path, **kwargs):
    x, y = make_data()
    return trainer.fit(x, y, epochs=2, batch_size=32, seed=3, checkpoint=path, resume=True,
                       progress=False, **kwargs)


def add_member(path, key, shape, dtype="<f4", data=b"", zeros=0):
    """Append ``key`` to the archive at ``path``: an .npy header declaring ``shape`` of ``dtype``,
    then ``data`` and ``zeros`` zero bytes (deflated, written a MiB at a time)."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open(key + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": dtype, "fortran_order": False, "shape": shape})
            f.write(data)
            chunk = bytes(1 << 20)
            for start in range(0, zeros, len(chunk)):
                f.write(chunk[:zeros - start])


def replace_member(path, key, shape, dtype="<f4", data=b""):
    """Rewrite the archive at ``path`` with ``key``'s member replaced (see :func:`add_member`)."""
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist() if name != key + ".npy"}
    with zipfile.ZipFile(path, "w") as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    add_member(path, key, shape, dtype, data)


def peak_while(fn):
    """``(exception fn() raised or None, peak bytes traced while it ran)``."""
    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the caller checks it, after the memory
        return exc, tracemalloc.get_traced_memory()[1]
    else:
        return None, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- item 2: headers are checked before any array is read ---------------------------------------

HUGE = 257 << 20  # bytes of zeros behind a 255 KiB member


def test_model_load_refuses_an_unknown_huge_key_without_reading_it(tmp_path):
    path = tmp_path / "model.npz"
    make_model(seed=1).save(path)
    add_member(path, "junk", (HUGE // 4,), zeros=HUGE)
    assert path.stat().st_size < 300 << 10
    model = make_model()
    before = model.state_dict()
    error, peak = peak_while(lambda: model.load(path))
    assert peak < 16 << 20, f"load allocated {peak / 2**20:.0f} MiB for a 255 KiB file"
    assert isinstance(error, ValueError) and "nothing was loaded" in str(error)
    assert "junk" in str(error) and str(path) in str(error)
    assert_same([model.state_dict()], [before])


def test_resume_refuses_an_unknown_huge_key_without_reading_it(tmp_path):
    path = tmp_path / "run.npz"
    write_checkpoint(path)
    add_member(path, "junk", (HUGE // 4,), zeros=HUGE)
    trainer = trained_trainer()
    before = snapshot(trainer)
    error, peak = peak_while(lambda: resume(trainer, path))
    assert peak < 16 << 20, f"resume allocated {peak / 2**20:.0f} MiB for a 255 KiB file"
    assert isinstance(error, ValueError) and "junk" in str(error) and str(path) in str(error)
    assert_same(snapshot(trainer), before)


@pytest.mark.parametrize("where", ["model", "checkpoint"])
def test_a_header_claiming_4_tib_is_refused_without_allocating(where, tmp_path):
    path = tmp_path / "file.npz"
    if where == "model":
        make_model(seed=1).save(path)
        key, target = "0.weight", make_model()
        load = target.load
    else:
        write_checkpoint(path)
        key, target = "model.0.weight", trained_trainer()
        load = lambda _: resume(target, path)  # noqa: E731
    replace_member(path, key, (1 << 40,), data=bytes(144))
    error, peak = peak_while(lambda: load(path))
    assert isinstance(error, ValueError), repr(error)
    assert key in str(error) and str(path) in str(error)
    assert peak < 16 << 20


@pytest.mark.parametrize("key, array, match", [
    ("9.weight", np.zeros(3, np.float32), r"unexpected keys: \['9\.weight'\]"),
    ("0.bias", np.zeros(5, np.float32), r"0\.bias: the file has shape \(5,\), the model has \(4,\)"),
    ("0.bias", np.array(["a", "b", "c", "d"]), r"0\.bias: dtype <U1 is not a real numeric"),
    ("0.bias", np.array([{}, 1, 2, 3], dtype=object), r"'0\.bias' holds Python objects"),
    ("0.bias", None, r"missing keys: \['0\.bias'\]"),
])
def test_model_load_errors_name_the_file_and_the_key(key, array, match, tmp_path):
    path = tmp_path / "model.npz"
    state = make_model(seed=1).state_dict()
    state.pop(key, None)
    if array is not None:
        state[key] = array
    np.savez(path, **state)
    model = make_model()
    before = model.state_dict()
    with pytest.raises(ValueError, match=match) as info:
        model.load(path)
    assert str(path) in str(info.value)
    assert_same([model.state_dict()], [before])


def test_damaged_files_are_value_errors(tmp_path):
    # kept from the first review: a truncated or bit-flipped file names the file
    path = tmp_path / "model.npz"
    make_model().save(path)
    data = bytearray(path.read_bytes())
    data[200] ^= 0x40  # inside the first array's data: the CRC no longer matches
    (tmp_path / "flipped.npz").write_bytes(data)
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    for name in ("flipped.npz", "cut.npz"):
        with pytest.raises(ValueError, match="cannot read model file .*" + name):
            make_model().load(tmp_path / name)
    ckpt = tmp_path / "run.npz"
    data = bytearray(write_checkpoint(ckpt))
    data[len(data) // 3] ^= 0x01
    ckpt.write_bytes(data)
    with pytest.raises(ValueError, match="run.npz"):
        resume(trained_trainer(), ckpt)


# --- item 15: not an .npz archive ---------------------------------------------------------------

def test_model_load_of_a_text_or_onnx_file_says_it_is_not_an_npz_archive(tmp_path):
    text = tmp_path / "weights.npz"
    text.write_text("0.weight = [1, 2, 3]\n")
    files = [text]
    try:
        import fastconv.onnx
        files.append(fastconv.onnx.export(make_model().eval(), tmp_path / "model.onnx", (1, 1, 8, 8)))
    except ImportError:  # onnx is an optional extra
        pass
    for path in files:
        with pytest.raises(ValueError) as info:
            make_model().load(path)
        assert "not an .npz archive" in str(info.value) and "pickle" not in str(info.value)
        assert str(path) in str(info.value)


# --- item 12: a malformed checkpoint is refused before anything changes --------------------------

def _set(path, value):
    def change(state):
        *parents, last = path
        for key in parents:
            state = state[key]
        if value is KeyError:
            del state[last]
        else:
            state[last] = value
    return change


DEEP = 5000


@pytest.mark.parametrize("change", [
    _set(["early_stopping"], KeyError),
    _set(["epoch"], "1"),
    _set(["epoch"], -1),
    _set(["optimizer", "param_groups", 0, "lr"], "0.05"),
    _set(["optimizer"], KeyError),
    _set(["history"], [0.5]),
    _set(["history", "lr"], ["0.05"]),
    _set(["early_stopping", "wait"], "0"),
    _set(["early_stopping", "best_state"], {"0.weight": 1.0}),
    _set(["scheduler", "gamma"], "half"),
    "deep",
], ids=["no early_stopping", "epoch string", "epoch negative", "lr string", "no optimizer",
        "history list", "history lr strings", "wait string", "best_state numbers", "scheduler string",
        "deeply nested"])
def test_a_malformed_checkpoint_is_refused_before_anything_changes(change, tmp_path):
    path = tmp_path / "run.npz"
    write_checkpoint(path)
    with np.load(path) as archive:
        flat = {key: archive[key] for key in archive.files}
    if change == "deep":
        meta = json.loads(str(flat["__meta__"]))
        nested = '{"list": [' * DEEP + "1" + "]}" * DEEP  # history.params.ranks, 5000 lists deep
        text = json.dumps(meta).replace('["ranks", 1]', '["ranks", ' + nested + "]")
        assert text != json.dumps(meta)
        flat["__meta__"] = np.array(text)
    else:
        state = unflatten_state(flat)
        change(state)
        flat = flatten_state(state)
    np.savez(path, **flat)
    saved = path.read_bytes()
    trainer = trained_trainer()
    before = snapshot(trainer)
    with pytest.raises(ValueError, match="malformed|not a fastconv Trainer checkpoint") as info:
        resume(trainer, path)
    assert str(path) in str(info.value)
    assert_same(snapshot(trainer), before)
    assert path.read_bytes() == saved
