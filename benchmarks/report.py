"""One markdown report: every implementation timed interleaved, in one process.

For each shape and pass the implementations run round-robin (the order rotated every round), so
machine noise hits them alike; each round times a block of calls lasting at least ``--min-time``.
Cells are medians over rounds with the inter-quartile range in brackets; ratios against PyTorch
are medians (IQR) of the per-round ratios. The naive tier runs on ``NAIVE_SLICE`` images of the
batch and is scaled linearly to the full batch (marked †), for fewer rounds.

    python -m benchmarks.report [--quick] [--shapes A,B] [--rounds 15] [--skip compile,memory]
    python -m benchmarks.report --from-json bench.json   # tables from pytest-benchmark's JSON

Sections (``--skip`` any): ``conv`` (shapes A-F, every implementation), ``passes`` (forward, dx
and dW of B and D on one thread beside SGEMM: :mod:`benchmarks.passes`), ``train`` (a training
step at batch 64 of each example architecture against its PyTorch twin: :mod:`benchmarks.networks`),
``pool``, ``e2e`` (inference at batches 256 and 1 of each example network, in fastconv, its compiled
plan, PyTorch and ONNX Runtime: :mod:`benchmarks.networks`), ``memory`` (a conv's workspace),
``netmem`` (peak memory of each example network's training step and inference, fastconv beside
PyTorch: :mod:`benchmarks.net_memory`; measured in the first configuration only), ``compile``;
then the targets.

By default the report runs twice, each time in a fresh subprocess: once on the machine's native
ISA (``OPENBLAS_CORETYPE``/``OPENBLAS_L2_SIZE`` removed, so OpenBLAS picks its own kernel) and
once with AVX2 emulated on the same machine (:data:`benchmarks.isa.ISA_ENV`: Numba compiles for
Haswell with Haswell's own features into its own cache folder, OpenBLAS runs its Haswell kernel,
PyTorch's ATen and oneDNN stop at AVX2), and prints both reports under the CPU's model and family.
Each opens with what the libraries really ran (:func:`benchmarks.isa.describe`: the vector registers
Numba emitted, OpenBLAS's kernel, oneDNN's ISA). ``--isa native`` (or ``avx2``) runs one.

    python -m benchmarks.report --plot speed.png          # also the conv2d ratios as bar charts
                                                          # (speed-native.png, speed-avx2.png)
    python -m benchmarks.report --from-markdown results.md --plot speed.png  # chart only, no timing
"""
import argparse
import gc
import json
import math
import os
import subprocess
import sys
import time
from collections import namedtuple
from datetime import datetime, timezone

import numpy as np

from . import cases, chart, compile_time, isa, memory, net_memory, networks, passes, tables
from .tables import ms, ratio_cell

SECTIONS = ("conv", "passes", "train", "pool", "e2e", "memory", "netmem", "compile")
ISA_ENV = isa.ISA_ENV  # the environment of each CPU configuration (see benchmarks/isa.py)
TUNED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}

Stat = namedtuple("Stat", "median q1 q3 lo hi n")
Row = namedtuple("Row", "kind op shape pass_ flops images times ratio ratios", defaults=(None,))
Row.__doc__ = ("times: impl -> Stat (seconds, full batch); ratio: Stat of (ours / torch) per round; "
               "ratios (whole networks): name -> Stat of per-round time ratios (tables.E2E_RATIOS).")


