"""Dense layers: :class:`Linear`."""
import numpy as np

from .. import functional as F
from .._checks import generator, in_layer, positive_int
from .module import Module, Parameter, _float_dtype, _uniform_init

__all__ = ["Linear"]


class Linear(Module):
    """Fully connected layer: x (N, in) -> x @ weight.T + bias, (N, out).

    ``weight`` (out, in) and ``bias`` (out,) (or None) drawn as PyTorch does: U(-1/sqrt(in),
    1/sqrt(in)). ``input_grad`` as Conv2d.
    """

    _param_names = ("weight", "bias")

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        self.out_features = positive_int(out_features, "out_features")
        self.input_grad = True
        shape = (self.out_features, self.in_features)
        gen, dt = generator(rng), _float_dtype(dtype)
        self.weight = Parameter(_uniform_init(shape, self.in_features, dt, gen))
        self.bias = Parameter(_uniform_init(self.out_features, self.in_features, dt, gen)) if bias else None

    def _label(self):
        return f"Linear({self.in_features}, {self.out_features})"

    def output_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 2:
            raise ValueError(f"{self._label()} expects 2-D input (N, {self.in_features}), got shape "
                             f"{shape}" + ("; add a Flatten() before it" if len(shape) > 2 else ""))
        if shape[1] != self.in_features:
            raise ValueError(f"{self._label()} expects {self.in_features} input features, got "
                             f"{shape[1]} (input shape {shape})")
        return (shape[0], self.out_features)

    def forward(self, x):
        x = self._input(x)
        b = None if self.bias is None else self.bias.data
        with in_layer(self._label(), x.shape):
            out, cache = F.linear(x, self.weight.data, b)
        self._save(cache)
        return out

    def _backward(self, dy, need_dx):
        return self._param_backward(dy, need_dx, F.linear_backward)

    def __repr__(self):
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None})")
