"""The cpu tier's blocked-layout convolution (fastconv/kernels/cpu/blocked.py, the generated
micro-kernels): against the naive tier on random stride-1 geometries (odd sizes, channel counts
that are not a multiple of the block, 1x1 planes, dilation, uneven padding), float32 accuracy
against float64 at 256 channels, inf and NaN as in the naive tier, and bitwise-identical results
for 1-4 threads."""
import itertools
import os

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastconv import _backend
from fastconv.kernels.cpu import _common as cpu_common
from fastconv.kernels.cpu import blocked, blocked_kernels
from fastconv.kernels.cpu import conv as cpu_conv
from fastconv.kernels.cpu.microkernel import lanes

from helpers import (DTYPES, HYPOTHESIS, assert_bitwise_same, assert_close_to_oracle,
                     assert_float32_accuracy, assert_same_digests_for_1_to_4_threads,
                     at_thread_counts, patched, random)

#: This folder: the bitwise subprocess imports this module from it.
HERE = os.path.dirname(os.path.abspath(__file__))
ints = st.integers


@st.composite
def cases(draw):
    """Geometries of every kind: kernels 1-4 by 1-4, strides 1-3, dilation 1-2, padding up to
    ``dil*(F-1) + 1`` on each side (uneven), channels 1-19 (remainders of the 8- or 16-lane
    blocks), planes down to 1x1."""
    fh, fw = draw(ints(1, 4)), draw(ints(1, 4))
    dh, dw = draw(ints(1, 2)), draw(ints(1, 2))
    stride = (draw(ints(1, 3)), draw(ints(1, 3)))
    pads = (draw(ints(0, dh * (fh - 1) + 1)), draw(ints(0, dh * (fh - 1) + 1)),
            draw(ints(0, dw * (fw - 1) + 1)), draw(ints(0, dw * (fw - 1) + 1)))
    h = draw(ints(max(1, dh * (fh - 1) + 1 - pads[0] - pads[1]), 8))
    wd = draw(ints(max(1, dw * (fw - 1) + 1 - pads[2] - pads[3]), 8))
    return dict(x_shape=(draw(ints(1, 3)), draw(ints(1, 19)), h, wd),
                w_shape=(draw(ints(1, 19)), 0, fh, fw), pads=pads, dilation=(dh, dw),
                stride=stride)


def forced(split):
    """The blocked path wherever it applies; with ``split``, a share per image on every thread."""
    settings = [(cpu_conv, "ALGORITHM", "blocked")]
    if split:
        settings += [(cpu_common, "SPLIT_FLOPS", 0), (cpu_common, "SPLIT_IMAGES", 1)]
    return patched(settings)


def run(tier, x, w, b, pads, dout, need_dx=True, dilation=(1, 1), stride=(1, 1)):
    out, saved = tier.conv2d(x, w, b, stride, pads, dilation)
    return (out,) + tuple(tier.conv2d_backward(dout, x, w, b is not None, stride, pads, saved,
                                               need_dx, dilation))


