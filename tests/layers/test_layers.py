"""Layer API: finite-difference gradients (float64), accumulation, init, errors, torch parity
(the Dropout layer: tests/ops/test_dropout.py)."""
import numpy as np
import pytest

import fastconv as fc
from fastconv import layers as L

from helpers import check_gradients, spaced


LAYERS = {
    "conv_pad1": (lambda: fc.Conv2d(2, 3, 3, padding=1, rng=1), (2, 2, 5, 5)),
    "conv_stride2_rect": (lambda: fc.Conv2d(2, 3, (3, 2), stride=2, rng=2), (2, 2, 7, 6)),
    "conv_nobias_same": (lambda: fc.Conv2d(1, 2, 2, padding="same", bias=False, rng=3), (2, 1, 4, 5)),
    "linear": (lambda: fc.Linear(5, 4, rng=4), (3, 5)),
    "linear_nobias": (lambda: fc.Linear(5, 4, bias=False, rng=5), (3, 5)),
    "maxpool": (lambda: fc.MaxPool2d(2), (2, 2, 4, 5)),
    "maxpool_overlap": (lambda: fc.MaxPool2d(3, stride=2), (2, 2, 7, 7)),
    "avgpool": (lambda: fc.AvgPool2d(2), (2, 2, 4, 4)),
    "avgpool_rect": (lambda: fc.AvgPool2d((2, 3), stride=1), (1, 2, 4, 5)),
    "relu": (lambda: fc.ReLU(), (2, 3, 4)),
    "sigmoid": (lambda: fc.Sigmoid(), (2, 3, 4)),
    "tanh": (lambda: fc.Tanh(), (2, 3, 4)),
    "flatten": (lambda: fc.Flatten(), (2, 3, 2, 2)),
    "bn2d": (lambda: fc.BatchNorm2d(3), (4, 3, 3, 2)),
    "bn1d": (lambda: fc.BatchNorm1d(4), (6, 4)),
    "bn1d_3d": (lambda: fc.BatchNorm1d(3), (4, 3, 5)),
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_gradients_match_finite_differences(name, mode):
    make, shape = LAYERS[name]
    layer = make().to(np.float64).train(mode == "train")
    rng = np.random.default_rng(7)
    for p in layer.parameters():  # non-trivial BN scale/shift and biases
        p.data[...] = rng.standard_normal(p.shape) * 0.5 + (1 if p.data.ndim == 1 else 0)
    if isinstance(layer, (L.BatchNorm1d, L.BatchNorm2d)):
        layer.running_mean[...] = rng.standard_normal(layer.num_features) * 0.1
        layer.running_var[...] = rng.uniform(0.5, 2.0, layer.num_features)
    check_gradients(layer, spaced(shape) * (20 if name.startswith("bn") else 1))


def test_backward_accumulates_and_zero_grad_resets():
    layer = fc.Linear(3, 2, rng=0)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    dy = np.ones((2, 2), dtype=np.float32)
    layer(x)
    layer.backward(dy)
    first = layer.weight.grad.copy()
    assert layer.weight.grad.dtype == np.float32 and np.allclose(first, dy.T @ x)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(dy)  # each forward's cache is taken back by one backward
    layer(x)
    layer.backward(dy)
    assert np.allclose(layer.weight.grad, 2 * first) and np.allclose(layer.bias.grad, [4, 4])
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None


def test_conv_input_grad_false_skips_dx_and_keeps_weight_grads():
    x = spaced((2, 2, 5, 5)).astype(np.float32)
    dy = np.ones((2, 3, 5, 5), dtype=np.float32)
    a, b = fc.Conv2d(2, 3, 3, padding=1, rng=0), fc.Conv2d(2, 3, 3, padding=1, rng=0)
    b.input_grad = False
    a(x), b(x)
    assert a.backward(dy).shape == x.shape
    assert b.backward(dy) is None
    assert np.allclose(a.weight.grad, b.weight.grad) and np.allclose(a.bias.grad, b.bias.grad)


def test_pytorch_default_init_dtype_and_seeding():
    conv = fc.Conv2d(16, 64, 3, rng=0)
    assert conv.weight.shape == (64, 16, 3, 3) and conv.weight.dtype == np.float32
    bound = 1 / np.sqrt(144)  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std = bound / sqrt(3)
    assert np.abs(conv.weight.data).max() <= bound and abs(conv.weight.data.std() * np.sqrt(3) / bound - 1) < 0.05
    assert conv.bias.dtype == np.float32 and np.abs(conv.bias.data).max() <= bound and conv.bias.data.std() > 0
    lin = fc.Linear(200, 300, rng=0)
    bound = 1 / np.sqrt(200)
    assert lin.weight.shape == (300, 200) and abs(lin.weight.data.std() * np.sqrt(3) / bound - 1) < 0.05
    # the same seed gives the same weights in either dtype
    assert np.array_equal(fc.Linear(4, 3, rng=9, dtype=np.float64).weight.data.astype(np.float32),
                          fc.Linear(4, 3, rng=9).weight.data)
    fc.manual_seed(0)
    first = [fc.Conv2d(1, 4, 3).weight.data, fc.Linear(4, 2).weight.data]
    fc.manual_seed(0)
    second = [fc.Conv2d(1, 4, 3).weight.data, fc.Linear(4, 2).weight.data]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[0], fc.Conv2d(1, 4, 3).weight.data)
    with pytest.raises(TypeError, match="rng"):
        fc.Linear(2, 2, rng="seed")


