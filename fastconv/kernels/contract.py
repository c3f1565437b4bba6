"""The kernel contract: the functions every tier (``naive``, ``cpu``, ``cuda``) implements, with
the same names and signatures, one file per family with the family's name in every tier.

:mod:`fastconv.functional` validates the arguments before it calls a tier, so a kernel may assume:
arrays are C-contiguous and share one float dtype (float32 or float64; labels and switches are
int64), ``stride``/``dilation``/``kernel`` are ``(h, w)`` pairs, ``pads`` is ``(top, bottom, left,
right)``, ``padding`` (pooling, transposed convolution) is a symmetric ``(ph, pw)``, and the shapes
agree. A forward returns its output and what its backward needs (``saved``: tier-private state,
handed back unchanged); a backward returns the gradients in the order of the forward's inputs,
``dx`` None when ``need_dx`` is false (a network's first layer). Host tiers take and return NumPy
arrays; the cuda tier takes NumPy or device arrays and returns device arrays (its module docstring
says which results come back to the host). ``elementwise`` and ``optim`` work in place on arrays
where they already live: callers reach them through :func:`fastconv._backend.tier_of`.

:data:`CONTRACT` maps each family to its functions: ``name -> (parameters, shapes)``; every tier's
``__all__`` is :data:`NAMES` (the cuda tier adds its ``KERNELS`` table), and
``tests/kernels/test_contract.py`` checks each tier's signatures against the parameters here.
"""

__all__ = ["CONTRACT", "NAMES", "FAMILIES", "signature", "bind"]

