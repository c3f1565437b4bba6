"""fastconv.data and the Trainer on Datasets: TensorDataset, Subset, memory-mapped IDX files,
Dataset input giving the same run as arrays (one process, two MPI ranks, resumed), and
``Module.reseed``.

The two-rank run is this file run as a script under ``mpiexec`` (as tests/training/test_distributed.py
does); everything else runs on tiny synthetic data in this process.
"""
import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run by mpiexec: import this checkout's fastconv
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))

import fastconv as fc  # noqa: E402
from fastconv.data import Dataset, IDXDataset, Subset, TensorDataset, is_dataset, memmap_idx  # noqa: E402
from fastconv.datasets import RandomShift, normalize, read_idx  # noqa: E402
from fastconv.optim import SGD  # noqa: E402
from fastconv._fit import epoch_generators  # noqa: E402
from fastconv.trainer import Trainer  # noqa: E402
from helpers import HYPOTHESIS  # noqa: E402


def make_data(n=96, seed=0):
    """(x float32 (n, 1, 8, 8), y int64 (n,)): class c has a bright 3x3 square at (2c, 2c)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 0.3, (n, 1, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, 0, 2 * c:2 * c + 3, 2 * c:2 * c + 3] += 1.5
    return x, y


def make_model(seed=0):
    fc.manual_seed(seed)
    return fc.Sequential(fc.Conv2d(1, 4, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2), fc.Flatten(),
                         fc.Dropout(0.3), fc.Linear(64, 3))


class Recording:
    """A Dataset by duck typing only (no base class): the arrays' batches, and every index array
    it was asked for."""

    def __init__(self, x, y):
        self.x, self.y, self.requests = x, y, []

    def __len__(self):
        return len(self.y)

    def __getitem__(self, indices):
        self.requests.append(np.array(indices).tolist())
        return self.x[indices], self.y[indices]


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def trainer(model):
    return Trainer(model, optimizer=SGD(model.parameters(), lr=0.05, momentum=0.9))


# --- the Trainer on a Dataset --------------------------------------------------------------------

@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("kind", ["duck", "tensor"])
def test_a_dataset_gives_the_same_run_as_the_arrays_bit_for_bit(kind, shuffle):
    x, y = make_data(100)  # 75 to train (batches of 16: the last has 11), 25 to validate
    common = dict(epochs=2, batch_size=16, seed=3, shuffle=shuffle, validation_split=0.25,
                  augment=RandomShift(1), progress=False)
    arrays = make_model()
    h_arrays = trainer(arrays).fit(x, y, **common)
    data = Recording(x, y) if kind == "duck" else TensorDataset(x, y)
    on_data = make_model()
    h_data = trainer(on_data).fit(data, **common)
    assert_same_state(arrays.state_dict(), on_data.state_dict())
    for name in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert getattr(h_data, name) == getattr(h_arrays, name), name
    assert h_data.params["samples"] == 75 and h_data.params["validation_samples"] == 25
    if kind == "duck":  # the Dataset is read a batch at a time, the validation split by a Subset
        train = [r for r in data.requests if max(r) < 75]
        assert max(map(len, data.requests)) == 25  # never more than a batch (25: validation's)
        assert sorted(sum(train[:5], [])) == list(range(75))  # epoch 1: each sample once


def test_validation_data_and_evaluate_take_a_dataset_with_the_arrays_results():
    x, y = make_data(96)
    xv, yv = make_data(37, seed=1)
    a, b = make_model(), make_model()
    h_a = trainer(a).fit(x, y, epochs=1, batch_size=16, seed=1, validation_data=(xv, yv), progress=False)
    h_b = trainer(b).fit(TensorDataset(x, y), epochs=1, batch_size=16, seed=1,
                         validation_data=Recording(xv, yv), progress=False)
    assert h_b.val_loss == h_a.val_loss and h_b.val_accuracy == h_a.val_accuracy
    for batch_size in (256, 10):  # 10: batches of 10, 10, 10, 7
        assert Trainer(b).evaluate(Recording(xv, yv), batch_size=batch_size) == \
            Trainer(a).evaluate(xv, yv, batch_size=batch_size)


def test_resume_on_a_dataset_is_bit_exact(tmp_path):
    x, y = make_data(96)
    common = dict(batch_size=16, seed=7, validation_split=0.2, augment=RandomShift(1), progress=False)
    straight = make_model()
    h_straight = trainer(straight).fit(TensorDataset(x, y), epochs=3, **common)
    ckpt = tmp_path / "run.npz"
    trainer(make_model()).fit(TensorDataset(x, y), epochs=2, checkpoint=ckpt, **common)
    resumed = make_model(seed=99)  # a different init: the weights must come from the checkpoint
    h = trainer(resumed).fit(TensorDataset(x, y), epochs=3, checkpoint=ckpt, resume=True, **common)
    assert_same_state(resumed.state_dict(), straight.state_dict())
    assert h.loss == h_straight.loss and h.val_loss == h_straight.val_loss


class RawImages(Dataset):
    """uint8 images (k, 1, 8, 8), as a file would hold them."""

    def __len__(self):
        return 8

    def __getitem__(self, indices):
        return np.zeros((len(indices), 1, 8, 8), np.uint8), np.zeros(len(indices), np.int64)


class WrongCount(RawImages):
    def __getitem__(self, indices):
        return np.zeros((3, 1, 8, 8), np.float32), np.zeros(3, np.int64)


class NotAPair(RawImages):
    def __getitem__(self, indices):
        return np.zeros((len(indices), 1, 8, 8), np.float32)


def test_uint8_batches_from_a_dataset_are_refused_with_the_way_out():
    with pytest.raises(TypeError, match=r"dtype uint8.*normalize.*transform"):
        trainer(make_model()).fit(RawImages(), epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"dtype uint8.*transform"):
        Trainer(make_model()).evaluate(RawImages())


@pytest.mark.parametrize("call, error, match", [
    (lambda t, x, y: t.fit(TensorDataset(x, y), y, epochs=1), ValueError, "Dataset, which gives its own"),
    (lambda t, x, y: t.fit(x, epochs=1), ValueError, "labels y are needed"),
    (lambda t, x, y: t.fit(TensorDataset(x, y)), TypeError, "epochs"),
    (lambda t, x, y: t.fit(TensorDataset(x[:0], y[:0]), epochs=1), ValueError, "Dataset is empty"),
    (lambda t, x, y: t.fit(WrongCount(), epochs=1), ValueError, "returned 3 samples for 8 indices"),
    (lambda t, x, y: t.fit(NotAPair(), epochs=1), TypeError, "must return a pair"),
    (lambda t, x, y: t.evaluate(TensorDataset(x, y), y), ValueError, "Dataset, which gives its own"),
])
def test_dataset_misuse_is_a_clear_error(call, error, match):
    x, y = make_data(16)
    with pytest.raises(error, match=match):
        call(trainer(make_model()), x, y)


# --- TensorDataset and Subset ----------------------------------------------------------------------

def test_tensor_dataset_indexes_its_arrays_together_without_copying(tmp_path):
    x = np.memmap(tmp_path / "x.raw", np.float32, "w+", shape=(6, 2))
    x[:] = np.arange(12).reshape(6, 2)
    y = np.arange(6) * 10
    ds = TensorDataset(x, y)
    assert len(ds) == 6 and ds.tensors[0] is x and is_dataset(ds)
    xb, yb = ds[np.array([4, 1])]
    np.testing.assert_array_equal(xb, [[8, 9], [2, 3]])
    np.testing.assert_array_equal(yb, [40, 10])
    assert [a.tolist() for a in ds[2]] == [[4.0, 5.0], 20]  # an int index gives one sample, as PyTorch
    assert len(TensorDataset([1, 2, 3])[np.array([0, 2])]) == 1  # any number of arrays; lists converted
    with pytest.raises(ValueError, match=r"size mismatch.*\(6, 2\), \(5,\)"):
        TensorDataset(x, y[:5])
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()


@HYPOTHESIS
@given(st.integers(1, 30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))),
    st.data())
def test_subsets_of_subsets_index_the_original_samples(n_and_outer, data):
    n, outer = n_and_outer
    inner = data.draw(st.lists(st.integers(0, len(outer) - 1), min_size=1, unique=True))
    query = np.array(data.draw(st.lists(st.integers(0, len(inner) - 1), min_size=1, unique=True)))
    x, y = np.arange(n * 3.0).reshape(n, 3), np.arange(n) + 100
    sub = Subset(Subset(TensorDataset(x, y), outer), inner)
    assert len(sub) == len(inner)
    want = np.array(outer)[np.array(inner)][query]
    xb, yb = sub[query]
    np.testing.assert_array_equal(xb, x[want])
    np.testing.assert_array_equal(yb, y[want])


def test_subset_checks_its_indices():
    ds = TensorDataset(np.zeros((5, 2)), np.arange(5))
    assert Subset(ds, range(2, 5)).indices.tolist() == [2, 3, 4]
    assert len(Subset(ds, [])) == 0
    with pytest.raises(ValueError, match="index 5 is out of range for a data set of 5 samples"):
        Subset(ds, [0, 5])
    with pytest.raises(ValueError, match="index -1 is out of range"):
        Subset(ds, [-1])
    with pytest.raises(ValueError, match="1-D sequence of ints"):
        Subset(ds, [0.5])
    with pytest.raises(TypeError, match="must be a Dataset"):
        Subset(np.zeros(5), [0])


def test_arrays_lists_and_tuples_are_not_datasets():
    for obj in (np.zeros(3), [1, 2], (np.zeros(2), np.zeros(2)), "ab"):
        assert not is_dataset(obj)
    assert is_dataset(Recording(np.zeros(2), np.zeros(2)))


# --- memory-mapped IDX files -----------------------------------------------------------------------

def idx_bytes(magic, array):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_pair(folder, n=13, gz=False, rows=5, cols=4):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    paths = []
    for name, magic, a in (("images-idx3-ubyte", 2051, images), ("labels-idx1-ubyte", 2049, labels)):
        path = Path(folder) / (name + ".gz" * gz)
        path.write_bytes(gzip.compress(idx_bytes(magic, a)) if gz else idx_bytes(magic, a))
        paths.append(path)
    return paths


def test_idx_dataset_maps_the_file_and_gives_read_idx_batches(tmp_path):
    images_path, labels_path = write_pair(tmp_path)
    ds = IDXDataset(images_path, labels_path)
    assert isinstance(ds.images, np.memmap) and ds.images.offset == 16 and ds.labels.offset == 8
    assert len(ds) == 13 and not ds.images.flags.writeable
    want_x, want_y = read_idx(images_path), read_idx(labels_path)
    for idx in (np.array([12, 0, 5]), np.arange(13), np.random.default_rng(1).permutation(13)[:4]):
        xb, yb = ds[idx]
        assert type(xb) is np.ndarray and xb.dtype == np.uint8 and yb.dtype == np.int64
        np.testing.assert_array_equal(xb, want_x[idx])
        np.testing.assert_array_equal(yb, want_y[idx])
    xb, yb = IDXDataset(images_path, labels_path, transform=normalize)[np.array([3, 7])]
    np.testing.assert_array_equal(xb, normalize(want_x[[3, 7]]))
    assert xb.shape == (2, 1, 5, 4) and xb.dtype == np.float32


def test_a_gzip_idx_file_is_decompressed_once_next_to_it(tmp_path):
    (tmp_path / "plain").mkdir()
    plain = write_pair(tmp_path / "plain")
    gz = write_pair(tmp_path, gz=True)
    ds = IDXDataset(*gz)
    cache = tmp_path / "fastconv-cache"
    copies = sorted(cache.iterdir())  # "<name>.<digest of the path>-<digest of the file>"
    assert [p.name.split(".")[0] for p in copies] == ["images-idx3-ubyte", "labels-idx1-ubyte"]
    assert copies[0].read_bytes() == plain[0].read_bytes()
    np.testing.assert_array_equal(ds[np.arange(13)][0], read_idx(gz[0]))
    stamp = copies[0].stat().st_mtime_ns
    IDXDataset(*gz)  # the copy is reused, not rewritten
    assert sorted(cache.iterdir()) == copies and copies[0].stat().st_mtime_ns == stamp
    other = tmp_path / "elsewhere"
    IDXDataset(*gz, cache_dir=other)
    assert sorted(p.name for p in other.iterdir()) == [p.name for p in copies]


def test_idx_dataset_trains_as_the_normalised_arrays(tmp_path):
    paths = write_pair(tmp_path, n=40, rows=8, cols=8)
    x, y = normalize(read_idx(paths[0])), read_idx(paths[1]).astype(np.int64) % 3
    (tmp_path / "labels-idx1-ubyte").write_bytes(idx_bytes(2049, y))  # three classes
    common = dict(epochs=2, batch_size=16, seed=2, validation_split=0.25, augment=RandomShift(1),
                  progress=False)
    a, b = make_model(), make_model()
    trainer(a).fit(x, y, **common)
    trainer(b).fit(IDXDataset(*paths, transform=normalize), **common)
    assert_same_state(a.state_dict(), b.state_dict())
    with pytest.raises(TypeError, match="IDXDataset.*transform=fastconv.datasets.normalize"):
        trainer(make_model()).fit(IDXDataset(*paths), **common)


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[:-1], "truncated: payload has 259 bytes"),
    (lambda b: b + b"\0", "trailing bytes"),
    (lambda b: b"\0\0\x09\x03" + b[4:], "bad magic number 0x00000903"),
    (lambda b: b"\0\0\x08\x02" + b[4:], "bad magic number 0x00000802"),
    (lambda b: b[:10], "truncated header"),
    (lambda b: b[:3], "too short"),
])
def test_a_damaged_idx_file_is_named_in_the_error(damage, match, tmp_path):
    images_path, labels_path = write_pair(tmp_path)
    images_path.write_bytes(damage(images_path.read_bytes()))
    with pytest.raises(ValueError, match=match) as info:
        IDXDataset(images_path, labels_path)
    assert str(images_path) in str(info.value)


def test_idx_pairs_and_gzip_are_checked(tmp_path):
    images_path, labels_path = write_pair(tmp_path)
    labels_path.write_bytes(idx_bytes(2049, np.zeros(12)))
    with pytest.raises(ValueError, match="13 images in .* but 12 labels"):
        IDXDataset(images_path, labels_path)
    with pytest.raises(ValueError, match=r"expected images \(N, rows, cols\)"):
        IDXDataset(labels_path, labels_path)
    fake = tmp_path / "fake.gz"
    fake.write_bytes(idx_bytes(2049, np.zeros(3)))
    with pytest.raises(ValueError, match="not a gzip file"):
        memmap_idx(fake)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(idx_bytes(2049, np.zeros(300)))[:-20])
    with pytest.raises(ValueError, match="corrupt gzip"):
        memmap_idx(broken)
    assert not any(p.suffix == ".tmp" for p in (tmp_path / "fastconv-cache").iterdir())
    with pytest.raises(TypeError, match="transform must be callable"):
        IDXDataset(images_path, images_path, transform=3)
    empty = tmp_path / "empty"
    empty.write_bytes(idx_bytes(2049, np.zeros(0)))
    assert memmap_idx(empty).shape == (0,)


# --- Module.reseed ---------------------------------------------------------------------------------

class Noise(fc.Module):
    """A user's random layer: its public ``rng`` is reseeded like Dropout's."""

    def __init__(self):
        super().__init__()
        self.rng = np.random.default_rng(0)

    def forward(self, x):
        return x + self.rng.normal(size=x.shape) if self.training else x


def test_reseed_spawns_one_generator_per_random_module_in_modules_order():
    drop = fc.Dropout(0.5)
    model = fc.Sequential(fc.Linear(2, 2), drop, fc.Sequential(Noise(), drop), fc.Dropout(0.1))
    owners = [model[1], model[2][0], model[3]]  # the shared Dropout once, at its first place
    assert model.reseed(np.random.SeedSequence(11)) is model
    want = [np.random.default_rng(s).integers(2**62, size=3) for s in np.random.SeedSequence(11).spawn(3)]
    for m, w in zip(owners, want):
        np.testing.assert_array_equal(m.rng.integers(2**62, size=3), w)
    draws = {}
    for seed in (11, np.random.SeedSequence(11), np.random.default_rng(11)):
        model.reseed(seed)
        draws[type(seed).__name__] = [m.rng.integers(2**62) for m in owners]
    assert len({tuple(d) for d in draws.values()}) == 1  # an int, its SeedSequence, its Generator
    for bad in (-1, 1.5, True, "1", None):
        with pytest.raises(TypeError, match="reseed: seed must be"):
            model.reseed(bad)


def test_the_trainer_reseeds_through_model_reseed_with_the_epoch_streams():
    x, y = make_data(32)
    model = make_model()
    calls = []
    original = model.reseed

    def spy(seed):
        calls.append(seed.entropy)
        return original(seed)

    model.reseed = spy
    trainer(model).fit(x, y, epochs=2, batch_size=16, seed=4, progress=False)
    assert calls == [epoch_generators(4, e)[2].entropy for e in range(2)]


# --- two ranks -------------------------------------------------------------------------------------

def scenario_ranks(out):
    """On every rank: fit arrays and a Dataset of the same samples (shuffle, validation split,
    augmentation, dropout); then a Dataset without validation, recording what it is asked for."""
    from fastconv import distributed as dist
    rank, _ = dist.init()
    x, y = make_data(90)
    common = dict(epochs=2, batch_size=16, seed=3, augment=RandomShift(1), progress=False)
    models = [make_model(), make_model()]
    for model, data in zip(models, ((x, y), (Recording(x, y),))):
        Trainer(model, optimizer=SGD(model.parameters(), lr=0.05), distributed=True).fit(
            *data, validation_split=0.2, **common)
    recording = Recording(x, y)
    Trainer(make_model(), distributed=True).fit(recording, **common)
    np.savez(Path(out) / f"rank{rank}.npz", **{f"arrays.{k}": v for k, v in models[0].state_dict().items()},
             **{f"dataset.{k}": v for k, v in models[1].state_dict().items()})
    (Path(out) / f"requests{rank}.json").write_text(json.dumps(recording.requests))


def test_two_ranks_index_their_shards_of_a_dataset_and_match_the_arrays(tmp_path):
    pytest.importorskip("mpi4py", reason="fastconv.distributed needs mpi4py: pip install fastconv[mpi]")
    found = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(found) if found.exists() else shutil.which("mpiexec")
    assert mpiexec, "mpi4py is installed but no mpiexec was found (pip install mpich)"
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    command = [mpiexec, "-n", "2", sys.executable, __file__, "ranks", json.dumps({"out": str(tmp_path)})]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank in range(2):
        with np.load(tmp_path / f"rank{rank}.npz") as f:
            for key in (k for k in f.files if k.startswith("arrays.")):
                np.testing.assert_array_equal(f["dataset." + key[7:]], f[key], err_msg=key)
    requests = [json.loads((tmp_path / f"requests{r}.json").read_text()) for r in range(2)]
    for rank in range(2):  # the first request is the check that every rank has the same data
        assert requests[rank][0] == [0, 89]
        steps = iter(requests[rank][1:])
        for epoch in range(2):
            order = epoch_generators(3, epoch)[0].permutation(90)
            for start in range(0, 90, 16):
                assert next(steps) == order[start:start + 16][rank::2].tolist()
        assert next(steps, None) is None


if __name__ == "__main__":
    globals()["scenario_" + sys.argv[1]](**json.loads(sys.argv[2]))
