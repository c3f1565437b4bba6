"""Every scheduler against torch.optim.lr_scheduler, step by step, and its state dict.

fastconv and torch run side by side on optimizers with two parameter groups (different lrs) for
``STEPS`` steps; after construction and after every step the scheduler's ``get_last_lr()``, each
group's ``lr`` and (OneCycleLR) the cycled momentum must equal torch's to 1e-12.
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import math

import numpy as np
import pytest
import torch
import torch.optim.lr_scheduler as tls

from fastconv.optim import (SGD, Adagrad, Adam, AdamW, CosineAnnealingLR, ExponentialLR, LambdaLR,
                            LinearLR, LRScheduler, MultiStepLR, OneCycleLR, ReduceLROnPlateau,
                            RMSprop, SequentialLR, StepLR, flatten_state, lr_scheduler,
                            unflatten_state)
from fastconv.optim import Optimizer as FcOptimizer
from test_optim import P

STEPS = 30
LRS = (0.1, 0.02)


def _optimizers(kind="SGD", **kwargs):
    ours_cls = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW, "RMSprop": RMSprop}[kind]
    ours = ours_cls([{"params": [P([1.0])], "lr": LRS[0]}, {"params": [P([2.0])], "lr": LRS[1]}],
                    **kwargs)
    theirs = getattr(torch.optim, kind)(
        [{"params": [torch.zeros(1, requires_grad=True)], "lr": LRS[0]},
         {"params": [torch.zeros(1, requires_grad=True)], "lr": LRS[1]}], **kwargs)
    return ours, theirs


def _lam(e):
    return 0.9 ** e + 0.01 * (e % 3)


class Warmup:
    """A callable object: LambdaLR saves its ``__dict__``."""

    def __init__(self, steps):
        self.steps = steps

    def __call__(self, epoch):
        return min(1.0, (epoch + 1) / self.steps)


def _make(mod, spec):
    """Build the scheduler described by ``spec`` with module ``mod`` (fastconv's or torch's)."""
    name, kwargs = spec
    cls = getattr(mod, name)
    if name != "SequentialLR":
        return lambda opt: cls(opt, **kwargs)

    def build(opt):
        inner = [_make(mod, s)(opt) for s in kwargs["schedulers"]]
        return cls(opt, inner, milestones=kwargs["milestones"])
    return build


SPECS = [
    ("StepLR", dict(step_size=4, gamma=0.5)),
    ("MultiStepLR", dict(milestones=[3, 7, 7, 12], gamma=0.5)),
    ("MultiStepLR", dict(milestones=[25, 5], gamma=0.3)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("CosineAnnealingLR", dict(T_max=10, eta_min=0.001)),
    ("CosineAnnealingLR", dict(T_max=7)),
    ("LinearLR", dict(start_factor=0.1, total_iters=8)),
    ("LinearLR", dict(start_factor=0.5, end_factor=0.1, total_iters=4)),
    ("LinearLR", dict()),
    ("LambdaLR", dict(lr_lambda=_lam)),
    ("LambdaLR", dict(lr_lambda=[_lam, lambda e: 1.0 / (e + 1)])),
    ("SequentialLR", dict(schedulers=[("LinearLR", dict(start_factor=0.01, total_iters=5)),
                                      ("CosineAnnealingLR", dict(T_max=25, eta_min=1e-4))],
                          milestones=[5])),
    ("SequentialLR", dict(schedulers=[("ExponentialLR", dict(gamma=0.8)),
                                      ("StepLR", dict(step_size=2, gamma=0.5)),
                                      ("MultiStepLR", dict(milestones=[15, 20], gamma=0.1))],
                          milestones=[4, 10])),
    ("SequentialLR", dict(schedulers=[("LambdaLR", dict(lr_lambda=_lam)),
                                      ("LinearLR", dict(start_factor=0.2, total_iters=6))],
                          milestones=[12])),
]
ONECYCLE = [
    ("SGD", dict(momentum=0.9), dict(max_lr=1.0, total_steps=STEPS)),
    ("SGD", dict(momentum=0.9, nesterov=True),
     dict(max_lr=[1.0, 0.5], epochs=5, steps_per_epoch=6, anneal_strategy="linear")),
    ("SGD", dict(), dict(max_lr=0.3, total_steps=STEPS, cycle_momentum=False, pct_start=0.25,
                         div_factor=10.0, final_div_factor=100.0)),
    ("SGD", dict(momentum=0.5), dict(max_lr=0.3, total_steps=STEPS, three_phase=True,
                                     base_momentum=[0.8, 0.7], max_momentum=0.9)),
    ("Adam", dict(), dict(max_lr=0.01, total_steps=STEPS, three_phase=True,
                          anneal_strategy="linear")),
    ("AdamW", dict(), dict(max_lr=0.01, total_steps=STEPS + 5, pct_start=0.5)),
    ("RMSprop", dict(momentum=0.9), dict(max_lr=0.01, total_steps=STEPS)),
]


def _check(sched, tsched, opt, topt, step):
    want = tsched.get_last_lr()
    np.testing.assert_allclose(sched.get_last_lr(), want, rtol=1e-12, atol=0,
                               err_msg=f"step {step}")
    for key in ("lr", "momentum", "betas"):
        for g, tg in zip(opt.param_groups, topt.param_groups):
            if key in tg:
                np.testing.assert_allclose(g[key], tg[key], rtol=1e-12, atol=0,
                                           err_msg=f"{key} at step {step}")


def _side_by_side(opt, topt, sched, tsched, steps=STEPS):
    _check(sched, tsched, opt, topt, 0)
    for step in range(1, steps + 1):
        opt.step()
        topt.step()  # no grads: a no-op that keeps torch's call-order check quiet
        sched.step()
        tsched.step()
        _check(sched, tsched, opt, topt, step)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s[0])
def test_matches_torch_every_step(spec):
    opt, topt = _optimizers(momentum=0.9)
    _side_by_side(opt, topt, _make(lr_scheduler, spec)(opt), _make(tls, spec)(topt))


@pytest.mark.parametrize("kind, opt_kwargs, kwargs", ONECYCLE)
def test_onecycle_matches_torch_every_step(kind, opt_kwargs, kwargs):
    opt, topt = _optimizers(kind, **opt_kwargs)
    sched, tsched = OneCycleLR(opt, **kwargs), tls.OneCycleLR(topt, **kwargs)
    for key in ("initial_lr", "max_lr", "min_lr"):
        assert [g[key] for g in opt.param_groups] == [g[key] for g in topt.param_groups]
    _side_by_side(opt, topt, sched, tsched, steps=sched.total_steps)
    with pytest.raises(ValueError, match="Tried to step"):
        sched.step()


@pytest.mark.parametrize("T_max, eta_min", [(7, 0.0), (10, 0.001), (30, 0.05)])
def test_cosine_recursive_form_is_the_closed_form(T_max, eta_min):
    """Step by step, torch's recursive form equals the closed form
    ``eta_min + (base - eta_min)(1 + cos(pi t / T)) / 2``, also past T_max (where it rises)."""
    opt, _ = _optimizers()
    sched = CosineAnnealingLR(opt, T_max=T_max, eta_min=eta_min)
    for t in range(STEPS + 1):
        if t:
            sched.step()
        want = [eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2
                for base in LRS]
        np.testing.assert_allclose(sched.get_last_lr(), want, rtol=1e-12, atol=1e-16,
                                   err_msg=f"t = {t}")


def test_onecycle_shape():
    """The lr peaks at max_lr after pct_start of the steps and ends near initial_lr / 1e4."""
    opt = SGD([P([1.0])], lr=0.1, momentum=0.9)
    sched = OneCycleLR(opt, max_lr=1.0, total_steps=100, pct_start=0.3)
    lrs, moms = [opt.lr], [opt.param_groups[0]["momentum"]]
    for _ in range(99):
        sched.step()
        lrs.append(opt.lr)
        moms.append(opt.param_groups[0]["momentum"])
    assert lrs[0] == pytest.approx(1.0 / 25) and moms[0] == pytest.approx(0.95)
    assert int(np.argmax(lrs)) == 29 and max(lrs) == pytest.approx(1.0)
    assert moms[29] == pytest.approx(0.85)
    assert lrs[-1] == pytest.approx(1.0 / 25 / 1e4)


def test_chained_schedulers_match_torch():
    """Two schedulers on one optimizer compose through group['lr'] (the chainable form)."""
    opt, topt = _optimizers()
    ours = [ExponentialLR(opt, gamma=0.95), MultiStepLR(opt, milestones=[5, 9], gamma=0.5),
            CosineAnnealingLR(opt, T_max=12)]
    theirs = [tls.ExponentialLR(topt, gamma=0.95),
              tls.MultiStepLR(topt, milestones=[5, 9], gamma=0.5),
              tls.CosineAnnealingLR(topt, T_max=12)]
    for step in range(STEPS):
        topt.step()
        for s, ts in zip(ours, theirs):
            s.step()
            ts.step()
        _check(ours[-1], theirs[-1], opt, topt, step)


def test_outside_lr_change_is_followed():
    """Changing group['lr'] by hand mid-run: chainable schedulers continue from it, as torch."""
    opt, topt = _optimizers()
    sched, tsched = CosineAnnealingLR(opt, T_max=20), tls.CosineAnnealingLR(topt, T_max=20)
    for step in range(STEPS):
        if step == 6:
            opt.param_groups[0]["lr"] = topt.param_groups[0]["lr"] = 0.5
        topt.step()
        sched.step()
        tsched.step()
        _check(sched, tsched, opt, topt, step)


@pytest.mark.parametrize("name, kwargs", [
    ("CosineAnnealingLR", dict(T_max=10, eta_min=0.01)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("LinearLR", dict(start_factor=0.25, total_iters=10)),
    ("StepLR", dict(step_size=3)),
])
def test_resume_with_last_epoch_matches_torch(name, kwargs):
    """``last_epoch=k`` resumes from the groups' initial_lr, as torch (its special branches)."""
    opt, topt = _optimizers()
    for o in (opt, topt):
        for g in o.param_groups:
            g["initial_lr"] = g["lr"] * 2
    sched = getattr(lr_scheduler, name)(opt, last_epoch=4, **kwargs)
    tsched = getattr(tls, name)(topt, last_epoch=4, **kwargs)
    _side_by_side(opt, topt, sched, tsched, steps=15)


