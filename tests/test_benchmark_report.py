"""The parts of ``python -m benchmarks.report`` that time nothing: the AVX2 configuration and the
vector-width probe, the PyTorch twins of the example networks, and the FLOP counts of each pass.

The benchmarks folder is not an installed package: it is imported from the repository root.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv as fc

from helpers import rel_error

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import baselines, cases, isa, networks, passes  # noqa: E402

SECTIONS = "conv,passes,train,pool,e2e,memory,compile"


def host_has_avx512():
    with open("/proc/cpuinfo") as fh:
        return " avx512f" in fh.read()


def probe(env):
    """The vector-width probe run in a fresh process under ``env``."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.isa"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


# --- the AVX2 configuration -----------------------------------------------------------------

def test_haswell_with_empty_features_emits_no_avx512():
    base = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
    found = probe(dict(base, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES=""))
    assert found["zmm"] == 0 and found["ymm"] > 0, found
    assert found["widest"] == "ymm" and found["label"].startswith("ymm (AVX2") and not found["avx512f"]
    native = probe(base)
    assert native["avx512f"] == host_has_avx512(), native
    if host_has_avx512() and native["zmm"] == 0:  # e.g. an Intel CPU where LLVM prefers 256 bits
        assert "although the target has AVX-512F" in native["label"]


def test_configurations_set_every_library_and_drop_the_machine_defaults():
    base = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1", "NUMBA_CPU_NAME": "znver4",
            "NUMBA_CPU_FEATURES": "+avx512f", "KEEP": "1"}
    native = isa.child_env("native", base)
    assert native == {"KEEP": "1"}
    avx2 = isa.child_env("avx2", base)
    assert avx2["NUMBA_CPU_NAME"] == "haswell" and avx2["NUMBA_CPU_FEATURES"] == ""
    assert avx2["OPENBLAS_CORETYPE"] == "Haswell" and "OPENBLAS_L2_SIZE" not in avx2
    assert avx2["ATEN_CPU_CAPABILITY"] == "avx2" and avx2["ONEDNN_MAX_CPU_ISA"] == "AVX2"
    assert "NUMBA_CPU_FEATURES= " in isa.shown("avx2") and "-u OPENBLAS_L2_SIZE" in isa.shown("avx2")


