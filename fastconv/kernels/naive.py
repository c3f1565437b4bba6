"""The naive tier: Python loops over images and output positions, one small NumPy product per window.

This is how the tutorials write a conv net. It is slow and obviously right: it is the oracle the
other tiers are tested against and the baseline the benchmarks measure them against.

Every tier implements the same functions with the same signatures. The arguments arrive validated
by :mod:`fastconv.functional`: arrays are C-contiguous and share one float dtype, ``stride`` is
``(sh, sw)``, ``pads`` is ``(top, bottom, left, right)``, kernels are ``(kh, kw)``.
"""
import numpy as np

from .._shapes import conv_output_hw, pool_output_hw


def _padded(x, pads):
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def _unpad(xp, pads):
    top, bottom, left, right = pads
    return xp[:, :, top:xp.shape[2] - bottom, left:xp.shape[3] - right]


def conv2d(x, w, b, stride, pads):
    """Convolution (cross-correlation, as PyTorch) by one tensordot per output position.

    x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), saved).
    ``saved`` is tier-private state handed back to :func:`conv2d_backward` (None here).
    """
    n_img, _, h, wd = x.shape
    k, _, fh, fw = w.shape
    (sh, sw) = stride
    ho, wo = conv_output_hw((h, wd), (fh, fw), stride, pads)
    xp = _padded(x, pads)
    out = np.zeros((n_img, k, ho, wo), dtype=x.dtype)
    for n in range(n_img):
        for i in range(ho):
            for j in range(wo):
                window = xp[n, :, i * sh:i * sh + fh, j * sw:j * sw + fw]
                out[n, :, i, j] = np.tensordot(w, window, axes=3)
    if b is not None:
        out += b.reshape(1, k, 1, 1)
    return out, None


def conv2d_backward(dout, x, w, has_bias, stride, pads, saved, need_dx=True):
    """Gradients of :func:`conv2d`: dout (N, K, Hout, Wout) -> (dx, dw, db).

    dx has x's shape (None when ``need_dx`` is false), dw has w's shape, db is (K,) or None.
    """
    n_img, k, ho, wo = dout.shape
    _, _, fh, fw = w.shape
    (sh, sw) = stride
    xp = _padded(x, pads)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for n in range(n_img):
        for i in range(ho):
            for j in range(wo):
                g = dout[n, :, i, j]
                window = xp[n, :, i * sh:i * sh + fh, j * sw:j * sw + fw]
                dw += np.multiply.outer(g, window)
                if need_dx:
                    dxp[n, :, i * sh:i * sh + fh, j * sw:j * sw + fw] += np.tensordot(g, w, axes=1)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    dx = np.ascontiguousarray(_unpad(dxp, pads)) if need_dx else None
    return dx, dw, db


def im2col(x, kernel, stride, pads):
    """Unfold every receptive field into a column.

    x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout). Row ``(c*FH + fy)*FW + fx`` holds input channel
    c at kernel offset (fy, fx); column ``(n*Hout + oh)*Wout + ow`` is output position (oh, ow) of
    image n. So ``w.reshape(K, -1) @ cols`` is the convolution with its output as (K, N, Hout, Wout).
    """
    n_img, c, h, wd = x.shape
    (fh, fw), (sh, sw) = kernel, stride
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads)
    xp = _padded(x, pads)
    cols = np.zeros((c * fh * fw, n_img * ho * wo), dtype=x.dtype)
    for n in range(n_img):
        for i in range(ho):
            for j in range(wo):
                window = xp[n, :, i * sh:i * sh + fh, j * sw:j * sw + fw]
                cols[:, (n * ho + i) * wo + j] = window.ravel()
    return cols


def col2im(cols, x_shape, kernel, stride, pads):
    """The adjoint of :func:`im2col`: cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W), overlaps summed."""
    n_img, c, h, wd = x_shape
    (fh, fw), (sh, sw) = kernel, stride
    ho, wo = conv_output_hw((h, wd), kernel, stride, pads)
    top, bottom, left, right = pads
    xp = np.zeros((n_img, c, h + top + bottom, wd + left + right), dtype=cols.dtype)
    for n in range(n_img):
        for i in range(ho):
            for j in range(wo):
                col = cols[:, (n * ho + i) * wo + j].reshape(c, fh, fw)
                xp[n, :, i * sh:i * sh + fh, j * sw:j * sw + fw] += col
    return np.ascontiguousarray(_unpad(xp, pads))


