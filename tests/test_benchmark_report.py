"""The parts of ``python -m benchmarks.report`` that time nothing: the AVX2 configuration and the
vector-width probe, the PyTorch twins of the example networks, the FLOP counts of each pass, the
inference rows (every implementation computes the same logits), the peak-memory probe, and the
tables and targets the whole-network rows render (from made-up timings).

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

from benchmarks import baselines, cases, isa, net_memory, networks, passes, report, tables  # noqa: E402

SECTIONS = ",".join(report.SECTIONS)


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


# --- inference rows, peak memory and their tables -------------------------------------------

def test_inference_rows_cover_every_example_network_at_both_batches():
    infer = {(net, batch) for net, mode, batch, _ in networks.E2E.values() if mode == "infer"}
    assert infer == {(a, b) for a in networks.ARCHS for b in (networks.INFER_BATCH, 1)}
    assert networks.E2E_IMPLS == ("fastconv", "plan", "torch", "onnxruntime")
    assert not networks.runs("plan", "tutorial_train_b1") and not networks.runs("onnxruntime", "lenet")
    assert networks.runs("plan", "mobilenet_infer_b1") and networks.runs("torch", "lenet")


def _logits(out):
    out = out[0] if isinstance(out, list) else out  # ONNX Runtime: a list of outputs
    return out.detach().numpy() if hasattr(out, "detach") else np.asarray(out)


@pytest.mark.parametrize("arch", networks.ARCHS)
def test_every_implementation_of_an_inference_row_computes_the_same_logits(arch):
    """What each column times: the model, its compiled plan, the PyTorch twin and ONNX Runtime
    on fastconv's export give one image the same logits (batch norm folded in the plan: float32
    rounding)."""
    name = f"{arch}_infer_b1"
    impls = [i for i in networks.E2E_IMPLS if networks.e2e_status(i)[0]]
    assert "fastconv" in impls and "plan" in impls
    out = {i: _logits(networks.e2e_case(i, name).fn()) for i in impls}
    assert out["fastconv"].shape == (1, 10)
    for impl in impls:
        assert rel_error(out[impl], out["fastconv"]) < 1e-4, impl


def test_peak_memory_sees_the_steps_allocations():
    """The tutorial network's inference at batch 256 in a fresh process: the peak above the
    resident set before the steps holds at least the pooled activations feeding the Linear
    (256 x 8 x 13 x 13 float32), although fastconv's block cache and glibc kept the warm-up's."""
    m = net_memory.measure_in_subprocess("fastconv", "tutorial", "infer")
    assert m["batch"] == networks.INFER_BATCH and m["steps"] == net_memory.STEPS and m["trimmed"]
    assert m["peak"] >= 256 * 8 * 13 * 13 * 4, m
    assert m["base"] > m["peak"], m  # the interpreter, NumPy, Numba and the model sit in the base


def _stat(v):
    return report.Stat(v, v * 0.9, v * 1.1, v * 0.8, v * 1.2, 5)


def _infer_row(arch, batch, ratios):
    times = {i: _stat(1e-3) for i in networks.E2E_IMPLS}
    return report.Row("e2e", "infer", f"{arch}_infer_b{batch}", arch, None, batch, times,
                      _stat(ratios["fastconv/torch"]), {k: _stat(v) for k, v in ratios.items()})


def _mem(impl, net, mode, mib):
    return {"impl": impl, "net": net, "mode": mode, "batch": 64 if mode == "train" else 256,
            "steps": 3, "base": 300 * net_memory.MIB, "peak": mib * net_memory.MIB, "trimmed": True}


def test_whole_network_tables_and_issue_23_targets_render(tmp_path, capsys):
    """Made-up timings through the report's printer: the plan and ONNX Runtime columns, the four
    time ratios, the memory table, and each issue-23 target met or not by its limit."""
    e2e = [_infer_row("mobilenet", 256, {"fastconv/torch": 0.6, "plan/torch": 0.5, "fastconv/ORT": 1.3,
                                         "plan/ORT": 1.1}),
           _infer_row("mobilenet", 1, {"fastconv/torch": 1.2, "plan/torch": 0.7, "fastconv/ORT": 4.0,
                                       "plan/ORT": 2.5})]
    train = [report.Row("train", "SGD(lr=0.05)", "resnet", "resnet", None, 64,
                        {"fastconv": _stat(0.04), "torch": _stat(0.05)}, _stat(0.85), {"fastconv/torch": _stat(0.85)})]
    netmem = [_mem("fastconv", "resnet", "train", 60), _mem("torch", "resnet", "train", 40),
              _mem("fastconv", "resnet", "infer", 100), _mem("torch", "resnet", "infer", 125)]
    baseline = tmp_path / "baseline.md"
    baseline.write_text(f"# before\n\n{net_memory.ALLOCATOR_HEADING}other settings\n\n"
                        "| resnet | train | 64 | 1.0 | 1.0 | 1 | 1 | 1 |\n\n"
                        f"{net_memory.ALLOCATOR_HEADING}{cases.allocator_settings()}\n\n"
                        + "\n".join(net_memory.table([_mem("fastconv", "resnet", "train", 50),
                                                      _mem("torch", "resnet", "train", 45)])) + "\n")
    assert net_memory.baseline(baseline) == {("resnet", "train"): 50.0}

    head = tables.e2e_table(e2e)[0]
    assert "| plan ms |" in head and "| onnxruntime ms |" in head
    assert all(f"| {n} time |" in head for n in ("fastconv/torch", "plan/torch", "fastconv/ORT", "plan/ORT"))
    assert "| mobilenet_infer_b1 | 1 |" in tables.e2e_table(e2e)[3] and "| 2.50 (2.25-2.75) |" in tables.e2e_table(e2e)[3]
    mem = net_memory.table(netmem)
    assert mem[2] == "| resnet | train | 64 | 60.0 | 40.0 | 1.50 | 300.0 | 300.0 |", mem

    met = {}
    for what, _, ok in tables.issue23_targets(e2e, train, netmem, net_memory.baseline(baseline)):
        met[what] = ok
    assert met == {
        "(issue 23) resnet train step b64: fastconv/torch time <= 0.8": False,
        "(issue 23) mobilenet_infer_b256: fastconv/torch time <= 0.7": True,
        "(issue 23) mobilenet_infer_b256: fastconv/ORT time <= 1.25": False,
        "(issue 23) mobilenet_infer_b1: plan/torch time <= 0.8": True,
        "(issue 23) mobilenet_infer_b1: plan/ORT time <= 2.0": False,
        "(issue 23) resnet train peak memory: fastconv/torch (shown, no limit)": None,
        "(issue 23) resnet train peak memory <= 1.25x the pre-blocked-layout 50.0 MiB": True,
        "(issue 23) resnet infer peak memory: fastconv/torch (shown, no limit)": None,
    }

    res = dict(conv=[], passes=[], square=None, train=train, pool=[], e2e=e2e, mem=[], comp=None, netmem=netmem)
    report.print_tables(res, [])
    text = capsys.readouterr().out
    assert "### peak memory of the example networks" in text and net_memory.WHAT in text
    assert "| (issue 23) mobilenet_infer_b1: plan/ORT time <= 2.0 | 2.50 (2.25-2.75) | **no** |" in text
    assert "| (issue 23) resnet infer peak memory: fastconv/torch (shown, no limit) | 0.80 (100.0 / 125.0 MiB) | - |" in text


def test_later_configurations_leave_the_memory_cells_to_the_first():
    """The second ISA configuration (``--isa-later``, as the parent passes it) says where the
    network memory table is instead of spending 20 processes on it again."""
    skip = ",".join(s for s in report.SECTIONS if s != "netmem")
    out = subprocess.run([sys.executable, "-m", "benchmarks.report", "--isa", "native", "--isa-child",
                          "--isa-later", "--skip", skip], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "- network peak memory: measured in the first configuration only" in out.stdout
    assert "### peak memory" not in out.stdout and "peak memory:" not in out.stderr


def test_fusion_ab_switches_everything_off_and_back_on():
    """``benchmarks.fusion_ab`` compares the step with and without the ReLU fusions, the fused
    optimizer updates and the blocked depthwise backward: its switches must really switch, and
    restore; ``residual`` switches the residual sum's ReLU only."""
    from benchmarks import fusion_ab
    from fastconv.kernels import _host_optim, cpu
    from fastconv.kernels.cpu import depthwise, depthwise_blocked
    from fastconv.layers import container
    bn, relu, res = fc.BatchNorm2d(2), fc.ReLU(), fc.Residual(fc.ReLU())
    blocked = depthwise_blocked.backward
    on, off = fusion_ab.switches("all")
    try:
        off()
        assert container._runs_relu(bn, relu) is None
        assert container._runs_relu(res, relu) is None
        assert cpu.sgd_update is _host_optim.sgd_update
        assert cpu.adam_update is _host_optim.adam_update
        assert depthwise_blocked.backward is depthwise._plane_backward
    finally:
        on()
    assert container._runs_relu(bn, relu) is bn and container._runs_relu(res, relu) is res
    assert cpu.sgd_update is not _host_optim.sgd_update
    assert cpu.adam_update is not _host_optim.adam_update
    assert depthwise_blocked.backward is blocked
    on, off = fusion_ab.switches("residual")
    try:
        off()
        assert container._runs_relu(res, relu) is None and container._runs_relu(bn, relu) is bn
    finally:
        on()
    assert container._runs_relu(res, relu) is res
