"""Issue 18, item 6 (serve's part): limits. A crafted zip bomb (a few hundred KB unpacking to hundreds of MB) is
refused with 400 naming the limit, before anything is stored and without serve's memory following the
bomb; so are archives with too many entries, and request bodies over the cap (413, also when streamed with
no Content-Length). Per-organization quotas on instances (restores and links count) and apps answer 400
naming the quota, and leave nothing behind."""

from __future__ import annotations

import base64
import io
import struct
import zipfile
from collections.abc import Iterator

import httpx
import pytest

from tests.security._support import memory_kib, reset_peak_memory
from tests.security.conftest import PW, Tenants, client, deploy_archive, name, provision
from tests.support.serve import Serve, running_serve

MIB = 1024 * 1024
CONFIG = b"name: {app}\nlanguage: python\nruntimeConfig:\n  start:\n    - python3 main.py\n"
#: what serve's resident memory may grow by while it refuses a bomb (the bombs unpack to 300-600 MiB)
MEMORY_SLACK_KIB = 64 * 1024


def app_files(app: str) -> dict[str, bytes]:
    return {"dbos-config.yaml": CONFIG.replace(b"{app}", app.encode()), "requirements.txt": b"dbos==3.4.0\n",
            "main.py": b"print('hello')\n"}


