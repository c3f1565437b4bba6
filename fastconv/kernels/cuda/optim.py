"""cuda optimizer updates: torch.optim.SGD and Adam, in place on device parameters."""
import math

from numba import cuda

from ._launch import _A1, _dev, _dummy, _flat, _in_place, _launch, _scalar, _sigs


@cuda.jit(cache=True)
def _sgd_kernel(data, grad, buf, lr, momentum, one_minus_dampening, weight_decay, nesterov,
                first_step, use_momentum):
    """torch.optim.SGD on flat arrays, in place (see :func:`sgd_update`)."""
    for i in range(cuda.grid(1), data.size, cuda.gridsize(1)):
        p = data[i]
        d = grad[i]
        if weight_decay != 0:
            d = p * weight_decay + d
        if use_momentum:
            if first_step:
                m = d
            elif one_minus_dampening == 1:
                m = buf[i] * momentum + d
            else:
                m = buf[i] * momentum + d * one_minus_dampening
            buf[i] = m
            if nesterov:
                d = m * momentum + d
            else:
                d = m
        data[i] = p - d * lr


@cuda.jit(cache=True)
def _adam_kernel(data, grad, exp_avg, exp_avg_sq, max_sq, weight_decay, w, one_minus_w, small_w,
                 beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps, amsgrad):
    """torch.optim.Adam on flat arrays, in place (see :func:`adam_update`)."""
    for i in range(cuda.grid(1), data.size, cuda.gridsize(1)):
        p = data[i]
        g = grad[i]
        if weight_decay != 0:
            g = p * weight_decay + g
        m = exp_avg[i]
        diff = g - m
        if small_w:  # torch's two-branch lerp
            m = m + diff * w
        else:
            m = g - diff * one_minus_w
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + g * one_minus_beta2 * g
        exp_avg_sq[i] = v
        if amsgrad:
            v = max(max_sq[i], v)
            max_sq[i] = v
        data[i] = p + m * neg_step_size / (math.sqrt(v) / bc2_sqrt + eps)


def sgd_update(data, grad, buf, lr, momentum, dampening, nesterov, weight_decay, first_step):
    """One torch.optim.SGD update of ``data``, in place on the device.

    Same arguments as :func:`fastconv.optim.sgd_update`. ``data`` and ``buf`` (the momentum buffer,
    None when ``momentum == 0``) are device arrays updated in place; ``grad`` (data's shape) may
    be a NumPy array. Hyper-parameters are Python floats, applied in data's dtype.
    """
    data = _in_place(data, "data")
    dt = data.dtype
    grad = _dev(grad, dt)
    use_momentum = momentum != 0
    buf = _in_place(buf, "buf") if use_momentum else _dummy(dt)
    _sgd_kernel[_launch(data.size)](
        _flat(data), _flat(grad), _flat(buf), _scalar(dt, lr), _scalar(dt, momentum),
        _scalar(dt, 1.0 - dampening), _scalar(dt, weight_decay), bool(nesterov), bool(first_step),
        use_momentum)


def adam_update(data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
                weight_decay, amsgrad):
    """One torch.optim.Adam update of ``data``, in place on the device.

    Same arguments as :func:`fastconv.optim.adam_update`: ``exp_avg``, ``exp_avg_sq`` and (with
    ``amsgrad``) ``max_exp_avg_sq`` are device arrays updated in place; ``step`` counts this step
    (1 first). Scalars are folded on the host in float64, then applied in data's dtype.
    """
    data = _in_place(data, "data")
    dt = data.dtype
    grad = _dev(grad, dt)
    max_sq = _in_place(max_exp_avg_sq, "max_exp_avg_sq") if amsgrad else _dummy(dt)
    w = 1.0 - beta1
    s = lambda v: _scalar(dt, v)  # noqa: E731
    _adam_kernel[_launch(data.size)](
        _flat(data), _flat(grad), _flat(_in_place(exp_avg, "exp_avg")),
        _flat(_in_place(exp_avg_sq, "exp_avg_sq")), _flat(max_sq), s(weight_decay), s(w),
        s(1.0 - w), abs(w) < 0.5, s(beta2), s(1.0 - beta2), s(-lr / (1.0 - beta1 ** step)),
        s((1.0 - beta2 ** step) ** 0.5), s(eps), bool(amsgrad))


KERNELS = {
    "_sgd_kernel": (_sgd_kernel, _sigs(
        f"void({_A1}, {_A1}, {_A1}, {{f}}, {{f}}, {{f}}, {{f}}, boolean, boolean, boolean)")),
    "_adam_kernel": (_adam_kernel, _sigs(
        f"void({_A1}, {_A1}, {_A1}, {_A1}, {_A1}, {{f}}, {{f}}, {{f}}, boolean, {{f}}, {{f}}, "
        "{f}, {f}, {f}, boolean)")),
}
