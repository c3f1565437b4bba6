"""ONNX in and out: :func:`export` a fastconv model to an ONNX file, :func:`load` an ONNX CNN
(for instance one written by ``torch.onnx.export``) as a fastconv :class:`~fastconv.Sequential`,
with :class:`~fastconv.Residual` (an Add of two branches) and :class:`~fastconv.Concat` blocks.

Needs the ``onnx`` package (``pip install fastconv[onnx]``); ``import fastconv`` never imports
it. ``python -m fastconv.onnx export|check|run`` is the command-line front end.

Adding a layer is one exporter (``@exporter("ClassName")`` in :mod:`fastconv.onnx.exporters`) and
one importer (``@importer("OpType")`` in :mod:`fastconv.onnx.importers`; constant ops are folded
by :mod:`fastconv.onnx.folding`); both registries are
keyed by name, and an entry for a class fastconv does not have is inert.
"""
try:
    import onnx  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastconv.onnx needs the onnx package: pip install fastconv[onnx]") from exc

from .export import EXPORT_OPSETS, export, to_onnx
from .exporters import exportable_layers
from .folding import FOLD_LIMIT
from .load import IMPORT_OPSETS, MAX_NESTING, importable_ops, load, read_model

__all__ = ["export", "to_onnx", "load", "read_model", "exportable_layers", "importable_ops",
           "EXPORT_OPSETS", "IMPORT_OPSETS", "FOLD_LIMIT", "MAX_NESTING"]
