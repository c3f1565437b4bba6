"""A compiled inference plan: :func:`compile` walks a model once for one input shape and dtype and
turns it into a flat list of steps that call the host tier's kernels directly.

Why: at batch 1 most of a forward pass is Python: each layer checks its input, F validates the
arguments again, resolves the tier and wraps the result in a cache. A plan does all of that once,
at compile time (every shape is known then, so every check has been made), and each call checks
only that the input has the compiled shape and dtype.

What a plan does to the network (results equal the model's in eval mode up to rounding in the
model's dtype; exactly, without folding, where the model's convs took the same path):

- On the cpu tier two or more convs in a row (dense, or depthwise with one filter a channel and
  at least a vector of channels, each with its folded norm and ReLU) are kept on the blocked
  layout from one to the next (:mod:`fastconv.kernels.cpu.blocked_run`): each image goes
  through all of them in one compiled call, NCHW only before the first and after the last.
- Otherwise on the cpu tier every dense Conv2d runs the blocked path
  (:mod:`fastconv.kernels.cpu.blocked`) with its weights reordered once, at compile time, or,
  for a batch through an unpadded stride-1 1x1 layer, the pointwise path
  (:mod:`fastconv.kernels.cpu.pointwise`); a depthwise conv with one filter a channel and a
  vector of channels runs :mod:`fastconv.kernels.cpu.depthwise_blocked`, prepared alike; a
  ReLU after the conv (and, for the last conv of a Residual's body, the shortcut's output) is
  applied to each image as it is stored.
- Conv2d + BatchNorm2d and Linear + BatchNorm1d are folded (:mod:`fastconv.fuse`) when ``fold``
  is true; other BatchNorms in eval mode run the tier's kernel with the running statistics.
- On the cpu tier any depthwise conv's ReLU is applied as it stores its output; other ReLUs run the
  tier's ReLU kernel (one pass on all threads). A residual add after a body that does not end in
  a conv goes into the body's output when the plan owns it (made in this call, read by nothing
  else).
- Concat runs its branches and joins their outputs.
- A ReLU right before a MaxPool2d runs after it, on the pooled array (max and ReLU commute, so
  the result is the same to the bit, with a quarter of the ReLU's work at a 2x2 pool). On the
  cpu tier a 2x2 max pool computes the maxima alone, without the indices backward would need.
- On the cpu tier a batch of more than :data:`CHUNK` images runs in chunks of that many, each
  chunk through the whole network in one thread, unless a step may mix the images of a batch
  (a module the plan does not know, a concat along the batch).
- Dropout, Dropout2d and Identity are no steps (eval mode); Flatten is a reshape (a view).
- The weights are copied at compile time: compile again after training or loading weights.
- A module the plan does not know (a user's Module, PReLU, softmax, pads, ...) runs its own
  ``forward`` under :func:`fastconv.layers.module.eval_mode` and :func:`fastconv.no_grad` (still
  correct, with the usual per-layer checks).
"""
import math

import numpy as np

from ._backend import get_backend, is_device_array, kernels
from ._grad import no_grad
from ._plan_runs import _conv_name, _Runs
from .fuse import fold, foldable, uses
from .functional.conv import conv_kernels
from .layers import (ELU, GELU, SELU, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d,
                     Concat, Conv2d, Dropout, Dropout2d, Flatten, Hardtanh, Identity, LeakyReLU,
                     Linear, MaxPool2d, ReLU, Residual, Sequential, Sigmoid, SiLU, Softplus, Tanh)
from .layers.conv import PAD_MODES
from .layers.module import Module, eval_mode

__all__ = ["compile", "Plan"]

#: Activations whose layer calls ``F.<name>(x, *layer._args())``: the plan calls the same.
_INPUT_ACTIVATIONS = (LeakyReLU, ELU, SELU, GELU, SiLU, Softplus, Hardtanh)


