"""Data-parallel scaling on MPI: 1 rank x T threads against R ranks x T/R threads, lenet on MNIST.

    python -m benchmarks.distributed                      # 1x2 against 2x1, 3 interleaved rounds
    python -m benchmarks.distributed --configs 1x2,2x1,1x1 --images 6400 --rounds 5

Each configuration is a fresh ``mpiexec -n R python -m benchmarks.distributed --worker`` with
``NUMBA_NUM_THREADS=T`` per rank, run round-robin with the others. A worker trains the lenet of
``examples/train_mnist.py`` (SGD momentum, global batch ``--batch``) with
``Trainer(distributed=True)`` on the first ``--images`` MNIST training images for ``--epochs``
epochs and reports the last epoch's images/s (the first one includes loading the cached
kernels). It then times ``--steps`` more steps phase by phase (forward + backward, gradient
Allreduce, optimizer step) with the same pieces the Trainer uses, and the bare Allreduce of the
gradient buffer after a barrier (communication alone, no waiting for a slower rank).

The last table is on paper: bytes each rank sends per step for lenet and two ResNets, and the
efficiency expected on a 10 GbE link with MPICH's large-message Allreduce (reduce-scatter then
allgather: each rank sends and receives ``2 (R - 1) / R`` times the buffer).

MNIST comes from ``FASTCONV_DATA`` (or ``--data-dir``). Needs mpi4py and mpiexec
(``pip install fastconv[mpi]``).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: For the paper estimate: (network, parameters, forward GFLOP per image, counting a multiply-add
#: as 2). lenet as built by examples/train_mnist.py (its parameters are counted from the run:
#: conv1 0.45 + conv2 7.23 + fc 0.80 MFLOP); ResNet-20 for CIFAR-10 (He et al. 2016: 0.27 M
#: parameters, 41 M multiply-adds) and ResNet-18 for ImageNet (11.7 M, 1.82 G multiply-adds).
PAPER = [("lenet (MNIST)", None, 0.00848), ("ResNet-20 (CIFAR-10)", 272_474, 0.082),
         ("ResNet-18 (ImageNet)", 11_689_512, 3.64)]


def lenet(fc):
    return fc.Sequential(
        fc.Conv2d(1, 32, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2),
        fc.Conv2d(32, 64, 3, padding=1), fc.ReLU(), fc.MaxPool2d(2),
        fc.Flatten(), fc.Linear(7 * 7 * 64, 128), fc.ReLU(), fc.Dropout(0.5), fc.Linear(128, 10))


def worker(args):
    import fastconv as fc
    from fastconv import distributed as dist
    from fastconv.datasets import load_mnist, normalize
    from fastconv.optim import SGD

    rank, size = dist.init()
    (x, y), _ = load_mnist(args.data_dir, download=False)
    x, y = normalize(x[:args.images]), y[:args.images]
    fc.manual_seed(0)
    model = lenet(fc)
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = fc.Trainer(model, optimizer=opt, distributed=True)
    history = trainer.fit(x, y, epochs=args.epochs, batch_size=args.batch, seed=0, progress=False)

    # phase by phase, as Trainer._epoch does it
    allreduce = dist.GradientAllreduce(model.parameters())
    loss_fn = fc.losses.CrossEntropyLoss()
    order = np.random.default_rng(1).permutation(len(x))
    phases = {"compute": 0.0, "allreduce": 0.0, "update": 0.0}
    dist.barrier()
    start = time.perf_counter()
    for step, (idx, count) in enumerate(dist.batch_shards(order, args.batch, rank, size)):
        if step == args.steps:
            break
        t0 = time.perf_counter()
        opt.zero_grad()
        logits = model.forward(x[idx])
        loss_fn.forward(logits, y[idx])
        model.backward(loss_fn.backward() * (len(idx) / count))
        t1 = time.perf_counter()
        if size > 1:
            allreduce()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        phases["compute"] += t1 - t0
        phases["allreduce"] += t2 - t1
        phases["update"] += t3 - t2
    steps = min(args.steps, -(-len(x) // args.batch))
    wall = time.perf_counter() - start
    bare = 0.0
    if size > 1:
        dist.barrier()
        before = allreduce.seconds
        for _ in range(20):
            allreduce()
        bare = (allreduce.seconds - before) / 20
    report = {"images_per_second": history.images_per_second[-1], "steps": steps,
              "parameters": sum(p.size for p in model.parameters()), "step_ms": 1e3 * wall / steps,
              "bare_allreduce_ms": 1e3 * bare, "nbytes": allreduce.nbytes,
              **{f"{k}_ms": 1e3 * v / steps for k, v in phases.items()}}
    reports = dist.allgather(report)
    if rank == 0:
        print("RESULT " + json.dumps(reports), flush=True)


def run_config(ranks, threads, args):
    mpiexec = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec")
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    if args.data_dir:
        env["FASTCONV_DATA"] = args.data_dir
    command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "benchmarks.distributed", "--worker",
               "--images", str(args.images), "--epochs", str(args.epochs), "--batch", str(args.batch),
               "--steps", str(args.steps)]
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{ranks}x{threads} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def paper_table(lenet_params, gflops, link_gbit=10.0, latency_us=30.0):
    """Markdown rows: bytes per step and the expected efficiency on ``link_gbit`` Ethernet for 2,
    4, 8 and 16 machines, one rank each, 64 images per rank per step, computing at ``gflops``
    (and, for 8 machines, 50 times as fast: a GPU node's order of magnitude)."""
    link = link_gbit * 1e9 / 8 * 0.9  # bytes/s a TCP stream reaches, about 90% of the line rate
    rows = ["| network | parameters | gradient buffer | sent per rank per step (R=8) | compute per step "
            "| efficiency R=2 | R=4 | R=8 | R=16 | R=8, compute 50x faster |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, params, gflop in PAPER:
        params = lenet_params if params is None else params
        nbytes = 4 * params
        compute = 64 * 3 * gflop / gflops  # seconds: forward + backward is about 3 forwards
        cells = []
        for r, speedup in ((2, 1), (4, 1), (8, 1), (16, 1), (8, 50)):
            comm = 2 * (r - 1) / r * nbytes / link + 2 * (r - 1) * latency_us * 1e-6
            cells.append(f"{compute / speedup / (compute / speedup + comm):.0%}")
        rows.append(f"| {name} | {params / 1e6:.2f} M | {nbytes / 2**20:.2f} MiB | "
                    f"{2 * 7 / 8 * nbytes / 2**20:.2f} MiB | {compute * 1e3:.0f} ms | "
                    + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="1x2,2x1", help="RANKSxTHREADS, comma-separated")
    p.add_argument("--images", type=int, default=3200)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=64, help="global batch")
    p.add_argument("--steps", type=int, default=20, help="steps timed phase by phase")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-dir", default=os.environ.get("FASTCONV_DATA"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    results = {c: [] for c in configs}
    for round_ in range(args.rounds):
        for c in configs[round_ % len(configs):] + configs[:round_ % len(configs)]:
            results[c].append(run_config(*c, args))
    print(f"lenet, {args.images} MNIST images, global batch {args.batch}, epoch {args.epochs} of "
          f"{args.epochs}; medians of {args.rounds} interleaved rounds (min-max)\n")
    print("| ranks x threads | images/s (Trainer) | step (ms) | forward+backward | Allreduce | optimizer "
          "| Allreduce share | bare Allreduce (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for (ranks, threads), runs in results.items():
        def med(key, agg=np.mean):  # per run: over the ranks; then the median over the runs
            return float(np.median([agg([r[key] for r in run]) for run in runs]))
        ips = [run[0]["images_per_second"] for run in runs]
        share = np.median([np.mean([r["allreduce_ms"] for r in run]) / run[0]["step_ms"] for run in runs])
        cells = (f"{med('step_ms'):.1f}", f"{med('compute_ms', max):.1f}", f"{med('allreduce_ms'):.1f}",
                 f"{med('update_ms'):.1f}", f"{share:.0%}", f"{med('bare_allreduce_ms'):.2f}")
        print(f"| {ranks} x {threads} | {np.median(ips):.0f} ({min(ips):.0f}-{max(ips):.0f}) | "
              + " | ".join(cells) + " |")
    single = [c for c in configs if c[0] == 1] or configs[:1]
    runs = results[single[0]]
    lenet_params = runs[0][0]["parameters"]
    seconds_per_image = np.median([run[0]["compute_ms"] for run in runs]) / 1e3 / (args.batch / single[0][0])
    gflops = 3 * PAPER[0][2] / seconds_per_image
    print(f"\nOn paper: one rank per machine, 64 images per rank per step, 10 GbE at 90% of line rate and "
          f"30 us per message, MPICH's large-message Allreduce (each rank sends 2(R-1)/R of the buffer), no "
          f"overlap of communication with backward, every network computing at the {gflops:.1f} GFLOP/s "
          f"lenet reached here on {single[0][0]} x {single[0][1]}:\n")
    print(paper_table(lenet_params, gflops))


if __name__ == "__main__":
    main()
