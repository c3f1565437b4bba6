"""Adam and AdamW with torch.optim's update rules (L2 or decoupled weight decay, amsgrad)."""

from ..kernels._host_optim import adam_update
from .optimizer import Optimizer

__all__ = ["Adam", "AdamW", "adam_update"]


class Adam(Optimizer):
    """Adam with torch.optim.Adam's exact update rule (L2 weight decay, amsgrad).

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts (see :class:`Optimizer`).
    lr : float, optional
    betas : (float, float), optional
    eps, weight_decay : float, optional
    amsgrad : bool, optional
        Use the running maximum of the second moment in the denominator.
    decoupled_weight_decay : bool, optional
        Decay the parameters by ``lr * weight_decay`` instead of adding the L2
        term to the gradient: :class:`AdamW`.
    l1 : float, optional
        fastconv extension: L1 penalty, ``l1 * sign(p)`` added to the gradient.
    max_norm : float or None, optional
        fastconv extension: per-output-unit L2 norm bound applied after the step.
    """

    tier_update = "adam_update"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 amsgrad=False, *, decoupled_weight_decay=False, l1=0.0, max_norm=None):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      decoupled_weight_decay=decoupled_weight_decay, l1=l1,
                                      max_norm=max_norm))

    def _check_group(self, group):
        super()._check_group(group)
        group["betas"] = tuple(group["betas"])
        group.setdefault("decoupled_weight_decay", False)
        if not group["eps"] >= 0.0:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        for i, beta in enumerate(group["betas"]):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")

    def _step_group(self, group):
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        amsgrad = bool(group["amsgrad"])
        decoupled = bool(group["decoupled_weight_decay"])
        for p, grad in self._grads(group):
            state = self.state.setdefault(id(p), {})
            if not state:
                state["step"] = 0
                state["exp_avg"] = self._zeros(p)
                state["exp_avg_sq"] = self._zeros(p)
            if amsgrad and state.get("max_exp_avg_sq") is None:
                state["max_exp_avg_sq"] = self._zeros(p)
            state["step"] += 1
            if decoupled and wd != 0:
                self._scale(p, 1.0 - lr * wd)
            self._update_fn(p)(p.data, grad, state["exp_avg"], state["exp_avg_sq"],
                               state.get("max_exp_avg_sq"), state["step"], lr, beta1,
                               beta2, eps, 0.0 if decoupled else wd, amsgrad)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter): Adam with decoupled weight decay, as torch.optim.AdamW.

    Each step first decays ``p *= 1 - lr * weight_decay``, then applies Adam's
    rule to the gradient without an L2 term: the decay is the parameter's
    tier's ``axpby``, the rest its ``adam_update``. The parameters are :class:`Adam`'s, except
    that ``weight_decay`` is the decoupled decay rate (default 1e-2, as torch) and
    ``decoupled_weight_decay`` is always True.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, l1=0.0, max_norm=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, decoupled_weight_decay=True, l1=l1, max_norm=max_norm)

    def load_state_dict(self, state_dict):
        """Restore a :meth:`state_dict`; the decay stays decoupled, as torch's AdamW."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