def bomb(app: str, sizes: list[int], entries: int = 0) -> bytes:
    """A valid app's zip plus files of zeros of ``sizes`` bytes (deflated ~1000:1) and ``entries`` tiny files."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path, data in app_files(app).items():
            zf.writestr(path, data)
        chunk = bytes(MIB)
        for i, size in enumerate(sizes):
            info = zipfile.ZipInfo(f"data/blob{i}.bin")
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as out:
                for _ in range(size // MIB):
                    out.write(chunk)
        for i in range(entries):
            zf.writestr(f"many/f{i}.txt", b"x")
    return buf.getvalue()


def lying(archive: bytes, member: str, claimed: int) -> bytes:
    """``archive`` with ``member``'s uncompressed size rewritten to ``claimed`` in its local header and in the
    central directory (zip64 extra fields dropped of their size): the headers lie, the data does not."""
    data = bytearray(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.getinfo(member)
    # local header: uncompressed size at offset 22 (32 bits)
    struct.pack_into("<I", data, info.header_offset + 22, claimed)
    # central directory record: find it by its signature and file name
    name_b = member.encode()
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46:pos + 46 + n]) == name_b:
            struct.pack_into("<I", data, pos + 24, claimed)
            break
        pos = data.find(b"PK\x01\x02", pos + 4)
    assert pos != -1
    return bytes(data)


@pytest.fixture
def bomb_app(tenants: Tenants) -> Iterator[str]:
    """A registered (never deployed) app of alpha; whatever a refused deploy left of it is checked after."""
    app = name("bomb")
    r = tenants.alpha.put("/v1alpha1/alpha/applications", json={"name": app, "database": "alpha_db",
                                                                 "language": "python"})
    assert r.status_code == 200, r.text
    yield app
    versions = tenants.alpha.get(f"/v1alpha1/alpha/applications/{app}/versions")
    assert versions.status_code == 200 and versions.json() == [], versions.text  # nothing stored
    assert tenants.alpha.get(f"/v1alpha1/alpha/applications/{app}").json()["Status"] == "REGISTERED"
    assert not (tenants.serve.data_dir / "orgs" / "alpha" / "apps" / app).exists()
    assert tenants.alpha.delete(f"/v1alpha1/alpha/applications/{app}").status_code == 204


def refused_with_bounded_memory(tenants: Tenants, app: str, archive: bytes, expect: str) -> str:
    pid = tenants.serve.proc.pid if tenants.serve.proc else 0
    assert pid, "serve is not running"
    reset_peak_memory(pid)
    before = memory_kib(pid, "VmRSS")
    r = deploy_archive(tenants.alpha, "alpha", app, archive)
    peak = memory_kib(pid, "VmHWM")
    assert r.status_code == 400, (r.status_code, r.text[:2000])
    message = str(r.json()["message"])
    assert expect in message, message
    assert peak - before < MEMORY_SLACK_KIB, f"serve's memory grew by {(peak - before) // 1024} MiB"
    return message


def test_zip_bomb_one_huge_file(tenants: Tenants, bomb_app: str) -> None:
    archive = bomb(bomb_app, [300 * MIB])
    assert len(archive) < 2 * MIB
    message = refused_with_bounded_memory(tenants, bomb_app, archive, "--max-archive-entry-mib")
    assert "256 MiB" in message and "blob0.bin" in message


def test_zip_bomb_many_large_files(tenants: Tenants, bomb_app: str) -> None:
    archive = bomb(bomb_app, [200 * MIB] * 3)  # each under the one-file limit, 600 MiB in all
    refused_with_bounded_memory(tenants, bomb_app, archive, "--max-archive-mib")


def test_zip_bomb_whose_headers_lie(tenants: Tenants, bomb_app: str) -> None:
    """The central directory says 1 KiB; the data inflates to 300 MiB: refused, memory bounded."""
    archive = lying(bomb(bomb_app, [300 * MIB]), "data/blob0.bin", 1024)
    r_msg = refused_with_bounded_memory(tenants, bomb_app, archive, "application_archive")
    assert "zip" in r_msg or "limit" in r_msg, r_msg


def test_too_many_entries(tenants: Tenants, bomb_app: str) -> None:
    archive = bomb(bomb_app, [], entries=20_001)
    refused_with_bounded_memory(tenants, bomb_app, archive, "--max-archive-entries")


def test_body_over_the_cap_is_413(tenants: Tenants, bomb_app: str) -> None:
    """The default cap is 32 MiB: a larger deploy body is refused with 413, whether its length is declared or
    it streams (chunked, no Content-Length)."""
    archive = b"\0" * (25 * MIB)  # 33+ MiB once base64-encoded
    body = b'{"application_archive": "' + base64.b64encode(archive) + b'"}'
    url = f"/v1alpha1/alpha/applications/{bomb_app}"
    r = tenants.alpha.post(url, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413, (r.status_code, r.text[:500])
    assert "--max-body-mib" in r.json()["message"] and "32 MiB" in r.json()["message"]

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), MIB):
            yield body[i:i + MIB]

    r = tenants.alpha.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413, (r.status_code, r.text[:500])
    assert "--max-body-mib" in r.json()["message"]
    assert tenants.alpha.get("/v1alpha1/alpha/databases").status_code == 200  # serve is fine


# ---------------------------------------------------------------------------------------------- quotas
@pytest.fixture(scope="module")
def small() -> Iterator[Serve]:
    """A serve of its own with small quotas."""
    with running_serve(extra_args=["--max-instances", "2", "--max-apps", "1"]) as serve:
        yield serve


def test_quotas(small: Serve) -> None:
    with client(small, small.token("alpha", "mallory")) as api:
        first = provision(api, "alpha", "q_first")
        r = api.post("/v1alpha1/alpha/databases/byod", json={  # a link counts
            "Name": "q_linked", "HostName": "127.0.0.1", "Port": first["Port"], "Password": PW,
            "Username": "tenant_u"})
        assert r.status_code == 201, r.text
        attempts = {
            "provision": ("/v1alpha1/alpha/databases/userdb",
                          {"Name": "q_third", "AdminName": "tenant_u", "AdminPassword": PW}),
            "restore": ("/v1alpha1/alpha/databases/userdb/q_first/restore",
                        {"RestoreName": "q_third", "RestoreTimestamp": first["LatestRestorableTime"] or
                         first["CreatedAt"]}),
            "link": ("/v1alpha1/alpha/databases/byod",
                     {"Name": "q_third", "HostName": "127.0.0.1", "Port": first["Port"], "Password": PW,
                      "Username": "tenant_u"}),
        }
        for what, (path, body) in attempts.items():
            r = api.post(path, json=body)
            assert r.status_code == 400, (what, r.status_code, r.text)
            message = r.json()["message"]
            assert "--max-instances 2" in message and "organization alpha has 2" in message, (what, message)
        names = sorted(d["PostgresInstanceName"] for d in api.get("/v1alpha1/alpha/databases").json())
        assert names == ["q_first", "q_linked"]  # nothing of the refused ones
        assert api.get("/v1alpha1/alpha/databases/userdb/info/q_third").status_code == 404
        # a re-link of an existing linked instance is no new instance
        r = api.post("/v1alpha1/alpha/databases/byod", json={
            "Name": "q_linked", "HostName": "127.0.0.1", "Port": first["Port"], "Password": PW,
            "Username": "tenant_u"})
        assert r.status_code == 201, r.text

        def register(app: str) -> httpx.Response:
            return api.put("/v1alpha1/alpha/applications", json={"name": app, "database": "q_first",
                                                                  "language": "python"})

        assert register("q_app_one").status_code == 200
        r = register("q_app_two")
        assert r.status_code == 400 and "--max-apps 1" in r.json()["message"], r.text
        assert [a["Name"] for a in api.get("/v1alpha1/alpha/applications").json()] == ["q_app_one"]
        # another organization has quotas of its own
        with client(small, small.token("bravo", "bob")) as bravo:
            provision(bravo, "bravo", "q_bravo")
        # freeing a place makes room again
        assert api.delete("/v1alpha1/alpha/databases/byod/q_linked").status_code == 204
        r = api.post("/v1alpha1/alpha/databases/byod", json=attempts["link"][1])
        assert r.status_code == 201, r.text