def arrays(rng, x_shape, w_shape, pads, dilation, dtype, bias=True, stride=(1, 1)):
    n, c, h, wd = x_shape
    k, _, fh, fw = w_shape
    ho = (h + pads[0] + pads[1] - dilation[0] * (fh - 1) - 1) // stride[0] + 1
    wo = (wd + pads[2] + pads[3] - dilation[1] * (fw - 1) - 1) // stride[1] + 1
    return (random(rng, x_shape, dtype), random(rng, (k, c, fh, fw), dtype),
            random(rng, (k,), dtype) if bias else None, random(rng, (n, k, ho, wo), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@HYPOTHESIS
@given(case=cases(), bias=st.booleans(), need_dx=st.booleans(), split=st.booleans(),
       seed=ints(0, 2**32 - 1))
def test_blocked_matches_naive(dtype, case, bias, need_dx, split, seed):
    rng = np.random.default_rng(seed)
    pads, dilation, stride = case["pads"], case["dilation"], case["stride"]
    x, w, b, dout = arrays(rng, case["x_shape"], case["w_shape"], pads, dilation, dtype, bias,
                           stride)
    ref = run(_backend.kernels("naive"), x, w, b, pads, dout, need_dx, dilation, stride)
    with forced(split):
        assert cpu_conv.algorithm(x.shape, w.shape, stride, pads, dilation) == "blocked"
        got = run(_backend.kernels("cpu"), x, w, b, pads, dout, need_dx, dilation, stride)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        assert (a is None) == (r is None), name
        if r is not None:
            assert a.shape == r.shape and a.dtype == dtype, name
            assert_close_to_oracle(a, r, f"blocked {name}")


def test_blocked_covers_every_remainder_of_a_tile():
    """Output runs from 1 to past two tiles of pixels and channel counts around one and two
    blocks: each tile's last start, the slack past the planes and the padded channel blocks."""
    rng = np.random.default_rng(3)
    v = lanes(np.float32)
    naive, cpu = _backend.kernels("naive"), _backend.kernels("cpu")
    with forced(False):
        for wd in range(1, 2 * blocked.ROWS + 3, 5):
            for c, k in ((v - 1, v + 1), (2 * v, 1), (1, 2 * v + 3)):
                x, w, b, dout = arrays(rng, (2, c, 2, wd), (k, c, 1, 2), (0, 0, 1, 0), (1, 1),
                                       np.float64)
                ref = run(naive, x, w, b, (0, 0, 1, 0), dout)
                got = run(cpu, x, w, b, (0, 0, 1, 0), dout)
                for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
                    np.testing.assert_allclose(a, r, rtol=1e-12, atol=1e-12, err_msg=name)


def test_blocked_segment_tiles_cover_every_row_end():
    """The segment tiles (runs of SEG_LEN outputs of a row, the last ending at the row's end,
    so overlapping the one before): output widths from one segment to past two, 1-4 rows,
    strides 1 and 2 (forward and each dx phase), whole channel blocks (the only layers that
    take them) and a padded output block; each geometry is checked to take them."""
    rng = np.random.default_rng(5)
    naive, cpu = _backend.kernels("naive"), _backend.kernels("cpu")
    seg, taken, total = blocked_kernels.SEG_LEN, 0, 0
    for dtype in (np.float32, np.float64):
        v = lanes(dtype)
        with forced(False):
            for cols, k in itertools.product(range(seg, 2 * seg + 4), (v + 3, 2 * v)):
                for rows, s in ((1, 1), (2, 1), (4, 1), (3, 2)):
                    pads = (1, 1, 1, 1)
                    x, w, b, dout = arrays(rng, (2, v, s * (rows - 1) + 1, s * (cols - 1) + 1),
                                           (k, v, 3, 3), pads, (1, 1), dtype, stride=(s, s))
                    p = blocked.Plan(x.shape, w.shape, (s, s), pads, (1, 1), dtype)
                    taken += blocked_kernels._segments(p.wd, p.wo, p.length, v).size > 0
                    total += 1
                    ref = run(naive, x, w, b, pads, dout, stride=(s, s))
                    got = run(cpu, x, w, b, pads, dout, stride=(s, s))
                    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
                        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5,
                                                   err_msg=f"{name} {dtype} {rows}x{cols} s{s}")
    assert taken >= total // 5, (taken, total)  # where they compute fewer outputs


def test_blocked_float32_accuracy_at_256_channels():
    """float32 within 2e-5 (relative norm) of float64, float64 within 1e-10, forward and every
    gradient, at C = K = 256."""
    rng = np.random.default_rng(7)
    x, w, b, dout = arrays(rng, (2, 256, 5, 6), (256, 256, 3, 3), (1, 1, 1, 1), (1, 1),
                           np.float64)
    ref = run(_backend.kernels("naive"), x, w, b, (1, 1, 1, 1), dout)
    cpu = _backend.kernels("cpu")
    with forced(False):
        assert_float32_accuracy(lambda x, w, b, dout: run(cpu, x, w, b, (1, 1, 1, 1), dout),
                                (x, w, b, dout), ref)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("stride", [(1, 1), (2, 1)])
@pytest.mark.parametrize("which", ["x", "w", "dout"])
def test_blocked_nonfinite_like_naive(which, stride):
    """inf, -inf and NaN in one input: NaN where naive has NaN, inf of its sign where it has inf.
    (inf in w sends dx to im2col: the blocked dx would multiply it by dout's zero padding.)"""
    rng = np.random.default_rng(11)
    x, w, b, dout = arrays(rng, (2, 5, 5, 6), (3, 5, 3, 3), (1, 0, 1, 2), (1, 1), np.float32,
                           stride=stride)
    arrays_ = dict(x=x, w=w, dout=dout)
    poisoned = arrays_[which].copy()
    flat = poisoned.reshape(-1)
    flat[0], flat[flat.size // 2], flat[-1] = np.inf, -np.inf, np.nan
    arrays_[which] = poisoned
    args = (arrays_["x"], arrays_["w"], b, (1, 0, 1, 2), arrays_["dout"], True, (1, 1), stride)
    ref = run(_backend.kernels("naive"), *args)
    with forced(False):
        got = run(_backend.kernels("cpu"), *args)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(r), err_msg=f"{name}: NaN")
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(r), err_msg=f"{name}: +inf")
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(r), err_msg=f"{name}: -inf")
        fin = np.isfinite(r)
        np.testing.assert_allclose(a[fin], r[fin], rtol=1e-4, atol=1e-4, err_msg=name)


