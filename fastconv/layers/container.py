"""Containers: :class:`Sequential`, a stack of layers with PyTorch's container interface, plus
save/load, ``predict`` and a CS231n-style memory ``summary``; :class:`Residual` (``body(x) +
shortcut(x)``) and :class:`Concat` (branch outputs concatenated), which nest inside it.

Writing your own module: the recipe (``_param_names``, ``forward``, ``_backward``,
``output_shape``) with a worked example is in ``docs/extending.md``.

PyTorch twins
-------------
:class:`Residual` names its children ``body`` and ``shortcut`` (none for the identity), so its
state-dict keys (``"3.body.0.weight"``, ``"3.shortcut.1.running_mean"``) are those of a PyTorch
module that keeps the two as attributes of those names (``self.body``, ``self.shortcut``) and
returns ``self.body(x) + self.shortcut(x)``. :class:`Concat` names its branches ``"0"``, ``"1"``,
..., as ``torch.nn.ModuleList`` does: its twin is a ``ModuleList`` subclass whose forward returns
``torch.cat([m(x) for m in self], dim)`` (keys ``"2.0.0.weight"``, ``"2.1.weight"``, ...).
"""
import math
import os

import numpy as np

from .. import functional as F
from .._backend import is_device_array, to_device, to_numpy
from .._checks import integer, positive_int
from .._grad import no_grad
from .._io import atomic_savez
from .._npz import NpzReader, mismatches
from .activation import ReLU
from .module import Module, _ForwardScope, eval_mode
from .normalization import _BatchNorm
from .pooling import MaxPool2d

__all__ = ["Sequential", "Residual", "Concat"]


def _bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024


