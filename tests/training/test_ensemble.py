"""fastconv.Ensemble: mean of softmax probabilities and majority vote (its tie rules), on fixed
logits and on trained networks; the error contract."""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import numpy as np
import pytest
import torch

import fastconv as fc
from fastconv import Ensemble


class Fixed:
    """A stand-in model whose predict returns fixed logits (and records the batch size)."""

    def __init__(self, logits):
        self.logits = np.asarray(logits, dtype=np.float32)
        self.batch_sizes = []

    def predict(self, x, batch_size=256):
        self.batch_sizes.append(batch_size)
        return self.logits[:len(x)]


def _probs(logits):
    return torch.softmax(torch.tensor(np.asarray(logits, np.float64)), dim=1).numpy()


def test_mean_mode_averages_softmax_probabilities():
    rng = np.random.default_rng(0)
    logits = [rng.standard_normal((20, 4)) * 3 for _ in range(3)]
    ens = Ensemble([Fixed(z) for z in logits])
    x = np.zeros((20, 1))
    want = np.mean([_probs(np.float32(z)) for z in logits], axis=0)
    proba = ens.predict_proba(x, batch_size=7)
    np.testing.assert_allclose(proba, want, rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    pred = ens.predict(x)
    np.testing.assert_array_equal(pred, want.argmax(axis=1))
    assert pred.dtype == np.int64
    assert all(m.batch_sizes == [7, 256] for m in ens)


def test_mean_and_vote_can_disagree():
    # model a is very sure of class 0, models b and c mildly prefer class 1
    a, b = [[10.0, 0.0]], [[0.0, 1.0]]
    ens = Ensemble([Fixed(a), Fixed(b), Fixed(b)])
    assert ens.predict(np.zeros((1, 1)))[0] == 0  # p(0) = (1 + 0.27 + 0.27) / 3 > 0.5
    assert Ensemble([Fixed(a), Fixed(b), Fixed(b)], mode="vote").predict(np.zeros((1, 1)))[0] == 1


def test_vote_majority_and_its_tie_rules():
    x = np.zeros((3, 1))
    m1 = Fixed([[3, 0, 0], [5, 0, 0], [0, 0, 0]])     # votes 0, 0, 0 (row 2: tie inside -> 0)
    m2 = Fixed([[0, 3, 0], [0, 1, 0], [0, 0, 0]])     # votes 1, 1, 0
    m3 = Fixed([[0, 3, 0], [0, 0, 2], [0, 0, 0]])     # votes 1, 2, 0
    pred = Ensemble([m1, m2, m3], mode="vote").predict(x)
    # row 0: class 1 has two votes; row 1: one vote each, class 0 has the highest mean
    # probability; row 2: all models tie inside -> every vote is class 0
    np.testing.assert_array_equal(pred, [1, 0, 0])
    # an exact tie of votes and mean probability goes to the lowest class
    tie = Ensemble([Fixed([[1.0, 0.0]]), Fixed([[0.0, 1.0]])], mode="vote")
    assert tie.predict(np.zeros((1, 1)))[0] == 0
    swapped = Ensemble([Fixed([[0.0, 1.0]]), Fixed([[1.0, 0.0]])], mode="vote")
    assert swapped.predict(np.zeros((1, 1)))[0] == 0


def test_vote_tie_goes_to_the_highest_mean_probability_not_the_lowest_class():
    ens = Ensemble([Fixed([[2.0, 0.0, 0.0]]), Fixed([[0.0, 0.0, 5.0]])], mode="vote")
    assert ens.predict(np.zeros((1, 1)))[0] == 2


def test_one_model_ensemble_is_the_model():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((30, 5))
    for mode in ("mean", "vote"):
        np.testing.assert_array_equal(Ensemble([Fixed(z)], mode).predict(np.zeros((30, 1))),
                                      np.float32(z).argmax(axis=1))


def test_ensemble_of_trained_networks():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((90, 1, 5, 5)).astype(np.float32)
    y = (x[:, 0, 2, :].sum(axis=1) > 0).astype(np.int64) + (x[:, 0, :, 2].sum(axis=1) > 1)
    nets = []
    for seed in range(3):
        fc.manual_seed(seed)
        net = fc.Sequential(fc.Conv2d(1, 4, 3, padding=1), fc.ReLU(), fc.Flatten(),
                            fc.Linear(100, 3))
        fc.Trainer(net).fit(x, y, epochs=3, batch_size=16, seed=seed, progress=False)
        nets.append(net)
    ens = Ensemble(nets)
    want = np.mean([_probs(n.predict(x)) for n in nets], axis=0)
    np.testing.assert_allclose(ens.predict_proba(x, batch_size=32), want, rtol=1e-6)
    np.testing.assert_array_equal(ens.predict(x, batch_size=13), want.argmax(axis=1))
    assert all(n.training for n in nets)  # predict restores the training mode
    assert repr(Ensemble(nets, "vote")) == "Ensemble(3 models, mode='vote')"
    assert len(ens) == 3 and list(ens) == nets and ens[1] is nets[1]


@pytest.mark.parametrize("make, exc, match", [
    (lambda: Ensemble([]), ValueError, "at least one model"),
    (lambda: Ensemble([object()]), TypeError, "model 0 .* no predict"),
    (lambda: Ensemble([Fixed([[0.0]])], mode="median"), ValueError, "'mean' or 'vote'"),
    (lambda: Ensemble([Fixed([[0.0, 1.0]]), Fixed([[0.0, 1.0, 2.0]])]).predict(np.zeros((1, 1))),
     ValueError, r"model 1 predicts shape \(1, 3\), model 0 \(1, 2\)"),
    (lambda: Ensemble([Fixed([[0.0]])]).predict(np.zeros((1, 1)), batch_size=0), ValueError,
     "batch_size"),
])
def test_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()
