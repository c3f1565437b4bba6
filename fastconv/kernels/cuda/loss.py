"""cuda losses: softmax cross-entropy (the fused default and the general one with PyTorch's
options), NLL, binary cross-entropy with logits and MSE.

The class losses run one thread per row, the elementwise ones one thread per element; each writes
the per-sample losses and the gradient. The reductions run on the device (``_sum_kernel``: one
block, a fixed-order tree), and one small array comes back: the loss sum, the mean's denominator
and the count of bad labels. For ``reduction="none"`` the losses stay on the device. The fused
default kernel returns its per-row losses to the host, as before.
"""
import math

import numpy as np
from numba import cuda, float32

from ._launch import (REDUCE_THREADS, _A1, _A2, _block_sum, _dev, _dummy, _empty, _flat, _launch,
                      _reduce_launch, _scalar, _sigs)


@cuda.jit(device=True, cache=True)
def _exp_row(logits, i, dlogits):
    """``(m, total)``: the max m of row i of logits (a NaN wins) and the sum of exp(logits[i] - m),
    whose terms are written to dlogits[i]. The sum starts from its first term: from float32(0),
    the simulator (whose math functions return Python floats) would add float64 data in float32."""
    m = logits[i, 0]
    for j in range(1, logits.shape[1]):
        v = logits[i, j]
        if v > m or v != v:
            m = v
    total = math.exp(logits[i, 0] - m)
    dlogits[i, 0] = total
    for j in range(1, logits.shape[1]):
        e = math.exp(logits[i, j] - m)
        dlogits[i, j] = e
        total += e
    return m, total