def _runs_relu(layer, nxt):
    """The layer of the pair ``layer, nxt`` that runs the ReLU of the pair in its own pass, or
    None: a BatchNorm or a Residual before a ReLU (the ReLU in the norm's passes, or in the sum
    of the branches), or a MaxPool2d after one (pooling first, then the ReLU on the pooled
    values). Neither may have its computation replaced (by a subclass or on the instance, as a
    profiler or a user's patch does), so that what runs is what the user wrote, nor may the pool
    return its indices."""
    if {"forward", "_backward"} & (vars(layer).keys() | vars(nxt).keys()):
        return None
    if type(nxt) is ReLU:
        for host in (_BatchNorm, Residual):
            if isinstance(layer, host) and type(layer).forward is host.forward and \
                    type(layer)._backward is host._backward:
                return layer
    if type(layer) is ReLU and type(nxt) is MaxPool2d and not nxt.return_indices:
        return nxt
    return None


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
        """Apply every layer in order: x -> logits (or whatever the last layer gives). A ReLU
        after a BatchNorm or a Residual, or before a MaxPool2d, runs inside that layer
        (:func:`_runs_relu`: the same results, less memory traffic)."""
        layers, i = self.layers, 0
        with _ForwardScope(self):
            while i < len(layers):
                host = _runs_relu(layers[i], layers[i + 1]) if i + 1 < len(layers) else None
                if host is None:
                    x = layers[i].forward(x)
                    i += 1
                    continue
                x = host._forward(x, relu=True)
                (layers[i + 1] if host is layers[i] else layers[i])._applied()
                i += 2
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

        Runs under :func:`fastconv.no_grad` (nothing is kept for a backward) and
        :func:`fastconv.layers.module.eval_mode`: eval mode for this call's thread only, so the
        modules' own train/eval flags are left as they are and other threads using the model
        see no change (several threads may predict with one model at once).

        On a model on the device each host batch is copied there once (in the model's dtype) and
        each batch's output copied back.
        """
        batch_size = positive_int(batch_size, "batch_size")
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
        with no_grad(), eval_mode():
            outs = [to_numpy(self.forward(batch(i))) for i in range(0, x.shape[0], batch_size)]
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

        Every key, dtype and shape is checked against the model from the arrays' headers, before
        any array is read (a file cannot make this allocate more than the model's size) and
        before anything changes; a problem is a ValueError naming the file and the keys (see
        :meth:`load_state_dict`).
        """
        path = os.fspath(path)
        with NpzReader(path, f"model file {path!r}") as archive:
            problems = mismatches(archive.headers, {key: value.shape for key, value, _, _ in self._entries()})
            if problems:
                raise ValueError(f"cannot load model file {path!r} into {type(self).__name__}: "
                                 + "; ".join(problems) + "; nothing was loaded")
            state = {key: archive.read(key) for key in archive.headers}
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
        Layers inside a nested Sequential, :class:`Residual` or :class:`Concat` get rows of their
        own with dotted names (``"3.body.0"``), and the block a row of its own for its sum or
        concatenation (after its branches' rows).
        """
        shape = tuple(int(s) for s in input_shape)
        rows = []
        for name, layer in self.named_children():
            shape = _summary_rows(layer, shape, name, self._dtype().itemsize, rows)
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


def _summary_rows(layer, shape, name, itemsize, rows):
    """Append the summary rows of ``layer`` (named ``name``) for an input of ``shape``; return its
    output shape. Containers add their children's rows with dotted names."""
    if isinstance(layer, Sequential):
        for child_name, child in layer.named_children():
            shape = _summary_rows(child, shape, f"{name}.{child_name}", itemsize, rows)
        return shape
    if isinstance(layer, _Branches):
        for child_name, child in layer.named_children():
            _summary_rows(child, shape, f"{name}.{child_name}", itemsize, rows)
    out = layer.output_shape(shape)
    out_b, kept_b, work_b = layer._memory(shape, out, itemsize)
    own = 0 if isinstance(layer, _Branches) else sum(p.size for p in layer.parameters())
    rows.append({"name": name, "layer": layer._label(), "output_shape": out, "params": own,
                 "output_bytes": out_b, "kept_bytes": kept_b, "workspace_bytes": work_b})
    return out


class _Branches(Module):
    """A block that hands its input to several modules and combines their outputs.

    Its forward runs inside :class:`fastconv.layers.module._ForwardScope` (as Sequential's), its
    input takes the dtype and device of its first parameter, and its backward visits the branches
    in the reverse order of the forward (so a module shared between them is backpropagated in the
    right order) and sums their input gradients.
    """

    def _input(self, x):
        x = super()._input(x)
        params = self.parameters()
        if not params or is_device_array(x):
            return x
        p = params[0]
        x = x if x.dtype == p.dtype else x.astype(p.dtype)
        return to_device(x) if p.device == "cuda" else x

    def _branch_grads(self, grads, need_dx):
        """The sum of the branches' input gradients (None when ``need_dx`` is False)."""
        if not need_dx:
            return None
        total = grads[0]
        for g in grads[1:]:
            total = F.add(total, g)
        return total

    def __repr__(self):
        lines = [f"{type(self).__name__}("]
        for name, child in self.named_children():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return "\n".join(lines) + "\n)"


def _check_module(m, what):
    if not isinstance(m, Module):
        raise TypeError(f"{what} is a {type(m).__name__}, not a fastconv module")
    return m


class Residual(_Branches):
    """``body(x) + shortcut(x)``: a residual block; the identity shortcut when ``shortcut`` is None.

    Parameters
    ----------
    body : Module
        Usually a :class:`Sequential` (conv, batch norm, ReLU, conv, batch norm).
    shortcut : Module or None
        The projection of a block that changes the shape (a 1x1 ``Conv2d`` with the body's stride,
        then ``BatchNorm2d``); None adds x itself.

    Both branches take x (any shape) and must give outputs of one shape (checked, naming both).
    Backward sends dy to both branches and sums their input gradients. The state-dict keys are
    ``"body.<...>"`` and ``"shortcut.<...>"`` (see the module docstring for the PyTorch twin).
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = _check_module(body, "Residual: body")
        self.shortcut = None if shortcut is None else _check_module(shortcut, "Residual: shortcut")

    def named_children(self):
        return [("body", self.body)] + ([("shortcut", self.shortcut)] if self.shortcut is not None else [])

    def _check(self, body_shape, short_shape):
        if tuple(body_shape) != tuple(short_shape):
            what = "the input" if self.shortcut is None else "the shortcut's output"
            raise ValueError(f"Residual: the body's output has shape {tuple(body_shape)} but {what} has "
                             f"shape {tuple(short_shape)}; they must match to be added (give a "
                             "shortcut that maps the input to the body's output shape)")

    def output_shape(self, shape):
        out = self.body.output_shape(shape)
        self._check(out, tuple(shape) if self.shortcut is None else self.shortcut.output_shape(shape))
        return tuple(out)

    def forward(self, x):
        """y = body(x) + shortcut(x) (or + x)."""
        return self._forward(x)

    def _forward(self, x, relu=False):
        """The forward; ``relu``: then a ReLU in the same pass as the sum (and its gradient in
        this block's backward), for :class:`Sequential` when a ReLU follows."""
        x = self._input(x)
        with _ForwardScope(self):
            y = self.body.forward(x)
            s = x if self.shortcut is None else self.shortcut.forward(x)
            self._check(y.shape, s.shape)
            out = F.add(y, s, relu=relu)
        self._save(out if relu else None)
        return out

    def _backward(self, dy, need_dx):
        out = self._restore()
        if out is not None:  # the fused ReLU's gradient, before the branches
            dy = F.relu_backward(dy, out)
        grads = [dy] if self.shortcut is None else [self.shortcut._backward(dy, need_dx)]
        grads.insert(0, self.body._backward(dy, need_dx))
        return self._branch_grads(grads, need_dx)

    def _label(self):
        return "Residual (body + " + ("x)" if self.shortcut is None else "shortcut)")


class Concat(_Branches):
    """Every branch applied to x, the outputs concatenated along ``dim``: Inception / DenseNet
    blocks (``Concat(Identity(), Sequential(...), dim=1)`` appends new channels to x).

    Parameters
    ----------
    *branches : Module
        At least one; their outputs must agree in every dimension but ``dim`` (checked).
    dim : int, default 1
        The axis of the concatenation (negative counts from the end).

    Backward splits dy along ``dim`` into each branch's part and sums the branches' input
    gradients. The branches are named ``"0"``, ``"1"``, ... (state-dict keys ``"0.weight"``, ...).
    """

    def __init__(self, *branches, dim=1):
        super().__init__()
        if not branches:
            raise ValueError("Concat needs at least one branch")
        self.branches = [_check_module(b, f"Concat: branch {i}") for i, b in enumerate(branches)]
        self.dim = integer(dim, "Concat: dim")

    def named_children(self):
        return [(str(i), b) for i, b in enumerate(self.branches)]

    def __getitem__(self, i):
        return self.branches[i]

    def __len__(self):
        return len(self.branches)

    def _axis(self, ndim):
        if not -ndim <= self.dim < ndim:
            raise ValueError(f"Concat: dim {self.dim} is out of range for {ndim}-D branch outputs")
        return self.dim % ndim

    def _check(self, shapes):
        shapes = [tuple(s) for s in shapes]
        axis = self._axis(len(shapes[0]))
        for i, s in enumerate(shapes):
            if len(s) != len(shapes[0]) or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]:
                raise ValueError(f"Concat: branch outputs must match except in dimension {axis}: "
                                 f"branch 0 gives {shapes[0]}, branch {i} gives {s}")
        return axis

    def output_shape(self, shape):
        shapes = [tuple(b.output_shape(shape)) for b in self.branches]
        axis = self._check(shapes)
        return shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:]

    def forward(self, x):
        """The branches' outputs concatenated along ``dim``."""
        x = self._input(x)
        with _ForwardScope(self):
            outs = [b.forward(x) for b in self.branches]
            axis = self._check([o.shape for o in outs])
            self._save((axis, [int(o.shape[axis]) for o in outs]))
            return F.cat(outs, axis)

    def _backward(self, dy, need_dx):
        axis, sizes = self._restore()
        parts = F.split(dy, sizes, axis)
        grads = [self.branches[i]._backward(parts[i], need_dx) for i in range(len(parts) - 1, -1, -1)]
        return self._branch_grads(grads[::-1], need_dx)

    def _label(self):
        return f"Concat(dim={self.dim})"