class Plan:
    """A compiled inference pass of a model for one input shape and dtype (see :func:`compile`).

    ``plan(x)`` returns the model's output for x as a new array. ``plan.steps`` names the steps
    (``"conv2d 1->32 3x3 +bn"``, ``"relu"``, ...); ``input_shape``, ``output_shape`` and ``dtype``
    are what it was compiled for.
    """

    def __init__(self, run, steps, input_shape, output_shape, dtype):
        self._run = run
        self.steps = steps
        self.input_shape, self.output_shape, self.dtype = input_shape, output_shape, dtype

    def __call__(self, x):
        if not isinstance(x, np.ndarray):
            if is_device_array(x):
                raise TypeError("plan: x is a CUDA device array; a plan runs on host (NumPy) arrays")
            x = np.asarray(x)
        if x.shape != self.input_shape or x.dtype != self.dtype:
            raise ValueError(f"plan: compiled for input shape {self.input_shape} {self.dtype}, "
                             f"got shape {tuple(x.shape)} {x.dtype}; compile the model again for "
                             "that shape")
        return self._run(x if x.flags.c_contiguous else np.ascontiguousarray(x))

    def __repr__(self):
        body = "".join(f"\n  {s}" for s in self.steps)
        return f"Plan(input {self.input_shape} {self.dtype} -> {self.output_shape}:{body}\n)"


def _chain(fns):
    """One callable running ``fns`` in order (no loop for one or two steps)."""
    if not fns:
        return lambda x: x
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        f, g = fns
        return lambda x: g(f(x))

    def run(x):
        for f in fns:
            x = f(x)
        return x
    return run


