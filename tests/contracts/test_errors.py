"""The error contract: bad input is a ValueError/TypeError naming the shapes, values or argument,
raised before anything runs or changes; never a Numba typing error, a KeyError or a crash.

``ERRORS`` is the table: one row per (call, bad input, exception, message fragments). A row whose
call takes the tier runs on every tier; the others (constructors, seeds, backend names) run once.
Each row's id starts with the check it replaced, so a failure names the rule it broke. Checks that
need more than the raise (nothing changed, the default kept, input accepted) follow the table.
"""
import re

import numpy as np
import pytest

import fastconv
import fastconv as fc
import fastconv.functional as F
from fastconv import _backend
from fastconv.optim import SGD, OneCycleLR

from helpers import ALL_TIERS, host

X = np.zeros((2, 3, 6, 6), np.float32)
W = np.zeros((4, 3, 3, 3), np.float32)


def raises(exc, *fragments, match=None):
    """``pytest.raises`` whose message must contain every fragment (literally) and, if given,
    match the regular expression ``match``."""
    literal = "".join(f"(?=.*{re.escape(f)})" for f in fragments)
    return pytest.raises(exc, match="(?s)" + literal + (f"(?=.*{match})" if match else ""))


def on_tiers(check, *calls):
    """Rows ``check-<i>`` for each call of ``calls``: ``(call(tier), exc, fragments, match)``."""
    return [(f"{check}-{i}" if len(calls) > 1 else check, True) + c for i, c in enumerate(calls)]


def once(check, *calls):
    """As :func:`on_tiers`, for calls that do not take a tier (run once)."""
    return [(f"{check}-{i}" if len(calls) > 1 else check, False) + c for i, c in enumerate(calls)]


def err(call, exc, *fragments, match=None):
    return (call, exc, fragments, match)


def max_pool(tier):
    """``(out, switches)`` of a valid 2x2 max pooling of ``X``."""
    return F.max_pool2d(X, 2, backend=tier)


def switches_with(tier, value):
    out, switches = max_pool(tier)
    bad = host(switches).copy()
    bad[1, 2, 0, 1] = value
    return out, bad


def device(a):
    from numba import cuda  # the simulator, set up by conftest
    return cuda.to_device(a)


_BAD_DTYPES = [np.full((2, 3, 6, 6), "a"), np.zeros((2, 3, 6, 6), dtype=object),
               np.zeros((2, 3, 6, 6), dtype="datetime64[s]")]
_POOL_BACKWARD_ARGS = (np.zeros((2, 3, 3, 3)), np.zeros((2, 3, 3, 3), np.int64), X.shape)

