"""Files the engine writes as records (configurations, markers, state): atomically and durably.

A record is written to a temporary file beside it, fsynced, renamed over the old one, and the directory is
fsynced too: after a crash or a power loss the file is either the old one or the new one, never half of
either, and the rename itself is on disk. The one place that does this (serve's state, the backup
repository's configuration and the instances' markers call it). Also the two other file habits of a
process that runs as root beside less trusted users: directories it owns and never follows
(:func:`private_dir`), and bounded reads of files others write (:func:`read_tail`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from pathlib import Path

from ..errors import EngineError

#: the most of a log a read returns (its tail)
LOG_READ_LIMIT = 1024 * 1024


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o600, *, uid: int | None = None,
                 gid: int | None = None) -> None:
    """Write ``path`` atomically and durably with ``mode`` (owned by ``uid``/``gid`` when given, as root).

    The temporary file is created with ``O_EXCL | O_NOFOLLOW`` and the final mode, so its content is never
    readable by anyone else, even for an instant."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            if uid is not None:
                os.fchown(fd, uid, gid if gid is not None else -1)
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_owned(path: Path, data: bytes | str, mode: int, uid: int | None = None, gid: int | None = None) -> None:
    """:func:`write_atomic`, owned by ``uid``/``gid`` when this process is root (else by this process's user)."""
    root = os.geteuid() == 0
    write_atomic(path, data, mode, uid=uid if root else None, gid=gid if root else None)


def private_dir(path: Path, mode: int, gid: int | None = None) -> None:
    """``path`` a directory of this process's user (root's: made if missing; ``gid`` its group), never a link."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise EngineError(f"{path} is not a directory (a link or a file took its place)")
    if os.geteuid() == 0 and (st.st_uid != 0 or (gid is not None and st.st_gid != gid)):
        os.lchown(path, 0, 0 if gid is None else gid)
    os.chmod(path, mode)  # not a link (checked), in a directory only root writes


def read_tail(path: Path, limit: int = LOG_READ_LIMIT) -> str:
    """The last ``limit`` bytes of ``path`` (never through a link nor from a fifo; empty when unreadable)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - limit))
        return fh.read(limit).decode(errors="replace")
