"""inf and NaN through every reduction of the fast tiers, against the naive oracle.

Each kernel that sums (the conv bias gradient, batch-norm statistics and gradients, average
pooling, col2im, the gradients of max pooling and Linear, cross-entropy) must start from a typed
zero, never from ``v - v`` of its first element: ``inf - inf`` is NaN, so an inf at a plane's or
channel's first element turned the cpu tier's conv ``db`` and batch-norm results into NaN where the
oracle has inf. Here +inf, -inf and NaN go to the first, a middle and the last element of one
input at a time (the cpu tier), or of every input at once (the cuda tier on the simulator, where
each call takes seconds), and every result must have NaN where the oracle has NaN, inf of the same
sign where it has inf, and close values elsewhere.
"""
import numpy as np
import pytest

from fastconv import _backend

from helpers import DTYPES, host, random

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # inf - inf, 0 * inf

POISONS = [np.inf, -np.inf, np.nan]
WHERE = ["first", "middle", "last"]
TOL = {np.dtype(np.float32): (1e-4, 1e-5), np.dtype(np.float64): (1e-10, 1e-12)}

CONVS = [  # x shape, w shape, stride, pads (top, bottom, left, right): the three im2col layouts
    ((2, 4, 3, 12), (3, 4, 3, 3), (1, 1), (1, 1, 1, 1)),  # wide rows
    ((2, 4, 4, 5), (3, 4, 3, 3), (1, 1), (1, 1, 1, 1)),  # rows of Wout from padded planes
    ((2, 2, 5, 6), (3, 2, 2, 3), (2, 1), (1, 0, 0, 1)),  # strided: direct indexing
    ((2, 2, 4, 5), (3, 2, 3, 3), (1, 1), (1, 1, 1, 1)),  # few channels: the direct path
    ((2, 1, 5, 6), (3, 1, 2, 3), (1, 1), (1, 0, 0, 1)),  # direct, uneven padding
]
COL2IMS = [  # no padding, so that the first and last columns land inside the planes
    ((2, 2, 4, 5), (3, 3), (1, 1), (0, 0, 0, 0)),
    ((2, 2, 5, 6), (2, 3), (3, 1), (0, 0, 0, 0)),
]
POOLS = [  # windows that cover the whole input, the last element too
    ((2, 3, 4, 6), (2, 3), (2, 1)), ((2, 2, 4, 4), (2, 2), (2, 2)), ((1, 2, 5, 5), (3, 3), (1, 1))]


def tier(name):
    try:
        return _backend.kernels(name)
    except RuntimeError as exc:  # cuda without a GPU or the simulator
        pytest.skip(f"{name} tier unavailable: {exc}")