ERRORS = [
    # --- convolution
    *on_tiers("x_must_be_4d", err(lambda t: F.conv2d(X[0], W, backend=t), ValueError, "x", "(3, 6, 6)")),
    *on_tiers("w_must_be_4d", err(lambda t: F.conv2d(X, W[:, :, :, 0], backend=t), ValueError, "w", "(4, 3, 3)")),
    *on_tiers("channel_mismatch", err(lambda t: F.conv2d(X, W[:, :2], backend=t), ValueError,
                                      "channel", "(2, 3, 6, 6)", "(4, 2, 3, 3)")),
    *on_tiers("kernel_larger_than_padded_input", *[
        err(lambda t, ws=ws, p=p: F.conv2d(X, np.zeros(ws, np.float32), padding=p, backend=t), ValueError,
            "larger", *fragments)
        for ws, p, fragments in [((1, 3, 7, 3), 0, ("7x3", "6x6")), ((1, 3, 9, 9), 1, ("9x9", "8x8")),
                                 ((1, 3, 3, 8), (0, 0), ("3x8", "6x6")), ((1, 3, 3, 8), "valid", ("3x8", "6x6"))]]),
    *on_tiers("stride_below_one", *[
        err(call, ValueError, "stride", shown)
        for stride, shown in [(0, "(0, 0)"), (-1, "(-1, -1)"), ((1, 0), "(1, 0)")]
        for call in (lambda t, s=stride: F.conv2d(X, W, stride=s, backend=t),
                     lambda t, s=stride: F.max_pool2d(X, 2, s, backend=t),
                     lambda t, s=stride: F.avg_pool2d(X, 2, s, backend=t))]),
    *on_tiers("stride_of_the_wrong_type", *[
        err(lambda t, s=stride: F.conv2d(X, W, stride=s, backend=t), (TypeError, ValueError), "stride")
        for stride in [1.5, "2", (1, 2, 3), None]]),
    *on_tiers("negative_padding", *[
        err(lambda t, p=padding: F.conv2d(X, W, padding=p, backend=t), ValueError, "padding", shown)
        for padding, shown in [(-1, "(-1, -1)"), ((0, -2), "(0, -2)")]]),
    *on_tiers("unknown_padding_word", *[
        err(lambda t, p=padding: F.conv2d(X, W, padding=p, backend=t), ValueError, "padding", repr(padding))
        for padding in ["full", "SAMEish", ""]]),
    *on_tiers("same_padding_needs_stride_one",
              err(lambda t: F.conv2d(X, W, stride=2, padding="same", backend=t), ValueError, "same", "(2, 2)")),
    *on_tiers("bias_of_the_wrong_length", *[
        err(lambda t, s=b_shape: F.conv2d(X, W, np.zeros(s, np.float32), backend=t), ValueError,
            "bias", str(b_shape), "(4,)")
        for b_shape in [(3,), (5,), (4, 1), (1, 4)]]),
    *on_tiers("conv_backward_dout_of_the_wrong_shape", *[
        err(lambda t, s=dout_shape: F.conv2d_backward(np.zeros(s, np.float32), F.conv2d(X, W, backend=t)[1]),
            ValueError, "dout", str(dout_shape), "(2, 4, 4, 4)")
        for dout_shape in [(2, 4, 4, 5), (2, 3, 4, 4), (1, 4, 4, 4), (2, 4, 16)]]),
    # --- dtypes
    *on_tiers("complex_input_is_a_type_error", *[
        err(lambda t, w=which: F.conv2d(*[a.astype(np.complex64) if name == w else a
                                          for name, a in (("x", X), ("w", W), ("b", np.zeros(4, np.float32)))],
                                        backend=t), TypeError, which, "complex")
        for which in ["x", "w", "b"]]),
    *on_tiers("complex_pooling_input_is_a_type_error",
              err(lambda t: F.max_pool2d(X.astype(np.complex128), backend=t), TypeError, "complex"),
              err(lambda t: F.avg_pool2d(X.astype(np.complex128), backend=t), TypeError, "complex"),
              err(lambda t: F.max_pool2d_backward(np.zeros((2, 3, 3, 3), np.complex64),
                                                  np.zeros((2, 3, 3, 3), np.int64), X.shape, backend=t),
                  TypeError, "complex")),
    *on_tiers("string_object_and_other_arrays_are_type_errors", *[
        err(call, TypeError, str(bad.dtype)) for bad in _BAD_DTYPES
        for call in (lambda t, a=bad: F.conv2d(a, W, backend=t), lambda t, a=bad: F.max_pool2d(a, backend=t),
                     lambda t, a=bad: F.conv2d(X, a[:, :, :3, :3].reshape(2, 3, 3, 3)[:1], backend=t))]),
    *on_tiers("device_array_with_an_explicit_host_backend_is_a_type_error",
              err(lambda t: F.conv2d(device(np.ones((1, 1, 4, 4), np.float32)), np.ones((1, 1, 3, 3), np.float32),
                                     backend=t), TypeError, match="device array.*to_numpy"),
              err(lambda t: F.relu(device(np.ones((1, 1, 4, 4), np.float32)), backend=t), TypeError,
                  match="device array")),
    *once("device_array_with_an_explicit_host_backend_is_a_type_error-backward",
          err(lambda: F.conv2d_backward(device(np.ones((1, 1, 2, 2), np.float32)),
                                        F.conv2d(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 3, 3), np.float32),
                                                 backend="cpu")[1]), TypeError, match="device array")),
    # --- pooling
    *on_tiers("pool_window_larger_than_the_input", *[
        err(call, ValueError, fragment, "6x6")
        for kernel, fragment in [(7, "7x7"), ((2, 7), "2x7"), ((8, 1), "8x1")]
        for call in (lambda t, k=kernel: F.max_pool2d(X, k, 1, backend=t),
                     lambda t, k=kernel: F.avg_pool2d(X, k, 1, backend=t),
                     lambda t, k=kernel: F.avg_pool2d_backward(np.zeros((2, 3, 1, 1), np.float32), X.shape, k, 1,
                                                               backend=t))]),
    *on_tiers("pool_input_must_be_4d", err(lambda t: F.max_pool2d(X[0], backend=t), ValueError, "(3, 6, 6)"),
              err(lambda t: F.avg_pool2d(X[0], backend=t), ValueError, "(3, 6, 6)")),
    *on_tiers("switches_whose_shape_does_not_match_dout",
              err(lambda t: F.max_pool2d_backward(max_pool(t)[0], host(max_pool(t)[1])[..., :2], X.shape, backend=t),
                  ValueError, "switches", "(2, 3, 3, 2)", "(2, 3, 3, 3)")),
    *on_tiers("dout_that_cannot_come_from_the_input_shape",
              err(lambda t: F.max_pool2d_backward(*max_pool(t), (2, 4, 6, 6), backend=t), ValueError,
                  "(2, 3, 3, 3)", "(2, 4, 6, 6)"),
              err(lambda t: F.max_pool2d_backward(*max_pool(t), (2, 3, 6), backend=t), ValueError,
                  "input_shape", "(2, 3, 6)"),
              err(lambda t: F.avg_pool2d_backward(np.zeros((2, 3, 2, 2), np.float32), X.shape, 2, backend=t),
                  ValueError, "dout", "(2, 3, 2, 2)", "(2, 3, 3, 3)")),
    *on_tiers("out_of_range_switch_values", *[
        err(lambda t, v=value: F.max_pool2d_backward(*switches_with(t, v), X.shape, backend=t), ValueError,
            "[0, 36)", "(2, 3, 6, 6)")
        for value in [-1, 36, 2**40]]),
    *on_tiers("float_switches_are_a_type_error",
              err(lambda t: F.max_pool2d_backward(max_pool(t)[0], host(max_pool(t)[1]).astype(np.float64), X.shape,
                                                  backend=t), TypeError, "switches", "float64")),
    # --- im2col / col2im
    *on_tiers("im2col_and_col2im_bad_shapes",
              err(lambda t: F.im2col(X[0], 3, backend=t), ValueError, "(3, 6, 6)"),
              err(lambda t: F.col2im(np.zeros((27, 5)), X.shape, 3, backend=t), ValueError,
                  "cols", "(27, 5)", "(27, 32)"),
              err(lambda t: F.col2im(np.zeros((27, 32)), (3, 6, 6), 3, backend=t), ValueError,
                  "input_shape", "(3, 6, 6)")),
    # --- batch norm
    *on_tiers("batch_norm_backward_rejects_a_transposed_gradient",
              err(lambda t: F.batch_norm_backward(
                  np.ones((2, 3, 5, 4), np.float32),
                  F.batch_norm(np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32),
                               np.ones(3, np.float32), np.zeros(3, np.float32), backend=t)[1]),
                  ValueError, match=r"dout has shape \(2, 3, 5, 4\), expected \(2, 3, 4, 5\)")),
    # --- backend names
    *once("unknown_backend_in_functional_calls", *[
        err(call, ValueError, "backend", repr(name), "naive", "cpu")
        for name in ["bogus", "CPU", "gpu", ""]
        for call in (lambda n=name: F.conv2d(X, W, backend=n), lambda n=name: F.max_pool2d(X, backend=n),
                     lambda n=name: F.avg_pool2d(X, backend=n), lambda n=name: F.im2col(X, 3, backend=n),
                     lambda n=name: F.avg_pool2d_backward(np.zeros((2, 3, 3, 3)), X.shape, backend=n),
                     lambda n=name: F.max_pool2d_backward(*_POOL_BACKWARD_ARGS, backend=n))]),
    # --- arguments of layers, seeds and the rest of the package
    *once("dropout_seed_errors_name_the_seed", *[
        err(lambda s=seed: F.dropout(np.ones(4, np.float32), 0.5, s), exc, "seed")
        for seed, exc in [(None, TypeError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]]),
    *once("a_non_integer_size_is_always_a_type_error", *[err(make, TypeError) for make in [
        lambda: fc.Conv2d(1, 2, 2.5), lambda: fc.Conv2d(1.5, 2, 3), lambda: fc.Conv2d(1, "2", 3),
        lambda: fc.Linear(2.0, 3), lambda: fc.BatchNorm2d(None), lambda: fc.MaxPool2d(2.5)]]),
    *once("a_non_positive_size_is_always_a_value_error", *[err(make, ValueError) for make in [
        lambda: fc.Conv2d(0, 2, 3), lambda: fc.Conv2d(1, 2, 0), lambda: fc.Linear(3, -1), lambda: fc.MaxPool2d(0)]]),
    # (fc.Linear(2.0, 3) was here too: a literal duplicate of the row above)
    *once("a_wrong_type_is_a_type_error_across_the_package", *[err(make, TypeError) for make in [
        lambda: fc.Conv2d(1, 2, 3, groups=1.5), lambda: fc.GroupNorm(2, 4.0),
        lambda: fc.PReLU(num_parameters=2.5), lambda: fc.BatchNorm2d(3, eps="1e-5"),
        lambda: fc.Sequential(fc.Flatten()).predict(np.zeros((2, 3)), batch_size=2.5),
        lambda: fc.Ensemble([fc.Sequential(fc.Flatten())]).predict(np.zeros((2, 3)), batch_size=2.5),
        lambda: OneCycleLR(SGD([fc.Parameter(np.zeros(2))], lr=0.1), 1.0, total_steps=10.0),
        lambda: fc.losses.CrossEntropyLoss(label_smoothing="0.1"), lambda: fc.losses.class_weights([0, 1], 2.0)]]),
]


