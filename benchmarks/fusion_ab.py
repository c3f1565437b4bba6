"""The training step of the example networks with and without what can be switched off in one
process: the ReLUs that ``Sequential`` runs inside a neighbour (``--what relu``: after a batch
norm or a residual sum, before a max pool; ``--what residual``: the residual sum's only), the
cpu tier's one-pass SGD and Adam (``--what optim``: the NumPy rules instead), the depthwise
backward on the blocked layout (``--what depthwise``: the NCHW plane kernels instead), or all
of them (``--what all``). The two states alternate round by round on the same model
(``benchmarks.networks``' training rows: batch 64, each network's optimizer).

Cells: the median step of each state (ms) and the median (IQR) over rounds of on/off.

    python -m benchmarks.fusion_ab [--what all] [--rounds 11] [--nets lenet,best,resnet,mobilenet]
"""
import argparse
import time

import numpy as np

from .depthwise import cpu_model
from .networks import _fastconv_case


def switches(what):
    """(turn on, turn off) callables for ``what``."""
    from fastconv.kernels import _host_optim, cpu
    from fastconv.kernels.cpu import depthwise, depthwise_blocked
    from fastconv.layers import container
    runs_relu = container._runs_relu
    on = {"relu": (container, "_runs_relu", runs_relu),
          "residual": (container, "_runs_relu", runs_relu),
          "sgd": (cpu, "sgd_update", cpu.sgd_update),
          "adam": (cpu, "adam_update", cpu.adam_update),
          "depthwise": (depthwise_blocked, "backward", depthwise_blocked.backward)}
    off = {"relu": lambda layer, nxt: None,
           "residual": lambda layer, nxt: (None if isinstance(layer, container.Residual)
                                           else runs_relu(layer, nxt)),
           "sgd": _host_optim.sgd_update, "adam": _host_optim.adam_update,
           "depthwise": depthwise._plane_backward}
    keys = {"relu": ("relu",), "residual": ("residual",), "optim": ("sgd", "adam"),
            "depthwise": ("depthwise",), "all": ("relu", "sgd", "adam", "depthwise")}[what]

    def state(enabled):
        for key in keys:
            module, name, value = on[key]
            setattr(module, name, value if enabled else off[key])
    return (lambda: state(True)), (lambda: state(False))


def block(step, seconds):
    """Seconds a step, over at least ``seconds`` after two untimed steps."""
    step()
    step()
    t0, count = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        step()
        count += 1
    return (time.perf_counter() - t0) / count


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", choices=("relu", "residual", "optim", "depthwise", "all"),
                        default="all")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seconds", type=float, default=0.4, help="timed seconds a block")
    parser.add_argument("--nets", default="lenet,best,resnet,mobilenet")
    args = parser.parse_args(argv)
    import fastconv
    fastconv.set_num_threads(2)
    turn_on, turn_off = switches(args.what)
    steps = {net: _fastconv_case(net).fn for net in args.nets.split(",")}
    for step in steps.values():
        step()  # compile
    model_name, family = cpu_model()
    print(f"{model_name}, CPU family {family}; 2 threads, {args.rounds} interleaved rounds; "
          f"switched: {args.what}\n")
    print("| network | off ms | on ms | on/off median (IQR) |\n|---|---:|---:|---:|")
    try:
        for net, step in steps.items():
            times = []
            for r in range(args.rounds):
                pair = {}
                for enabled in ((True, False) if r % 2 else (False, True)):
                    (turn_on if enabled else turn_off)()
                    pair[enabled] = block(step, args.seconds)
                times.append((pair[True], pair[False]))
            on, off = np.array(times).T
            q = np.percentile(on / off, [25, 50, 75])
            print(f"| {net} | {np.median(off) * 1e3:.2f} | {np.median(on) * 1e3:.2f} | "
                  f"{q[1]:.3f} ({q[0]:.3f}-{q[2]:.3f}) |", flush=True)
    finally:
        turn_on()


if __name__ == "__main__":
    main()
