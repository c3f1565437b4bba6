"""End-to-end benchmarks: the training step of every example architecture at batch 64, and
inference and the tutorial net at batch 1 (the rows of :mod:`benchmarks.networks`).

The fastconv rows skip (with the reason) until ``fastconv.Sequential``, ``fastconv.layers`` and
``fastconv.optim`` are importable; the PyTorch rows skip without PyTorch.
"""
import pytest

from benchmarks import networks


@pytest.mark.parametrize("name, impl", [(name, impl) for name in networks.ROWS for impl in networks.E2E_IMPLS
                                        if networks.runs(impl, name)])
def test_e2e(benchmark, record, run, name, impl):
    ok, why = networks.e2e_status(impl)
    if not ok:
        pytest.skip(why)
    net, mode, batch, _ = networks.ROWS[name]
    case = networks.e2e_case(impl, name)
    kind = "train" if name in networks.TRAIN else "e2e"
    benchmark.group = f"{kind} {name}"
    op = networks.optimizer_label(name) if mode == "train" else mode
    record(kind=kind, op=op, impl=impl, shape=name, **{"pass": net}, images=case.images, batch=batch)
    run(impl, case)
