"""The error contract, item by item from the review: a ValueError/TypeError naming the problem,
raised before anything runs or changes; empty batches work both ways."""
import numpy as np
import pytest

import fastconv as fc
import fastconv.functional as F
from fastconv import _backend

from helpers import ALL_TIERS, host


@pytest.fixture(params=ALL_TIERS)
def backend(request):
    return request.param


def test_device_array_with_an_explicit_host_backend_is_a_type_error():
    from numba import cuda  # the simulator, set up by conftest
    x = cuda.to_device(np.ones((1, 1, 4, 4), np.float32))
    w = np.ones((1, 1, 3, 3), np.float32)
    for name in ("cpu", "naive"):
        with pytest.raises(TypeError, match="device array.*to_numpy"):
            F.conv2d(x, w, backend=name)
        with pytest.raises(TypeError, match="device array"):
            F.relu(x, backend=name)
    out, cache = F.conv2d(np.ones((1, 1, 4, 4), np.float32), w, backend="cpu")
    with pytest.raises(TypeError, match="device array"):
        F.conv2d_backward(cuda.to_device(np.ones(out.shape, np.float32)), cache)


def test_cross_entropy_of_an_empty_batch_is_nan(backend):
    loss, dlogits = F.cross_entropy(np.zeros((0, 10), np.float32), np.zeros(0, np.int64), backend=backend)
    assert np.isnan(loss) and host(dlogits).shape == (0, 10)


def test_batch_norm_rejects_running_stats_of_the_wrong_shape_before_changing_them(backend):
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    w, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    rm, rv = np.full(3, 0.5, np.float32), np.full(4, 2.0, np.float32)
    with pytest.raises(ValueError, match=r"running_var has shape \(4,\), expected \(3,\)"):
        F.batch_norm(x, w, b, rm, rv, training=True, backend=backend)
    assert np.all(rm == 0.5) and np.all(rv == 2.0)


def test_batch_norm_backward_rejects_a_transposed_gradient(backend):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    _, cache = F.batch_norm(x, np.ones(3, np.float32), np.zeros(3, np.float32), backend=backend)
    with pytest.raises(ValueError, match=r"dout has shape \(2, 3, 5, 4\), expected \(2, 3, 4, 5\)"):
        F.batch_norm_backward(np.ones((2, 3, 5, 4), np.float32), cache)


def test_batchnorm_layer_counts_a_batch_only_after_it_validated():
    layer = fc.BatchNorm2d(3)
    with pytest.raises(ValueError):
        layer(np.ones((1, 3, 1, 1), np.float32))  # one value per channel: cannot train
    assert int(layer.num_batches_tracked) == 0


def test_empty_batch_through_a_network_both_ways():
    fc.manual_seed(0)
    model = fc.Sequential(fc.Conv2d(1, 2, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2), fc.AvgPool2d(1),
                          fc.Flatten(), fc.Linear(8, 3), input_grad=True)
    x = np.zeros((0, 1, 4, 4), np.float32)
    out = model(x)
    assert out.shape == (0, 3)
    dx = model.backward(np.zeros((0, 3), np.float32))
    assert dx.shape == (0, 1, 4, 4)
    assert np.all(model[0].weight.grad == 0)


def test_pooling_backward_accepts_an_empty_batch(backend):
    x = np.zeros((0, 2, 4, 4), np.float32)
    out, switches = F.max_pool2d(x, 2, backend=backend)
    assert host(F.max_pool2d_backward(out, switches, x.shape, backend=backend)).shape == x.shape
    assert host(F.avg_pool2d_backward(F.avg_pool2d(x, 2, backend=backend), x.shape, 2,
                                      backend=backend)).shape == x.shape


@pytest.mark.parametrize("seed, exc", [(None, TypeError), (-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_dropout_seed_errors_name_the_seed(seed, exc):
    with pytest.raises(exc, match="seed"):
        F.dropout(np.ones(4, np.float32), 0.5, seed)


@pytest.mark.parametrize("layer", [fc.MaxPool2d(2), fc.Flatten(), fc.ReLU(), fc.AvgPool2d(2), fc.Dropout(0.5)])
def test_parameterless_layers_take_nested_lists(layer):
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    out = layer(x.tolist())
    assert isinstance(out, np.ndarray) and out.shape == layer.output_shape(x.shape)


def test_model_load_of_a_foreign_npz_says_it_is_not_a_model_file(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, names=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a fastconv model file"):
        fc.Sequential(fc.Linear(2, 2)).load(path)


@pytest.mark.parametrize("make", [
    lambda: fc.Conv2d(1, 2, 2.5), lambda: fc.Conv2d(1.5, 2, 3), lambda: fc.Conv2d(1, "2", 3),
    lambda: fc.Linear(2.0, 3), lambda: fc.BatchNorm2d(None), lambda: fc.MaxPool2d(2.5),
])
def test_a_non_integer_size_is_always_a_type_error(make):
    with pytest.raises(TypeError):
        make()


@pytest.mark.parametrize("make", [lambda: fc.Conv2d(0, 2, 3), lambda: fc.Conv2d(1, 2, 0),
                                  lambda: fc.Linear(3, -1), lambda: fc.MaxPool2d(0)])
def test_a_non_positive_size_is_always_a_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_resolve_names_the_device_rule():
    assert _backend.check_host("cpu", np.ones(2)) == "cpu"
