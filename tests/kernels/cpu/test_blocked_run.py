"""Runs of convolutions kept on the blocked layout (kernels/cpu/blocked_run.py): bit for bit the
layers run one at a time on the blocked path (dense and depthwise, any stride, padding and
dilation, channels that fill the last vector or not, with and without bias, ReLU, a 2x2
max pool and, last, a global average pool), in both dtypes, for any thread count, with inf and NaN; and the naive tier
within tolerance.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv.kernels import cpu, naive
from fastconv.kernels.cpu import _common as cpu_common
from fastconv.kernels.cpu import blocked, blocked_run, depthwise_blocked
from fastconv.kernels.cpu.microkernel import lanes
from fastconv.kernels.cpu.pooling import max_pool2d_values

from helpers import DTYPES, HYPOTHESIS, assert_close_to_oracle, patched, random


POOL = ((2, 2), (2, 2), (0, 0), (1, 1), False)  # kernel, stride, padding, dilation, ceil


def one_at_a_time(x, convs):
    """The layers of a run, each on its own blocked path (NCHW between them), then the plans'
    max pool where a layer pools; a shortcut (a block's input, or the blocked 1x1 conv of it)
    added in the store of the conv that adds it, as the plans' per-step residual blocks do."""
    inputs = []
    for i, conv in enumerate(convs):
        inputs.append(x)
        args = (x.shape, conv.w, conv.b, conv.stride, conv.pads, conv.dilation)
        short = None
        if conv.residual is not None:
            first = convs[i - conv.residual.back]
            short = inputs[i - conv.residual.back]
            if conv.residual.w is not None:
                short = blocked.Forward(short.shape, conv.residual.w, conv.residual.b,
                                        first.stride, (0,) * 4)(short)
        x = (depthwise_blocked.Forward(*args)(x, conv.relu) if conv.depthwise
             else blocked.Forward(*args)(x, short, conv.relu))
        if conv.pool == "mean":
            x = cpu.adaptive_avg_pool2d(x, (1, 1))
        elif conv.pool:
            x = max_pool2d_values(x, *POOL)
    return x


def oracle(x, convs):
    for conv in convs:
        args = (conv.stride, conv.pads, conv.dilation)
        x = (naive.depthwise_conv2d(x, conv.w, conv.b, *args)[0] if conv.depthwise
             else naive.conv2d(x, conv.w, conv.b, *args)[0])
        x = np.maximum(x, 0) if conv.relu else x
        if conv.pool == "mean":
            x = x.mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(x.dtype)
        elif conv.pool:
            x = naive.max_pool2d(x, *POOL)[0]
    return x


@st.composite
def runs(draw, dtype):
    """(x shape, [Conv, ...]): 2-4 layers, each dense or depthwise, of random geometry, some
    followed by a 2x2 max pool, the last perhaps by a global average pool, every output at
    least one pixel."""
    v = lanes(dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 2 * v + 2))
    h, w = draw(st.integers(5, 12)), draw(st.integers(5, 12))
    x_shape, convs = (n, c, h, w), []
    for _ in range(draw(st.integers(2, 4))):
        depthwise = c >= v and draw(st.booleans())
        k = c if depthwise else draw(st.integers(1, 2 * v + 2))
        fh, fw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        pads = tuple(draw(st.integers(0, 2)) for _ in range(4))
        ho = (h + pads[0] + pads[1] - dilation[0] * (fh - 1) - 1) // stride[0] + 1
        wo = (w + pads[2] + pads[3] - dilation[1] * (fw - 1) - 1) // stride[1] + 1
        if ho < 1 or wo < 1:
            break
        weight = random(rng, (k, 1 if depthwise else c, fh, fw), dtype)
        bias = random(rng, (k,), dtype) if draw(st.booleans()) else None
        pool = "max" if min(ho, wo) >= 2 and draw(st.booleans()) else None
        convs.append(blocked_run.Conv(weight, bias, stride, pads, dilation,
                                      draw(st.booleans()), depthwise, pool))
        c, h, w = k, ho // (1 + bool(pool)), wo // (1 + bool(pool))
    if draw(st.booleans()):  # the last layer's output: as it is, pooled or each channel's mean
        convs[-1].pool = draw(st.sampled_from(["mean", convs[-1].pool]))
    return x_shape, convs


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(data=st.data())
def test_a_run_is_its_layers_one_at_a_time_to_the_bit(dtype, data):
    x_shape, convs = data.draw(runs(np.dtype(dtype)))
    x = random(np.random.default_rng(1), x_shape, dtype)
    got = blocked_run.Run(x_shape, convs, dtype)(x)
    np.testing.assert_array_equal(got, one_at_a_time(x, convs))
    assert_close_to_oracle(got, oracle(x, convs), f"blocked run {x_shape}")


