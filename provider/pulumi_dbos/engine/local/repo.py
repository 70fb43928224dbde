"""The backup repository under every instance: pgBackRest, the truth a restore can always come back to.

Why pgBackRest (Debian's, 2.45): it is the well-kept tool made for exactly this — WAL archived
asynchronously, fsync'd and checksummed; full, differential and incremental backups; posix and
S3-compatible repositories, several at once; encryption; ``verify``; ``restore --type=time``. Measured
here against the alternatives the Go module proxy and PyPI serve: barman-cloud restores 11× slower (a
process per WAL segment); WAL-G and MinIO are not served (403).

What lives where:

- one pgBackRest configuration per data dir, ``<data_dir>/pgbackrest/pgbackrest.conf`` (0600, the cluster
  user's: it holds the S3 secret key and the encryption passphrase, which never appear in argv, an
  environment or a log), with the repositories of :class:`RepoSettings`: ``repo1`` a posix path (by
  default ``<data_dir>/repo``; put it on another disk), ``repo2`` an S3-compatible store;
- one *stanza* per incarnation of an instance, ``<name>-<created stamp>``: a destroyed instance's backups
  stay while a new instance of the same name gets its own stanza. The stanza's backups carry annotations
  (``instance``, ``username``, ``kind``, ``retention-hours``, ``port``; at destroy ``destroyed-at`` and
  ``keep-until``), so the repository alone says what it holds: after losing the data dir and its catalog,
  the instances come back from it (``LocalEngine.recover``).

The instances' ``archive_command`` chains the engine's local fast-path cache (hard-linked by restores, see
``pitr``) with ``pgbackrest archive-push``: PostgreSQL recycles a segment only once both succeeded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ...errors import EngineError
from ...timeutil import parse_rfc3339, to_pg, to_rfc3339, utcnow
from .. import proc, settings
from ..files import write_atomic
from .paths import Layout

log = logging.getLogger("pulumi_dbos.engine")

#: a stanza: the instance's name, a dash (never in an instance name), when it was made
_STANZA = re.compile(r"^([a-z0-9_]{3,16})-([0-9]{8}T[0-9]{6}[0-9a-f]{4})$")
_SEGMENT_NAME = re.compile(r"^[0-9A-F]{24}$")
DEFAULT_DELETED_RETENTION_HOURS = 168
DEFAULT_ARCHIVE_TIMEOUT = 60


@dataclass(frozen=True)
class S3Repo:
    """An S3-compatible repository (AWS S3, SeaweedFS, Ceph, ...). ``secret_key`` is a secret."""

    endpoint: str  # host[:port], TLS always (pgBackRest speaks S3 only over TLS)
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    path: str = "/pulumi-dbos"
    ca_file: str | None = None
    uri_style: str = "path"  # "path" for most self-hosted stores, "host" for AWS
    verify_tls: bool = True


@dataclass(frozen=True)
class RepoSettings:
    """Where an engine's backups go and how long a destroyed instance's stay.

    ``path``: a posix repository (a directory, ideally on another disk; default ``<data_dir>/repo``);
    ``s3``: an S3-compatible one; both may be set (every WAL segment and backup goes to each).
    ``cipher_pass`` encrypts both (AES-256). ``deleted_retention_hours``: a destroyed instance stays
    restorable this long (default the larger of 168 and its own ``retention_hours``). ``archive_timeout``:
    seconds after which a partly filled WAL segment is archived anyway — the RPO bound when the host is
    lost (default 60)."""

    path: Path | None = None
    s3: S3Repo | None = None
    cipher_pass: str | None = field(default=None, repr=False)
    deleted_retention_hours: int | None = None
    archive_timeout: int = DEFAULT_ARCHIVE_TIMEOUT

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> RepoSettings:
        """From the stack config's ``dbos:backupRepo`` (camelCase keys) or serve's flags."""
        raw = dict(raw or {})
        s3 = raw.get("s3")
        return cls(
            path=Path(raw["path"]).expanduser() if raw.get("path") else None,
            s3=S3Repo(endpoint=str(s3["endpoint"]), bucket=str(s3["bucket"]), access_key=str(s3["accessKey"]),
                      secret_key=str(s3["secretKey"]), region=str(s3.get("region") or "us-east-1"),
                      path=str(s3.get("path") or "/pulumi-dbos"), ca_file=s3.get("caFile"),
                      uri_style=str(s3.get("uriStyle") or "path"),
                      verify_tls=bool(s3.get("verifyTls", True))) if s3 else None,
            cipher_pass=raw.get("cipherPassphrase") or None,
            deleted_retention_hours=int(raw["deletedRetentionHours"]) if raw.get("deletedRetentionHours") else None,
            archive_timeout=int(raw.get("archiveTimeout") or DEFAULT_ARCHIVE_TIMEOUT),
        )

    @classmethod
    def from_env(cls) -> RepoSettings | None:
        """``$PULUMI_DBOS_BACKUP_REPO``: a JSON object with the stack config's keys (None when unset)."""
        raw = settings.from_env().backup_repo
        if not raw:
            return None
        try:
            return cls.from_mapping(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError(f"PULUMI_DBOS_BACKUP_REPO is not a valid repository setting: {exc}",
                              hint='e.g. {"path": "/mnt/backups/pulumi-dbos"}') from None

    @classmethod
    def from_conf(cls, text: str) -> RepoSettings:
        """Read back what :meth:`Repository.render` wrote (the configuration is where a data dir keeps its
        settings: the engine's workers and a CLI without a stack use them)."""
        kv: dict[str, str] = {}
        for line in text.splitlines():
            line = line.removeprefix("# pulumi-dbos: ")
            if "=" in line and not line.startswith(("#", "[")):
                k, v = line.split("=", 1)
                kv[k.strip()] = v.strip()
        s3, path = None, None
        for n in (1, 2):
            r = f"repo{n}"
            if kv.get(f"{r}-type") == "s3":
                s3 = S3Repo(endpoint=kv[f"{r}-s3-endpoint"], bucket=kv[f"{r}-s3-bucket"], access_key=kv[f"{r}-s3-key"],
                            secret_key=kv[f"{r}-s3-key-secret"], region=kv.get(f"{r}-s3-region", "us-east-1"),
                            path=kv.get(f"{r}-path", "/pulumi-dbos"), ca_file=kv.get(f"{r}-storage-ca-file"),
                            uri_style=kv.get(f"{r}-s3-uri-style", "path"),
                            verify_tls=kv.get(f"{r}-storage-verify-tls", "y") != "n")
            elif kv.get(f"{r}-path"):
                path = Path(kv[f"{r}-path"])
        return cls(path=path, s3=s3, cipher_pass=kv.get("repo1-cipher-pass"),
                   deleted_retention_hours=int(kv["deleted-retention-hours"]) if kv.get("deleted-retention-hours") else None,
                   archive_timeout=int(kv.get("archive-timeout") or DEFAULT_ARCHIVE_TIMEOUT))

    def secrets(self) -> tuple[str | None, ...]:
        return (self.s3.secret_key if self.s3 else None, self.cipher_pass)

    def keep_deleted(self, retention_hours: int) -> timedelta:
        return timedelta(hours=self.deleted_retention_hours or max(DEFAULT_DELETED_RETENTION_HOURS, retention_hours))


@dataclass
class RepoBackup:
    label: str
    started: datetime
    stopped: datetime
    start_wal: str
    annotations: dict[str, str]
    start_lsn: str = ""  #: where its WAL starts (``X/Y``): an HA instance's watcher measures WAL from there


@dataclass
class Stanza:
    """One incarnation of an instance, as the repository holds it."""

    name: str
    instance: str
    backups: list[RepoBackup]
    archive_max: str | None

    @property
    def annotations(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for b in self.backups:
            merged.update(b.annotations)
        return merged

    @property
    def destroyed_at(self) -> str | None:
        return self.annotations.get("destroyed-at")

    @property
    def keep_until(self) -> str | None:
        return self.annotations.get("keep-until")

    @property
    def earliest(self) -> str | None:
        return to_rfc3339(self.backups[0].stopped) if self.backups else None


def new_stanza(name: str) -> str:
    return f"{name}-{utcnow().strftime('%Y%m%dT%H%M%S')}{os.urandom(2).hex()}"


def instance_of(stanza: str) -> str | None:
    m = _STANZA.match(stanza)
    return m.group(1) if m else None


class Repository:
    """pgBackRest for one data dir (see the module docstring). Every command runs as the cluster user."""

    def __init__(self, layout: Layout, settings: RepoSettings | None = None) -> None:
        """``settings`` None: ``$PULUMI_DBOS_BACKUP_REPO``, else what the data dir's configuration says, else
        the default (a posix repository at ``<data_dir>/repo``)."""
        self.layout = layout
        self.dir = layout.data_dir / "pgbackrest"
        self.conf = self.dir / "pgbackrest.conf"
        self.explicit = settings is not None
        if settings is None:
            settings = RepoSettings.from_env()
            self.explicit = settings is not None
        if settings is None:
            try:
                settings = RepoSettings.from_conf(self.conf.read_text())
            except (OSError, KeyError, ValueError):
                settings = None
        self.settings = settings or RepoSettings()

    @property
    def posix_path(self) -> Path:
        return self.settings.path or (self.layout.data_dir / "repo")

    # ---------------------------------------------------------------- configuration
    def _kinds(self) -> list[str]:
        """The repositories in pgBackRest's order: the posix one (when a path is set, or no S3 store is),
        then the S3 one."""
        s = self.settings
        return (["posix"] if s.path is not None or s.s3 is None else []) + (["s3"] if s.s3 else [])

    @property
    def has_posix(self) -> bool:
        return "posix" in self._kinds()

    def render(self) -> str:
        s = self.settings
        lines = ["# written by pulumi-dbos (engine/local/repo.py); do not edit: set dbos:backupRepo", "[global]",
                 f"spool-path={self.dir / 'spool'}", f"lock-path={self.dir / 'lock'}", f"log-path={self.dir / 'log'}",
                 "log-level-file=off", "log-level-console=warn", "log-level-stderr=off",
                 # async only with a remote store: batched, parallel uploads; a posix repository alone is
                 # quicker per segment synchronously (archive_now 0.04-0.07 s vs 0.23-0.45 s; a server's stop
                 # 0.1 s vs 0.5 s, its last segment pushed on the way down)
                 f"archive-async={'y' if s.s3 else 'n'}", "process-max=2", "compress-type=lz4", "start-fast=y", "delta=y",
                 "archive-push-queue-max=4GiB", f"# pulumi-dbos: archive-timeout={s.archive_timeout}",
                 *([f"# pulumi-dbos: deleted-retention-hours={s.deleted_retention_hours}"]
                   if s.deleted_retention_hours else [])]
        for n, kind in enumerate(self._kinds(), 1):
            r = f"repo{n}"
            if kind == "posix":
                lines += [f"{r}-path={self.posix_path}"]
            elif s.s3 is not None:
                lines += [f"{r}-type=s3", f"{r}-s3-endpoint={s.s3.endpoint}", f"{r}-s3-bucket={s.s3.bucket}",
                          f"{r}-s3-region={s.s3.region}", f"{r}-s3-key={s.s3.access_key}",
                          f"{r}-s3-key-secret={s.s3.secret_key}", f"{r}-path={s.s3.path}",
                          f"{r}-s3-uri-style={s.s3.uri_style}"]
                if s.s3.ca_file:
                    lines.append(f"{r}-storage-ca-file={s.s3.ca_file}")
                if not s.s3.verify_tls:
                    lines.append(f"{r}-storage-verify-tls=n")
            lines += [f"{r}-retention-full-type=time", f"{r}-retention-full=1"]
            if s.cipher_pass:
                lines += [f"{r}-cipher-type=aes-256-cbc", f"{r}-cipher-pass={s.cipher_pass}"]
        return "\n".join(lines) + "\n"

    def ensure_conf(self) -> None:
        """Write the configuration when it says something else (atomically, fsync'd, 0600)."""
        text = self.render()
        with contextlib.suppress(OSError):
            if self.conf.read_text() == text:
                return
        for d in (self.dir, self.dir / "spool", self.dir / "lock", self.dir / "log"):
            self.layout.mkdir(d)
        if "posix" in self._kinds() and (self.settings.path is None or not self.posix_path.exists()):
            self.layout.mkdir(self.posix_path)
        write_atomic(self.conf, text, 0o600, uid=self._uid(), gid=self._gid())

    def _uid(self) -> int | None:
        return self.layout.run_as.uid if os.geteuid() == 0 and self.layout.run_as.user else None

    def _gid(self) -> int | None:
        return self.layout.run_as.gid if os.geteuid() == 0 and self.layout.run_as.user else None

    def exists(self) -> bool:
        """Whether there is a repository to ask: configured here already, or given (a new machine's empty
        data dir with only the repository settings: disaster recovery)."""
        return self.explicit or self.conf.exists()

    # ---------------------------------------------------------------- commands
    def _base(self, stanza: str | None) -> list[str]:
        argv = [settings.from_env().pgbackrest, f"--config={self.conf}"]
        return argv + [f"--stanza={stanza}"] if stanza else argv

    @staticmethod
    def _pg(pgdata: Path, sockdir: Path | None = None, port: int | None = None) -> list[str]:
        argv = [f"--pg1-path={pgdata}"]
        if sockdir is not None and port is not None:
            argv += [f"--pg1-socket-path={sockdir}", f"--pg1-port={port}", "--pg1-user=postgres"]
        return argv

    def run(self, stanza: str | None, command: str, *args: str, timeout: float = 900,
            check: bool = True, params: tuple[str, ...] = ()) -> str:
        """``pgbackrest [options] args command params`` as the cluster user; its output. Its sessions as the
        superuser get the engine's pinned search path too (``PGOPTIONS``: server.ADMIN_OPTIONS)."""
        from .server import ADMIN_OPTIONS  # here: server imports this module

        if self.explicit or not self.conf.exists():
            self.ensure_conf()
        cp = proc.run([*self._base(stanza), *args, command, *params], run_as=self.layout.run_as, timeout=timeout,
                      env=proc.clean_env({"PGOPTIONS": ADMIN_OPTIONS}, run_as=self.layout.run_as),
                      secrets=self.settings.secrets(),
                      check=check, hint="the backup repository (pgBackRest) refused; see its message above")
        return cp.stdout + (cp.stderr if cp.returncode else "")

    def archive_command(self, stanza: str, pgdata: Path) -> str:
        """The ``pgbackrest archive-push`` part of an instance's ``archive_command`` (PostgreSQL runs it
        with ``sh``; every argument is quoted)."""
        return " ".join(shlex.quote(a) for a in [*self._base(stanza), *self._pg(pgdata)]) + " archive-push %p"

    def archive_get_command(self, stanza: str, pgdata: Path) -> str:
        """A ``restore_command`` fetching a segment from the repository (``sh``; arguments quoted)."""
        return " ".join(shlex.quote(a) for a in [*self._base(stanza), *self._pg(pgdata)]) + ' archive-get %f "%p"'

    def create_stanza(self, stanza: str, pgdata: Path) -> None:
        """Make the stanza (offline: reads ``pgdata``'s control file; no server needed, ~50 ms)."""
        self.ensure_conf()
        self.run(stanza, "stanza-create", *self._pg(pgdata), "--no-online", timeout=120)

    def backup(self, stanza: str, pgdata: Path, sockdir: Path, port: int, *, full: bool,
               annotations: Mapping[str, str], retention_hours: int) -> RepoBackup:
        """A backup into every repository (full, else incremental) of a running server; then expiry by
        the instance's retention (pgBackRest counts whole days: at least ``retention_hours`` is kept)."""
        args = [*self._pg(pgdata, sockdir, port), f"--type={'full' if full else 'incr'}",
                *(f"--annotation={k}={v}" for k, v in annotations.items())]
        days = str(max(1, -(-retention_hours // 24)))
        for repo in self._repos():
            self.run(stanza, "backup", *args, f"--repo={repo}", f"--repo{repo}-retention-full={days}")
        st = self.stanza(stanza)
        if st is None or not st.backups:
            raise EngineError(f"the repository has no backup of {stanza!r} after a backup")
        return st.backups[-1]

    def _repos(self) -> list[int]:
        return list(range(1, len(self._kinds()) + 1))

    def annotate(self, stanza: str, label: str, annotations: Mapping[str, str]) -> None:
        for repo in self._repos():
            self.run(stanza, "annotate", f"--set={label}", f"--repo={repo}",
                     *(f"--annotation={k}={v}" for k, v in annotations.items()), timeout=120, check=False)

    def info(self, stanza: str | None = None) -> list[dict[str, Any]]:
        if not self.exists():
            return []
        out = self.run(stanza, "info", "--output=json", timeout=120)
        data: list[dict[str, Any]] = json.loads(out or "[]")
        return data

    def stanzas(self) -> list[Stanza]:
        return [st for raw in self.info() if (st := _parse(raw)) is not None]

    def stanza(self, name: str) -> Stanza | None:
        found = [st for raw in self.info(name) if (st := _parse(raw)) is not None and st.backups]
        return found[0] if found else None

    def of_instance(self, instance: str) -> list[Stanza]:
        """The instance's incarnations that hold a backup, oldest first."""
        return sorted((s for s in self.stanzas() if s.instance == instance and s.backups), key=lambda s: s.name)

    def segments(self, stanza: str) -> set[str]:
        """The names of the WAL segments the repositories hold for ``stanza`` (any of them)."""
        found: set[str] = set()
        for repo in self._repos():
            out = self.run(stanza, "repo-ls", "--recurse", "--output=json", f"--repo={repo}", timeout=300,
                           check=False, params=(f"archive/{stanza}",))
            with contextlib.suppress(ValueError):
                for path in json.loads(out or "{}"):
                    base = path.rsplit("/", 1)[-1]  # SEGMENT-<sha1>[.ext]; not SEGMENT.<offset>.backup
                    if _SEGMENT_NAME.match(base[:24]) and base[24:25] in ("", "-"):
                        found.add(base[:24])
        return found

    def verify(self, stanza: str) -> str | None:
        """``pgbackrest verify``: None when every backup and WAL file reads back with its checksum, else
        pgBackRest's report."""
        cp = proc.run([*self._base(stanza), "verify"], run_as=self.layout.run_as, timeout=900,
                      env=proc.clean_env(run_as=self.layout.run_as), secrets=self.settings.secrets(), check=False)
        text = (cp.stdout + cp.stderr).strip()
        return None if cp.returncode == 0 else (text or f"pgbackrest verify exited {cp.returncode}")

    def restore(self, stanza: str, pgdata: Path, target: datetime | None) -> None:
        """``pgdata`` (empty, or a cluster to overwrite with ``--delta``) becomes the stanza's newest backup
        before ``target`` with recovery settings to replay its WAL to ``target`` (None: to the end of the
        archive), then promote. The caller writes ``instance.conf`` and starts the server."""
        args = self._pg(pgdata)
        if target is not None:
            args += ["--type=time", f"--target={to_pg(target)}", "--target-action=promote"]
        args += ["--target-timeline=latest"]
        self.run(stanza, "restore", *args)

    def delete_stanza(self, stanza: str) -> None:
        """Remove a stanza and everything in it (only for an expired destroyed instance, or one that holds no
        backup)."""
        self.run(stanza, "stop", timeout=60, check=False)
        try:
            for repo in self._repos():
                # pg1-path: where it checks that no server runs (none does: a path that is never a cluster)
                self.run(stanza, "stanza-delete", f"--repo={repo}", f"--pg1-path={self.dir / 'no-cluster'}",
                         "--force", timeout=300)
        finally:
            self.run(stanza, "start", timeout=60, check=False)

    def expire_deleted(self, now: datetime | None = None) -> list[str]:
        """Remove destroyed instances' stanzas whose ``keep-until`` has passed; returns their names."""
        now = now or utcnow()
        gone = []
        for st in self.stanzas():
            if st.keep_until and parse_rfc3339(st.keep_until) <= now:
                log.info("backup repository: %s (destroyed %s) expired", st.name, st.destroyed_at)
                self.delete_stanza(st.name)
                gone.append(st.name)
        return gone

    def remove_empty(self, stanza: str) -> None:
        """A failed create's stanza, if it holds no backup (never one with a backup)."""
        if self.exists() and self.stanza(stanza) is None:
            with contextlib.suppress(EngineError):
                self.delete_stanza(stanza)

    def clear_spool(self, stanza: str) -> None:
        shutil.rmtree(self.dir / "spool" / "archive" / stanza, ignore_errors=True)


def _parse(raw: dict[str, Any]) -> Stanza | None:
    name = str(raw.get("name") or "")
    instance = instance_of(name)
    if instance is None:
        return None
    backups = []
    for b in raw.get("backup") or []:
        if b.get("error"):
            continue
        ts = b.get("timestamp") or {}
        backups.append(RepoBackup(
            label=str(b["label"]), started=datetime.fromtimestamp(int(ts["start"])).astimezone(),
            stopped=datetime.fromtimestamp(int(ts["stop"])).astimezone(),
            start_wal=str((b.get("archive") or {}).get("start") or ""),
            annotations={str(k): str(v) for k, v in (b.get("annotation") or {}).items()},
            start_lsn=str((b.get("lsn") or {}).get("start") or "")))
    unique = {b.label: b for b in backups}  # the same backup in each repository
    archive = [a.get("max") for a in raw.get("archive") or [] if a.get("max")]
    return Stanza(name, instance, sorted(unique.values(), key=lambda b: (b.stopped, b.label)),
                  max(archive) if archive else None)
