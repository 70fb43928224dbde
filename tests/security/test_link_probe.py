"""Issue 18, item 8: a link is no port scanner. Whether the target port is closed, is not PostgreSQL, or is a
real PostgreSQL refusing the password, the tenant reads one and the same message, never the remote server's
text (serve's own log has the details, without the password). ``--link-allow`` restricts link targets to
networks: every address of the host name must be inside one."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.security._support import BANNER, closed_port, tcp_server
from tests.security.conftest import PW, Tenants, client, name
from tests.support.serve import Serve, running_serve

WRONG_PW = "Wrong-guess-7"


def link(api: httpx.Client, org: str, db: str, host: str, port: int, password: str,
         user: str = "tenant_u") -> httpx.Response:
    return api.post(f"/v1alpha1/{org}/databases/byod",
                    json={"Name": db, "HostName": host, "Port": port, "Password": password, "Username": user})


def test_link_errors_do_not_tell_closed_from_foreign_from_wrong_password(tenants: Tenants) -> None:
    alpha, bravo_db = tenants.alpha, tenants.bravo_db
    messages: dict[str, str] = {}
    with tcp_server(answer=True) as (foreign, conns):
        attempts = {
            "closed port": ("127.0.0.1", closed_port(), PW),
            "not PostgreSQL": ("127.0.0.1", foreign, PW),
            # another tenant's real instance, a guessed password
            "wrong password": (bravo_db["HostName"], bravo_db["Port"], WRONG_PW),
        }
        for what, (host, port, password) in attempts.items():
            db = name("probe")
            r = link(alpha, "alpha", db, host, port, password)
            assert r.status_code == 400, (what, r.status_code, r.text)
            body = r.json()
            messages[what] = body["message"]
            assert "DetailedError" not in body or not body["DetailedError"], (what, body)
            assert alpha.get(f"/v1alpha1/alpha/databases/userdb/info/{db}").status_code == 404  # nothing kept
        assert conns, "the fake server saw no connection: the link did not reach it"
    assert len(set(messages.values())) == 1, messages
    text = next(iter(messages.values()))
    for leak in (BANNER, "SecretWare", "refused", "password authentication", "SSL", "FATAL", "28000",
                 str(bravo_db["Port"])):
        assert leak not in text, (leak, text)
    assert "cannot connect to a PostgreSQL server" in text, text
    log = tenants.serve.log()
    assert "link of probe_" in log and WRONG_PW not in log, "serve's log keeps the details, not the password"


@pytest.fixture(scope="module")
def allow_serve() -> Iterator[Serve]:
    """A serve of its own, allowed to link only to 127.0.0.0/8."""
    with running_serve(extra_args=["--link-allow", "127.0.0.0/8"]) as serve:
        yield serve


def test_link_allow_restricts_targets(tenants: Tenants, allow_serve: Serve) -> None:
    target = tenants.alpha_db  # a real PostgreSQL (another serve's instance) to link to
    with client(allow_serve, allow_serve.token("alpha", "mallory")) as api:
        refused = {}
        for host in ("10.1.2.3", "::1", "0.0.0.0", "no-such-host.invalid"):
            r = link(api, "alpha", name("out"), host, target["Port"], PW)
            assert r.status_code == 400, (host, r.text)
            refused[host] = r.json()["message"]
        # outside 127.0.0.0/8 (0.0.0.0 reaches this machine too), and a name without addresses
        assert all("--link-allow" in m and "may link to" in m for m in refused.values()), refused
        assert api.get("/v1alpha1/alpha/databases").json() == []
        db = name("inside")
        r = link(api, "alpha", db, "127.0.0.1", target["Port"], PW)
        assert r.status_code == 201, r.text
        try:
            assert r.json()["IsLinked"] is True
        finally:
            assert api.delete(f"/v1alpha1/alpha/databases/byod/{db}").status_code == 204
