"""Peak memory of whole networks: a training step at batch 64 and inference at batch 256 of each
example network, fastconv beside its PyTorch twin, each measurement in a fresh process.

What is measured (Linux): the peak resident set (``VmHWM`` in ``/proc/self/status``) during
:data:`STEPS` steps, minus the resident set (``VmRSS``) just before them. The steps are the
report's own timed calls (:func:`benchmarks.networks.e2e_case`: model, optimizer and data already
made). Before the baseline, one warm-up step compiles the kernels and fills the caches; then
fastconv's cache of large blocks (:mod:`fastconv.kernels._memory`) is emptied, ``gc.collect()``
runs and glibc's ``malloc_trim(0)`` hands back the pages the warm-up freed. So the figure is the
memory the steps need (activations, gradients, workspaces), with the blocks fastconv's cache and
glibc keep from one step to the next counted once, as the steps grow them again. Writing "5" to
``/proc/self/clear_refs`` resets ``VmHWM`` to the current resident set, so the compile's own peak
is not counted. The weights, optimizer state and input batch sit in the baseline, which the table
shows beside the peak.

:data:`BASELINE` holds the figures of fastconv before issue 23's blocked layout (issue 23: its
peak must stay within :data:`GROWTH_LIMIT` of them).

``python -m benchmarks.net_memory --impl fastconv --net lenet --mode train`` prints one JSON object.
"""
import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .memory import MIB

STEPS = 3
IMPLS = ("fastconv", "torch")
MODES = ("train", "infer")
BASELINE = Path(__file__).with_name("results-2026-12-07-memory-baseline.md")
GROWTH_LIMIT = 1.25
JOBS = 2  # cells measured at once (each in its own process)
ALLOCATOR_HEADING = "## allocator: "
WHAT = (f"peak resident set during {STEPS} steps minus the resident set just before them (after "
        "one warm-up step, then fastconv's block cache emptied, gc and malloc_trim), a fresh process "
        "per cell; MiB")


def status():
    """``(available, reason)``: the measure needs Linux's /proc/self/status and clear_refs."""
    if not (os.path.exists("/proc/self/status") and os.access("/proc/self/clear_refs", os.W_OK)):
        return False, "needs Linux's /proc/self/status and a writable /proc/self/clear_refs"
    return True, ""


def row_name(net, mode):
    """The :mod:`benchmarks.networks` row a (net, mode) cell measures."""
    from . import networks
    return net if mode == "train" else f"{net}_infer_b{networks.INFER_BATCH}"


def _status_kib(*keys):
    with open("/proc/self/status") as fh:
        fields = dict(line.split(":", 1) for line in fh if ":" in line)
    return [int(fields[k].split()[0]) for k in keys]


def _empty_block_cache():
    try:
        from fastconv.kernels import _memory
    except ImportError:  # a fastconv without the cache
        return
    _memory.clear()


