"""The cuda tier's group / layer normalisation kernels against the cpu tier on Numba's simulator
(tiny shapes), and the normalisation layers on the device."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv.kernels import cpu

pytestmark = [pytest.mark.cuda,
              pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]

DTYPES = [np.float32, np.float64]
FEW = settings(max_examples=5, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(n=st.integers(0, 2), groups=st.integers(1, 3), per_group=st.integers(1, 2), inner=st.integers(1, 3),
       need_dx=st.booleans(), seed=st.integers(0, 2**16))
def test_group_norm_matches_cpu(G, close, dtype, n, groups, per_group, inner, need_dx, seed):
    rng = np.random.default_rng(seed)
    m, c = per_group * inner, groups * per_group
    x = (rng.standard_normal((n, groups, m)) * 2 + 1).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    out, mean, rstd = G.group_norm(x, w, b, inner, 0.1)
    want = cpu.group_norm(x, w, b, inner, 0.1)
    for name, got, ref in zip(("out", "mean", "rstd"), (out, mean, rstd), want):
        close(f"group_norm {name}", got, ref)
    got = G.group_norm_backward(dout, x, w, mean, rstd, inner, need_dx)
    ref = cpu.group_norm_backward(dout, x, w, want[1], want[2], inner, need_dx)
    for name, g, r in zip(("dx", "dweight", "dbias"), got, ref):
        assert (g is None) == (r is None), name
        if r is not None:
            close(f"group_norm_backward {name}", g, r)


@pytest.mark.parametrize("make, shape", [
    (lambda: fc.GroupNorm(2, 4), (2, 4, 3)),
    (lambda: fc.LayerNorm((2, 3), bias=False), (2, 2, 3)),
    (lambda: fc.BatchNorm2d(3, affine=False), (2, 3, 2, 2)),
    (lambda: fc.BatchNorm1d(3, track_running_stats=False), (4, 3)),
])
def test_layers_on_the_device_match_the_host(G, close, make, shape):
    rng = np.random.default_rng(3)
    x, dy = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    host, dev = make(), make().to("cuda")
    for training in (True, False):
        host.train(training), dev.train(training)
        got = dev(fc.to_device(x))
        assert fc._backend.is_device_array(got)
        close(f"{host!r} out", got, host(x))
        close(f"{host!r} dx", dev.backward(fc.to_device(dy)), host.backward(dy))
        for (name, p), q in zip(host.named_parameters(), dev.parameters()):
            close(f"{host!r} {name}", q.grad, p.grad)
    dev_state = dev.state_dict()
    assert list(dev_state) == list(host.state_dict())
    for key, value in host.state_dict().items():
        if value.dtype.kind == "f":
            close(f"{host!r} {key}", dev_state[key], value)
        else:
            assert np.array_equal(dev_state[key], value), key
