"""cuda activations: ReLU, sigmoid and tanh through the elementwise kernels."""
from .elementwise import (_RELU, _RELU_BACK, _SIGMOID, _SIGMOID_BACK, _TANH, _TANH_BACK, _binary,
                          _unary)


def relu(x):
    """max(x, 0), NaN propagating."""
    return _unary(x, _RELU)


def relu_backward(dout, out):
    """dout where the forward output was positive, else 0."""
    return _binary(dout, out, _RELU_BACK)


def sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow."""
    return _unary(x, _SIGMOID)


def sigmoid_backward(dout, out):
    return _binary(dout, out, _SIGMOID_BACK)


def tanh(x):
    return _unary(x, _TANH)


def tanh_backward(dout, out):
    return _binary(dout, out, _TANH_BACK)
