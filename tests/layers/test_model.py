"""Sequential: whole-network gradients, torch parity, state dicts, save/load, predict, summary."""
import os

import numpy as np
import pytest

import fastconv
import fastconv as fc
import fastconv.kernels.cpu
from helpers import check_gradients, spaced


def small_net(seed=0, dropout=False):
    fc.manual_seed(seed)
    layers = [fc.Conv2d(2, 4, 3, padding=1), fc.BatchNorm2d(4), fc.ReLU(), fc.MaxPool2d(2),
              fc.Flatten(), fc.Linear(4 * 3 * 3, 5), fc.BatchNorm1d(5), fc.Tanh(), fc.Linear(5, 3)]
    if dropout:
        layers.insert(5, fc.Dropout(0.5))
    return fc.Sequential(*layers)


def torch_twin(torch, model):
    """The same architecture in torch.nn, with the model's weights and buffers, in float64."""
    nn = torch.nn
    make = {"Conv2d": lambda l: nn.Conv2d(l.in_channels, l.out_channels, l.kernel_size, l.stride,
                                          l.padding, bias=l.bias is not None),
            "BatchNorm2d": lambda l: nn.BatchNorm2d(l.num_features, l.eps, l.momentum),
            "BatchNorm1d": lambda l: nn.BatchNorm1d(l.num_features, l.eps, l.momentum),
            "ReLU": lambda l: nn.ReLU(), "Tanh": lambda l: nn.Tanh(), "Flatten": lambda l: nn.Flatten(),
            "MaxPool2d": lambda l: nn.MaxPool2d(l.kernel_size, l.stride), "Dropout": lambda l: nn.Dropout(l.p),
            "Linear": lambda l: nn.Linear(l.in_features, l.out_features, bias=l.bias is not None)}
    t = nn.Sequential(*[make[type(layer).__name__](layer) for layer in model])
    t.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return t.double()


def test_whole_network_gradients_match_finite_differences():
    for mode in ("train", "eval"):
        model = small_net().to(np.float64).train(mode == "train")
        model.input_grad = True
        for p in model.parameters():
            p.data += np.random.default_rng(1).standard_normal(p.shape) * 0.1
        check_gradients(model, spaced((3, 2, 6, 7)) * 5)


def test_backward_skips_input_gradient_by_default():
    x = spaced((2, 2, 6, 6)).astype(np.float32)
    a, b = small_net(), small_net()
    b.input_grad = True
    calls = []
    first = a[0]._backward
    a[0]._backward = lambda dy, need_dx: calls.append(need_dx) or first(dy, need_dx)
    out = a(x)
    b(x)
    dout = np.ones_like(out)
    assert a.backward(dout) is None and calls == [False]
    assert b.backward(dout).shape == x.shape
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-6, err_msg=name)
    assert a[0].input_grad is True  # the layer's own attribute is left alone

    # parameter-free layers in front of the first trainable one are not run backward at all
    flat = fc.Flatten()
    flat._backward = lambda dy, need_dx: pytest.fail("Flatten.backward should be skipped")
    mlp = fc.Sequential(flat, fc.Linear(4, 2, rng=0))
    mlp(np.ones((3, 2, 2)))
    assert mlp.backward(np.ones((3, 2), dtype=np.float32)) is None
    assert mlp[1].weight.grad.shape == (2, 4)
    assert fc.Sequential(fc.ReLU()).backward(np.ones(2)) is None


def test_names_and_state_dict_keys_match_torch():
    torch = pytest.importorskip("torch")
    model = small_net(dropout=True)
    t = torch_twin(torch, model)
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in t.named_parameters()]
    assert list(model.state_dict()) == list(t.state_dict())
    assert repr(model) == repr(t)  # every layer's repr is its PyTorch twin's
    nested = fc.Sequential(fc.Sequential(fc.Linear(2, 3)), fc.ReLU(), fc.BatchNorm1d(3))
    tn = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 3)), torch.nn.ReLU(), torch.nn.BatchNorm1d(3))
    assert list(nested.state_dict()) == list(tn.state_dict())
    assert repr(nested) == repr(tn)


