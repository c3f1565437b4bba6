"""Dropout2d and F.dropout2d on the host tiers: whole channels, torch.nn.Dropout2d's semantics
(zero a channel with probability p, scale the rest by 1/(1-p), identity in eval), statistics,
seeds, the gradient and the error contract. (The cuda tier: tests/cuda/test_cuda_losses.py.)"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import numpy as np
import pytest
import torch

import fastconv as fc
import fastconv.functional as F

from helpers import ALL_TIERS


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
    x, dout = _x(dtype=np.float64), _x(dtype=np.float64, seed=1)
    out, mask = F.dropout2d(x, 0.4, 5, backend=tier)
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    (t * torch.from_numpy(mask)[:, :, None, None]).backward(torch.from_numpy(dout))
    np.testing.assert_array_equal(F.dropout2d_backward(dout, mask, backend=tier), t.grad.numpy())


def test_layer_training_eval_and_repeatability():
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
