"""Adagrad (Duchi et al.) with torch.optim.Adagrad's update rule."""

from ..kernels._host_optim import adagrad_update
from .optimizer import Optimizer

__all__ = ["Adagrad", "adagrad_update"]


class Adagrad(Optimizer):
    """Adagrad with torch.optim.Adagrad's exact update rule.

    State is made at a parameter's first step (torch makes it in the
    constructor; the updates are the same): ``sum`` starts at
    ``initial_accumulator_value``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts (see :class:`Optimizer`).
    lr : float, optional
    lr_decay : float, optional
        The step size is ``lr / (1 + (step - 1) * lr_decay)``.
    weight_decay : float, optional
        L2 penalty added to the gradient.
    initial_accumulator_value : float, optional
    eps : float, optional
    l1 : float, optional
        fastconv extension: L1 penalty, ``l1 * sign(p)`` added to the gradient.
    max_norm : float or None, optional
        fastconv extension: per-output-unit L2 norm bound applied after the step.
    """

    tier_update = "adagrad_update"

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, *, l1=0.0, max_norm=None):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value,
                                      l1=l1, max_norm=max_norm))

    def _check_group(self, group):
        super()._check_group(group)
        if not group["lr_decay"] >= 0.0:
            raise ValueError(f"Invalid lr_decay value: {group['lr_decay']}")
        if not group["initial_accumulator_value"] >= 0.0:
            raise ValueError("Invalid initial_accumulator_value value: "
                             f"{group['initial_accumulator_value']}")
        if not group["eps"] >= 0.0:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")

    def _step_group(self, group):
        lr, lr_decay = float(group["lr"]), float(group["lr_decay"])
        wd, eps = float(group["weight_decay"]), float(group["eps"])
        init = float(group["initial_accumulator_value"])
        for p, grad in self._grads(group):
            state = self.state.setdefault(id(p), {})
            if not state:
                state["step"] = 0
                state["sum"] = self._full(p, init)
            state["step"] += 1
            self._update_fn(p)(p.data, grad, state["sum"], state["step"], lr, lr_decay, wd, eps)
