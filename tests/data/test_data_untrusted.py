"""IDX files from elsewhere: the memory map's decompressed cache is keyed by the source file's
identity (two folders with the same file names sharing a cache folder never see each other's
data; a changed file is never served from a stale copy), corrupt gzip data is the ValueError
``read_idx`` gives with no partial copy left behind, and dimensions whose product overflows int64
are refused by both readers."""
import gzip
import os

import numpy as np
import pytest

from fastconv.data import IDXDataset, memmap_idx
from fastconv.datasets import read_idx

NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


def idx(magic, dims, payload=b""):
    return magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in dims) + payload


def write_set(folder, seed, n=6, mtime_ns=1_600_000_000_000_000_000):
    """An images/labels pair of gzip IDX files under MNIST's names, both with mtime ``mtime_ns``
    (stored uncompressed: the same size whatever the seed)."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    paths = [folder / name for name in NAMES]
    for path, magic, a in zip(paths, (2051, 2049), (images, labels)):
        path.write_bytes(gzip.compress(idx(magic, a.shape, a.tobytes()), compresslevel=0, mtime=0))
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return paths, images, labels


def check(ds, images, labels):
    x, y = ds[np.arange(len(labels))]
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_two_folders_with_the_same_file_names_share_a_cache_folder_safely(tmp_path):
    cache = tmp_path / "cache"
    a, a_images, a_labels = write_set(tmp_path / "digits", seed=1)
    b, b_images, b_labels = write_set(tmp_path / "fashion", seed=2)  # same names, sizes and mtimes
    assert [p.stat().st_size for p in a] == [p.stat().st_size for p in b]
    for _ in range(2):  # first the copies are made, then they are reused
        check(IDXDataset(*a, cache_dir=cache), a_images, a_labels)
        check(IDXDataset(*b, cache_dir=cache), b_images, b_labels)
    assert len(list(cache.iterdir())) == 4


def test_a_rewritten_file_is_never_served_from_a_stale_copy(tmp_path):
    paths, images, labels = write_set(tmp_path / "data", seed=1)
    check(IDXDataset(*paths), images, labels)
    stamp = paths[0].stat().st_mtime_ns
    _, new_images, new_labels = write_set(tmp_path / "data", seed=3)  # same size, same mtime
    assert paths[0].stat().st_mtime_ns == stamp
    check(IDXDataset(*paths), new_images, new_labels)
    os.utime(paths[0], ns=(stamp - 10**9, stamp - 10**9))  # an older file put back: mapped again
    check(IDXDataset(*paths), new_images, new_labels)
    cache = tmp_path / "data" / "fastconv-cache"
    assert sorted(p.name.split(".")[0] for p in cache.iterdir()) == \
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]  # earlier copies were removed


def _gzip_header():
    return gzip.compress(b"", mtime=0)[:10]


CORRUPT = {
    "bad deflate block": lambda raw: _gzip_header() + b"\xff" * 64,  # zlib.error: invalid block type
    "cut short": lambda raw: gzip.compress(raw, mtime=0)[:-12],  # EOFError
    "bad CRC": lambda raw: (lambda z: z[:-8] + bytes([z[-8] ^ 1]) + z[-7:])(gzip.compress(raw, mtime=0)),
}


@pytest.mark.parametrize("case", list(CORRUPT))
def test_corrupt_gzip_is_read_idx_s_value_error_and_leaves_no_partial_copy(tmp_path, case):
    raw = idx(2049, (300,), bytes(range(256)) + bytes(44))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(CORRUPT[case](raw))
    with pytest.raises(ValueError, match="corrupt gzip data") as want:
        read_idx(path)
    assert str(path) in str(want.value)
    cache = tmp_path / "cache"
    for _ in range(2):  # a second try finds nothing left over either
        with pytest.raises(ValueError, match="corrupt gzip data") as got:
            memmap_idx(path, cache_dir=cache)
        assert str(got.value).split(" (")[0] == str(want.value).split(" (")[0]
        with pytest.raises(ValueError, match="corrupt gzip data"):
            IDXDataset(path, path)
        assert not os.listdir(cache), f"left in the cache: {os.listdir(cache)}"
        assert not os.listdir(tmp_path / "fastconv-cache")


HUGE = (2**31, 2**31, 4)  # product 2^64: 0 in int64 arithmetic


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dims", [HUGE, (2**32 - 1,) * 3])
def test_dimensions_overflowing_int64_are_a_clear_value_error(tmp_path, gz, dims):
    raw = idx(2051, dims)
    path = tmp_path / ("big-idx3-ubyte" + ".gz" * gz)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    need = int(np.prod(np.array(dims, dtype=object)))
    message = rf"truncated: payload has 0 bytes but dimensions \({dims[0]}, {dims[1]}, {dims[2]}\) need {need}"
    for read in (read_idx, memmap_idx, lambda p: IDXDataset(p, p)):
        with pytest.raises(ValueError, match=message) as err:
            read(path)
        assert str(path) in str(err.value)
