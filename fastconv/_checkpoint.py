"""The :class:`fastconv.Trainer` checkpoint: its format, and how a file is checked before it is
loaded.

A checkpoint is an ``.npz`` of :func:`fastconv.optim.flatten_state` of ``{"format": 1, "epoch",
"seed", "model", "optimizer", "scheduler", "history", "early_stopping"}``: the structure and the
Python values in one JSON string (``__meta__``), every array under its own key.

:func:`load` checks the whole file before anything is loaded or allocated: the arrays' keys,
dtypes and shapes from their ``.npy`` headers (:class:`fastconv._npz.NpzReader`), the structure
and the type of every value (a malformed checkpoint), and that it was written by the same run
(settings, model, optimizer, scheduler: a different run). Only then are the arrays read, whose
sizes are bounded by the model's; any problem is a ValueError naming the file.
"""
import json
import math
import numbers
import os

import numpy as np

from ._npz import NpzReader

FORMAT = 1
#: The run settings a resumed run must share with the run that wrote the checkpoint.
RESUME_SETTINGS = ("batch_size", "samples", "shuffle", "augment", "validation_split",
                   "validation_samples", "early_stopping", "loss", "optimizer", "scheduler")
#: History lists (one entry per epoch) and whether an entry may be None.
_HISTORY_LISTS = {"loss": False, "accuracy": False, "val_loss": True, "val_accuracy": True, "lr": False,
                  "seconds": False, "images_per_second": False}
_KEYS = {"format", "epoch", "seed", "model", "optimizer", "scheduler", "history", "early_stopping"}
#: Largest ``__meta__`` (the JSON text, 4 bytes a character) and deepest nesting accepted: a
#: checkpoint's are a few KiB and 6 levels; these only stop a crafted file.
MAX_META_BYTES = 64 << 20
MAX_DEPTH = 32


class _Lazy:
    """An array of the file not read yet: its key and its header's shape and dtype."""

    def __init__(self, key, header):
        self.key, self.shape, self.dtype = key, header.shape, header.dtype


class _Malformed(Exception):
    pass


def _is_array(v):
    return isinstance(v, (np.ndarray, _Lazy))


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _is_count(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)) and v >= 0


def load(path, model, optimizer, scheduler, params, seed):
    """The checked state of the checkpoint at ``path``, arrays read (None when there is no file)."""
    if not os.path.exists(path):
        return None
    with NpzReader(path, f"checkpoint {path}") as archive:
        state = _decode_meta(archive, path)
        check(state, path, model, optimizer, scheduler, params, seed)
        return _read_arrays(state, archive)


