"""fastconv.init against torch.nn.init: fans, gains, and the statistics of every initialiser.

Random initialisers are checked on large tensors against their theoretical bounds, means and
standard deviations (tolerances of several standard errors), and torch's own draws are checked
against the same theory so that the formulas in these tests are torch's.
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import math
import warnings

import numpy as np
import pytest
import torch

import fastconv as fc
from fastconv import init
from fastconv.init import _calculate_fan_in_and_fan_out

SHAPES = [(3, 4), (8, 3, 5, 5), (2, 3, 4), (16, 1, 3, 3, 3), (7, 1)]
BIG = (256, 64, 3, 3)  # 147456 values: the sample std is within ~0.6% (3 sigma) of the truth


@pytest.mark.parametrize("shape", SHAPES)
def test_fans_match_torch(shape):
    assert _calculate_fan_in_and_fan_out(np.zeros(shape)) == \
        torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))


@pytest.mark.parametrize("args", [("linear",), ("conv2d",), ("conv_transpose3d",), ("sigmoid",),
                                  ("tanh",), ("relu",), ("leaky_relu",), ("leaky_relu", 0.2),
                                  ("leaky_relu", 0), ("leaky_relu", 1), ("selu",)])
def test_gain_matches_torch(args):
    ours, theirs = init.calculate_gain(*args), torch.nn.init.calculate_gain(*args)
    assert ours == theirs and type(ours) is type(theirs)


def _stats_ok(w, std, bound=None, mean=0.0):
    w = np.asarray(w, dtype=np.float64).ravel()
    n = w.size
    assert abs(w.mean() - mean) < 5 * std / math.sqrt(n)
    assert w.std() == pytest.approx(std, rel=5 / math.sqrt(2 * n) + 1e-3)
    if bound is not None:
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > bound * (1 - 1e-3)  # the whole range is used


def _theory(name, shape, **kw):
    """(std, uniform bound or None) from the formulas of the torch.nn.init docs."""
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape))
    if name.startswith("xavier"):
        std = kw.get("gain", 1.0) * math.sqrt(2.0 / (fan_in + fan_out))
    else:
        fan = fan_in if kw.get("mode", "fan_in").lower() == "fan_in" else fan_out
        gain = torch.nn.init.calculate_gain(kw.get("nonlinearity", "leaky_relu"), kw.get("a", 0))
        std = gain / math.sqrt(fan)
    return std, (math.sqrt(3.0) * std if name.endswith("uniform_") else None)


CASES = [
    ("xavier_uniform_", dict()),
    ("xavier_uniform_", dict(gain=init.calculate_gain("tanh"))),
    ("xavier_normal_", dict(gain=2.0)),
    ("kaiming_uniform_", dict()),
    ("kaiming_uniform_", dict(a=math.sqrt(5))),  # PyTorch's default layer init
    ("kaiming_uniform_", dict(mode="fan_out", nonlinearity="relu")),
    ("kaiming_normal_", dict(nonlinearity="relu")),
    ("kaiming_normal_", dict(a=0.2, mode="fan_out")),
    ("kaiming_normal_", dict(nonlinearity="tanh", mode="FAN_IN")),
]


@pytest.mark.parametrize("name, kw", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_statistics_match_theory_and_torch(name, kw, dtype):
    std, bound = _theory(name, BIG, **kw)
    w = np.zeros(BIG, dtype=dtype)
    out = getattr(init, name)(w, generator=0, **kw)
    assert out is w and w.dtype == dtype
    ours = bound
    if bound is not None and dtype == np.float32:
        ours = np.float32(bound)  # a float64 draw below the bound may round up to it
    _stats_ok(w, std, ours)
    t = getattr(torch.nn.init, name)(torch.zeros(BIG, dtype=torch.float64),
                                     generator=torch.Generator().manual_seed(0), **kw)
    _stats_ok(t.numpy(), std, bound)


@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (6, 2, 3, 3), (4, 4), (1, 9), (9, 1)])
@pytest.mark.parametrize("gain", [1, 2.5])
def test_orthogonal(shape, gain):
    w = init.orthogonal_(np.zeros(shape), gain=gain, generator=3)
    m = w.reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(len(gram)), atol=1e-12)
    t = torch.nn.init.orthogonal_(torch.zeros(shape, dtype=torch.float64), gain=gain)
    tm = t.reshape(shape[0], -1).numpy()
    tgram = tm @ tm.T if m.shape[0] <= m.shape[1] else tm.T @ tm
    np.testing.assert_allclose(tgram, gram, atol=1e-12)  # the same kind of matrix as torch's


def test_orthogonal_float32_and_haar_signs():
    w = init.orthogonal_(np.zeros((64, 64), np.float32), generator=1)
    assert w.dtype == np.float32
    np.testing.assert_allclose(w @ w.T, np.eye(64), atol=2e-6)
    # The sign fix makes Q Haar distributed: the diagonal is not biased positive (QR's is).
    diag = np.concatenate([np.diag(init.orthogonal_(np.zeros((32, 32)), generator=s))
                           for s in range(20)])
    assert abs(np.mean(diag > 0) - 0.5) < 0.1


@pytest.mark.parametrize("fn, value", [(init.zeros_, 0.0), (init.ones_, 1.0),
                                       (lambda a: init.constant_(a, -2.5), -2.5)])
def test_constants(fn, value):
    for a in (np.full((3, 4), 7.0, np.float32), np.full(5, 7.0)):
        assert fn(a) is a
        assert (a == value).all()


def test_uniform_and_normal():
    w = init.uniform_(np.zeros(200000), a=-1.0, b=3.0, generator=0)
    _stats_ok(w, 4 / math.sqrt(12), mean=1.0)
    assert w.min() >= -1.0 and w.max() < 3.0
    _stats_ok(init.normal_(np.zeros(200000), mean=2.0, std=0.5, generator=1), 0.5, mean=2.0)


def test_parameter_views_generators_and_dtypes():
    p = fc.Parameter(np.zeros((6, 5), np.float32))
    assert init.xavier_uniform_(p, generator=7) is p and p.data.dtype == np.float32
    w64 = init.xavier_uniform_(np.zeros((6, 5)), generator=7)
    np.testing.assert_array_equal(p.data, w64.astype(np.float32))  # drawn in float64
    np.testing.assert_array_equal(w64, init.xavier_uniform_(np.zeros((6, 5)),
                                                            generator=np.random.default_rng(7)))
    fc.manual_seed(11)
    a = init.kaiming_normal_(np.zeros((4, 3)))
    fc.manual_seed(11)
    np.testing.assert_array_equal(a, init.kaiming_normal_(np.zeros((4, 3))))
    base = np.zeros((4, 6))
    view = base[:, ::2]  # non-contiguous: filled in place through the view
    init.orthogonal_(view, generator=0)
    assert (base[:, 1::2] == 0).all() and (base[:, ::2] != 0).all()
    np.testing.assert_allclose(view.T @ view, np.eye(3), atol=1e-12)  # 4 x 3: orthonormal columns


def test_errors():
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.xavier_uniform_(np.zeros(5))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init.kaiming_normal_(fc.Parameter(np.zeros(3)))
    with pytest.raises(ValueError, match="2 or more dimensions"):
        init.orthogonal_(np.zeros(4))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(np.zeros((3, 3)), mode="fan_avg")
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("gelu")
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", "0.1")
    with pytest.raises(TypeError, match="floating-point"):
        init.ones_(np.zeros(3, dtype=np.int64))
    with pytest.raises(TypeError, match="Parameter or a NumPy array"):
        init.zeros_([1.0, 2.0])
    with pytest.raises(TypeError, match="rng must be"):
        init.normal_(np.zeros(3), generator="seed")


def test_zero_element_kaiming_warns_and_is_a_no_op():
    w = np.zeros((0, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert init.kaiming_uniform_(w) is w
    assert "zero-element" in str(caught[0].message)
    assert init.orthogonal_(np.zeros((0, 4))).shape == (0, 4)


# --- the cuda tier (Numba's simulator) -----------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")
def test_init_fills_a_device_parameter(G):
    p = fc.Parameter(fc.to_device(np.zeros((4, 6), np.float32)))
    data = p.data
    assert init.orthogonal_(p, generator=2) is p and p.data is data
    w = fc.to_numpy(p.data)
    np.testing.assert_allclose(w @ w.T, np.eye(4), atol=1e-6)
    np.testing.assert_array_equal(w, init.orthogonal_(np.zeros((4, 6), np.float32), generator=2))
