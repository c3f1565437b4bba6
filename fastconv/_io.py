"""Atomic file writes: nothing is lost or half-written when a save is interrupted."""
import contextlib
import os
import tempfile

import numpy as np


def atomic_savez(path, arrays):
    """``np.savez(path, **arrays)`` without ever leaving a broken file at ``path``.

    The archive goes to a temporary file in the same folder, is flushed to disk, then renamed over
    ``path`` (keeping an existing file's permissions); on any error the temporary file is removed
    and ``path`` keeps its previous content.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
