"""The cuda tier's activations (parameterised ops, PReLU, softmax) against the cpu tier, on
Numba's simulator (tiny shapes), and the layers on the device."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv.kernels import cpu
from fastconv.kernels.naive.activation import OPS

pytestmark = [pytest.mark.cuda,
              pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]

DTYPES = [np.float32, np.float64]
FEW = settings(max_examples=4, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PARAMS = {"leaky_relu": (0.2, 0.0), "elu": (1.3, 1.05), "gelu": (0, 0), "gelu_tanh": (0, 0),
          "silu": (0, 0), "softplus": (2.0, 3.0), "hardtanh": (-0.5, 1.5)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", OPS)
def test_activation_forward_backward_match_cpu(G, close, op, dtype):
    rng = np.random.default_rng(OPS.index(op))
    x = (rng.standard_normal(40) * 3).astype(dtype)
    x[:4] = [0, -0.0, 1e4, -1e4]
    dout = rng.standard_normal(40).astype(dtype)
    a, b = PARAMS[op]
    close(op, G.activate(x, op, a, b), cpu.activate(x, op, a, b))
    close(f"{op} backward", G.activate_backward(dout, x, op, a, b),
          cpu.activate_backward(dout, x, op, a, b))


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)), shared=st.booleans(),
       need_dx=st.booleans(), seed=st.integers(0, 2**16))
def test_prelu_matches_cpu(G, close, dtype, shape, shared, need_dx, seed):
    rng = np.random.default_rng(seed)
    x, dout = (rng.standard_normal(shape).astype(dtype) for _ in range(2))
    x3 = x.reshape(1, 1, -1) if shared else x
    w = rng.uniform(-0.5, 1.0, x3.shape[1]).astype(dtype)
    close("prelu", G.prelu(x3, w), cpu.prelu(x3, w), exact=True)
    dx, dw = G.prelu_backward(dout.reshape(x3.shape), x3, w, need_dx)
    want_dx, want_dw = cpu.prelu_backward(dout.reshape(x3.shape), x3, w, need_dx)
    assert (dx is None) == (not need_dx)
    if need_dx:
        close("prelu dx", dx, want_dx, exact=True)
    close("prelu dweight", dw, want_dw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 1), (1, 4, 3), (2, 3, 2), (2, 1, 3), (2, 0, 3)])
def test_softmax_matches_cpu(G, close, dtype, log, shape):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    out = close("softmax", G.softmax(x, log), cpu.softmax(x, log))
    close("softmax backward", G.softmax_backward(dout, out, log), cpu.softmax_backward(dout, out, log))


def test_functional_ops_keep_device_arrays_on_the_device(G, close):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 2)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx_dev, dy_dev = fc.to_device(x), fc.to_device(dy)
    for fwd, bwd, kwargs in ((F.elu, F.elu_backward, {"alpha": 0.5}), (F.selu, F.selu_backward, {}),
                             (F.gelu, F.gelu_backward, {"approximate": "tanh"})):
        out = fwd(dx_dev, **kwargs)
        assert fc._backend.is_device_array(out) and out.shape == x.shape
        close(fwd.__name__, out, fwd(x, **kwargs, backend="cpu"))
        args = list(kwargs.values())
        close(bwd.__name__, bwd(dy_dev, dx_dev, *args), bwd(dy, x, *args, backend="cpu"))
    out = F.log_softmax(dx_dev, dim=-1)
    close("log_softmax dim -1", out, F.log_softmax(x, dim=-1, backend="cpu"))
    close("log_softmax backward", F.log_softmax_backward(dy_dev, out, -1),
          F.log_softmax_backward(dy, fc.to_numpy(out), -1, backend="cpu"))


def test_layers_on_the_device_match_the_host(G, close):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    for make in (lambda: fc.PReLU(3, init=0.1), lambda: fc.Softmax(dim=1), lambda: fc.SiLU(),
                 lambda: fc.Hardtanh(-0.5, 0.5)):
        host, dev = make(), make().to("cuda")
        want, got = host(x), dev(fc.to_device(x))
        close(repr(host), got, want)
        close(f"{host!r} dx", dev.backward(fc.to_device(dy)), host.backward(dy))
        for p, q in zip(host.parameters(), dev.parameters()):
            assert q.device == "cuda"
            close(f"{host!r} dweight", q.grad, p.grad)