def test_forward_grads_running_stats_and_predict_match_torch():
    torch = pytest.importorskip("torch")
    model = small_net().to(np.float64)
    t = torch_twin(torch, model)
    rng = np.random.default_rng(3)
    for _ in range(3):
        x = rng.standard_normal((4, 2, 6, 6))
        labels = rng.integers(0, 3, 4)
        model.zero_grad(), t.zero_grad()
        logits = model(x)
        loss, dlogits = fc.functional.cross_entropy(logits, labels)
        model.backward(dlogits)
        tloss = torch.nn.functional.cross_entropy(t(torch.from_numpy(x)), torch.from_numpy(labels))
        tloss.backward()
        assert abs(loss - tloss.item()) < 1e-12
        tparams = dict(t.named_parameters())
        for name, p in model.named_parameters():
            np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)
    for key, value in t.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[key], value.numpy(), rtol=1e-12, err_msg=key)
    x = rng.standard_normal((7, 2, 6, 6))
    with torch.no_grad():
        expected = t.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x, batch_size=3), expected, rtol=1e-10)
    # a torch state dict converted to NumPy loads as it is (and is cast to the model's dtype)
    f32 = small_net(seed=5)
    f32.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
    assert f32[0].weight.dtype == np.float32
    np.testing.assert_allclose(f32.predict(x), expected, rtol=1e-4, atol=1e-5)


def test_train_eval_predict_restore_modes():
    model = small_net(dropout=True)
    assert model.eval() is model and not any(m.training for m in model.modules())
    assert model.train() is model and all(m.training for m in model.modules())
    model[1].eval()  # a mixed state is restored exactly
    x = np.random.default_rng(0).standard_normal((10, 2, 6, 6)).astype(np.float32)
    before = model.state_dict()
    p1, p2 = model.predict(x, batch_size=4), model.predict(x)
    assert isinstance(p1, np.ndarray) and p1.shape == (10, 3) and p1.dtype == np.float32
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)  # eval: no dropout, no batch statistics
    assert [m.training for m in model.modules()] == [True, True, False] + [True] * 8
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())  # no stats update
    for bad, error in ((0, ValueError), (-1, ValueError), (2.5, TypeError)):
        with pytest.raises(error, match="batch_size"):
            model.predict(x, batch_size=bad)
    with pytest.raises(ValueError, match="non-empty"):
        model.predict(x[:0])


def test_state_dict_is_a_copy_and_round_trips():
    model, other = small_net(seed=0), small_net(seed=1)
    state = model.state_dict()
    state["0.weight"][...] = 7
    assert not np.any(model[0].weight.data == 7)
    other.load_state_dict(model.state_dict())
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert np.array_equal(a, b) and a.dtype == b.dtype, k


def test_failed_load_state_dict_leaves_model_untouched():
    model = small_net(seed=0)
    good = small_net(seed=1).state_dict()
    before = model.state_dict()

    def unchanged():
        return all(np.array_equal(before[k], v) for k, v in model.state_dict().items())

    bad_shape = dict(good, **{"8.weight": np.zeros((3, 4))})  # last key: all others would load first
    with pytest.raises(ValueError, match=r"8\.weight.*\(3, 4\).*\(3, 5\)"):
        model.load_state_dict(bad_shape)
    assert unchanged()
    missing = {k: v for k, v in good.items() if k != "1.running_var"}
    with pytest.raises(ValueError, match=r"missing keys: \['1\.running_var'\]"):
        model.load_state_dict(missing)
    assert unchanged()
    with pytest.raises(ValueError, match=r"unexpected keys: \['9\.weight'\]"):
        model.load_state_dict(dict(good, **{"9.weight": np.zeros(2)}))
    with pytest.raises(ValueError, match="not a real numeric"):
        model.load_state_dict(dict(good, **{"8.bias": np.array(["a", "b", "c"])}))
    assert unchanged()
    result = model.load_state_dict(missing, strict=False)
    assert result.missing_keys == ["1.running_var"] and result.unexpected_keys == []
    assert np.array_equal(model[0].weight.data, good["0.weight"])


def test_save_load_round_trip(tmp_path):
    model = small_net(seed=0)
    model(np.random.default_rng(0).standard_normal((4, 2, 6, 6)))  # non-trivial running stats
    path = tmp_path / "model.npz"
    model.save(path)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]
    with np.load(path) as archive:
        assert list(archive.files) == list(model.state_dict())
    other = small_net(seed=1).load(path)
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(other.predict(x), model.predict(x))
    assert int(other[1].num_batches_tracked) == 1
    # a float64 model loads the float32 file in its own dtype
    assert small_net(seed=2).to(np.float64).load(path)[0].weight.dtype == np.float64


