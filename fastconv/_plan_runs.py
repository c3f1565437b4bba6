"""The part of :func:`fastconv.compile`'s builder that finds blocked runs: two or more convs in
a row (with their folded norms, ReLUs, 2x2 max pools, residual blocks and a final global average
pool) that the cpu tier keeps on the blocked layout from one to the next
(:mod:`fastconv.kernels.cpu.blocked_run`). :class:`fastconv.plan._Builder` inherits it.
"""
from .layers import (AdaptiveAvgPool2d, Conv2d, Dropout, Dropout2d, Identity, MaxPool2d,
                     Residual, Sequential)


class _Runs:
    """Methods of the plan builder (``self.tier``, ``self.dtype``, ``self.names``,
    ``self.folds``, ``self.weights``, ``self.fusable_relu`` are the builder's)."""

    def blocked_run(self, layers, i, shape):
        """``(run, next index, output shape)`` for two or more convs from ``layers[i]`` that
        the cpu tier runs on the blocked layout (dense, or depthwise with one filter a channel
        and a vector of channels; zero padding), each with its folded norm, a following ReLU
        and a 2x2 max pool (after the last, a global average pool too), and residual blocks of
        such convs (:meth:`run_residual`); Dropout and Identity between them skipped:
        :class:`~fastconv.kernels.cpu.blocked_run.Run` keeps the layout from one to the next.
        Else None."""
        if self.tier.__name__ != "fastconv.kernels.cpu":
            return None
        from .kernels.cpu import blocked_run
        convs, names, j, cur = [], [], i, shape
        while j < len(layers):
            m = layers[j]
            if type(m) in (Dropout, Dropout2d, Identity):
                j += 1
                continue
            step = self.run_residual(layers, j, cur) if type(m) is Residual else \
                self.run_conv(layers, j, cur, True)
            if step is None:
                break
            more, more_names, j, cur = step
            convs += more
            names += more_names
            if convs[-1].pool == "mean":  # the run's output is (N, C, 1, 1)
                break
        if len(convs) < 2:
            return None
        self.names += ["blocked run {"] + names + ["}"]
        return blocked_run.Run(shape, convs, self.dtype), j, cur

    def run_conv(self, layers, j, cur, pools):
        """``([Conv], [name], next index, output shape)`` of the conv at ``layers[j]`` in a
        blocked run, with its folded norm, a following ReLU and (with ``pools``) pool; None
        where it cannot join one."""
        from .kernels.cpu import blocked_run, depthwise_blocked
        m = layers[j]
        if type(m) is not Conv2d or m._explicit_pad() is not None or cur[1] == 0:
            return None
        depthwise = m.groups > 1
        if depthwise and not depthwise_blocked.applies(cur, m.weight.shape, self.dtype):
            return None
        used = 2 if self.folds(layers, j) else 1
        weight, bias = self.weights(layers, j, used)
        relu = j + used < len(layers) and self.fusable_relu(layers[j + used])
        out = tuple(m.output_shape(cur))
        j += used + relu
        pool = _run_pool(layers[j], out) if pools and j < len(layers) else None
        name = (f"{_conv_name(m, cur)} blocked" + (" +bn" if used == 2 else "")
                + (" +relu" if relu else "") + _POOL_NAMES[pool])
        conv = blocked_run.Conv(weight, bias, m.stride, m._pads, m.dilation, relu, depthwise,
                                pool)
        if pool:
            out = tuple(layers[j].output_shape(out))
            j += 1
        return [conv], [name], j, out

    def run_residual(self, layers, j, cur):
        """:meth:`run_conv`'s answer for the Residual at ``layers[j]`` (and a ReLU after it):
        its body's convs, the last adding the shortcut (the block's input, or a 1x1 conv of it
        at the stride of the body's first conv, a 3x3 conv with padding 1) before the ReLU.
        None where the block cannot join a run."""
        from .kernels.cpu import blocked_run
        m = layers[j]
        body = list(m.body.layers) if type(m.body) is Sequential else [m.body]
        convs, names, k, out = [], [], 0, cur
        while k < len(body):
            step = self.run_conv(body, k, out, False)
            if step is None:
                return None
            convs += step[0]
            names += step[1]
            k, out = step[2], step[3]
        if not convs or convs[-1].relu:
            return None
        first, w, b = convs[0], None, None
        if m.shortcut is not None:
            short = list(m.shortcut.layers) if type(m.shortcut) is Sequential else [m.shortcut]
            step = self.run_conv(short, 0, cur, False)
            if step is None or step[2] != len(short) or step[0][0].relu or \
                    step[0][0].depthwise or tuple(step[0][0].w.shape[2:]) != (1, 1) or \
                    step[0][0].stride != first.stride or any(step[0][0].pads) or \
                    tuple(first.w.shape[2:]) != (3, 3) or first.pads != (1, 1, 1, 1) or \
                    first.dilation != (1, 1) or first.depthwise:
                return None
            w, b, short_shape, short_name = step[0][0].w, step[0][0].b, step[3], step[1][0]
        else:
            short_shape, short_name = cur, "identity"
        if short_shape != out:
            return None
        relu = j + 1 < len(layers) and self.fusable_relu(layers[j + 1])
        convs[-1].residual = blocked_run.Shortcut(len(convs) - 1, w, b)
        convs[-1].relu = relu
        j += 1 + relu
        mean = j < len(layers) and _run_pool(layers[j], out) == "mean"
        if mean:  # a global average pool after the block ends the run
            convs[-1].pool = "mean"
            out = tuple(layers[j].output_shape(out))
            j += 1
        last = f"{names[-1]} +add" + (" +relu" if relu else "") + (_POOL_NAMES["mean"] if mean
                                                                   else "")
        names = ["residual {"] + names[:-1] + [f"}} shortcut {short_name}", last]
        return convs, names, j, out


_POOL_NAMES = {None: "", "max": " +max_pool 2x2", "mean": " +global avg_pool"}


def _run_pool(m, shape):
    """What a blocked run does with ``m`` after a conv of output ``shape`` (an entry of
    :data:`~fastconv.kernels.cpu.blocked_run.POOLS`): ``"max"`` for a MaxPool2d of 2x2 windows
    at stride 2 (no padding, dilation or indices, the planes halved rounding down), ``"mean"``
    for an AdaptiveAvgPool2d to 1x1, else None."""
    if type(m) is MaxPool2d and not m.return_indices and m._kernel == (2, 2) and \
            m._stride == (2, 2) and m._padding == (0, 0) and m._dilation == (1, 1) and \
            tuple(m.output_shape(shape)[2:]) == (shape[2] // 2, shape[3] // 2):
        return "max"
    if type(m) is AdaptiveAvgPool2d and tuple(m.output_shape(shape)[2:]) == (1, 1):
        return "mean"
    return None


def _conv_name(m, shape):
    """A Conv2d's step name: ``conv2d 16->32 3x3 stride 2 groups 16``."""
    return (f"conv2d {m.in_channels}->{m.out_channels} {m.kernel_size[0]}x{m.kernel_size[1]}"
            + (f" stride {m.stride[0]}" if max(m.stride) > 1 else "")
            + (f" groups {m.groups}" if m.groups > 1 else ""))