def test_the_report_prints_what_the_avx2_configuration_really_ran():
    """The whole path: the parent starts the avx2 child, which reports Numba's registers (no
    section is timed)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.report", "--isa", "avx2", "--skip", SECTIONS],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "# configuration: avx2 (" in text and "NUMBA_CPU_FEATURES= " in text
    line = next(line for line in text.splitlines() if line.startswith("- Numba emits:"))
    assert line.startswith("- Numba emits: ymm (AVX2, 8 float32 lanes)") and " 0 zmm" in line, line
    assert "OpenBLAS: " in text and "kernel Haswell" in text
    if "- fastconv micro-kernels: " in text:
        assert "- fastconv micro-kernels: 256-bit vectors (8 float32 lanes), 16 vector registers" in text
    if "- PyTorch: " in text:
        assert "oneDNN ISA Intel AVX2," in text and "ATen capability AVX2" in text
    assert "### targets" in text


# --- FLOPs of each pass ---------------------------------------------------------------------

@pytest.mark.parametrize("shape, outputs", [
    (cases.ConvShape(2, 3, 5, 5, 4, 3, 3, 1, 1, ""), 2 * 4 * 5 * 5),    # pad 1 keeps 5x5
    (cases.ConvShape(2, 3, 7, 7, 4, 3, 3, 2, 0, ""), 2 * 4 * 3 * 3),    # (7 - 3) // 2 + 1 = 3
    (cases.ConvShape(1, 2, 6, 4, 5, 3, 1, 1, 0, ""), 1 * 5 * 4 * 4),    # 3x1 kernel: 4x4 out
])
def test_every_pass_costs_two_flops_per_multiply_add(shape, outputs):
    macs_per_output = shape.c * shape.fh * shape.fw
    hand = 2 * outputs * macs_per_output
    assert passes.pass_flops(shape) == {"fwd": hand, "dx": hand, "dw": hand}
    assert cases.conv_flops(shape, "fwdbwd") == 3 * hand
    for p in passes.PASSES:
        m, k, n = passes.gemm_dims(shape, p)
        assert 2 * m * k * n == hand, p
    # the forward product is the im2col GEMM the NumPy baseline runs: w (K, CFF) @ cols (CFF, N*P)
    x, w, b, _ = cases.conv_arrays(shape)
    cols = baselines.conv2d(x, w, b, shape.stride, shape.pad)[1][2]
    assert passes.gemm_dims(shape, "fwd") == (shape.k,) + cols.shape


# --- PyTorch twins of the example networks --------------------------------------------------

def _randomise_batch_norm(model, rng):
    """Running statistics and affine parameters away from their initial 0 / 1, so that the twin
    must carry them over to match."""
    state = model.state_dict()
    for key, value in state.items():
        stem = key.rsplit(".", 1)[0]
        if f"{stem}.running_var" not in state or key.endswith("num_batches_tracked"):
            continue
        if key.endswith(("running_var", ".weight")):
            state[key] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        else:
            state[key] = rng.normal(0, 0.3, value.shape).astype(np.float32)
    model.load_state_dict(state)


def _dropout_off(model, kinds):
    for m in model.modules():
        if isinstance(m, kinds):
            m.eval()


@pytest.mark.parametrize("arch", networks.ARCHS)
def test_twins_compute_what_the_example_networks_compute(arch):
    """Same weights, same numbers: float32 logits in eval mode (running statistics); in train mode
    (batch statistics, dropout off) the logits and every parameter's gradient, in float64 so that
    no ReLU input within rounding of 0 takes a different side in the two libraries."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    model = networks.build(arch, seed=1)
    _randomise_batch_norm(model, rng)
    twin = networks.torch_twin(model)
    assert next(twin.parameters()).dtype == torch.float32
    x = rng.standard_normal((4, 1, 28, 28))
    model.eval(), twin.eval()
    with torch.no_grad():
        ref = twin(torch.from_numpy(x.astype(np.float32))).numpy()
    assert rel_error(model.forward(x.astype(np.float32)), ref) < 1e-4

    model = model.to(np.float64).train()
    twin = networks.torch_twin(model)
    assert next(twin.parameters()).dtype == torch.float64 and twin.training
    _dropout_off(model, fc.Dropout)
    _dropout_off(twin, torch.nn.Dropout)
    out = model.forward(x)
    tout = twin(torch.from_numpy(x))
    assert rel_error(out, tout.detach().numpy()) < 1e-9
    dout = rng.standard_normal(out.shape)
    model.backward(dout)
    tout.backward(torch.from_numpy(dout))
    theirs = dict(twin.named_parameters())
    ours = dict(model.named_parameters())
    assert ours.keys() == theirs.keys()
    for name, p in ours.items():
        assert rel_error(p.grad, theirs[name].grad.numpy()) < 1e-9, name


def test_twin_names_a_layer_it_cannot_translate():
    pytest.importorskip("torch")
    with pytest.raises(TypeError, match="GELU"):
        networks.torch_twin(fc.Sequential(fc.Linear(2, 2), fc.GELU()))


def test_train_rows_use_the_example_optimizers():
    archs = networks.example_archs()
    assert set(networks.ARCHS) == set(archs)
    for arch in networks.ARCHS:
        kind, kwargs = networks.optimizer_spec(arch)
        assert kind == {"sgd": "SGD", "adam": "Adam"}[archs[arch]["optimizer"]]
        assert kwargs["lr"] == archs[arch]["lr"] and kwargs["weight_decay"] == archs[arch]["weight_decay"]
        assert networks.TRAIN[arch][2] == 64
