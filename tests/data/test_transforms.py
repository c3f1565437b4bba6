"""fastconv.transforms: standardisation and PCA/ZCA whitening against NumPy references (the
whitened training covariance is the identity), crops, flips and Compose (deterministic per seed,
resume-exact in the Trainer), state dicts and the error contract."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastconv as fc
from fastconv import transforms as T
from fastconv.transforms import augment, preprocess
from fastconv.datasets import RandomShift
from fastconv.optim import flatten_state

from helpers import HYPOTHESIS


def _correlated(n=400, shape=(3, 2, 2), low=10.0, high=1000.0, seed=0):
    """(N, *shape) float64 samples whose covariance has eigenvalues spread in [low, high]."""
    rng = np.random.default_rng(seed)
    d = int(np.prod(shape))
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    z = rng.standard_normal((n, d))
    z = (z - z.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T  # exactly white
    x = z * np.sqrt(np.geomspace(low, high, d)) @ q.T + rng.standard_normal(d) * 5
    return x.reshape((n,) + shape)


def _cov(a):
    a = a.reshape(len(a), -1)
    a = a - a.mean(axis=0)
    return a.T @ a / len(a)


# -- Standardize ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_standardize_matches_numpy_and_applies_train_statistics_to_test(dtype, monkeypatch):
    monkeypatch.setattr(preprocess, "_CHUNK", 7)  # several chunks: the float64 passes are chunked
    rng = np.random.default_rng(1)
    x = (rng.random((50, 3, 4, 5)) * [[[[200]], [[50]], [[10]]]]).astype(dtype)
    test = (rng.random((9, 3, 4, 5)) * 100).astype(dtype)
    s = T.Standardize().fit(x)
    ref = x.astype(np.float64)
    np.testing.assert_allclose(s.mean_, ref.mean(axis=(0, 2, 3)), rtol=1e-13)
    np.testing.assert_allclose(s.std_, ref.std(axis=(0, 2, 3)), rtol=1e-12)
    out = s.transform(test)
    assert out.dtype == (np.float32 if dtype == np.uint8 else dtype)
    want = (test - ref.mean(axis=(0, 2, 3))[:, None, None]) / ref.std(axis=(0, 2, 3))[:, None, None]
    np.testing.assert_allclose(out, want, rtol=1e-6 if out.dtype == np.float32 else 1e-12, atol=1e-6)
    train = s.fit_transform(x).astype(np.float64)
    np.testing.assert_allclose(train.mean(axis=(0, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(train.std(axis=(0, 2, 3)), 1, rtol=1e-5)


def test_standardize_constant_channel_and_dtype_option():
    x = np.ones((4, 2, 3, 3))
    x[:, 1] = np.arange(4)[:, None, None]
    s = T.Standardize(dtype=np.float32).fit(x)
    np.testing.assert_array_equal(s.std_, [1.0, np.std(np.arange(4))])
    out = s(x, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.all(out[:, 0] == 0)


def test_state_dicts_round_trip_through_npz(tmp_path):
    x = _correlated(n=60)
    for t in (T.Standardize(), T.PCAWhitening(n_components=5), T.PCAWhitening(0.5),
              T.ZCAWhitening(epsilon=1e-3)):
        t.fit(x)
        np.savez(tmp_path / "t.npz", **t.state_dict())
        with np.load(tmp_path / "t.npz") as f:
            loaded = type(t)().load_state_dict(dict(f))  # the options come with the state
        assert repr(loaded) == repr(t)
        np.testing.assert_array_equal(loaded.transform(x[:5]), t.transform(x[:5]))
    with pytest.raises(ValueError, match=r"missing keys \['std_', 'shape_'\]"):
        T.Standardize().load_state_dict({"mean_": np.zeros(3)})
    with pytest.raises(RuntimeError, match="not fitted"):
        T.ZCAWhitening().state_dict()


# -- whitening -----------------------------------------------------------------------------------

def _cs231n(x, eps):
    """CS231n's recipe: Xrot = X U, Xwhite = Xrot / sqrt(S + eps), from the SVD of the covariance."""
    flat = x.reshape(len(x), -1)
    mean = flat.mean(axis=0)
    u, s, _ = np.linalg.svd(_cov(flat))
    return mean, u, s


@pytest.mark.parametrize("eps", [0.0, 1e-5, 0.1])
def test_pca_and_zca_match_the_numpy_reference_on_train_and_test(eps):
    x, test = _correlated(n=300, seed=2), _correlated(n=20, seed=3)
    mean, u, s = _cs231n(x, eps)
    pca, zca = T.PCAWhitening(eps).fit(x), T.ZCAWhitening(eps).fit(x)
    np.testing.assert_allclose(pca.eigenvalues_, s, rtol=1e-10)
    np.testing.assert_allclose(pca.mean_, mean, rtol=1e-13, atol=1e-12)
    centred = test.reshape(20, -1) - mean
    want_pca = centred @ u / np.sqrt(s + eps)
    got_pca = pca.transform(test)
    signs = np.sign(np.sum(got_pca * want_pca, axis=0))  # eigenvectors are defined up to sign
    np.testing.assert_allclose(got_pca, want_pca * signs, rtol=1e-8, atol=1e-10)
    want_zca = want_pca @ u.T
    got_zca = zca.transform(test)
    assert got_zca.shape == test.shape
    np.testing.assert_allclose(got_zca.reshape(20, -1), want_zca, rtol=1e-8, atol=1e-10)


