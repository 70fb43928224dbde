"""An app's files on the local engine: its directories (owners and modes of :mod:`.apps`' docstring), stored
versions and their unpacked releases, its password files, and its databases (functions over a
:class:`~.apps.LocalApps`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ...appsource import unpack
from ...errors import EngineError
from ...timeutil import to_rfc3339, utcnow
from ..contract import AppDatabaseAccess
from ..files import private_dir, write_owned
from . import runtime, sandbox

if TYPE_CHECKING:
    from .apps import LocalApps


def app_dirs(apps: LocalApps, name: str) -> dict[str, Path]:
    """The app's directories (made, with the owners and modes of the module docstring)."""
    top = apps.app_dir(name)
    private_dir(top, 0o750, apps.gid)
    legacy = top / "run"  # the layout before 0.5: a directory the app owned
    if os.path.lexists(legacy):
        shutil.rmtree(legacy, ignore_errors=True)
    dirs = {"versions": top / "versions", "releases": top / "releases", "ctl": top / "ctl", "log": top / "log",
            "home": top / "home"}
    private_dir(dirs["versions"], 0o700)
    private_dir(dirs["releases"], 0o750, apps.gid)
    private_dir(dirs["ctl"], 0o750, apps.gid)
    private_dir(dirs["log"], 0o700)
    with contextlib.suppress(FileExistsError):
        dirs["home"].mkdir(mode=0o700)
    st = os.lstat(dirs["home"])
    if not stat.S_ISDIR(st.st_mode):
        raise EngineError(f"{dirs['home']} is not a directory")
    if os.geteuid() == 0 and apps.user and st.st_uid != apps.run_as.uid:
        os.lchown(dirs["home"], apps.run_as.uid, apps.run_as.gid)
    return dirs


def prepare(apps: LocalApps) -> None:
    if apps.user:
        runtime.ensure_user(apps.user)
        if apps.boxed:
            sandbox.require()
    apps.layout.prepare()
    os.chmod(apps.layout.data_dir, 0o711)  # traversable by the apps' user; instances/ stays 0700
    private_dir(apps.root, 0o711)
    private_dir(apps.root / "_envs", 0o750 if apps.user else 0o755, apps.gid)
    script = apps.root / "proxy.py"
    source = Path(__file__).with_name("proxy.py")
    if not script.exists() or script.read_bytes() != source.read_bytes():
        write_owned(script, source.read_bytes(), 0o644)


def store(apps: LocalApps, name: str, version: str, archive: bytes | None, vdir: Path) -> bytes:
    path = vdir / f"{version}.zip"
    if archive is None:
        if not path.is_file():
            known = ", ".join(v.version for v in apps.versions(name)) or "none"
            raise EngineError(f"version {version!r} of app {name!r} is not stored (known: {known})")
        return path.read_bytes()  # root's own 0700 directory
    if not path.exists():
        write_owned(path, archive, 0o600)
    apps.rows.add_version(name, version, to_rfc3339(utcnow()))
    return archive


def release(apps: LocalApps, releases: Path, version: str, archive: bytes) -> Path:
    """The unpacked version: root-owned, readable by the app's group, made under a temporary name and
    renamed (a directory that exists is complete)."""
    rel = releases / version
    with contextlib.suppress(OSError):
        if os.lstat(rel).st_uid == 0 or os.geteuid() != 0:
            return rel
    if os.path.lexists(rel):
        shutil.rmtree(rel, ignore_errors=True)  # not root's: an older layout's, rebuilt
    tmp = releases / f".{version}.{os.getpid()}.{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    try:
        unpack(archive, tmp)
        if os.geteuid() == 0 and apps.user:
            for p in [tmp, *tmp.rglob("*")]:
                os.lchown(p, 0, apps.run_as.gid)
                mode = os.lstat(p).st_mode
                os.chmod(p, 0o750 if stat.S_ISDIR(mode) or mode & 0o111 else 0o640)
        os.rename(tmp, rel)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rel


def prune_versions(apps: LocalApps, name: str, protect: set[str]) -> list[str]:
    """Remove the oldest stored versions beyond :attr:`keep_versions` (never one in ``protect``:
    the current and the previous serving version); the removed ids."""
    if apps.keep_versions is None:
        return []
    stored = [v.version for v in apps.versions(name)]
    extra = len(stored) - apps.keep_versions
    removed = []
    for version in stored:
        if extra <= 0:
            break
        if version in protect:
            continue
        forget_version(apps, name, version)
        removed.append(version)
        extra -= 1
    return removed


def forget_version(apps: LocalApps, name: str, version: str) -> None:
    """Remove a stored version: its archive, its release, its row."""
    with contextlib.suppress(FileNotFoundError):
        (apps.app_dir(name) / "versions" / f"{version}.zip").unlink()
    shutil.rmtree(apps.app_dir(name) / "releases" / version, ignore_errors=True)
    apps.rows.delete_version(name, version)


def password_files(apps: LocalApps, db_port: int | None = None, username: str | None = None) -> list[tuple[Path, list[str]]]:
    """Every app's password file (those of running processes and of a deploy under way) for ``username``
    on the instance at ``db_port`` (None: any), with its fields."""
    found: list[tuple[Path, list[str]]] = []
    if not apps.root.is_dir():
        return found
    port = None if db_port is None else str(db_port)
    for app in sorted(apps.root.iterdir()):
        ctl = app / "ctl"
        if app.name.startswith(("_", ".")) or not ctl.is_dir() or ctl.is_symlink():
            continue
        for f in sorted(ctl.glob("pgpass.*")):  # root's own directory: the app only reads it
            try:
                fields = runtime.pgpass_fields(f.read_text())
            except OSError:
                continue
            if len(fields) == 5 and port in (None, fields[1]) and username in (None, fields[3]):
                found.append((f, fields))
    return found


def databases(db: AppDatabaseAccess, names: list[str]) -> None:
    import psycopg  # on first use: a preview's checks never connect
    from psycopg import sql

    try:
        with psycopg.connect(host=db.hostname, port=db.port, user=db.username, password=db.password,
                             dbname="postgres", connect_timeout=10, autocommit=True) as conn:
            for name in names:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                    with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise EngineError(f"cannot prepare the app's databases on {db.instance_name!r}: "
                          f"{str(exc).replace(db.password, '[secret]').strip()}",
                          hint="is the instance available, and does its password in the stack work?") from None
