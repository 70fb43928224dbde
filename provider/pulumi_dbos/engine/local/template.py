"""The template cluster: ``initdb`` once per data dir and Postgres version; instances are copies.

Cloning a prepared, never-started cluster instead of running ``initdb`` each time is why a
provision is faster than raw ``initdb`` + ``pg_ctl start``. Isolation is not weakened: each
clone is its own cluster, own port, own 0700 directory, and TCP accepts only scram-sha-256.

With ``PULUMI_DBOS_TEMPLATE_CACHE`` the template is made once per machine rather than once per data dir
(serve has a data dir per organization; the test suite makes ~180): the first data dir's is copied into the
cache, later data dirs copy it from there. A template holds nothing of any instance (``initdb``'s output with
peer and scram rules, no password, no role but the admin one); the cache is keyed by everything the template
depends on (the server's version, the WAL segment size, the clusters' OS user, the users allowed to
administer them and the configuration written after ``initdb``) and used only when it is the engine user's
and nobody else can write to it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ...errors import DbosError, EngineError
from .. import pgbin, proc, settings
from .paths import Layout
from .server import ADMIN_ROLE

# 4 MB WAL segments (default 16): a clone copies 4 MB of WAL instead of 16, and every forced switch before
# a restore archives 4 MB instead of 16; 1 MB would clone faster still but restore slower
# (one restore_command per segment). PITR granularity is per commit either way.

_lock = threading.Lock()

_HBA = (
    "# pulumi-dbos: admin only over the instance's private socket; TCP only with scram-sha-256\n"
    f"local   all          {ADMIN_ROLE}  peer map=dbos\n"
    f"local   replication  {ADMIN_ROLE}  peer map=dbos\n"
    "local   all          all       scram-sha-256\n"
    f"host    all          {ADMIN_ROLE}  all  reject\n"
    "host    all          all       127.0.0.1/32  scram-sha-256\n"
    "host    all          all       ::1/128       scram-sha-256\n"
    "host    all          all       0.0.0.0/0     scram-sha-256\n"
)

_CONF = (
    "\n# ---- pulumi-dbos ----\n"
    "password_encryption = 'scram-sha-256'\n"
    "wal_level = replica\n"
    "archive_mode = on\n"
    "archive_timeout = 300\n"
    "shared_buffers = 32MB\n"
    "log_statement = 'none'\n"
    "log_min_error_statement = 'panic'\n"
    "log_line_prefix = '%m [%p] '\n"
    "include_if_exists = 'instance.conf'\n"
)


def checkpoint_wal(layout: Layout, pgdata: Path) -> str:
    """The WAL file a base backup of ``pgdata`` (a stopped cluster) starts from."""
    out = proc.run([pgbin.tool("pg_controldata"), str(pgdata)], run_as=layout.run_as, timeout=30).stdout
    m = re.search(r"Latest checkpoint's REDO WAL file:\s*(\S+)", out)
    if not m:
        raise EngineError(f"cannot read the checkpoint WAL file of {pgdata}")
    return m.group(1)


def template_wal(layout: Layout, template: Path) -> str:
    cached = template.parent / "CHECKPOINT_WAL"
    if not cached.exists():
        cached.write_text(checkpoint_wal(layout, template))
    return cached.read_text().strip()


def template_dir(layout: Layout) -> Path:
    """Where this data dir's template for this Postgres version is (or will be)."""
    return layout.data_dir / "templates" / f"pg{pgbin.server_version().split('.')[0]}-wal{settings.from_env().wal_segment_mb}"


def ready_template(layout: Layout) -> Path | None:
    """The template's cluster when it is made already (None: not yet; nothing is built here)."""
    tdir = template_dir(layout)
    return tdir / "data" if (tdir / "READY").exists() else None


def ensure_template(layout: Layout, catalog_lock: AbstractContextManager[Any]) -> Path:
    """The prepared cluster clones are made from (created once per data dir and PG version)."""
    tdir = template_dir(layout)
    data, ready = tdir / "data", tdir / "READY"
    if ready.exists():
        return data
    with _lock, catalog_lock:
        if ready.exists():
            return data
        if tdir.exists():
            shutil.rmtree(tdir)
        layout.mkdir(tdir)
        users = sorted({"root", layout.run_as.name, pwd.getpwuid(os.getuid()).pw_name})
        cached = _cached(tdir, layout, users)
        if cached is not None and (cached / "READY").exists():
            _copy(cached, tdir)
            return data
        proc.run([pgbin.tool("initdb"), "-D", str(data), "-U", ADMIN_ROLE, "-E", "UTF8", "--no-locale",
                  "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions",
                  f"--wal-segsize={settings.from_env().wal_segment_mb}"],
                 run_as=layout.run_as, timeout=300, hint="initdb of the template cluster failed")
        (data / "pg_ident.conf").write_text(
            "# pulumi-dbos: OS users allowed to administer this cluster over its private socket\n"
            + "".join(f"dbos {u} {ADMIN_ROLE}\n" for u in users))
        (data / "pg_hba.conf").write_text(_HBA)
        with open(data / "postgresql.conf", "a") as fh:
            fh.write(_CONF)
        for f in ("pg_ident.conf", "pg_hba.conf", "postgresql.conf"):
            layout.own(data / f, 0o600)
        (tdir / "CHECKPOINT_WAL").write_text(checkpoint_wal(layout, data))
        ready.write_text(pgbin.server_version())
        if cached is not None:
            _keep(tdir, cached)
        return data


def _cached(tdir: Path, layout: Layout, users: list[str]) -> Path | None:
    """Where the machine's cache keeps this template (None: no cache configured). The cache directory must be
    the engine user's and writable by nobody else: a template someone else could change would be every later
    instance's starting point."""
    root = settings.from_env().template_cache
    if root is None:
        return None
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise EngineError(f"PULUMI_DBOS_TEMPLATE_CACHE={root} is not safe to use: it must be owned by this user "
                          f"(uid {os.geteuid()}) and not writable by group or others",
                          hint=f"chown {os.geteuid()} {root} && chmod 700 {root}, or unset the variable")
    # the files written after initdb are part of the key: a template of another pulumi-dbos version is another entry
    key = hashlib.sha256("|".join([pgbin.server_version(), tdir.name, layout.run_as.name, *users, _HBA, _CONF,
                                   ADMIN_ROLE]).encode())
    return root / f"{tdir.name}-{key.hexdigest()[:16]}"


def _keep(tdir: Path, cached: Path) -> None:
    """Copy the template just made into the cache (whole or not at all: renamed into place when complete; a
    concurrent engine that got there first wins)."""
    tmp = cached.with_name(f"{cached.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.mkdir(mode=0o700)
        _copy(tdir, tmp)
        tmp.rename(cached)
    except (OSError, DbosError):
        pass  # another engine kept it first (rename onto a non-empty directory), or the cache is full: not ours
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy(src: Path, dst: Path) -> None:
    """A made template (``data``, ``CHECKPOINT_WAL``) from the template directory ``src`` into ``dst``, ``READY``
    written last."""
    proc.run(["cp", "-a", str(src / "data"), str(dst / "data")], timeout=300)
    shutil.copy(src / "CHECKPOINT_WAL", dst / "CHECKPOINT_WAL")
    (dst / "READY").write_text(pgbin.server_version())
