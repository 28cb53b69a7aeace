"""Atomic file writes: a report is either complete or not there at all."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import UsageError

__all__ = ["atomic_write_text", "atomic_write_bytes", "write_error"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise UsageError(f"cannot write {target}: {error.strerror or error}",
                         hint="choose a writable path") from error
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise write_error(target, error) from error
        raise
    return target


def write_error(target: Path, error: OSError) -> UsageError:
    """A one-line UsageError for a failed write (a full disk says so, with the fix)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return UsageError(f"cannot write {target}: no space left on the device",
                          hint="free some space, or write to another folder")
    return UsageError(f"cannot write {target}: {error.strerror or error}",
                      hint="choose a writable path")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))
