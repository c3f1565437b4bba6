"""Pictures of a network: learned filters, feature maps, the patterns each filter responds to
most, saliency maps, a confusion matrix, the worst mistakes.

Needs matplotlib, the optional extra (``pip install fastconv[plot]``); it is imported only when a
picture is drawn, so ``import fastconv.viz`` works without it and the NumPy helpers
(:func:`confusion_matrix`, :func:`worst_k`, :func:`feature_maps`, :func:`filter_patterns`,
:func:`saliency`) never need it.

Every picture is drawn on matplotlib's Agg canvas (no pyplot, no display, no global state) and
written as a PNG atomically: to a temporary file in the target's folder, then renamed over it.
A picture is a function of its inputs only, so the same model and input give the same bytes;
its size in pixels is ``figsize * dpi`` (each function takes both).

    from fastconv import viz
    viz.plot_filters(model[0], "filters.png")
    viz.plot_feature_maps(model, x_test[7], "maps.png")
    viz.plot_filter_patterns(model, "3", "patterns.png", value_range=(x_train.min(), x_train.max()))
    viz.plot_saliency(model, x_test[:8], "saliency.png", y=y_test[:8])
    viz.plot_confusion(y_test, model.predict(x_test).argmax(1), "confusion.png")
    viz.plot_mistakes(model, x_test, y_test, "mistakes.png", k=25)
    viz.plot_mistake_saliency(model, x_test, y_test, "mistake_saliency.png", k=8)

The modules: ``filters`` (filters, feature maps), ``patterns`` (activation maximisation),
``saliency``, ``mistakes`` (confusion matrix, worst mistakes) and ``_figure`` (the figure, the
atomic write and the helpers they share). The gradient pictures run on a private copy of the
model (``_backprop``), so they never change its weights, gradients or modes.
"""
from ._figure import new_figure, save_figure
from .filters import feature_maps, plot_feature_maps, plot_filters
from .mistakes import confusion_matrix, per_sample_loss, plot_confusion, plot_mistakes, worst_k
from .patterns import filter_patterns, plot_filter_patterns
from .saliency import plot_mistake_saliency, plot_saliency, saliency

__all__ = ["new_figure", "save_figure", "plot_filters", "feature_maps", "plot_feature_maps",
           "filter_patterns", "plot_filter_patterns", "saliency", "plot_saliency", "plot_mistake_saliency",
           "confusion_matrix", "plot_confusion", "per_sample_loss", "worst_k", "plot_mistakes"]

# The helpers fastconv.viz had when it was one module, for code that imports them from here
# (fastconv.trainer may draw with _matplotlib, new_figure and save_figure).
from ._figure import (INSTALL, _display, _grid_columns, _matplotlib, _mosaic,  # noqa: E402,F401
                      _positive_int, _short, _size)
from .filters import _leaves, _one_input  # noqa: E402,F401
from .mistakes import _labels, _worst  # noqa: E402,F401
