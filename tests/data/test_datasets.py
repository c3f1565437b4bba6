"""Tests for fastconv.datasets: IDX files, MNIST loading and download, normalize, augmentations.

Never touches the network: downloads go through a fake opener or file:// URLs.
"""

import gzip
import io
import urllib.error
import urllib.request

import numpy as np
import pytest

from fastconv import datasets as ds

from helpers import MNIST_DIR as DATA

NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
HAVE_DATA = all((DATA / f"{n}.gz").is_file() or (DATA / n).is_file() for n in NAMES)
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason=f"real MNIST files not found in {DATA} (set FASTCONV_DATA)"
)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    """Tests choose their data folder explicitly; never download for real."""
    monkeypatch.delenv("FASTCONV_DATA", raising=False)

    def no_network(url, timeout=None):
        raise AssertionError(f"test tried to reach the network: {url}")

    monkeypatch.setattr(ds, "_urlopen", no_network)


@pytest.fixture(scope="module")
def mnist():
    if not HAVE_DATA:
        pytest.skip(f"real MNIST files not found in {DATA} (set FASTCONV_DATA)")
    return ds.load_mnist(DATA, download=False)


# ------------------------------------------------------------------ small synthetic IDX files


def idx_bytes(magic, dims, payload):
    header = np.array([magic, *dims], dtype=">u4").tobytes()
    return header + bytes(payload)


