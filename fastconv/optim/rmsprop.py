"""RMSprop (Tieleman & Hinton) with torch.optim.RMSprop's update rule (centered, momentum)."""

from ..kernels._host_optim import rmsprop_update
from .optimizer import Optimizer

__all__ = ["RMSprop", "rmsprop_update"]


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
