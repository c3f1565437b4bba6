"""Per-layer profile of one training step: each layer's forward and backward in fastconv beside
the same layer of the PyTorch twin (:func:`benchmarks.networks.torch_twin`), same shapes and
weights, plus the optimizer's update and the whole step.

Every leaf layer is timed on its own, on the input it gets in the network at batch
:data:`benchmarks.networks.TRAIN_BATCH` (recorded from one forward of the whole model);
``fwd`` is the layer's forward in training mode, ``bwd`` its backward from a kept forward (dx and
the parameter gradients; PyTorch's autograd with ``retain_graph``). A Residual's add is its own
row (``<name>.add``: the add forward, the sum of the branch gradients backward). ``step`` rows
time the whole step as :mod:`benchmarks.networks` does; what the step costs beyond the sum of
its rows is Python and glue. fastconv and PyTorch run interleaved (report.interleave, the same
thread count for both); cells are medians over rounds, with min-max over rounds in brackets.

    python -m benchmarks.layers --arch mobilenet [--rounds 7] [--top 12]
"""
import argparse

import numpy as np

from . import cases, networks
from .cases import torch
from .report import interleave, stat


def _leaves(module, prefix=""):
    """``[(name, module)]`` of the leaf layers and the Residual blocks, in forward order."""
    out = []
    children = module.named_children() if hasattr(module, "named_children") else []
    if type(module).__name__ == "Residual":
        out.append((prefix + "add", module))
    for name, child in children:
        out.extend(_leaves(child, f"{prefix}{name}."))
    if not children:
        out.append((prefix.rstrip("."), module))
    return out


def _kind(layer):
    """The row's kind: the class name, convolutions told apart (depthwise, 1x1, 3x3, stride)."""
    kind = type(layer).__name__
    if kind != "Conv2d":
        return kind
    if layer.groups > 1:
        kind += " depthwise" if layer.groups == layer.in_channels else " grouped"
    fh, fw = layer.kernel_size
    return f"{kind} {fh}x{fw}" + (f"/{layer.stride[0]}" if max(layer.stride) > 1 else "")


def _record_inputs(model, x):
    """One forward of ``model`` (train mode) with every leaf's input recorded: name -> array;
    a Residual's add records its two summands."""
    from fastconv import functional as F
    seen, patched = {}, []
    for name, layer in _leaves(model):
        if name.endswith("add"):
            continue

        def fwd(x, _layer=layer, _name=name, _orig=layer.forward):
            seen[_name] = x
            return _orig(x)
        layer.forward = fwd
        patched.append(layer)
    adds = []
    orig_add = F.add
    F.add = lambda a, b, **k: (adds.append((a, b)), orig_add(a, b, **k))[1]
    try:
        model.forward(x)
    finally:
        F.add = orig_add
        for layer in patched:
            del layer.forward
    names = [n for n, _ in _leaves(model) if n.endswith("add")]
    seen.update(zip(names, adds))
    return seen


def _fastconv_pair(layer, name, x):
    """(fwd, bwd) callables of one fastconv leaf (or Residual add) on input ``x``."""
    from fastconv import functional as F
    if name.endswith("add"):
        a, b = x
        return (lambda: F.add(a, b)), (lambda: F.add(a, b))
    out = layer.forward(x)
    dy = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
    layer.forward(x)
    cache = layer._caches[-1]

    def bwd():
        layer._caches.append(cache)
        layer._backward(dy, True)
    return (lambda: layer.forward(x)), bwd


def _torch_pair(layer, name, x):
    if name.endswith("add"):
        a, b = (torch.from_numpy(np.array(v)).requires_grad_() for v in x)
        out = a + b
        dy = torch.ones_like(out)
        return (lambda: a + b), (lambda: out.backward(dy, retain_graph=True))
    xt = torch.from_numpy(np.array(x)).requires_grad_()
    out = layer(xt)
    dy = torch.from_numpy(np.random.default_rng(1).standard_normal(tuple(out.shape)).astype(np.float32))
    return (lambda: layer(xt)), (lambda: out.backward(dy, retain_graph=True))


def _torch_module(twin, name):
    mod = twin
    for part in name.split("."):
        mod = getattr(mod, part) if part in ("body", "shortcut") else mod[int(part)]
    return mod