def test_parameter_and_state_of_batchnorm():
    bn = fc.BatchNorm2d(3)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert bn.weight.grad is None and bn.weight.shape == (3,) and bn.weight.dtype == np.float32
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()
    bn(np.random.default_rng(0).standard_normal((4, 3, 2, 2)))
    assert int(bn.num_batches_tracked) == 1 and bn.running_mean.dtype == np.float32


def test_input_is_cast_to_parameter_dtype():
    lin = fc.Linear(3, 2, rng=0)
    assert lin(np.ones((2, 3))).dtype == np.float32
    assert lin(np.ones((2, 3), dtype=np.uint8)).dtype == np.float32
    assert fc.BatchNorm1d(3)(np.ones((4, 3))).dtype == np.float32
    assert lin.to(np.float64)(np.ones((2, 3), dtype=np.float32)).dtype == np.float64
    with pytest.raises(TypeError, match="real numeric"):
        lin(np.ones((2, 3), dtype=complex))


def test_to_dtype_and_devices():
    conv = fc.Conv2d(1, 2, 3, rng=0)
    w = conv.weight
    assert conv.to(np.float64) is conv and conv.weight is w and w.dtype == np.float64
    assert conv.to("cpu") is conv
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        conv.to("gpu")
    with pytest.raises(ValueError, match="float32 or float64"):
        conv.to(np.float16)


@pytest.mark.parametrize("layer, shape, words", [
    (fc.Linear(3136, 128), (2, 3200), ["Linear(3136, 128)", "3200", "3136"]),
    (fc.Linear(3136, 128), (2, 64, 7, 7), ["Linear(3136, 128)", "(2, 64, 7, 7)", "Flatten"]),
    (fc.Conv2d(1, 32, 3, padding=1), (2, 3, 28, 28),
     ["Conv2d(1, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))", "(2, 3, 28, 28)", "(N, 1, H, W)"]),
    (fc.Conv2d(1, 4, 5), (2, 1, 3, 3), ["Conv2d(1, 4", "(2, 1, 3, 3)", "5x5"]),
    (fc.Conv2d(1, 4, 3), (1, 28, 28), ["Conv2d(1, 4", "(1, 28, 28)"]),
    (fc.MaxPool2d(4), (2, 1, 3, 3), ["MaxPool2d(kernel_size=4", "(2, 1, 3, 3)"]),
    (fc.AvgPool2d(2), (2, 3), ["AvgPool2d(kernel_size=2", "(2, 3)"]),
    (fc.BatchNorm2d(8), (2, 4, 3, 3), ["BatchNorm2d(8", "(2, 4, 3, 3)"]),
    (fc.BatchNorm1d(8), (2, 8, 3, 3), ["BatchNorm1d(8", "(2, 8, 3, 3)"]),
    (fc.BatchNorm1d(8), (1, 8), ["more than 1 value per channel", "(1, 8)"]),
    (fc.Flatten(), (5,), ["Flatten(", "(5,)"]),
])
def test_shape_errors_name_layer_and_shapes(layer, shape, words):
    with pytest.raises(ValueError) as info:
        layer(np.zeros(shape, dtype=np.float32))
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_backward_before_forward_and_bad_dy():
    with pytest.raises(RuntimeError, match="before forward"):
        fc.Conv2d(1, 2, 3).backward(np.zeros((1, 2, 1, 1)))
    with pytest.raises(RuntimeError, match="before forward"):
        fc.ReLU().backward(np.zeros(3))
    bn = fc.BatchNorm1d(3)
    bn(np.random.default_rng(0).standard_normal((4, 3)))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        bn.backward(np.zeros((4, 4)))


