"""Atomic file writes: nothing is lost or half-written when a save is interrupted.

A write goes to a temporary file ``<name>.<8 characters>.tmp`` beside the target, created as
``open(path, "wb")`` would create the target (mode ``0o666`` less the umask), locked
(``flock``) while it is written and renamed over the target when complete. A writer killed
outright (SIGKILL, an MPI abort) leaves its temporary file behind; the next write of the same
target removes such leftovers: only names of exactly that form, only regular files of this
user, only when no writer holds their lock and they are older than :data:`STALE_AFTER`
seconds (a writer locks its file right after creating it; the age covers that moment), so a
concurrent writer of the same target never loses its file.
"""
import contextlib
import errno
import os
import re
import secrets
import stat
import time

try:
    import fcntl
except ImportError:  # Windows: no flock; there an open file cannot be deleted, which protects it
    fcntl = None

import numpy as np

#: Seconds after which an unlocked temporary file of a target counts as left by a dead writer.
STALE_AFTER = 10.0

_TMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # tempfile.mkstemp's, as earlier versions used
_CREATE = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
           | getattr(os, "O_BINARY", 0))


def _create_tmp(folder, name):
    """``(fd, path)`` of a new temporary file for target ``name`` in ``folder``, created with mode
    0o666 so that the umask (and a default ACL) applies, as for the target itself."""
    for _ in range(100):
        tmp = os.path.join(folder, f"{name}.{''.join(secrets.choice(_TMP_CHARS) for _ in range(8))}.tmp")
        try:
            return os.open(tmp, _CREATE, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", os.path.join(folder, name))


def _naming(exc, target):
    """``exc`` as the same kind of OSError naming ``target``, the user's path, not our temporary file."""
    return OSError(exc.errno, exc.strerror, target) if exc.errno is not None else exc


def atomic_write(path, write):
    """Call ``write(f)`` on a binary file that appears at ``path`` only once it is complete.

    The data go to a temporary file in the same folder, are flushed to disk, then the file is
    renamed over ``path``. A new file gets the mode ``open()`` would give it (0o666 less the
    umask); a replaced file keeps its permissions. On any error or interruption the temporary
    file is removed and ``path`` keeps its previous content; an OSError names ``path``. Stale
    temporary files of ``path`` left by killed writers are removed afterwards (see the module
    docstring). Returns ``path``.
    """
    target = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(target))
    try:
        fd, tmp = _create_tmp(folder, name)
    except OSError as exc:
        raise _naming(exc, target) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                with contextlib.suppress(OSError):  # no locks here: no cleaner can lock it either
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            write(f)
            f.flush()
            os.fsync(f.fileno())
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
            if fcntl is not None:
                os.replace(tmp, target)  # still locked: no cleaner can take it for stale
        if fcntl is None:
            os.replace(tmp, target)  # Windows renames closed files only
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and tmp in (exc.filename, exc.filename2):
            raise _naming(exc, target) from None
        raise
    remove_stale_temporaries(target)
    return path


def remove_stale_temporaries(path):
    """Remove the temporary files of ``path`` that writers killed mid-write left behind (see the
    module docstring for which count as stale); errors are ignored. Returns the removed paths."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(re.escape(name) + r"\.[a-z0-9_]{8}\.tmp")
    try:
        with os.scandir(folder) as entries:
            found = [os.path.join(folder, e.name) for e in entries if pattern.fullmatch(e.name)]
    except OSError:
        return []
    removed = []
    for tmp in found:
        with contextlib.suppress(OSError):
            if _remove_if_stale(tmp):
                removed.append(tmp)
    return removed


def _remove_if_stale(tmp):
    """Remove ``tmp`` if it is stale; True if it was. OSError when it is locked or cannot be read."""
    seen = os.lstat(tmp)
    if (not stat.S_ISREG(seen.st_mode) or time.time() - seen.st_mtime < STALE_AFTER
            or (hasattr(os, "getuid") and seen.st_uid != os.getuid())):
        return False
    fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                 | getattr(os, "O_CLOEXEC", 0))
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while a writer holds it
        same = all((s.st_ino, s.st_dev) == (seen.st_ino, seen.st_dev) for s in (os.fstat(fd), os.lstat(tmp)))
        if same and fcntl is not None:
            os.unlink(tmp)  # while locked, and only the file that was checked
    finally:
        os.close(fd)
    if same and fcntl is None:
        os.unlink(tmp)  # Windows: fails while a writer has it open
    return same


def check_writable(path, what="output"):
    """Raise a ValueError naming ``path`` unless :func:`atomic_write` can write there: ``path`` is
    not a folder and its folder exists and takes a new file (tried by creating and removing a
    temporary file). For checking output paths before a long run."""
    target = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(target))
    if os.path.isdir(target):
        raise ValueError(f"cannot write {what} {target!r}: it is a folder")
    try:
        fd, tmp = _create_tmp(folder, name)
    except OSError as exc:
        why = ("its folder does not exist" if isinstance(exc, FileNotFoundError)
               else f"{exc.strerror.lower()} in its folder" if exc.strerror else str(exc))
        raise ValueError(f"cannot write {what} {target!r}: {why} ({folder})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def atomic_savez(path, arrays):
    """``np.savez(path, **arrays)`` without ever leaving a broken file at ``path`` (see
    :func:`atomic_write`)."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))
