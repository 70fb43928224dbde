"""Where the local engine keeps things, who owns them, and whether the cluster user can reach them.

Layout under ``data_dir`` (0700, owned by the OS user that runs the clusters)::

    catalog.db                  control-plane catalog (SQLite)
    templates/pg<ver>-wal<n>/   a prepared, never-started cluster (made once)
      pool/e-*                  ready copies of it for provisions (``pool``)
    wal-watch.lock, .log        the WAL-volume backup watcher's (``autobackup``)
    instances/<name>/data       the cluster (PGDATA)
    instances/<name>/archive    its WAL archive (a local fast-path cache: the repository is the truth)
    instances/<name>/backups/   its base backups (the same)
    instances/<name>/stanza     its incarnation in the backup repository (``repo``)
    pgbackrest/pgbackrest.conf  the backup repository's configuration (``repo``)
    repo/                       the default posix repository (``dbos:backupRepo`` puts it elsewhere)
    instances/<name>/s/         its Unix socket (admin access only)
    instances/<name>/server.log
"""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import EngineError
from .. import proc, settings

_SOCKET_MAX = 107
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")


def default_data_dir(given: settings.EngineSettings | None = None) -> Path:
    """``$PULUMI_DBOS_DATA_DIR``, else a place the cluster user can reach.

    As root, root's home is 0700 and the ``postgres`` user could not reach it, so the default is
    ``/var/lib/pulumi-dbos``; otherwise ``~/.local/share/pulumi-dbos``.
    """
    where = (given or settings.from_env()).data_dir
    if where:
        return where
    if os.geteuid() == 0:
        return Path("/var/lib/pulumi-dbos")
    return Path("~/.local/share/pulumi-dbos").expanduser()


def default_run_as(given: settings.EngineSettings | None = None) -> str | None:
    user = (given or settings.from_env()).run_as
    if user:
        return user
    return "postgres" if os.geteuid() == 0 else None


def _searchable(st: os.stat_result, uid: int, groups: set[int]) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & 0o100)
    if st.st_gid in groups:
        return bool(st.st_mode & 0o010)
    return bool(st.st_mode & 0o001)


def check_data_dir(data_dir: Path, run_as: str | None) -> list[str]:
    """Problems that would stop ``run_as`` from using ``data_dir`` (empty list = fine). Creates nothing."""
    if not data_dir.is_absolute():
        return [f"{data_dir} must be an absolute path"]
    problems: list[str] = []
    if not _SAFE_PATH.match(str(data_dir)):
        problems.append(f"{data_dir} may contain only letters, digits and _ . / + -")
    # instances/<16 chars>/s/.s.PGSQL.65535
    if len(str(data_dir)) + len("/instances/") + 16 + len("/s/.s.PGSQL.65535") > _SOCKET_MAX:
        problems.append(f"{data_dir} is too long for a Unix socket path (keep it under 60 characters)")
    if run_as is None:
        return problems
    try:
        pw = pwd.getpwnam(run_as)
    except KeyError:
        return problems + [
            f"OS user {run_as!r} does not exist; PostgreSQL refuses to run as root, so the local engine runs "
            "clusters as an unprivileged user: create it (Debian's postgresql package creates 'postgres') "
            "or set dbos:runAs / PULUMI_DBOS_RUN_AS"]
    groups = set(os.getgrouplist(run_as, pw.pw_gid))
    for anc in reversed(data_dir.parents):  # every existing ancestor must be searchable by run_as
        if not anc.exists():
            break
        st = anc.stat()
        if not _searchable(st, pw.pw_uid, groups):
            problems.append(
                f"OS user {run_as!r} cannot reach {data_dir}: {anc} is not searchable by it "
                f"(mode {oct(st.st_mode & 0o777)}); choose a dataDir under /var/lib or /tmp, or chmod o+x {anc}")
            break
    return problems


@dataclass(frozen=True)
class Layout:
    """The data dir's paths, and making directories owned by the cluster user."""

    data_dir: Path
    run_as: proc.RunAs

    @property
    def catalog_file(self) -> Path:
        return self.data_dir / "catalog.db"

    def inst_dir(self, name: str) -> Path:
        return self.data_dir / "instances" / name

    def pgdata(self, name: str) -> Path:
        return self.inst_dir(name) / "data"

    def sockdir(self, name: str) -> Path:
        return self.inst_dir(name) / "s"

    def archive(self, name: str) -> Path:
        return self.inst_dir(name) / "archive"

    def backups(self, name: str) -> Path:
        return self.inst_dir(name) / "backups"

    @property
    def wal_segment_bytes(self) -> int:

        return settings.from_env().wal_segment_mb * 1024 * 1024

    def stanza_file(self, name: str) -> Path:
        return self.inst_dir(name) / "stanza"

    def stanza(self, name: str) -> str | None:
        try:
            return self.stanza_file(name).read_text().strip() or None
        except OSError:
            return None

    def server_log(self, name: str) -> Path:
        return self.inst_dir(name) / "server.log"

    def own(self, path: Path, mode: int) -> None:
        os.chmod(path, mode)
        if os.geteuid() == 0 and self.run_as.user:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    def mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.own(path, 0o700)

    def make_instance_dirs(self, name: str) -> None:
        for d in (self.inst_dir(name), self.archive(name), self.backups(name), self.sockdir(name)):
            self.mkdir(d)

    def prepare(self) -> None:
        """Create the data dir (checked first: a dir the cluster user cannot reach is an error)."""
        problems = check_data_dir(self.data_dir, self.run_as.user)
        if problems:
            raise EngineError("; ".join(problems))
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # 0711 once apps exist (their OS user must traverse it to reach apps/; instances/ stays 0700), or
        # when it is also pulumi-dbos serve's data dir (the organizations' engines and their apps live below)
        traverse = (self.data_dir / "apps").is_dir() or (self.data_dir / "orgs").is_dir()
        self.own(self.data_dir, 0o711 if traverse else 0o700)
        for d in (self.data_dir / "instances", self.data_dir / "templates"):
            self.mkdir(d)

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            text = self.server_log(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
