"""The losses' PyTorch options against torch.nn.functional, forward and gradient, on the host tiers.

CrossEntropyLoss(weight, ignore_index, reduction, label_smoothing) in every combination, NLLLoss,
BCEWithLogitsLoss(weight, pos_weight) and MSELoss(reduction), in float32 and float64, on fixed
cases and on hypothesis-drawn shapes and options; finite differences in float64; the error
contract; class_weights. (The cuda tier: test_loss.py.)
"""
import pytest

# Oracles and optional features: without them (a plain `pip install -e ".[test]"`) this
# module is skipped with the reason; CI installs them and fails on such a skip.
pytest.importorskip("torch")

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import fastconv as fc
import fastconv.functional as F
from fastconv.losses import (BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss, class_weights,
                             log_softmax)

from helpers import ALL_TIERS, HYPOTHESIS

TOL = {np.dtype(np.float32): dict(rtol=2e-5, atol=2e-6), np.dtype(np.float64): dict(rtol=1e-12, atol=1e-14)}
REDUCTIONS = ("mean", "sum", "none")


def _t(a):
    return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


def _upstream(loss_shape, dtype, rng):
    """A random upstream gradient for reduction "none" (None for the reduced losses)."""
    return None if loss_shape == () else rng.standard_normal(loss_shape).astype(dtype)


def _torch(fn, x, go, *args, **kwargs):
    """``fn(x, *args, **kwargs)`` in torch: (loss, d(loss . go)/dx) as NumPy."""
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    out = fn(t, *args, **kwargs)
    (out if go is None else (out * torch.from_numpy(go)).sum()).backward()
    return out.detach().numpy(), t.grad.numpy()


def _ours(loss_fn, x, target, go):
    loss = loss_fn(x, target)
    return loss, loss_fn.backward(go)


def _close(got, want, dtype, what):
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype) or got.shape == (), f"{what}: dtype {got.dtype}"
    np.testing.assert_allclose(got, want, err_msg=what, **TOL[np.dtype(dtype)])


