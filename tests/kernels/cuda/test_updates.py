"""The cuda tier's in-place parameter updates (SGD, Adam, the running average ``axpby``) against
the NumPy rules of fastconv.optim and fastconv.kernels._host_optim, on Numba's simulator."""
import numpy as np
import pytest

from helpers import DTYPES, random
from op_helpers import cuda_test


SGD_CASES = [dict(lr=0.1, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0),
             dict(lr=0.05, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=1e-2),
             dict(lr=0.05, momentum=0.8, dampening=0.3, nesterov=False, weight_decay=0.0)]


ADAM_CASES = [dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False),
              dict(lr=3e-2, beta1=0.3, beta2=0.9, eps=1e-6, weight_decay=0.1, amsgrad=True)]


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hp", SGD_CASES)
def test_sgd_update_matches_numpy_rule(G, close, dtype, hp):
    optim = pytest.importorskip("fastconv.optim")
    from numba import cuda
    rng = np.random.default_rng(1)
    data, buf = random(rng, (3, 7), dtype), np.zeros((3, 7), dtype)
    d_data = cuda.to_device(data)
    d_buf = G.zeros_like(d_data)
    assert d_buf.dtype == dtype and (d_buf.copy_to_host() == 0).all()
    for step in range(3):
        grad = random(rng, (3, 7), dtype)
        use = buf if hp["momentum"] else None
        optim.sgd_update(data, grad, use, first_step=step == 0, **hp)
        G.sgd_update(d_data, grad, d_buf if use is not None else None, first_step=step == 0, **hp)
    close("sgd_update", d_data, data)
    if hp["momentum"]:
        close("sgd_update buf", d_buf, buf)
    with pytest.raises(TypeError, match="device array"):
        G.sgd_update(data, grad, None, first_step=False, **hp)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hp", ADAM_CASES)
def test_adam_update_matches_numpy_rule(G, close, dtype, hp):
    optim = pytest.importorskip("fastconv.optim")
    from numba import cuda
    rng = np.random.default_rng(2)
    host = [random(rng, (2, 9), dtype)] + [np.zeros((2, 9), dtype) for _ in range(3)]
    dev = [cuda.to_device(a) for a in host]
    for step in range(1, 4):
        grad = random(rng, (2, 9), dtype)
        ams = hp["amsgrad"]
        optim.adam_update(host[0], grad, host[1], host[2], host[3] if ams else None, step, **hp)
        G.adam_update(dev[0], cuda.to_device(grad), dev[1], dev[2], dev[3] if ams else None, step,
                      **hp)
    for name, d, h in zip(("data", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"), dev, host):
        close(f"adam_update {name}", d, h)


@cuda_test
@pytest.mark.parametrize("dtype", DTYPES)
def test_axpby_is_numpys_running_average(G, close, dtype):
    from numba import cuda
    rng = np.random.default_rng(5)
    y, x = random(rng, 7, dtype), random(rng, 7, dtype)
    dy = cuda.to_device(y)
    G.axpby(dy, x, 1 - 0.1, 0.1 * 8 / 7)
    y *= 1 - 0.1
    y += (0.1 * 8 / 7) * x
    close("axpby", dy, y, exact=True)
    with pytest.raises(ValueError, match="shape"):
        G.axpby(dy, x[:3], 1.0, 1.0)
