"""Optimizers (SGD, Adam) and learning-rate schedulers with torch.optim semantics.

Parameters are duck-typed: anything with ``.data`` (ndarray) and ``.grad``
(ndarray of the same shape, or ``None``) works. Optimizers update ``p.data``
strictly in place (layers hold references to it) and never touch ``p.grad``
except in :meth:`Optimizer.zero_grad`.

Gradient accumulation contract for layers: ``zero_grad()`` sets ``p.grad``
to ``None`` by default (torch's ``set_to_none=True``). A layer's backward
must therefore do ``p.grad += g`` when ``p.grad`` is not ``None`` and
``p.grad = g.copy()`` (a fresh array, never a view of a scratch buffer)
otherwise. Parameters whose ``grad`` is ``None`` are skipped by ``step()``.

Backends: the per-parameter arithmetic lives in :func:`sgd_update` and
:func:`adam_update`, written as in-place NumPy ufunc calls and reached
through the class attributes ``SGD.update_fn`` / ``Adam.update_fn``; state
buffers are allocated through ``Optimizer.zeros_like``. A parameter whose
``data`` is a CUDA device array (after ``model.to("cuda")``) is updated by
the cuda tier's function of the same name and signature
(``fastconv.kernels.cuda.sgd_update`` / ``adam_update``) and its state is
allocated on the device (``cuda.zeros_like``): no host round trip. State is
made at a parameter's first step, so move the model before the first step.
All hyper-parameters are passed as Python floats, so float32 parameters are
updated in float32 (NumPy 2 treats Python scalars as weak).

Checkpointing: :meth:`Optimizer.state_dict` returns a nested dict of NumPy
arrays (device state is copied to the host) and Python scalars;
:func:`flatten_state` turns any such dict into ``{str: ndarray}`` for
``np.savez`` and :func:`unflatten_state` restores it exactly (types
included); :meth:`Optimizer.load_state_dict` puts arrays on each parameter's
device.
"""

import json

import numpy as np

from ._backend import is_device_array, kernels, to_numpy
from ._backend import to_device

__all__ = ["Optimizer", "SGD", "Adam", "StepLR", "ReduceLROnPlateau",
           "sgd_update", "adam_update", "flatten_state", "unflatten_state"]


# --------------------------------------------------------------------------
# per-parameter update rules (swap-in points for other backends)
# --------------------------------------------------------------------------

def sgd_update(data, grad, buf, lr, momentum, dampening, nesterov,
               weight_decay, first_step):
    """One torch-equivalent SGD update of ``data``, in place.

    Parameters
    ----------
    data, grad : ndarray
        Parameter (updated in place) and its gradient (read only).
    buf : ndarray or None
        Momentum buffer (updated in place); ``None`` when ``momentum == 0``.
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
        Parameter (updated in place) and its gradient (read only).
    exp_avg, exp_avg_sq : ndarray
        First and second moment estimates (updated in place).
    max_exp_avg_sq : ndarray or None
        Running max of ``exp_avg_sq`` (updated in place) when ``amsgrad``.
    step : int
        Step count *including* this step (1 on the first call).
    lr, beta1, beta2, eps, weight_decay : float
    amsgrad : bool
    """
    g = grad
    if weight_decay != 0:
        g = np.multiply(data, weight_decay)
        g += grad
    # exp_avg.lerp_(g, 1 - beta1), with torch's two-branch lerp formula
    w = 1.0 - beta1
    tmp = np.subtract(g, exp_avg)
    if abs(w) < 0.5:
        tmp *= w
        exp_avg += tmp
    else:
        tmp *= 1.0 - w
        np.subtract(g, tmp, out=exp_avg)
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


# --------------------------------------------------------------------------
# optimizers
# --------------------------------------------------------------------------

