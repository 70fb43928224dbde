"""The official DBOS Cloud CLI (``dbos-cloud``, npm ``@dbos-inc/dbos-cloud``) against ``pulumi-dbos serve``.

How the CLI is run follows ``../shared/dbos-cloud-api.md`` §10: every call gets a working directory holding
``.dbos/credentials`` (a token of serve's, user alice of organization acme), ``DBOS_DOMAIN`` = serve's
``host:port``, ``NODE_EXTRA_CA_CERTS`` = serve's self-signed certificate, no update notifier, stdin
``/dev/null`` (the CLI must never prompt: passwords always come with ``-W``), and a timeout.

One serve per test module (``scope="module"``); everything it made is destroyed at the end, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pulumi_dbos.cloudapi import paths
from tests.support.serve import Serve, running_serve

#: the pinned CLI (scripts/ensure-dbos-cloud.sh); PULUMI_DBOS_DBOS_CLOUD in .state/env says where it is
VERSION = "2.10.24"
DEFAULT_BIN = Path.home() / ".cache" / "pulumi-dbos" / f"dbos-cloud-{VERSION}" / "node_modules" / ".bin" / "dbos-cloud"
ORG = "acme"
USER = "alice"

#: CLI timeouts (seconds): a provision/restore polls after 5 s (then every 30 s); a first deploy builds a
#: virtualenv; everything else is one or two requests
QUICK = 60.0
POLLING = 180.0
DEPLOY = 600.0

Conn = psycopg.Connection[tuple[Any, ...]]


def cli_path() -> Path:
    path = Path(os.environ.get("PULUMI_DBOS_DBOS_CLOUD") or DEFAULT_BIN)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"the official DBOS Cloud CLI is not installed at {path}: run scripts/setup.sh "
                    f"(`make test` does; it runs scripts/ensure-dbos-cloud.sh), then `source .state/env`",
                    pytrace=False)
    return path


def output(proc: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr together (the CLI logs through winston to stdout; errors may go to either)."""
    return proc.stdout + proc.stderr


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    return f"`{' '.join(map(str, proc.args))}` exited {proc.returncode}:\n{output(proc)}"


def parse_json(text: str) -> Any:
    """The JSON the CLI printed for ``--json`` (the server's body as is); tolerant of log lines around it."""
    with contextlib.suppress(ValueError):
        return json.loads(text)
    for line in reversed(text.splitlines()):
        if line.strip().startswith(("{", "[")):
            with contextlib.suppress(ValueError):
                return json.loads(line)
    raise AssertionError(f"no JSON in the CLI's output:\n{text}")


@dataclass
class DbosCloud:
    """Runs the official CLI against one serve, each call in a directory holding its credentials."""

    bin: Path
    serve: Serve = field(repr=False)
    root: Path
    home: Path = field(init=False)
    _tokens: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.home = self.workdir(self.root / "home")

    def token(self, org: str = ORG, user: str = USER) -> str:
        if (org, user) not in self._tokens:
            self._tokens[org, user] = self.serve.token(org=org, user=user)
        return self._tokens[org, user]

    def workdir(self, path: Path, *, org: str = ORG, user: str = USER) -> Path:
        """``path`` (created) with ``.dbos/credentials`` for ``user`` of ``org``; the CLI reads it from its CWD."""
        (path / ".dbos").mkdir(parents=True, exist_ok=True)
        creds = {"token": self.token(org, user), "userName": user, "organization": org}
        (path / ".dbos" / "credentials").write_text(json.dumps(creds))
        return path

    def env(self) -> dict[str, str]:
        # nothing of the caller's DBOS_*/PG* (the CLI interpolates ${VAR}s of dbos-config.yaml into the upload)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DBOS_", "PG"))}
        env.update(DBOS_DOMAIN=self.serve.domain, NODE_EXTRA_CA_CERTS=str(self.serve.ca_cert),
                   NO_UPDATE_NOTIFIER="1", NO_COLOR="1")
        return env

    def run(self, *args: str, cwd: Path | None = None, timeout: float = QUICK) -> subprocess.CompletedProcess[str]:
        with open(os.devnull, "rb") as devnull:
            return subprocess.run([str(self.bin), *args], cwd=cwd or self.home,  # noqa: S603 - the pinned CLI
                                  env=self.env(), stdin=devnull, capture_output=True, text=True,
                                  timeout=timeout, check=False)

    def ok(self, *args: str, cwd: Path | None = None, timeout: float = QUICK) -> str:
        """Run, require exit 0, return the whole output."""
        proc = self.run(*args, cwd=cwd, timeout=timeout)
        assert proc.returncode == 0, describe(proc)
        return output(proc)

    def json(self, *args: str, cwd: Path | None = None, timeout: float = QUICK) -> Any:
        """Run with ``--json``, require exit 0, return the parsed JSON."""
        proc = self.run(*args, "--json", cwd=cwd, timeout=timeout)
        assert proc.returncode == 0, describe(proc)
        return parse_json(proc.stdout)

    def fails(self, *args: str, expect: str, cwd: Path | None = None, timeout: float = QUICK) -> str:
        """Run, require exit 1 and ``expect`` in the output."""
        proc = self.run(*args, cwd=cwd, timeout=timeout)
        assert proc.returncode == 1, describe(proc)
        assert expect in output(proc), describe(proc)
        return output(proc)

    # ------------------------------------------------------------------ databases, through the CLI
    def provision(self, name: str, username: str, password: str, cwd: Path | None = None) -> dict[str, Any]:
        """``db provision`` (which polls: 5 s at least), checked; then ``db status --json``."""
        out = self.ok("db", "provision", name, "-U", username, "-W", password, cwd=cwd, timeout=POLLING)
        assert "Database successfully provisioned" in out, out
        return self.status(name, cwd=cwd)  # the same directory: see provision_all

    def provision_all(self, names: list[str], username: str, password: str) -> list[dict[str, Any]]:
        """Several ``db provision`` at once (each CLI call waits 5 s before its first status check). Each in
        a directory of its own, the ``db status`` that follows included: every CLI call rewrites
        ``./.dbos/credentials`` after its profile request, and another CLI reading it meanwhile finds it
        half-written ("Unexpected end of JSON input")."""
        dirs = {n: self.workdir(self.root / f"p_{n}") for n in names}
        with ThreadPoolExecutor(len(names)) as pool:
            return list(pool.map(lambda n: self.provision(n, username, password, dirs[n]), names))

    def status(self, name: str, cwd: Path | None = None) -> dict[str, Any]:
        info = self.json("db", "status", name, cwd=cwd)
        assert isinstance(info, dict), info
        return info

    # ------------------------------------------------------------------ clean-up, straight to the API
    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """A request to serve as the CLI would send it; for clean-up only (no node start-up per call)."""
        ctx = ssl.create_default_context(cafile=str(self.serve.ca_cert))
        return httpx.request(method, self.serve.url + path.format(org=ORG), json=body, verify=ctx, timeout=120,
                             headers={"Authorization": f"Bearer {self.token()}"})


