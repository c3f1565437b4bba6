"""Residual and Concat blocks and a user's own Module: against PyTorch twins (forward, input and
parameter gradients, state dicts both ways; float32 and float64), finite differences in float64,
the naive tier, nesting in Sequential (summary, state_dict keys, to(), train()/eval(), save/load,
predict), shared modules, F.add / F.cat / F.split, errors."""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv import losses, optim
from fastconv.kernels import cpu
from helpers import DTYPES, HYPOTHESIS, grad_rel_error, numeric_grad

TORCH_RTOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-11}
WORST = {}


class TorchResidual(torch.nn.Module):
    """The PyTorch twin of fastconv.Residual: children ``body`` and ``shortcut``."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


class TorchConcat(torch.nn.ModuleList):
    """The PyTorch twin of fastconv.Concat: branches ``0``, ``1``, ... of a ModuleList."""

    def __init__(self, *branches, dim=1):
        super().__init__(branches)
        self.dim = dim

    def forward(self, x):
        return torch.cat([m(x) for m in self], self.dim)


def resnetish(lib):
    """A small network with both kinds of block, built from fastconv (``lib="fc"``) or torch."""
    nn, res, cat = (fc, fc.Residual, fc.Concat) if lib == "fc" else (torch.nn, TorchResidual, TorchConcat)
    layers = [
        nn.Conv2d(2, 4, 3, padding=1),
        res(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))),
        nn.ReLU(),
        res(nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.GroupNorm(2, 6), nn.SiLU()),
            nn.Sequential(nn.Conv2d(4, 6, 1, stride=2), nn.BatchNorm2d(6))),
        cat(nn.Identity(), nn.Sequential(nn.Conv2d(6, 2, 1), nn.GELU()), dim=1),
        nn.Flatten(), nn.Linear(8 * 3 * 3, 3)]
    return fc.Sequential(*layers, input_grad=True) if lib == "fc" else torch.nn.Sequential(*layers)


def _twins(dtype, seed=0):
    fc.manual_seed(seed)
    model = resnetish("fc").to(dtype)
    rng = np.random.default_rng(seed)
    for name, b in model.named_buffers():  # non-trivial running statistics
        if b.dtype.kind == "f":
            b[...] = rng.uniform(0.5, 1.5, b.shape)
    twin = resnetish("torch").to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
    return model, twin


def _compare(what, model, twin, x, dy):
    model.zero_grad()
    twin.zero_grad()
    out = model(x)
    dx = model.backward(dy)
    tx = torch.tensor(x, requires_grad=True)
    tout = twin(tx)
    tout.backward(torch.from_numpy(dy))
    tol = TORCH_RTOL[np.dtype(x.dtype)]
    pairs = [("out", out, tout.detach().numpy()), ("dx", dx, tx.grad.numpy())]
    tparams = dict(twin.named_parameters())
    assert [n for n, _ in model.named_parameters()] == list(tparams)
    pairs += [(n, p.grad, tparams[n].grad.numpy()) for n, p in model.named_parameters()]
    tstate = twin.state_dict()
    pairs += [(k, v, tstate[k].numpy()) for k, v in model.state_dict().items() if v.dtype.kind == "f"]
    for name, got, want in pairs:
        assert got.dtype == x.dtype, f"{what} {name}: dtype {got.dtype}"
        # relative to the largest reference value, or to the largest |dy| when that is larger: a
        # conv bias before training-mode batch norm has a true gradient of 0 (rounding noise)
        scale = np.abs(want).max(initial=0)
        if "running" not in name:
            scale = max(scale, np.abs(dy).max())
        err = float(np.max(np.abs(got.astype(np.float64) - want), initial=0) / scale)
        WORST[(what, x.dtype.name)] = max(WORST.get((what, x.dtype.name), 0.0), err)
        assert err <= tol, f"{what} {name}: relative error {err:.2e} against PyTorch"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_nested_blocks_match_a_torch_twin(dtype, mode):
    model, twin = _twins(dtype)
    model.train(mode == "train"), twin.train(mode == "train")
    rng = np.random.default_rng(1)
    for step in range(2):  # twice: running statistics and caches carry over correctly
        x = rng.standard_normal((3, 2, 6, 6)).astype(dtype)
        dy = rng.standard_normal((3, 3)).astype(dtype)
        _compare("Sequential(Residual, Concat)", model, twin, x, dy)


@pytest.mark.parametrize("dtype", DTYPES)
@settings(HYPOTHESIS, max_examples=15)
@given(c=st.integers(1, 3), widths=st.lists(st.integers(1, 3), min_size=1, max_size=3),
       dim=st.sampled_from([1, 2, -1]), project=st.booleans(), seed=st.integers(0, 2**16))
def test_random_blocks_match_torch(dtype, c, widths, dim, project, seed):
    """A Residual around a Concat of 1x1 convolutions (dim 1: channels add up; dim 2 or -1: the
    plane grows, each branch keeps the channels) on random sizes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, c, 3, 2)).astype(dtype)
    models = []
    for lib in ("fc", "torch"):
        nn, res, cat = (fc, fc.Residual, fc.Concat) if lib == "fc" else (torch.nn, TorchResidual, TorchConcat)
        out_c = [w if dim == 1 else c for w in widths]
        branches = [nn.Conv2d(c, k, 1) for k in out_c]
        body = cat(*branches, dim=dim)
        total = sum(out_c) if dim == 1 else c
        if dim == 1:
            shortcut = nn.Conv2d(c, total, 1) if project or total != c else None
        else:  # the plane has grown along dim: a shortcut that concatenates x with itself
            shortcut = cat(*[nn.Identity() for _ in widths], dim=dim)
        models.append(res(body, shortcut))
    model, twin = models
    model.to(dtype)
    twin.to(torch.float64 if np.dtype(dtype) == np.float64 else torch.float32)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    dy = rng.standard_normal(model.output_shape(x.shape)).astype(dtype)
    _compare("Residual(Concat)", model, twin, x, dy)


