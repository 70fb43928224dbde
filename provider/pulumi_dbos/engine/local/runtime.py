"""The apps' processes on this machine: their OS user and interpreter, environments (uv), liveness, stop.

Used by ``apps.py``; nothing here knows the catalog.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

from ...errors import EngineError, ValidationError
from .. import proc, settings
from ..contract import AppDatabaseAccess
from ..waits import wait_until
from . import sandbox, server


@dataclass(frozen=True)
class AppUser:
    """The OS user an engine's apps run as. ``comment`` set: a user serve creates for one organization
    (and recognises by that GECOS field before it uses or removes it); None: an existing user (the
    set-up's ``dbosapp``) that is never created or removed here."""

    name: str
    comment: str | None = None


def default_app_user(given: settings.EngineSettings | None = None) -> AppUser | None:
    name = (given or settings.from_env()).app_user
    if name:
        return AppUser(name)
    return AppUser("dbosapp") if os.geteuid() == 0 else None


def org_user(data_dir: Path, org: str) -> AppUser:
    """Serve's OS user for organization ``org`` of the serve at ``data_dir``:
    ``dboso_<org, lowercased, 16 chars>_<6 hex>``, the digest of both (organization names are
    case-sensitive and user names are not; two serves on one machine never share a user)."""
    slug = "".join(c if c.isalnum() else "_" for c in org.lower())[:16]
    digest = hashlib.sha256(f"{Path(data_dir).resolve()}\0{org}".encode()).hexdigest()[:6]
    return AppUser(f"dboso_{slug}_{digest}", f"pulumi-dbos serve organization {org} {digest}")


_users_lock = threading.Lock()


def ensure_user(user: AppUser) -> None:
    """``user`` exists (serve's organization users are created on first use); an existing user of that
    name that serve did not create is refused, never taken over."""
    with _users_lock:
        try:
            pw = pwd.getpwnam(user.name)
        except KeyError:
            if user.comment is None:
                raise EngineError(f"OS user {user.name!r} for apps does not exist",
                                  hint="the set-up creates it (`useradd --system dbosapp`), or set "
                                  "PULUMI_DBOS_APP_USER") from None
            proc.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                      "--shell", "/usr/sbin/nologin", "--comment", user.comment, user.name], timeout=60,
                     hint="creating the organization's OS user failed")
            return
        if user.comment is not None and pw.pw_gecos != user.comment:
            raise EngineError(f"OS user {user.name!r} exists but was not made by pulumi-dbos serve for this "
                              "organization", hint="remove or rename that user")
        if pw.pw_uid == 0:
            raise EngineError(f"OS user {user.name!r} for apps is root", hint="apps never run as root")


def remove_user(user: AppUser) -> None:
    """Remove one of serve's organization users (no-op for others or when it is gone)."""
    if user.comment is None:
        return
    with _users_lock:
        try:
            if pwd.getpwnam(user.name).pw_gecos != user.comment:
                return
        except KeyError:
            return
        uid = pwd.getpwnam(user.name).pw_uid
        for p in psutil.process_iter(["uids"]):
            with contextlib.suppress(psutil.Error):
                if p.info["uids"] and p.info["uids"].real == uid:
                    p.kill()
        proc.run(["userdel", user.name], timeout=60, check=False)


def app_python() -> str:
    """The interpreter of the apps' environments; as root one the apps' user can run (not under /root)."""
    given = settings.from_env().app_python
    if given:
        return given
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def _uv() -> str:
    from uv import find_uv_bin

    return str(find_uv_bin())


def alive(pid: int | None) -> bool:
    """``server.alive`` after reaping our own exited children (spawned apps would stay zombies)."""
    if not pid:
        return False
    proc.reap()
    return server.alive(pid)


def listens(pid: int, port: int) -> bool:
    """Whether ``pid`` (or a child of it) listens on ``port``: a port that answers may be someone else's."""
    try:
        p = psutil.Process(pid)
        for q in (p, *p.children(recursive=True)):
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in q.net_connections(kind="tcp")):
                return True
    except psutil.Error:
        return False
    return False


#: how long a status read waits for an app's answer (a deploy's health wait asks again until its deadline)


def http_status(port: int, timeout: float | None = None) -> int | None:
    """The HTTP status of ``GET /`` on 127.0.0.1:``port`` (None: no HTTP answer). DBOS Transact 3.x has no
    admin server (no ``/dbos-healthz``): the app's own answer is its health."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port,
                                      timeout=settings.from_env().app_answer_timeout if timeout is None else timeout)
    try:
        conn.request("GET", "/", headers={"User-Agent": "pulumi-dbos-health"})
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def answers(status: int | None) -> bool:
    """Whether an app answering ``status`` serves: any answer below 500 (a 404 of an app without a ``/``
    route is an app that answers; a 5xx is one that fails)."""
    return status is not None and status < 500


def runs_with(pid: int, args: list[str]) -> bool:
    """Whether ``pid``'s command line ends with ``args`` (True when it cannot be read: keep what runs)."""
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return True
    return len(cmdline) > len(args) and cmdline[-len(args):] == args


