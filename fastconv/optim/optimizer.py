"""The optimizer base class: parameter groups, per-parameter state, checkpoints, regularisers.

Parameters are duck-typed: anything with ``.data`` (ndarray) and ``.grad``
(ndarray of the same shape, or ``None``) works. Optimizers update ``p.data``
strictly in place (layers hold references to it) and never touch ``p.grad``
except in :meth:`Optimizer.zero_grad`.

Gradient accumulation contract for layers: ``zero_grad()`` sets ``p.grad``
to ``None`` by default (torch's ``set_to_none=True``). A layer's backward
must therefore do ``p.grad += g`` when ``p.grad`` is not ``None`` and
``p.grad = g.copy()`` (a fresh array, never a view of a scratch buffer)
otherwise. Parameters whose ``grad`` is ``None`` are skipped by ``step()``.

Backends: each optimizer's per-parameter arithmetic is one function of the
kernel contract, named by the class attribute ``tier_update`` (e.g.
``"sgd_update"``, re-exported as :func:`fastconv.optim.sgd_update`): the
tier that holds the parameter (:func:`fastconv._backend.tier_of`) applies it,
in-place NumPy ufuncs on the host, the same rule as a kernel on the cuda
device, and allocates its state there (``zeros_like``): no host round trip.
State is made at a parameter's first step, so move the model before the first
step. All hyper-parameters are passed as Python floats, so float32 parameters
are updated in float32 (NumPy 2 treats Python scalars as weak).

Regularisers (fastconv extensions, no PyTorch equivalent; every optimizer,
per parameter group): ``l1`` adds ``l1 * sign(p)`` to the gradient before the
optimizer's own rule (like an L2 ``weight_decay``, which adds ``weight_decay *
p``), the subgradient of the penalty ``l1 * sum(|p|)``; ``max_norm`` rescales,
after the step, every output unit's incoming weight vector (each slice
``p[i]`` of a parameter with at least two dimensions: a Linear row, a Conv2d
filter) whose L2 norm exceeds ``max_norm`` to norm ``max_norm`` (Srivastava
et al. 2014, "Dropout", section 5.1), with the arithmetic of
``torch.renorm(p, 2, 0, max_norm)``; one-dimensional parameters (biases,
BatchNorm scales) are not constrained. Both act on host parameters only.

Checkpointing: :meth:`Optimizer.state_dict` returns a nested dict of NumPy
arrays (device state is copied to the host) and Python scalars;
:func:`fastconv.optim.flatten_state` turns any such dict into
``{str: ndarray}`` for ``np.savez`` and
:func:`fastconv.optim.unflatten_state` restores it exactly (types included);
:meth:`Optimizer.load_state_dict` puts arrays on each parameter's device.
"""

import numpy as np

from .._backend import is_device_array, tier_of, to_device, to_numpy

__all__ = ["Optimizer"]

#: torch.renorm's guard against dividing by a zero norm.
_RENORM_EPS = 1e-7