def test_state_dicts_load_both_ways_with_the_torch_twin(tmp_path):
    fc.manual_seed(3)
    model = resnetish("fc")
    twin = resnetish("torch")
    keys = list(model.state_dict())
    assert keys == list(twin.state_dict())
    assert {"1.body.0.weight", "1.body.4.running_var", "3.shortcut.0.weight", "3.shortcut.1.bias",
            "4.1.0.weight", "6.weight"} <= set(keys)
    model.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items()})
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, twin.state_dict()[k].numpy(), err_msg=k)
    fc.manual_seed(4)
    other = resnetish("fc")
    other.save(tmp_path / "m.npz")
    loaded = resnetish("fc").load(tmp_path / "m.npz")
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in loaded.state_dict().items()})
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(twin.state_dict()[k].numpy(), v, err_msg=k)


def test_save_load_predict_to_and_modes(tmp_path):
    model, _ = _twins(np.float32, seed=5)
    x = np.random.default_rng(6).standard_normal((5, 2, 6, 6)).astype(np.float32)
    model.train()
    model(x)  # running statistics move
    want = model.predict(x, batch_size=2)
    assert all(m.training for m in model.modules())  # predict restores the modes
    model.save(tmp_path / "m.npz")
    fc.manual_seed(7)
    again = resnetish("fc").load(tmp_path / "m.npz")
    np.testing.assert_array_equal(again.predict(x, batch_size=2), want)
    model.eval()
    assert not any(m.training for m in model.modules())
    np.testing.assert_allclose(model(x), want, rtol=1e-6)
    model.to(np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model[1].body[1].running_mean.dtype == np.float64
    out = model(x)  # the input takes the model's dtype, the identity shortcut too
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_summary_has_nested_rows_and_counts_every_parameter():
    model, _ = _twins(np.float32)
    rows = model.summary_rows((4, 2, 6, 6))
    names = [r["name"] for r in rows]
    assert names == ["0", "1.body.0", "1.body.1", "1.body.2", "1.body.3", "1.body.4", "1", "2",
                     "3.body.0", "3.body.1", "3.body.2", "3.shortcut.0", "3.shortcut.1", "3", "4.0",
                     "4.1.0", "4.1.1", "4", "5", "6"]
    assert sum(r["params"] for r in rows) == sum(p.size for p in model.parameters())
    by_name = {r["name"]: r for r in rows}
    assert by_name["1"]["output_shape"] == (4, 4, 6, 6) and by_name["4"]["output_shape"] == (4, 8, 3, 3)
    assert by_name["4"]["layer"] == "Concat(dim=1)" and by_name["3"]["params"] == 0
    text = model.summary((4, 2, 6, 6))
    assert "3.shortcut.0" in text and "Residual (body + shortcut)" in text


@pytest.mark.parametrize("backend", ["naive", "cpu"])
def test_network_gradients_match_finite_differences(backend):
    fc.set_backend(backend)
    try:
        fc.manual_seed(8)
        shared = fc.Conv2d(3, 3, 1)  # one module in both branches: backpropagated in reverse order
        model = fc.Sequential(
            fc.Conv2d(2, 3, 3, padding=1),
            fc.Residual(fc.Sequential(shared, fc.Tanh()), fc.Sequential(fc.LayerNorm((3, 4, 4)), shared)),
            fc.Concat(fc.Identity(), fc.Sequential(fc.Conv2d(3, 2, 1), fc.ELU()), fc.PReLU(3), dim=1),
            fc.GroupNorm(4, 8), fc.Flatten(), fc.Linear(8 * 16, 3), input_grad=True).to(np.float64)
        rng = np.random.default_rng(9)
        x, y = rng.standard_normal((2, 2, 4, 4)), np.array([0, 2])

        def loss():
            return losses.softmax_cross_entropy(model(x), y)[0]

        model.zero_grad()
        dx = model.backward(losses.softmax_cross_entropy(model(x), y)[1])
        grads = {n: p.grad.copy() for n, p in model.named_parameters()}
        assert grad_rel_error(dx, numeric_grad(loss, x, 1.0)) < 1e-6
        for n, p in model.named_parameters():
            assert grad_rel_error(grads[n], numeric_grad(loss, p.data, 1.0)) < 1e-6, n
    finally:
        fc.set_backend("cpu")


def test_naive_and_cpu_tiers_agree_on_the_network():
    results = []
    for backend in ("naive", "cpu"):
        fc.set_backend(backend)
        try:
            model, _ = _twins(np.float64, seed=10)
            rng = np.random.default_rng(11)
            x = rng.standard_normal((2, 2, 6, 6))
            out = model(x)
            dx = model.backward(rng.standard_normal(out.shape))
            results.append([out, dx] + [p.grad for p in model.parameters()])
        finally:
            fc.set_backend("cpu")
    for a, b in zip(*results):  # against 1 where the reference is ~0 (a bias before batch norm)
        assert np.max(np.abs(a - b)) / max(np.abs(b).max(), 1.0) < 1e-12


def test_first_block_without_input_gradient_still_trains():
    fc.manual_seed(12)
    model = fc.Sequential(fc.Residual(fc.Conv2d(1, 1, 3, padding=1)), fc.Flatten(), fc.Linear(9, 2))
    twin = fc.Sequential(*model.layers, input_grad=True)
    x, y = np.random.default_rng(13).standard_normal((2, 1, 3, 3)).astype(np.float32), np.array([0, 1])
    model.zero_grad()
    assert model.backward(losses.softmax_cross_entropy(model(x), y)[1]) is None
    grads = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    assert twin.backward(losses.softmax_cross_entropy(twin(x), y)[1]).shape == x.shape
    for g, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(g, p.grad)


def test_no_grad_forward_keeps_nothing():
    model, _ = _twins(np.float32)
    x = np.zeros((2, 2, 6, 6), np.float32)
    with fc.no_grad():
        out = model(x)
    assert all(not m._caches for m in model.modules())
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.ones_like(out))