def _trim():
    """glibc's malloc_trim(0): free heap pages back to the system; False without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def measure(impl, net, mode, steps=STEPS):
    """Peak of ``steps`` steps of cell (impl, net, mode) above the resident set before them, in
    this process (call it in a fresh one: :func:`measure_in_subprocess`). Returns a dict with
    ``peak`` and ``base`` in bytes."""
    from . import networks
    name = row_name(net, mode)
    case = networks.e2e_case(impl, name)
    case.fn()  # warm-up: compile, caches, allocator pools
    _empty_block_cache()
    gc.collect()
    trimmed = _trim()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := VmRSS
    base = _status_kib("VmRSS")[0]
    for _ in range(steps):
        case.fn()
    hwm = _status_kib("VmHWM")[0]
    return {"impl": impl, "net": net, "mode": mode, "batch": networks.ROWS[name][2], "steps": steps,
            "base": base * 1024, "peak": (hwm - base) * 1024, "trimmed": trimmed}


def measure_in_subprocess(impl, net, mode, timeout=600):
    """:func:`measure` in a fresh interpreter (same environment); returns its dict."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [sys.executable, "-m", "benchmarks.net_memory", "--impl", impl, "--net", net, "--mode", mode]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(nets=None, modes=MODES, impls=IMPLS, progress=None, repeat=1, jobs=JOBS):
    """Every (net, mode, impl) cell, each in its own process, ``jobs`` processes at a time (a
    process's resident set is its own, so running two at once changes no figure, only the wall
    time); a list of :func:`measure` dicts. With ``repeat`` > 1 each cell runs that many times
    and its dict holds the median peak and base, and the peaks' ``lo`` and ``hi``."""
    from . import networks
    impls = [i for i in impls if networks.e2e_status(i)[0]]  # PyTorch is optional
    cells = [(impl, net, mode) for net in nets or networks.ARCHS for mode in modes for impl in impls]
    out = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        done = pool.map(lambda c: measure_in_subprocess(*c), [c for c in cells for _ in range(repeat)])
        for _ in cells:
            runs = [next(done) for _ in range(repeat)]
            peaks = sorted(m["peak"] for m in runs)
            cell = dict(runs[0], peak=peaks[len(peaks) // 2],
                        base=sorted(m["base"] for m in runs)[len(runs) // 2])
            out.append(cell if repeat == 1 else dict(cell, lo=peaks[0], hi=peaks[-1], repeat=repeat))
            if progress:
                progress(out[-1])
    return out


def ratios(results):
    """(net, mode) -> (fastconv peak, torch peak) in bytes, for the cells measured."""
    cells = {}
    for m in results:
        cells.setdefault((m["net"], m["mode"]), {})[m["impl"]] = m["peak"]
    return {k: (v.get("fastconv"), v.get("torch")) for k, v in cells.items()}


def _mib(b):
    return "-" if b is None else f"{b / MIB:.1f}"


def _peak_cell(m):
    """The peak in MiB, with the lowest and highest of repeated runs when there were some."""
    if m is None:
        return "-"
    return _mib(m["peak"]) + (f" ({_mib(m['lo'])}-{_mib(m['hi'])})" if "lo" in m else "")


def table(results):
    """Markdown: per network and mode, each impl's peak and baseline, and fastconv/torch peak."""
    base = {(m["net"], m["mode"], m["impl"]): m["base"] for m in results}
    cell = {(m["net"], m["mode"], m["impl"]): m for m in results}
    lines = ["| network | mode | batch | fastconv peak MiB | torch peak MiB | fastconv/torch peak "
             "| fastconv RSS before MiB | torch RSS before MiB |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    batch = {(m["net"], m["mode"]): m["batch"] for m in results}
    for (net, mode), (ours, theirs) in ratios(results).items():
        rel = f"{ours / theirs:.2f}" if ours is not None and theirs else "-"
        lines.append(f"| {net} | {mode} | {batch[net, mode]} | {_peak_cell(cell.get((net, mode, 'fastconv')))} | "
                     f"{_peak_cell(cell.get((net, mode, 'torch')))} | {rel} | "
                     f"{_mib(base.get((net, mode, 'fastconv')))} | {_mib(base.get((net, mode, 'torch')))} |")
    return lines


def baseline(path=BASELINE, allocator=None):
    """(net, mode) -> fastconv peak MiB recorded in ``path`` under the heading
    ``## allocator: <allocator>`` (default: this process's :func:`cases.allocator_settings`,
    since glibc's settings move the peak); {} when the file or that heading is not there."""
    if allocator is None:
        from .cases import allocator_settings
        allocator = allocator_settings()
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    out, inside = {}, False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line == f"{ALLOCATOR_HEADING}{allocator}"
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if inside and len(cells) >= 4 and cells[1] in MODES:
            try:
                out.setdefault((cells[0], cells[1]), float(cells[3].split()[0]))
            except ValueError:
                continue
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", default="fastconv", choices=IMPLS)
    ap.add_argument("--net", default="lenet")
    ap.add_argument("--mode", default="train", choices=MODES)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--all", action="store_true", help="every cell, each in a fresh process: the "
                    "markdown table under its allocator heading")
    ap.add_argument("--repeat", type=int, default=1, help="with --all: runs per cell (median, range)")
    args = ap.parse_args(argv)
    from . import cases, networks
    if args.all:
        res = run(progress=lambda m: print(json.dumps(m), file=sys.stderr, flush=True), repeat=args.repeat)
        print(f"{ALLOCATOR_HEADING}{cases.allocator_settings()}\n")
        print("\n".join(table(res)))
        return
    if args.net not in networks.ARCHS:
        ap.error(f"unknown --net {args.net}: choose from {', '.join(networks.ARCHS)}")
    cases.configure_threads()
    print(json.dumps(measure(args.impl, args.net, args.mode, args.steps)))


if __name__ == "__main__":
    main()