# ----------------------------------------------------------------------------- state dicts
def _roundtrip(state, tmp_path):
    """``state`` through flatten_state -> np.savez -> np.load -> unflatten_state."""
    np.savez(tmp_path / "s.npz", **flatten_state(state))
    with np.load(tmp_path / "s.npz") as z:
        return unflatten_state(z)


STATE_SPECS = SPECS + [("LambdaLR", dict(lr_lambda=Warmup(8))),
                       ("OneCycleLR", dict(max_lr=0.5, total_steps=STEPS, three_phase=True))]


@pytest.mark.parametrize("spec", STATE_SPECS, ids=lambda s: s[0])
def test_state_dict_resume_is_exact(spec, tmp_path):
    """Stop after 10 steps, save optimizer and scheduler, resume fresh ones: the same lrs."""
    opt, _ = _optimizers(momentum=0.9)
    sched = _make(lr_scheduler, spec)(opt)
    for _ in range(10):
        sched.step()
    opt_state = _roundtrip(opt.state_dict(), tmp_path)
    sched_state = _roundtrip(sched.state_dict(), tmp_path)
    assert "optimizer" not in sched_state
    if spec[0] == "LambdaLR":  # functions are not saved, callable objects' attributes are
        fn = spec[1]["lr_lambda"]
        assert sched_state["lr_lambdas"] == ([{"steps": 8}] * 2 if isinstance(fn, Warmup) else
                                             [None] * len(opt.param_groups))

    opt2, _ = _optimizers(momentum=0.9)
    fresh_spec = (spec[0], dict(spec[1], lr_lambda=Warmup(3))) if isinstance(
        spec[1].get("lr_lambda"), Warmup) else spec
    sched2 = _make(lr_scheduler, fresh_spec)(opt2)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    for _ in range(STEPS - 12):
        sched.step()
        sched2.step()
        assert sched2.get_last_lr() == sched.get_last_lr()
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_multistep_state_keeps_counts(tmp_path):
    opt = SGD([P([1.0])], lr=1.0)
    sched = MultiStepLR(opt, milestones=[2, 2, 4], gamma=0.5)
    sched2 = MultiStepLR(SGD([P([1.0])], lr=1.0), milestones=[9])
    sched2.load_state_dict(_roundtrip(sched.state_dict(), tmp_path))
    assert sched2.milestones == {2: 2, 4: 1}
    assert sched2._get_closed_form_lr() == [1.0]
    sched2.last_epoch = 4
    assert sched2._get_closed_form_lr() == [0.125]


