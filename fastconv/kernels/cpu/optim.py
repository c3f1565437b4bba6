"""cpu optimizer updates: SGD and Adam as one ``nogil`` pass over the elements each (the host
rules of :mod:`fastconv.kernels._host_optim` take 8 to 14 NumPy passes and temporaries; on
best's 3136x256 Linear that is most of the optimizer's step), RMSprop and Adagrad as the host's.

Each kernel applies the host rule's operations in its order, in the data's dtype (every
hyper-parameter arrives as a scalar of that dtype, as NumPy 2 converts a Python float), without
fastmath, so the results are the host's bit for bit (``tests/optim/test_cpu_updates.py``).
Arrays that are not C-contiguous go to the host rule (a flattened copy would not be updated).
"""
import numpy as np
from numba import njit

from .._host_optim import adagrad_update, adam_update as _host_adam, rmsprop_update
from .._host_optim import sgd_update as _host_sgd
from ._common import _elements

__all__ = ["sgd_update", "adam_update", "rmsprop_update", "adagrad_update"]


@njit(nogil=True, cache=True)
def _sgd_kernel(p, g, buf, lr, momentum, damp, nesterov, wd, first, has_momentum, has_wd,
                has_damp):
    for i in range(p.size):
        d = p[i] * wd + g[i] if has_wd else g[i]
        direction = d
        if has_momentum:
            if first:
                b = d
            else:
                b = buf[i] * momentum
                b = b + d * damp if has_damp else b + d
            buf[i] = b
            direction = b * momentum + d if nesterov else b
        p[i] = p[i] - direction * lr


# error_model="numpy": a division by zero gives inf as NumPy's (no check in the loop, which
# would keep LLVM from vectorising it)
@njit(nogil=True, cache=True, error_model="numpy")
def _adam_kernel(p, g, m, v, vmax, wd, w1, big, beta2, one_minus_beta2, bc2_sqrt, eps,
                 neg_step, has_wd, amsgrad):
    for i in range(p.size):
        pi = p[i]
        gi = pi * wd + g[i] if has_wd else g[i]
        mi = m[i]
        t = gi - mi  # torch's lerp: two branches by the weight
        mi = gi - t * w1 if big else mi + t * w1
        vi = v[i] * beta2 + gi * one_minus_beta2 * gi
        m[i] = mi
        v[i] = vi
        if amsgrad:
            old = vmax[i]
            vi = old if old > vi or old != old else vi  # np.maximum: NaN wins
            vmax[i] = vi
        p[i] = pi + mi * neg_step / (np.sqrt(vi) / bc2_sqrt + eps)


def _contiguous(*arrays):
    return all(a is None or a.flags.c_contiguous for a in arrays)


def sgd_update(data, grad, buf, lr, momentum, dampening, nesterov, weight_decay, first_step):
    """torch.optim.SGD's update of ``data`` in place, as
    :func:`fastconv.kernels._host_optim.sgd_update`."""
    if not _contiguous(data, grad, buf):
        return _host_sgd(data, grad, buf, lr, momentum, dampening, nesterov, weight_decay,
                         first_step)
    t = data.dtype.type
    p, g = data.reshape(-1), grad.reshape(-1)
    b = buf.reshape(-1) if buf is not None else p[:0]
    args = (t(lr), t(momentum), t(1.0 - dampening), bool(nesterov), t(weight_decay),
            bool(first_step), momentum != 0, weight_decay != 0, dampening != 0)
    _elements(lambda lo, hi: _sgd_kernel(p[lo:hi], g[lo:hi], b[lo:hi] if buf is not None else b,
                                         *args), p.size)


def adam_update(data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
                weight_decay, amsgrad):
    """torch.optim.Adam's update of ``data`` in place, as
    :func:`fastconv.kernels._host_optim.adam_update`."""
    if not _contiguous(data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq):
        return _host_adam(data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1,
                          beta2, eps, weight_decay, amsgrad)
    t = data.dtype.type
    weight = 1.0 - beta1
    big = not abs(weight) < 0.5
    flat = [a.reshape(-1) for a in (data, grad, exp_avg, exp_avg_sq)]
    vmax = max_exp_avg_sq.reshape(-1) if amsgrad else flat[0][:0]
    step_size = lr / (1.0 - beta1 ** step)
    args = (t(weight_decay), t(1.0 - weight if big else weight), big, t(beta2), t(1.0 - beta2),
            t((1.0 - beta2 ** step) ** 0.5), t(eps), t(-step_size), weight_decay != 0,
            bool(amsgrad))

    def run(lo, hi):
        _adam_kernel(*(a[lo:hi] for a in flat), vmax[lo:hi] if amsgrad else vmax, *args)
    _elements(run, flat[0].size)
