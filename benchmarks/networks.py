"""End-to-end rows: whole networks in fastconv and in PyTorch twins built layer for layer.

Every network is ``examples/train_mnist.py``'s own (its ARCHS builders, imported from the file,
not copied); :func:`torch_twin` translates the built fastconv model into torch.nn layer by layer
and loads the same weights and buffers, so both start from the same numbers.

:data:`TRAIN`, the training step at batch :data:`TRAIN_BATCH` (forward, cross-entropy, backward,
optimizer step; dropout on, batch norm on batch statistics) of each example architecture:
``tutorial`` (conv 8 3x3, maxpool, linear), ``lenet`` (conv 32, conv 64, linear 128, dropout,
linear 10), ``best`` (four conv-BN-ReLU, BN'd dense layer), ``resnet`` (basic blocks with batch
norm and projection shortcuts) and ``mobilenet`` (depthwise-separable blocks), each with its
optimizer in train_mnist.py's ARCHS (SGD with Nesterov momentum 0.9 and weight decay, or Adam), and
``lenet_sgd``: lenet with plain SGD momentum 0.9.

:data:`E2E`, the rows timed per call:

* ``<arch>_infer_b256`` and ``<arch>_infer_b1`` for every arch of :data:`ARCHS`: eval mode,
  forward only, batch :data:`INFER_BATCH` and one image. Four implementations (:data:`E2E_IMPLS`):
  the fastconv model under ``fastconv.no_grad`` (``fastconv``), the plan
  ``fastconv.compile(model, x.shape)`` made once (``plan``), the PyTorch twin under
  ``torch.no_grad`` and ONNX Runtime (CPU provider, the benchmark's thread count, no spinning)
  running the fastconv model exported with :func:`fastconv.onnx.to_onnx`.
* ``tutorial_train_b1``: the tutorial network trained one image at a time with plain SGD.

Inputs are seeded random MNIST-sized images and labels (the time does not depend on the data).
"""
import importlib.util
from collections import namedtuple
from pathlib import Path

import numpy as np

from .cases import bench_threads, torch

TRAIN_MNIST = Path(__file__).resolve().parents[1] / "examples" / "train_mnist.py"
INFER_BATCH = 256
TRAIN_BATCH = 64
ARCHS = ("tutorial", "lenet", "best", "resnet", "mobilenet")
#: row -> (arch, mode, batch, optimizer): ``(class name, kwargs)``, or None for the arch's own.
E2E = {f"{a}_infer_b{b}": (a, "infer", b, None) for a in ARCHS for b in (INFER_BATCH, 1)}
E2E["tutorial_train_b1"] = ("tutorial", "train", 1, ("SGD", {"lr": 0.005}))
TRAIN = {a: (a, "train", TRAIN_BATCH, None) for a in ARCHS}
TRAIN["lenet_sgd"] = ("lenet", "train", TRAIN_BATCH, ("SGD", {"lr": 0.01, "momentum": 0.9}))
ROWS = {**E2E, **TRAIN}
E2E_IMPLS = ("fastconv", "plan", "torch", "onnxruntime")
INFER_ONLY = ("plan", "onnxruntime")

E2ECase = namedtuple("E2ECase", "fn images")
E2ECase.__doc__ = "One timed call ``fn()`` that processes ``images`` images."

_POOL = 256  # distinct images cycled through by the batch-1 training loop
_EXAMPLE = {}  # the loaded ARCHS of examples/train_mnist.py


def fastconv_api():
    """``(fastconv, layers, losses, optim)``; ImportError with the reason when not there yet."""
    import fastconv
    from fastconv import layers, losses, optim
    if not hasattr(fastconv, "Sequential"):
        raise ImportError("fastconv.Sequential is not exported yet")
    return fastconv, layers, losses, optim


def e2e_status(impl):
    """``(available, reason)`` for ``impl`` in :data:`E2E_IMPLS`."""
    if impl == "torch":
        return (torch is not None), "PyTorch is not installed"
    if impl == "onnxruntime":
        try:
            import fastconv.onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as e:
            return False, f"ONNX Runtime rows need onnx and onnxruntime: {e}"
    try:
        fastconv = fastconv_api()[0]
    except ImportError as e:
        return False, f"fastconv layer API not available: {e}"
    if impl == "plan" and not hasattr(fastconv, "compile"):
        return False, "fastconv.compile is not there yet"
    return True, ""