def _class_case(n, c, dtype, seed, weighted, ignore):
    """(logits, labels, weight, ignore_index); ``ignore``: None (no row ignored), "default"
    (rows at -100) or "class" (ignore_index = class 1, present)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * 2).astype(dtype)
    y = rng.integers(0, c, n)
    ii = -100
    if ignore == "default":
        y[::3] = -100
    elif ignore == "class":
        ii, y[::2] = 1, 1
    w = rng.uniform(0.2, 3.0, c).astype(dtype) if weighted else None
    return x, y, w, ii, rng


@pytest.mark.parametrize("tier", ALL_TIERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, "default", "class"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_cross_entropy_matches_torch(tier, dtype, reduction, weighted, ignore, smoothing):
    x, y, w, ii, rng = _class_case(7, 5, dtype, 1, weighted, ignore)
    fc.set_backend(tier)
    try:
        loss_fn = CrossEntropyLoss(weight=w, ignore_index=ii, reduction=reduction,
                                   label_smoothing=smoothing)
        go = _upstream((7,) if reduction == "none" else (), dtype, rng)
        loss, grad = _ours(loss_fn, x, y, go)
    finally:
        fc.set_backend("cpu")
    want_loss, want_grad = _torch(torch.nn.functional.cross_entropy, x, go, _t(y), weight=_t(w),
                                  ignore_index=ii, reduction=reduction, label_smoothing=smoothing)
    _close(loss, want_loss, dtype, "loss")
    _close(grad, want_grad, dtype, "dlogits")
    if reduction != "none":
        assert isinstance(loss, float)


def test_every_ignored_row_gives_nan_mean_and_zero_gradient_as_torch():
    x = np.random.default_rng(0).standard_normal((3, 4))
    for tier in ALL_TIERS:
        for w, smoothing in [(None, 0.0), (np.ones(4), 0.2)]:
            loss, grad = F.cross_entropy(x, np.full(3, 2), weight=w, ignore_index=2,
                                         label_smoothing=smoothing, backend=tier)
            ref = torch.nn.functional.cross_entropy(_t(x), _t(np.full(3, 2)), ignore_index=2,
                                                    label_smoothing=smoothing)
            assert np.isnan(loss) and np.isnan(ref.item())
            assert np.all(grad == 0)
            assert F.cross_entropy(x, np.full(3, 2), ignore_index=2, reduction="sum",
                                   backend=tier)[0] == 0.0


@st.composite
def _ce_cases(draw):
    n, c = draw(st.integers(1, 12)), draw(st.integers(1, 8))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    ii = draw(st.sampled_from([-100, -1, 0, c - 1, c + 3]))
    y = rng.integers(0, c, n)
    y[rng.random(n) < draw(st.floats(0, 0.6))] = ii  # outside [0, C) only as ignore_index
    weight = rng.uniform(0.05, 5.0, c).astype(dtype) if draw(st.booleans()) else None
    return dict(x=(rng.standard_normal((n, c)) * draw(st.sampled_from([0.1, 1.0, 10.0]))).astype(dtype),
                y=y, weight=weight, ignore_index=ii, reduction=draw(st.sampled_from(REDUCTIONS)),
                label_smoothing=draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)), rng=rng)


@HYPOTHESIS
@given(_ce_cases())
def test_cross_entropy_random_cases_match_torch(case):
    x, y, rng = case["x"], case["y"], case["rng"]
    opts = {k: case[k] for k in ("weight", "ignore_index", "reduction", "label_smoothing")}
    go = _upstream((len(y),) if opts["reduction"] == "none" else (), x.dtype, rng)
    want = _torch(torch.nn.functional.cross_entropy, x, go, _t(y),
                  **dict(opts, weight=_t(opts["weight"])))
    for tier in ALL_TIERS:
        loss, grad = F.cross_entropy(x, y, backend=tier, **opts)
        if go is not None:
            grad = grad * go[:, None]
        _close(loss, want[0], x.dtype, f"{tier} loss")
        _close(grad, want[1], x.dtype, f"{tier} dlogits")
        assert grad.dtype == x.dtype


def _numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        g[idx] = (f(xp) - f(xm)) / (2 * h)
    return g


@pytest.mark.parametrize("tier", ALL_TIERS)
def test_gradients_match_finite_differences_in_float64(tier):
    x, y, w, ii, rng = _class_case(6, 4, np.float64, 3, True, "class")
    ce = lambda z: F.cross_entropy(z, y, w, ii, "mean", 0.3, backend=tier)  # noqa: E731
    np.testing.assert_allclose(ce(x)[1], _numeric_grad(lambda z: ce(z)[0], x), rtol=1e-6, atol=1e-9)
    logp = log_softmax(x)
    nll = lambda z: F.nll_loss(z, y, w, ii, "sum", backend=tier)  # noqa: E731
    np.testing.assert_allclose(nll(logp)[1], _numeric_grad(lambda z: nll(z)[0], logp), rtol=1e-6,
                               atol=1e-9)
    t, pw = rng.random(x.shape), rng.uniform(0.5, 3, 4)
    bce = lambda z: F.binary_cross_entropy_with_logits(z, t, w, "mean", pw, backend=tier)  # noqa: E731
    np.testing.assert_allclose(bce(x)[1], _numeric_grad(lambda z: bce(z)[0], x), rtol=1e-6, atol=1e-9)
    mse = lambda z: F.mse_loss(z, t, "sum", backend=tier)  # noqa: E731
    np.testing.assert_allclose(mse(x)[1], _numeric_grad(lambda z: mse(z)[0], x), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("tier", ALL_TIERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, "default", "class"])
def test_nll_loss_matches_torch(tier, dtype, reduction, weighted, ignore):
    x, y, w, ii, rng = _class_case(6, 4, dtype, 2, weighted, ignore)
    logp = log_softmax(x)
    go = _upstream((6,) if reduction == "none" else (), dtype, rng)
    fc.set_backend(tier)
    try:
        loss, grad = _ours(NLLLoss(weight=w, ignore_index=ii, reduction=reduction), logp, y, go)
    finally:
        fc.set_backend("cpu")
    want_loss, want_grad = _torch(torch.nn.functional.nll_loss, logp, go, _t(y), weight=_t(w),
                                  ignore_index=ii, reduction=reduction)
    _close(loss, want_loss, dtype, "loss")
    _close(grad, want_grad, dtype, "dinput")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nll_of_log_softmax_is_cross_entropy(dtype):
    x, y, w, ii, _ = _class_case(9, 6, dtype, 4, True, "default")
    for reduction in REDUCTIONS:
        ce, dce = F.cross_entropy(x, y, w, ii, reduction)
        nll, dnll = F.nll_loss(log_softmax(x), y, w, ii, reduction)
        _close(nll, ce, dtype, reduction)
        assert dnll.shape == dce.shape


def _bce_case(shape, dtype, seed, weight, pos_weight, scale=3.0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    t = rng.random(shape).astype(dtype)
    t[..., 0] = rng.integers(0, 2, shape[:-1])  # hard and soft targets
    shapes = {None: None, "full": shape, "classes": shape[-1:], "rows": shape[:-1] + (1,)}
    w = None if weight is None else rng.uniform(0.1, 2, shapes[weight]).astype(dtype)
    pw = None if pos_weight is None else rng.uniform(0.1, 4, shapes[pos_weight]).astype(dtype)
    return x, t, w, pw, rng


@pytest.mark.parametrize("tier", ALL_TIERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight", [None, "classes", "rows"])
@pytest.mark.parametrize("pos_weight", [None, "classes", "full"])
def test_bce_with_logits_matches_torch(tier, dtype, reduction, weight, pos_weight):
    x, t, w, pw, rng = _bce_case((5, 3), dtype, 5, weight, pos_weight)
    go = _upstream(x.shape if reduction == "none" else (), dtype, rng)
    fc.set_backend(tier)
    try:
        loss, grad = _ours(BCEWithLogitsLoss(weight=w, reduction=reduction, pos_weight=pw), x, t, go)
    finally:
        fc.set_backend("cpu")
    want_loss, want_grad = _torch(torch.nn.functional.binary_cross_entropy_with_logits, x, go,
                                  _t(t), weight=_t(w), reduction=reduction, pos_weight=_t(pw))
    _close(loss, want_loss, dtype, "loss")
    _close(grad, want_grad, dtype, "dinput")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_with_logits_is_finite_for_huge_logits(dtype):
    x = np.array([[-1e4, -100.0, 0.0, 100.0, 1e4]], dtype)
    t = np.array([[1.0, 0.0, 0.5, 1.0, 0.0]], dtype)
    pw = np.full(5, 3.0, dtype)
    loss, grad = F.binary_cross_entropy_with_logits(x, t, reduction="none", pos_weight=pw)
    want_loss, want_grad = _torch(torch.nn.functional.binary_cross_entropy_with_logits, x,
                                  np.ones_like(x), _t(t), reduction="none", pos_weight=_t(pw))
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    _close(loss, want_loss, dtype, "loss")
    _close(grad, want_grad, dtype, "dinput")


@st.composite
def _bce_cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    kinds = [None, "classes", "full"] + (["rows"] if len(shape) > 1 else [])
    return _bce_case(shape, dtype, draw(st.integers(0, 2**31)), draw(st.sampled_from(kinds)),
                     draw(st.sampled_from(kinds)), draw(st.sampled_from([0.1, 3.0, 30.0]))) + (
        draw(st.sampled_from(REDUCTIONS)),)


@HYPOTHESIS
@given(_bce_cases())
def test_bce_and_mse_random_cases_match_torch(case):
    x, t, w, pw, rng, reduction = case
    go = _upstream(x.shape if reduction == "none" else (), x.dtype, rng)
    want = _torch(torch.nn.functional.binary_cross_entropy_with_logits, x, go, _t(t), weight=_t(w),
                  reduction=reduction, pos_weight=_t(pw))
    want_mse = _torch(torch.nn.functional.mse_loss, x, go, _t(t), reduction=reduction)
    for tier in ALL_TIERS:
        fc.set_backend(tier)
        try:
            got = _ours(BCEWithLogitsLoss(w, reduction, pw), x, t, go)
            got_mse = _ours(MSELoss(reduction), x, t, go)
        finally:
            fc.set_backend("cpu")
        for g, wnt, what in ((got, want, "bce"), (got_mse, want_mse, "mse")):
            _close(g[0], wnt[0], x.dtype, f"{tier} {what} loss")
            _close(g[1], wnt[1], x.dtype, f"{tier} {what} grad")


@pytest.mark.parametrize("tier", ALL_TIERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(tier, dtype, reduction):
    rng = np.random.default_rng(6)
    x, t = rng.standard_normal((4, 3, 2)).astype(dtype), rng.standard_normal((4, 3, 2)).astype(dtype)
    go = _upstream(x.shape if reduction == "none" else (), dtype, rng)
    fc.set_backend(tier)
    try:
        loss, grad = _ours(MSELoss(reduction=reduction), x, t, go)
    finally:
        fc.set_backend("cpu")
    want_loss, want_grad = _torch(torch.nn.functional.mse_loss, x, go, _t(t), reduction=reduction)
    _close(loss, want_loss, dtype, "loss")
    _close(grad, want_grad, dtype, "dinput")


def test_backward_scales_by_a_number_for_reduced_losses():
    x, y, w, ii, _ = _class_case(5, 3, np.float64, 7, True, None)
    loss_fn = CrossEntropyLoss(weight=w, reduction="sum")
    loss_fn(x, y)
    base = loss_fn.backward()
    assert loss_fn.backward(1.0) is base
    np.testing.assert_allclose(loss_fn.backward(-2.5), -2.5 * base)


def test_default_options_take_the_fused_kernel_and_agree_with_the_general_one():
    x, y, *_ = _class_case(8, 5, np.float64, 8, False, None)
    for tier in ALL_TIERS:
        k = fc._backend.kernels(tier)
        fused, general = k.softmax_cross_entropy(x, y), k.cross_entropy(x, y, None, -100, "mean", 0.0)
        assert F.cross_entropy(x, y, backend=tier)[0] == fused[0]
        np.testing.assert_allclose(general[0], fused[0], rtol=1e-14)
        np.testing.assert_allclose(general[1], fused[1], rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("make, exc, match", [
    (lambda: CrossEntropyLoss(reduction="avg"), ValueError, "'avg' is not a valid value for reduction"),
    (lambda: CrossEntropyLoss(label_smoothing=1.5), ValueError, "label_smoothing.*1.5"),
    (lambda: CrossEntropyLoss(label_smoothing=-0.1), ValueError, "label_smoothing"),
    (lambda: CrossEntropyLoss(ignore_index=1.0), TypeError, "ignore_index"),
    (lambda: CrossEntropyLoss(weight=np.ones(3), fn=lambda a, b: (0.0, a)), ValueError, "fn="),
    (lambda: NLLLoss(reduction=None), ValueError, "reduction"),
    (lambda: BCEWithLogitsLoss(reduction="mean "), ValueError, "reduction"),
    (lambda: MSELoss(reduction="elementwise_mean"), ValueError, "reduction"),
])
def test_bad_options_are_refused_at_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("call, exc, match", [
    (lambda: CrossEntropyLoss(weight=np.ones(4))(np.zeros((2, 3)), np.array([0, 1])), ValueError,
     r"weight must be 1-D with one entry per class \(3,\).*\(4,\)"),
    (lambda: CrossEntropyLoss()(np.zeros((2, 3)), np.array([0, -1])), ValueError,
     r"\[0, 3\) \(or equal ignore_index=-100\).*\[-1\]"),
    (lambda: CrossEntropyLoss(ignore_index=5)(np.zeros((2, 3)), np.array([0, -100])), ValueError,
     r"ignore_index=5.*\[-100\]"),
    (lambda: NLLLoss()(np.zeros((2, 3)), np.array([3, 0])), ValueError, r"\[0, 3\).*\[3\]"),
    (lambda: NLLLoss()(np.zeros((2, 3, 1)), np.array([0, 1])), ValueError, r"2-D.*\(2, 3, 1\)"),
    (lambda: BCEWithLogitsLoss()(np.zeros((2, 3)), np.zeros((2, 2))), ValueError,
     r"target size \(2, 2\) must be the same as input size \(2, 3\)"),
    (lambda: BCEWithLogitsLoss(pos_weight=np.ones(2))(np.zeros((2, 3)), np.zeros((2, 3))), ValueError,
     r"pos_weight of shape \(2,\) does not broadcast to the input's shape \(2, 3\)"),
    (lambda: BCEWithLogitsLoss(weight=np.ones((3, 3)))(np.zeros((2, 3)), np.zeros((2, 3))),
     ValueError, "weight of shape"),
    (lambda: MSELoss()(np.zeros(3, complex), np.zeros(3)), TypeError, "complex"),
    (lambda: F.mse_loss(np.zeros(3), np.zeros(4)), ValueError,
     r"target size \(4,\) must be the same as input size \(3,\)"),
    (lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), weight=np.array(["a"] * 3)),
     TypeError, "weight must be a real numeric array"),
])
def test_bad_inputs_are_refused_with_the_names_and_shapes(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_backward_contract_for_reduction_none():
    loss_fn = CrossEntropyLoss(reduction="none")
    with pytest.raises(RuntimeError, match="before forward"):
        loss_fn.backward()
    x, y, *_ = _class_case(4, 3, np.float32, 9, False, None)
    per = loss_fn(x, y)
    assert per.shape == (4,) and per.dtype == np.float32
    with pytest.raises(ValueError, match=r"pass backward\(grad_output\).*\(4,\)"):
        loss_fn.backward()
    with pytest.raises(ValueError, match=r"grad_output has shape \(3,\)"):
        loss_fn.backward(np.ones(3, np.float32))
    reduced = CrossEntropyLoss()
    reduced(x, y)
    with pytest.raises(ValueError, match="is a number"):
        reduced.backward(np.ones(4))


@pytest.mark.parametrize("tier", ALL_TIERS)
def test_empty_inputs_in_the_functional_api_follow_torch(tier):
    for reduction, want in (("mean", np.nan), ("sum", 0.0)):
        for call in (lambda r: F.cross_entropy(np.zeros((0, 3)), np.zeros(0, int), reduction=r,
                                               label_smoothing=0.1, backend=tier),
                     lambda r: F.nll_loss(np.zeros((0, 3)), np.zeros(0, int), reduction=r,
                                          backend=tier),
                     lambda r: F.binary_cross_entropy_with_logits(np.zeros((0, 2)), np.zeros((0, 2)),
                                                                  reduction=r, backend=tier),
                     lambda r: F.mse_loss(np.zeros((0, 2)), np.zeros((0, 2)), reduction=r,
                                          backend=tier)):
            loss, grad = call(reduction)
            np.testing.assert_equal(loss, want)
            assert grad.size == 0
            assert call("none")[0].shape[0] == 0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_classes_agree_with_the_functions_and_torch_on_an_empty_batch(reduction):
    """A class returns what its function returns for an empty batch, and both what PyTorch
    returns (NaN for the mean over nothing, 0 for the sum, an empty array); backward gives an
    empty gradient."""
    x, labels, target = np.zeros((0, 3), np.float32), np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
    cases = [(CrossEntropyLoss, F.cross_entropy, torch.nn.CrossEntropyLoss, labels),
             (NLLLoss, F.nll_loss, torch.nn.NLLLoss, labels),
             (BCEWithLogitsLoss, F.binary_cross_entropy_with_logits, torch.nn.BCEWithLogitsLoss, target),
             (MSELoss, F.mse_loss, torch.nn.MSELoss, target)]
    for cls, fn, torch_cls, y in cases:
        loss_fn = cls(reduction=reduction)
        loss = loss_fn(x, y)
        want = torch_cls(reduction=reduction)(_t(x), _t(y)).detach().numpy()
        np.testing.assert_equal(np.asarray(loss), want, err_msg=cls.__name__)
        np.testing.assert_equal(np.asarray(loss), np.asarray(fn(x, y, reduction=reduction)[0]))
        grad = loss_fn.backward(np.zeros(np.shape(loss), np.float32) if reduction == "none" else None)
        assert grad.shape == x.shape and grad.dtype == np.float32, cls.__name__


def test_loss_classes_take_the_inputs_their_functions_take():
    """Integer logits are cast to float32 by the functional call; the class no longer refuses
    what its function accepts."""
    logits, labels = np.array([[2, 0, 1], [0, 1, 0]]), np.array([0, 1])
    np.testing.assert_allclose(CrossEntropyLoss()(logits, labels),
                               F.cross_entropy(logits, labels)[0], rtol=1e-7)
    np.testing.assert_allclose(MSELoss()(np.arange(3), np.zeros(3)), 5 / 3, rtol=1e-7)


def test_weighted_losses_train_with_the_trainer():
    """The Trainer drives the option losses (forward -> float, backward() -> gradient)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 1, 4, 4)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.3).astype(np.int64)  # imbalanced: about a quarter are 1
    weights = class_weights(y)
    fc.manual_seed(0)
    model = fc.Sequential(fc.Flatten(), fc.Linear(16, 2))
    loss_fn = CrossEntropyLoss(weight=weights, label_smoothing=0.05)
    history = fc.Trainer(model, loss=loss_fn).fit(x, y, epochs=3, batch_size=16, seed=0,
                                                  progress=False)
    assert history.loss[-1] < history.loss[0]
    logits = model.predict(x)
    want = torch.nn.functional.cross_entropy(_t(logits), _t(y), weight=_t(weights),
                                             label_smoothing=0.05).item()
    assert fc.Trainer(model, loss=loss_fn).evaluate(x, y)["loss"] == pytest.approx(want, rel=1e-5)


def test_class_weights_is_sklearns_balanced_rule():
    y = np.array([0] * 6 + [1] * 3 + [2])
    w = class_weights(y)
    np.testing.assert_allclose(w, [10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)], rtol=1e-7)
    assert w.dtype == np.float32
    counts = np.bincount(y)
    np.testing.assert_allclose(w * counts, np.full(3, 10 / 3), rtol=1e-6)  # equal weighted counts
    np.testing.assert_allclose(class_weights(y, 3, dtype=np.float64).mean(),
                               np.mean(10 / (3 * counts)), rtol=1e-15)
    with pytest.raises(ValueError, match=r"classes \[3\] have no sample"):
        class_weights(y, num_classes=4)
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        class_weights(y, num_classes=2)
    with pytest.raises(ValueError, match="unknown mode 'inverse'"):
        class_weights(y, mode="inverse")
    with pytest.raises(ValueError, match="non-empty 1-D integer"):
        class_weights(np.array([0.0, 1.0]))
