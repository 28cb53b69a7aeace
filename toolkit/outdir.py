"""An output folder that always holds one whole run.

``micronet compress --out DIR`` never writes into ``DIR`` piece by piece. The
run is built in a sibling staging folder (``.DIR.partial-<pid>-<random>``)
and swapped in at the end, in one ``renameat2(RENAME_EXCHANGE)`` on Linux (one
``renamex_np(RENAME_SWAP)`` on macOS), so after any ending (success, a failed
step, SIGINT, SIGKILL at any moment, a full disk) ``DIR`` holds either the
previous run, complete and untouched, or the new one, complete. Where no
atomic exchange exists the old run is first renamed aside
(``.DIR.previous-<pid>``) and put back by the next run if a crash fell between
the two renames.

A lock (``flock`` on the sibling file ``.DIR.lock``, released by the kernel
when the process dies, removed on exit) makes a second run on the same ``DIR``
refuse at once instead of interleaving. Staging folders that a killed run left
behind are removed by the next run that takes the lock.

``DIR`` is only ever replaced when it is missing, empty, or a previous run
(it holds ``history.json``): a folder of other files is refused, never moved.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UsageError

__all__ = ["check_output_folder", "check_output_file", "claim_output_folder", "OutputFolder", "RUN_MARKER"]

#: A folder holding this file is a micronet run and may be replaced by the next one.
RUN_MARKER = "history.json"

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here, runs are not guarded against each other
    fcntl = None


def check_output_folder(out: str | os.PathLike, option: str = "--out") -> Path:
    """The output folder as an absolute path, checked before any work starts.

    Refused (UsageError, exit 2): an empty name, a file in the way, a folder
    that holds other things than a previous run, a parent that cannot be
    created or written."""
    text = os.fspath(out)
    if not str(text).strip():
        raise UsageError(f"{option} is empty", hint=f"give a folder, e.g. {option} results/")
    folder = Path(text).expanduser().absolute()
    if folder.exists() or folder.is_symlink():
        if not folder.is_dir():
            raise UsageError(f"{option} {text}: a file is in the way, not a folder",
                             hint="remove it or choose another folder")
        if any(folder.iterdir()) and not (folder / RUN_MARKER).is_file():
            raise UsageError(f"{option} {text} holds files that are not a micronet run (no {RUN_MARKER}); "
                             "it would be replaced as a whole",
                             hint="choose a new or empty folder")
    _check_parent(folder.parent, option, text)
    return folder


def check_output_file(path: str | os.PathLike | None, option: str) -> Path | None:
    """A report file (``--json``, ``--csv``, ``--html``) checked before any work:
    not empty, not a folder, its folder creatable and writable."""
    if path is None:
        return None
    text = os.fspath(path)
    if not str(text).strip():
        raise UsageError(f"{option} is empty", hint=f"give a file name, e.g. {option} report")
    target = Path(text).expanduser()
    if target.is_dir():
        raise UsageError(f"{option} {text} is a folder, not a file",
                         hint=f"give a file name, e.g. {option} {Path(text) / ('report' + _suffix(option))}")
    _check_parent(target.absolute().parent, option, text)
    return target


def _suffix(option: str) -> str:
    return "." + option.lstrip("-")


def _check_parent(parent: Path, option: str, text: str) -> None:
    existing = parent
    while not existing.exists():
        if existing.is_symlink() or existing == existing.parent:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"{option} {text}: {existing} is a file, not a folder",
                         hint="choose a path under a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {text}: cannot write in {existing} (permission denied)",
                         hint="choose a folder you can write to")


class OutputFolder:
    """A claimed output folder: ``staging`` is where the run writes; ``commit()``
    swaps it in as ``path``. Use through :func:`claim_output_folder`."""

    def __init__(self, path: Path):
        self.path = path
        self.staging = path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")
        self.committed = False

    def begin(self) -> Path:
        """Create an empty staging folder (removing one a previous call made)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        try:
            self.staging.mkdir(parents=True)
        except OSError as error:
            raise UsageError(f"cannot create {self.staging.parent}: {error.strerror or error}",
                             hint="choose a writable --out folder") from error
        return self.staging

    def commit(self) -> Path:
        """Swap the staging folder in as ``path`` (the old run, if any, is removed)."""
        old = None
        if self.path.is_dir() and not self.path.is_symlink():
            _fsync_folder(self.staging)
            if _exchange(self.staging, self.path):
                old = self.staging  # the exchange left the previous run there
            else:
                old = self.path.with_name(f".{self.path.name}.previous-{os.getpid()}")
                os.rename(self.path, old)
                os.rename(self.staging, self.path)
        else:
            if self.path.is_symlink():
                self.path.unlink()
            os.rename(self.staging, self.path)
        _fsync_folder(self.path.parent)
        self.committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def discard(self) -> None:
        """Remove the staging folder of a run that is not committed."""
        shutil.rmtree(self.staging, ignore_errors=True)


@contextmanager
def claim_output_folder(out: str | os.PathLike) -> Iterator[OutputFolder]:
    """Check and lock ``out`` for one run; leftovers of killed runs are cleaned.

    Yields an :class:`OutputFolder`; whatever was not committed is removed on
    exit, and the lock is released. A second claim of the same folder while
    this one is held raises UsageError at once."""
    folder = check_output_folder(out)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(f".{folder.name}.lock"), folder):
        _recover(folder)
        claimed = OutputFolder(folder)
        try:
            yield claimed
        finally:
            if not claimed.committed:
                claimed.discard()


def _recover(folder: Path) -> None:
    """Put back a previous run renamed aside by a run that died mid-swap, and
    remove the staging folders killed runs left (we hold the lock: none is live)."""
    previous = sorted(folder.parent.glob(f".{_glob_escape(folder.name)}.previous-*"))
    if previous and not folder.exists():
        os.rename(previous.pop(), folder)
    for leftover in [*previous, *folder.parent.glob(f".{_glob_escape(folder.name)}.partial-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextmanager
def _locked(lock_path: Path, folder: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f"another micronet run is writing {folder} (lock {lock_path.name} is held)",
                                 hint="wait for it to finish, or choose another --out folder") from None
            raise
        try:  # the holder before us may have removed the file between our open and our lock
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock_path.unlink(missing_ok=True)  # unlink while locked: a waiter re-checks the inode
        os.close(fd)


# ----------------------------------------------------------- atomic exchange

_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS stdio.h
_AT_FDCWD = -100


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False when the system cannot (then nothing changed)."""
    libc = _libc()
    if libc is None:
        return False
    old, new = os.fsencode(a), os.fsencode(b)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        result = libc.renameat2(_AT_FDCWD, old, _AT_FDCWD, new, _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        result = libc.renamex_np(old, new, _RENAME_SWAP)
    else:
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # a file system without exchange: fall back to rename-aside
    raise OSError(code, os.strerror(code), str(b))


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries, so a crash after the swap keeps what it names."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