class ChannelScale(fc.Module):
    """The recipe of fastconv/layers/container.py's docstring, word for word."""

    _param_names = ("weight",)

    def __init__(self, channels):
        super().__init__()
        self.weight = fc.Parameter(np.ones(channels, np.float32))

    def forward(self, x):
        x = self._input(x)
        self._save(x)
        return x * self.weight.data[None, :, None, None]

    def _backward(self, dy, need_dx):
        x = self._restore()
        w = self.weight
        if w.requires_grad:
            g = (dy * x).sum(axis=(0, 2, 3))
            w.grad = g if w.grad is None else w.grad + g
        return dy * w.data[None, :, None, None] if need_dx else None


def test_a_users_own_module_trains_with_the_rest():
    fc.manual_seed(14)
    scale = ChannelScale(3)
    model = fc.Sequential(fc.Conv2d(1, 3, 3, padding=1), fc.Residual(fc.Sequential(scale, fc.Tanh())),
                          fc.Flatten(), fc.Linear(3 * 4 * 4, 2), input_grad=True).to(np.float64)
    rng = np.random.default_rng(15)
    scale.weight.data[...] = rng.uniform(0.5, 1.5, 3)
    x, y = rng.standard_normal((4, 1, 4, 4)), np.array([0, 1, 1, 0])

    def loss():
        return losses.softmax_cross_entropy(model(x), y)[0]

    model.zero_grad()
    dx = model.backward(losses.softmax_cross_entropy(model(x), y)[1])
    assert scale.weight.grad.dtype == np.float64
    assert grad_rel_error(scale.weight.grad, numeric_grad(loss, scale.weight.data, 1.0)) < 1e-7
    assert grad_rel_error(dx, numeric_grad(loss, x, 1.0)) < 1e-7
    assert "1.body.0.weight" in model.state_dict()
    opt = optim.SGD(model.parameters(), lr=0.5)
    first = loss()
    for _ in range(10):
        opt.zero_grad()
        model.backward(losses.softmax_cross_entropy(model(x), y)[1])
        opt.step()
    assert loss() < first
    scale.weight.requires_grad_(False)
    model.zero_grad()
    model(x)
    model.backward(np.ones((4, 2)))
    assert scale.weight.grad is None