def test_whitened_training_covariance_is_the_identity_in_float64():
    x = _correlated(n=500, seed=4)  # eigenvalues in [10, 1000]: epsilon / S <= 1e-6
    for t in (T.PCAWhitening(), T.ZCAWhitening(), T.PCAWhitening(0.0), T.ZCAWhitening(0.0)):
        white = t.fit_transform(x)
        assert white.dtype == np.float64
        cov = _cov(white)
        np.testing.assert_allclose(cov, np.eye(cov.shape[0]), atol=1e-6, err_msg=repr(t))
        if t.epsilon == 0:
            np.testing.assert_allclose(cov, np.eye(cov.shape[0]), atol=1e-10, err_msg=repr(t))
        np.testing.assert_allclose(white.reshape(len(x), -1).mean(axis=0), 0, atol=1e-10)


def test_whitening_with_epsilon_shrinks_each_direction_by_s_over_s_plus_eps():
    x = _correlated(n=300, low=0.01, high=1.0, seed=5)
    pca = T.PCAWhitening(epsilon=0.05).fit(x)
    s = pca.eigenvalues_
    np.testing.assert_allclose(_cov(pca.transform(x)), np.diag(s / (s + 0.05)), atol=1e-10)
    zca = T.ZCAWhitening(epsilon=0.05).fit(x)
    u = zca.components_
    np.testing.assert_allclose(_cov(zca.transform(x)), u.T @ np.diag(s / (s + 0.05)) @ u, atol=1e-10)
    # ZCA is the symmetric whitening matrix: the closest to the identity
    np.testing.assert_allclose(zca._matrix, zca._matrix.T, atol=1e-12)


def test_pca_components_signs_and_dimension_reduction():
    x = _correlated(n=200, seed=6)
    pca = T.PCAWhitening(n_components=4).fit(x)
    full = T.PCAWhitening().fit(x)
    np.testing.assert_allclose(pca.transform(x), full.transform(x)[:, :4], rtol=1e-12)
    c = pca.components_
    np.testing.assert_allclose(c @ c.T, np.eye(len(c)), atol=1e-12)
    assert np.all(c[np.arange(len(c)), np.abs(c).argmax(axis=1)] > 0)
    with pytest.raises(ValueError, match="n_components=13 but the samples have only 12"):
        T.PCAWhitening(n_components=13).fit(x)


def test_whitening_images_float32_and_a_singular_covariance():
    rng = np.random.default_rng(7)
    x = rng.random((10, 1, 4, 4)).astype(np.float32)  # 16 pixels, 10 samples: rank 9
    zca = T.ZCAWhitening().fit(x)
    out = zca.transform(x)
    assert out.shape == x.shape and out.dtype == np.float32 and np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="singular.*epsilon > 0"):
        T.ZCAWhitening(epsilon=0.0).fit(x)


# -- augmentations -------------------------------------------------------------------------------

@st.composite
def _crop_cases(draw):
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    pad = draw(st.sampled_from([None, 0, 1, 2, (1, 2), (0, 1, 2, 3)]))
    left, top, right, bottom = augment._padding(pad)
    size = (draw(st.integers(1, h + top + bottom)), draw(st.integers(1, w + left + right)))
    mode = draw(st.sampled_from(["constant", "edge", "reflect", "symmetric"]))
    if mode == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
        mode = "symmetric"  # np.pad's reflect needs the padding smaller than the image
    return (draw(st.integers(1, 4)), draw(st.integers(1, 3)), h, w), pad, size, mode, draw(
        st.integers(0, 2**31))


@HYPOTHESIS
@given(_crop_cases())
def test_random_crop_matches_a_per_image_reference(case):
    shape, pad, size, mode, seed = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    crop = T.RandomCrop(size, padding=pad, fill=-3.0, padding_mode=mode)
    out = crop(x, np.random.default_rng(seed))
    left, top, right, bottom = augment._padding(pad)
    kwargs = {"constant_values": -3.0} if mode == "constant" else {}
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode=mode, **kwargs)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, padded.shape[2] - size[0] + 1, len(x))
    j = rng.integers(0, padded.shape[3] - size[1] + 1, len(x))
    for n in range(len(x)):
        np.testing.assert_array_equal(out[n], padded[n, :, i[n]:i[n] + size[0], j[n]:j[n] + size[1]])
    assert out.dtype == x.dtype and out.shape == shape[:2] + size


