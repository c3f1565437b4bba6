"""fastconv.compile: a plan computes what the model computes in eval mode (bit for bit without
folding, against the model with its convs on the paths the plan's take; to rounding
with folding), for the five example networks and every layer kind it runs itself or hands back
to the layer's own forward; it refuses another shape or dtype, and it changes neither the model
nor the caller's input."""
import importlib

import numpy as np
import pytest

import fastconv as fc
from fastconv.kernels.cpu import conv as cpu_conv
from fastconv.kernels.cpu import pointwise

from helpers import patched, rel_error

_rule = cpu_conv.algorithm


def _plan_paths(x_shape, w_shape, stride, pads, dilation=(1, 1)):
    """The path a plan runs a dense conv on: pointwise for a batch through an unpadded stride-1
    1x1 layer, else blocked."""
    if x_shape[1] == 0:
        return _rule(x_shape, w_shape, stride, pads, dilation)
    if x_shape[0] > 1 and pointwise.applies(w_shape, stride, pads):
        return "pointwise"
    return "blocked"


def blocked_model():
    """The model's convs on the paths a plan runs dense convs on one at a time (a plan's
    blocked runs give the same bits; a 1x1 conv in a run takes the blocked path, which the
    models these tests compile without folding never have there)."""
    return patched([(cpu_conv, "algorithm", _plan_paths)])


def reference(model, x):
    with fc.layers.module.eval_mode(), blocked_model():
        return model(x)
from test_fuse import networks, randomise_norms


@pytest.mark.parametrize("arch", networks.ARCHS)
def test_plan_computes_the_example_networks(arch):
    rng = np.random.default_rng(7)
    model = randomise_norms(networks.build(arch, seed=3), rng)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    ref = reference(model, x)
    exact = fc.compile(model, x.shape, fold=False)
    folded = fc.compile(model, x.shape)
    assert model.training  # compiling looks at the model, it does not set its mode
    np.testing.assert_array_equal(exact(x), ref)
    out = folded(x)
    assert out.dtype == np.float32 and out.shape == folded.output_shape == (2, 10)
    assert rel_error(out, ref) < 1e-5
    has_norm = any(isinstance(m, fc.BatchNorm2d) for m in model.modules())
    assert any("+bn" in s for s in folded.steps) == has_norm


def test_plan_float64_folded_to_1e10():
    rng = np.random.default_rng(8)
    model = randomise_norms(networks.build("best", seed=4), rng).to(np.float64).eval()
    x = rng.standard_normal((2, 1, 28, 28))
    plan = fc.compile(model, x.shape)
    assert plan.dtype == np.float64
    assert rel_error(plan(x), model(x)) < 1e-10


class Double(fc.Module):
    """A user's module the plan does not know: it runs its own forward."""

    def forward(self, x):
        return x * 2

    def output_shape(self, shape):
        return tuple(shape)


def every_kind():
    fc.manual_seed(5)
    block = fc.Sequential(fc.ReLU(), fc.Conv2d(6, 6, 3, padding=1), fc.BatchNorm2d(6))
    return fc.Sequential(
        fc.ReLU(),  # on the caller's input: not in place
        fc.Conv2d(3, 6, 3, padding=1, padding_mode="reflect"), fc.LeakyReLU(0.1),
        fc.Residual(block), fc.ReLU(),  # identity shortcut: the body must not overwrite x
        fc.Residual(fc.Sequential(fc.Conv2d(6, 6, 1), fc.Tanh()),
                    fc.Sequential(fc.Conv2d(6, 6, 1, groups=3), fc.BatchNorm2d(6))),
        fc.Dropout2d(0.5), Double(), fc.ReLU(),
        fc.Concat(fc.Identity(), fc.Sequential(fc.Conv2d(6, 2, 1), fc.ReLU())),
        fc.Conv2d(8, 6, 1),
        fc.AvgPool2d(2), fc.Sigmoid(), fc.BatchNorm2d(6), fc.MaxPool2d(2, ceil_mode=True),
        fc.PReLU(6), fc.AdaptiveAvgPool2d((2, 1)), fc.Flatten(), fc.Dropout(0.3),
        fc.Linear(12, 4, bias=False), fc.BatchNorm1d(4), fc.GELU(), fc.Identity(), fc.Linear(4, 3))