def _optimizer_row(arch, model, twin, x, rounds, min_time, settle):
    """The optimizer's update alone (every parameter holding a gradient from one step)."""
    from fastconv import losses, optim
    kind, kwargs = networks.optimizer_spec(arch)
    opt = getattr(optim, kind)(model.parameters(), **kwargs)
    y = np.zeros(len(x), dtype=np.int64)
    loss = losses.CrossEntropyLoss()
    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    topt = getattr(torch.optim, kind)(twin.parameters(), **kwargs)
    torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    t = interleave({"fastconv": cases.Case(opt.step, 1.0), "torch": cases.Case(topt.step, 1.0)},
                   rounds, min_time, settle)
    return ("optimizer", kind, "step", stat(t["fastconv"]), stat(t["torch"]))


def profile(arch, rounds, min_time, settle):
    """Rows ``(name, layer, pass, fastconv Stat, torch Stat)`` of ``arch``'s training step."""
    model = networks.build(arch)
    model.train()
    twin = networks.torch_twin(networks.build(arch)).train()
    x = np.random.default_rng(2).standard_normal((networks.TRAIN_BATCH, 1, 28, 28), dtype=np.float32)
    inputs = _record_inputs(model, x)
    rows = []
    for name, layer in _leaves(model):
        tl = twin if name == "add" else _torch_module(twin, name.rsplit(".", 1)[0] if name.endswith(".add")
                                                      else name)
        label = "add" if name.endswith("add") else _kind(layer)
        fc, th = _fastconv_pair(layer, name, inputs[name]), _torch_pair(tl, name, inputs[name])
        for i, pass_ in enumerate(("fwd", "bwd")):
            t = interleave({"fastconv": cases.Case(fc[i], 1.0), "torch": cases.Case(th[i], 1.0)},
                           rounds, min_time, settle)
            rows.append((name, label, pass_, stat(t["fastconv"]), stat(t["torch"])))
    rows.append(_optimizer_row(arch, model, twin, x, rounds, min_time, settle))
    steps = {i: cases.Case(networks.e2e_case(i, arch).fn, 1.0) for i in ("fastconv", "torch")}
    t = interleave(steps, rounds, min_time, settle)
    rows.append(("step", "whole step", "all", stat(t["fastconv"]), stat(t["torch"])))
    return rows


def _ms(s):
    return f"{s.median * 1e3:.3f} [{s.lo * 1e3:.3f}-{s.hi * 1e3:.3f}]"


def table(rows, top):
    """Markdown: every row in order, then the ``top`` largest fastconv - torch differences."""
    lines = ["| layer | kind | pass | fastconv ms | torch ms | ratio |", "|---|---|---|---:|---:|---:|"]
    for name, label, pass_, a, b in rows:
        lines.append(f"| {name} | {label} | {pass_} | {_ms(a)} | {_ms(b)} | {a.median / b.median:.2f} |")
    layer_rows = [r for r in rows if r[0] != "step"]
    total = [sum(r[k].median for r in layer_rows) for k in (3, 4)]
    lines.append(f"| sum of rows | | | {total[0] * 1e3:.3f} | {total[1] * 1e3:.3f} | "
                 f"{total[0] / total[1]:.2f} |")
    by_kind = {}
    for _, label, pass_, a, b in layer_rows:
        k = by_kind.setdefault((label, pass_), [0.0, 0.0])
        k[0] += a.median
        k[1] += b.median
    lines += ["", "By kind, largest fastconv time first (ms: fastconv, torch, excess):", ""]
    for (label, pass_), (a, b) in sorted(by_kind.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"- {label} {pass_}: {a * 1e3:.2f} vs {b * 1e3:.2f} ({(a - b) * 1e3:+.2f})")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.layers", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="mobilenet", choices=networks.ARCHS)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.01, help="seconds per timed block")
    ap.add_argument("--settle", type=float, default=0.03, help="untimed seconds before each block")
    ap.add_argument("--top", type=int, default=12, help="kinds listed in the summary")
    ap.add_argument("--threads", type=int, help="threads for both (default FASTCONV_BENCH_THREADS, else 2)")
    args = ap.parse_args(argv)
    if torch is None:
        raise SystemExit("benchmarks.layers compares against PyTorch, which is not installed")
    n = cases.configure_threads(args.threads)
    print(f"{args.arch}: training step at batch {networks.TRAIN_BATCH}, {n} threads, "
          f"{args.rounds} rounds\n")
    print(table(profile(args.arch, args.rounds, args.min_time, args.settle), args.top))


if __name__ == "__main__":
    main()
