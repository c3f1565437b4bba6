"""The parameterised activations of :data:`fastconv.kernels.naive.activation.OPS` on one value, as
plain Python that the cpu tier compiles with ``njit(inline="always")`` and the cuda tier as a
device function, so both run the same formulas inside their own loops.

``op`` is the op's index in ``OPS``; ``a``, ``b`` its parameters; ``k`` = (1/sqrt(2),
1/sqrt(2 pi), sqrt(2/pi), kappa, ...) and ``half``, ``one`` all in the data's dtype (a Python float
would make Numba compute in float64).
"""
import math

from .naive.activation import OPS

LEAKY, ELU, GELU, GELU_TANH, SILU, SOFTPLUS, HARDTANH = range(len(OPS))
CODES = {name: i for i, name in enumerate(OPS)}


def activation(v, op, a, b, k, half, one):
    """op(v)."""
    if op == LEAKY:
        if v > 0:
            return v
        return v * a
    if op == ELU:
        if v <= 0:
            return math.expm1(v) * (a * b)
        return v * b
    if op == GELU:
        return half * v * (one + math.erf(v * k[0]))
    if op == GELU_TANH:
        return half * v * (one + math.tanh(k[2] * (v + k[3] * v * v * v)))
    if op == SILU:
        e = math.exp(-abs(v))
        if v >= 0:
            return v * (one / (one + e))
        return v * (e / (one + e))
    if op == SOFTPLUS:
        if v * a > b:
            return v
        return math.log1p(math.exp(v * a)) / a
    if v < a:  # HARDTANH
        return a
    if v > b:
        return b
    return v


def activation_grad(g, v, op, a, b, k, half, one):
    """g * op'(v)."""
    if op == LEAKY:
        if v > 0:
            return g
        return g * a
    if op == ELU:
        if v <= 0:
            return g * (a * b) * math.exp(v)
        return g * b
    if op == GELU:
        cdf = half * (one + math.erf(v * k[0]))
        return g * (cdf + v * k[1] * math.exp(-half * v * v))
    if op == GELU_TANH:
        th = math.tanh(k[2] * (v + k[3] * v * v * v))
        return g * (half * (one + th)
                    + half * v * (one - th * th) * k[2] * (one + (one + one + one) * k[3] * v * v))
    if op == SILU:
        e = math.exp(-abs(v))
        if v >= 0:
            s = one / (one + e)
        else:
            s = e / (one + e)
        return g * s * (one + v * (one - s))
    if op == SOFTPLUS:
        if v * a > b:
            return g
        z = math.exp(v * a)
        return g * z / (z + one)
    if v <= a or v >= b:  # HARDTANH
        return half - half  # 0 in the data's dtype (an int 0 would unify to float64)
    return g