def test_plan_runs_every_layer_kind():
    rng = np.random.default_rng(9)
    model = randomise_norms(every_kind(), rng)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    x_before = x.copy()
    ref = reference(model, x)
    exact = fc.compile(model, x.shape, fold=False)
    first = exact(x)
    np.testing.assert_array_equal(first, ref)
    np.testing.assert_array_equal(x, x_before)  # the caller's input is never written
    again = exact(x)
    np.testing.assert_array_equal(first, ref)  # each call's output is its own array
    np.testing.assert_array_equal(again, ref)
    assert "relu" in exact.steps  # after Double: its output is not the plan's to overwrite
    assert "conv2d 6->2 1x1 pointwise +relu" in exact.steps  # fused into the conv's store
    assert any("its own forward" in s for s in exact.steps)  # Double, PReLU
    assert "} concat dim 1" in exact.steps
    folded = fc.compile(model, x.shape)
    assert sum("+bn" in s for s in folded.steps) == 3  # the norm after Sigmoid stays
    assert "} conv2d 6->6 3x3 blocked +bn +add +relu" in folded.steps
    assert rel_error(folded(x), ref) < 1e-5
    np.testing.assert_array_equal(x, x_before)


def test_plan_refuses_another_shape_or_dtype():
    model = networks.build("tutorial", seed=0)
    plan = fc.compile(model, (1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\(1, 1, 28, 28\) float32, got shape \(2, 1, 28, 28\)"):
        plan(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="float32, got shape \\(1, 1, 28, 28\\) float64"):
        plan(np.zeros((1, 1, 28, 28)))
    x = np.arange(28 * 28, dtype=np.float32).reshape(1, 1, 28, 28)[..., ::-1]  # not contiguous
    np.testing.assert_array_equal(plan(x), reference(model, x))


def test_compile_checks_its_arguments():
    model = networks.build("tutorial", seed=0)
    with pytest.raises(ValueError, match=r"input_shape \(1, 1, 20, 20\) does not fit the model: "
                                         r"Linear\(1352, 10\) expects 1352 input features"):
        fc.compile(model, (1, 1, 20, 20))
    with pytest.raises(TypeError, match="input_shape"):
        fc.compile(model, 28)
    with pytest.raises(ValueError, match="positive ints"):
        fc.compile(model, (0, 1, 28, 28))
    with pytest.raises(TypeError, match="not a fastconv Module"):
        fc.compile(lambda x: x, (1, 1, 28, 28))


def test_relu_before_max_pool_runs_after_it_with_the_same_bits():
    """ReLU then MaxPool2d runs as pool then ReLU (they commute): the same output, NaN, inf and
    windows that are all negative included."""
    model = fc.Sequential(fc.ReLU(), fc.MaxPool2d(3, stride=2, padding=1, ceil_mode=True))
    x = np.random.default_rng(10).standard_normal((2, 3, 8, 7)).astype(np.float32)
    x[0, 0, :4, :4] = -np.abs(x[0, 0, :4, :4])
    x[0, 1, 2, 3], x[1, 2, 5, 5], x[1, 0, 0, 0] = np.nan, np.inf, -np.inf
    plan = fc.compile(model, x.shape)
    assert plan.steps == ["MaxPool2d(3, stride=2)", "relu"]
    np.testing.assert_array_equal(plan(x), model.eval()(x))


class ShiftedConv(fc.Conv2d):
    """A subclass that overrides forward: neither folded nor run as a plain Conv2d."""

    def forward(self, x):
        return super().forward(x) + 1


def test_subclasses_run_their_own_forward():
    fc.manual_seed(6)
    model = randomise_norms(fc.Sequential(ShiftedConv(2, 4, 3), fc.BatchNorm2d(4), fc.ReLU()),
                            np.random.default_rng(11))
    x = np.random.default_rng(12).standard_normal((1, 2, 5, 5)).astype(np.float32)
    plan = fc.compile(model, x.shape)
    assert plan.steps[0] == "ShiftedConv(2, 4, kernel_size=(3, 3), stride=(1, 1)) (its own forward)"
    np.testing.assert_array_equal(plan(x), model.eval()(x))
    assert len([m for m in fc.fuse(model).modules() if isinstance(m, fc.BatchNorm2d)]) == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_store_of_the_blocked_path_matches_the_model_bit_for_bit(dtype):
    """A residual block whose body ends in a conv the blocked path runs: the shortcut (here the
    block's input itself) is added and the ReLU applied in the conv's store, with the same bits
    as the model's separate add and ReLU, and the input is left as it was."""
    fc.manual_seed(13)
    body = fc.Sequential(fc.Conv2d(16, 16, 3, padding=1), fc.ReLU(), fc.Conv2d(16, 16, 3, padding=1))
    model = fc.Sequential(fc.Conv2d(8, 16, 3, padding=1), fc.ReLU(), fc.Residual(body), fc.ReLU(),
                          fc.Residual(fc.Conv2d(16, 32, 3, stride=2, padding=1),
                                      fc.Conv2d(16, 32, 1, stride=2)), fc.ReLU()).to(dtype)
    x = np.random.default_rng(14).standard_normal((3, 8, 12, 10)).astype(dtype)
    x_before = x.copy()
    with patched([(plan_module._Builder, "blocked_run", lambda *args: None)]):
        plan = fc.compile(model, x.shape)  # a step per conv, not one blocked run
    assert plan.steps == ["conv2d 8->16 3x3 blocked +relu", "residual {",
                          "conv2d 16->16 3x3 blocked +relu", "} conv2d 16->16 3x3 blocked +add +relu",
                          "residual {", "} shortcut {", "conv2d 16->32 1x1 stride 2 blocked",
                          "} conv2d 16->32 3x3 stride 2 blocked +add +relu"]
    np.testing.assert_array_equal(plan(x), reference(model, x))
    run = fc.compile(model, x.shape)  # the same blocks, kept on the blocked layout
    assert run.steps[0] == "blocked run {" and "} shortcut identity" in run.steps
    np.testing.assert_array_equal(run(x), reference(model, x))
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("arch", networks.ARCHS)
def test_plan_matches_pytorch_eval(arch):
    """The plan (folded norms, fused stores, every dense conv on the blocked path) against the
    PyTorch twin in eval mode, at batch 1 and at a batch of 5."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(15)
    model = randomise_norms(networks.build(arch, seed=6), rng)
    twin = networks.torch_twin(model).eval()
    for batch in (1, 5):
        x = rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)
        with torch.no_grad():
            ref = twin(torch.from_numpy(x)).numpy()
        assert rel_error(fc.compile(model, x.shape)(x), ref) < 1e-4


def test_a_plan_on_the_naive_tier_runs_its_kernels_and_the_fused_steps_in_numpy():
    """With the naive tier as the default backend, a plan calls that tier's kernels and applies
    the fused ReLU and residual add after them: the same bits as the model on that tier."""
    fc.manual_seed(16)
    model = fc.Sequential(fc.Conv2d(2, 4, 3, padding=1), fc.ReLU(),
                          fc.Residual(fc.Sequential(fc.Conv2d(4, 4, 3, padding=1), fc.ReLU(),
                                                    fc.Conv2d(4, 4, 3, padding=1))), fc.ReLU(),
                          fc.Flatten(), fc.Linear(4 * 5 * 5, 3))
    x = np.random.default_rng(17).standard_normal((2, 2, 5, 5)).astype(np.float32)
    before = fc.get_backend()
    fc.set_backend("naive")
    try:
        plan = fc.compile(model, x.shape)
        got, want = plan(x), model.eval()(x)
    finally:
        fc.set_backend(before)
    assert not any("blocked" in s for s in plan.steps)
    assert "} conv2d 4->4 3x3 +add +relu" in plan.steps
    np.testing.assert_array_equal(got, want)


plan_module = importlib.import_module("fastconv.plan")


def for_each_thread_count(check):
    """``check()`` with 1, 2 and 3 threads."""
    for threads in (1, 2, 3):
        fc.set_num_threads(threads)
        try:
            check()
        finally:
            fc.set_num_threads(None)


@pytest.mark.parametrize("arch", ["lenet", "resnet", "mobilenet"])
def test_a_batch_runs_in_chunks_each_the_models_result_on_its_images(arch):
    """Past CHUNK images a cpu plan runs chunks of CHUNK (and a shorter last one), each chunk
    through the whole network in one thread: every chunk's rows are, bit for bit, what the
    model computes for that chunk alone, whatever the thread count."""
    rng = np.random.default_rng(11)
    model = randomise_norms(networks.build(arch, seed=2), rng)
    x = rng.standard_normal((10, 1, 28, 28)).astype(np.float32)
    with patched([(plan_module, "CHUNK", 4)]):
        plan = fc.compile(model, x.shape, fold=False)
    ref = np.concatenate([reference(model, x[lo:lo + 4]) for lo in (0, 4, 8)])
    for_each_thread_count(lambda: np.testing.assert_array_equal(plan(x), ref))
    assert rel_error(plan(x), reference(model, x)) < 1e-5  # the whole batch, up to rounding


class Centered(fc.Module):
    """A user's module that mixes the images of a batch (it subtracts their mean)."""

    def forward(self, x):
        return x - x.mean(axis=0)

    def output_shape(self, shape):
        return tuple(shape)


@pytest.mark.parametrize("mixer", [Centered(), fc.Concat(fc.Identity(), fc.Identity(), dim=0)])
def test_a_batch_with_a_step_across_images_runs_whole(mixer):
    """A module the plan does not know (it may mix images) or a concat along the batch keeps
    the plan on the whole batch: chunks would change the result."""
    fc.manual_seed(4)
    model = fc.Sequential(fc.Conv2d(1, 4, 3), fc.ReLU(), mixer, fc.Flatten(),
                          fc.Linear(4 * 6 * 6, 3))
    x = np.random.default_rng(12).standard_normal((10, 1, 8, 8)).astype(np.float32)
    with patched([(plan_module, "CHUNK", 4)]):
        plan = fc.compile(model, x.shape, fold=False)
    np.testing.assert_array_equal(plan(x), reference(model, x))


RUNS = {  # the steps of each network's blocked run, pools in it
    "mobilenet": ["conv2d 1->16 3x3 blocked +bn +relu"] + [
        f"conv2d {a} blocked +bn +relu" for a in (
            "16->16 3x3 groups 16", "16->32 1x1", "32->32 3x3 stride 2 groups 32", "32->64 1x1",
            "64->64 3x3 groups 64", "64->64 1x1", "64->64 3x3 stride 2 groups 64",
            "64->128 1x1", "128->128 3x3 groups 128")] + [
        "conv2d 128->128 1x1 blocked +bn +relu +global avg_pool", "}", "flatten"],
    "lenet": ["conv2d 1->32 3x3 blocked +relu +max_pool 2x2",
              "conv2d 32->64 3x3 blocked +relu +max_pool 2x2", "}", "flatten"],
    "resnet": ["conv2d 1->16 3x3 blocked +bn +relu", "residual {",
               "conv2d 16->16 3x3 blocked +bn +relu", "} shortcut identity",
               "conv2d 16->16 3x3 blocked +bn +add +relu", "residual {",
               "conv2d 16->32 3x3 stride 2 blocked +bn +relu",
               "} shortcut conv2d 16->32 1x1 stride 2 blocked +bn",
               "conv2d 32->32 3x3 blocked +bn +add +relu", "residual {",
               "conv2d 32->64 3x3 stride 2 blocked +bn +relu",
               "} shortcut conv2d 32->64 1x1 stride 2 blocked +bn",
               "conv2d 64->64 3x3 blocked +bn +add +relu +global avg_pool", "}", "flatten"],
    "best": ["conv2d 1->32 3x3 blocked +bn +relu",
             "conv2d 32->32 3x3 blocked +bn +relu +max_pool 2x2",
             "conv2d 32->64 3x3 blocked +bn +relu",
             "conv2d 64->64 3x3 blocked +bn +relu +max_pool 2x2", "}", "flatten"],
}


@pytest.mark.parametrize("arch", sorted(RUNS))
def test_consecutive_convs_stay_on_the_blocked_layout(arch):
    """Each example network's convs (dense, depthwise, 1x1) before its Flatten run as one
    blocked run, folded norms, ReLUs, max pools, residual blocks and the global average pool
    in it; each gives the bits of the plan that runs its convs one at a time, for any thread
    count."""
    rng = np.random.default_rng(13)
    model = randomise_norms(networks.build(arch, seed=5), rng)
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    plan = fc.compile(model, x.shape)
    start = plan.steps.index("blocked run {")
    assert plan.steps[start + 1:start + 1 + len(RUNS[arch])] == RUNS[arch]
    with patched([(plan_module._Builder, "blocked_run", lambda *args: None)]):
        apart = fc.compile(model, x.shape)
    assert "blocked run {" not in apart.steps
    want = apart(x)
    for_each_thread_count(lambda: np.testing.assert_array_equal(plan(x), want))
