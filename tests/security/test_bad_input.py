"""Issue 31, item 7: bad input is a 400 naming what is wrong, never a 500.

Through serve's API, as alpha: archives using one name for a file and a directory (``x`` then ``x/inner.txt``,
``x/inner.txt`` then ``x``) were a 500 (``FileExistsError``); a provision with an admin name PostgreSQL
reserves (``pg_…``) was a 500 (``ReservedName``). Each is now refused with 400 naming the entry or the name,
and serve goes on answering.
"""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.security.conftest import PW, Tenants, deploy_archive, name

CONFIG = "name: {app}\nlanguage: python\nruntimeConfig:\n  start:\n    - python3 main.py\n"


def clashing(app: str, names: list[str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("dbos-config.yaml", CONFIG.format(app=app))
        zf.writestr("requirements.txt", "dbos==3.4.0\n")
        zf.writestr("main.py", "print('hello')\n")
        for n in names:
            zf.writestr(n, "x\n")
    return buf.getvalue()


@pytest.mark.parametrize("names", [["x", "x/inner.txt"], ["x/inner.txt", "x"]], ids=["file-then-child", "child-then-file"])
def test_clashing_archive_names_are_a_400(tenants: Tenants, names: list[str]) -> None:
    app = name("clash")
    r = tenants.alpha.put("/v1alpha1/alpha/applications", json={"name": app, "database": "alpha_db",
                                                                 "language": "python"})
    assert r.status_code == 200, r.text
    try:
        r = deploy_archive(tenants.alpha, "alpha", app, clashing(app, names))
        assert r.status_code == 400, (r.status_code, r.text[:500])
        assert names[1] in r.json()["message"] or names[0] in r.json()["message"], r.text
    finally:
        tenants.alpha.delete(f"/v1alpha1/alpha/applications/{app}")
    assert tenants.alpha.get("/v1alpha1/alpha/databases").status_code == 200


def test_reserved_admin_name_is_a_400(tenants: Tenants) -> None:
    db = name("resv")
    r = tenants.alpha.post("/v1alpha1/alpha/databases/userdb", json={
        "Name": db, "AdminName": "pg_evil", "AdminPassword": PW})
    assert r.status_code == 400, (r.status_code, r.text[:500])
    assert "pg_evil" in r.json()["message"] or "pg_" in r.json()["message"], r.text
    assert tenants.alpha.get(f"/v1alpha1/alpha/databases/userdb/info/{db}").status_code == 404
