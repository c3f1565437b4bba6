"""pytest-benchmark setup: one thread count for every implementation, facts in ``extra_info``.

Run with ``python -m pytest benchmarks --benchmark-enable`` (the project's setup.cfg disables
benchmarks by default, so ``--benchmark-disable`` runs each benchmark once as a smoke test).
"""
import pytest

from benchmarks import cases

#: Rounds for the naive tier (hundreds of ms a call on the larger shapes).
NAIVE_ROUNDS = 3


def pytest_report_header(config):
    threads = cases.configure_threads()
    return [f"fastconv benchmarks: {threads} threads (numba, torch, BLAS); "
            f"allocator: {cases.allocator_settings()}"]


@pytest.fixture(autouse=True)
def _same_threads():
    """Re-apply the thread limit before each test (libraries may have loaded since)."""
    cases.configure_threads()


@pytest.fixture
def record(benchmark):
    """``record(**info)`` stores ``info`` plus threads and allocator in the benchmark's extra_info."""
    def rec(**info):
        benchmark.extra_info.update(info)
        benchmark.extra_info.update(threads=cases.configure_threads(),
                                    allocator=cases.allocator_settings())
    return rec


@pytest.fixture
def run(benchmark):
    """``run(impl, case)`` benchmarks ``case.fn``: naive for a few rounds, the others after a warm-up."""
    def go(impl, case):
        if impl == "naive":
            return benchmark.pedantic(case.fn, rounds=NAIVE_ROUNDS, iterations=1)
        if not getattr(benchmark, "disabled", False):
            case.fn()  # compile outside the timing
        return benchmark(case.fn)
    return go


def require(impl):
    """Skip the test unless ``impl`` (see :data:`cases.IMPLS`) can run here."""
    ok, why = cases.impl_status(impl)
    if not ok:
        pytest.skip(why)