def test_constructor_validation():
    with pytest.raises(ValueError, match="in_channels"):
        fc.Conv2d(0, 2, 3)
    with pytest.raises(ValueError, match="same"):
        fc.Conv2d(1, 2, 3, stride=2, padding="same")
    with pytest.raises(TypeError, match="in_features"):  # a non-integer size: TypeError, as for kernel_size
        fc.Linear(2.5, 2)
    with pytest.raises(ValueError, match="stride"):
        fc.MaxPool2d(2, stride=0)


# --- torch parity --------------------------------------------------------------------------------

def _torch_layer(torch, layer):
    nn = torch.nn
    if isinstance(layer, fc.Conv2d):
        t = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                      layer.padding, bias=layer.bias is not None)
    elif isinstance(layer, fc.Linear):
        t = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    elif isinstance(layer, (fc.BatchNorm1d, fc.BatchNorm2d)):
        t = getattr(nn, type(layer).__name__)(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    else:
        t = {fc.MaxPool2d: lambda: nn.MaxPool2d(layer.kernel_size, layer.stride),
             fc.AvgPool2d: lambda: nn.AvgPool2d(layer.kernel_size, layer.stride),
             fc.ReLU: nn.ReLU, fc.Sigmoid: nn.Sigmoid, fc.Tanh: nn.Tanh, fc.Flatten: nn.Flatten}[type(layer)]()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return t.double()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_forward_and_grads_match_torch(name):
    torch = pytest.importorskip("torch")
    make, shape = LAYERS[name]
    layer = make().to(np.float64)
    t = _torch_layer(torch, layer)
    rng = np.random.default_rng(11)
    for mode in (True, True, True, False):  # three training batches, then eval with running stats
        layer.train(mode), t.train(mode)
        layer.zero_grad(), t.zero_grad()
        x = spaced(shape, seed=int(rng.integers(100))) * 3
        tx = torch.tensor(x, requires_grad=True)
        out, tout = layer(x), t(tx)
        dy = rng.standard_normal(out.shape)
        tout.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.backward(dy), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        tparams = dict(t.named_parameters())
        for pname, p in layer.named_parameters():
            np.testing.assert_allclose(p.grad, tparams[pname].grad.numpy(), rtol=1e-9, atol=1e-12)
    for key, value in t.state_dict().items():
        np.testing.assert_allclose(layer.state_dict()[key], value.numpy(), rtol=1e-12, err_msg=key)


def test_repr_matches_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    pairs = [(fc.Conv2d(1, 32, 3, padding=1), nn.Conv2d(1, 32, 3, padding=1)),
             (fc.Conv2d(1, 2, (3, 5), stride=2, bias=False), nn.Conv2d(1, 2, (3, 5), stride=2, bias=False)),
             (fc.Conv2d(1, 2, 3, padding="same"), nn.Conv2d(1, 2, 3, padding="same")),
             (fc.MaxPool2d(2), nn.MaxPool2d(2)), (fc.MaxPool2d((2, 3), stride=1), nn.MaxPool2d((2, 3), stride=1)),
             (fc.AvgPool2d(2), nn.AvgPool2d(2)), (fc.ReLU(), nn.ReLU()), (fc.Sigmoid(), nn.Sigmoid()),
             (fc.Tanh(), nn.Tanh()), (fc.Flatten(), nn.Flatten()), (fc.Linear(3, 4), nn.Linear(3, 4)),
             (fc.Linear(3, 4, bias=False), nn.Linear(3, 4, bias=False)), (fc.Dropout(0.25), nn.Dropout(0.25)),
             (fc.BatchNorm2d(8), nn.BatchNorm2d(8)), (fc.BatchNorm1d(4, eps=1e-3, momentum=0.2),
                                                      nn.BatchNorm1d(4, eps=1e-3, momentum=0.2))]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