CONTRACT = {
    "conv": {
        "conv2d": ("x, w, b, stride, pads, dilation=(1, 1)",
                   "x (N, C, H, W), w (K, C, FH, FW), b (K,) or None -> (out (N, K, Hout, Wout), "
                   "saved)"),
        "conv2d_backward": ("dout, x, w, has_bias, stride, pads, saved, need_dx=True, "
                            "dilation=(1, 1)",
                            "dout (N, K, Hout, Wout) -> (dx (N, C, H, W) or None, dw (K, C, FH, "
                            "FW), db (K,) or None)"),
        "conv2d_memory": ("x_shape, w_shape, stride, pads, dilation, itemsize",
                          "bytes (kept for backward, workspace) a conv2d of these shapes allocates "
                          "beyond its inputs and outputs"),
        "im2col": ("x, kernel, stride, pads, dilation=(1, 1)",
                   "x (N, C, H, W) -> cols (C*FH*FW, N*Hout*Wout)"),
        "col2im": ("cols, x_shape, kernel, stride, pads, dilation=(1, 1)",
                   "cols (C*FH*FW, N*Hout*Wout) -> (N, C, H, W) = x_shape, overlaps summed"),
    },
    "grouped": {
        "grouped_conv2d": ("x, w, b, stride, pads, dilation, groups",
                           "x (N, C, H, W), w (K, C/groups, FH, FW), b (K,) or None -> (out (N, "
                           "K, Hout, Wout), saved)"),
        "grouped_conv2d_backward": ("dout, x, w, has_bias, stride, pads, dilation, groups, saved, "
                                    "need_dx",
                                    "dout (N, K, Hout, Wout) -> (dx or None, dw, db or None)"),
        "depthwise_conv2d": ("x, w, b, stride, pads, dilation",
                             "x (N, C, H, W), w (m*C, 1, FH, FW), b (m*C,) or None -> (out (N, "
                             "m*C, Hout, Wout), saved)"),
        "depthwise_conv2d_backward": ("dout, x, w, has_bias, stride, pads, dilation, saved, "
                                      "need_dx",
                                      "dout (N, m*C, Hout, Wout) -> (dx or None, dw, db or None)"),
    },
    "conv_transpose": {
        "conv_transpose2d": ("x, w, b, stride, padding, output_padding, dilation, groups",
                             "x (N, C, H, W), w (C, K/groups, FH, FW), b (K,) or None -> (out "
                             "(N, K, Hout, Wout), saved)"),
        "conv_transpose2d_backward": ("dout, x, w, has_bias, stride, padding, output_padding, "
                                      "dilation, groups, saved, need_dx",
                                      "dout (N, K, Hout, Wout) -> (dx (N, C, H, W) or None, dw, "
                                      "db (K,) or None)"),
    },
    "pooling": {
        "max_pool2d": ("x, kernel, stride, padding=(0, 0), dilation=(1, 1), ceil_mode=False",
                       "x (N, C, H, W) -> (out (N, C, Hout, Wout), switches int64 of out's shape)"),
        "max_pool2d_backward": ("dout, switches, input_shape",
                                "dout (N, C, Hout, Wout) -> (dx (input_shape), ok)"),
        "avg_pool2d": ("x, kernel, stride, padding=(0, 0), ceil_mode=False, "
                       "count_include_pad=True, divisor_override=None",
                       "x (N, C, H, W) -> (N, C, Hout, Wout)"),
        "avg_pool2d_backward": ("dout, input_shape, kernel, stride, padding=(0, 0), "
                                "ceil_mode=False, count_include_pad=True, divisor_override=None",
                                "dout (N, C, Hout, Wout) -> dx (input_shape)"),
        "adaptive_avg_pool2d": ("x, output_hw", "x (N, C, H, W) -> (N, C, Hout, Wout)"),
        "adaptive_avg_pool2d_backward": ("dout, input_shape",
                                         "dout (N, C, Hout, Wout) -> dx (input_shape)"),
        "adaptive_max_pool2d": ("x, output_hw",
                                "x (N, C, H, W) -> (out, switches) of (N, C, Hout, Wout)"),
        "max_unpool2d": ("x, indices, output_hw",
                         "x, indices (N, C, H, W) -> (out (N, C, Hout, Wout), ok)"),
        "max_unpool2d_backward": ("dout, indices",
                                  "dout (N, C, Hout, Wout), indices (N, C, H, W) -> (dx, ok)"),
    },
    "padding": {
        "pad": ("x, pads, mode, value",
                "x (N, C, H, W), pads (left, right, top, bottom) -> (N, C, H + top + bottom, "
                "W + left + right)"),
        "pad_backward": ("dout, x_shape, pads, mode", "dout (N, C, Hout, Wout) -> dx (x_shape)"),
    },
    "activation": {
        "relu": ("x", "x (any shape) -> max(x, 0)"),
        "relu_backward": ("dout, out", "dout, out (forward output) -> dx"),
        "sigmoid": ("x", "x (any shape) -> 1 / (1 + exp(-x))"),
        "sigmoid_backward": ("dout, out", "dout, out (forward output) -> dx"),
        "tanh": ("x", "x (any shape) -> tanh(x)"),
        "tanh_backward": ("dout, out", "dout, out (forward output) -> dx"),
        "activate": ("x, op, a, b", "x (any shape) -> op(x; a, b), op a name in activation.OPS"),
        "activate_backward": ("dout, x, op, a, b", "dout, x (forward input) -> dx"),
        "prelu": ("x, weight", "x (A, C, L), weight (C,) -> (A, C, L)"),
        "prelu_backward": ("dout, x, weight, need_dx=True",
                           "dout, x (A, C, L) -> (dx or None, dweight (C,))"),
        "softmax": ("x, log", "x (outer, dim, inner) -> (log-)softmax over dim"),
        "softmax_backward": ("dout, out, log", "dout, out (outer, dim, inner) -> dx"),
    },
    "linear": {
        "linear": ("x, w, b", "x (N, in), w (out, in), b (out,) or None -> (N, out)"),
        "linear_backward": ("dout, x, w, has_bias, need_dx=True",
                            "dout (N, out) -> (dx (N, in) or None, dw (out, in), db (out,) or "
                            "None)"),
    },
    "dropout": {
        "dropout": ("x, p, seed", "x (any shape) -> (out, mask of x's shape)"),
        "dropout_backward": ("dout, mask", "dout, mask (x's shape) -> dx"),
        "dropout2d": ("x, p, seed", "x (N, C, H, W) -> (out, mask (N, C))"),
        "dropout2d_backward": ("dout, mask", "dout (N, C, H, W), mask (N, C) -> dx"),
    },
    "loss": {
        "softmax_cross_entropy": ("logits, labels",
                                  "logits (N, C), labels int64 (N,) -> (mean loss, dlogits "
                                  "(N, C))"),
        "cross_entropy": ("logits, labels, weight, ignore_index, reduction, label_smoothing",
                          "logits (N, C), labels (N,), weight (C,) or None -> (loss, dlogits)"),
        "nll_loss": ("log_probs, labels, weight, ignore_index, reduction",
                     "log_probs (N, C), labels (N,), weight (C,) or None -> (loss, dlog_probs)"),
        "binary_cross_entropy_with_logits": ("x, target, weight, pos_weight, reduction",
                                             "x, target, weight, pos_weight (x's shape or None) "
                                             "-> (loss, dx)"),
        "mse_loss": ("pred, target, reduction", "pred, target (any shape) -> (loss, dpred)"),
    },
    "normalization": {
        "batch_norm": ("x, weight, bias, mean, var, training, eps, relu=False",
                       "x (N, C, L), weight, bias, mean, var (C,) -> (out (max(., 0) when relu), "
                       "batch_mean (C,) or None, batch_var (C,) or None, saved)"),
        "batch_norm_backward": ("dout, x, weight, saved, training, need_dx=True, out=None",
                                "dout (N, C, L), out (the relu forward's output) or None -> (dx "
                                "or None, dweight (C,), dbias (C,))"),
        "group_norm": ("x, weight, bias, inner, eps",
                       "x (N, G, M), weight, bias (C,) -> (out (N, G, M), mean (N, G), rstd (N, "
                       "G))"),
        "group_norm_backward": ("dout, x, weight, mean, rstd, inner, need_dx=True",
                                "dout (N, G, M) -> (dx or None, dweight (C,), dbias (C,))"),
    },
    "combine": {
        "add": ("a, b, relu=False", "a, b (one shape) -> a + b (max(., 0) when relu)"),
        "concat": ("parts", "parts (A, B_i, C) -> (A, sum B_i, C)"),
        "split": ("a, sizes", "a (A, D, C) -> [(A, B_i, C)], sum(sizes) == D"),
    },
    "elementwise": {
        "axpby": ("y, x, a, b", "y, x (one shape): y = y * a + x * b in place"),
        "clamp": ("y, lo, hi", "y (any shape) clamped to [lo, hi] in place, NaN kept"),
        "full": ("shape, value, dtype", "-> an array of shape and dtype filled with value, on "
                 "the tier's device"),
        "scale_rows": ("a, s", "a (rows, length), s (rows,) -> a * s[:, None]"),
        "zeros_like": ("a", "a -> zeros of a's shape and dtype, where a lives"),
    },
    "optim": {
        "sgd_update": ("data, grad, buf, lr, momentum, dampening, nesterov, weight_decay, "
                       "first_step",
                       "data (updated in place), grad, buf (momentum buffer or None): data's "
                       "shape"),
        "adam_update": ("data, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, "
                        "eps, weight_decay, amsgrad",
                        "data, exp_avg, exp_avg_sq, max_exp_avg_sq (or None) updated in place, "
                        "data's shape"),
        "rmsprop_update": ("data, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, "
                           "weight_decay, momentum, centered",
                           "data, square_avg, grad_avg (or None), momentum_buffer (or None) "
                           "updated in place, data's shape"),
        "adagrad_update": ("data, grad, state_sum, step, lr, lr_decay, weight_decay, eps",
                           "data, state_sum updated in place, data's shape"),
    },
}