def test_sequential_state_holds_its_schedulers(tmp_path):
    opt = SGD([P([1.0])], lr=1.0)
    seq = SequentialLR(opt, [ExponentialLR(opt, 0.5), StepLR(opt, 2)], milestones=[3])
    state = seq.state_dict()
    assert [s["gamma"] for s in state["_schedulers"]] == [0.5, 0.1]
    assert state["_milestones"] == [3]


# --------------------------------------------------------------------------------- errors
def _opt():
    return SGD([P([1.0])], lr=0.1, momentum=0.9)


@pytest.mark.parametrize("make, err, match", [
    (lambda o: StepLR(o, 0), ValueError, "step_size"),
    (lambda o: MultiStepLR(o, [1.5]), ValueError, "integers"),
    (lambda o: LinearLR(o, start_factor=0), ValueError, "Starting"),
    (lambda o: LinearLR(o, start_factor=1.5), ValueError, "Starting"),
    (lambda o: LinearLR(o, end_factor=-0.1), ValueError, "Ending"),
    (lambda o: CosineAnnealingLR(o, T_max=0), ValueError, "T_max"),
    (lambda o: LambdaLR(o, [_lam, _lam]), ValueError, "Expected 1 lr_lambdas"),
    (lambda o: LambdaLR(o, 0.5), TypeError, "callable"),
    (lambda o: SequentialLR(o, [], []), ValueError, "at least one"),
    (lambda o: SequentialLR(o, [StepLR(o, 2)], [3]), ValueError, "number of milestones"),
    (lambda o: SequentialLR(o, [ReduceLROnPlateau(o), StepLR(o, 2)], [3]), ValueError,
     "ReduceLROnPlateau"),
    (lambda o: SequentialLR(o, [StepLR(_opt(), 2)], []), ValueError, "same optimizer"),
    (lambda o: SequentialLR(o, [object()], []), TypeError, "optimizer"),
    (lambda o: OneCycleLR(o, 1.0), ValueError, "total_steps OR"),
    (lambda o: OneCycleLR(o, 1.0, total_steps=0), ValueError, "total_steps"),
    (lambda o: OneCycleLR(o, 1.0, epochs=2, steps_per_epoch=1.5), TypeError, "steps_per_epoch"),
    (lambda o: OneCycleLR(o, 1.0, total_steps=10, pct_start=1.2), ValueError, "pct_start"),
    (lambda o: OneCycleLR(o, 1.0, total_steps=10, pct_start=0.1), ValueError, "zero length"),
    (lambda o: OneCycleLR(o, 1.0, total_steps=10, anneal_strategy="exp"), ValueError, "anneal"),
    (lambda o: OneCycleLR(o, [1.0, 2.0], total_steps=10), ValueError, "max_lr"),
    (lambda o: OneCycleLR(Adagrad([P([1.0])]), 1.0, total_steps=10), ValueError, "momentum"),
    (lambda o: StepLR(o, 2, last_epoch=3), KeyError, "initial_lr"),
    (lambda o: ExponentialLR(torch.optim.SGD([torch.zeros(1)]), 0.9), TypeError,
     "not an Optimizer"),
])
def test_errors(make, err, match):
    with pytest.raises(err, match=match):
        make(_opt())


def test_onecycle_without_momentum_cycling_on_adagrad():
    opt = Adagrad([P([1.0])], lr=0.1)
    sched = OneCycleLR(opt, 1.0, total_steps=10, cycle_momentum=False)
    sched.step()
    assert opt.lr == sched.get_last_lr()[0] > 1.0 / 25


def test_base_class_and_exports():
    assert issubclass(OneCycleLR, LRScheduler) and issubclass(ReduceLROnPlateau, LRScheduler)
    assert lr_scheduler.StepLR is StepLR
    opt = _opt()
    sched = LambdaLR(opt, lambda e: 1.0)
    assert isinstance(sched.optimizer, FcOptimizer)
    assert sched.get_last_lr() is not sched.get_last_lr()  # a copy
    assert math.isclose(sched.base_lrs[0], 0.1)