class Optimizer:
    """Base class holding ``param_groups`` and per-parameter ``state``.

    Parameters
    ----------
    params : iterable
        Parameters (objects with ``.data``/``.grad``) or dicts
        ``{"params": [...], "lr": ..., ...}`` defining parameter groups.
    defaults : dict
        Hyper-parameters used where a group does not set them.

    Attributes
    ----------
    param_groups : list of dict
    state : dict
        ``id(param) -> dict`` of that parameter's state (arrays, step, ...).
    """

    zeros_like = staticmethod(np.zeros_like)
    #: Name of the cuda tier's function replacing ``update_fn`` for device parameters.
    tier_update = None

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
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
        """Yield ``(param, grad)`` for params with a grad, grad in param dtype."""
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.shape != p.data.shape:
                raise ValueError(
                    f"grad shape {p.grad.shape} does not match param shape {p.data.shape}")
            if is_device_array(p.grad):  # the tier's gradient, already in the param dtype
                yield p, p.grad
            else:
                yield p, np.asanyarray(p.grad).astype(p.data.dtype, copy=False)

    def _update_fn(self, p):
        """The update rule for ``p``: ``update_fn``, or the cuda tier's for a device parameter."""
        if is_device_array(p.data):
            return getattr(kernels("cuda"), self.tier_update)
        return self.update_fn

    def _zeros(self, p):
        """A zero state buffer like ``p.data``, on its device."""
        if is_device_array(p.data):
            return kernels("cuda").zeros_like(p.data)
        return self.zeros_like(p.data)

    def step(self, closure=None):
        """Perform one update; ``closure()`` (if given) is called first and returned."""
        loss = None if closure is None else closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group):
        raise NotImplementedError

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

        State arrays go to their parameter's device and dtype.
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


class SGD(Optimizer):
    """Stochastic gradient descent with torch.optim.SGD's exact update rule.

    ``d = g + weight_decay * p``; with momentum ``buf = d`` on the first step,
    else ``buf = momentum * buf + (1 - dampening) * d``; ``d = d + momentum *
    buf`` if nesterov else ``buf``; ``p -= lr * d``.

    Parameters
    ----------
    params : iterable
    lr : float
    momentum, dampening, weight_decay : float, optional
    nesterov : bool, optional
        Requires ``momentum > 0`` and ``dampening == 0``.
    """

    update_fn = staticmethod(sgd_update)
    tier_update = "sgd_update"

    def __init__(self, params, lr, momentum=0.0, dampening=0.0, nesterov=False,
                 weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay))

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


class Adam(Optimizer):
    """Adam with torch.optim.Adam's exact update rule (L2 weight decay, amsgrad).

    Parameters
    ----------
    params : iterable
    lr : float, optional
    betas : (float, float), optional
    eps, weight_decay : float, optional
    amsgrad : bool, optional
        Use the running maximum of the second moment in the denominator.
    """

    update_fn = staticmethod(adam_update)
    tier_update = "adam_update"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, amsgrad=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad))

    def _check_group(self, group):
        super()._check_group(group)
        group["betas"] = tuple(group["betas"])
        if not group["eps"] >= 0.0:
            raise ValueError(f"Invalid epsilon value: {group['eps']}")
        for i, beta in enumerate(group["betas"]):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")

    def _step_group(self, group):
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        beta1, beta2 = (float(b) for b in group["betas"])
        amsgrad = bool(group["amsgrad"])
        for p, grad in self._grads(group):
            state = self.state.setdefault(id(p), {})
            if not state:
                state["step"] = 0
                state["exp_avg"] = self._zeros(p)
                state["exp_avg_sq"] = self._zeros(p)
            if amsgrad and state.get("max_exp_avg_sq") is None:
                state["max_exp_avg_sq"] = self._zeros(p)
            state["step"] += 1
            self._update_fn(p)(p.data, grad, state["exp_avg"], state["exp_avg_sq"],
                               state.get("max_exp_avg_sq"), state["step"], lr, beta1,
                               beta2, eps, wd, amsgrad)


# --------------------------------------------------------------------------
# schedulers
# --------------------------------------------------------------------------