def stop(pid: int | None, grace: float = 10) -> None:
    if not alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(psutil.Error):
        p = psutil.Process(pid)
        for child in p.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.terminate()
        p.terminate()
        if wait_until(lambda: not alive(pid), grace, f"process {pid} exiting", interval=0.05,
                      raise_on_timeout=False) is None:
            for child in p.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
            p.kill()
    wait_until(lambda: not alive(pid), 5, f"process {pid} exiting", interval=0.05, raise_on_timeout=False)


def pgpass_line(db: AppDatabaseAccess) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace(":", "\\:")

    return f"{esc(db.hostname)}:{db.port}:*:{esc(db.username)}:{esc(db.password)}\n"


def pgpass_fields(text: str) -> list[str]:
    """The fields of a password file's first line (``\\`` and ``\\:`` unescaped), as libpq reads them."""
    fields, cur, esc = [], [], False
    for ch in text.split("\n", 1)[0]:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ":":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    fields.append("".join(cur))
    return fields


def db_client_ports(pid: int | None, db_port: int) -> set[int]:
    """The local ports of ``pid``'s (and its children's) TCP connections to ``db_port``: its database
    sessions, as ``pg_stat_activity.client_port`` shows them."""
    if not pid:
        return set()
    found: set[int] = set()
    try:
        p = psutil.Process(pid)
        for q in (p, *p.children(recursive=True)):
            with contextlib.suppress(psutil.Error):
                found.update(c.laddr.port for c in q.net_connections(kind="tcp")
                             if c.raddr and c.raddr.port == db_port and c.laddr)
    except psutil.Error:
        return found
    return found


#: where an app's environment is inside its sandbox (built there, so its scripts' paths hold)
ENVS_INSIDE = "/opt/envs"
_URL_REQ = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._ -]*\])?\s*@\s*(git\+)?https?://\S+")


def check_requirements(text: str) -> list[str]:
    """Why ``requirements.txt`` cannot be built (empty: it can): only requirements from the index or
    ``https://`` URLs; no options (``-e``, ``-r``, ``-c``, ``--index-url``, ``-f``...), no local paths or
    ``file:`` URLs (an earlier upload's directory would run its own build backend)."""
    problems = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            problems.append(f"requirements.txt line {n}: options ({line.split()[0]}) are not allowed; list "
                            "packages from the index or https:// URLs")
        elif _URL_REQ.match(line):
            continue
        elif "://" in line or line.startswith((".", "/", "~", "file:")) or "/" in line.split(";")[0] \
                or "\\" in line:
            problems.append(f"requirements.txt line {n}: {line!r} is not a package from the index or an "
                            "https:// URL (local paths and file: URLs are not allowed)")
    return problems


#: uv, unlike pip, does not compile bytecode by default, and an app's environment is read-only to it: without
#: this every start of the app, its ``dbos migrate`` and its alembic compiled DBOS, SQLAlchemy & co. from
#: source again (1.5-2 s of CPU before the first line of the app; 0.6 s with the bytecode). Costs ~4 s of
#: CPU once per environment.
COMPILE = ("--compile-bytecode",)