def _cases():
    for check, tiered, call, exc, fragments, match in ERRORS:
        if tiered:
            for tier in ALL_TIERS:
                yield pytest.param(tier, call, exc, fragments, match, id=f"{check}-{tier}")
        else:
            yield pytest.param(None, call, exc, fragments, match, id=check)


@pytest.mark.parametrize("tier, call, exc, fragments, match", list(_cases()))
def test_bad_input_is_a_clear_error(tier, call, exc, fragments, match):
    with raises(exc, *fragments, match=match):
        call(tier) if tier is not None else call()


def test_the_table_has_unique_ids():
    ids = [row[0] for row in ERRORS]
    assert len(ids) == len(set(ids))


# --- raised before anything changes -------------------------------------------------------------

@pytest.fixture(params=ALL_TIERS)
def backend(request):
    return request.param


def test_batch_norm_rejects_running_stats_of_the_wrong_shape_before_changing_them(backend):
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    w, b = np.ones(3, np.float32), np.zeros(3, np.float32)
    rm, rv = np.full(3, 0.5, np.float32), np.full(4, 2.0, np.float32)
    with pytest.raises(ValueError, match=r"running_var has shape \(4,\), expected \(3,\)"):
        F.batch_norm(x, w, b, rm, rv, training=True, backend=backend)
    assert np.all(rm == 0.5) and np.all(rv == 2.0)