class _Scheduler:
    _state_keys = ()

    def get_last_lr(self):
        """Learning rates of all groups as set by the last ``step``."""
        return list(self._last_lr)

    def state_dict(self):
        """Scheduler state (Python scalars/lists only), as torch's."""
        return {k: (list(v) if isinstance(v, list) else v)
                for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore the state returned by :meth:`state_dict`."""
        self.__dict__.update({k: (list(v) if isinstance(v, (list, tuple)) else v)
                              for k, v in state_dict.items()})


class StepLR(_Scheduler):
    """Multiply every group's lr by ``gamma`` each ``step_size`` calls to ``step()``.

    Same chainable semantics as torch.optim.lr_scheduler.StepLR: construction
    performs the initial step (``last_epoch`` becomes 0, lr unchanged).
    """

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if int(step_size) != step_size or step_size < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size}")
        self.optimizer = optimizer
        self.step_size = int(step_size)
        self.gamma = gamma
        for i, group in enumerate(optimizer.param_groups):
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] "
                               "when resuming an optimizer")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self.step()

    def step(self):
        """Advance one epoch and update the groups' ``lr``."""
        self._step_count += 1
        self.last_epoch += 1
        decay = self.last_epoch != 0 and self.last_epoch % self.step_size == 0
        for group in self.optimizer.param_groups:
            if decay:
                group["lr"] = group["lr"] * self.gamma
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


class ReduceLROnPlateau(_Scheduler):
    """Reduce lr by ``factor`` once a metric stops improving (torch semantics).

    Parameters
    ----------
    optimizer : Optimizer
    mode : {"min", "max"}
    factor : float
        Must be < 1.
    patience : int
        Bad epochs tolerated before reducing.
    threshold : float
    threshold_mode : {"rel", "abs"}
    cooldown : int
        Epochs to wait after a reduction before counting bad epochs again.
    min_lr : float or list of float
    eps : float
        Reductions smaller than ``eps`` are ignored.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        self.factor = factor
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(optimizer.param_groups):
                raise ValueError(f"expected {len(optimizer.param_groups)} min_lrs, "
                                 f"got {len(min_lr)}")
            self.default_min_lr = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(optimizer.param_groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]
        self._init_is_better(mode, threshold, threshold_mode)
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def _init_is_better(self, mode, threshold, threshold_mode):
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        self.mode_worse = float("inf") if mode == "min" else float("-inf")
        self.mode, self.threshold, self.threshold_mode = mode, threshold, threshold_mode

    @property
    def in_cooldown(self):
        """True while reductions are suspended after the last one."""
        return self.cooldown_counter > 0

    def _is_better(self, a, best):
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics):
        """Record one epoch's ``metrics`` value and reduce lr if it plateaued."""
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self):
        if len(self.optimizer.param_groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError("number of param groups changed since the scheduler "
                                   "was created; update `min_lrs`")
            self.min_lrs = [self.default_min_lr] * len(self.optimizer.param_groups)
        for i, group in enumerate(self.optimizer.param_groups):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, self.min_lrs[i])
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def load_state_dict(self, state_dict):
        """Restore the state returned by :meth:`state_dict`."""
        super().load_state_dict(state_dict)
        self._init_is_better(self.mode, self.threshold, self.threshold_mode)


# --------------------------------------------------------------------------
# npz-friendly flattening of nested state dicts
# --------------------------------------------------------------------------

_META = "__meta__"


def flatten_state(d, prefix=""):
    """Flatten a nested state dict into ``{str: ndarray}`` for ``np.savez``.

    Arrays (and NumPy scalars) are stored under readable dotted keys such as
    ``prefix + "state.0.exp_avg"``; the structure and all Python scalars
    (int, float incl. inf/nan, bool, None, str, list, tuple, dict with int or
    str keys) go to one JSON string array under ``prefix + "__meta__"``.

    Parameters
    ----------
    d : dict
    prefix : str, optional
        Prepended to every key, so several states can share one ``.npz``.

    Returns
    -------
    dict of str to ndarray
    """
    flat = {prefix + _META: None}

    def join(path, key):
        return f"{path}.{key}" if path else str(key)

    def enc(obj, path):
        if isinstance(obj, (np.ndarray, np.generic)):
            key = prefix + path
            if key in flat:
                key = f"{key}#{len(flat)}"
            flat[key] = np.array(obj)
            return {"nd": key[len(prefix):], "scalar": isinstance(obj, np.generic)}
        if isinstance(obj, dict):
            for k in obj:
                if isinstance(k, bool) or not isinstance(k, (int, str)):
                    raise TypeError(f"dict keys must be int or str, got {k!r} at {path!r}")
            return {"dict": [[k, enc(v, join(path, k))] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            tag = "list" if isinstance(obj, list) else "tuple"
            return {tag: [enc(v, join(path, i)) for i, v in enumerate(obj)]}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot flatten {type(obj).__name__} at {path!r}")

    flat[prefix + _META] = np.array(json.dumps(enc(d, "")))
    return flat


def unflatten_state(flat, prefix=""):
    """Inverse of :func:`flatten_state`; accepts a dict or an ``np.load`` result.

    Arrays are copied, Python scalar types, tuples and int dict keys restored.
    """
    def dec(obj):
        if not isinstance(obj, dict):
            return obj
        if "nd" in obj:
            arr = np.array(flat[prefix + obj["nd"]])
            return arr[()] if obj["scalar"] else arr
        if "dict" in obj:
            return {k: dec(v) for k, v in obj["dict"]}
        if "list" in obj:
            return [dec(v) for v in obj["list"]]
        return tuple(dec(v) for v in obj["tuple"])

    return dec(json.loads(str(np.asarray(flat[prefix + _META])[()])))