def build_env(envs: Path, release: Path, user: proc.RunAs) -> tuple[Path, str]:
    """The virtualenv under ``envs`` for the release's requirements.txt (built once per distinct content, with
    uv): its directory here, and its path as the app sees it. As root the build runs in the app's sandbox
    as the app's OS user (never as root: an sdist's build backend is tenant code), the environment at
    :data:`ENVS_INSIDE`, the organization's own uv cache beside it."""
    req = release / "requirements.txt"
    python = app_python()
    content = req.read_bytes() if req.exists() else b""
    problems = check_requirements(content.decode(errors="replace"))
    if problems:
        raise ValidationError([("requirements.txt", p) for p in problems])
    boxed = sandbox.enabled() and user.user is not None
    # "pyc": environments are built with their bytecode compiled (older ones, without, are not reused)
    key = hashlib.sha256(content + python.encode() + (b"\0sandbox-1" if boxed else b"") + b"\0pyc").hexdigest()[:16]
    env = envs / key
    inside = f"{ENVS_INSIDE}/{key}" if boxed else str(env)
    if (envs / f"{key}.ready").exists():
        return env, inside
    with open(envs / f"{key}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (envs / f"{key}.ready").exists():
            return env, inside
        shutil.rmtree(env, ignore_errors=True)
        uv_env = proc.clean_env({"UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"})
        for k in ("PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX", "PIP_CERT", "SSL_CERT_FILE",
                  "REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
            if k in os.environ:
                uv_env[k] = os.environ[k]
        try:
            if boxed:
                _build_boxed(envs, key, req if content else None, python, user, uv_env)
            else:
                # uv's own cache (per user, machine-wide): a package is downloaded once, then linked
                for k in ("UV_CACHE_DIR", "XDG_CACHE_HOME"):
                    if k in os.environ:
                        uv_env[k] = os.environ[k]
                proc.run([_uv(), "venv", "--quiet", "--python", python, str(env)], env=uv_env,
                         timeout=settings.from_env().env_timeout, hint="creating the app's virtualenv failed")
                if content:
                    proc.run([_uv(), "pip", "install", "--quiet", *COMPILE, "--python", str(env / "bin" / "python"),
                              "-r", str(req)], env=uv_env, timeout=settings.from_env().env_timeout,
                             hint="installing the app's requirements.txt failed")
        except BaseException:
            shutil.rmtree(env, ignore_errors=True)
            raise
        (envs / f"{key}.ready").write_text(python)  # in root's directory: nothing the build could plant
    return env, inside


#: the HTTPS proxy's port inside a build's network namespace (its own: no one else's port)
BUILD_PROXY_PORT = 3128
PYPI_HOSTS = ("pypi.org", "files.pythonhosted.org")


def index_hosts(uv_env: dict[str, str], requirements: str) -> tuple[str, ...]:
    """The hosts a build may reach (on 443): the package index (``UV_INDEX_URL``, ``UV_DEFAULT_INDEX``,
    ``PIP_INDEX_URL``, else PyPI's two) and the hosts of requirements.txt's ``https://`` URLs."""
    from urllib.parse import urlsplit

    hosts = {urlsplit(uv_env[k]).hostname or "" for k in ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "PIP_INDEX_URL")
             if uv_env.get(k)}
    hosts = {h for h in hosts if h} or set(PYPI_HOSTS)
    for m in re.finditer(r"https://([A-Za-z0-9.-]+)", requirements):
        hosts.add(m.group(1).lower())
    return tuple(sorted(hosts))


def _build_boxed(envs: Path, key: str, req: Path | None, python: str, user: proc.RunAs,
                 uv_env: dict[str, str]) -> None:
    cache = envs / "_cache"
    for d in (envs / key, cache):
        d.mkdir(exist_ok=True)
        st = os.lstat(d)
        if not os.path.isdir(d) or os.path.islink(d):
            raise EngineError(f"{d} is not a directory")
        if st.st_uid != user.uid:
            os.lchown(d, user.uid, user.gid)
        os.chmod(d, 0o700 if d == cache else 0o755)
    binds = [sandbox.Bind(envs, ENVS_INSIDE, writable=True), sandbox.Bind(Path(_uv()), "/opt/uv/uv")]
    if req is not None:
        binds.append(sandbox.Bind(req, "/opt/req/requirements.txt"))
    for k in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE"):
        f = uv_env.get(k)
        if f and os.path.isfile(f) and not f.startswith(("/etc/", "/usr/")):
            binds.append(sandbox.Bind(Path(f), f))
    # no network but an HTTPS proxy to the package index (and the https:// URLs requirements.txt names), in a
    # network namespace of the build's own (issue 31: an sdist's build backend is tenant code)
    env = {**uv_env, "HOME": "/tmp", "UV_CACHE_DIR": f"{ENVS_INSIDE}/_cache", "PATH": "/usr/bin:/bin",
           "HTTPS_PROXY": f"http://127.0.0.1:{BUILD_PROXY_PORT}"}
    for k in ("USER", "LOGNAME", "https_proxy", "NO_PROXY", "no_proxy"):
        env.pop(k, None)
    net = sandbox.Net(connect=(BUILD_PROXY_PORT, index_hosts(uv_env, req.read_text(errors="replace") if req else "")))
    inside = f"{ENVS_INSIDE}/{key}"
    limits = sandbox.Limits(memory_mib=settings.from_env().build_memory_mib)
    unit = sandbox.unit_name(str(user.user), f"build-{key}")
    common = {"user": user, "binds": binds, "cwd": "/tmp", "env": env, "host_cwd": envs, "limits": limits,
              "unit": unit, "timeout": settings.from_env().env_timeout, "net": net}
    sandbox.run(["/opt/uv/uv", "venv", "--quiet", "--python", python, inside],
                hint="creating the app's virtualenv failed", **common)  # type: ignore[arg-type]
    if req is not None:
        sandbox.run(["/opt/uv/uv", "pip", "install", "--quiet", *COMPILE, "--python", f"{inside}/bin/python", "-r",
                     "/opt/req/requirements.txt"], hint="installing the app's requirements.txt failed",
                    **common)  # type: ignore[arg-type]
