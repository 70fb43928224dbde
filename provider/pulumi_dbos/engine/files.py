"""Files the engine writes as records (configurations, markers, state): atomically and durably.

A record is written to a temporary file beside it, fsynced, renamed over the old one, and the directory is
fsynced too: after a crash or a power loss the file is either the old one or the new one, never half of
either, and the rename itself is on disk. The one place that does this (serve's state, the backup
repository's configuration and the instances' markers call it).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


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
