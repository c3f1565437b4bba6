"""Stochastic gradient descent with torch.optim.SGD's update rule."""

from ..kernels._host_optim import sgd_update
from .optimizer import Optimizer

__all__ = ["SGD", "sgd_update"]


class SGD(Optimizer):
    """Stochastic gradient descent with torch.optim.SGD's exact update rule.

    ``d = g + weight_decay * p``; with momentum ``buf = d`` on the first step,
    else ``buf = momentum * buf + (1 - dampening) * d``; ``d = d + momentum *
    buf`` if nesterov else ``buf``; ``p -= lr * d``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts (see :class:`Optimizer`).
    lr : float, optional
    momentum, dampening, weight_decay : float, optional
    nesterov : bool, optional
        Requires ``momentum > 0`` and ``dampening == 0``.
    l1 : float, optional
        fastconv extension: L1 penalty, ``l1 * sign(p)`` added to the gradient.
    max_norm : float or None, optional
        fastconv extension: per-output-unit L2 norm bound applied after the step.
    """

    tier_update = "sgd_update"

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False, *, l1=0.0, max_norm=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov, l1=l1,
                                      max_norm=max_norm))

    def _check_group(self, group):
        super()._check_group(group)
        if not group["momentum"] >= 0.0:
            raise ValueError(f"Invalid momentum value: {group['momentum']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _step_group(self, group):
        lr, momentum = float(group["lr"]), float(group["momentum"])
        dampening, wd = float(group["dampening"]), float(group["weight_decay"])
        for p, grad in self._grads(group):
            buf, first = None, False
            if momentum != 0:
                state = self.state.setdefault(id(p), {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = self._zeros(p)
                    first = True
            self._update_fn(p)(p.data, grad, buf, lr, momentum, dampening,
                               bool(group["nesterov"]), wd, first)
