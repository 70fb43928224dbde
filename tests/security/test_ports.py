"""Issue 18, item 5: no app can block port allocation for everyone.

The machine-wide port claims lived in a world-writable directory: alpha's app filled it with claims for
the whole range, naming a "catalog" it made itself (junk the engine cannot read, so it left the claims
alone) and backdated past the grace period; bravo's next provision failed "no free port". The attack is
performed from inside alpha's app whatever the app can see of the directory (a sandbox may hide it, or
show a private copy): what counts is the real directory afterwards and bravo's provision.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from pulumi_dbos.engine.local import ports
from tests.security.conftest import PW, Tenants, name

MARK = "pulumi-dbos-fake-claim"

ATTACK = '''
import contextlib, json, os, time

d, lo, hi = {d!r}, {lo}, {hi}
res = {{"uid": os.getuid(), "dir_visible": os.path.isdir(d), "made": 0, "errors": {{}}}}
# a "catalog" the engine cannot read as one: sqlite says "file is not a database", i.e. "cannot tell, keep it"
fake = os.path.join(os.getcwd(), "{mark}")
try:
    os.makedirs(fake, exist_ok=True)
    with open(os.path.join(fake, "catalog.db"), "wb") as fh:
        fh.write(b"not a database " * 100)
except OSError as exc:
    fake = "/nonexistent/{mark}"
    res["fake_error"] = str(exc)
try:
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o1777)
except OSError as exc:
    res["mkdir_error"] = type(exc).__name__
old = time.time() - 7 * 86400
for port in range(lo, hi + 1):
    p = os.path.join(d, str(port))
    try:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(p).st_uid != os.getuid():
                os.unlink(p)  # someone else's claim: take its place
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.write(fd, ("%s\\nvictim_%d\\n" % (fake, port)).encode())
        os.close(fd)
        os.utime(p, (old, old))
        res["made"] += 1
    except OSError as exc:
        key = type(exc).__name__
        res["errors"][key] = res["errors"].get(key, 0) + 1
res["fake"] = fake
print(json.dumps(res))
'''


def _foreign_entries(d: Path) -> list[str]:
    """Entries of the real claims directory that the engine did not write (or that name the fake catalog)."""
    out: list[str] = []
    if not d.is_dir():
        return out
    for entry in os.scandir(d):
        st = entry.stat(follow_symlinks=False)
        text = ""
        if stat.S_ISREG(st.st_mode):
            with contextlib.suppress(OSError):
                text = Path(entry.path).read_text(errors="replace")[:4096]
        if st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode) or MARK in text:
            out.append(f"{entry.name} (uid {st.st_uid}, mode {st.st_mode:o})")
    return out


def _clean(d: Path) -> None:
    """Before the fix the attack works: remove what the app made, so that the session's other tests can provision."""
    if not d.is_dir():
        return
    for entry in os.scandir(d):
        with contextlib.suppress(OSError):
            st = entry.stat(follow_symlinks=False)
            text = Path(entry.path).read_text(errors="replace")[:4096] if stat.S_ISREG(st.st_mode) else ""
            if st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode) or MARK in text:
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)


def test_app_cannot_claim_every_port(tenants: Tenants) -> None:
    d = ports.ports_dir()  # serve runs as root with the test's environment: the same directory
    lo, hi = ports.port_range()
    victim_db = name("bv")
    try:
        report = tenants.run_json(ATTACK.format(d=str(d), lo=lo, hi=hi, mark=MARK), timeout=600)
        foreign = _foreign_entries(d)
        r = tenants.bravo.post("/v1alpha1/bravo/databases/userdb",
                               json={"Name": victim_db, "AdminName": "tenant_u", "AdminPassword": PW})
        assert r.status_code in (200, 201), f"bravo's provision failed after alpha's attack: {r.text}; app: {report}"
        assert foreign == [], (f"the app's claims are in {d}: {len(foreign)} entries, e.g. {foreign[:5]}; "
                               f"the app reported {report}")
        info = tenants.bravo.get(f"/v1alpha1/bravo/databases/userdb/info/{victim_db}").json()
        assert lo <= int(info["Port"]) <= hi and info["Status"].lower() == "available", info
    finally:
        _clean(d)
        tenants.bravo.delete(f"/v1alpha1/bravo/databases/userdb/{victim_db}")
