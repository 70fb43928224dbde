"""Locate the PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup)."""

from __future__ import annotations

import functools
import glob
import os
import shutil
from pathlib import Path

from ..errors import EngineError
from . import proc, settings

_NEEDED = ("initdb", "pg_ctl", "postgres", "pg_basebackup", "pg_controldata")


def _has_all(d: Path) -> bool:
    return all((d / b).is_file() and os.access(d / b, os.X_OK) for b in _NEEDED)


@functools.lru_cache(maxsize=4)
def bindir(preferred: str | None = None) -> Path:
    """The directory holding the server binaries.

    Order: ``preferred`` / ``$PULUMI_DBOS_PG_BINDIR``, ``pg_config --bindir``,
    the newest ``/usr/lib/postgresql/*/bin``, then ``initdb`` on PATH.
    """
    candidates: list[Path] = []
    for given in (preferred, settings.from_env().pg_bindir):
        if given:
            candidates.append(Path(given))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = proc.run([pg_config, "--bindir"], timeout=10).stdout.strip()
            candidates.append(Path(out))
        except EngineError:
            pass
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                    if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += [Path(p) for p in debian]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for c in candidates:
        if _has_all(c):
            return c
    raise EngineError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres, pg_basebackup) were not found",
        hint="install Debian's `postgresql` package (the README's set-up does this), "
        "or set PULUMI_DBOS_PG_BINDIR to the directory holding initdb",
    )


def tool(name: str) -> str:
    return str(bindir() / name)


@functools.lru_cache(maxsize=1)
def server_version() -> str:
    out = proc.run([tool("postgres"), "--version"], timeout=10).stdout.strip()
    # "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
    return out.split()[2] if len(out.split()) > 2 else out
