"""The report's main table as a bar chart: fastconv cpu time / PyTorch time per conv2d case.

``python -m benchmarks.report --plot speed.png`` draws it from the run it has just made;
``python -m benchmarks.report --from-markdown results.md --plot speed.png`` from a saved report,
without timing anything. Bars are the median per-round ratios, whiskers their inter-quartile
range; below the line at 1.0 fastconv is faster. Needs matplotlib (``pip install fastconv[plot]``).
"""
import re
from collections import namedtuple

from fastconv.viz import new_figure, save_figure

Ratio = namedtuple("Ratio", "shape pass_ median q1 q3")
Ratio.__doc__ = "One conv2d case: shape letter, pass (fwd, bwd, fwdbwd), median and quartiles of cpu/torch time."

PASS_COLOURS = {"fwd": "tab:blue", "bwd": "tab:orange", "fwdbwd": "tab:green"}
PASS_NAMES = {"fwd": "forward", "bwd": "backward (dx, dw, db)", "fwdbwd": "forward + backward"}
_CELL = re.compile(r"^\s*([0-9.]+)(?:\s*\(([0-9.]+)-([0-9.]+)\))?\s*$")


def require():
    """Raise the clear ImportError now if matplotlib is missing (before a long benchmark run)."""
    new_figure((1, 1), "benchmarks.report --plot")


def from_rows(rows):
    """:class:`Ratio` for each conv row of the report (``report.Row``) that has a PyTorch ratio."""
    return [Ratio(r.shape, r.pass_, r.ratio.median, r.ratio.q1, r.ratio.q3)
            for r in rows if r.kind == "conv" and r.ratio is not None]


def from_markdown(path):
    """Ratios and header facts from a report written by ``python -m benchmarks.report``.

    Returns
    -------
    ratios : list of Ratio
        The conv2d table's ``cpu/torch time`` column, in table order (cases without a PyTorch
        time, ``-``, are left out).
    info : dict
        ``machine``, ``torch`` and ``date`` from the header (absent ones missing), ``shapes``:
        shape letter -> its description (``"64,1,28x28,32,3x3,s1,p1"``).
    """
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    info = {"shapes": {}}
    for line in lines:
        date = re.match(r"^## fastconv benchmarks \((.+)\)", line)
        if date:
            info["date"] = date.group(1)
        fact = re.match(r"^- (machine|torch): (.+)$", line)
        if fact:
            info[fact.group(1)] = fact.group(2).strip()
    start = next((i for i, line in enumerate(lines) if line.startswith("### conv2d")), None)
    if start is None:
        raise ValueError(f"{path}: no '### conv2d' section (is it a benchmarks.report markdown file?)")
    shapes = re.search(r":\s*(.+)\)\s*$", lines[start])
    for part in shapes.group(1).split(";") if shapes else []:
        name, _, desc = part.strip().partition(" ")
        info["shapes"][name] = desc
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif table or line.startswith("#"):
            break
    if len(table) < 3 or "cpu/torch time" not in table[0]:
        raise ValueError(f"{path}: the conv2d section has no table with a 'cpu/torch time' column")
    col = table[0].index("cpu/torch time")
    ratios = []
    for cells in table[2:]:
        cell = _CELL.match(cells[col])
        if cell:
            med = float(cell.group(1))
            q1, q3 = (float(cell.group(2)), float(cell.group(3))) if cell.group(2) else (med, med)
            ratios.append(Ratio(cells[0], cells[1], med, q1, q3))
    if not ratios:
        raise ValueError(f"{path}: the conv2d table has no cpu/torch ratios")
    return ratios, info


def plot_speed(ratios, path, machine="unknown CPU", torch=None, date=None, shapes=None, figsize=(11, 5),
               dpi=100):
    """Draw ``ratios`` (list of :class:`Ratio`) as grouped bars, one group per shape; returns ``path``.

    ``machine`` (the report's machine line: CPU model, logical CPUs, OS) and ``torch`` (its
    version) go in the title; ``shapes`` (letter -> description) labels the groups.
    """
    if not ratios:
        raise ValueError("plot_speed: no ratios to draw")
    shapes = shapes or {}
    order = list(dict.fromkeys(r.shape for r in ratios))
    passes = [p for p in PASS_COLOURS if any(r.pass_ == p for r in ratios)]
    passes += sorted({r.pass_ for r in ratios} - set(passes))
    width = 0.8 / len(passes)
    fig = new_figure(figsize, "benchmarks.report --plot")
    ax = fig.subplots()
    for k, pass_ in enumerate(passes):
        mine = [r for r in ratios if r.pass_ == pass_]
        xs = [order.index(r.shape) + (k - (len(passes) - 1) / 2) * width for r in mine]
        meds = [r.median for r in mine]
        spread = [[max(0.0, r.median - r.q1) for r in mine], [max(0.0, r.q3 - r.median) for r in mine]]
        ax.bar(xs, meds, width, yerr=spread, capsize=2, color=PASS_COLOURS.get(pass_, "0.5"),
               label=PASS_NAMES.get(pass_, pass_), error_kw={"elinewidth": 0.8, "ecolor": "0.25"})
        for x, r in zip(xs, mine):
            ax.text(x, r.q3 + 0.03, f"{r.median:.2f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="PyTorch's time (1.0)")
    ax.set_xticks(range(len(order)), [f"{s}\n{shapes[s]}" if s in shapes else s for s in order], fontsize=8)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_ylim(0, max(r.q3 for r in ratios) * 1.15)
    ax.set_ylabel("fastconv cpu time / PyTorch time\n(below 1: fastconv is faster)")
    ax.set_xlabel("conv2d case: N,C,HxW,K,FxF,stride,pad")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    versus = f"PyTorch {torch}" if torch else "PyTorch"
    when = f" ({date})" if date else ""
    ax.set_title(f"fastconv cpu tier against {versus}, conv2d, median (IQR) of interleaved rounds\n"
                 f"{machine}{when}", fontsize=10)
    return save_figure(fig, path, dpi)