@pytest.fixture(scope="module")
def serve(request: pytest.FixtureRequest) -> Iterator[Serve]:
    """One serve per module; it removes everything it made (instances, apps, its data dir) when it exits.
    When a test of the module failed, the tail of serve's log is shown (the log goes with the data dir)."""
    failed = request.session.testsfailed
    with running_serve() as s:
        try:
            yield s
        finally:
            if request.session.testsfailed > failed:
                reporter = request.config.pluginmanager.getplugin("terminalreporter")
                if reporter is not None:
                    reporter.write_line(f"\n---- pulumi-dbos serve log (last 80 lines), {request.node.name}")
                    for line in s.log().splitlines()[-80:]:
                        reporter.write_line(line)


@pytest.fixture(scope="module")
def dbos_cloud(serve: Serve, tmp_path_factory: pytest.TempPathFactory) -> DbosCloud:
    return DbosCloud(cli_path(), serve, tmp_path_factory.mktemp("dbos-cloud"))


@pytest.fixture
def names(dbos_cloud: DbosCloud) -> Iterator[Names]:
    n = Names(dbos_cloud)
    try:
        yield n
    finally:
        n.cleanup()


class Names:
    """Fresh names (DBOS Cloud's rule: [a-z0-9_], starting with a letter, short); the instances made under
    them are removed afterwards, newest first (links before what they point at), apps before them."""

    def __init__(self, cli: DbosCloud) -> None:
        self.cli = cli
        self.made: list[str] = []
        self.apps: list[str] = []
        self.token = uuid.uuid4().hex[:4]

    def __call__(self, prefix: str) -> str:
        name = f"{prefix}_{self.token}{len(self.made)}"
        self.made.append(name)
        return name

    def app(self, prefix: str) -> str:
        name = f"{prefix}_{self.token}{len(self.apps)}"
        self.apps.append(name)
        return name

    def cleanup(self) -> None:
        if not (self.made or self.apps):
            return
        with contextlib.suppress(httpx.HTTPError):
            for app in self.apps:
                self.cli.api("DELETE", paths.APP.replace("{app}", app), {"dropdb": True})
            listed = {d["PostgresInstanceName"]: d for d in self.cli.api("GET", paths.DATABASES).json()}
            for name in reversed(self.made):
                if name in listed:
                    path = paths.UNLINK if listed[name]["IsLinked"] else paths.DB
                    self.cli.api("DELETE", path.replace("{name}", name))


# ---------------------------------------------------------------------- checks through real connections
def connect(info: dict[str, Any], user: str, password: str, dbname: str = "postgres") -> Conn:
    """A connection to the instance ``db status --json`` described (``HostName``/``Port``)."""
    return psycopg.connect(host=info["HostName"], port=int(info["Port"]), user=user, password=password,
                           dbname=dbname, connect_timeout=5, autocommit=True)


def authenticates(info: dict[str, Any], user: str, password: str) -> bool:
    try:
        with connect(info, user, password) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def databases(info: dict[str, Any], user: str, password: str) -> set[str]:
    with connect(info, user, password) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


URL_RE = re.compile(r"postgresql://\S+")