def _threaded_results(counts):
    """Forward and gradients of two blocked convs (stride 1, and stride 2 with dilation) at
    each thread count in ``counts``."""
    rng = np.random.default_rng(5)
    cpu = _backend.kernels("cpu")
    results = []
    for stride, dilation in (((1, 1), (1, 1)), ((2, 2), (1, 2))):
        x, w, b, dout = arrays(rng, (9, 20, 6, 7), (18, 20, 3, 3), (1, 1, 1, 1), dilation,
                               np.float32, stride=stride)
        with forced(True):
            results.append(at_thread_counts(
                lambda: run(cpu, x, w, b, (1, 1, 1, 1), dout, True, dilation, stride), counts))
    return [a + b for a, b in zip(*results)]


def test_blocked_is_bitwise_identical_for_every_thread_count():
    assert_bitwise_same(_threaded_results(range(1, min(3, numba.config.NUMBA_NUM_THREADS) + 1)),
                        names=("out", "dx", "dw", "db") * 2)


def test_blocked_is_bitwise_identical_for_1_to_4_threads_in_a_subprocess():
    assert_same_digests_for_1_to_4_threads(f"sys.path.insert(0, {HERE!r})",
                                           "__import__('test_blocked')._threaded_results")


def test_blocked_memory_is_what_the_rule_reports():
    """conv2d_memory describes the blocked path when the rule picks it: nothing kept, and at
    least the packed input, dout and the partial dW sums as workspace."""
    shape, w_shape = (64, 32, 14, 14), (64, 32, 3, 3)
    with forced(False):
        kept, work = cpu_conv.conv2d_memory(shape, w_shape, (1, 1), (1,) * 4, (1, 1), 4)
    assert (kept, work) == blocked.memory(shape, w_shape, (1, 1), (1,) * 4, (1, 1), 4)
    v = lanes(np.float32)
    assert kept == 0 and work >= (2 * 16 * 16 * 32 + 64 * 32 * 9) * 4 and v in (4, 8, 16)


