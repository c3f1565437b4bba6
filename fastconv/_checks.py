"""The argument checks the package shares, one of each.

The rule they keep: an argument of the wrong type is a ``TypeError``, one of the right type with a
wrong value a ``ValueError``, and the message names the argument and repeats what it got. A bool
is not an int here (``True`` is no size), as in PyTorch. The functional layer validates inputs
with these once; layers and losses use them only for their own constructor options.
"""
import numbers

import numpy as np

__all__ = ["integer", "positive_int", "pair", "sizes", "number", "reduction", "generator",
           "manual_seed", "in_layer"]

#: What ``rng=None`` draws from: OS entropy until :func:`manual_seed` resets it.
_default = {"rng": np.random.default_rng()}


def integer(v, name, expected="an int"):
    """``v`` as an int; TypeError for anything else (a bool, a float, a string), saying that
    ``name`` must be ``expected``."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be {expected}, got {v!r}")
    return int(v)


def positive_int(v, name, minimum=1):
    """``v`` as an int ``>= minimum`` (1: a positive int); TypeError for a non-integer,
    ValueError for an integer below ``minimum``."""
    want = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    v = integer(v, name, want)
    if v < minimum:
        raise ValueError(f"{name} must be {want}, got {v!r}")
    return v


_PAIR = "an int or a pair of ints"


def pair(v, name):
    """``(h, w)`` from an int or a length-2 tuple/list of ints (their signs are the caller's to
    check); TypeError for a non-integer, ValueError for another length."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {v!r}")
        return integer(v[0], name, _PAIR), integer(v[1], name, _PAIR)
    v = integer(v, name, _PAIR)
    return v, v


def sizes(v, name):
    """``v``, an int or a sequence of ints, as a non-empty tuple of positive ints (a shape such
    as LayerNorm's ``normalized_shape``); TypeError for another type, ValueError for no size or
    one below 1."""
    want = "one or more positive ints"
    dims = (v,) if isinstance(v, numbers.Integral) else v
    try:
        dims = tuple(integer(d, name, want) for d in dims)
    except TypeError:
        raise TypeError(f"{name} must be {want} (an int or a sequence of ints), got {v!r}") from None
    if not dims or min(dims) < 1:
        raise ValueError(f"{name} must be {want}, got {v!r}")
    return dims


def number(v, name, minimum=None, maximum=None):
    """``v`` as a float (a real number, not a bool); TypeError otherwise, ValueError outside
    ``[minimum, maximum]`` (either bound optional; NaN is outside any bound)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {v!r}")
    low = minimum is None or v >= minimum
    high = maximum is None or v <= maximum
    if not (low and high):
        want = (f"in [{minimum}, {maximum}]" if minimum is not None and maximum is not None
                else f">= {minimum}" if minimum is not None else f"<= {maximum}")
        raise ValueError(f"{name} must be a number {want}, got {v!r}")
    return float(v)


def reduction(value):
    """A loss's ``reduction``: "mean", "sum" or "none" (PyTorch's words); ValueError otherwise."""
    if not isinstance(value, str) or value not in ("mean", "sum", "none"):
        raise ValueError(f"{value!r} is not a valid value for reduction: choose 'mean', 'sum' "
                         "or 'none'")
    return value


def manual_seed(seed):
    """Reset the default generator that layers built without ``rng`` draw from.

    Until the first call it is seeded from OS entropy (NumPy's default), so unseeded models differ.
    """
    _default["rng"] = np.random.default_rng(seed)


def generator(rng, fresh=False):
    """``rng`` as a ``numpy.random.Generator``: a Generator as is, an int seed a new one seeded
    with it, None the default generator (:func:`manual_seed`'s) or, with ``fresh``, a new one from
    OS entropy. TypeError for anything else."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        return np.random.default_rng() if fresh else _default["rng"]
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed or a numpy.random.Generator, got {rng!r}")


class in_layer:
    """``with in_layer(layer, x.shape):`` around a layer's functional call. The functional layer
    checks the input once; a ValueError it raises comes out prefixed with the layer (its repr, or
    ``layer`` itself when it is a string) and the input shape, so the message names the layer
    without the layer checking the shape again."""

    __slots__ = ("layer", "shape")

    def __init__(self, layer, shape):
        self.layer, self.shape = layer, shape

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if kind is ValueError:
            name = self.layer if isinstance(self.layer, str) else repr(self.layer)
            # the traceback still reaches the line that raised; the message is said once
            raise ValueError(f"{name} cannot take input of shape {tuple(self.shape)}: "
                             f"{exc}").with_traceback(tb) from None
        return False