@HYPOTHESIS
@given(shape=st.lists(st.integers(0, 4), min_size=1, max_size=4).map(tuple), pieces=st.integers(1, 3),
       data=st.data())
def test_cat_and_split_match_numpy(shape, pieces, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    axis = dim % len(shape)
    rng = np.random.default_rng(0)
    sizes = [data.draw(st.integers(0, 3)) for _ in range(pieces)]
    parts = [rng.standard_normal(shape[:axis] + (s,) + shape[axis + 1:]) for s in sizes]
    for backend in ("naive", "cpu"):
        whole = F.cat(parts, dim, backend=backend)
        np.testing.assert_array_equal(whole, np.concatenate(parts, axis))
        back = F.split(whole, sizes, dim, backend=backend)
        assert len(back) == len(parts)
        for got, want in zip(back, parts):
            np.testing.assert_array_equal(got, want)
            assert got.flags.c_contiguous
    if whole.shape[axis] > 0:
        step = data.draw(st.integers(1, whole.shape[axis]))
        want = torch.split(torch.from_numpy(whole), step, dim)
        got = F.split(whole, step, dim)
        assert [g.shape for g in got] == [tuple(w.shape) for w in want]


def test_add_keeps_the_first_dtype_and_checks_shapes():
    a = np.ones((2, 3), np.float32)
    assert F.add(a, np.ones((2, 3))).dtype == np.float32
    np.testing.assert_array_equal(F.add(a, a), 2 * a)
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3, 2\)"):
        F.add(a, a.T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["naive", "cpu"])
@settings(deadline=None, max_examples=25)
@given(shape=st.lists(st.integers(0, 9), min_size=1, max_size=4), relu=st.booleans(),
       transposed=st.booleans())
def test_add_is_numpys_sum_then_relu(dtype, backend, shape, relu, transposed):
    """Bit for bit ``a + b`` (then ``max(., 0)`` with ``relu``, NaN kept) for any shape,
    non-contiguous inputs included, and arrays large enough to split across threads."""
    rng = np.random.default_rng(len(shape))
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    if a.size:
        a.flat[0], b.flat[-1] = np.nan, -a.flat[-1]  # a NaN, and an exact zero
    if transposed:
        a, b = a.T, b.T
    want = a + b
    if relu:
        want = np.where(want < 0, dtype(0), want)
    got = F.add(a, b, backend=backend, relu=relu)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    big = rng.standard_normal(2**19).astype(dtype)
    np.testing.assert_array_equal(F.add(big, big[::-1], backend=backend, relu=relu),
                                  np.maximum(big + big[::-1], 0) if relu else big + big[::-1])


def test_errors_name_the_problem():
    with pytest.raises(TypeError, match="body"):
        fc.Residual(3)
    with pytest.raises(TypeError, match="shortcut"):
        fc.Residual(fc.ReLU(), "x")
    with pytest.raises(ValueError, match="at least one branch"):
        fc.Concat()
    with pytest.raises(TypeError, match="branch 1"):
        fc.Concat(fc.ReLU(), np.zeros(3))
    with pytest.raises(TypeError, match="dim"):
        fc.Concat(fc.ReLU(), dim="1")
    x = np.zeros((2, 3, 4, 4), np.float32)
    block = fc.Residual(fc.Conv2d(3, 5, 1))
    with pytest.raises(ValueError, match=r"\(2, 5, 4, 4\).*\(2, 3, 4, 4\)"):
        block(x)
    with pytest.raises(ValueError, match="shape"):
        fc.Sequential(block).summary((2, 3, 4, 4))
    with pytest.raises(ValueError, match="except in dimension 1"):
        fc.Concat(fc.Identity(), fc.MaxPool2d(2))(x)
    with pytest.raises(ValueError, match="out of range"):
        fc.Concat(fc.Identity(), dim=4)(x)
    with pytest.raises(ValueError, match="non-empty"):
        F.cat([])
    with pytest.raises(ValueError, match="sum to 5"):
        F.split(x, [2, 3], 1)
    with pytest.raises(ValueError, match="positive"):
        F.split(x, 0, 1)
    with pytest.raises(RuntimeError, match="before forward"):
        fc.Concat(fc.ReLU()).backward(x)


