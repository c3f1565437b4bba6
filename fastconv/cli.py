"""Argument types for command lines (``python -m fastconv.onnx`` and the examples).

A bad value is argparse's one-line error naming the option (``argument --epochs: expected an
integer >= 0, got '-1'``), before any work starts: no traceback, nothing written.
"""
import argparse

__all__ = ["ranged"]


def ranged(kind, test, what):
    """An argparse ``type=``: ``kind(text)`` when it converts and passes ``test``, else
    ``argparse.ArgumentTypeError("expected {what}, got {text!r}")``.

    >>> positive = ranged(int, lambda v: v >= 1, "an integer >= 1")
    >>> positive("3")
    3
    """
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    convert.__name__ = kind.__name__
    return convert
