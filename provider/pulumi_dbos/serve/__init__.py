"""``pulumi-dbos serve``: DBOS Cloud's REST API (``pulumi_dbos.cloudapi``) served over the local engine.

HTTPS only (a self-signed certificate is made when none is given), bearer tokens signed by the
server (``pulumi-dbos serve token``), one local engine per organization under ``D/orgs/<org>``,
serve's own state under ``D/serve`` (see :mod:`.state`). Before it listens it removes what a killed
server left half-made; then a background thread starts the organizations' instances and apps and
takes scheduled base backups (:mod:`.background`). With ``--advertise-host HOST`` the instances and
app proxies listen on HOST too (besides 127.0.0.1) and report HOST as their address. What one
organization may ask of it (body and archive sizes, quotas, concurrent requests, link targets) is
bounded by :class:`.limits.Limits`.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import DbosError
from .limits import Limits

DEFAULT_LISTEN = "127.0.0.1:8443"
DEFAULT_BACKUP_INTERVAL = 3600.0
DEFAULT_DRILL_INTERVAL = 86400.0  # background.DEFAULT_DRILL_INTERVAL (not imported: it loads psutil)

log = logging.getLogger("pulumi_dbos.serve")


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise DbosError(f"--listen must be HOST:PORT, got {listen!r}", hint=f"e.g. {DEFAULT_LISTEN}")
    return host, int(port)


def check_advertise_host(host: str) -> str:
    """``host`` if it is a valid listen host naming an address of this machine (a free port binds there)."""
    from ..engine.local.ports import check_listen_host

    check_listen_host(host)
    why = "it names no address"
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)
    except OSError as exc:
        infos, why = [], str(exc)
    for family, kind, proto, _name, addr in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.bind(addr)
            return host  # one address binds (as for the proxies, an unavailable family is skipped)
        except OSError as exc:
            why = str(exc)
    raise DbosError(f"--advertise-host {host!r} is not an address of this machine: {why}",
                    hint="a host name or IP address of one of this machine's interfaces")


def issue_token(data_dir: Path, org: str, user: str, ttl_hours: float) -> str:
    """A bearer token for ``user`` of ``org`` (the signing key is made on first use)."""
    from . import auth, state

    return auth.issue(auth.load_or_create_key(state.prepare(data_dir)), org, user, ttl_hours)


def run(*, listen: str = DEFAULT_LISTEN, data_dir: Path, tls_cert: Path | None = None, tls_key: Path | None = None,
        backup_interval: float = DEFAULT_BACKUP_INTERVAL, drill_interval: float = DEFAULT_DRILL_INTERVAL,
        advertise_host: str | None = None,
        limits: Limits | None = None, cloud_exact: bool = False, backup_repo: dict[str, Any] | None = None) -> int:
    """Serve until SIGTERM/SIGINT (then stop cleanly: requests in flight finish, the background thread stops).
    ``cloud_exact``: DBOS Cloud's API without pulumi-dbos's extensions (:mod:`.exact`). ``backup_repo``: the
    ``dbos:backupRepo`` mapping for every organization (``ServeState.engine``)."""
    import uvicorn

    from . import auth, state, tls
    from .app import create_app
    from .background import Background, recover
    from .front import guarded_protocol

    host, port = parse_listen(listen)
    if (tls_cert is None) != (tls_key is None):
        raise DbosError("--tls-cert and --tls-key go together", hint="pass both, or neither for a self-signed one")
    if backup_interval <= 0:
        raise DbosError(f"--backup-interval must be a positive number of seconds, got {backup_interval}")
    if drill_interval < 0:
        raise DbosError(f"--drill-interval must be 0 (no scheduled drills) or a number of seconds, "
                        f"got {drill_interval}")
    if advertise_host is not None:
        check_advertise_host(advertise_host)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = data_dir.expanduser().resolve()
    sdir = state.prepare(data_dir)
    st = state.ServeState(data_dir, advertise_host, backup_repo)
    st.acquire()
    if tls_cert is None or tls_key is None:
        tls_cert, tls_key = tls.ensure_self_signed(sdir / "tls", tls.cert_hosts(host, advertise_host))
    for f in (tls_cert, tls_key):
        if not f.is_file():
            raise DbosError(f"{f}: no such file")
    key = auth.load_or_create_key(sdir)
    recover(st)
    limits = limits or Limits()
    if limits.link_allow:
        log.info("links allowed only to %s", ", ".join(str(n) for n in limits.link_allow))
    app = create_app(st, key, Background(st, backup_interval, drill_interval), limits, cloud_exact=cloud_exact)
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, ssl_certfile=str(tls_cert), ssl_keyfile=str(tls_key), log_level="info",
        server_header=False, timeout_graceful_shutdown=60, lifespan="on",
        limit_concurrency=limits.max_connections,  # beyond: 503
        http=guarded_protocol(limits.per_client, limits.request_timeout)))  # idle and greedy clients: front.py

    def announce() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            mode = " exactly as DBOS Cloud (no pulumi-dbos extensions)" if cloud_exact else ""
            print(f"serving DBOS Cloud's API{mode} on https://{host}:{port} (cert: {tls_cert}; data: {data_dir})",
                  flush=True)

    threading.Thread(target=announce, name="serve-announce", daemon=True).start()
    server.run()
    return 0 if server.started else 1


__all__ = ["DEFAULT_BACKUP_INTERVAL", "DEFAULT_DRILL_INTERVAL", "DEFAULT_LISTEN", "Limits", "check_advertise_host", "issue_token", "parse_listen", "run"]