def mobilenet_like(dtype):
    rng = np.random.default_rng(3)
    layers = [(16, 1, 3, 1, 1, False, False), (16, 16, 3, 1, 1, True, True),
              (32, 16, 1, 1, 0, False, False), (32, 32, 3, 2, 1, True, False),
              (40, 32, 1, 1, 0, False, False)]
    convs = []
    for k, c, f, s, p, depthwise, pool in layers:
        w = random(rng, (k, 1 if depthwise else c, f, f), dtype)
        convs.append(blocked_run.Conv(w, random(rng, (k,), dtype), (s, s), (p,) * 4, (1, 1),
                                      True, depthwise, pool))
    return (5, 1, 28, 28), convs


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_bits_do_not_depend_on_the_thread_count(dtype):
    x_shape, convs = mobilenet_like(dtype)
    x = random(np.random.default_rng(2), x_shape, dtype)
    run = blocked_run.Run(x_shape, convs, dtype)
    want = one_at_a_time(x, convs)
    for threads in (1, 2, 3):
        fastconv.set_num_threads(threads)
        try:
            with patched([(cpu_common, "SPLIT_FLOPS", 0)]):
                np.testing.assert_array_equal(blocked_run.Run(x_shape, convs, dtype)(x), want)
        finally:
            fastconv.set_num_threads(None)
    np.testing.assert_array_equal(run(x), want)  # a second call: buffers reused, same result


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_inf_and_nan_as_the_layers_one_at_a_time():
    x_shape, convs = mobilenet_like(np.float32)
    x = random(np.random.default_rng(4), x_shape, np.float32)
    x[0, 0, 3, 3], x[2, 0, 10, 20], x[4, 0, -1, -1] = np.nan, np.inf, -np.inf
    got = blocked_run.Run(x_shape, convs, np.float32)(x)
    np.testing.assert_array_equal(got, one_at_a_time(x, convs))  # NaN where it is NaN
    assert np.isnan(got).any() and np.isfinite(got[1]).all()


def test_runs_on_inputs_of_one_layout_but_another_size_keep_their_own_buffers():
    """Packed buffers are zeroed once and only data pixels are written after: a run whose
    input has the same packed layout as an earlier run's but fewer rows (5 and 6 rows give 3
    phase rows at stride 2) must not read the rows the earlier run wrote."""
    rng = np.random.default_rng(5)
    convs = [blocked_run.Conv(random(rng, (3, 2, 1, 1), np.float32), None, (2, 1),
                              (0, 0, 0, 0), (1, 1), False),
             blocked_run.Conv(random(rng, (3, 3, 3, 3), np.float32), None, (1, 1),
                              (0, 1, 1, 1), (1, 1), False)]
    big, small = (1, 2, 6, 7), (1, 2, 5, 7)
    assert blocked_run.Run(big, convs, np.float32).key != \
        blocked_run.Run(small, convs, np.float32).key
    for shape in (big, small):
        x = random(rng, shape, np.float32) + 10  # rows the other input lacks are far from 0
        np.testing.assert_array_equal(blocked_run.Run(shape, convs, np.float32)(x),
                                      one_at_a_time(x, convs))


