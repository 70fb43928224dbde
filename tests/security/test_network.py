"""Issue 31, items 3 and 4: tenant code shared the host's network namespace.

- **Traffic hijack**: while bravo's instance was stopped (or moving, or restarting), alpha's app bound its
  port and received bravo's app's connection (which sends its password in clear text to a fake server); bravo's
  start then failed ("could not create any TCP/IP sockets").
- **Port exhaustion**: alpha's app holding every free port of the engine's ranges made every other
  organization's provision and deploy fail ("no free port").
- **Abstract Unix sockets** of root processes were reachable from inside a sandbox.
- **Host scan**: an app reached every port of the host's 127.0.0.1 (serve's API, other organizations' apps and
  instances) and its other addresses.

Now each app, migration and build runs in a network namespace of its own (``engine/local/netgate.py``):
only ``lo``, its backend port relayed in from the host's 127.0.0.1, its database's port relayed out.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from pulumi_dbos.engine.local import ports
from tests.security.conftest import PW, Tenants, name

#: the attacker's listener, left running in its app between two requests: it accepts on every address it can
#: bind for ``PORT`` and records who connected (into its private /tmp)
LISTEN = '''
import json, os, socket, threading, time
port, seconds, out = {port}, {seconds}, {out!r}
res = {{"bound": [], "bind_errors": [], "accepted": []}}
socks = []
for host in ("127.0.0.1", "0.0.0.0"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        s.listen(16)
        s.settimeout(0.2)
        socks.append(s)
        res["bound"].append(host)
    except OSError as exc:
        res["bind_errors"].append(f"{{host}}: {{exc}}")
def save():
    with open(out + ".tmp", "w") as fh:
        json.dump(res, fh)
    os.replace(out + ".tmp", out)
def serve():
    end = time.monotonic() + seconds
    while time.monotonic() < end and not os.path.exists(out + ".stop"):
        for s in socks:
            try:
                c, addr = s.accept()
            except OSError:
                continue
            try:
                c.settimeout(2)
                res["accepted"].append({{"from": addr[0], "first": c.recv(64).hex()}})
                c.sendall(b"X")
            except OSError:
                pass
            c.close()
            save()
    for s in socks:
        s.close()
save()
threading.Thread(target=serve, daemon=True).start()
print(json.dumps(res))
'''


def _get(url: str, timeout: float = 30) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own apps on 127.0.0.1
        return dict(json.loads(resp.read()))


def _backend_port(tenants: Tenants) -> int:
    """The port of bravo's app's serving process on the host (its catalog's)."""
    catalog = tenants.serve.data_dir / "orgs" / "bravo" / "catalog.db"
    with contextlib.closing(sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT backend_port FROM apps WHERE name = 'victim'").fetchone()[0])


def _db_action(tenants: Tenants, db: str, action: str) -> dict[str, Any]:
    r = tenants.bravo.post(f"/v1alpha1/bravo/databases/userdb/{db}/{action}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_another_tenant_cannot_take_a_stopped_instances_port_and_its_apps_connection(tenants: Tenants) -> None:
    port = int(tenants.bravo_db["Port"])
    out = f"/tmp/hijack-{secrets.token_hex(3)}.json"
    assert _get(tenants.victim["AppURL"] + "db").get("answer") in ("N", "S")  # it reaches its database
    _db_action(tenants, "bravo_db", "stop")
    try:
        started = tenants.run_json(LISTEN.format(port=port, seconds=20, out=out))
        tried = _get(tenants.victim["AppURL"] + "db")  # bravo's app connects to its (stopped) database
        time.sleep(0.5)
        got = tenants.run_json(f"import json; print(json.dumps(json.load(open({out!r}))))")
        tenants.run(f"import time; open({out!r} + '.stop', 'w').close(); time.sleep(0.5)")  # its port, let go
    finally:
        info = _db_action(tenants, "bravo_db", "start")  # failed while alpha held the port, before the fix
    assert info["Status"] == "available", info
    assert got["accepted"] == [], f"alpha received bravo's app's database connection: {got} (bound: {started})"
    assert tried.get("answer") != "X", tried
    assert _get(tenants.victim["AppURL"] + "db").get("answer") in ("N", "S")  # and again once it is started


HOLD = '''
import json, os, socket, time
lo, hi, stop, seconds = {lo}, {hi}, {stop!r}, {seconds}
kids = []
for part in range(4):  # 4096 open files per process: several processes cover the ranges
    pid = os.fork()
    if pid == 0:
        held = []
        for port in range(lo + part, hi + 1, 4):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                s.listen(1)
                held.append(s)
            except OSError:
                s.close()
        with open(f"{{stop}}.{{part}}", "w") as fh:
            fh.write(str(len(held)))
        end = time.monotonic() + seconds
        while time.monotonic() < end and not os.path.exists(stop):
            time.sleep(0.2)
        os._exit(0)
    kids.append(pid)
end = time.monotonic() + 60
while time.monotonic() < end and not all(os.path.exists(f"{{stop}}.{{p}}") for p in range(4)):
    time.sleep(0.1)
print(json.dumps({{"held": sum(int(open(f"{{stop}}.{{p}}").read() or 0) for p in range(4)
                               if os.path.exists(f"{{stop}}.{{p}}"))}}))
'''


@contextlib.contextmanager
def _alpha_holds_every_port(tenants: Tenants) -> Iterator[int]:
    lo = min(ports.port_range()[0], ports.backend_ports()[0])
    hi = max(ports.port_range()[1], ports.backend_ports()[1])
    stop = f"/tmp/hold-{secrets.token_hex(3)}"
    held = tenants.run_json(HOLD.format(lo=lo, hi=hi, stop=stop, seconds=300), timeout=120)["held"]
    try:
        assert held > (hi - lo + 1) // 2, held  # the attack ran: it holds most of them (all but those in use)
        yield int(held)
    finally:
        tenants.run(f"open({stop!r}, 'w').close()")


def test_a_tenant_holding_every_port_does_not_stop_another_from_provisioning_and_deploying(tenants: Tenants) -> None:
    db = name("pfree")
    with _alpha_holds_every_port(tenants):
        r = tenants.bravo.post("/v1alpha1/bravo/databases/userdb", json={
            "Name": db, "AdminName": "tenant_u", "AdminPassword": PW})
        provisioned = r.status_code
        try:
            assert provisioned in (200, 201, 204), r.text
            before = _backend_port(tenants)
            r = tenants.bravo.post("/v1alpha1/bravo/applications/victim", json={"previous_version": tenants.victim[
                "Version"]})
            assert r.status_code == 200, r.text  # a redeploy: a new backend port, while alpha holds "all"
            assert _backend_port(tenants) != before
            assert _get(tenants.victim["AppURL"])["app"] == "victim"
        finally:
            if provisioned in (200, 201, 204):
                tenants.bravo.delete(f"/v1alpha1/bravo/databases/userdb/{db}")


def test_root_processes_abstract_unix_sockets_are_unreachable_from_a_sandbox(tenants: Tenants) -> None:
    addr = f"\0pulumi-dbos-test-{secrets.token_hex(4)}"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(addr)
    srv.listen(4)
    srv.settimeout(0.2)
    try:
        res = tenants.run_json(f'''
import json, socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(3)
try:
    s.connect({addr!r})
    s.sendall(b"hello from alpha")
    print(json.dumps({{"connected": True}}))
except OSError as exc:
    print(json.dumps({{"connected": False, "error": str(exc)}}))
''')
        with contextlib.suppress(OSError):
            srv.accept()[0].close()
    finally:
        srv.close()
    assert res["connected"] is False, f"alpha's app connected to root's abstract socket {addr[1:]!r}"


def _host_addresses() -> list[str]:
    import psutil

    return sorted({a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127.")})


def test_a_sandbox_reaches_its_own_database_and_nothing_else_of_the_host(tenants: Tenants) -> None:
    """The host's 127.0.0.1 (serve's API, bravo's instance and app), its other addresses: unreachable; alpha's
    own instance: reachable."""
    victim_backend = _backend_port(tenants)
    targets = {"serve": ("127.0.0.1", tenants.serve.port), "bravo_db": ("127.0.0.1", int(tenants.bravo_db["Port"])),
               "bravo_app": ("127.0.0.1", int(tenants.victim["AppURL"].rsplit(":", 1)[1].strip("/")))}
    targets["bravo_backend"] = ("127.0.0.1", victim_backend)
    for n, a in enumerate(_host_addresses()):
        targets[f"host{n}"] = (a, tenants.serve.port)
    own = ("127.0.0.1", int(tenants.alpha_db["Port"]))
    res = tenants.run_json(f'''
import json, socket
out = {{}}
for k, (h, p) in {dict(targets, own=own)!r}.items():
    s = socket.socket()
    s.settimeout(3)
    out[k] = s.connect_ex((h, p))
    s.close()
print(json.dumps(out))
''')
    assert res.pop("own") == 0, "alpha's app cannot reach its own instance"
    assert all(code != 0 for code in res.values()), f"alpha's app reached {res} (0: connected)"


def test_a_build_cannot_reach_the_host(tenants: Tenants) -> None:
    """A requirements.txt URL naming a port of the host's 127.0.0.1: the build (uv, and an sdist's build backend:
    tenant code) runs in a namespace of its own whose only way out is an HTTPS proxy to the package index and
    the URLs' hosts on 443, never the host itself."""
    from pulumi_dbos.appsource import pack
    from tests.security._support import tcp_server
    from tests.security.conftest import copy_app, deploy_archive

    app = name("bld")
    api = tenants.alpha
    assert api.put("/v1alpha1/alpha/applications", json={"name": app, "database": "alpha_db",
                                                          "language": "python"}).status_code == 200
    try:
        with tcp_server(answer=False) as (port, conns):
            src = copy_app("shell", tenants.work / app, app)
            (src / "requirements.txt").write_text(
                f"dbos==3.4.0\nevil @ https://127.0.0.1:{port}/evil-1.0-py3-none-any.whl\n")
            r = deploy_archive(api, "alpha", app, pack(src)[1])
            reached = len(conns)
        assert r.status_code != 200, r.text
        assert reached == 0, f"the build connected {reached} time(s) to the host's 127.0.0.1:{port}"
    finally:
        api.delete(f"/v1alpha1/alpha/applications/{app}")