class _Builder(_Runs):
    """Turns modules into steps: each ``compile`` returns (callables, output shape, owned), where
    ``owned`` says whether the output is an array this call made and nothing else reads (so a
    later in-place step may overwrite it). Classes are matched exactly: a subclass may override
    ``forward``, so it runs its own (:meth:`fallback`)."""

    def __init__(self, tier, dtype, fold_norms, counts):
        self.tier, self.dtype, self.fold, self.counts = tier, dtype, fold_norms, counts
        self.relu = tier.relu  # the model's ReLU: one pass (the cpu tier's on all threads)
        self.names = []
        self.per_image = True  # every step computes each image from that image alone

    def array(self, a):
        return None if a is None else np.array(a, dtype=self.dtype, order="C")  # a copy

    def compile(self, m, shape, owned):
        kind = type(m)
        if kind is Sequential:
            return self.sequence(m.layers, shape, owned)
        if kind is Residual:
            return self.residual(m, shape, False) + (True,)
        if kind is Concat:
            return self.concat(m, shape)
        if kind in (Dropout, Dropout2d, Identity):  # identities in eval mode
            return [], shape, owned
        out_shape = tuple(m.output_shape(shape))
        step = self.step(m, shape, out_shape, owned)
        if step is None:
            return self.fallback(m, shape, out_shape)
        fn, name, fresh = step
        self.names.append(name)
        return [fn], out_shape, fresh

    def sequence(self, layers, shape, owned):
        fns, i = [], 0
        while i < len(layers):
            m = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            kept = self.blocked_run(layers, i, shape)
            if kept is not None:  # convs kept on the blocked layout from one to the next
                run, i, shape = kept
                fns.append(run)
                owned = True
                continue
            conv = self.conv_step(layers, i, shape)
            if conv is not None:  # a conv, its folded norm and a following ReLU: one step
                run, name, used, shape = conv
                relu = i + used < len(layers) and self.fusable_relu(layers[i + used])
                self.names.append(name + (" +relu" if relu else ""))
                fns.append((lambda x, run=run: run(x, None, True)) if relu else run)
                owned, i = True, i + used + relu
                continue
            if type(m) is Residual:
                relu = nxt is not None and self.fusable_relu(nxt)
                part, shape = self.residual(m, shape, relu)
                fns += part
                owned, i = True, i + 1 + relu
                continue
            if type(m) is ReLU and type(nxt) is MaxPool2d and not nxt.return_indices:
                # max and ReLU commute exactly (ReLU is monotone): ReLU the pooled, smaller array
                for layer in (nxt, m):
                    part, shape, owned = self.compile(layer, shape, owned)
                    fns += part
                i += 2
                continue
            part, shape, owned = self.compile(m, shape, owned)
            fns += part
            i += 1
        return fns, shape, owned

    def weights(self, layers, i, used):
        """``(weight, bias)`` copies of the Conv2d or Linear at ``layers[i]``, with the norm
        after it folded in when ``used`` is 2."""
        m = layers[i]
        if used == 2:
            return tuple(self.array(a) for a in fold(m, layers[i + 1]))
        return self.array(m.weight.data), self.array(None if m.bias is None else m.bias.data)

    def fusable_relu(self, m):
        return type(m) is ReLU and self.counts[id(m)] == 1

    def folds(self, layers, i):
        """Whether ``layers[i + 1]`` is a norm the plan folds into ``layers[i]``."""
        return self.fold and i + 1 < len(layers) and foldable(layers[i], layers[i + 1]) and \
            self.counts[id(layers[i])] == 1 and self.counts[id(layers[i + 1])] == 1

    def conv_step(self, layers, i, shape):
        """``(run, name, layers used, output shape)`` for a Conv2d or Linear at ``layers[i]``
        (with the norm after it folded in where :meth:`folds`), else None; for a conv,
        ``run(x, residual, relu)`` is the conv with its fused store (:meth:`conv`)."""
        m = layers[i]
        if type(m) not in (Conv2d, Linear):
            return None
        out_shape = tuple(m.output_shape(shape))
        used = 2 if self.folds(layers, i) else 1
        weight, bias = self.weights(layers, i, used)
        run, name = (self.conv if type(m) is Conv2d else self.linear)(m, shape, weight, bias)
        return run, name + (" +bn" if used == 2 else ""), used, out_shape

    def residual(self, m, shape, relu):
        """``(steps, output shape)`` of a Residual (and of the ReLU after it, with ``relu``):
        the shortcut runs first, then the body, whose last conv adds the shortcut's output (and
        applies the ReLU) in its store; a body that does not end in a conv adds after it."""
        self.names.append("residual {")
        layers = list(m.body.layers) if type(m.body) is Sequential else [m.body]
        start = next((i for i in (len(layers) - 2, len(layers) - 1) if i >= 0 and
                      type(layers[i]) is Conv2d and i + 1 + self.folds(layers, i) == len(layers)),
                     None)
        if start is None:
            body, out_shape, body_owned = self.sequence([m.body], shape, False)
        else:
            body, head_shape, _ = self.sequence(layers[:start], shape, False)
            run_tail, tail_name, _, out_shape = self.conv_step(layers, start, head_shape)
        if m.shortcut is not None:
            self.names.append("} shortcut {")
            short, short_shape, _ = self.sequence([m.shortcut], shape, False)
        else:
            short, short_shape = [], shape
        m._check(out_shape, short_shape)
        run_body, run_short = _chain(body), _chain(short)
        fused = " +add" + (" +relu" if relu else "")
        if start is not None:
            self.names.append(f"}} {tail_name}{fused}")
            return [lambda x: run_tail(run_body(x), run_short(x), relu)], out_shape
        self.names.append(f"}} add{' +relu' if relu else ''}{' in place' if body_owned else ''}")

        def add(x):
            y = run_body(x)
            y = np.add(y, run_short(x), out=y) if body_owned else y + run_short(x)
            return self.relu(y) if relu else y
        return [add], out_shape

    def concat(self, m, shape):
        runs, shapes = [], []
        for i, branch in enumerate(m.branches):
            self.names.append(("concat {" if i == 0 else "} branch {"))
            fns, out_shape, _ = self.sequence([branch], shape, False)
            runs.append(_chain(fns))
            shapes.append(out_shape)
        axis = m._check(shapes)
        self.per_image &= axis != 0
        self.names.append(f"}} concat dim {axis}")
        out_shape = tuple(m.output_shape(shape))
        return [lambda x: np.concatenate([run(x) for run in runs], axis)], out_shape, True

    def fallback(self, m, shape, out_shape):
        self.names.append(f"{m._label()} (its own forward)")
        self.per_image = False  # a user's module may mix the images of a batch

        def run(x):
            with eval_mode(), no_grad():
                return m.forward(x)
        return [run], out_shape, False  # it may hand back its input or an array it keeps

    def conv(self, m, shape, weight, bias):
        """A Conv2d with these weights as ``(run, name)``: ``run(x, residual=None, relu=False)``
        is the convolution, plus ``residual``, then ReLU. On the cpu tier every dense conv takes
        the blocked path, prepared once (:class:`~fastconv.kernels.cpu.blocked.Forward`: the
        weights reordered now, the residual and ReLU applied to each image as it is stored),
        whatever the tier's rule picks per call: the rule weighs per-call costs (packing the
        weights, Winograd's weight transform) that a plan pays once; a batch through an
        unpadded stride-1 1x1 conv takes the pointwise path (a GEMM an image, ReLU in its
        store). Other convs call the tier's depthwise (on the cpu tier with ReLU in its store)
        or grouped kernel (the rule of :func:`fastconv.functional.conv2d`), after an explicit
        pad for padding modes other than zeros, and add and clamp afterwards."""
        stride, dilation, pads = m.stride, m.dilation, m._pads
        pad = m._explicit_pad()
        name = _conv_name(m, shape)
        cpu = self.tier.__name__ == "fastconv.kernels.cpu" and pad is None and shape[1] > 0
        if cpu and m.groups == 1:
            from .kernels.cpu import blocked, pointwise
            if shape[0] > 1 and pointwise.applies(weight.shape, stride, pads):
                # a GEMM per image beats the prepared blocked kernel on batches (mobilenet b256:
                # 30.2 vs 34.9 ms), not at batch 1 (0.297 vs 0.286 ms: BLAS's per-call costs)
                return self.fused(lambda x, relu: pointwise.forward(x, weight, bias, relu)), \
                    name + " pointwise"
            return blocked.Forward(shape, weight, bias, stride, pads, dilation), name + " blocked"
        forward, _, extra = conv_kernels(self.tier, shape[1], m.groups)
        if cpu and forward is self.tier.depthwise_conv2d:  # ReLU in the depthwise store
            from .kernels.cpu import depthwise_blocked
            from .kernels.cpu.depthwise import forward as depthwise
            if depthwise_blocked.applies(shape, weight.shape, weight.dtype):  # prepared once
                return self.fused(depthwise_blocked.Forward(shape, weight, bias, stride, pads,
                                                            dilation)), name + " blocked"
            return self.fused(lambda x, relu: depthwise(x, weight, bias, stride, pads, dilation,
                                                        relu)), name
        if pad is not None:
            mode, tier_pad, pads = PAD_MODES[m.padding_mode], self.tier.pad, (0, 0, 0, 0)

            def conv(x):
                return forward(tier_pad(x, pad, mode, 0.0), weight, bias, stride, pads, dilation,
                               **extra)[0]
        else:
            def conv(x):
                return forward(x, weight, bias, stride, pads, dilation, **extra)[0]
        return self.fused(self.then_relu(conv)), name

    def fused(self, layer):
        """``run(x, residual=None, relu=False)`` from ``layer(x, relu)``, which applies ReLU to
        its output when asked (in its store, where the kernel can): with a residual, the layer's
        output, plus the residual, then ReLU."""
        def run(x, residual=None, relu=False):
            if residual is None:
                return layer(x, relu)
            y = layer(x, False)
            y += residual
            return self.relu(y) if relu else y
        return run

    def then_relu(self, fn):
        """``layer(x, relu)`` for a kernel call ``fn(x)`` with no ReLU of its own."""
        return lambda x, relu: self.relu(fn(x)) if relu else fn(x)

    def linear(self, m, shape, weight, bias):
        """A Linear with these weights as ``(run, name)``, ``run`` as :meth:`conv`'s."""
        linear = self.tier.linear
        return self.fused(self.then_relu(lambda x: linear(x, weight, bias))), \
            f"linear {m.in_features}->{m.out_features}"

    def step(self, m, shape, out_shape, owned):
        """``(callable, name, output owned)`` for a module the plan runs itself, else None."""
        tier = self.tier
        kind = type(m)
        if kind in (Conv2d, Linear):
            return self.conv_step([m], 0, shape)[:2] + (True,)
        if kind is ReLU:
            return tier.relu, "relu", True
        if kind in (Sigmoid, Tanh):
            return (tier.sigmoid if kind is Sigmoid else tier.tanh), kind.__name__.lower(), True
        if kind in _INPUT_ACTIVATIONS:
            fn, args = type(m)._fn, m._args()
            return (lambda x: fn(x, *args)), m._label(), True
        if kind in (BatchNorm1d, BatchNorm2d) and m.running_mean is not None:
            return self.batch_norm(m, shape)
        if kind is MaxPool2d and not m.return_indices:
            args = (m._kernel, m._stride, m._padding, m._dilation, bool(m.ceil_mode))
            if tier.__name__ == "fastconv.kernels.cpu":  # the maxima alone: no switches
                from .kernels.cpu.pooling import max_pool2d_values
                return (lambda x: max_pool2d_values(x, *args)), m._label(), True
            pool = tier.max_pool2d
            return (lambda x: pool(x, *args)[0]), m._label(), True
        if kind is AvgPool2d:
            kernel, stride, padding, ceil, count, div = m._options()
            pool, args = tier.avg_pool2d, (kernel, stride, padding, bool(ceil), bool(count), div)
            return (lambda x: pool(x, *args)), m._label(), True
        if kind is AdaptiveAvgPool2d:
            pool, hw = tier.adaptive_avg_pool2d, tuple(out_shape[2:])
            return (lambda x: pool(x, hw)), f"adaptive_avg_pool2d {hw}", True
        if kind is Flatten:
            return (lambda x: x.reshape(out_shape)), "flatten", owned
        return None

    def batch_norm(self, m, shape):
        """An unfolded BatchNorm in eval mode: the tier's kernel with the running statistics."""
        c = shape[1]
        weight = self.array(m.weight.data) if m.weight is not None else np.ones(c, self.dtype)
        bias = self.array(m.bias.data) if m.bias is not None else np.zeros(c, self.dtype)
        mean, var, eps = self.array(m.running_mean), self.array(m.running_var), m.eps
        bn, flat = self.tier.batch_norm, (shape[0], c, math.prod(shape[2:]))

        def run(x):
            return bn(x.reshape(flat), weight, bias, mean, var, False, eps)[0].reshape(shape)
        return run, m._label(), True