@pytest.mark.parametrize("x_shape, w_shape, pads, dilation, expected", [
    ((64, 32, 28, 28), (32, 32, 3, 3), (1,) * 4, (1, 1), "blocked"),    # K < 64: not Winograd
    ((64, 16, 28, 28), (32, 16, 3, 3), (1,) * 4, (1, 1), "blocked"),
    ((64, 32, 14, 14), (64, 32, 5, 5), (2,) * 4, (1, 1), "blocked"),    # 5x5 on 14x14
    ((64, 8, 28, 28), (16, 8, 3, 3), (1,) * 4, (1, 1), "blocked"),
    ((64, 32, 14, 14), (32, 32, 3, 3), (2,) * 4, (2, 2), "blocked"),    # dilated
    ((64, 32, 14, 14), (64, 32, 3, 3), (1,) * 4, (1, 1), "winograd"),   # B
    ((64, 64, 16, 16), (128, 64, 3, 3), (1,) * 4, (1, 1), "winograd"),  # D
    ((10, 20, 12, 12), (40, 20, 5, 5), (0,) * 4, (1, 1), "im2col"),     # E: padded width 12/8
    ((64, 6, 14, 14), (16, 6, 5, 5), (0,) * 4, (1, 1), "im2col"),       # C < 8
    ((64, 64, 14, 14), (64, 64, 1, 1), (0,) * 4, (1, 1), "pointwise"),  # 1x1: a GEMM an image
    ((64, 32, 14, 14), (8, 32, 3, 3), (1,) * 4, (1, 1), "im2col"),      # K < 16
    ((64, 32, 14, 14), (32, 32, 3, 3), (3, 1, 1, 1), (1, 1), "blocked"),  # pad > F-1
])
def test_the_rule_picks_blocked_where_it_measured_faster(x_shape, w_shape, pads, dilation,
                                                          expected):
    assert cpu_conv.ALGORITHM is None
    assert cpu_conv.algorithm(x_shape, w_shape, (1, 1), pads, dilation) == expected
    if expected == "blocked":  # strides above 2 were not measured
        assert cpu_conv.algorithm(x_shape, w_shape, (3, 3), pads, dilation) != "blocked"


@pytest.mark.parametrize("x_shape, w_shape, stride, pads, expected", [
    ((64, 16, 28, 28), (32, 16, 3, 3), (2, 2), (1,) * 4, "blocked"),   # resnet's stride 2
    ((64, 32, 14, 14), (64, 32, 3, 3), (2, 2), (1,) * 4, "blocked"),
    ((64, 16, 28, 28), (32, 16, 1, 1), (2, 2), (0,) * 4, "im2col"),    # 1x1 projection
    ((10, 20, 12, 12), (40, 20, 5, 5), (2, 2), (2,) * 4, "im2col"),    # width 8 over 6
])
def test_the_rule_at_stride_2(x_shape, w_shape, stride, pads, expected):
    assert cpu_conv.algorithm(x_shape, w_shape, stride, pads) == expected


def test_blocked_memory_estimate_matches_tracemalloc():
    """summary()'s figure for a layer the rule sends to the blocked path, within 25% of what
    tracemalloc sees (the measurement of tests/layers/test_summary_memory.py)."""
    import json
    import subprocess
    import sys
    from helpers import SUMMARY_MEMORY_SCRIPT as SCRIPT
    shape = (128, 16, 28, 32, 3, 1)
    assert cpu_conv.algorithm((128, 16, 28, 28), (32, 16, 3, 3), (1, 1), (1,) * 4) == "blocked"
    done = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, shape)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert abs(r["estimate"] - r["measured"]) <= 0.25 * r["measured"], r


@pytest.mark.parametrize("x_shape, w_shape, pads, path", [
    ((0, 3, 5, 5), (4, 3, 3, 3), (1,) * 4, "blocked"),   # no images
    ((2, 3, 5, 5), (0, 3, 3, 3), (1,) * 4, "blocked"),   # no output channels
    ((2, 3, 0, 5), (4, 3, 1, 1), (1,) * 4, "blocked"),   # no input rows: all padding
    ((2, 0, 5, 5), (4, 0, 3, 3), (1,) * 4, "im2col"),    # no input channels: bias only
])
def test_blocked_empty_shapes_like_naive(x_shape, w_shape, pads, path):
    rng = np.random.default_rng(2)
    x, w, b, dout = arrays(rng, x_shape, w_shape, pads, (1, 1), np.float32)
    ref = run(_backend.kernels("naive"), x, w, b, pads, dout)
    with forced(False):
        assert cpu_conv.algorithm(x.shape, w.shape, (1, 1), pads) == path
        got = run(_backend.kernels("cpu"), x, w, b, pads, dout)
    for name, a, r in zip(("out", "dx", "dw", "db"), got, ref):
        assert a.shape == r.shape, name
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6, err_msg=name)