def write_set(folder, n_train=3, n_test=2, seed=0):
    """Write a tiny valid gzipped MNIST-format set; return the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(2051, x.shape, x.tobytes()))
        )
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(2049, y.shape, y.tobytes()))
        )
        arrays[prefix] = (x, y)
    return arrays


# ------------------------------------------------------------------------------- real data


def test_real_mnist_shapes_dtypes_and_known_facts(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == np.uint8 and x_test.dtype == np.uint8
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(y_train, minlength=10).tolist() == [
        5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949,
    ]
    assert np.bincount(y_test, minlength=10).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009,
    ]
    assert x_train.mean() == pytest.approx(33.318, abs=0.01)
    assert x_train.flags.writeable


@needs_data
def test_fashion_in_digits_root_is_not_mistaken_for_fashion():
    with pytest.raises(FileNotFoundError) as err:
        ds.load_mnist(DATA, kind="fashion", download=False)
    msg = str(err.value)
    assert str(DATA / "fashion" / "train-images-idx3-ubyte") in msg
    assert "MNIST digits" in msg


def test_env_var_root_and_fashion_subfolder(tmp_path, monkeypatch):
    digits = write_set(tmp_path, seed=1)
    fashion = write_set(tmp_path / "fashion", seed=2)
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path))
    (x, y), (xt, yt) = ds.load_mnist(download=False)
    np.testing.assert_array_equal(x, digits["train"][0])
    np.testing.assert_array_equal(yt, digits["t10k"][1])
    (x, y), _ = ds.load_mnist(kind="fashion", download=False)
    np.testing.assert_array_equal(x, fashion["train"][0])
    assert y.dtype == np.int64


def test_plain_uncompressed_files_accepted(tmp_path):
    arrays = write_set(tmp_path)
    for n in NAMES:
        gz = tmp_path / f"{n}.gz"
        (tmp_path / n).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    (x, y), _ = ds.load_mnist(tmp_path, download=False)
    np.testing.assert_array_equal(x, arrays["train"][0])
    np.testing.assert_array_equal(y, arrays["train"][1])


def test_unknown_kind():
    with pytest.raises(ValueError, match="kind"):
        ds.load_mnist("/nonexistent", kind="letters")


# ----------------------------------------------------------------------------- bad files


def _rewrite(path, transform):
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(transform(raw)))


CORRUPTIONS = {
    "bad magic": ("train-images-idx3-ubyte", lambda b: b"\x00\x00\x09\x03" + b[4:], "magic"),
    "wrong dim count": (
        "train-images-idx3-ubyte",
        lambda b: b"\x00\x00\x08\x02" + b[4:],
        "dimensions",
    ),
    "truncated": ("t10k-images-idx3-ubyte", lambda b: b[:-1], "truncated"),
    "trailing": ("t10k-labels-idx1-ubyte", lambda b: b + b"\x00", "trailing"),
    "count mismatch": (
        "train-labels-idx1-ubyte",
        lambda b: idx_bytes(2049, [2], b[8:10]),
        "3 images",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_file_raises_value_error_naming_it(tmp_path, case):
    name, transform, words = CORRUPTIONS[case]
    write_set(tmp_path)
    path = tmp_path / f"{name}.gz"
    _rewrite(path, transform)
    with pytest.raises(ValueError, match=words) as err:
        ds.load_mnist(tmp_path, download=False)
    assert str(path) in str(err.value)


def test_not_gzip_named_gz(tmp_path):
    write_set(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.decompress(path.read_bytes()))  # plain bytes under a .gz name
    with pytest.raises(ValueError, match="gzip") as err:
        ds.load_mnist(tmp_path, download=False)
    assert str(path) in str(err.value)
    path.write_bytes(b"\x1f\x8b" + b"garbage")  # gzip magic, corrupt stream
    with pytest.raises(ValueError, match="gzip") as err:
        ds.read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_plain_and_labels_swapped(tmp_path):
    p = tmp_path / "labels"
    p.write_bytes(idx_bytes(2049, [4], [1, 2, 3, 9]))
    out = ds.read_idx(p)
    assert out.dtype == np.uint8 and out.tolist() == [1, 2, 3, 9]
    write_set(tmp_path / "s")
    img, lab = (tmp_path / "s" / f"{n}.gz" for n in NAMES[:2])
    img.write_bytes(lab.read_bytes())  # a label file where the images belong
    with pytest.raises(ValueError, match="28x28") as err:
        ds.load_mnist(tmp_path / "s", download=False)
    assert str(img) in str(err.value)


# ------------------------------------------------------------------------------ downloads


def test_missing_files_without_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ds.load_mnist(tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "train-images-idx3-ubyte") in msg
    assert "FASTCONV_DATA" in msg and "download=True" in msg


def test_default_cache_respects_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "fastconv" / "fashion")):
        ds.load_mnist(kind="fashion", download=False)


class FakeOpener:
    """Serves bytes per URL like urllib.request.urlopen; unknown URLs fail like a 404."""

    def __init__(self, served):
        self.served, self.calls = served, []

    def __call__(self, url, timeout=None):
        self.calls.append(url)
        if url not in self.served:
            raise urllib.error.URLError(f"404 for {url}")
        return io.BytesIO(self.served[url])


@needs_data
def test_download_skips_corrupt_mirror(tmp_path, monkeypatch):
    bad, good = "https://bad.invalid/mnist/", "https://good.invalid/mnist"
    served = {}
    for n in NAMES:
        gz = (DATA / f"{n}.gz").read_bytes()
        served[good + "/" + n + ".gz"] = gz
        if "labels" in n:  # valid gzip, one label changed: SHA-256 must catch it
            raw = bytearray(gzip.decompress(gz))
            raw[-1] = (raw[-1] + 1) % 10
            served[bad + n + ".gz"] = gzip.compress(bytes(raw), compresslevel=1)
        else:  # truncated gzip stream
            served[bad + n + ".gz"] = gz[: len(gz) // 2]
    opener = FakeOpener(served)
    monkeypatch.setattr(ds, "_urlopen", opener)
    target = tmp_path / "cache"
    (x, y), (xt, yt) = ds.load_mnist(target, mirrors=[bad, good])
    assert len(opener.calls) == 8  # every file: bad mirror first, then good
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n in NAMES)
    assert y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert x.shape == (60000, 28, 28) and xt.shape == (10000, 28, 28)
    assert np.bincount(yt).tolist()[:2] == [980, 1135]


def test_download_all_mirrors_bad_leaves_nothing(tmp_path, monkeypatch):
    raw = idx_bytes(2051, [1, 28, 28], bytes(784))
    served = {
        "https://a.invalid/train-images-idx3-ubyte.gz": gzip.compress(raw),  # wrong hash
        "https://b.invalid/train-images-idx3-ubyte.gz": b"not gzip at all",
    }
    monkeypatch.setattr(ds, "_urlopen", FakeOpener(served))
    mirrors = ["https://a.invalid/", "https://b.invalid/", "https://c.invalid/"]
    with pytest.raises(ds.DownloadError) as err:
        ds.load_mnist(tmp_path, mirrors=mirrors)
    msg = str(err.value)
    assert "SHA-256" in msg and "gzip" in msg and "404" in msg
    assert all(m in msg for m in mirrors)
    assert list(tmp_path.iterdir()) == []  # no partial or temporary file


def test_fashion_download_checks_md5():
    assert "MD5" in ds._verify("fashion", NAMES[0], gzip.compress(b"x"))


@needs_data
def test_download_from_file_urls(tmp_path, monkeypatch):
    """Real urllib path (no network): a file:// mirror with bad bytes, then a good one."""
    name = "t10k-labels-idx1-ubyte"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / f"{name}.gz").write_bytes(gzip.compress(b"\x00" * 100))
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / f"{name}.gz").write_bytes((DATA / f"{name}.gz").read_bytes())
    monkeypatch.setattr(ds, "_urlopen", urllib.request.urlopen)
    out = ds._download(
        name, tmp_path, "digits", [(tmp_path / d).as_uri() + "/" for d in ("bad", "good")]
    )
    assert out == tmp_path / f"{name}.gz"
    assert np.bincount(ds.read_idx(out)).tolist() == [
        980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009,
    ]


