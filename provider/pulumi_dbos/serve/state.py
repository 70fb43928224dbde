"""Serve's own state: one local engine per organization, and what DBOS Cloud keeps beside its instances.

Layout under the data dir ``D``::

    orgs/<org>/             the organization's local engine (its catalog, clusters, apps)
    serve/jwt.key           the token signing key (0600)
    serve/tls/              the self-signed certificate, when none is given
    serve/credentials.json  {org: {instance: {username, password[, supabase]}}} (0600)
    serve/apps.json         {org: {app: registration}} (0600): apps registered, deployed or not
    serve/secrets.json      {org: {app: {NAME: value}}} (0600): the apps' environment variables
    serve/serve.lock        held by the running server (one server per data dir)

DBOS Cloud knows every instance's admin password (it deploys apps with it), so serve keeps them;
the files are written atomically (a 0600 temporary file renamed over the old one) under a lock,
and their values are never logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..engine.files import write_atomic
from ..engine.settings import EngineSettings
from ..errors import DbosError

if TYPE_CHECKING:
    from ..engine.local.facade import LocalEngine

#: stored versions kept per app (older ones are pruned after a deploy; never the serving or the previous one)
#: organization names (they become directory names): letters, digits, ``_`` and ``-``
ORG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,29}$")


def serve_dir(data_dir: Path) -> Path:
    return data_dir / "serve"


def traversable(data_dir: Path) -> None:
    """``D`` and ``D/orgs`` searchable by everyone (0711): the clusters' and the apps' OS users reach
    ``orgs/<org>`` through them (a local engine using ``D`` itself as its data dir may reset ``D`` to 0700)."""
    for d in (data_dir, data_dir / "orgs"):
        d.mkdir(exist_ok=True)
        mode = os.stat(d).st_mode & 0o777
        if mode & 0o011 != 0o011:
            os.chmod(d, mode | 0o011)


def prepare(data_dir: Path) -> Path:
    """Create ``D`` and ``D/orgs`` (both 0711, see :func:`traversable`) and ``D/serve`` (0700); returns
    ``D/serve``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    traversable(data_dir)
    sdir = serve_dir(data_dir)
    sdir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(sdir, 0o700)
    return sdir


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically and durably with mode 0600 (``engine.files.write_atomic``)."""
    write_atomic(path, data, 0o600)


class JsonStore:
    """A ``{org: {key: value}}`` JSON file: read on every access, rewritten atomically under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_bytes() or b"{}")
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError) as exc:
            raise DbosError(f"cannot read {self.path}: {type(exc).__name__}",
                            hint="restore it from a backup, or remove it (serve then forgets what it held)") from None
        return data if isinstance(data, dict) else {}

    def orgs(self) -> list[str]:
        with self._lock:
            return sorted(self._load())

    def items(self, org: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._load().get(org) or {})

    def get(self, org: str, key: str) -> Any:
        return self.items(org).get(key)

    def update(self, org: str, key: str, fn: Callable[[Any], Any]) -> Any:
        """Replace the value under ``org``/``key`` by ``fn(old)`` (None removes it); returns the new value."""
        with self._lock:
            data = self._load()
            bucket = data.setdefault(org, {})
            new = fn(bucket.get(key))
            if new is None:
                bucket.pop(key, None)
            else:
                bucket[key] = new
            if not bucket:
                data.pop(org, None)
            write_private(self.path, json.dumps(data, indent=1, sort_keys=True).encode())
            return new

    def set(self, org: str, key: str, value: Any) -> None:
        self.update(org, key, lambda _old: value)

    def delete(self, org: str, key: str) -> None:
        with self._lock:
            if self.get(org, key) is not None:
                self.update(org, key, lambda _old: None)


@dataclass(frozen=True)
class Credentials:
    """An instance's admin user as DBOS Cloud holds it."""

    username: str
    password: str
    supabase: str | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"username": self.username, "password": self.password}
        if self.supabase:
            d["supabase"] = self.supabase
        return d

    @classmethod
    def from_json(cls, d: Any) -> Credentials | None:
        if not isinstance(d, dict) or not isinstance(d.get("username"), str) or not isinstance(d.get("password"), str):
            return None
        sb = d.get("supabase")
        return cls(d["username"], d["password"], sb if isinstance(sb, str) else None)

    def __repr__(self) -> str:  # never the password, whatever prints it
        return f"Credentials(username={self.username!r}, password=[secret])"