def test_a_nan_in_a_pooled_window_is_kept_and_goes_no_further():
    """Depthwise identities around a pool: a NaN in two windows (top-left of one, bottom-right
    of another) makes those pooled pixels NaN and no others, as the plans' max pool does.
    (Ties between +0 and -0 cannot arise: a conv's sums start from +0.)"""
    ones = np.ones((16, 1, 1, 1), np.float32)
    convs = [blocked_run.Conv(ones, None, (1, 1), (0,) * 4, (1, 1), True, True, pool=True),
             blocked_run.Conv(ones, None, (1, 1), (0,) * 4, (1, 1), False, True)]
    x = random(np.random.default_rng(6), (2, 16, 4, 6), np.float32)
    x[0, 3, 0, 0], x[1, 7, 3, 5] = np.nan, np.nan
    got = blocked_run.Run(x.shape, convs, np.float32)(x)
    np.testing.assert_array_equal(got, one_at_a_time(x, convs))
    assert np.isnan(got).sum() == 2 and np.isnan(got[0, 3, 0, 0]) and np.isnan(got[1, 7, 1, 2])


def residual_blocks(dtype, relu_last):
    """A stem and two residual blocks (an identity shortcut, then a 1x1 stride-2 projection),
    the last block ending in each channel's mean."""
    rng = np.random.default_rng(7)

    def conv(k, c, f, s, relu, residual=None, pool=None):
        return blocked_run.Conv(random(rng, (k, c, f, f), dtype), random(rng, (k,), dtype),
                                (s, s), (f // 2,) * 4, (1, 1), relu, pool=pool,
                                residual=residual)
    project = blocked_run.Shortcut(1, random(rng, (24, 16, 1, 1), dtype),
                                   random(rng, (24,), dtype))
    return (3, 3, 13, 11), [
        conv(16, 3, 3, 1, True), conv(16, 16, 3, 1, True),
        conv(16, 16, 3, 1, True, blocked_run.Shortcut(1)),
        conv(24, 16, 3, 2, True), conv(24, 24, 3, 1, relu_last, project, pool="mean")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relu_last", [True, False])
def test_residual_blocks_add_their_shortcuts_as_the_per_step_blocks(dtype, relu_last):
    x_shape, convs = residual_blocks(dtype, relu_last)
    x = random(np.random.default_rng(8), x_shape, dtype)
    run = blocked_run.Run(x_shape, convs, dtype)
    got = run(x)
    assert got.shape == (3, 24, 1, 1)
    np.testing.assert_array_equal(got, one_at_a_time(x, convs))
    assert_close_to_oracle(got, oracle_residual(x, convs), "residual run")


def oracle_residual(x, convs):
    """The naive tier's convs, adds, ReLUs and mean, in float64 order-free terms."""
    inputs = []
    for i, conv in enumerate(convs):
        inputs.append(x)
        x = naive.conv2d(x, conv.w, conv.b, conv.stride, conv.pads, conv.dilation)[0]
        if conv.residual is not None:
            short = inputs[i - conv.residual.back]
            if conv.residual.w is not None:
                first = convs[i - conv.residual.back]
                short = naive.conv2d(short, conv.residual.w, conv.residual.b, first.stride,
                                     (0,) * 4)[0]
            x = x + short
        x = np.maximum(x, 0) if conv.relu else x
        if conv.pool == "mean":
            x = x.mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(x.dtype)
    return x


def test_a_shortcut_that_does_not_fit_is_refused():
    x_shape, convs = residual_blocks(np.float32, True)
    convs[2].residual = blocked_run.Shortcut(2)  # the stem's input: 3 channels, not 16
    with pytest.raises(ValueError, match="does not match its block's input"):
        blocked_run.Run(x_shape, convs, np.float32)
    x_shape, convs = residual_blocks(np.float32, True)
    convs[3].pads = (0,) * 4  # the projection no longer reads the first conv's centre taps
    with pytest.raises(ValueError, match="centre taps"):
        blocked_run.Run(x_shape, convs, np.float32)