@cuda.jit(cache=True)
def _softmax_xent_kernel(logits, labels, inv_n, dlogits, rows):
    """One thread per row: dlogits = (softmax - onehot) * inv_n; rows[0, i] = the row's loss,
    rows[1, i] = 1 if labels[i] is outside [0, classes)."""
    n, ncls = logits.shape
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        m, total = _exp_row(logits, i, dlogits)
        lab = labels[i]
        ok = lab >= 0 and lab < ncls
        for j in range(ncls):
            g = dlogits[i, j] / total
            if j == lab:
                g -= float32(1)
            dlogits[i, j] = g * inv_n
        if ok:
            rows[0, i] = -((logits[i, lab] - m) - math.log(total))
            rows[1, i] = 0
        else:
            rows[0, i] = 0
            rows[1, i] = 1


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of logits (N, classes) against int labels (N,) -> (loss, dlogits).

    ``dlogits`` stays on the device; the per-row losses come back to form the float ``loss``.
    Raises ``ValueError`` if a label is outside ``[0, classes)``. No rows: the loss is NaN
    (PyTorch's mean of nothing) and dlogits is (0, classes).
    """
    logits = _dev(logits)
    labels = _dev(labels, np.int64)
    n, ncls = logits.shape
    dlogits = _empty((n, ncls), logits.dtype)
    if n == 0:
        return float("nan"), dlogits
    rows = _empty((2, n), logits.dtype)
    _softmax_xent_kernel[_launch(n)](logits, labels, _scalar(logits.dtype, 1.0 / n),
                                     dlogits, rows)
    host = rows.copy_to_host()
    if host[1].any():
        raise ValueError(f"labels must lie in [0, {ncls}); {int(host[1].sum())} of {n} do not")
    return float(host[0].mean()), dlogits


_LOSS, _DENOMINATOR, _BAD = 0, 1, 2  # the slots of the results array


@cuda.jit(cache=True)
def _sum_kernel(a, out, k):
    """out[k] = the sum of a (flat), by one block: a block-stride loop, then a shared-memory tree."""
    part = cuda.shared.array(REDUCE_THREADS, dtype=a.dtype)
    acc = float32(0)
    for j in range(cuda.threadIdx.x, a.size, cuda.blockDim.x):
        acc += a[j]
    total = _block_sum(part, acc)
    if cuda.threadIdx.x == 0:
        out[k] = total


@cuda.jit(cache=True)
def _target_weight_kernel(labels, weight, has_weight, ignore_index, ncls, one, tw, bad):
    """tw[i] = the weight of row i's target (weight[label], or one), 0 when ignored; bad[i] = one
    when labels[i] is neither in [0, ncls) nor ignore_index."""
    for i in range(cuda.grid(1), labels.size, cuda.gridsize(1)):
        lab = labels[i]
        tw[i] = 0
        bad[i] = 0
        if lab != ignore_index:
            if lab >= 0 and lab < ncls:
                if has_weight:
                    tw[i] = weight[lab]
                else:
                    tw[i] = one
            else:
                bad[i] = one


@cuda.jit(cache=True)
def _xent_kernel(logits, labels, weight, has_weight, ignore_index, smoothing, keep, eps_over_c,
                 results, mean, one, dlogits, losses):
    """One thread per row: losses[i] = keep * w[y] * (-log p[y]) + eps_over_c * sum_c w[c] *
    (-log p[c]) and dlogits[i] = p * (keep * w[y] + eps_over_c * sum(w)) - keep * w[y] * onehot
    - eps_over_c * w, divided by results[_DENOMINATOR] when ``mean``; 0 for ignored (or bad) rows.
    ``keep`` = 1 - label_smoothing, ``smoothing`` says whether it is below one."""
    n, ncls = logits.shape
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        lab = labels[i]
        if lab == ignore_index or lab < 0 or lab >= ncls:
            for j in range(ncls):
                dlogits[i, j] = 0
            losses[i] = 0
            continue
        m, total = _exp_row(logits, i, dlogits)
        lse = math.log(total)
        wy = one
        if has_weight:
            wy = weight[lab]
        loss = -(((logits[i, lab] - m) - lse) * wy * keep)
        coef = wy * keep
        if smoothing:
            ssum = float32(0)
            wsum = float32(0)
            for j in range(ncls):
                wj = one
                if has_weight:
                    wj = weight[j]
                ssum += ((logits[i, j] - m) - lse) * wj
                wsum += wj
            loss -= ssum * eps_over_c
            coef += wsum * eps_over_c
        losses[i] = loss
        scale = one
        if mean:
            scale = one / results[_DENOMINATOR]
        for j in range(ncls):
            g = dlogits[i, j] / total * coef
            if j == lab:
                g -= wy * keep
            if smoothing:
                wj = one
                if has_weight:
                    wj = weight[j]
                g -= wj * eps_over_c
            dlogits[i, j] = g * scale


@cuda.jit(cache=True)
def _nll_kernel(x, labels, weight, has_weight, ignore_index, results, mean, one, dx, losses):
    """One thread per row: losses[i] = -w[y] * x[i, y], dx[i] = -w[y] * onehot (divided by
    results[_DENOMINATOR] when ``mean``); 0 for ignored (or bad) rows."""
    n, ncls = x.shape
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        for j in range(ncls):
            dx[i, j] = 0
        losses[i] = 0
        lab = labels[i]
        if lab != ignore_index and lab >= 0 and lab < ncls:
            wy = one
            if has_weight:
                wy = weight[lab]
            losses[i] = -(x[i, lab] * wy)
            if mean:
                dx[i, lab] = -wy / results[_DENOMINATOR]
            else:
                dx[i, lab] = -wy


@cuda.jit(cache=True)
def _bce_logits_kernel(x, t, weight, pos_weight, has_weight, has_pos_weight, scale, one, dx,
                       losses):
    """Elementwise: losses = w * ((1 - t) x + lw * (log1p(exp(-|x|)) + max(-x, 0))) with
    lw = 1 + (pw - 1) t, dx = w * (lw * sigmoid(x) - pw * t) * scale (flat arrays)."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        y = t[i]
        e = math.exp(-abs(v))
        softplus_neg = math.log1p(e)
        if v < 0:
            softplus_neg += -v
        if v >= 0:
            sig = one / (one + e)
        else:
            sig = e / (one + e)
        log_weight = one
        positive = y
        if has_pos_weight:
            log_weight = (pos_weight[i] - one) * y + one
            positive = pos_weight[i] * y
        loss = (one - y) * v + log_weight * softplus_neg
        g = log_weight * sig - positive
        if has_weight:
            loss *= weight[i]
            g *= weight[i]
        losses[i] = loss
        dx[i] = g * scale


@cuda.jit(cache=True)
def _mse_kernel(pred, target, two_scale, dpred, losses):
    """Elementwise: losses = (pred - target)**2, dpred = (pred - target) * two_scale (flat)."""
    for i in range(cuda.grid(1), pred.size, cuda.gridsize(1)):
        d = pred[i] - target[i]
        losses[i] = d * d
        dpred[i] = d * two_scale


def _sum_into(a, results, k):
    _sum_kernel[_reduce_launch(1, a.size)](_flat(a), results, k)


def _finish(losses, results, reduction, count=None):
    """``(loss, results on the host)``: the loss sum, mean (by ``count``, else the device
    denominator) or the device array of losses for ``"none"``."""
    if reduction != "none":
        _sum_into(losses, results, _LOSS)
    host = results.copy_to_host()
    if reduction == "none":
        return losses, host
    if reduction == "sum":
        return float(host[_LOSS]), host
    denominator = float(host[_DENOMINATOR]) if count is None else float(count)
    return (float(host[_LOSS]) / denominator if denominator else float("nan")), host


def _class_loss(kernel, x, labels, weight, ignore_index, reduction, extra):
    """The shared driver of the class losses (cross-entropy and NLL): target weights, the
    denominator and bad-label count, then ``kernel`` and the reduction."""
    x = _dev(x)
    labels = _dev(labels, np.int64)
    dt = x.dtype
    n, ncls = x.shape
    has_weight = weight is not None
    weight = _dev(weight, dt) if has_weight else _dummy(dt)
    results = cuda.to_device(np.zeros(3, dt))
    tw, bad = _empty(n, dt), _empty(n, dt)
    one = _scalar(dt, 1)
    _target_weight_kernel[_launch(n)](labels, weight, has_weight, ignore_index, ncls, one, tw, bad)
    _sum_into(bad, results, _BAD)
    if reduction == "mean":
        _sum_into(tw, results, _DENOMINATOR)
    grad, losses = _empty((n, ncls), dt), _empty(n, dt)
    kernel[_launch(n)](x, labels, weight, has_weight, ignore_index, *extra, results,
                       reduction == "mean", one, grad, losses)
    loss, host = _finish(losses, results, reduction)
    if host[_BAD]:
        raise ValueError(f"labels must lie in [0, {ncls}) (or equal ignore_index={ignore_index}); "
                         f"{int(host[_BAD])} of {n} do not")
    return loss, grad


def cross_entropy(logits, labels, weight, ignore_index, reduction, label_smoothing):
    """Softmax cross-entropy with PyTorch's options (the naive tier's contract): logits (N, C),
    int64 labels (N,), weight (C,) or None -> (loss, dlogits), dlogits on the device (and the
    per-sample losses for ``"none"``). Raises ``ValueError`` for labels neither in ``[0, C)`` nor
    ``ignore_index``."""
    dt = np.dtype(logits.dtype)
    eps = label_smoothing
    extra = (eps > 0, _scalar(dt, 1.0 - eps), _scalar(dt, eps / logits.shape[1]))
    return _class_loss(_xent_kernel, logits, labels, weight, ignore_index, reduction, extra)


def nll_loss(log_probs, labels, weight, ignore_index, reduction):
    """Negative log-likelihood (the naive tier's contract) on the device."""
    return _class_loss(_nll_kernel, log_probs, labels, weight, ignore_index, reduction, ())


def binary_cross_entropy_with_logits(x, target, weight, pos_weight, reduction):
    """Binary cross-entropy with logits (the naive tier's contract); ``weight`` and
    ``pos_weight`` are None or arrays of x's shape."""
    x = _dev(x)
    dt = x.dtype
    target = _dev(target, dt)
    has_w, has_pw = weight is not None, pos_weight is not None
    weight = _dev(weight, dt) if has_w else _dummy(dt)
    pos_weight = _dev(pos_weight, dt) if has_pw else _dummy(dt)
    grad, losses = _empty(x.shape, dt), _empty(x.shape, dt)
    scale = 1.0 / x.size if reduction == "mean" else 1.0
    _bce_logits_kernel[_launch(x.size)](_flat(x), _flat(target), _flat(weight), _flat(pos_weight),
                                        has_w, has_pw, _scalar(dt, scale), _scalar(dt, 1),
                                        _flat(grad), _flat(losses))
    results = cuda.to_device(np.zeros(3, dt))
    return _finish(losses, results, reduction, x.size)[0], grad


def mse_loss(pred, target, reduction):
    """Squared error (the naive tier's contract) on the device."""
    pred = _dev(pred)
    dt = pred.dtype
    target = _dev(target, dt)
    grad, losses = _empty(pred.shape, dt), _empty(pred.shape, dt)
    two_scale = 2.0 / pred.size if reduction == "mean" else 2.0
    _mse_kernel[_launch(pred.size)](_flat(pred), _flat(target), _scalar(dt, two_scale),
                                    _flat(grad), _flat(losses))
    results = cuda.to_device(np.zeros(3, dt))
    return _finish(losses, results, reduction, pred.size)[0], grad


KERNELS = {
    "_softmax_xent_kernel": (_softmax_xent_kernel,
                             _sigs(f"void({_A2}, int64[::1], {{f}}, {_A2}, {_A2})")),
    "_sum_kernel": (_sum_kernel, _sigs(f"void({_A1}, {_A1}, int64)")),
    "_target_weight_kernel": (_target_weight_kernel, _sigs(
        f"void(int64[::1], {_A1}, boolean, int64, int64, {{f}}, {_A1}, {_A1})")),
    "_xent_kernel": (_xent_kernel, _sigs(
        f"void({_A2}, int64[::1], {_A1}, boolean, int64, boolean, {{f}}, {{f}}, {_A1}, boolean, "
        f"{{f}}, {_A2}, {_A1})")),
    "_nll_kernel": (_nll_kernel, _sigs(
        f"void({_A2}, int64[::1], {_A1}, boolean, int64, {_A1}, boolean, {{f}}, {_A2}, {_A1})")),
    "_bce_logits_kernel": (_bce_logits_kernel, _sigs(
        f"void({_A1}, {_A1}, {_A1}, {_A1}, boolean, boolean, {{f}}, {{f}}, {_A1}, {_A1})")),
    "_mse_kernel": (_mse_kernel, _sigs(f"void({_A1}, {_A1}, {{f}}, {_A1}, {_A1})")),
}
