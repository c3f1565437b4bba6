"""cuda optimizer updates: torch.optim.SGD, Adam, RMSprop and Adagrad, in place on device parameters."""
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


@cuda.jit(cache=True)
def _rmsprop_kernel(data, grad, square_avg, grad_avg, buf, neg_lr, alpha, one_minus_alpha, w,
                    one_minus_w, small_w, eps, weight_decay, momentum, centered, use_momentum):
    """torch.optim.RMSprop on flat arrays, in place (see :func:`rmsprop_update`)."""
    for i in range(cuda.grid(1), data.size, cuda.gridsize(1)):
        p = data[i]
        g = grad[i]
        if weight_decay != 0:
            g = p * weight_decay + g
        v = square_avg[i] * alpha + g * one_minus_alpha * g
        square_avg[i] = v
        if centered:
            m = grad_avg[i]
            diff = g - m
            if small_w:  # torch's two-branch lerp towards g with weight 1 - alpha
                m = m + diff * w
            else:
                m = g - diff * one_minus_w
            grad_avg[i] = m
            avg = math.sqrt(v - m * m) + eps
        else:
            avg = math.sqrt(v) + eps
        if use_momentum:
            b = buf[i] * momentum + g / avg
            buf[i] = b
            data[i] = p + b * neg_lr
        else:
            data[i] = p + g * neg_lr / avg


@cuda.jit(cache=True)
def _adagrad_kernel(data, grad, state_sum, neg_clr, weight_decay, eps):
    """torch.optim.Adagrad on flat arrays, in place (see :func:`adagrad_update`)."""
    for i in range(cuda.grid(1), data.size, cuda.gridsize(1)):
        p = data[i]
        g = grad[i]
        if weight_decay != 0:
            g = p * weight_decay + g
        s = state_sum[i] + g * g
        state_sum[i] = s
        data[i] = p + g * neg_clr / (math.sqrt(s) + eps)


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


def rmsprop_update(data, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                   weight_decay, momentum, centered):
    """One torch.optim.RMSprop update of ``data``, in place on the device.

    Same arguments as :func:`fastconv.optim.rmsprop_update`: ``square_avg``, ``grad_avg`` (when
    ``centered``, else None) and ``momentum_buffer`` (when ``momentum > 0``, else None) are device
    arrays updated in place. Hyper-parameters are applied in data's dtype.
    """
    data = _in_place(data, "data")
    dt = data.dtype
    s = lambda v: _scalar(dt, v)  # noqa: E731
    w = 1.0 - alpha  # the lerp weight of the centered gradient average
    use_momentum = momentum > 0
    grad_avg = _in_place(grad_avg, "grad_avg") if centered else _dummy(dt)
    buf = _in_place(momentum_buffer, "momentum_buffer") if use_momentum else _dummy(dt)
    _rmsprop_kernel[_launch(data.size)](
        _flat(data), _flat(_dev(grad, dt)), _flat(_in_place(square_avg, "square_avg")),
        _flat(grad_avg), _flat(buf), s(-lr), s(alpha), s(1.0 - alpha), s(w), s(1.0 - w),
        abs(w) < 0.5, s(eps), s(weight_decay), s(momentum), bool(centered), use_momentum)


def adagrad_update(data, grad, state_sum, step, lr, lr_decay, weight_decay, eps):
    """One torch.optim.Adagrad update of ``data``, in place on the device.

    Same arguments as :func:`fastconv.optim.adagrad_update`: ``state_sum`` is a device array
    updated in place; ``step`` counts this step (1 first). The step size ``lr / (1 + (step - 1) *
    lr_decay)`` is folded on the host in float64, then applied in data's dtype.
    """
    data = _in_place(data, "data")
    dt = data.dtype
    clr = lr / (1 + (step - 1) * lr_decay)
    _adagrad_kernel[_launch(data.size)](
        _flat(data), _flat(_dev(grad, dt)), _flat(_in_place(state_sum, "state_sum")),
        _scalar(dt, -clr), _scalar(dt, weight_decay), _scalar(dt, eps))


KERNELS = {
    "_sgd_kernel": (_sgd_kernel, _sigs(
        f"void({_A1}, {_A1}, {_A1}, {{f}}, {{f}}, {{f}}, {{f}}, boolean, boolean, boolean)")),
    "_adam_kernel": (_adam_kernel, _sigs(
        f"void({_A1}, {_A1}, {_A1}, {_A1}, {_A1}, {{f}}, {{f}}, {{f}}, boolean, {{f}}, {{f}}, "
        "{f}, {f}, {f}, boolean)")),
    "_rmsprop_kernel": (_rmsprop_kernel, _sigs(
        f"void({_A1}, {_A1}, {_A1}, {_A1}, {_A1}, {{f}}, {{f}}, {{f}}, {{f}}, {{f}}, boolean, "
        "{f}, {f}, {f}, boolean, boolean)")),
    "_adagrad_kernel": (_adagrad_kernel, _sigs(f"void({_A1}, {_A1}, {_A1}, {{f}}, {{f}}, {{f}})")),
}
