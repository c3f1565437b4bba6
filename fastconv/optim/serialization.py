"""npz-friendly flattening of nested state dicts (optimizers, schedulers, trainers)."""

import json

import numpy as np

__all__ = ["flatten_state", "unflatten_state"]

_META = "__meta__"


def flatten_state(d, prefix=""):
    """Flatten a nested state dict into ``{str: ndarray}`` for ``np.savez``.

    Arrays (and NumPy scalars) are stored under readable dotted keys such as
    ``prefix + "state.0.exp_avg"``; the structure and all Python scalars
    (int, float incl. inf/nan, bool, None, str, list, tuple, dict with int or
    str keys) go to one JSON string array under ``prefix + "__meta__"``.

    Parameters
    ----------
    d : dict
    prefix : str, optional
        Prepended to every key, so several states can share one ``.npz``.

    Returns
    -------
    dict of str to ndarray
    """
    flat = {prefix + _META: None}

    def join(path, key):
        return f"{path}.{key}" if path else str(key)

    def enc(obj, path):
        if isinstance(obj, (np.ndarray, np.generic)):
            key = prefix + path
            if key in flat:
                key = f"{key}#{len(flat)}"
            flat[key] = np.array(obj)
            return {"nd": key[len(prefix):], "scalar": isinstance(obj, np.generic)}
        if isinstance(obj, dict):
            for k in obj:
                if isinstance(k, bool) or not isinstance(k, (int, str)):
                    raise TypeError(f"dict keys must be int or str, got {k!r} at {path!r}")
            return {"dict": [[k, enc(v, join(path, k))] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            tag = "list" if isinstance(obj, list) else "tuple"
            return {tag: [enc(v, join(path, i)) for i, v in enumerate(obj)]}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot flatten {type(obj).__name__} at {path!r}")

    flat[prefix + _META] = np.array(json.dumps(enc(d, "")))
    return flat


def unflatten_state(flat, prefix=""):
    """Inverse of :func:`flatten_state`; accepts a dict or an ``np.load`` result.

    Arrays are copied, Python scalar types, tuples and int dict keys restored.
    """
    def dec(obj):
        if not isinstance(obj, dict):
            return obj
        if "nd" in obj:
            arr = np.array(flat[prefix + obj["nd"]])
            return arr[()] if obj["scalar"] else arr
        if "dict" in obj:
            return {k: dec(v) for k, v in obj["dict"]}
        if "list" in obj:
            return [dec(v) for v in obj["list"]]
        return tuple(dec(v) for v in obj["tuple"])

    return dec(json.loads(str(np.asarray(flat[prefix + _META])[()])))