def max_pool2d(x, kernel, stride):
    """Max pooling: x (N, C, H, W) -> (out (N, C, Hout, Wout), switches int64 of out's shape).

    A switch is the flat index ``h * W + w`` of the maximum inside its (n, c) plane. The first
    maximum in row-major window order wins ties; a NaN wins over numbers (the first NaN).
    """
    n_img, c, h, wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = pool_output_hw((h, wd), kernel, stride)
    out = np.empty((n_img, c, ho, wo), dtype=x.dtype)
    switches = np.empty((n_img, c, ho, wo), dtype=np.int64)
    for n in range(n_img):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    window = x[n, ch, i * sh:i * sh + kh, j * sw:j * sw + kw]
                    a = int(np.argmax(window))  # first maximum; first NaN if any
                    out[n, ch, i, j] = window.flat[a]
                    switches[n, ch, i, j] = (i * sh + a // kw) * wd + j * sw + a % kw
    return out, switches


def max_pool2d_backward(dout, switches, input_shape):
    """Route each gradient to its switch: dout (N, C, Hout, Wout) -> dx (input_shape).

    Overlapping windows accumulate. Returns ``(dx, ok)``; ``ok`` is False if a switch was out of range.
    """
    n_img, c, h, wd = input_shape
    dx = np.zeros((n_img, c, h * wd), dtype=dout.dtype)
    flat_sw = switches.reshape(n_img, c, -1)
    if flat_sw.size and (flat_sw.min() < 0 or flat_sw.max() >= h * wd):
        return dx.reshape(input_shape), False
    flat_g = dout.reshape(n_img, c, -1)
    for n in range(n_img):
        for ch in range(c):
            for t in range(flat_g.shape[2]):
                dx[n, ch, flat_sw[n, ch, t]] += flat_g[n, ch, t]
    return dx.reshape(input_shape), True


def avg_pool2d(x, kernel, stride):
    """Average pooling without padding: x (N, C, H, W) -> (N, C, Hout, Wout)."""
    n_img, c, h, wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = pool_output_hw((h, wd), kernel, stride)
    out = np.empty((n_img, c, ho, wo), dtype=x.dtype)
    for i in range(ho):
        for j in range(wo):
            out[:, :, i, j] = x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].mean(axis=(2, 3))
    return out


def avg_pool2d_backward(dout, input_shape, kernel, stride):
    """Gradient of :func:`avg_pool2d`: dout (N, C, Hout, Wout) -> dx (input_shape)."""
    (kh, kw), (sh, sw) = kernel, stride
    _, _, ho, wo = dout.shape
    dx = np.zeros(input_shape, dtype=dout.dtype)
    scale = dout.dtype.type(1.0 / (kh * kw))
    for i in range(ho):
        for j in range(wo):
            dx[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += (dout[:, :, i, j] * scale)[:, :, None, None]
    return dx


# Elementwise work. NumPy's ufuncs are already SIMD loops; these are shared by the cpu tier.

def relu(x):
    """max(x, 0), NaN propagating."""
    return np.where(x < 0, x.dtype.type(0), x)


def relu_backward(dout, out):
    """dout where the forward output was positive, else 0."""
    return np.where(out > 0, dout, dout.dtype.type(0))


def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def sigmoid_backward(dout, out):
    return dout * out * (1 - out)


def tanh(x):
    return np.tanh(x)


def tanh_backward(dout, out):
    return dout * (1 - out * out)


def linear(x, w, b):
    """x (N, in) @ w.T, w (out, in), plus b (out,) -> (N, out)."""
    out = x @ w.T
    if b is not None:
        out += b
    return out


def linear_backward(dout, x, w, has_bias, need_dx=True):
    """dout (N, out) -> (dx (N, in) or None, dw (out, in), db (out,) or None)."""
    dx = dout @ w if need_dx else None
    return dx, dout.T @ x, (dout.sum(axis=0) if has_bias else None)


def dropout(x, p, seed):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p).

    Returns ``(out, mask)``; the mask holds 0 or 1/(1-p) in x's dtype.
    """
    rng = np.random.default_rng(seed)
    keep = rng.random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32) >= p
    mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return x * mask, mask


def dropout_backward(dout, mask):
    return dout * mask


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of logits (N, classes) against int labels (N,) -> (loss, dlogits)."""
    n = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    log_probs = shifted - np.log(total)
    loss = -log_probs[np.arange(n), labels].mean()
    grad = exp / total
    grad[np.arange(n), labels] -= 1
    grad *= grad.dtype.type(1.0 / n)
    return float(loss), grad


def batch_norm(x, weight, bias, mean, var, training, eps):
    """Batch normalisation per channel (axis 1) of x (N, C, L).

    training: normalise with the batch mean and biased variance (``mean``/``var`` are ignored);
    else with the given ``mean``/``var`` (C,). Returns ``(out, batch_mean, batch_var, saved)``
    where batch_mean/batch_var (C,) are None when not training and ``saved`` is what
    :func:`batch_norm_backward` needs.
    """
    if training:
        mean = x.mean(axis=(0, 2))
        var = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    inv_std = (1 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype)
    xhat = (x - mean[None, :, None]) * inv_std[None, :, None]
    out = xhat * weight[None, :, None] + bias[None, :, None]
    return out, (mean if training else None), (var if training else None), (mean, inv_std)


def batch_norm_backward(dout, x, weight, saved, training, need_dx=True):
    """dout (N, C, L) -> (dx or None, dweight (C,), dbias (C,))."""
    mean, inv_std = saved
    xhat = (x - mean[None, :, None]) * inv_std[None, :, None]
    dweight = (dout * xhat).sum(axis=(0, 2))
    dbias = dout.sum(axis=(0, 2))
    if not need_dx:
        return None, dweight, dbias
    dxhat = dout * weight[None, :, None]
    if training:
        m = x.shape[0] * x.shape[2]
        dxhat = dxhat - (dbias * weight / m)[None, :, None] - xhat * (dweight * weight / m)[None, :, None]
    return dxhat * inv_std[None, :, None], dweight, dbias