class _TorchResidual(torch.nn.Module if torch is not None else object):
    """fastconv.Residual for PyTorch: ``body(x) + shortcut(x)`` (``+ x`` without a shortcut)."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


def _twin_layer(layer):
    """The torch.nn module doing what fastconv ``layer`` does (children translated too)."""
    nn, kind = torch.nn, type(layer).__name__
    if kind == "Sequential":
        return nn.Sequential(*[_twin_layer(m) for _, m in layer.named_children()])
    if kind == "Residual":
        short = None if layer.shortcut is None else _twin_layer(layer.shortcut)
        return _TorchResidual(_twin_layer(layer.body), short)
    if kind == "Conv2d":
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                         layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode)
    if kind in ("BatchNorm1d", "BatchNorm2d"):
        return getattr(nn, kind)(layer.num_features, layer.eps, layer.momentum, layer.affine,
                                 layer.track_running_stats)
    if kind == "Linear":
        return nn.Linear(layer.in_features, layer.out_features, layer.bias is not None)
    if kind == "MaxPool2d":
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                            ceil_mode=layer.ceil_mode)
    if kind == "AvgPool2d":
        return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                            layer.count_include_pad, layer.divisor_override)
    if kind == "AdaptiveAvgPool2d":
        return nn.AdaptiveAvgPool2d(layer.output_size)
    if kind == "Flatten":
        return nn.Flatten(layer.start_dim, layer.end_dim)
    if kind == "Dropout":
        return nn.Dropout(layer.p)
    if kind in ("ReLU", "Identity"):
        return getattr(nn, kind)()
    raise TypeError(f"torch_twin: no PyTorch twin for fastconv layer {kind} ({layer!r}); add it to "
                    "benchmarks/networks.py:_twin_layer")


def torch_twin(model):
    """A torch.nn module built layer for layer from fastconv ``model``, with its weights and
    buffers (state-dict keys match: see fastconv.layers.container), in the same train/eval mode
    and float dtype."""
    twin = _twin_layer(model)
    params = model.parameters()
    if params and params[0].dtype == np.float64:
        twin = twin.double()
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    twin.load_state_dict(state)
    return twin.train(getattr(model, "training", True))


def example_archs():
    """``examples/train_mnist.py``'s ARCHS (builders and training defaults), loaded from its file."""
    if "archs" not in _EXAMPLE:
        spec = importlib.util.spec_from_file_location("fastconv_example_train_mnist", TRAIN_MNIST)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _EXAMPLE["archs"] = module.ARCHS
    return _EXAMPLE["archs"]


def build(net, seed=0):
    """The fastconv model of ``examples/train_mnist.py``'s arch ``net``, seeded."""
    fastconv = fastconv_api()[0]
    fastconv.manual_seed(seed)
    return example_archs()[net]["build"]()


def _data(batch):
    rng = np.random.default_rng(2)
    n = max(batch, _POOL) if batch == 1 else batch
    x = rng.standard_normal((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    return x, y


def optimizer_spec(name):
    """``(optimizer class name, kwargs)`` of row ``name``: its own, else its arch's defaults in
    examples/train_mnist.py (SGD with Nesterov momentum 0.9, or Adam; lr and weight decay)."""
    net, _, _, opt = ROWS[name]
    if opt is not None:
        return opt
    a = example_archs()[net]
    if a["optimizer"] == "sgd":
        return "SGD", dict(lr=a["lr"], momentum=0.9, nesterov=True, weight_decay=a["weight_decay"])
    return "Adam", dict(lr=a["lr"], weight_decay=a["weight_decay"])


def optimizer_label(name):
    """Row ``name``'s optimizer as a call, e.g. ``"SGD(lr=0.05, momentum=0.9, nesterov=True, ...)"``."""
    kind, kwargs = optimizer_spec(name)
    return f"{kind}(" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                  for k, v in kwargs.items()) + ")"


def _stepper(batch, x, y, step_once):
    """A training step over ``x, y``: the whole batch, or (batch 1) the next image each call."""
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + batch) % len(x)
        step_once(*((x[i:i + 1], y[i:i + 1]) if batch == 1 else (x, y)))
    return step


def _fastconv_case(name):
    net, mode, batch, _ = ROWS[name]
    fastconv, _, losses, optim = fastconv_api()
    model = build(net)
    x, y = _data(batch)
    if mode == "infer":
        model.eval()

        def infer():
            with fastconv.no_grad():
                return model.forward(x[:batch])
        return E2ECase(infer, batch)
    model.train()
    loss_fn = losses.CrossEntropyLoss()
    kind, kwargs = optimizer_spec(name)
    opt = getattr(optim, kind)(model.parameters(), **kwargs)

    def step_once(xb, yb):
        opt.zero_grad()
        loss_fn.forward(model.forward(xb), yb)
        model.backward(loss_fn.backward())
        opt.step()
    return E2ECase(_stepper(batch, x, y, step_once), batch)


def _torch_case(name):
    net, mode, batch, _ = ROWS[name]
    model = torch_twin(build(net))
    x, y = (torch.from_numpy(a) for a in _data(batch))
    if mode == "infer":
        model.eval()

        def infer():
            with torch.no_grad():
                return model(x[:batch])
        return E2ECase(infer, batch)
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    kind, kwargs = optimizer_spec(name)
    opt = getattr(torch.optim, kind)(model.parameters(), **kwargs)

    def step_once(xb, yb):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()
    return E2ECase(_stepper(batch, x, y, step_once), batch)


def runs(impl, name):
    """Whether ``impl`` has a case for row ``name`` (the plan and ONNX Runtime only infer)."""
    return impl not in INFER_ONLY or ROWS[name][1] == "infer"


def _plan_case(name):
    net, _, batch, _ = ROWS[name]
    x = _data(batch)[0][:batch]
    plan = fastconv_api()[0].compile(build(net), x.shape)
    return E2ECase(lambda: plan(x), batch)


def _onnxruntime_case(name):
    import onnxruntime as ort
    from fastconv.onnx import to_onnx
    net, _, batch, _ = ROWS[name]
    model = build(net).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = bench_threads(), 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle between calls
    session = ort.InferenceSession(to_onnx(model, (1, 1, 28, 28)).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    x = _data(batch)[0][:batch]
    return E2ECase(lambda: session.run(None, {"input": x}), batch)


_CASES = {"fastconv": _fastconv_case, "plan": _plan_case, "torch": _torch_case, "onnxruntime": _onnxruntime_case}


def e2e_case(impl, name):
    """The :class:`E2ECase` of row ``name`` (a key of :data:`E2E` or :data:`TRAIN`) for ``impl``
    (see :func:`runs`)."""
    return _CASES[impl](name)
