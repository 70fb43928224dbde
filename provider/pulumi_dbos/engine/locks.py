"""The one file lock the engine takes across threads and processes (``flock`` on a file it opens with
``O_NOFOLLOW``): the workers' locks, an instance's backup lock, the host-wide backup and drill locks."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("pulumi_dbos.engine")


@contextlib.contextmanager
def file_lock(path: Path, *, wait: float = 0, own_only: bool = False, record_pid: bool = False) -> Iterator[bool]:
    """An exclusive lock on ``path``, waiting up to ``wait`` seconds; yields whether it was taken (False also
    when ``path``'s directory is gone, or it cannot be opened). ``own_only``: a file another OS user made (a
    shared directory) never counts as ours. ``record_pid``: the holder writes its pid into it (a worker's:
    ``workers.stop_workers`` reads it). Released when the block ends."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        yield False
        return
    except OSError as exc:
        log.warning("cannot lock %s: %s", path, exc)
        yield False
        return
    try:
        if own_only and os.fstat(fd).st_uid != os.geteuid():
            yield False
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
        if record_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield True
    finally:
        os.close(fd)  # releases the lock
