"""Dropout and Dropout2d on every tier. Dropout2d and F.dropout2d on the host tiers: whole
channels, torch.nn.Dropout2d's semantics (zero a channel with probability p, scale the rest by
1/(1-p), identity in eval), statistics, seeds, the gradient and the error contract; the Dropout
layer's mask, scaling, eval mode and gradient; the cuda tier's masks on Numba's simulator."""
import numpy as np
import pytest

import fastconv as fc
import fastconv.functional as F
from fastconv import layers as L

from helpers import ALL_TIERS, DTYPES, check_gradients, random, spaced
from op_helpers import cuda_test


def _x(shape=(6, 5, 3, 4), dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("tier", ALL_TIERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.9, 1.0])
def test_whole_channels_are_zeroed_or_scaled(tier, dtype, p):
    x = _x(dtype=dtype)
    out, mask = F.dropout2d(x, p, 7, backend=tier)
    assert out.dtype == dtype and mask.dtype == dtype and mask.shape == x.shape[:2]
    scale = 0.0 if p == 1 else 1 / (1 - p)
    assert set(np.unique(mask)) <= {0.0, dtype(scale)}
    np.testing.assert_array_equal(out, x * mask[:, :, None, None])
    if p == 0:
        np.testing.assert_array_equal(out, x)
    if p == 1:  # torch.nn.Dropout2d(1.0) gives zeros too
        assert not out.any()


def test_same_seed_same_mask_on_both_host_tiers_and_another_seed_another_mask():
    x = _x((8, 16, 2, 2))
    a = F.dropout2d(x, 0.5, 3, backend="naive")[1]
    np.testing.assert_array_equal(a, F.dropout2d(x, 0.5, 3, backend="cpu")[1])
    np.testing.assert_array_equal(a, F.dropout2d(x * 2, 0.5, 3)[1])
    assert (a != F.dropout2d(x, 0.5, 4)[1]).any()


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_statistics_drop_rate_and_preserved_mean(p):
    n, c = 200, 100  # 20,000 channels
    out, mask = F.dropout2d(np.ones((n, c, 2, 2), np.float64), p, 11)
    dropped = np.mean(mask == 0)
    sigma = np.sqrt(p * (1 - p) / (n * c))
    assert abs(dropped - p) < 5 * sigma
    assert abs(out.mean() - 1.0) < 5 * sigma / (1 - p)
    per_channel = out.reshape(n, c, -1)
    assert np.all(per_channel.min(axis=2) == per_channel.max(axis=2))  # constant within a channel
    # independent per (n, c): no channel is dropped in every image, no image loses every channel
    assert 0 < mask.astype(bool).mean(axis=0).min() and mask.astype(bool).mean(axis=1).min() > 0


def test_statistics_match_torch_dropout2d():
    """Both drop a fraction p of the channels of ones and scale the rest to 1/(1-p)."""
    torch = pytest.importorskip("torch")  # the oracle (a missing-package skip: CI fails on it)
    p, shape = 0.3, (100, 64, 2, 2)
    torch.manual_seed(0)
    ref = torch.nn.Dropout2d(p)(torch.ones(shape, dtype=torch.float64)).numpy()
    ours = fc.Dropout2d(p, rng=0)(np.ones(shape))
    for out in (ref, ours):
        channel = out[:, :, 0, 0]
        assert np.all(out == channel[:, :, None, None])
        assert set(np.unique(channel)) == {0.0, 1 / (1 - p)}
        assert abs(np.mean(channel == 0) - p) < 5 * np.sqrt(p * (1 - p) / channel.size)


@pytest.mark.parametrize("tier", ALL_TIERS)
def test_backward_is_the_gradient_of_the_masked_product(tier):
    torch = pytest.importorskip("torch")  # the oracle (a missing-package skip: CI fails on it)
    x, dout = _x(dtype=np.float64), _x(dtype=np.float64, seed=1)
    out, mask = F.dropout2d(x, 0.4, 5, backend=tier)
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    (t * torch.from_numpy(mask)[:, :, None, None]).backward(torch.from_numpy(dout))
    np.testing.assert_array_equal(F.dropout2d_backward(dout, mask, backend=tier), t.grad.numpy())


def test_layer_training_eval_and_repeatability():
    torch = pytest.importorskip("torch")  # the oracle (a missing-package skip: CI fails on it)
    x = _x()
    layer = fc.Dropout2d(0.5, rng=1)
    first, second = layer(x), layer(x)
    assert (first != second).any()  # a new mask per forward
    np.testing.assert_array_equal(first, fc.Dropout2d(0.5, rng=1)(x))  # the seed repeats it
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(x * dx, second)  # the mask of the latest forward
    layer.eval()
    np.testing.assert_array_equal(layer(x), x)
    np.testing.assert_array_equal(layer.backward(np.full_like(x, 3)), np.full_like(x, 3))
    assert repr(fc.Dropout2d(0.25)) == repr(torch.nn.Dropout2d(0.25))


def test_layer_in_a_network_and_the_trainer_repeats_runs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 32)

    def run():
        fc.manual_seed(3)
        model = fc.Sequential(fc.Conv2d(1, 4, 3), fc.ReLU(), fc.Dropout2d(0.5), fc.Flatten(),
                              fc.Linear(4 * 4 * 4, 3))
        fc.Trainer(model).fit(x, y, epochs=2, batch_size=8, seed=5, progress=False)
        return model.state_dict()

    a, b = run(), run()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_non_contiguous_and_integer_inputs():
    x = _x((4, 6, 3, 3))[:, ::2]
    out, mask = F.dropout2d(x, 0.5, 2)
    np.testing.assert_array_equal(out, x * mask[:, :, None, None])
    out, _ = F.dropout2d(np.ones((2, 2, 2, 2), np.int64), 0.5, 2)
    assert out.dtype == np.float32


