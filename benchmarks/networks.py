"""End-to-end rows: whole networks in fastconv and in PyTorch, built layer for layer alike.

* ``lenet_train_b64``: one training step (forward, cross-entropy, backward, SGD momentum 0.9) of the
  common MNIST CNN: conv 32 3x3 pad 1, ReLU, maxpool 2, conv 64 3x3 pad 1, ReLU, maxpool 2,
  flatten, linear 3136->128, ReLU, dropout 0.5, linear 10; batch 64.
* ``lenet_adam_b64``: the same step with Adam (lr 1e-3, PyTorch's defaults otherwise).
* ``lenet_infer_b256``, ``lenet_infer_b1``: the same network in eval mode, forward only, batch
  :data:`INFER_BATCH` and one image; ONNX Runtime (CPU provider, the benchmark's thread count, no
  spinning) runs these rows too, on the fastconv model exported with :func:`fastconv.onnx.to_onnx`.
* ``resnet_infer_b256``, ``resnet_infer_b1``: the small ResNet of ``examples/train_mnist.py``
  (width 16: 3x3 stem conv-BN-ReLU, one basic block per stage at 28x28, 14x14 and 7x7, the last
  two with strided 1x1 projection shortcuts, global average pooling, linear 64->10) in eval mode,
  forward only, in fastconv, PyTorch and ONNX Runtime (exported from fastconv as a graph with Add).
* ``tutorial_train_b1``: the tutorial network (conv 8 3x3 no padding, maxpool 2, flatten,
  linear 1352->10, softmax inside the cross-entropy) trained one image at a time with plain SGD.

Inputs are seeded random MNIST-sized images and labels (the time does not depend on the data).
"""
from collections import namedtuple

import numpy as np

from .cases import bench_threads, torch

INFER_BATCH = 256
E2E = {
    "lenet_train_b64": ("lenet", "train", 64),
    "lenet_adam_b64": ("lenet", "adam", 64),
    "lenet_infer_b256": ("lenet", "infer", INFER_BATCH),
    "lenet_infer_b1": ("lenet", "infer", 1),
    "resnet_infer_b256": ("resnet", "infer", INFER_BATCH),
    "resnet_infer_b1": ("resnet", "infer", 1),
    "tutorial_train_b1": ("tutorial", "train", 1),
}
E2E_IMPLS = ("fastconv", "torch", "onnxruntime")

E2ECase = namedtuple("E2ECase", "fn images")
E2ECase.__doc__ = "One timed call ``fn()`` that processes ``images`` images."

_POOL = 256  # distinct images cycled through by the batch-1 training loop


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
        fastconv_api()
    except ImportError as e:
        return False, f"fastconv layer API not available: {e}"
    return True, ""


class _TorchResidual(torch.nn.Module if torch is not None else object):
    """fastconv.Residual for PyTorch: ``body(x) + shortcut(x)`` (``+ x`` without a shortcut)."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x):
        return self.body(x) + (x if self.shortcut is None else self.shortcut(x))


def _resnet(nn, residual, width=16):
    """The layer list of examples/train_mnist.py's resnet from ``nn`` (fastconv.layers or torch.nn)
    and its ``residual(body, shortcut)`` block."""
    def conv_bn(c_in, c_out, kernel=3, stride=1):
        return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)]

    def block(c_in, c_out, stride):
        body = nn.Sequential(*conv_bn(c_in, c_out, stride=stride), nn.ReLU(), *conv_bn(c_out, c_out))
        short = nn.Sequential(*conv_bn(c_in, c_out, 1, stride)) if stride != 1 or c_in != c_out else None
        return [residual(body, short), nn.ReLU()]
    w1, w2, w3 = width, 2 * width, 4 * width
    return [*conv_bn(1, w1), nn.ReLU(), *block(w1, w1, 1), *block(w1, w2, 2), *block(w2, w3, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w3, 10)]


def _build(nn, net):
    """The layer list of ``net`` from a module with PyTorch's layer names."""
    if net == "resnet":
        return _resnet(nn, nn.Residual if hasattr(nn, "Residual") else _TorchResidual)
    if net == "lenet":
        return [nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, 1, 1),
                nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3136, 128), nn.ReLU(),
                nn.Dropout(0.5), nn.Linear(128, 10)]
    return [nn.Conv2d(1, 8, 3, 1, 0), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1352, 10)]


def _data(batch):
    rng = np.random.default_rng(2)
    n = max(batch, _POOL) if batch == 1 else batch
    x = rng.standard_normal((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    return x, y


def _opt_args(net):
    return dict(lr=0.01, momentum=0.9) if net == "lenet" else dict(lr=0.005)


def _fastconv_case(net, mode, batch):
    fastconv, layers, losses, optim = fastconv_api()
    getattr(fastconv, "manual_seed", np.random.seed)(0)
    model = fastconv.Sequential(*_build(layers, net))
    x, y = _data(batch)
    if mode == "infer":
        if hasattr(model, "eval"):
            model.eval()
        return E2ECase(lambda: model.forward(x[:batch]), batch)
    if hasattr(model, "train"):
        model.train()
    loss_fn = losses.CrossEntropyLoss()
    opt = (optim.Adam(model.parameters(), lr=1e-3) if mode == "adam"
           else optim.SGD(model.parameters(), **_opt_args(net)))
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + batch) % len(x)
        xb, yb = (x[i:i + 1], y[i:i + 1]) if batch == 1 else (x, y)
        opt.zero_grad()
        loss_fn.forward(model.forward(xb), yb)
        model.backward(loss_fn.backward())
        opt.step()
    return E2ECase(step, batch)


def _torch_case(net, mode, batch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*_build(torch.nn, net))
    x, y = (torch.from_numpy(a) for a in _data(batch))
    if mode == "infer":
        model.eval()

        def infer():
            with torch.no_grad():
                return model(x[:batch])
        return E2ECase(infer, batch)
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = (torch.optim.Adam(model.parameters(), lr=1e-3) if mode == "adam"
           else torch.optim.SGD(model.parameters(), **_opt_args(net)))
    state = {"i": 0}

    def step():
        i = state["i"] = (state["i"] + batch) % len(x)
        xb, yb = (x[i:i + 1], y[i:i + 1]) if batch == 1 else (x, y)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xb), yb).backward()
        opt.step()
    return E2ECase(step, batch)


def runs(impl, name):
    """Whether ``impl`` has a case for row ``name`` (ONNX Runtime only infers)."""
    return impl != "onnxruntime" or E2E[name][1] == "infer"


def _onnxruntime_case(net, mode, batch):
    import onnxruntime as ort
    from fastconv.onnx import to_onnx
    fastconv, layers, _, _ = fastconv_api()
    fastconv.manual_seed(0)
    model = fastconv.Sequential(*_build(layers, net)).eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = bench_threads(), 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle between calls
    session = ort.InferenceSession(to_onnx(model, (1, 1, 28, 28)).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    x = _data(batch)[0][:batch]
    return E2ECase(lambda: session.run(None, {"input": x}), batch)


_CASES = {"fastconv": _fastconv_case, "torch": _torch_case, "onnxruntime": _onnxruntime_case}


def e2e_case(impl, name):
    """The :class:`E2ECase` of row ``name`` (a key of :data:`E2E`) for ``impl`` (see :func:`runs`)."""
    net, mode, batch = E2E[name]
    return _CASES[impl](net, mode, batch)