#: The families, in the order above: one file each in every tier (``elementwise`` and ``optim``
#: are ``kernels/_host.py`` and ``kernels/_host_optim.py`` for both host tiers; the cpu tier fuses
#: SGD and Adam in its own ``optim``).
FAMILIES = tuple(CONTRACT)

#: Every function of the contract, family by family.
NAMES = tuple(name for functions in CONTRACT.values() for name in functions)


def signature(name):
    """The parameters of contract function ``name`` as ``inspect.signature`` prints them."""
    for functions in CONTRACT.values():
        if name in functions:
            return f"({functions[name][0]})"
    raise KeyError(f"{name!r} is not a function of the kernel contract")


def bind(namespace, **shared):
    """Put every contract function into ``namespace`` (a tier package's ``globals()``), each from
    the tier's file of its family (``<tier>.<family>``) or, for a family named in ``shared``, from
    that module of ``fastconv.kernels`` (``elementwise="_host"``): the tiers' export lists are this
    contract, never copies of it. ImportError names a function the tier lacks."""
    from importlib import import_module
    for family, functions in CONTRACT.items():
        where = f"{__package__}.{shared[family]}" if family in shared else \
            f"{namespace['__name__']}.{family}"
        module = import_module(where)
        for name in functions:
            if not hasattr(module, name):
                raise ImportError(f"{where} lacks {name!r}, a function of the kernel contract")
            namespace[name] = getattr(module, name)
