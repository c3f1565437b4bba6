"""Atomic file writes: nothing is lost or half-written when a save is interrupted."""
import contextlib
import os
import tempfile

import numpy as np


def atomic_write(path, write):
    """Call ``write(f)`` on a binary file that appears at ``path`` only once it is complete.

    The data go to a temporary file in the same folder, are flushed to disk, then the file is
    renamed over ``path`` (keeping an existing file's permissions); on any error or interruption the
    temporary file is removed and ``path`` keeps its previous content. Returns ``path``.
    """
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(target) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, os.stat(target).st_mode & 0o777 if os.path.exists(target) else 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_savez(path, arrays):
    """``np.savez(path, **arrays)`` without ever leaving a broken file at ``path`` (see
    :func:`atomic_write`)."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))
