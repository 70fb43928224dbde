"""The template cluster: ``initdb`` once per data dir and Postgres version; instances are copies.

Cloning a prepared, never-started cluster instead of running ``initdb`` each time is why a
provision is faster than raw ``initdb`` + ``pg_ctl start``. Isolation is not weakened: each
clone is its own cluster, own port, own 0700 directory, and TCP accepts only scram-sha-256.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ...errors import EngineError
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
        proc.run([pgbin.tool("initdb"), "-D", str(data), "-U", ADMIN_ROLE, "-E", "UTF8", "--no-locale",
                  "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions",
                  f"--wal-segsize={settings.from_env().wal_segment_mb}"],
                 run_as=layout.run_as, timeout=300, hint="initdb of the template cluster failed")
        users = sorted({"root", layout.run_as.name, pwd.getpwuid(os.getuid()).pw_name})
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
        return data