class Optimizer:
    """Base class holding ``param_groups`` and per-parameter ``state``.

    Parameters
    ----------
    params : iterable
        Parameters (objects with ``.data``/``.grad``) or dicts
        ``{"params": [...], "lr": ..., ...}`` defining parameter groups.
    defaults : dict
        Hyper-parameters used where a group does not set them; ``l1`` (0.0)
        and ``max_norm`` (None), the regularisers of the module docstring,
        are added when absent.

    Attributes
    ----------
    param_groups : list of dict
    state : dict
        ``id(param) -> dict`` of that parameter's state (arrays, step, ...).
    """

    #: Name of the contract function (every tier has it) that updates one parameter.
    tier_update = None

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.defaults.setdefault("l1", 0.0)
        self.defaults.setdefault("max_norm", None)
        self.state = {}
        self.param_groups = []
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(params[0], dict):
            params = [{"params": params}]
        for group in params:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a group dict; missing hyper-parameters come from ``defaults``."""
        group = dict(group)
        ps = group["params"]
        ps = [ps] if hasattr(ps, "data") else list(ps)
        for p in ps:
            if not hasattr(p, "data"):
                raise TypeError(f"parameter {p!r} has no .data attribute")
        group["params"] = ps
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in ps}) != len(ps) or seen & {id(p) for p in ps}:
            raise ValueError("some parameters appear more than once in the parameter groups")
        self.param_groups.append(group)

    def _check_group(self, group):
        if not group["lr"] >= 0.0:
            raise ValueError(f"Invalid learning rate: {group['lr']}")
        if not group.get("weight_decay", 0.0) >= 0.0:
            raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")
        if not group["l1"] >= 0.0:
            raise ValueError(f"Invalid l1 value: {group['l1']}")
        if group["max_norm"] is not None and not group["max_norm"] > 0.0:
            raise ValueError(f"Invalid max_norm value: {group['max_norm']} (None or > 0)")

    @property
    def lr(self):
        """Learning rate of group 0; assigning sets it for every group."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        for group in self.param_groups:
            group["lr"] = value

    def zero_grad(self, set_to_none=True):
        """Reset gradients: to ``None`` (default) or to zero in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def _grads(self, group):
        """Yield ``(param, grad)`` for params with a grad: grad in param dtype, plus
        ``l1 * sign(p)`` when the group sets ``l1``."""
        l1 = float(group["l1"])
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.shape != p.data.shape:
                raise ValueError(
                    f"grad shape {p.grad.shape} does not match param shape {p.data.shape}")
            grad = p.grad
            if np.dtype(grad.dtype) != np.dtype(p.data.dtype):  # a tier's grads never differ
                grad = np.asanyarray(grad).astype(p.data.dtype)
            if l1 != 0:  # host parameters only: _check_devices refuses l1 on the device
                penalty = np.sign(p.data)
                penalty *= l1
                penalty += grad
                grad = penalty
            yield p, grad

    def _update_fn(self, p):
        """The update rule for ``p``: the ``tier_update`` function of the tier that holds it."""
        return getattr(tier_of(p.data), self.tier_update)

    @staticmethod
    def _zeros(p):
        """A zero state buffer like ``p.data``, on its device."""
        return tier_of(p.data).zeros_like(p.data)

    @staticmethod
    def _full(p, value):
        """A state buffer like ``p.data`` filled with ``value``, on its device."""
        return tier_of(p.data).full(p.data.shape, value, p.data.dtype)

    def _check_devices(self):
        """Refuse, before any update, device parameters this optimizer cannot step."""
        name = type(self).__name__
        for group in self.param_groups:
            device = [p for p in group["params"]
                      if p.grad is not None and is_device_array(p.data)]
            if not device:
                continue
            if self.tier_update is None or not hasattr(tier_of(device[0].data), self.tier_update):
                raise NotImplementedError(
                    f"{name}: parameters on the cuda device need a cuda-tier update function "
                    f"({self.tier_update or 'tier_update is not set'}), which "
                    "fastconv.kernels.cuda does not provide; keep the model on the host "
                    "(model.to('cpu')) or use SGD, Adam, AdamW, RMSprop or Adagrad")
            for key in ("l1", "max_norm"):
                if group[key]:
                    raise NotImplementedError(
                        f"{name}: the {key}= regulariser acts on host parameters only; "
                        f"{len(device)} parameter(s) of a group with {key}={group[key]} are on "
                        "the cuda device")

    def step(self, closure=None):
        """Perform one update; ``closure()`` (if given) is called first and returned.

        Each group's ``max_norm`` constraint (if set) is applied to its updated
        parameters after their update.
        """
        loss = None if closure is None else closure()
        self._check_devices()
        for group in self.param_groups:
            self._step_group(group)
            if group["max_norm"] is not None:
                self._apply_max_norm(group)
        return loss

    def _step_group(self, group):
        raise NotImplementedError(f"{type(self).__name__} does not define _step_group")

    @staticmethod
    def _apply_max_norm(group):
        """Rescale each ``p[i]`` to L2 norm ``max_norm`` where larger (``torch.renorm(p, 2, 0,
        max_norm)``), for the group's parameters that have a grad and at least two dimensions."""
        max_norm = float(group["max_norm"])
        for p in group["params"]:
            data = p.data
            if p.grad is None or data.ndim < 2 or data.size == 0:
                continue
            norms = np.linalg.norm(data.reshape(data.shape[0], -1), axis=1)
            factor = np.add(norms, _RENORM_EPS)
            np.divide(max_norm, factor, out=factor)
            factor[~(norms > max_norm)] = 1.0
            data *= factor.reshape((-1,) + (1,) * (data.ndim - 1))

    def _scale(self, p, factor):
        """``p.data *= factor`` in place, on the parameter's device."""
        tier_of(p.data).axpby(p.data, p.data, factor, 0.0)

    def state_dict(self):
        """Deep-copied ``{"state": {index: {...}}, "param_groups": [...]}`` as torch.

        Parameters are replaced by their running index over all groups. State
        arrays are NumPy copies, also for parameters on the device.
        """
        groups, state, index = [], {}, 0
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = list(range(index, index + len(group["params"])))
            for p in group["params"]:
                if self.state.get(id(p)):
                    state[index] = {k: (v.copy() if isinstance(v, np.ndarray)
                                        else to_numpy(v) if is_device_array(v) else v)
                                    for k, v in self.state[id(p)].items()}
                index += 1
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state produced by :meth:`state_dict`.

        State arrays go to their parameter's device and dtype. A hyper-parameter
        the saved groups lack (e.g. ``l1`` in an older checkpoint) keeps its
        current value.
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups)} param groups, "
                             f"optimizer has {len(self.param_groups)}")
        params = []
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"param group sizes differ: saved {len(saved['params'])}, "
                                 f"optimizer {len(group['params'])}")
            params.extend(zip(saved["params"], group["params"]))
        index_to_param = dict(params)
        new_state = {}
        for index, pstate in state_dict["state"].items():
            p = index_to_param[int(index)]
            s = {}
            for key, value in pstate.items():
                if is_device_array(value):
                    value = to_numpy(value)
                if isinstance(value, np.ndarray):
                    if value.shape != p.data.shape:
                        raise ValueError(f"state {key!r} shape {value.shape} does not "
                                         f"match param shape {p.data.shape}")
                    value = np.array(value, dtype=p.data.dtype)
                    if is_device_array(p.data):
                        value = to_device(value)
                s[key] = value
            new_state[id(p)] = s
        for saved, group in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = value
            self._check_group(group)
        self.state = new_state
