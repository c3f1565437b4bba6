"""The host tiers' (naive and cpu) optimizer updates: torch.optim's SGD, Adam, RMSprop and
Adagrad rules, one in-place NumPy function each.

These are the rules: :mod:`fastconv.optim` steps every parameter through its tier's function of
the same name, and the cuda tier's kernels (:mod:`fastconv.kernels.cuda.optim`) apply the same
formulas in the same order to device parameters (``tests/kernels/cuda/test_updates.py`` and
``tests/optim/test_optim.py`` check them against these). Every operation is an in-place ufunc
with Python-float hyper-parameters, so float32 parameters are updated in float32.
"""
import numpy as np

__all__ = ["sgd_update", "adam_update", "rmsprop_update", "adagrad_update"]


def _lerp_(start, end, weight, tmp):
    """``start.lerp_(end, weight)`` in place, with torch's two-branch formula.

    ``tmp`` (start's shape and dtype) is overwritten; returns ``start``.
    """
    np.subtract(end, start, out=tmp)
    if abs(weight) < 0.5:
        tmp *= weight
        start += tmp
    else:
        tmp *= 1.0 - weight
        np.subtract(end, tmp, out=start)
    return start


def sgd_update(data, grad, buf, lr, momentum, dampening, nesterov,
               weight_decay, first_step):
    """One torch-equivalent SGD update of ``data``, in place.

    Parameters
    ----------
    data, grad : ndarray
        Parameter (updated in place) and its gradient (read only), same shape.
    buf : ndarray or None
        Momentum buffer (data's shape, updated in place); ``None`` when ``momentum == 0``.
    lr, momentum, dampening, weight_decay : float
    nesterov : bool
    first_step : bool
        If true the buffer is initialised to the (decayed) gradient, as torch.
    """
    d_p = grad
    if weight_decay != 0:
        d_p = np.multiply(data, weight_decay)
        d_p += grad
    direction = d_p
    if momentum != 0:
        if first_step:
            np.copyto(buf, d_p)
        else:
            buf *= momentum
            if dampening == 0:
                buf += d_p
            else:
                buf += d_p * (1.0 - dampening)
        if nesterov:
            direction = np.multiply(buf, momentum)
            direction += d_p
        else:
            direction = buf
    data -= direction * lr


def adam_update(data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr,
                beta1, beta2, eps, weight_decay, amsgrad):
    """One torch-equivalent Adam update of ``data``, in place.

    Parameters
    ----------
    data, grad : ndarray
        Parameter (updated in place) and its gradient (read only), same shape.
    exp_avg, exp_avg_sq : ndarray
        First and second moment estimates (data's shape, updated in place).
    max_exp_avg_sq : ndarray or None
        Running max of ``exp_avg_sq`` (updated in place) when ``amsgrad``.
    step : int
        Step count *including* this step (1 on the first call).
    lr, beta1, beta2, eps, weight_decay : float
        ``weight_decay`` is the L2 penalty added to the gradient (Adam's);
        AdamW decays ``data`` itself before calling this with 0.
    amsgrad : bool
    """
    g = grad
    if weight_decay != 0:
        g = np.multiply(data, weight_decay)
        g += grad
    tmp = np.empty_like(exp_avg)
    _lerp_(exp_avg, g, 1.0 - beta1, tmp)
    # exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    exp_avg_sq *= beta2
    np.multiply(g, 1.0 - beta2, out=tmp)
    tmp *= g
    exp_avg_sq += tmp
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2 ** 0.5
    second = exp_avg_sq
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second = max_exp_avg_sq
    denom = np.sqrt(second, out=tmp)
    denom /= bias_correction2_sqrt
    denom += eps
    upd = np.multiply(exp_avg, -step_size)
    upd /= denom
    data += upd


def rmsprop_update(data, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                   weight_decay, momentum, centered):
    """One torch-equivalent RMSprop update of ``data``, in place.

    ``v = alpha * v + (1 - alpha) * g**2``; centered: ``m = lerp(m, g, 1 - alpha)``
    and ``avg = sqrt(v - m**2) + eps``, else ``avg = sqrt(v) + eps``; with
    momentum ``b = momentum * b + g / avg`` and ``p -= lr * b``, else
    ``p -= lr * g / avg``.

    Parameters
    ----------
    data, grad : ndarray
        Parameter (updated in place) and its gradient (read only), same shape.
    square_avg : ndarray
        Running average of the squared gradient (data's shape, updated in place).
    grad_avg : ndarray or None
        Running average of the gradient (updated in place) when ``centered``.
    momentum_buffer : ndarray or None
        Momentum buffer (updated in place) when ``momentum > 0``.
    lr, alpha, eps, weight_decay, momentum : float
    centered : bool
    """
    g = grad
    if weight_decay != 0:
        g = np.multiply(data, weight_decay)
        g += grad
    # square_avg.mul_(alpha).addcmul_(g, g, value=1 - alpha)
    square_avg *= alpha
    tmp = np.multiply(g, 1.0 - alpha)
    tmp *= g
    square_avg += tmp
    if centered:
        _lerp_(grad_avg, g, 1.0 - alpha, tmp)
        avg = np.multiply(grad_avg, grad_avg, out=tmp)
        np.subtract(square_avg, avg, out=avg)
        np.sqrt(avg, out=avg)
    else:
        avg = np.sqrt(square_avg, out=tmp)
    avg += eps
    if momentum > 0:
        # buf.mul_(momentum).addcdiv_(g, avg); param.add_(buf, alpha=-lr)
        momentum_buffer *= momentum
        np.divide(g, avg, out=avg)
        momentum_buffer += avg
        np.multiply(momentum_buffer, -lr, out=avg)
        data += avg
    else:
        # param.addcdiv_(g, avg, value=-lr)
        step = np.multiply(g, -lr)
        step /= avg
        data += step


def adagrad_update(data, grad, state_sum, step, lr, lr_decay, weight_decay, eps):
    """One torch-equivalent Adagrad update of ``data``, in place.

    ``s += g**2``; ``p -= clr * g / (sqrt(s) + eps)`` with
    ``clr = lr / (1 + (step - 1) * lr_decay)``.

    Parameters
    ----------
    data, grad : ndarray
        Parameter (updated in place) and its gradient (read only), same shape.
    state_sum : ndarray
        Sum of squared gradients (data's shape, updated in place).
    step : int
        Step count *including* this step (1 on the first call).
    lr, lr_decay, weight_decay, eps : float
    """
    g = grad
    if weight_decay != 0:
        g = np.multiply(data, weight_decay)
        g += grad
    clr = lr / (1 + (step - 1) * lr_decay)
    # state_sum.addcmul_(g, g, value=1); std = state_sum.sqrt().add_(eps)
    tmp = np.multiply(g, g)
    state_sum += tmp
    std = np.sqrt(state_sum, out=tmp)
    std += eps
    # param.addcdiv_(g, std, value=-clr)
    upd = np.multiply(g, -clr)
    upd /= std
    data += upd
