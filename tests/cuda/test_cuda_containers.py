"""Residual and Concat on the device (Numba's simulator, tiny shapes): the tier's add, concat and
split against the host, and a nested network moved with ``to("cuda")`` against its host copy."""
import numpy as np
import pytest

import fastconv as fc
import fastconv.functional as F
from fastconv.kernels import cpu

pytestmark = [pytest.mark.cuda,
              pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_concat_split_match_cpu(G, close, dtype):
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((2, b, 3)).astype(dtype) for b in (1, 0, 2)]
    whole = close("concat", G.concat(parts), cpu.concat(parts), exact=True)
    for i, (got, want) in enumerate(zip(G.split(whole, [1, 0, 2]), cpu.split(whole, [1, 0, 2]))):
        close(f"split {i}", got, want, exact=True)
    a, b = parts[0], rng.standard_normal(parts[0].shape).astype(dtype)
    close("add", G.add(a, b), cpu.add(a, b), exact=True)


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