def test_zz_report_largest_errors_against_torch(capsys):
    assert WORST
    with capsys.disabled():
        print("\nlargest relative error against PyTorch (max |a - b| / max |b|):")
        for (name, dtype), err in sorted(WORST.items()):
            print(f"  {name:<30} {dtype:<8} {err:.2e}")


def test_the_examples_resnet_and_mobilenet_build_and_backpropagate():
    import runpy
    from pathlib import Path
    example = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "train_mnist.py"))
    fc.manual_seed(0)
    model = example["resnet"]()
    assert model.output_shape((2, 1, 28, 28)) == (2, 10)
    names = [r["name"] for r in model.summary_rows((2, 1, 28, 28))]
    assert "5.shortcut.0" in names and "7.shortcut.1" in names and "3.shortcut.0" not in names
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    model.backward(np.ones((2, 10), np.float32) - 0.1 * model(x))
    assert all(p.grad is not None for p in model.parameters())
    assert example["ARCHS"]["resnet"]["val_split"] > 0 and example["ARCHS"]["mobilenet"]["val_split"] > 0
    try:
        mobile = example["mobilenet"]()
    except SystemExit as exc:  # Conv2d without groups=: the example says what is missing
        assert "groups" in str(exc)
    else:
        assert mobile.output_shape((2, 1, 28, 28)) == (2, 10)


# --- the cuda tier (Numba's simulator, tiny shapes): the tier's add, concat and split against the
# host, and a nested network moved with ``to("cuda")`` against its host copy ---------------------

@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_concat_split_match_cpu(G, close, dtype):
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((2, b, 3)).astype(dtype) for b in (1, 0, 2)]
    whole = close("concat", G.concat(parts), cpu.concat(parts), exact=True)
    for i, (got, want) in enumerate(zip(G.split(whole, [1, 0, 2]), cpu.split(whole, [1, 0, 2]))):
        close(f"split {i}", got, want, exact=True)
    a, b = parts[0], rng.standard_normal(parts[0].shape).astype(dtype)
    close("add", G.add(a, b), cpu.add(a, b), exact=True)
    close("add relu", G.add(a, b, True), cpu.add(a, b, True), exact=True)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")
def test_functional_combine_on_device_arrays(G, close):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    d = fc.to_device(x)
    out = F.cat([d, fc.to_device(x[:, :1].copy())], dim=1)
    assert fc._backend.is_device_array(out)
    close("cat", out, np.concatenate([x, x[:, :1]], axis=1), exact=True)
    pieces = F.split(d, [2, 1], dim=1)
    close("split", pieces[1], x[:, 2:], exact=True)
    close("add", F.add(d, d), x + x, exact=True)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")
def test_nested_blocks_on_the_device_match_the_host(G, close):
    def build():
        fc.manual_seed(2)
        return fc.Sequential(
            fc.Conv2d(1, 2, 1),
            fc.Residual(fc.Sequential(fc.Conv2d(2, 2, 1, bias=False), fc.BatchNorm2d(2), fc.ReLU())),
            fc.Residual(fc.Conv2d(2, 3, 1, stride=2), fc.Sequential(fc.Conv2d(2, 3, 1, stride=2),
                                                                    fc.BatchNorm2d(3))),
            fc.Concat(fc.Identity(), fc.Sequential(fc.Conv2d(3, 1, 1), fc.SiLU())),
            fc.Flatten(), fc.Linear(4, 2), input_grad=True)
    host, dev = build(), build().to("cuda")
    x = np.random.default_rng(3).standard_normal((2, 1, 2, 2)).astype(np.float32)
    dy = np.random.default_rng(4).standard_normal((2, 2)).astype(np.float32)
    out = dev(x)  # a host input is copied to the device once, by the model's first block or layer
    assert fc._backend.is_device_array(out)
    close("out", out, host(x))
    close("dx", dev.backward(fc.to_device(dy)), host.backward(dy))
    for (name, p), q in zip(host.named_parameters(), dev.parameters()):
        assert q.device == "cuda"
        close(name, q.grad, p.grad)
    block = fc.Residual(fc.Conv2d(2, 2, 1)).to("cuda")  # a block copies a host input itself
    assert fc._backend.is_device_array(block(np.ones((1, 2, 2, 2))))