def index(a, where):
    return {"first": 0, "middle": a.size // 2, "last": a.size - 1}[where]


def poisoned(a, where, value):
    b = a.copy()
    b.flat[index(b, where)] = value
    return b


def poisoned_everywhere(a, values):
    """``a`` with values[0] at the first element, values[1] in the middle, values[2] last."""
    b = a.copy()
    for where, value in zip(WHERE, values):
        b.flat[index(b, where)] = value
    return b


def assert_same(got, ref, what):
    """NaN where the oracle has NaN, inf of its sign where it has inf, close values elsewhere."""
    got, ref = host(got), np.asarray(ref)
    if ref.ndim == 0:
        got = np.asarray(got, dtype=ref.dtype)
    assert got.shape == ref.shape and got.dtype == ref.dtype, (what, got.shape, got.dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: NaN positions")
    inf = np.isinf(ref)
    np.testing.assert_array_equal(np.isinf(got), inf, err_msg=f"{what}: inf positions")
    np.testing.assert_array_equal(got[inf], ref[inf], err_msg=f"{what}: inf signs")
    finite = np.isfinite(ref)
    rtol, atol = TOL[ref.dtype]
    scale = max(1.0, float(np.max(np.abs(ref[finite]), initial=0.0)))
    np.testing.assert_allclose(got[finite], ref[finite], rtol=rtol, atol=atol * scale,
                               err_msg=f"{what}: finite values")


def assert_results(got, ref, names, label):
    """Every result against the oracle's; at least one of them must be non-finite."""
    nonfinite = False
    for name, g, r in zip(names, got, ref):
        assert (g is None) == (r is None), f"{label} {name}"
        if r is not None:
            assert_same(g, r, f"{label} {name}")
            nonfinite |= not np.isfinite(r).all()
    assert nonfinite, f"{label}: the poison reached no result"


# ---------------------------------------------------------------------------------------------
# One op each: run it on a tier with the given inputs, results in a fixed order

def run_conv(t, x, w, b, dout, stride, pads):
    out, saved = t.conv2d(x, w, b, stride, pads)
    return (out,) + tuple(t.conv2d_backward(dout, x, w, True, stride, pads, saved))


def run_batch_norm(t, x, weight, bias, dout, training):
    mean, var = np.zeros(x.shape[1], x.dtype), np.ones(x.shape[1], x.dtype)
    out, bmean, bvar, saved = t.batch_norm(x, weight, bias, mean, var, training, 1e-5)
    return (out, bmean, bvar) + tuple(t.batch_norm_backward(dout, x, weight, saved, training))


def run_linear(t, x, w, b, dout):
    return (t.linear(x, w, b),) + tuple(t.linear_backward(dout, x, w, True))


def run_pools(t, x, dout, kernel, stride):
    out, switches = t.max_pool2d(x, kernel, stride)
    dx, ok = t.max_pool2d_backward(dout, host(switches), x.shape)
    assert ok
    return (out, dx, t.avg_pool2d(x, kernel, stride),
            t.avg_pool2d_backward(dout, x.shape, kernel, stride))


def run_cross_entropy(t, logits, labels):
    loss, dlogits = t.softmax_cross_entropy(logits, labels)
    return np.asarray(loss, logits.dtype), dlogits


CONV_NAMES = ("out", "dx", "dw", "db")
BN_NAMES = ("out", "batch_mean", "batch_var", "dx", "dweight", "dbias")
LINEAR_NAMES = ("out", "dx", "dw", "db")
POOL_NAMES = ("max out", "max dx", "avg out", "avg dx")


def conv_inputs(rng, case, dtype):
    xs, ws, stride, pads = case
    naive = tier("naive")
    x, w, b = random(rng, xs, dtype), random(rng, ws, dtype), random(rng, ws[0], dtype)
    dout = random(rng, naive.conv2d(x, w, b, stride, pads)[0].shape, dtype)
    return dict(x=x, w=w, b=b, dout=dout), (stride, pads)


def bn_inputs(rng, dtype):
    return dict(x=random(rng, (3, 2, 5), dtype), weight=random(rng, 2, dtype),
                bias=random(rng, 2, dtype), dout=random(rng, (3, 2, 5), dtype))


def linear_inputs(rng, dtype):
    return dict(x=random(rng, (4, 6), dtype), w=random(rng, (3, 6), dtype),
                b=random(rng, 3, dtype), dout=random(rng, (4, 3), dtype))


def pool_inputs(rng, case, dtype):
    shape, kernel, stride = case
    x = random(rng, shape, dtype)
    dout = random(rng, tier("naive").avg_pool2d(x, kernel, stride).shape, dtype)
    return dict(x=x, dout=dout), (kernel, stride)


def ce_inputs(rng, dtype):
    # the first, middle and last logits are labelled, so that -inf there makes the loss inf
    return dict(logits=random(rng, (4, 5), dtype), labels=np.array([0, 2, 0, 4]))


def compare(name, fn, inputs, extra, names, label):
    got = fn(tier(name), *inputs.values(), *extra)
    ref = fn(tier("naive"), *inputs.values(), *extra)
    assert_results(got, ref, names, label)


def test_the_conv_cases_cover_both_cpu_algorithms():
    from fastconv.kernels.cpu.conv import algorithm
    paths = [algorithm(x, w, stride, pads) for x, w, stride, pads in CONVS]
    assert paths == ["im2col"] * 3 + ["direct"] * 2


# ---------------------------------------------------------------------------------------------
# cpu: each poison on its own, in each input

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", POISONS)
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("case", range(len(CONVS)))
@pytest.mark.parametrize("target", ["x", "w", "dout"])
def test_cpu_conv_keeps_inf_and_nan_where_the_oracle_has_them(dtype, value, where, case, target):
    inputs, extra = conv_inputs(np.random.default_rng(case), CONVS[case], dtype)
    inputs[target] = poisoned(inputs[target], where, value)
    compare("cpu", run_conv, inputs, extra, CONV_NAMES, f"conv {target}[{where}]={value}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", POISONS)
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("target", ["x", "dout", "weight"])
def test_cpu_batch_norm_keeps_inf_and_nan_where_the_oracle_has_them(dtype, value, where, training,
                                                                     target):
    inputs = bn_inputs(np.random.default_rng(1), dtype)
    inputs[target] = poisoned(inputs[target], where, value)
    compare("cpu", run_batch_norm, inputs, (training,), BN_NAMES,
            f"batch_norm(training={training}) {target}[{where}]={value}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", POISONS)
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("target", ["x", "w", "dout"])
def test_cpu_linear_keeps_inf_and_nan_where_the_oracle_has_them(dtype, value, where, target):
    inputs = linear_inputs(np.random.default_rng(2), dtype)
    inputs[target] = poisoned(inputs[target], where, value)
    compare("cpu", run_linear, inputs, (), LINEAR_NAMES, f"linear {target}[{where}]={value}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", POISONS)
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("case", range(len(POOLS)))
@pytest.mark.parametrize("target", ["x", "dout"])
def test_cpu_pooling_keeps_inf_and_nan_where_the_oracle_has_them(dtype, value, where, case, target):
    inputs, extra = pool_inputs(np.random.default_rng(3), POOLS[case], dtype)
    inputs[target] = poisoned(inputs[target], where, value)
    compare("cpu", run_pools, inputs, extra, POOL_NAMES, f"pooling {target}[{where}]={value}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", POISONS)
@pytest.mark.parametrize("where", WHERE)
def test_cpu_cross_entropy_keeps_inf_and_nan_where_the_oracle_has_them(dtype, value, where):
    inputs = ce_inputs(np.random.default_rng(4), dtype)
    inputs["logits"] = poisoned(inputs["logits"], where, value)
    compare("cpu", run_cross_entropy, inputs, (), ("loss", "dlogits"),
            f"cross_entropy logits[{where}]={value}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("value", POISONS)
@pytest.mark.parametrize("where", WHERE)
@pytest.mark.parametrize("case", range(len(COL2IMS)))
def test_cpu_col2im_keeps_inf_and_nan_where_the_oracle_has_them(dtype, value, where, case):
    xs, kernel, stride, pads = COL2IMS[case]
    naive, cpu = tier("naive"), tier("cpu")
    cols = poisoned(naive.im2col(random(np.random.default_rng(5), xs, dtype), kernel, stride, pads),
                    where, value)
    assert_results([cpu.col2im(cols, xs, kernel, stride, pads)],
                   [naive.col2im(cols, xs, kernel, stride, pads)], ["dx"], f"col2im [{where}]")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_conv_bias_gradient_of_an_inf_at_each_planes_first_element_is_inf(dtype):
    """The reported case: +inf at (n, k, 0, 0) of dout gives db[k] = +inf (it was NaN)."""
    inputs, (stride, pads) = conv_inputs(np.random.default_rng(6), CONVS[1], dtype)
    inputs["dout"][:, 1, 0, 0] = np.inf
    _, _, _, db = run_conv(tier("cpu"), *inputs.values(), stride, pads)
    assert db[1] == np.inf and np.isfinite(db[[0, 2]]).all()


# ---------------------------------------------------------------------------------------------
# cuda (simulator): every input poisoned at once, first, middle and last

MIXES = [(np.inf, np.nan, -np.inf), (-np.inf, np.inf, np.nan)]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_conv_keeps_inf_and_nan_where_the_oracle_has_them(dtype):
    case, mix = (0, MIXES[0]) if dtype == np.float32 else (2, MIXES[1])  # wide rows; strided
    inputs, extra = conv_inputs(np.random.default_rng(7), CONVS[case], dtype)
    inputs = {k: poisoned_everywhere(v, mix) for k, v in inputs.items()}
    compare("cuda", run_conv, inputs, extra, CONV_NAMES, "cuda conv")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_cuda_batch_norm_keeps_inf_and_nan_where_the_oracle_has_them(dtype, training):
    inputs = bn_inputs(np.random.default_rng(8), dtype)
    inputs = {k: v if k == "weight" else poisoned_everywhere(v, MIXES[int(training)])
              for k, v in inputs.items()}
    compare("cuda", run_batch_norm, inputs, (training,), BN_NAMES, "cuda batch_norm")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_linear_pooling_and_cross_entropy_keep_inf_and_nan(dtype):
    rng = np.random.default_rng(9)
    for mix in MIXES:
        inputs = {k: poisoned_everywhere(v, mix) for k, v in linear_inputs(rng, dtype).items()}
        compare("cuda", run_linear, inputs, (), LINEAR_NAMES, f"cuda linear {mix}")
        inputs, extra = pool_inputs(rng, POOLS[0], dtype)
        inputs = {k: poisoned_everywhere(v, mix) for k, v in inputs.items()}
        compare("cuda", run_pools, inputs, extra, POOL_NAMES, f"cuda pooling {mix}")
        inputs = ce_inputs(rng, dtype)
        inputs["logits"] = poisoned_everywhere(inputs["logits"], mix)
        compare("cuda", run_cross_entropy, inputs, (), ("loss", "dlogits"),
                f"cuda cross_entropy {mix}")
        xs, kernel, stride, pads = COL2IMS[0]
        cols = tier("naive").im2col(random(rng, xs, dtype), kernel, stride, pads)
        cols = poisoned_everywhere(cols, mix)
        assert_results([tier("cuda").col2im(cols, xs, kernel, stride, pads)],
                       [tier("naive").col2im(cols, xs, kernel, stride, pads)], ["dx"],
                       f"cuda col2im {mix}")