def _shape(input_shape):
    if isinstance(input_shape, (int, np.integer)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"compile: input_shape must be a tuple of ints such as (1, 1, 28, 28), "
                        f"got {input_shape!r}")
    shape = tuple(input_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                        for s in shape):
        raise ValueError(f"compile: input_shape must be positive ints (batch first), got "
                         f"{input_shape!r}")
    return tuple(int(s) for s in shape)


def compile(model, input_shape, dtype=None, fold=True):  # noqa: A001 - PyTorch's name
    """Compile ``model`` into a :class:`Plan`: inference on inputs of exactly ``input_shape``.

    Parameters
    ----------
    model : Module
        Any fastconv model (usually a :class:`fastconv.Sequential`); its parameters must be on
        the host. It is not changed; the plan copies its weights (compile again after training).
    input_shape : tuple of ints
        The input's shape, batch first, e.g. ``(1, 1, 28, 28)``; checked against the model now
        (a ValueError naming the layer and shape), and each call checks the input against it.
    dtype : NumPy float dtype or None
        The input's dtype; None is the model's parameter dtype (float32 unless ``model.to``
        changed it).
    fold : bool, default True
        Fold each Conv2d + BatchNorm2d and Linear + BatchNorm1d into one layer (see
        :mod:`fastconv.fuse`): the results then match the unfused model up to rounding in the
        model's dtype, not bit for bit.

    Returns
    -------
    Plan
        ``plan(x)`` is ``model(x)`` in eval mode (dropout off, running statistics) without
        gradients, up to rounding: x must have the compiled shape and dtype (else a ValueError
        naming both). It runs the host tier's kernels (cpu, or naive when that is the default
        backend) from a list of steps made now, with no per-layer checks.

    Example
    -------
    >>> plan = fastconv.compile(model, (1, 1, 28, 28))
    >>> logits = plan(image[None])  # one image, float32, shape (1, 1, 28, 28)
    """
    if not isinstance(model, Module):
        raise TypeError(f"compile: model is a {type(model).__name__}, not a fastconv Module")
    shape = _shape(input_shape)
    params = model.parameters()
    if any(p.device == "cuda" for p in params):
        raise ValueError("compile: the model's parameters are on the GPU; a plan runs on the host "
                         "tiers (model.to('cpu') first)")
    if dtype is None:
        dtype = params[0].dtype if params else np.float32
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"compile: dtype must be float32 or float64, got {dtype}")
    name = get_backend()
    tier = kernels("cpu" if name == "cuda" else name)
    run, names, out_shape, per_image = _build(tier, model, shape, dtype, fold)
    if tier.__name__ == "fastconv.kernels.cpu" and per_image and len(shape) > 1 and \
            shape[0] > CHUNK and out_shape[:1] == shape[:1]:
        run = _chunked(tier, model, shape, out_shape, dtype, fold)
    return Plan(run, names, shape, out_shape, dtype)


