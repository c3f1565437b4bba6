"""fastconv._checks: one of each shared argument check, a TypeError for a wrong type and a
ValueError for a wrong value everywhere; layers leave input checks to the functional call. (The
wrong-type rows across the package are in the table of test_errors.py.)"""
import argparse

import numpy as np
import pytest

import fastconv as fc
from fastconv import _checks, cli


@pytest.mark.parametrize("value, error", [(1.5, TypeError), (True, TypeError), ("3", TypeError),
                                          (np.float64(2.0), TypeError), (0, ValueError),
                                          (-2, ValueError)])
def test_positive_int_refuses_by_type_then_by_value(value, error):
    with pytest.raises(error) as info:
        _checks.positive_int(value, "size")
    assert str(info.value) == f"size must be a positive int, got {value!r}"


def test_the_checks_return_plain_python_values():
    assert _checks.positive_int(np.int64(3), "n") == 3 and type(_checks.positive_int(np.int64(3), "n")) is int
    assert _checks.positive_int(0, "epochs", minimum=0) == 0
    with pytest.raises(ValueError, match="epochs must be an int >= 0, got -1"):
        _checks.positive_int(-1, "epochs", minimum=0)
    assert _checks.pair(3, "stride") == (3, 3) and _checks.pair([1, 2], "stride") == (1, 2)
    with pytest.raises(ValueError, match=r"stride must be an int or an \(h, w\) pair"):
        _checks.pair((1, 2, 3), "stride")
    with pytest.raises(TypeError, match="stride must be an int or a pair of ints, got 1.0"):
        _checks.pair((1.0, 2), "stride")
    assert _checks.sizes(4, "normalized_shape") == (4,) and _checks.sizes([2, 3], "s") == (2, 3)
    for bad, error in (((3, 0), ValueError), ((), ValueError), ((2.0,), TypeError), (None, TypeError)):
        with pytest.raises(error, match="normalized_shape must be one or more positive ints"):
            _checks.sizes(bad, "normalized_shape")
    assert _checks.number(np.float32(0.5), "p", 0, 1) == 0.5
    for bad, error in ((float("nan"), ValueError), (1.5, ValueError), ("0.1", TypeError),
                       (False, TypeError)):
        with pytest.raises(error, match="label_smoothing"):
            _checks.number(bad, "label_smoothing", 0, 1)
    with pytest.raises(ValueError, match="'avg' is not a valid value for reduction"):
        _checks.reduction("avg")


def test_generator_none_is_the_default_that_manual_seed_resets():
    fc.manual_seed(7)
    first = _checks.generator(None).random(3)
    fc.manual_seed(7)
    np.testing.assert_array_equal(_checks.generator(None).random(3), first)
    np.testing.assert_array_equal(_checks.generator(5).random(3), np.random.default_rng(5).random(3))
    g = np.random.default_rng(1)
    assert _checks.generator(g) is g
    assert _checks.generator(None, fresh=True) is not _checks.generator(None)
    for bad in (1.5, True, "0", np.random.RandomState(0)):
        with pytest.raises(TypeError, match="rng must be None, an int seed or a numpy.random.Generator"):
            _checks.generator(bad)


def test_every_caller_uses_the_one_check():
    from fastconv.onnx import attrs, exporters
    from fastconv.viz import _figure
    assert _figure._positive_int is _checks.positive_int
    assert exporters.Unsupported is attrs.Unsupported
    assert fc.manual_seed is _checks.manual_seed
    from fastconv import _shapes
    assert _shapes.pair is _checks.pair


def test_in_layer_names_the_layer_around_a_functional_error():
    with pytest.raises(ValueError, match=r"^Conv2d\(1, 2.*cannot take input of shape \(1, 3, 5, 5\): "
                                         r"channel mismatch"):
        with _checks.in_layer(fc.Conv2d(1, 2, 3), (1, 3, 5, 5)):
            fc.functional.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((2, 1, 3, 3)))
    with pytest.raises(TypeError, match="complex"):  # only ValueErrors are reworded
        with _checks.in_layer("Linear(2, 3)", (1, 2)):
            fc.functional.linear(np.zeros((1, 2), complex), np.zeros((3, 2)))


@pytest.mark.parametrize("layer, shape", [
    (fc.Conv2d(2, 3, 3, padding=1), (1, 2, 5, 5)), (fc.Conv2d(2, 3, 3, padding_mode="reflect"), (1, 2, 5, 5)),
    (fc.ConvTranspose2d(2, 3, 3), (1, 2, 5, 5)), (fc.Linear(4, 3), (2, 4)), (fc.PReLU(2), (2, 2, 3)),
    (fc.MaxPool2d(2), (1, 2, 4, 4)), (fc.AvgPool2d(2), (1, 2, 4, 4)), (fc.AdaptiveAvgPool2d(2), (1, 2, 5, 5)),
    (fc.AdaptiveMaxPool2d(2), (1, 2, 5, 5)), (fc.ZeroPad2d(1), (1, 2, 3, 3)), (fc.LayerNorm(3), (2, 3)),
    (fc.Dropout2d(0.5), (2, 3, 4, 4)),
])
def test_a_layer_forward_leaves_the_shape_check_to_the_functional_call(layer, shape, monkeypatch):
    """forward does not run output_shape (the functional call validates the input once), and
    a bad input still fails naming the layer and the shape."""
    def counted(shape):
        raise AssertionError("forward called output_shape")
    monkeypatch.setattr(layer, "output_shape", counted)
    layer(np.ones(shape, np.float32))
    bad = shape[:1] + (shape[1] + 1,) + shape[2:] if not isinstance(layer, fc.LayerNorm) else (2, 4)
    if isinstance(layer, (fc.MaxPool2d, fc.AvgPool2d, fc.AdaptiveAvgPool2d, fc.AdaptiveMaxPool2d,
                          fc.ZeroPad2d, fc.Dropout2d)):
        bad = shape[1:]  # 3-D: these take any channel count
    with pytest.raises(ValueError) as info:
        layer(np.ones(bad, np.float32))
    assert str(info.value).startswith(type(layer).__name__ + "(") and str(bad) in str(info.value)


def test_cli_ranged_is_argparses_one_line_error():
    positive = cli.ranged(int, lambda v: v >= 1, "an integer >= 1")
    assert positive("3") == 3
    for text in ("0", "1.5", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected an integer >= 1, got '{text}'"):
            positive(text)
    from fastconv.onnx import __main__ as onnx_cli
    with pytest.raises(argparse.ArgumentTypeError, match="expected a positive integer, got '0'"):
        onnx_cli._positive("0")
