"""fastconv.fuse: Conv2d + BatchNorm2d and Linear + BatchNorm1d folded for inference; the folded
copy computes what the model computes in eval mode (float64 to 1e-10, float32 to float32
rounding, and PyTorch's eval output of a twin), and the model itself is left as it was."""
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv as fc

from helpers import rel_error

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import networks  # noqa: E402


def randomise_norms(model, rng):
    """Running statistics and affine parameters far from the identity, so a wrong fold shows."""
    for m in model.modules():
        if isinstance(m, (fc.BatchNorm1d, fc.BatchNorm2d)):
            c = m.num_features
            if m.running_mean is not None:
                m.running_mean[:] = rng.normal(size=c)
                m.running_var[:] = rng.uniform(0.3, 3.0, size=c)
            if m.weight is not None:
                m.weight.data[:] = rng.normal(size=c)
                m.bias.data[:] = rng.normal(size=c)
    return model


def small_net(dtype=np.float32):
    """Every kind of fold: dense with and without bias, grouped, depthwise (multiplier 2), a norm
    without affine parameters, Linear + BatchNorm1d."""
    fc.manual_seed(4)
    return fc.Sequential(
        fc.Conv2d(3, 8, 3, padding=1), fc.BatchNorm2d(8), fc.ReLU(),
        fc.Conv2d(8, 8, 3, stride=2, padding=1, groups=2, bias=False), fc.BatchNorm2d(8),
        fc.Conv2d(8, 16, 3, padding=1, groups=8, bias=False), fc.BatchNorm2d(16, affine=False),
        fc.ReLU(), fc.Flatten(), fc.Linear(16 * 4 * 4, 12, bias=False), fc.BatchNorm1d(12),
        fc.ReLU(), fc.Linear(12, 5)).to(dtype)


def norms(model):
    return [m for m in model.modules() if isinstance(m, (fc.BatchNorm1d, fc.BatchNorm2d))]


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_fused_copy_computes_the_models_eval_output(dtype, tol):
    rng = np.random.default_rng(0)
    model = randomise_norms(small_net(dtype), rng)
    before = {k: np.array(v) for k, v in model.state_dict().items()}
    x = rng.standard_normal((3, 3, 8, 8)).astype(dtype)
    fused = fc.fuse(model)
    assert model.training and not fused.training  # the model's mode is its own
    assert norms(fused) == []  # all four norms folded
    assert isinstance(fused[1], fc.Identity) and fused[0].bias is not None
    assert fused[0].weight.dtype == dtype and fused[3].bias.dtype == dtype
    model.eval()
    ref = model(x)
    out = fused(x)
    assert out.dtype == dtype
    assert rel_error(out, ref) < tol
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


def test_what_cannot_fold_is_kept_and_still_correct():
    """A norm without running statistics (batch statistics in eval mode), a norm after a ReLU,
    and a conv used twice (folding it would change its other use) are all left as they are."""
    fc.manual_seed(1)
    shared = fc.Conv2d(4, 4, 3, padding=1)
    model = randomise_norms(fc.Sequential(
        fc.Conv2d(2, 4, 3, padding=1), fc.BatchNorm2d(4, track_running_stats=False),
        shared, fc.BatchNorm2d(4), fc.ReLU(), fc.BatchNorm2d(4), shared), np.random.default_rng(2))
    fused = fc.fuse(model)
    assert len(norms(fused)) == 3
    assert fused[2] is fused[6]  # the copy keeps the sharing
    x = np.random.default_rng(3).standard_normal((2, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(fused(x), model.eval()(x))


def test_fuse_takes_only_modules():
    with pytest.raises(TypeError, match="not a fastconv Module"):
        fc.fuse([fc.ReLU()])


@pytest.mark.parametrize("arch", ["best", "resnet", "mobilenet"])
def test_fused_example_networks_match_pytorch_eval(arch):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    model = randomise_norms(networks.build(arch, seed=2), rng)
    twin = networks.torch_twin(model).eval()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        ref = twin(torch.from_numpy(x)).numpy()
    fused = fc.fuse(model)
    assert norms(fused) == []
    assert rel_error(fused(x), ref) < 1e-4
