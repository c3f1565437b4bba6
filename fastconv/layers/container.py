"""Containers: :class:`Sequential`, a stack of layers with PyTorch's container interface, plus
save/load, ``predict`` and a CS231n-style memory ``summary``.
"""
import math
import numbers
import os
import zipfile

import numpy as np

from .._backend import is_device_array, to_device, to_numpy
from .._grad import no_grad
from .._io import atomic_savez
from .module import Module, _ForwardScope

__all__ = ["Sequential"]


def _bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024


class Sequential(Module):
    """Layers applied in order; ``model[i]`` is the i-th layer.

    Parameters
    ----------
    *layers : Module
    input_grad : bool, default False
        Whether :meth:`backward` returns the gradient with respect to the model's input. When
        False (the default; training never needs it) backward stops at the first layer that has
        parameters and asks that layer for its parameter gradients only (for a first Conv2d
        this skips the col2im of the input gradient) and returns None. Set True for input
        gradients (gradient checks, saliency maps). The ``input_grad`` attributes of the layers
        themselves are not consulted: the model decides.

    Names (``named_parameters``, ``state_dict``) are those of ``torch.nn.Sequential``:
    ``"0.weight"``, ``"3.running_mean"``, ...
    """

    def __init__(self, *layers, input_grad=False):
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a fastconv layer")
        self.layers = list(layers)
        self.input_grad = bool(input_grad)

    def named_children(self):
        return [(str(i), layer) for i, layer in enumerate(self.layers)]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Sequential(*self.layers[i], input_grad=self.input_grad)
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    # -- computation -------------------------------------------------------------------------
    def forward(self, x):
        """Apply every layer in order: x -> logits (or whatever the last layer gives)."""
        with _ForwardScope(self):
            for layer in self.layers:
                x = layer.forward(x)
        return x

    def backward(self, dout):
        """Backpropagate ``dout`` (the gradient of the output), accumulating every parameter's ``.grad``.

        Returns dL/dx of the model's input when ``input_grad`` is True, else None.
        """
        return self._backward(dout, self.input_grad)

    def _backward(self, dy, need_dx):
        first = 0
        if not need_dx:
            trainable = [i for i, layer in enumerate(self.layers)
                         if any(p.requires_grad for p in layer.parameters())]
            if not trainable:
                return None
            first = trainable[0]
        for i in range(len(self.layers) - 1, first - 1, -1):
            dy = self.layers[i]._backward(dy, need_dx or i > first)
        return dy

    def output_shape(self, shape):
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return tuple(shape)

    def predict(self, x, batch_size=256):
        """Outputs for ``x`` in eval mode, ``batch_size`` samples at a time, as a NumPy array.

        Runs under :func:`fastconv.no_grad`: nothing is kept for a backward.

        On a model on the device each host batch is copied there once (in the model's dtype) and
        each batch's output copied back. Each module's previous training/eval mode is restored
        afterwards.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if not is_device_array(x):
            x = np.asarray(x)
        if len(x.shape) == 0 or x.shape[0] == 0:
            raise ValueError(f"predict needs a non-empty batch of samples, got shape {tuple(x.shape)}")
        if self.device == "cuda" and not is_device_array(x) and x.dtype.kind in "biuf":
            def batch(i):
                return to_device(np.asarray(x[i:i + batch_size], dtype=self._dtype()))
        else:
            def batch(i):
                return x[i:i + batch_size]
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        try:
            with no_grad():
                outs = [to_numpy(self.forward(batch(i))) for i in range(0, x.shape[0], batch_size)]
        finally:
            for m, mode in modes:
                m.training = mode
        return np.concatenate(outs)

    # -- files -------------------------------------------------------------------------------
    def save(self, path):
        """Write :meth:`state_dict` to ``path`` as an ``.npz`` (no suffix is added), atomically.

        The archive is written to a temporary file in the same folder, flushed to disk and then
        renamed over ``path``, so an interrupted save leaves the previous file intact.
        """
        atomic_savez(path, self.state_dict())

    def load(self, path):
        """Load an ``.npz`` written by :meth:`save` (or any ``{key: array}`` archive); returns self.

        Every key and shape is checked before anything changes (see :meth:`load_state_dict`).
        """
        path = os.fspath(path)
        try:
            archive = np.load(path, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not an .npz archive")
            with archive:
                state = {key: archive[key] for key in archive.files}
        except (ValueError, zipfile.BadZipFile, EOFError) as exc:
            why = str(exc)
            if "allow_pickle" in why or "pickle" in why:
                why = ("it holds Python objects (pickled data), which fastconv never writes: it is "
                       "not a fastconv model file (Sequential.save writes plain numeric arrays)")
            raise ValueError(f"cannot read model file {path!r}: {why}") from exc
        self.load_state_dict(state)
        return self

    # -- summary -----------------------------------------------------------------------------
    def _dtype(self):
        params = self.parameters()
        return params[0].dtype if params else np.dtype(np.float32)

    def summary_rows(self, input_shape):
        """Per-layer accounting for an input of ``input_shape`` (batch included), as dicts.

        Keys: ``name``, ``layer``, ``output_shape``, ``params``, ``output_bytes`` (memory the
        forward allocates for the output; 0 for a view), ``kept_bytes`` (what backward needs
        beyond the inputs and outputs already counted: conv's im2col columns, max-pool switches,
        dropout masks, batch-norm's x-hat), ``workspace_bytes`` (conv: the im2col matrix,
        ``C*FH*FW x N*Hout*Wout x itemsize``). Arrays are in the model's dtype (switches int64).
        """
        shape = tuple(int(s) for s in input_shape)
        itemsize = self._dtype().itemsize
        rows = []

        def walk(model, shape, prefix):
            for name, layer in model.named_children():
                if isinstance(layer, Sequential):
                    shape = walk(layer, shape, f"{prefix}{name}.")
                    continue
                out = layer.output_shape(shape)
                out_b, kept_b, work_b = layer._memory(shape, out, itemsize)
                rows.append({"name": prefix + name, "layer": layer._label(), "output_shape": out,
                             "params": sum(p.size for p in layer.parameters()),
                             "output_bytes": out_b, "kept_bytes": kept_b, "workspace_bytes": work_b})
                shape = out
            return shape

        walk(self, shape, "")
        return rows

    def summary(self, input_shape):
        """A table per layer: output shape, parameters, forward output memory, what backward keeps
        and im2col workspace, for an input of ``input_shape`` (batch included, e.g. (64, 1, 28, 28)).

        Totals: parameters (and their bytes, again for their gradients), activations (input plus
        every output), what backward keeps, the largest workspace, and their sum as an estimate of
        a training step's peak memory (optimizer state not included).
        """
        shape = tuple(int(s) for s in input_shape)
        rows = self.summary_rows(shape)
        itemsize = self._dtype().itemsize
        table = [("#", "Layer", "Output shape", "Params", "Output", "Backward keeps", "im2col")]
        table += [(r["name"], r["layer"], str(r["output_shape"]), f"{r['params']:,}",
                   _bytes(r["output_bytes"]), _bytes(r["kept_bytes"]),
                   _bytes(r["workspace_bytes"]) if r["workspace_bytes"] else "-") for r in rows]
        widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
        lines = ["  ".join(cell.ljust(w) if c < 3 else cell.rjust(w)
                           for c, (cell, w) in enumerate(zip(row, widths))) for row in table]
        rule = "-" * len(lines[0])
        params = sum(r["params"] for r in rows)
        param_b = params * itemsize
        act_b = math.prod(shape) * itemsize + sum(r["output_bytes"] for r in rows)
        kept_b = sum(r["kept_bytes"] for r in rows)
        work_b = max((r["workspace_bytes"] for r in rows), default=0)
        total = 2 * param_b + act_b + kept_b + work_b
        lines[1:1] = [rule]
        lines += [rule,
                  f"Input {shape}, dtype {self._dtype()}",
                  f"Parameters: {params:,} ({_bytes(param_b)}, and as much again for gradients)",
                  f"Activations (input + outputs): {_bytes(act_b)}",
                  f"Kept for backward: {_bytes(kept_b)}",
                  f"Largest im2col workspace: {_bytes(work_b)}",
                  f"Estimated training-step memory: {_bytes(total)}"]
        return "\n".join(lines)

    def print_summary(self, input_shape):
        """Print :meth:`summary`."""
        print(self.summary(input_shape))

    def __repr__(self):
        lines = [f"{type(self).__name__}("]
        for name, layer in self.named_children():
            lines.append(f"  ({name}): " + repr(layer).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)" if self.layers else f"{type(self).__name__}()"
