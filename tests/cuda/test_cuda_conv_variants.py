"""The cuda tier's dilated, grouped, depthwise and transposed convolutions and padding against the
cpu tier, on Numba's simulator (tiny shapes: the simulator runs every GPU thread as Python).

im2col and the padding forward are copies (exact); pad_backward and col2im with dilation sum in
the cpu tier's order along each tap (exact on the simulator, see tests/cuda/conftest.py).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv._shapes import conv_output_hw
from fastconv.kernels import cpu

pytestmark = [pytest.mark.cuda, pytest.mark.filterwarnings("ignore:The keyword argument 'nopython=False'")]

DTYPES = [np.float32, np.float64]
FEW = settings(max_examples=4, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ints = st.integers


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@st.composite
def variant_cases(draw):
    groups = draw(ints(1, 2))
    depthwise = draw(st.booleans())
    c = groups * (1 if depthwise else draw(ints(1, 2)))
    k = groups * draw(ints(1, 2))
    kernel = (draw(ints(1, 2)), draw(ints(1, 3)))
    dilation = (draw(ints(1, 2)), draw(ints(1, 2)))
    pads = tuple(draw(ints(0, 1)) for _ in range(4))
    hw = tuple(max(1, d * (f - 1) + 1 - pads[2 * i] - pads[2 * i + 1]) + draw(ints(0, 2))
               for i, (f, d) in enumerate(zip(kernel, dilation)))
    return dict(n=draw(ints(1, 2)), c=c, k=k, groups=groups, kernel=kernel, dilation=dilation,
                stride=(draw(ints(1, 2)), draw(ints(1, 2))), pads=pads, hw=hw,
                bias=draw(st.booleans()), seed=draw(ints(0, 2**16)))


def conv_fns(tier, case):
    """The tier's forward, backward and extra keyword arguments, as F picks them."""
    if case["groups"] == 1:
        return tier.conv2d, tier.conv2d_backward, {}
    if case["groups"] == case["c"]:
        return tier.depthwise_conv2d, tier.depthwise_conv2d_backward, {}
    return tier.grouped_conv2d, tier.grouped_conv2d_backward, {"groups": case["groups"]}


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(case=variant_cases(), need_dx=st.booleans(), use_saved=st.booleans())
def test_grouped_depthwise_dilated_conv_match_cpu(G, close, dtype, case, need_dx, use_saved):
    rng = np.random.default_rng(case["seed"])
    x = rand(rng, (case["n"], case["c"]) + case["hw"], dtype)
    w = rand(rng, (case["k"], case["c"] // case["groups"]) + case["kernel"], dtype)
    b = rand(rng, case["k"], dtype) if case["bias"] else None
    geometry = (case["stride"], case["pads"], case["dilation"])
    fwd, bwd, extra = conv_fns(G, case)
    cpu_fwd, cpu_bwd, _ = conv_fns(cpu, case)
    out, saved = fwd(x, w, b, *geometry, **extra)
    want, saved_cpu = cpu_fwd(x, w, b, *geometry, **extra)
    close("variant conv", out, want)
    dout = rand(rng, want.shape, dtype)
    got = bwd(dout, x, w, b is not None, geometry[0], geometry[1], dilation=geometry[2],
              saved=saved if use_saved else None, need_dx=need_dx, **extra)
    ref = cpu_bwd(dout, x, w, b is not None, geometry[0], geometry[1], dilation=geometry[2],
                  saved=saved_cpu, need_dx=need_dx, **extra)
    for name, g, r in zip(("dx", "dw", "db"), got, ref):
        assert (g is None) == (r is None), name
        if r is not None:
            close(f"variant conv {name}", g, r)


@pytest.mark.parametrize("dtype", DTYPES)
@FEW
@given(case=variant_cases())
def test_dilated_im2col_col2im_match_cpu(G, close, dtype, case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["c"]) + case["hw"]
    x = rand(rng, shape, dtype)
    args = (case["kernel"], case["stride"], case["pads"], case["dilation"])
    close("dilated im2col", G.im2col(x, *args), cpu.im2col(x, *args), exact=True)
    ho, wo = conv_output_hw(case["hw"], case["kernel"], case["stride"], case["pads"],
                            case["dilation"])
    cols = rand(rng, (case["c"] * case["kernel"][0] * case["kernel"][1], case["n"] * ho * wo), dtype)
    close("dilated col2im", G.col2im(cols, shape, *args), cpu.col2im(cols, shape, *args))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("groups, stride, padding, output_padding, dilation", [
    (1, (2, 1), (1, 0), (1, 0), (1, 2)),
    (2, 2, (0, 1), (1, 1), 1),
    (2, 1, (0, 0), (1, 0), (2, 1)),  # output_padding below the dilation, stride 1
])
def test_conv_transpose_matches_cpu(G, close, dtype, groups, stride, padding, output_padding,
                                    dilation):
    rng = np.random.default_rng(groups)
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    args = (pair(stride), pair(padding), pair(output_padding), pair(dilation), groups)
    x, w = rand(rng, (2, 4, 2, 3), dtype), rand(rng, (4, 2, 2, 2), dtype)
    b = rand(rng, 2 * groups, dtype)
    out, saved = G.conv_transpose2d(x, w, b, *args)
    want, _ = cpu.conv_transpose2d(x, w, b, *args)
    close("conv_transpose2d", out, want)
    dout = rand(rng, want.shape, dtype)
    ref = cpu.conv_transpose2d_backward(dout, x, w, True, *args, None, True)
    for use_saved in (True, False):
        got = G.conv_transpose2d_backward(dout, x, w, True, *args, saved if use_saved else None,
                                          True)
        for name, g, r in zip(("dx", "dw", "db"), got, ref):
            close(f"conv_transpose2d {name}", g, r)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("pads", [(1, 2, 2, 0), (-1, 2, 1, -1), (3, 3, 2, 2)])
def test_pad_matches_cpu(G, close, dtype, mode, pads):
    rng = np.random.default_rng(0)
    x = rand(rng, (1, 2, 3, 4), dtype)
    out = G.pad(x, pads, mode, 1.5 if mode == "constant" else 0.0)
    want = cpu.pad(x, pads, mode, 1.5 if mode == "constant" else 0.0)
    close("pad", out, want, exact=True)
    dout = rand(rng, want.shape, dtype)
    close("pad_backward", G.pad_backward(dout, x.shape, pads, mode),
          cpu.pad_backward(dout, x.shape, pads, mode))


def test_layers_on_the_device_match_the_cpu(G, close):
    """Conv2d with groups, dilation and a padding mode, ConvTranspose2d and a padding layer moved to
    the device: the same forward, input gradient and parameter gradients as on the host."""
    def build():
        return fc.Sequential(fc.ReplicationPad2d((1, 0, 0, 1)),
                             fc.Conv2d(2, 4, 2, dilation=(1, 2), groups=2, padding=1,
                                       padding_mode="circular", rng=0),
                             fc.Conv2d(4, 4, 2, groups=4, rng=1),
                             fc.ConvTranspose2d(4, 2, 2, stride=2, output_padding=1, rng=2),
                             input_grad=True)
    host, dev = build(), build().to("cuda")
    x = rand(np.random.default_rng(1), (1, 2, 3, 4), np.float32)
    want = host(x)
    close("device model out", dev(x), want)
    dy = np.ones_like(want)
    close("device model dx", dev.backward(dy), host.backward(dy))
    for (name, p), (_, q) in zip(host.named_parameters(), dev.named_parameters()):
        close(f"device model d{name}", q.grad, p.grad)