#: On the cpu tier a plan for a larger batch runs it in chunks of this many images, each chunk
#: through the whole network in one thread (the chunks shared among the threads): a layer's
#: output is still in that core's cache when the next layer reads it, and the threads meet once
#: a call instead of once a layer. (32: 16-64 timed alike; ``benchmarks/plan_chunks.py``.)
CHUNK = 32


def _build(tier, model, shape, dtype, fold):
    """``(run, step names, output shape, per_image)`` of ``model`` for inputs of ``shape``."""
    builder = _Builder(tier, dtype, bool(fold), uses(model))
    try:
        fns, out_shape, _ = builder.sequence([model], shape, False)
    except ValueError as exc:  # a layer's own message, naming it and the shape it was handed
        raise ValueError(f"compile: input_shape {shape} does not fit the model: {exc}") from exc
    return _chain(fns), builder.names, tuple(out_shape), builder.per_image


def _chunked(tier, model, shape, out_shape, dtype, fold):
    """``run(x)`` for a batch of ``shape`` through the plans of chunks of :data:`CHUNK` images
    (and of the last, shorter chunk), each chunk run by one thread into its rows of the output.
    Every step computes an image from that image alone (the caller checks), so the result is
    the full batch's up to rounding (a kernel may sum in another order for another batch)."""
    from .kernels._memory import empty
    from .kernels._workers import split
    batch, chunk = shape[0], CHUNK
    count = -(-batch // chunk)
    runs = {size: _build(tier, model, (size,) + shape[1:], dtype, fold)[0]
            for size in {chunk, batch - (count - 1) * chunk}}

    def run(x):
        out = empty(out_shape, dtype)

        def share(c0, c1):
            for c in range(c0, c1):
                lo, hi = c * chunk, min(batch, (c + 1) * chunk)
                out[lo:hi] = runs[hi - lo](x[lo:hi])
        split(share, count)
        return out
    return run