@pytest.mark.parametrize("call, exc, match", [
    (lambda: F.dropout2d(np.ones((2, 3, 4)), 0.5, 0), ValueError, r"4-D.*\(2, 3, 4\)"),
    (lambda: F.dropout2d(np.ones((1, 1, 2, 2)), 1.5, 0), ValueError, r"\[0, 1\].*1.5"),
    (lambda: F.dropout2d(np.ones((1, 1, 2, 2)), 0.5, -1), ValueError, "seed"),
    (lambda: F.dropout2d(np.ones((1, 1, 2, 2)), 0.5, 0.5), TypeError, "seed"),
    (lambda: F.dropout2d_backward(np.ones((1, 2, 2, 2)), np.ones((1, 3))), ValueError,
     r"mask has shape \(1, 3\), expected \(1, 2\)"),
    (lambda: fc.Dropout2d(-0.1), ValueError, "probability"),
    (lambda: fc.Dropout2d(0.5)(np.ones((2, 3))), ValueError, r"4-D.*\(2, 3\)"),
])
def test_errors_name_the_argument(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# The Dropout layer

def test_dropout_mask_scaling_eval_and_gradient():
    layer = fc.Dropout(0.25, rng=0)
    x = np.ones((200, 50), dtype=np.float32)
    out = layer(x)
    assert out.dtype == np.float32
    kept = out != 0
    assert np.allclose(out[kept], 1 / 0.75) and 0.22 < 1 - kept.mean() < 0.28
    assert abs(out.mean() - 1) < 0.03  # inverted dropout preserves the mean
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    assert np.allclose(layer.backward(dy), dy * kept / 0.75)
    assert not np.array_equal(layer(x) != 0, kept)  # a fresh mask per forward
    layer.eval()
    assert np.array_equal(layer(x), x) and np.array_equal(layer.backward(dy), dy)
    # the same seed gives the same sequence of masks
    a, b = fc.Dropout(0.5, rng=3), fc.Dropout(0.5, rng=3)
    assert np.array_equal(a(x), b(x)) and np.array_equal(a(x), b(x))
    a.rng, b.rng = np.random.default_rng(8), np.random.default_rng(8)  # a trainer may reseed
    assert np.array_equal(a(x), b(x))
    with pytest.raises(TypeError, match="Generator"):
        a.rng = 8


def test_dropout_gradient_with_fixed_mask():
    layer = fc.Dropout(0.4)
    x = spaced((3, 4, 2))

    class Fixed(L.Module):  # re-seed before each forward so finite differences see one mask
        def forward(self, x):
            layer._rng = np.random.default_rng(5)
            return layer.forward(x)

        def _backward(self, dy, need_dx):
            return layer._backward(dy, need_dx)

    dx = check_gradients(Fixed(), x)
    assert 0 < np.count_nonzero(dx) < dx.size


def test_dropout_rejects_bad_p():
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="dropout probability"):
            fc.Dropout(p)


# ---------------------------------------------------------------------------------------------
# The cuda tier (Numba's simulator)

def _dev(a):
    return fc.to_device(np.ascontiguousarray(a))


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_mask_is_inverted_seeded_and_keeps_1_minus_p(G, close, dtype):
    rng = np.random.default_rng(0)
    x = random(rng, (2, 8, 8, 8), dtype)  # 1024 elements, 4 blocks
    out, mask = G.dropout(x, 0.25, 7)
    m = mask.copy_to_host()
    assert m.dtype == dtype and set(np.unique(m)) <= {0.0, dtype(1 / 0.75)}
    close("dropout", out, x * m, exact=True)
    assert abs((m == 0).mean() - 0.25) < 0.055  # 4 sigma of a binomial(1024, 0.25) fraction
    np.testing.assert_array_equal(G.dropout(x, 0.25, 7)[1].copy_to_host(), m)
    assert (G.dropout(x, 0.25, 8)[1].copy_to_host() != m).any()
    assert (G.dropout(x[:1, :1], 0.0, 7)[1].copy_to_host() == 1).all()
    dout = random(rng, x.shape, dtype)
    close("dropout_backward", G.dropout_backward(dout, mask), dout * m, exact=True)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_dropout2d_zeroes_whole_channels(G, close, dtype, p):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 8, 2, 3)).astype(dtype)
    out, mask = F.dropout2d(_dev(x), p, 9)
    m = fc.to_numpy(mask)
    assert m.shape == (4, 8) and m.dtype == dtype
    assert set(np.unique(m)) <= {0.0, dtype(0.0 if p == 1 else 1 / (1 - p))}
    if p == 0.5:
        assert 0 < (m == 0).sum() < m.size
    close("dropout2d out", out, x * m[:, :, None, None], exact=True)
    np.testing.assert_array_equal(fc.to_numpy(F.dropout2d(_dev(x), p, 9)[1]), m)  # repeatable
    dout = rng.standard_normal(x.shape).astype(dtype)
    close("dropout2d_backward", F.dropout2d_backward(_dev(dout), mask), dout * m[:, :, None, None],
          exact=True)


@cuda_test
def test_dropout2d_layer_on_the_device(G):
    layer = fc.Dropout2d(0.5, rng=0)
    x = np.ones((3, 16, 2, 2), np.float32)
    out = fc.to_numpy(layer(_dev(x)))
    assert np.all(out == out[:, :, :1, :1]) and set(np.unique(out)) <= {0.0, 2.0}
    dx = fc.to_numpy(layer.backward(_dev(np.ones_like(x))))
    np.testing.assert_array_equal(dx, out)
