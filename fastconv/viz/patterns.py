"""The pattern each filter responds to most: activation maximisation by gradient ascent on the
input (Erhan et al. 2009; the regularisers of Yosinski et al. 2015): :func:`filter_patterns` and
:func:`plot_filter_patterns`."""
import math
import numbers

import numpy as np

from ..layers import Module
from .._checks import generator as _generator
from ._backprop import find_layer, input_gradient, layer_output, private_copy, tapped_prefix
from ._figure import _bare, _display, _matplotlib, _positive_int, _short, _size, new_figure, save_figure

__all__ = ["filter_patterns", "plot_filter_patterns"]


def _channels(channels):
    if isinstance(channels, numbers.Integral) and not isinstance(channels, (bool, np.bool_)):
        return list(range(_positive_int(channels, "channels")))
    try:
        chosen = list(channels)
    except TypeError:
        raise TypeError(f"channels must be an int (the first N) or a sequence of channel indices, "
                        f"got {channels!r}") from None
    if not chosen or any(isinstance(c, (bool, np.bool_)) or not isinstance(c, numbers.Integral) or c < 0
                         for c in chosen):
        raise ValueError(f"channels must be a non-empty sequence of channel indices >= 0, got {channels!r}")
    return [int(c) for c in chosen]


def _number(value, name, low, strict=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < low or (strict and value == low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def _count(value, name):
    """An int >= 0 (0 turns the step off)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def _range(value_range):
    if value_range is None:
        return None
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise TypeError(f"value_range must be None or (low, high), got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"value_range must be finite with low < high, got {value_range!r}")
    return lo, hi


def _input_shape(shape):
    try:
        shape = tuple(shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 3 or any(
            isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) of positive ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def _blur(x, sigma):
    """A separable Gaussian blur of every (H, W) plane of ``x``, reflected at the edges."""
    r = max(1, math.ceil(2 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(x.dtype)
    h, w = x.shape[2:]
    if min(h, w) <= r:
        return x
    p = np.pad(x, ((0, 0), (0, 0), (r, r), (0, 0)), mode="reflect")
    x = sum(k[i] * p[:, :, i:i + h] for i in range(2 * r + 1))
    p = np.pad(x, ((0, 0), (0, 0), (0, 0), (r, r)), mode="reflect")
    return sum(k[i] * p[:, :, :, i:i + w] for i in range(2 * r + 1))


def filter_patterns(model, layer, channels=16, steps=64, lr=0.1, seed=0, input_shape=(1, 28, 28),
                    value_range=None, decay=0.5, jitter=1, blur_every=4, blur_sigma=0.5, init_std=0.1,
                    rectify=True, history=False):
    """Inputs that maximise the mean activation of each chosen channel of ``layer``.

    For channel ``c`` it runs gradient ascent on an input ``x`` of ``input_shape``, from seeded
    noise ``init_std * N(0, 1)`` (0 is the data's mean for standardised inputs), on the objective

        J(x) = mean over (H, W) of r(a[c]) - decay / 2 * mean(x ** 2)

    where ``a`` is the layer's output for ``x`` (eval mode) and ``r`` is ``max(., 0)`` when
    ``rectify`` (the channel's ReLU, as in Keras where a convolution holds its activation; the
    mean of a convolution itself is nearly the sum of its weights times the mean pixel, so
    without ReLU a first layer's pattern is a flat image). Each step moves ``x`` by ``lr`` times
    the gradient of J divided by its root mean square (a step of ``lr`` per pixel, on RMS); the
    input is rolled by a random shift of at most ``jitter`` pixels (each axis) for the gradient,
    blurred with a Gaussian of ``blur_sigma`` pixels every ``blur_every`` steps, and clipped to
    ``value_range``. The gradient comes from the layers' own backward passes on a private copy of
    the model, so its weights, gradients, caches and train/eval flags are not touched.

    Parameters
    ----------
    model : fastconv.Module
        Usually a Sequential that takes ``(N, *input_shape)``.
    layer : Module, str or int
        A layer whose output is maps ``(N, C, H, W)``, usually a Conv2d: the module, its name as
        :func:`feature_maps` names it (``"3"``, ``"2.body.0"``) or an int ``i`` for ``"i"``.
    channels : int or sequence of int
        The first ``channels`` channels, or these channel indices.
    steps : int
    lr : float
        The step, in the input's units (per pixel, on RMS).
    seed : int, numpy.random.Generator or None
        The initial noise and the jitter; the same seed gives the same arrays.
    input_shape : (C, H, W)
        Default MNIST's (1, 28, 28).
    value_range : (low, high), optional
        The data's range after normalisation (for MNIST as ``fastconv.datasets.normalize`` makes
        it, about (-0.42, 2.82)); None: no clipping.
    decay : float >= 0
        Weight of the L2 penalty on the image.
    jitter, blur_every : int >= 0
        0 turns the jitter, the blur off.
    blur_sigma, init_std : float
    rectify : bool
    history : bool
        Also return the activation and the objective before the first step and after each.

    Returns
    -------
    patterns : ndarray, shape (len(channels), *input_shape)
        In the model's parameter dtype; ``patterns[i]`` is the input for ``channels[i]``.
    activation, objective : ndarray, shape (steps + 1, len(channels)), only with ``history``
        The channel's mean (rectified) activation and J, at the un-jittered input.
    """
    if not isinstance(model, Module):
        raise TypeError(f"the model must be a fastconv Module, got {type(model).__name__}")
    name, _ = find_layer(model, layer)
    chosen, steps = _channels(channels), _positive_int(steps, "steps")
    lr, decay = _number(lr, "lr", 0.0, strict=True), _number(decay, "decay", 0.0)
    blur_sigma, init_std = _number(blur_sigma, "blur_sigma", 0.0, strict=True), _number(init_std, "init_std", 0.0)
    jitter, blur_every = _count(jitter, "jitter"), _count(blur_every, "blur_every")
    shape, bounds, rng = _input_shape(input_shape), _range(value_range), _generator(seed)
    params = model.parameters()
    dtype = params[0].dtype if params else np.dtype(np.float32)
    net, tap = tapped_prefix(private_copy(model), name)
    n, pixels = len(chosen), math.prod(shape)
    rows = np.arange(n)

    def check(a):
        if a.ndim != 4:
            raise ValueError(f"layer {name} outputs shape {a.shape[1:]} per input, not maps (C, H, W)")
        if max(chosen) >= a.shape[1]:
            raise ValueError(f"channel {max(chosen)} is out of range: layer {name} has {a.shape[1]} channels")
        return a

    def channel_means(a):
        act = check(a)[rows, chosen]
        return np.maximum(act, 0) if rectify else act

    def seed_of(a):
        dy = np.zeros_like(check(a))
        if rectify:
            on = a[rows, chosen] > 0
            # a channel off everywhere has no gradient through its ReLU: raise its mean until it fires
            on[~on.any(axis=(1, 2))] = True
            dy[rows, chosen] = on
        else:
            dy[rows, chosen] = 1
        return dy / (a.shape[2] * a.shape[3])

    def measure(x):
        act = channel_means(layer_output(net, x, tap)).mean(axis=(1, 2), dtype=np.float64)
        return act, act - decay / 2 * (x.reshape(n, -1).astype(np.float64) ** 2).mean(axis=1)

    def clip(x):
        return x if bounds is None else np.clip(x, *bounds, out=x)

    # separate streams for the start and the jitter, and a start drawn for every channel up to the
    # last one chosen: a channel's pattern does not depend on which other channels are asked for
    start, shifts = rng.spawn(2)
    x = clip((init_std * start.standard_normal((max(chosen) + 1,) + shape)[chosen]).astype(dtype))
    trace = []
    for step in range(steps):
        if history:
            trace.append(measure(x))
        shift = tuple(int(v) for v in shifts.integers(-jitter, jitter + 1, size=2)) if jitter else (0, 0)
        _, g = input_gradient(net, np.roll(x, shift, axis=(2, 3)), seed_of, tap)
        g = np.roll(g, (-shift[0], -shift[1]), axis=(2, 3)) - (decay / pixels) * x
        rms = np.sqrt((g.reshape(n, -1) ** 2).mean(axis=1))
        x = clip(x + (lr / np.maximum(rms, np.finfo(dtype).tiny))[:, None, None, None].astype(dtype) * g)
        if blur_every and (step + 1) % blur_every == 0:
            x = clip(_blur(x, blur_sigma).astype(dtype))
    if not history:
        return x
    trace.append(measure(x))
    activation, objective = (np.array(t) for t in zip(*trace))
    return x, activation, objective


def plot_filter_patterns(model, layer, path, channels=16, steps=64, lr=0.1, seed=0, input_shape=(1, 28, 28),
                         value_range=None, figsize=None, dpi=100, title=None, **options):
    """The patterns of :func:`filter_patterns` as a grid of images, one per channel; returns ``path``.

    Parameters
    ----------
    model, layer, channels, steps, lr, seed, input_shape, value_range
        As for :func:`filter_patterns`.
    path : str or Path
        The PNG to write.
    figsize, dpi, title
        Figure size in inches (default from the grid), resolution, an optional title.
    **options
        ``decay``, ``jitter``, ``blur_every``, ``blur_sigma``, ``init_std``, ``rectify`` for
        :func:`filter_patterns`.

    Tiles run left to right from the first channel, each titled with its channel and the mean
    (rectified) activation its pattern reaches; every tile has the same grey scale, from
    ``value_range`` (default: the patterns' own range), black low, white high (three-channel
    patterns are shown in colour, scaled to [0, 1] each).
    """
    _matplotlib("plot_filter_patterns")  # before the ascent: without matplotlib, fail at once
    if "history" in options:
        raise TypeError("plot_filter_patterns takes no history argument")
    patterns = filter_patterns(model, layer, channels, steps, lr, seed, input_shape, value_range, **options)
    name, module = find_layer(model, layer)
    net, tap = tapped_prefix(private_copy(model), name)
    chosen = _channels(channels)
    act = layer_output(net, patterns, tap)[np.arange(len(chosen)), chosen]
    reached = (np.maximum(act, 0) if options.get("rectify", True) else act).mean(axis=(1, 2))
    lo, hi = _range(value_range) or (float(patterns.min()), float(patterns.max()))
    cols = min(len(chosen), 8)
    rows = math.ceil(len(chosen) / cols)
    fig = new_figure(_size(figsize, (1.05 * cols + 0.2, 1.2 * rows + 0.5)), "plot_filter_patterns")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, c, image, value in zip(axes, chosen, patterns, reached):
        shown = _display(image)
        ax.axis("on")
        ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=lo, vmax=hi, interpolation="nearest")
        _bare(ax)
        ax.set_title(f"{c}: {value:.2g}", fontsize=7, pad=2)
    what = "mean ReLU activation" if options.get("rectify", True) else "mean activation"
    fig.suptitle(title or f"Inputs that maximise each channel of layer {name}, {_short(module)}\n"
                 f"(over each: the channel and its {what})", fontsize=9)
    return save_figure(fig, path, dpi)
