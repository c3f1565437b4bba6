"""End-to-end benchmarks: the lenet training step and inference, the tutorial net at batch 1.

The fastconv rows skip (with the reason) until ``fastconv.Sequential``, ``fastconv.layers`` and
``fastconv.optim`` are importable; the PyTorch rows skip without PyTorch.
"""
import pytest

from benchmarks import networks


@pytest.mark.parametrize("name, impl", [(name, impl) for name in networks.E2E for impl in networks.E2E_IMPLS
                                        if networks.runs(impl, name)])
def test_e2e(benchmark, record, run, name, impl):
    ok, why = networks.e2e_status(impl)
    if not ok:
        pytest.skip(why)
    net, mode, batch = networks.E2E[name]
    case = networks.e2e_case(impl, name)
    benchmark.group = f"e2e {name}"
    record(kind="e2e", op=mode, impl=impl, shape=name, **{"pass": net}, images=case.images, batch=batch)
    run(impl, case)