# ---------------------------------------------------------------------------- normalize


def test_normalize_real_train(mnist):
    (x_train, _), _ = mnist
    out = ds.normalize(x_train)
    assert out.shape == (60000, 1, 28, 28) and out.dtype == np.float32
    assert abs(float(out.mean())) < 1e-3
    assert float(out.std()) == pytest.approx(1.0, abs=1e-3)
    assert ds.MNIST_MEAN == 0.1307 and ds.MNIST_STD == 0.3081


def test_normalize_float_input_not_rescaled_and_per_channel():
    x = np.ones((2, 3, 4, 4), dtype=np.float64)
    out = ds.normalize(x, mean=0.5, std=0.25)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, 2.0)
    out = ds.normalize(x, mean=[0.0, 0.5, 1.0], std=[1.0, 0.5, 2.0], dtype=np.float64)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out[:, :, 0, 0], [[1.0, 1.0, 0.0]] * 2)
    u8 = np.full((1, 5, 5), 255, dtype=np.uint8)
    np.testing.assert_allclose(ds.normalize(u8, mean=0, std=1), 1.0)
    with pytest.raises(ValueError):
        ds.normalize(np.ones((2, 4, 4), dtype=np.float32))


# ------------------------------------------------------------------------- augmentations


def batch(dtype=np.float32, n=6, seed=0):
    """Normalised-looking digits: background at the image minimum (not 0), a bright blob."""
    rng = np.random.default_rng(seed)
    x = np.full((n, 1, 28, 28), -0.4242, dtype=dtype)
    x[:, :, 8:20, 11:17] = rng.uniform(1.0, 2.8, (n, 1, 12, 6))
    return x


AUGMENTS = [ds.RandomShift(2), ds.RandomAffine(), ds.ElasticDistortion(alpha=8, sigma=3)]


@pytest.mark.parametrize("aug", AUGMENTS, ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_augment_shape_dtype_range_determinism(aug, dtype):
    x = batch(dtype)
    a = aug(x, np.random.default_rng(7))
    b = aug(x, np.random.default_rng(7))
    c = aug(x, np.random.default_rng(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, x)
    lo, hi = x.min(axis=(1, 2, 3)), x.max(axis=(1, 2, 3))  # convex combinations / background
    assert np.all(a.min(axis=(1, 2, 3)) >= lo - 1e-6) and np.all(a.max(axis=(1, 2, 3)) <= hi + 1e-6)


@pytest.mark.parametrize(
    "aug",
    [ds.RandomShift(0), ds.RandomAffine(0, 0, (1, 1)), ds.ElasticDistortion(alpha=0)],
    ids=repr,
)
def test_augment_identity_settings(aug):
    x = batch()
    np.testing.assert_allclose(aug(x, np.random.default_rng(0)), x, atol=1e-6)


class StubRng:
    """Always draws the upper bound: fixes the transform an augmentation applies."""

    def integers(self, low, high, size):
        return np.full(size, high - 1)

    def uniform(self, low, high, size):
        return np.full(size, float(high))


def test_shift_moves_known_pixel_and_fills_background():
    x = batch()
    x[0, 0, 5, 7] = 9.0
    out = ds.shift_images(x, 1, 0)
    assert out[0, 0, 6, 7] == 9.0 and out[0, 0, 5, 7] != 9.0
    np.testing.assert_array_equal(out[:, :, 0], x.min())  # uncovered row = background
    np.testing.assert_array_equal(out[:, :, 1:], x[:, :, :-1])
    np.testing.assert_array_equal(ds.random_shift(x, 1, StubRng()), ds.shift_images(x, 1, 1))
    per_image = ds.shift_images(x, np.array([0, 1, -1, 0, 0, 2]), np.array([0, 0, 0, 1, -1, 0]))
    np.testing.assert_array_equal(per_image[2, :, :-1], x[2, :, 1:])
    np.testing.assert_array_equal(per_image[4, :, :, :-1], x[4, :, :, 1:])


def test_affine_geometry_rotation_and_translation():
    x = batch(np.float64)
    x[:, 0, 3, 20] = 5.0  # asymmetric marker
    rot = ds.random_affine(x, degrees=90, translate=0, scale=(1, 1), rng=StubRng())
    np.testing.assert_allclose(rot, np.rot90(x, k=-1, axes=(2, 3)), atol=1e-9)
    moved = ds.random_affine(x, degrees=0, translate=1, scale=(1, 1), rng=StubRng())
    np.testing.assert_allclose(moved, ds.shift_images(x, 1, 1), atol=1e-9)
