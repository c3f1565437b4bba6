"""Markdown tables of :mod:`benchmarks.report`: one function per section, and the targets.

Rows are the report's ``Row`` tuples (times: impl -> Stat of seconds; ratio: Stat of per-round
ratios); ``Stat`` has median, q1, q3, lo, hi, n.
"""
from . import compile_time, memory, net_memory, networks, passes
from .memory import MIB

def ms(s, spread=True):
    """Milliseconds with 3 significant figures, and the IQR when asked."""
    def f(v):
        v *= 1e3
        return f"{v:.0f}" if v >= 100 else f"{v:.3g}"
    if s is None:
        return "-"
    return f"{f(s.median)} ({f(s.q1)}-{f(s.q3)})" if spread and s.n > 1 else f(s.median)


def ratio_cell(s):
    if s is None:
        return "-"
    return f"{s.median:.2f} ({s.q1:.2f}-{s.q3:.2f})" if s.n > 1 else f"{s.median:.2f}"


def _speedup(row, base="naive", impl="cpu"):
    a, b = row.times.get(base), row.times.get(impl)
    if not (a and b):
        return "-"
    v = a.median / b.median
    return f"{v:,.0f}x" if v >= 10 else f"{v:.2g}x"


def conv_table(rows, impls):
    head = ["shape", "pass", "GFLOP"] + [f"{i}{'†' if i == 'naive' else ''} ms" for i in impls]
    head += ["cpu GFLOP/s", "torch GFLOP/s", "cpu speed-up vs naive", "cpu/torch time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in rows:
        gf = [f"{r.flops / r.times[i].median / 1e9:.1f}" if r.times.get(i) else "-" for i in ("cpu", "torch")]
        cells = [r.shape, r.pass_, f"{r.flops / 1e9:.3f}"] + [ms(r.times.get(i), i != "naive") for i in impls]
        lines.append("| " + " | ".join(cells + gf + [_speedup(r), ratio_cell(r.ratio)]) + " |")
    return lines


def pool_table(rows, impls):
    head = ["op", "shape", "pass"] + [f"{i}{'†' if i == 'naive' else ''} ms" for i in impls]
    head += ["cpu speed-up vs naive", "cpu/torch time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in rows:
        cells = [r.op, r.shape, r.pass_] + [ms(r.times.get(i), i != "naive") for i in impls]
        lines.append("| " + " | ".join(cells + [_speedup(r), ratio_cell(r.ratio)]) + " |")
    return lines


#: The time ratios of an inference row: (numerator, denominator) implementations.
E2E_RATIOS = (("fastconv", "torch"), ("plan", "torch"), ("fastconv", "onnxruntime"), ("plan", "onnxruntime"))
_SHORT = {"onnxruntime": "ORT"}


def ratio_name(num, den):
    """Column and key of a time ratio, e.g. ``"plan/ORT"``."""
    return f"{_SHORT.get(num, num)}/{_SHORT.get(den, den)}"


def e2e_table(rows):
    """The whole-network rows: each implementation's ms, and time ratios (below 1: faster)."""
    impls = networks.E2E_IMPLS
    names = [ratio_name(*p) for p in E2E_RATIOS]
    head = ["row", "batch"] + [f"{i} ms" for i in impls] + [f"{n} time" for n in names]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [r.shape, str(r.images)] + [ms(r.times.get(i)) for i in impls]
        cells += [ratio_cell((r.ratios or {}).get(n)) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def memory_table(results):
    lines = ["| impl | shape | batch | forward MiB | kept fwd->bwd MiB | backward MiB | peak workspace MiB "
             f"(target <= {memory.TARGET_MIB}) | activations MiB |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for m in results:
        mib = [f"{m[k] / memory.MIB:.1f}" for k in ("fwd", "kept", "bwd", "workspace", "activations")]
        lines.append("| " + " | ".join([m["impl"], m["shape"], str(m["batch"])] + mib) + " |")
    return lines


def train_table(rows):
    """The training-step rows: times, images/s and the fastconv/torch time ratio."""
    lines = ["| arch | optimizer | batch | fastconv ms | torch ms | fastconv img/s | torch img/s "
             "| fastconv/torch time |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ips = [f"{r.images / r.times[i].median:,.0f}" if r.times.get(i) else "-" for i in ("fastconv", "torch")]
        cells = [r.shape, r.op, str(r.images), ms(r.times.get("fastconv")), ms(r.times.get("torch"))] + ips
        lines.append("| " + " | ".join(cells + [ratio_cell(r.ratio)]) + " |")
    return lines


#: Issue 23's limits: (row kind, batch) -> [(ratio name, limit)] on the median time ratio; the
#: batch-256 rows judge the model as users call it, the batch-1 rows the compiled plan.
ISSUE23 = {("train", networks.TRAIN_BATCH): [("fastconv/torch", 0.8)],
           ("infer", networks.INFER_BATCH): [("fastconv/torch", 0.7), ("fastconv/ORT", 1.25)],
           ("infer", 1): [("plan/torch", 0.8), ("plan/ORT", 2.0)]}

#: Issue 22's limits on the fastconv/torch time of a batch-64 training step.
TRAIN_TARGETS = {"lenet": 0.8, "lenet_sgd": 0.8, "best": 0.8, "resnet": 1.0}
CONV_TARGET, PASS_TARGET = 0.8, 0.75


def issue23_targets(e2e, train, netmem=(), baseline=None):
    """Issue 23's target rows: the time ratios of :data:`ISSUE23` for every example network, and
    fastconv's peak memory beside PyTorch's and against ``baseline`` ((net, mode) -> MiB before
    the change; :func:`benchmarks.net_memory.baseline`)."""
    out = []
    for r in train:
        if r.shape in networks.ARCHS and r.ratio:
            for name, limit in ISSUE23.get(("train", r.images), []):
                out.append((f"(issue 23) {r.shape} train step b{r.images}: {name} time <= {limit}",
                            ratio_cell(r.ratio), r.ratio.median <= limit))
    for r in e2e:
        for name, limit in ISSUE23.get((r.op, r.images), []):
            s = (r.ratios or {}).get(name)
            if s is not None:
                out.append((f"(issue 23) {r.shape}: {name} time <= {limit}", ratio_cell(s), s.median <= limit))
    peaks = net_memory.ratios(netmem)
    for (net, mode), (ours, theirs) in peaks.items():
        if ours is not None and theirs:
            out.append((f"(issue 23) {net} {mode} peak memory: fastconv/torch (shown, no limit)",
                        f"{ours / theirs:.2f} ({ours / MIB:.1f} / {theirs / MIB:.1f} MiB)", None))
        before = (baseline or {}).get((net, mode))
        if ours is not None and before:
            limit = net_memory.GROWTH_LIMIT
            out.append((f"(issue 23) {net} {mode} peak memory <= {limit}x the pre-blocked-layout {before:.1f} MiB",
                        f"{ours / MIB / before:.2f}x ({ours / MIB:.1f} MiB)", ours / MIB <= limit * before))
    return out


def targets(conv, pool, e2e, train, pass_rows, mem, comp, netmem=(), baseline=None):
    """Issue 22's targets, issue 23's (:func:`issue23_targets`) and issue 10's that still apply,
    each measured and met / not met ("-": shown, no limit)."""
    out = ["| target | measured | met |", "|---|---:|---|"]

    def add(what, value, ok):
        out.append(f"| {what} | {value} | {'-' if ok is None else 'yes' if ok else '**no**'} |")
    for r in (r for r in conv if r.pass_ == "fwdbwd" and r.ratio):
        add(f"conv {r.shape} fwd+bwd: cpu/torch time <= {CONV_TARGET}", ratio_cell(r.ratio),
            r.ratio.median <= CONV_TARGET)
    for r in (r for r in pass_rows if r.ratio):
        add(f"conv {r.shape} {passes.LABELS[r.pass_]}, 1 thread: >= {PASS_TARGET:.0%} of SGEMM GFLOP/s "
            "(same product)", ratio_cell(r.ratio), r.ratio.median >= PASS_TARGET)
    for r in (r for r in train if r.ratio and r.shape in TRAIN_TARGETS):
        limit = TRAIN_TARGETS[r.shape]
        add(f"{r.shape} train step b{r.images}: fastconv/torch time <= {limit}", ratio_cell(r.ratio),
            r.ratio.median <= limit)
    for row in issue23_targets(e2e, train, netmem, baseline):
        add(*row)
    if comp:
        warm = compile_time.first_use(comp["warm"])
        cold = compile_time.first_use(comp["cold"])
        add("fresh process, cold cache: import + first conv fwd+bwd <= 6 s", f"{cold:.2f} s", cold <= 6.0)
        add("fresh process, warm cache: import + first conv fwd+bwd < 1.5 s", f"{warm:.2f} s", warm < 1.5)
    for r in (r for r in conv if r.pass_ == "fwdbwd"):
        nv, cv = r.times.get("naive"), r.times.get("cpu")
        if nv and cv:
            need = 100 if r.shape in ("A", "F") else 10
            add(f"(issue 10) conv {r.shape} fwd+bwd: cpu >= {need}x faster than naive",
                f"{nv.median / cv.median:,.0f}x", nv.median / cv.median >= need)
    for r in (r for r in pool if r.op == "maxpool" and r.pass_ == "fwdbwd" and r.ratio):
        add(f"(issue 10) maxpool {r.shape} fwd+bwd: cpu/torch time <= 0.5", ratio_cell(r.ratio),
            r.ratio.median <= 0.5)
    for r in (r for r in e2e if r.ratio and r.shape == "lenet_infer_b256"):
        add(f"(issue 10) {r.shape}: fastconv/torch time <= 1 (img/s >= torch's)", ratio_cell(r.ratio),
            r.ratio.median <= 1.0)
    for m in (m for m in mem if m["impl"] == "cpu"):
        mib = m["workspace"] / memory.MIB
        add(f"(issue 10) workspace, conv {m['shape']} batch {m['batch']} <= {memory.TARGET_MIB} MiB",
            f"{mib:.0f} MiB", mib <= memory.TARGET_MIB)
    return out
