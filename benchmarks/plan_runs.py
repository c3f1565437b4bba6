"""Compiled plans of the example networks with consecutive convs kept on the blocked layout
(:mod:`fastconv.kernels.cpu.blocked_run`) against the same plans with every conv a step of its
own (NCHW between them), at batch 256 and batch 1, float32.

Cells: the per-step plan's median ms; the plan with runs, median ms and the median (IQR) over
interleaved rounds of its ratio to the per-step plan.

``python -m benchmarks.plan_runs [--rounds 11] [--threads 2]``
"""
import argparse

import numpy as np

import fastconv
from fastconv import plan as plan_module

from .depthwise import cpu_model
from .networks import build
from .plan_chunks import interleaved

NETS = ("lenet", "best", "resnet", "mobilenet")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    fastconv.set_num_threads(args.threads)
    model_name, family = cpu_model()
    print(f"{model_name}, CPU family {family}; {args.threads} threads, {args.rounds} "
          "interleaved rounds; ms, median; with runs/per step median (IQR)\n")
    print("| network | batch | per step | with runs |")
    print("|---|---:|---:|---:|")
    saved = plan_module._Builder.blocked_run
    for net in NETS:
        model = build(net, seed=0).eval()
        for batch in (256, 1):
            x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28), dtype=np.float32)
            plan_module._Builder.blocked_run = lambda *a: None
            try:
                apart = fastconv.compile(model, x.shape)
            finally:
                plan_module._Builder.blocked_run = saved
            runs = fastconv.compile(model, x.shape)
            rounds = args.rounds if batch > 1 else args.rounds * 20
            cells = interleaved([apart, runs], x, rounds)
            print(f"| {net} | {batch} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