def test_batchnorm_layer_counts_a_batch_only_after_it_validated():
    layer = fc.BatchNorm2d(3)
    with pytest.raises(ValueError):
        layer(np.ones((1, 3, 1, 1), np.float32))  # one value per channel: cannot train
    assert int(layer.num_batches_tracked) == 0


def test_unknown_backend_in_set_backend_leaves_the_default(monkeypatch):
    monkeypatch.setitem(_backend._state, "name", "naive")
    with raises(ValueError, "backend", "'bogus'"):
        fastconv.set_backend("bogus")
    assert fastconv.get_backend() == "naive"


def test_unknown_backend_in_the_environment(monkeypatch):
    monkeypatch.setenv("FASTCONV_BACKEND", "bogus")
    monkeypatch.setitem(_backend._state, "name", None)  # forget any earlier choice; restored after
    with raises(ValueError, "backend", "'bogus'"):
        fastconv.get_backend()
    with raises(ValueError, "backend", "'bogus'"):
        F.conv2d(X, W)
    fastconv.set_backend("cpu")  # an explicit choice overrides the bad environment
    assert fastconv.get_backend() == "cpu"


def test_resolve_names_the_device_rule():
    assert _backend.check_host("cpu", np.ones(2)) == "cpu"


def test_model_load_of_a_foreign_npz_says_it_is_not_a_model_file(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, names=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a fastconv model file"):
        fc.Sequential(fc.Linear(2, 2)).load(path)


# --- accepted: nested lists where arrays are expected -------------------------------------------

def test_switches_given_as_nested_lists_are_accepted(backend):
    out, switches = F.max_pool2d(X, 2, backend=backend)
    expected = F.max_pool2d_backward(out, switches, X.shape, backend=backend)
    got = F.max_pool2d_backward(host(out).tolist(), host(switches).tolist(), X.shape, backend=backend)
    np.testing.assert_array_equal(host(got), host(expected))


@pytest.mark.parametrize("layer", [fc.MaxPool2d(2), fc.Flatten(), fc.ReLU(), fc.AvgPool2d(2), fc.Dropout(0.5)])
def test_parameterless_layers_take_nested_lists(layer):
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    out = layer(x.tolist())
    assert isinstance(out, np.ndarray) and out.shape == layer.output_shape(x.shape)