def _decode_meta(archive, path):
    """The structure of the file with :class:`_Lazy` for its arrays (scalars read)."""
    meta = archive.headers.get("__meta__")
    if meta is None or meta.dtype.kind != "U" or meta.shape != ():
        raise ValueError(f"{path} is not a fastconv Trainer checkpoint (format {FORMAT})")
    if meta.nbytes > MAX_META_BYTES:
        raise _malformed(path, f"its metadata is {meta.nbytes:,} bytes (at most {MAX_META_BYTES:,})")
    try:
        tree = json.loads(str(archive.read("__meta__")[()]))
    except (ValueError, RecursionError) as exc:
        raise _malformed(path, f"its metadata is not valid JSON ({type(exc).__name__})") from None
    used = set()

    def dec(obj, where, depth):
        if depth > MAX_DEPTH:
            raise _Malformed(f"it is nested more than {MAX_DEPTH} levels deep at {where or 'the top'}")
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        if (isinstance(obj, dict) and set(obj) == {"nd", "scalar"} and isinstance(obj["nd"], str)
                and isinstance(obj["scalar"], bool)):
            key, header = obj["nd"], archive.headers.get(obj["nd"])
            if header is None or key == "__meta__" or key in used:
                raise _Malformed(f"{where} refers to array {key!r}, which the file does not hold"
                                 + " (again)" * (key in used))
            used.add(key)
            if header.dtype.kind not in "biuf":
                raise _Malformed(f"array {key!r} has dtype {header.dtype}, not a real numeric type")
            if obj["scalar"]:
                if header.shape != ():
                    raise _Malformed(f"scalar {key!r} has shape {header.shape}")
                return archive.read(key)[()]
            return _Lazy(key, header)
        if isinstance(obj, dict) and len(obj) == 1:
            (tag, items), = obj.items()
            if tag in ("list", "tuple") and isinstance(items, list):
                seq = [dec(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(items)]
                return seq if tag == "list" else tuple(seq)
            if tag == "dict" and isinstance(items, list):
                out = {}
                for item in items:
                    if (not isinstance(item, list) or len(item) != 2 or isinstance(item[0], bool)
                            or not isinstance(item[0], (int, str)) or item[0] in out):
                        raise _Malformed(f"{where or 'the top'} has a bad or repeated entry name")
                    out[item[0]] = dec(item[1], f"{where}.{item[0]}" if where else str(item[0]), depth + 1)
                return out
        raise _Malformed(f"{where or 'the top'} is not a value flatten_state writes")

    try:
        state = dec(tree, "", 0)
    except _Malformed as exc:
        raise _malformed(path, str(exc)) from None
    unused = sorted(set(archive.headers) - used - {"__meta__"})
    if unused:
        raise _malformed(path, f"it holds arrays its metadata does not name: {unused[:5]}"
                               + (f" and {len(unused) - 5} more" if len(unused) > 5 else ""))
    return state


def _malformed(path, why):
    return ValueError(f"checkpoint {path} is malformed: {why}; nothing was loaded")


def _read_arrays(obj, archive):
    if isinstance(obj, _Lazy):
        return archive.read(obj.key)
    if isinstance(obj, dict):
        return {k: _read_arrays(v, archive) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_read_arrays(v, archive) for v in obj)
    return obj


def check(state, path, model, optimizer, scheduler, params, seed):
    """Raise a ValueError naming ``path`` unless ``state`` (arrays or :class:`_Lazy`) is a
    well-formed checkpoint of this run that loads into ``model``, ``optimizer`` and ``scheduler``."""
    if not isinstance(state, dict) or not _is_count(state.get("format")) or state["format"] != FORMAT:
        raise ValueError(f"{path} is not a fastconv Trainer checkpoint (format {FORMAT})")
    try:
        _check_structure(state, optimizer, scheduler)
    except _Malformed as exc:
        raise _malformed(path, str(exc)) from None
    if seed is not None and seed != state["seed"]:
        raise ValueError(f"checkpoint {path} was written by a run with seed={state['seed']}; "
                         f"pass seed={state['seed']} (or None) to resume it")
    saved = state["history"]["params"]
    problems = [f"{key}={saved.get(key)!r} there, {key}={params[key]!r} here"
                for key in RESUME_SETTINGS if saved.get(key) != params[key]]
    current = model.state_dict()
    problems += state_mismatches("model", state["model"], current, dtypes=True)
    if state["early_stopping"]["best_state"] is not None:
        best = state["early_stopping"]["best_state"]
        problems += state_mismatches("early_stopping best_state", best, current, dtypes=True)
    problems += optimizer_mismatches(state["optimizer"], optimizer)
    if scheduler is not None and state["scheduler"] is not None:
        keys, want = set(state["scheduler"]), set(scheduler.state_dict())
        if keys != want:
            problems.append(f"scheduler state keys {sorted(keys)} there, {sorted(want)} here")
    if problems:
        raise ValueError(f"checkpoint {path} was written by a different run: " + "; ".join(problems)
                         + ". Resuming would not reproduce it; nothing was loaded")


def _require(ok, why):
    if not ok:
        raise _Malformed(why)


def _check_structure(state, optimizer, scheduler):
    """Every entry is there with a value of the type the trainer reads (raises _Malformed)."""
    _require(set(state) == _KEYS, f"its entries are {sorted(map(str, state))}, not {sorted(_KEYS)}")
    epoch = state["epoch"]
    _require(_is_count(epoch), f"epoch is {epoch!r}, not a count of epochs")
    _require(_is_count(state["seed"]), f"seed is {state['seed']!r}, not an int >= 0")
    _check_arrays("model", state["model"])

    opt = state["optimizer"]
    _require(isinstance(opt, dict) and set(opt) == {"state", "param_groups"},
             "optimizer is not {'state': ..., 'param_groups': [...]}")
    _require(isinstance(opt["param_groups"], list) and all(isinstance(g, dict) for g in opt["param_groups"]),
             "optimizer param_groups is not a list of dicts")
    for i, group in enumerate(opt["param_groups"]):
        _require(isinstance(group.get("params"), list) and all(map(_is_count, group["params"])),
                 f"optimizer group {i} params is not a list of parameter indices")
        lr = group.get("lr")
        _require(_is_number(lr) and math.isfinite(lr) and lr >= 0,
                 f"optimizer group {i} lr is {lr!r}, not a number >= 0")
        if i < len(optimizer.param_groups):
            mine = {k: v for k, v in optimizer.param_groups[i].items() if k != "params"}
            _check_kinds(f"optimizer group {i}", {k: v for k, v in group.items() if k != "params"}, mine)
    _require(isinstance(opt["state"], dict) and all(map(_is_count, opt["state"])),
             "optimizer state is not a dict by parameter index")
    for i, pstate in opt["state"].items():
        _require(isinstance(pstate, dict) and all(isinstance(k, str) for k in pstate),
                 f"optimizer state {i} is not a dict by name")
        for key, value in pstate.items():
            _require(_is_array(value) or _plain(value), f"optimizer state {i}.{key} is {_what(value)}")

    if state["scheduler"] is not None:
        _require(isinstance(state["scheduler"], dict), "scheduler is not a dict (or None)")
        _check_kinds("scheduler", state["scheduler"], scheduler.state_dict() if scheduler is not None else {})

    history = state["history"]
    fields = set(_HISTORY_LISTS) | {"epoch", "params", "best_epoch", "stopped_epoch"}
    _require(isinstance(history, dict) and set(history) == fields,
             f"history is not a dict of {sorted(fields)}")
    _require(isinstance(history["epoch"], list) and len(history["epoch"]) == epoch  # before range(epoch)
             and history["epoch"] == list(range(epoch)), f"history epochs are not 0 to {epoch - 1}")
    for name, optional in _HISTORY_LISTS.items():
        values = history[name]
        _require(isinstance(values, list) and len(values) == epoch
                 and all(_is_number(v) or (optional and v is None) for v in values),
                 f"history {name} is not a list of {epoch} numbers")
    _require(isinstance(history["params"], dict) and _plain(history["params"]),
             "history params is not a dict of settings")
    for name in ("best_epoch", "stopped_epoch"):
        _require(history[name] is None or (_is_count(history[name]) and history[name] < epoch),
                 f"history {name} is {history[name]!r}, not an epoch before {epoch} (or None)")

    es = state["early_stopping"]
    _require(isinstance(es, dict) and set(es) == {"best_loss", "best_state", "wait", "stopped"},
             "early_stopping is not a dict of best_loss, best_state, wait and stopped")
    _require(_is_number(es["best_loss"]), f"early_stopping best_loss is {es['best_loss']!r}, not a number")
    _require(_is_count(es["wait"]), f"early_stopping wait is {es['wait']!r}, not an int >= 0")
    _require(isinstance(es["stopped"], bool), f"early_stopping stopped is {es['stopped']!r}, not a bool")
    if es["best_state"] is not None:
        _check_arrays("early_stopping best_state", es["best_state"])


def _check_arrays(what, d):
    _require(isinstance(d, dict) and all(isinstance(k, str) and _is_array(v) for k, v in d.items()),
             f"{what} is not a dict of arrays by name")


def _plain(v):
    """A value of settings or hyper-parameters: numbers, bools, None, text and lists and dicts of them."""
    if isinstance(v, (list, tuple)):
        return all(map(_plain, v))
    if isinstance(v, dict):
        return all(map(_plain, v.values()))
    return v is None or isinstance(v, (bool, str, np.bool_)) or _is_number(v)


def _what(v):
    return f"a {type(v).__name__}" if not _plain(v) else repr(v)


def _kind(v):
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if _is_number(v):
        return "number"
    if isinstance(v, (list, tuple)):
        return "list"
    return "dict" if isinstance(v, dict) else type(v).__name__


def _check_kinds(what, saved, mine):
    """``saved`` holds plain values, each of the kind of ``mine``'s value of the same name."""
    _require(all(isinstance(k, (str, int)) for k in saved) and _plain(saved),
             f"{what} holds a value that is not a number, bool, None, text or a list or dict of them")
    for key in set(saved) & set(mine):
        a, b = saved[key], mine[key]
        if a is None or b is None:  # optional settings (max_norm) and state not set yet
            continue
        _require(_kind(a) == _kind(b), f"{what} {key} is {a!r} where this run has {b!r}")
        if isinstance(a, dict):
            _check_kinds(f"{what} {key}", a, b)
        elif isinstance(a, (list, tuple)) and len(a) == len(b):
            _check_kinds(f"{what} {key}", dict(enumerate(a)), dict(enumerate(b)))


def state_mismatches(what, saved, current, dtypes):
    """Differences between two ``{key: array}`` states: keys, shapes and (``dtypes``) dtypes."""
    problems = []
    missing, unexpected = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    if missing or unexpected:
        problems.append(f"{what} keys differ (missing {missing}, unexpected {unexpected})")
    for key in sorted(set(saved) & set(current)):
        a, b = saved[key], current[key]
        a, b = (a if isinstance(a, _Lazy) else np.asarray(a)), np.asarray(b)
        if a.shape != b.shape:
            problems.append(f"{what} {key} has shape {a.shape} there, {b.shape} here")
        elif dtypes and a.dtype != b.dtype:
            problems.append(f"{what} {key} is {a.dtype} there, {b.dtype} here")
    return problems


def optimizer_mismatches(saved, optimizer):
    """Why ``optimizer.load_state_dict(saved)`` would fail or load another setup's state."""
    groups = optimizer.param_groups
    if len(saved["param_groups"]) != len(groups):
        return [f"optimizer has {len(saved['param_groups'])} parameter groups there, {len(groups)} here"]
    problems, params = [], []
    for i, (old, new) in enumerate(zip(saved["param_groups"], groups)):
        if len(old["params"]) != len(new["params"]):
            problems.append(f"optimizer group {i} has {len(old['params'])} parameters there, "
                            f"{len(new['params'])} here")
        keys, want = set(old) - {"params"}, set(new) - {"params"}
        if keys != want:
            problems.append(f"optimizer group {i} hyper-parameters {sorted(keys)} there, {sorted(want)} here")
        params.extend(zip(old["params"], new["params"]))
    index = dict(params)
    for i, pstate in saved["state"].items():
        p = index.get(int(i))
        if p is None:
            problems.append(f"optimizer state for parameter {i}, which this optimizer does not have")
            continue
        for key, value in pstate.items():
            if _is_array(value) and value.shape != tuple(p.data.shape):
                problems.append(f"optimizer state {i}.{key} has shape {value.shape} there, "
                                f"{tuple(p.data.shape)} here")
    return problems


def nonfinite(state):
    """The names of the model's and the optimizer's arrays (and numbers) in a checkpoint
    ``state`` that hold NaN or infinity."""
    bad = [f"model {k}" for k, v in state["model"].items() if not _finite(v)]
    for i, pstate in state["optimizer"]["state"].items():
        bad += [f"optimizer state {i}.{k}" for k, v in pstate.items() if not _finite(v)]
    return bad


def _finite(v):
    if _is_array(v) or isinstance(v, np.generic):
        v = np.asarray(v)
        return v.dtype.kind not in "fc" or bool(np.isfinite(v).all())
    return not isinstance(v, float) or math.isfinite(v)