def stat(values):
    """:class:`Stat` of the non-None ``values`` (None when there are none)."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if not v.size:
        return None
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return Stat(med, q1, q3, v.min(), v.max(), v.size)


def interleave(fns, rounds, min_time, settle=0.0, few=(), few_rounds=1):
    """Time ``fns`` (impl -> :class:`cases.Case`) round-robin; returns impl -> per-round seconds.

    Each block first runs its implementation untimed for ``settle`` seconds, so that threads
    another library left spinning (OpenBLAS spins about 0.1 s after a call) have gone idle,
    then times calls for at least ``min_time`` seconds (the count fixed in the first round).
    Impls in ``few`` (no JIT, slow) run only in the first ``few_rounds`` rounds, one
    call per block. A skipped round holds None.
    """
    for impl, case in fns.items():
        if impl not in few:
            case.fn()  # compile
    cases.reapply_threads()  # libraries loaded by the warm-up get the limit too
    inner = {impl: 1 for impl in few}
    out = {impl: [None] * rounds for impl in fns}
    order = list(fns)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for impl in order[r % len(order):] + order[:r % len(order)]:
                if impl in few and r >= few_rounds:
                    continue
                fn = fns[impl].fn
                if impl not in few:
                    t_end, fastest = time.perf_counter() + settle, float("inf")
                    while True:
                        t0 = time.perf_counter()
                        fn()
                        t1 = time.perf_counter()
                        fastest = min(fastest, t1 - t0)
                        if t1 >= t_end:
                            break
                    inner.setdefault(impl, max(1, min(10000, math.ceil(min_time / max(fastest, 1e-7)))))
                k = inner[impl]
                t0 = time.perf_counter()
                for _ in range(k):
                    fn()
                out[impl][r] = (time.perf_counter() - t0) / k * fns[impl].scale
    finally:
        if enabled:
            gc.enable()
    return out


def paired_ratio(times, num, den):
    """Stat of ``times[num][r] / times[den][r]`` over rounds where both ran."""
    if num not in times or den not in times:
        return None
    return stat([a / b for a, b in zip(times[num], times[den]) if a is not None and b is not None])


def _available(impls):
    return [i for i in impls if cases.impl_status(i)[0]]


def run_conv(args, impls):
    rows = []
    for name in args.shapes:
        for pass_ in cases.PASSES:
            fns = {i: cases.conv_case(i, name, pass_) for i in impls}
            times = interleave(fns, args.rounds, args.min_time, args.settle, ("naive",), args.naive_rounds)
            rows.append(Row("conv", "conv2d", name, pass_, cases.conv_flops(cases.CONV_SHAPES[name], pass_),
                            None, {i: stat(t) for i, t in times.items()}, paired_ratio(times, "cpu", "torch")))
            _progress(rows[-1])
    return rows


def run_pool(args, impls):
    rows = []
    for op in cases.POOL_OPS:
        for name in args.pools:
            for pass_ in cases.PASSES:
                fns = {i: cases.pool_case(i, op, name, pass_) for i in impls}
                times = interleave(fns, args.rounds, args.min_time, args.settle, ("naive",), args.naive_rounds)
                rows.append(Row("pool", op, name, pass_, None, None, {i: stat(t) for i, t in times.items()},
                                paired_ratio(times, "cpu", "torch")))
                _progress(rows[-1])
    return rows


def run_e2e(args, names=networks.E2E, kind="e2e"):
    """Rows of whole networks: ``kind`` "e2e" (the :data:`networks.E2E` rows) or "train"
    (:data:`networks.TRAIN`); ratio: fastconv/torch time, ratios: every pair of
    :data:`tables.E2E_RATIOS` that ran."""
    rows, notes = [], []
    impls = []
    for impl in networks.E2E_IMPLS:
        ok, why = networks.e2e_status(impl)
        (impls.append(impl) if ok else notes.append(f"{impl} rows skipped: {why}"))
    for name in names:
        fns = {i: networks.e2e_case(i, name) for i in impls if networks.runs(i, name)}
        fns = {i: cases.Case(c.fn, 1.0) for i, c in fns.items()}
        times = interleave(fns, args.rounds, args.min_time, args.settle) if fns else {}
        net, mode, batch, _ = networks.ROWS[name]
        ratios = {tables.ratio_name(a, b): paired_ratio(times, a, b) for a, b in tables.E2E_RATIOS}
        op = networks.optimizer_label(name) if mode == "train" else mode
        rows.append(Row(kind, op, name, net, None, batch, {i: stat(t) for i, t in times.items()},
                        ratios["fastconv/torch"], {k: v for k, v in ratios.items() if v is not None}))
        _progress(rows[-1])
    return rows, notes


def _progress_memory(m):
    print(f"  peak memory {m['impl']} {m['net']} {m['mode']} b{m['batch']}: {m['peak'] / memory.MIB:.1f} MiB",
          file=sys.stderr, flush=True)


def _progress(row):
    med = {i: f"{s.median * 1e3:.3g}" for i, s in row.times.items() if s is not None}
    what = f"train step {row.shape}" if row.kind == "train" else f"{row.op} {row.shape} {row.pass_}"
    print(f"  {what}: {med} ms", file=sys.stderr, flush=True)


# --- pytest-benchmark JSON ------------------------------------------------------------------

def _json_stat(st, scale):
    return Stat(*(st[k] * scale for k in ("median", "q1", "q3", "min", "max")), st["rounds"])


def rows_from_json(path):
    """conv, pool, e2e and train rows from a pytest-benchmark ``--benchmark-json`` file (not interleaved)."""
    with open(path) as fh:
        data = json.load(fh)
    groups = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if info.get("kind") not in ("conv", "pool", "e2e", "train"):
            continue
        key = (info["kind"], info["op"], info["shape"], info["pass"])
        g = groups.setdefault(key, {"flops": info.get("flops"), "images": info.get("images"), "times": {}})
        g["times"][info["impl"]] = _json_stat(b["stats"], info.get("time_scale", 1.0))
    rows = {"conv": [], "pool": [], "e2e": [], "train": []}

    def ratio(t, num, den):  # no per-round pairs in the JSON: the spread from the quartiles
        a, b = t.get(num), t.get(den)
        return Stat(a.median / b.median, a.q1 / b.q3, a.q3 / b.q1, a.lo / b.hi, a.hi / b.lo, 2) if a and b else None
    for (kind, op, shape, pass_), g in groups.items():
        t = g["times"]
        if kind in ("e2e", "train"):
            both = {tables.ratio_name(n, d): ratio(t, n, d) for n, d in tables.E2E_RATIOS}
            row = Row(kind, op, shape, pass_, g["flops"], g["images"], t, both["fastconv/torch"],
                      {k: v for k, v in both.items() if v is not None})
        else:
            row = Row(kind, op, shape, pass_, g["flops"], g["images"], t, ratio(t, "cpu", "torch"))
        rows[kind].append(row)
    return rows["conv"], rows["pool"], rows["e2e"], rows["train"], data.get("machine_info", {})


# --- main ---------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 rounds, naive once, shorter blocks")
    ap.add_argument("--rounds", type=int, help="interleaved rounds per row (default 15; quick 5)")
    ap.add_argument("--naive-rounds", type=int, help="rounds for the naive tier (default 3; quick 1)")
    ap.add_argument("--min-time", type=float, help="seconds per timed block (default 0.01; quick 0.005)")
    ap.add_argument("--settle", type=float,
                    help="seconds of untimed calls before each timed block (default 0.25; quick 0.15)")
    ap.add_argument("--shapes", default=",".join(cases.CONV_SHAPES), help="conv shapes, e.g. A,B")
    ap.add_argument("--pools", default=",".join(cases.POOL_SHAPES), help="pool shapes, e.g. P1,P3")
    ap.add_argument("--impls", default=",".join(cases.IMPLS), help="implementations to time")
    ap.add_argument("--skip", default="", help=f"sections to leave out: {','.join(SECTIONS)}")
    ap.add_argument("--threads", type=int, help="threads for every implementation "
                    "(default env FASTCONV_BENCH_THREADS, else 2)")
    ap.add_argument("--malloc-tuned", action="store_true",
                    help="re-run under " + " ".join(f"{k}={v}" for k, v in TUNED_MALLOC.items()))
    ap.add_argument("--from-json", help="build the timing tables from a pytest-benchmark JSON file")
    ap.add_argument("--json-out", help="also write the raw results here")
    ap.add_argument("--isa", default="native,avx2",
                    help="CPU configurations to measure, each in its own subprocess: native, avx2")
    ap.add_argument("--isa-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--isa-later", action="store_true", help=argparse.SUPPRESS)  # not the first one
    ap.add_argument("--plot", help="also draw the conv2d cpu/torch ratios as a bar chart to this PNG "
                    "(needs matplotlib)")
    ap.add_argument("--from-markdown", help="with --plot: draw the chart from this saved report and exit")
    args = ap.parse_args(argv)
    args.isa = [s for s in args.isa.split(",") if s]
    for bad in sorted(set(args.isa) - set(ISA_ENV)):
        ap.error(f"unknown --isa {bad}: choose from {', '.join(ISA_ENV)}")
    args.rounds = args.rounds or (5 if args.quick else 15)
    args.naive_rounds = args.naive_rounds or (1 if args.quick else 3)
    args.min_time = args.min_time or (0.005 if args.quick else 0.01)
    args.settle = (0.15 if args.quick else 0.25) if args.settle is None else args.settle
    args.shapes = [s for s in args.shapes.split(",") if s]
    args.pools = [s for s in args.pools.split(",") if s]
    args.skip = {s for s in args.skip.split(",") if s}
    unknown = set(args.shapes) - set(cases.CONV_SHAPES) | set(args.pools) - set(cases.POOL_SHAPES)
    for bad in sorted(unknown):
        ap.error(f"unknown shape {bad}")
    if args.from_markdown and not args.plot:
        ap.error("--from-markdown needs --plot PATH")
    if args.plot and not args.from_markdown and not args.from_json and "conv" in args.skip:
        ap.error("--plot draws the conv2d table: do not --skip conv")
    return args


def cpu_model():
    """``"<model name>, CPU family <n>"`` from lscpu (or /proc/cpuinfo)."""
    info = {}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    except (OSError, subprocess.SubprocessError):
        pass
    model = info.get("Model name", "?").strip()
    family = info.get("CPU family", "?").strip()
    flags = info.get("Flags", "")
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model}, CPU family {family} ({isa})"


def run_configurations(argv, isas):
    """Run the report once per CPU configuration, each in a fresh subprocess; print them all."""
    print(f"# fastconv benchmarks on {cpu_model()}\n")
    print("Each configuration below ran in its own process, one after the other; within each, "
          "every implementation ran interleaved.\n")
    rest, skip = [], False
    for a in argv:  # everything but --isa and its value
        if skip or a.startswith("--isa"):
            skip = a == "--isa"
            continue
        rest.append(a)
    plot = rest.index("--plot") + 1 if "--plot" in rest else None
    for n, config in enumerate(isas):
        if plot is not None and len(isas) > 1:  # one chart per configuration: speed-native.png, ...
            stem, ext = os.path.splitext(argv[argv.index("--plot") + 1])
            rest[plot] = f"{stem}-{config}{ext}"
        print(f"# configuration: {config} ({isa.shown(config)})\n", flush=True)
        later = ["--isa-later"] if n else []
        done = subprocess.run([sys.executable, "-m", "benchmarks.report", *rest, "--isa", config,
                               "--isa-child", *later], env=isa.child_env(config))
        if done.returncode:
            raise SystemExit(f"the {config} configuration failed (exit {done.returncode})")
        print(flush=True)


def measure(args, impls):
    """Time every section not in ``args.skip``; returns a dict of their rows, notes and the
    seconds each section took (``took``)."""
    res = dict(conv=[], passes=[], square=None, train=[], pool=[], e2e=[], mem=[], comp=None, notes=[],
               took={})
    runs = {"conv": lambda: run_conv(args, impls), "passes": lambda: passes.run(args, interleave, stat),
            "train": lambda: run_e2e(args, networks.TRAIN, "train"), "pool": lambda: run_pool(args, impls),
            "e2e": lambda: run_e2e(args)}
    for section, fn in runs.items():
        if section in args.skip:
            continue
        t0 = time.perf_counter()
        out = fn()
        res["took"][section] = time.perf_counter() - t0
        if section == "passes":
            res["passes"], res["square"] = out
        elif section in ("train", "e2e"):
            res[section] = out[0]
            res["notes"] += [n for n in out[1] if n not in res["notes"]]
        else:
            res[section] = out
    return res


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.plot:
        chart.require()
    if args.from_markdown:
        ratios, info = chart.from_markdown(args.from_markdown)
        chart.plot_speed(ratios, args.plot, info.get("machine", "unknown CPU"), info.get("torch"),
                         info.get("date"), info["shapes"])
        print(f"chart of {len(ratios)} conv2d ratios from {args.from_markdown} written to {args.plot}")
        return
    if not args.isa_child and not args.from_json:
        return run_configurations(argv, args.isa)
    if args.malloc_tuned and not any(k in os.environ for k in TUNED_MALLOC):
        env = dict(os.environ, **TUNED_MALLOC)
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.report"] + argv, env)
    if args.isa_child:
        print(f"- CPU: {cpu_model()}; configuration {args.isa[0]}")
        print("\n".join(isa.describe()) + "\n", flush=True)
    if args.threads:
        os.environ["FASTCONV_BENCH_THREADS"] = str(args.threads)
    threads = cases.configure_threads()
    wanted = [i for i in cases.IMPLS if i in args.impls.split(",")]
    impls = _available(wanted)
    notes = [f"{i} skipped: {cases.impl_status(i)[1]}" for i in wanted if i not in impls]
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    if args.from_json:
        res = dict(passes=[], square=None, mem=[], comp=None, notes=[])
        res["conv"], res["pool"], res["e2e"], res["train"], info = rows_from_json(args.from_json)
        notes.append(f"JSON machine: {info.get('cpu', {}).get('brand_raw', '?')}, "
                     f"{info.get('cpu', {}).get('count', '?')} CPUs, node {info.get('node', '?')}")
        impls = [i for i in cases.IMPLS if any(i in r.times for r in res["conv"] + res["pool"])]
    else:
        res = measure(args, impls)
    notes += res["notes"]
    t0 = time.perf_counter()
    if "memory" not in args.skip:
        res["mem"] = [memory.measure_in_subprocess(i, "B", 1024) for i in ("cpu", "numpy")]
        res.setdefault("took", {})["memory"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res["netmem"] = []
    if args.isa_later and "netmem" not in args.skip:
        notes.append("network peak memory: measured in the first configuration only")
    elif "netmem" not in args.skip and not args.from_json and not net_memory.status()[0]:
        notes.append(f"network peak memory skipped: {net_memory.status()[1]}")
    elif "netmem" not in args.skip and not args.from_json:
        res["netmem"] = net_memory.run(progress=_progress_memory)
        res.setdefault("took", {})["netmem"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if "compile" not in args.skip:
        res["comp"] = compile_time.measure()
        res.setdefault("took", {})["compile"] = time.perf_counter() - t0
    env = cases.environment(threads)
    stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    print(f"## fastconv benchmarks ({stamp})\n")
    for k in ("machine", "python", "numpy", "blas", "numba", "torch", "threads", "allocator", "env"):
        print(f"- {k}: {env[k]}")
    how = (f"from pytest-benchmark JSON {args.from_json} (not interleaved; ratio spread from quartiles)"
           if args.from_json else f"{args.rounds} interleaved rounds (naive: {args.naive_rounds}), "
           f"blocks >= {args.min_time * 1e3:g} ms after {args.settle:g} s untimed, "
           f"{time.perf_counter() - t_start:.0f} s in all")
    print(f"- timing: {how}; float32; median (IQR)")
    if res.get("took"):
        print("- seconds per section: " + ", ".join(f"{k} {v:.0f}" for k, v in res["took"].items()))
    print(f"- load average (1 min): {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
          f"on {os.cpu_count()} CPUs (other processes' load makes every figure noisier)")
    for n in notes:
        print(f"- {n}")
    shape_desc = print_tables(res, impls)
    if args.json_out:
        rows = res["conv"] + res["train"] + res["pool"] + res["e2e"]
        with open(args.json_out, "w") as fh:
            json.dump({"env": env, "rows": [r._asdict() | {"times": {i: s._asdict() if s else None
                                                                    for i, s in r.times.items()},
                                                           "ratio": r.ratio._asdict() if r.ratio else None,
                                                           "ratios": {k: v._asdict() for k, v in (r.ratios or {}).items()}}
                                            for r in rows],
                       "passes": [r._asdict() | {k: getattr(r, k)._asdict() if getattr(r, k) else None
                                                 for k in ("conv", "ratio", "square_ratio")}
                                  for r in res["passes"]],
                       "memory": res["mem"], "netmem": res["netmem"], "compile": res["comp"]}, fh, indent=1)
    if args.plot:
        chart.plot_speed(chart.from_rows(res["conv"]), args.plot, env["machine"], env["torch"], stamp, shape_desc)


def print_tables(res, impls):
    """Print each measured section's table and the targets; returns the conv shapes' descriptions."""
    conv, pool = res["conv"], res["pool"]
    shape_desc = {k: f"{s.n},{s.c},{s.h}x{s.w},{s.k},{s.fh}x{s.fw},s{s.stride},p{s.pad}"
                  for k, s in cases.CONV_SHAPES.items() if k in {r.shape for r in conv}}
    shapes = "; ".join(f"{k} {d}" for k, d in shape_desc.items())
    if conv:
        print(f"\n### conv2d (N,C,HxW,K,FxF,stride,pad: {shapes})\n")
        print(f"bwd = dx, dw, db. † naive timed on {cases.NAIVE_SLICE} images, scaled to the batch.\n")
        print("\n".join(tables.conv_table(conv, impls)))
    if res["passes"]:
        print("\n### conv passes on one thread beside SGEMM (fastconv cpu tier through fastconv.functional; "
              "np.matmul float32; dx = backward with dx minus backward without)\n")
        print("\n".join(passes.table(res["passes"], res["square"], ms, ratio_cell)))
    if res["train"]:
        print(f"\n### training step, batch {networks.TRAIN_BATCH}: examples/train_mnist.py's architectures "
              "against PyTorch twins with the same layers and weights (dropout on, batch norm in train mode)\n")
        print("\n".join(tables.train_table(res["train"])))
    if pool:
        pools = "; ".join(f"{k} {p.n},{p.c},{p.h}x{p.w} {p.kernel}x{p.kernel}/{p.stride}"
                          for k, p in cases.POOL_SHAPES.items() if k in {r.shape for r in pool})
        print(f"\n### pooling ({pools}; maxpool keeps switches / indices)\n")
        print("\n".join(tables.pool_table(pool, impls)))
    if res["e2e"]:
        print(f"\n### end to end (inference batches {networks.INFER_BATCH} and 1, eval mode: the fastconv model, "
              "its compiled plan, the PyTorch twin and ONNX Runtime (CPU provider) on fastconv's export; time "
              "ratios below 1: fastconv faster; tutorial net: plain SGD, one image a step)\n")
        print("\n".join(tables.e2e_table(res["e2e"])))
    if res.get("netmem"):
        print(f"\n### peak memory of the example networks: train step b{networks.TRAIN_BATCH}, inference "
              f"b{networks.INFER_BATCH} ({net_memory.WHAT})\n")
        print("\n".join(net_memory.table(res["netmem"])))
    if res["mem"]:
        print("\n### conv workspace beyond activations (tracemalloc, fresh process)\n")
        print("\n".join(tables.memory_table(res["mem"])))
    if res["comp"]:
        print("\n### JIT compile time (fresh processes, NUMBA_CACHE_DIR cold then warm)\n")
        print("\n".join(compile_time.markdown(res["comp"])))
    print("\n### targets (issue 22; issue 23's and issue 10's marked)\n")
    print("\n".join(tables.targets(conv, pool, res["e2e"], res["train"], res["passes"], res["mem"], res["comp"],
                                   res.get("netmem", ()), net_memory.baseline())))
    return shape_desc


if __name__ == "__main__":
    main()
