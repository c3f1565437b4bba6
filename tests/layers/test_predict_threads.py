"""Inference never changes state other threads see: ``predict`` (and ``Trainer.evaluate`` and
``viz.feature_maps``, which run in the same per-thread eval mode) on a model in training mode,
from several threads at once, gives eval-mode outputs everywhere and leaves every module's
train/eval flag as it was."""
import sys
import threading

import numpy as np
import pytest

import fastconv as fc
from fastconv import viz

ROUNDS = 200  # per thread; the old switch-and-restore raced within a few hundred calls


def _model():
    fc.manual_seed(0)
    return fc.Sequential(fc.Conv2d(1, 4, 3), fc.BatchNorm2d(4), fc.ReLU(), fc.Flatten(),
                         fc.Linear(4 * 6 * 6, 16), fc.BatchNorm1d(16), fc.Dropout(0.5), fc.Linear(16, 3))


def _warm(model, x):
    """A few training steps' worth of forwards so the running statistics differ from the batch's."""
    for _ in range(3):
        model(x * 3 + 1)


@pytest.fixture(autouse=True)
def _switch_often():
    """Let the interpreter switch threads every few microseconds (not every 5 ms), so that calls
    overlap as they would on a busy machine and a race shows within a few hundred calls."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def _hammer(fn, threads=2, rounds=ROUNDS):
    """Run ``fn()`` ``rounds`` times in each of ``threads`` threads started together; the results."""
    results, errors = [[] for _ in range(threads)], []
    start = threading.Barrier(threads)

    def work(out):
        try:
            start.wait()
            for _ in range(rounds):
                out.append(fn())
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
    pool = [threading.Thread(target=work, args=(out,)) for out in results]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    return [r for out in results for r in out]


def _modes(model):
    return [m.training for m in model.modules()]


def _in_eval(model, fn):
    """``fn()`` with the model switched to eval mode, then the modes set back (single-threaded)."""
    before = _modes(model)
    model.eval()
    try:
        return fn()
    finally:
        for m, mode in zip(model.modules(), before):
            m.training = mode


def test_predict_from_two_threads_gives_eval_outputs_and_leaves_the_modes():
    x = np.random.default_rng(1).normal(size=(2, 1, 8, 8)).astype(np.float32)
    model = _model()
    _warm(model, x)
    model[6].eval()  # a mixed model: the Dropout alone in eval mode, the rest training
    before = _modes(model)
    want = _in_eval(model, lambda: model.predict(x))
    assert _modes(model) == before
    for trial in range(5):  # the modes are checked after each round of overlapping calls
        outs = _hammer(lambda: model.predict(x, batch_size=1), threads=3)
        bad = sum(not np.allclose(o, want, rtol=1e-5, atol=1e-6) for o in outs)
        assert bad == 0, f"trial {trial}: {bad} of {len(outs)} predictions ran (partly) in training mode"
        assert _modes(model) == before, f"trial {trial}: predict changed the modules' modes"


def test_eval_mode_is_per_thread_and_nests():
    from fastconv.layers.module import eval_mode
    model = _model()
    x = np.random.default_rng(1).normal(size=(2, 1, 8, 8)).astype(np.float32)
    _warm(model, x)
    with eval_mode():
        got = model.predict(x)
        assert not any(_modes(model))
    np.testing.assert_array_equal(got, _in_eval(model, lambda: model.predict(x)))
    seen = {}
    inside, leave = threading.Event(), threading.Event()

    def other():
        with eval_mode():
            with eval_mode():
                pass
            seen["inner"] = model.training  # still inside the outer block
            inside.set()
            leave.wait(10)
        seen["after"] = model.training

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(10)
    assert model.training and all(_modes(model))  # this thread still sees training mode
    leave.set()
    t.join()
    assert seen == {"inner": False, "after": True}
    model.eval()
    with eval_mode():
        model.train()  # train()/eval() inside the block still set the shared flags
    assert all(_modes(model))


def test_trainer_evaluate_and_feature_maps_from_two_threads_leave_the_modes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    model = _model()
    _warm(model, x)
    trainer = fc.Trainer(model, optimizer=fc.optim.SGD(model.parameters(), lr=0.1))
    want = _in_eval(model, lambda: trainer.evaluate(x, y))
    want_maps = _in_eval(model, lambda: viz.feature_maps(model, x[0]))
    outs = _hammer(lambda: trainer.evaluate(x, y, batch_size=2), rounds=ROUNDS // 4)
    assert all(o["loss"] == pytest.approx(want["loss"], rel=1e-5) for o in outs)
    maps = _hammer(lambda: viz.feature_maps(model, x[0]), rounds=ROUNDS // 4)
    for got in maps:
        for (_, _, a), (_, _, b) in zip(got, want_maps):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert all(_modes(model))
