"""Adam and AdamW with torch.optim's update rules (L2 or decoupled weight decay, amsgrad)."""

import numpy as np

from .optimizer import Optimizer, _lerp_

__all__ = ["Adam", "AdamW", "adam_update"]


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

    update_fn = staticmethod(adam_update)
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
    rule to the gradient without an L2 term. On the cuda device the decay is
    the tier's ``axpby`` and the rest its ``adam_update``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter-group dicts (see :class:`Optimizer`).
    lr : float, optional
    betas : (float, float), optional
    eps : float, optional
    weight_decay : float, optional
        Decoupled decay rate (default 1e-2, as torch).
    amsgrad : bool, optional
    l1 : float, optional
        fastconv extension: L1 penalty, ``l1 * sign(p)`` added to the gradient.
    max_norm : float or None, optional
        fastconv extension: per-output-unit L2 norm bound applied after the step.
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