class ServeState:
    """Per-organization engines (made lazily, cached) and serve's stores. Thread-safe."""

    def __init__(self, data_dir: Path, advertise_host: str | None = None,
                 backup_repo: dict[str, Any] | None = None) -> None:
        self.data_dir = data_dir
        self.backup_repo = backup_repo
        #: the organizations' engines' settings (read once, when serve starts)
        self.settings = EngineSettings.from_env()
        #: ``--advertise-host``: the organizations' instances and apps listen there too and report it
        self.advertise_host = advertise_host
        self.dir = serve_dir(data_dir)
        self.credentials_store = JsonStore(self.dir / "credentials.json")
        self.apps = JsonStore(self.dir / "apps.json")
        self.secrets = JsonStore(self.dir / "secrets.json")
        self._engines: dict[str, LocalEngine] = {}
        self._lock = threading.Lock()
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._lock_file: IO[str] | None = None

    # ---------------------------------------------------------------- the server's own lock
    def acquire(self) -> None:
        """Hold ``serve.lock`` while serving: two servers on one data dir would fight over its instances."""
        fh = open(self.dir / "serve.lock", "a+")  # noqa: SIM115 - held for the process's life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise DbosError(f"another `pulumi-dbos serve` is running on {self.data_dir}",
                            hint="stop it, or pass another --data-dir") from None
        self._lock_file = fh

    # ---------------------------------------------------------------- engines
    def org_dir(self, org: str) -> Path:
        if not ORG_RE.match(org) or org == "user":
            raise DbosError(f"invalid organization name {org!r}")
        return self.data_dir / "orgs" / org

    def engine(self, org: str) -> LocalEngine:
        traversable(self.data_dir)
        with self._lock:
            eng = self._engines.get(org)
            if eng is None:
                from ..engine.local.facade import LocalEngine
                from ..engine.local.runtime import org_user

                eng = self._engines[org] = LocalEngine(self.org_dir(org), listen_host=self.advertise_host,
                                                       app_user=org_user(self.data_dir, org),
                                                       keep_versions=self.settings.serve_keep_versions,
                                                       repo=self.org_repo(org), settings=self.settings)
            return eng

    def org_repo(self, org: str) -> Any:
        """The organization's part of ``--backup-repo``: ``<path>/orgs/<org>``, ``<s3.path>/orgs/<org>`` (None:
        the default, a repository in the organization's data dir)."""
        if not self.backup_repo:
            return None
        from ..engine.local.repo import RepoSettings

        mapping = json.loads(json.dumps(self.backup_repo))
        if mapping.get("path"):
            mapping["path"] = f"{mapping['path'].rstrip('/')}/orgs/{org}"
        if mapping.get("s3"):
            mapping["s3"]["path"] = f"{(mapping['s3'].get('path') or '/pulumi-dbos').rstrip('/')}/orgs/{org}"
        return RepoSettings.from_mapping(mapping)

    def has_catalog(self, org: str) -> bool:
        """Whether the organization's engine has made anything yet (reads never create a data dir)."""
        return (self.org_dir(org) / "catalog.db").is_file()

    def orgs(self) -> list[str]:
        root = self.data_dir / "orgs"
        try:
            return sorted(p.name for p in root.iterdir() if ORG_RE.match(p.name) and (p / "catalog.db").is_file())
        except FileNotFoundError:
            return []

    # ---------------------------------------------------------------- locks
    def lock(self, *key: str) -> threading.Lock:
        """One lock per key, e.g. ``("db", org, name)``: creates and destroys of one name never interleave."""
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    @contextlib.contextmanager
    def locked(self, *key: str) -> Iterator[None]:
        with self.lock(*key):
            yield

    # ---------------------------------------------------------------- credentials
    def credentials(self, org: str, instance: str) -> Credentials | None:
        return Credentials.from_json(self.credentials_store.get(org, instance))

    def set_credentials(self, org: str, instance: str, creds: Credentials) -> None:
        self.credentials_store.set(org, instance, creds.to_json())

    def forget_credentials(self, org: str, instance: str) -> None:
        self.credentials_store.delete(org, instance)