def test_failed_load_from_file_leaves_model_untouched(tmp_path):
    wrong = fc.Sequential(fc.Conv2d(2, 4, 3, padding=1), fc.BatchNorm2d(4), fc.ReLU(), fc.MaxPool2d(2),
                          fc.Flatten(), fc.Linear(36, 6))
    wrong.save(tmp_path / "wrong.npz")
    model = small_net()
    before = model.state_dict()
    with pytest.raises(ValueError, match="missing keys"):
        model.load(tmp_path / "wrong.npz")
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot read model file"):
        model.load(tmp_path / "junk.npz")
    data = (tmp_path / "wrong.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match="cannot read model file"):
        model.load(tmp_path / "cut.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        model.load(tmp_path / "single.npy")
    with pytest.raises(FileNotFoundError):
        model.load(tmp_path / "absent.npz")


def test_save_is_atomic(tmp_path, monkeypatch):
    model = small_net(seed=0)
    path = tmp_path / "model.npz"
    model.save(path)
    old = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        small_net(seed=1).save(path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["model.npz"]


def test_to_converts_parameters_grads_and_buffers():
    model = small_net()
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    model.backward(np.ones_like(model(x)))
    params = model.parameters()
    assert model.to(np.float64) is model
    assert all(p is q for p, q in zip(params, model.parameters()))
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in params)
    assert model[1].running_var.dtype == np.float64 and model[1].num_batches_tracked.dtype == np.int64
    assert model(x.astype(np.float32)).dtype == np.float64
    assert model.to("cpu") is model
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        model.to("gpu")


def test_summary_counts_and_workspace():
    model = fc.Sequential(fc.Conv2d(3, 8, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2), fc.Conv2d(8, 16, 3, stride=2),
                          fc.BatchNorm2d(16), fc.Flatten(), fc.Dropout(), fc.Linear(16 * 2 * 2, 10))
    rows = model.summary_rows((4, 3, 10, 10))
    assert [r["output_shape"] for r in rows] == [(4, 8, 10, 10), (4, 8, 10, 10), (4, 8, 5, 5), (4, 16, 2, 2),
                                                (4, 16, 2, 2), (4, 64), (4, 64), (4, 10)]
    tier = fastconv.kernels.cpu  # the figures are what the tier in use allocates
    assert (rows[0]["kept_bytes"], rows[0]["workspace_bytes"]) == tier.conv2d_memory(
        (4, 3, 10, 10), (8, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4)
    assert (rows[3]["kept_bytes"], rows[3]["workspace_bytes"]) == tier.conv2d_memory(
        (4, 8, 5, 5), (16, 8, 3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 4)
    assert rows[2]["kept_bytes"] == 4 * 8 * 5 * 5 * 8  # int64 switches
    assert rows[0]["output_bytes"] == 4 * 8 * 10 * 10 * 4 and rows[5]["output_bytes"] == 0  # Flatten: a view
    assert [r["params"] for r in rows] == [3 * 8 * 9 + 8, 0, 0, 8 * 16 * 9 + 16, 32, 0, 0, 64 * 10 + 10]
    text = model.summary((4, 3, 10, 10))
    total = sum(r["params"] for r in rows)
    assert f"Parameters: {total:,}" in text and "Largest im2col workspace" in text
    assert len(text.splitlines()) == 1 + 1 + len(rows) + 1 + 6
    assert model.to(np.float64).summary_rows((4, 3, 10, 10))[0]["workspace_bytes"] == tier.conv2d_memory(
        (4, 3, 10, 10), (8, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8)[1]
    # shape B at batch 1024: the cpu tier keeps no column matrix (220 MiB if it did)
    b_rows = fc.Sequential(fc.Conv2d(32, 64, 3, padding=1)).summary_rows((1024, 32, 14, 14))
    assert b_rows[0]["kept_bytes"] + b_rows[0]["workspace_bytes"] < 64 * 2**20
    with pytest.raises(ValueError, match=r"Linear\(64, 10\).*144"):
        model.summary((4, 3, 14, 14))
    torch = pytest.importorskip("torch")
    net = small_net()
    assert sum(r["params"] for r in net.summary_rows((2, 2, 6, 6))) == \
        sum(p.numel() for p in torch_twin(torch, net).parameters())


def test_sequential_container_behaviour():
    with pytest.raises(TypeError, match="item 1 is a ufunc, not a fastconv layer"):
        fc.Sequential(fc.ReLU(), np.tanh)
    model = small_net()
    assert len(model) == 9 and isinstance(model[0], fc.Conv2d) and list(model)[2] is model[2]
    head = model[5:]
    assert isinstance(head, fc.Sequential) and head[0] is model[5]
    out = model(np.ones((2, 2, 6, 6)))
    model.backward(np.ones_like(out))
    g = model[8].weight.grad.copy()
    with pytest.raises(RuntimeError, match="backward called before forward"):
        model.backward(np.ones_like(out))  # the forward's caches were taken back
    model(np.ones((2, 2, 6, 6)))
    model.backward(np.ones_like(out))
    np.testing.assert_allclose(model[8].weight.grad, 2 * g)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