def test_random_crop_covers_every_offset_and_keeps_size_without_padding():
    x = np.arange(1, 2 * 1 * 5 * 5 + 1, dtype=np.float64).reshape(2, 1, 5, 5)  # no pixel is 0
    np.testing.assert_array_equal(T.RandomCrop(5)(x, 0), x)
    crop = T.RandomCrop(3, padding=1)
    seen = {tuple(crop(x[:1], seed).ravel()) for seed in range(300)}
    assert len(seen) == 25  # 5 x 5 offsets of a 3x3 window in the padded 7x7 image


def test_horizontal_flip_probability_and_determinism():
    x = np.random.default_rng(0).standard_normal((2000, 1, 2, 3))
    out = T.RandomHorizontalFlip(0.3)(x, 5)
    flipped = np.all(out == x[..., ::-1], axis=(1, 2, 3))
    assert np.all(flipped | np.all(out == x, axis=(1, 2, 3)))
    assert abs(flipped.mean() - 0.3) < 5 * np.sqrt(0.3 * 0.7 / 2000)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(0.3)(x, 5), out)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(0.0)(x, 1), x)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0)(x, 1), x[..., ::-1])


def test_compose_is_deterministic_per_seed_and_mixes_in_other_transforms():
    x = np.random.default_rng(1).standard_normal((8, 2, 6, 6)).astype(np.float32)
    s = T.Standardize().fit(x)
    t = T.Compose([s, T.RandomCrop(6, padding=2, padding_mode="edge"), T.RandomHorizontalFlip(),
                   RandomShift(1)])
    a, b = t(x, np.random.default_rng(3)), t(x, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert (a != t(x, np.random.default_rng(4))).any()
    assert a.dtype == np.float32 and a.shape == x.shape
    # the same draws, one transform after the other
    rng = np.random.default_rng(3)
    step = s.transform(x)
    for inner in t.transforms[1:]:
        step = inner(step, rng)
    np.testing.assert_array_equal(a, step)
    assert repr(t) == ("Compose([Standardize(), RandomCrop(size=(6, 6), padding=(2, 2, 2, 2), "
                       "padding_mode='edge'), RandomHorizontalFlip(p=0.5), RandomShift(max_shift=1)])")


def test_augmentation_in_the_trainer_resumes_bit_for_bit(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    augment = T.Compose([T.RandomCrop(6, padding=1), T.RandomHorizontalFlip()])

    def model(seed):
        fc.manual_seed(seed)
        return fc.Sequential(fc.Conv2d(1, 3, 3), fc.ReLU(), fc.Dropout2d(0.3), fc.Flatten(),
                             fc.Linear(48, 3))

    common = dict(batch_size=8, seed=11, augment=augment, progress=False)
    straight = model(0)
    fc.Trainer(straight).fit(x, y, epochs=3, **common)
    ckpt = tmp_path / "run.npz"
    fc.Trainer(model(0)).fit(x, y, epochs=2, checkpoint=ckpt, **common)
    resumed = model(9)
    trainer = fc.Trainer(resumed)
    trainer.fit(x, y, epochs=3, checkpoint=ckpt, resume=True, **common)
    for key, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value, err_msg=key)
    assert trainer.history.params["augment"] == repr(augment)
    without = model(0)
    fc.Trainer(without).fit(x, y, epochs=3, batch_size=8, seed=11, progress=False)
    assert any((flatten_state(without.state_dict())[k] != v).any()
               for k, v in flatten_state(straight.state_dict()).items())


@pytest.mark.parametrize("call, exc, match", [
    (lambda: T.RandomCrop(0), ValueError, "size"),
    (lambda: T.RandomCrop(3, padding=(1, 2, 3)), ValueError, "padding"),
    (lambda: T.RandomCrop(3, padding=-1), ValueError, "padding"),
    (lambda: T.RandomCrop(3, padding_mode="wrap"), ValueError, "padding_mode"),
    (lambda: T.RandomCrop(5)(np.zeros((1, 1, 4, 4)), 0), ValueError, r"larger than the padded.*\(4, 4\)"),
    (lambda: T.RandomCrop(2)(np.zeros((4, 4)), 0), ValueError, r"\(N, C, H, W\).*\(4, 4\)"),
    (lambda: T.RandomHorizontalFlip(1.5), ValueError, r"\[0, 1\]"),
    (lambda: T.RandomHorizontalFlip()(np.zeros((1, 1, 2, 2)), "seed"), TypeError, "rng"),
    (lambda: T.Compose([1]), TypeError, "not callable"),
    (lambda: T.Standardize().transform(np.zeros((2, 3))), RuntimeError, "not fitted"),
    (lambda: T.Standardize().fit(np.zeros((2, 3))).transform(np.zeros((2, 4))), ValueError,
     r"fitted on samples of shape \(3,\)"),
    (lambda: T.Standardize().fit(np.zeros((0, 3))), ValueError, "non-empty"),
    (lambda: T.ZCAWhitening(epsilon=-1), ValueError, "epsilon"),
    (lambda: T.PCAWhitening(n_components=0), ValueError, "n_components"),
    (lambda: T.ZCAWhitening().fit(np.array([["a"]])), TypeError, "real numeric"),
])
def test_errors_name_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
