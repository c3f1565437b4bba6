"""RMSprop (Tieleman & Hinton) with torch.optim.RMSprop's update rule (centered, momentum)."""

import numpy as np

from .optimizer import Optimizer, _lerp_

__all__ = ["RMSprop", "rmsprop_update"]


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


class RMSprop(Optimizer):
    """RMSprop with torch.optim.RMSprop's exact update rule.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts (see :class:`Optimizer`).
    lr : float, optional
    alpha : float, optional
        Smoothing constant of the running averages.
    eps : float, optional
        Added to the denominator's square root.
    weight_decay : float, optional
        L2 penalty added to the gradient.
    momentum : float, optional
    centered : bool, optional
        Normalise by the estimated variance of the gradient instead of its second moment.
    l1 : float, optional
        fastconv extension: L1 penalty, ``l1 * sign(p)`` added to the gradient.
    max_norm : float or None, optional
        fastconv extension: per-output-unit L2 norm bound applied after the step.
    """

    update_fn = staticmethod(rmsprop_update)
    tier_update = "rmsprop_update"

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, *, l1=0.0, max_norm=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps,
                                      centered=centered, weight_decay=weight_decay, l1=l1,
                                      max_norm=max_norm))

    def _check_group(self, group):
        super()._check_group(group)
        if not group["eps"] >= 0.0:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        if not group["momentum"] >= 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if not group["alpha"] >= 0.0:
            raise ValueError(f"Invalid alpha value: {group['alpha']}")

    def _step_group(self, group):
        lr, alpha, eps = float(group["lr"]), float(group["alpha"]), float(group["eps"])
        wd, momentum = float(group["weight_decay"]), float(group["momentum"])
        centered = bool(group["centered"])
        for p, grad in self._grads(group):
            state = self.state.setdefault(id(p), {})
            if not state:
                state["step"] = 0
                state["square_avg"] = self._zeros(p)
            if momentum > 0 and state.get("momentum_buffer") is None:
                state["momentum_buffer"] = self._zeros(p)
            if centered and state.get("grad_avg") is None:
                state["grad_avg"] = self._zeros(p)
            state["step"] += 1
            self._update_fn(p)(p.data, grad, state["square_avg"], state.get("grad_avg"),
                               state.get("momentum_buffer"), lr, alpha, eps, wd, momentum,
                               centered)
