"""Item 3 of the threat model: one organization's app cannot see, read, signal or write another's.

Each attack runs inside alpha's app (``tenants.run``) against bravo's app and files, and its outcome is
read back from the attacker."""

from __future__ import annotations

import contextlib
import json
import time

import psutil
import psycopg

from tests.security.conftest import STRIPE_KEY, Tenants


def test_apps_of_different_organizations_run_as_different_users_in_a_sandbox(tenants: Tenants) -> None:
    me = tenants.run_json("""
import json, os
status = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)
print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
                  "nnp": status["NoNewPrivs"].strip(), "cap": status["CapEff"].strip(),
                  "pids": sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}))
""")
    assert me["uid"] != 0 and me["gid"] != 0 and me["groups"] in ([], [me["gid"]])
    assert me["nnp"] == "1" and int(me["cap"], 16) == 0
    # a PID namespace of its own: a handful of processes (its sandbox's init and itself), none of the host's
    assert len(me["pids"]) < 10 and max(me["pids"]) < 100, me["pids"]
    bravo_uids = {psutil.Process(p).uids().real for p in victim_host_pids()} - {0}
    assert bravo_uids and me["uid"] not in bravo_uids  # bravo's app runs as another (non-root) user


def victim_host_pids() -> list[int]:
    """Bravo's app processes as the host sees them (the test runs as root; the attacker does not)."""
    pids = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if STRIPE_KEY in (p.environ().get("STRIPE_KEY") or ""):
                pids.append(p.pid)
    return pids


def test_cannot_read_another_apps_environment_or_signal_it(tenants: Tenants) -> None:
    targets = victim_host_pids()
    assert targets, "bravo's app runs with STRIPE_KEY in its environment"
    found = tenants.run_json(f"""
import json, os, signal
hits, killed = [], []
for p in os.listdir('/proc'):
    if not p.isdigit():
        continue
    try:
        if {STRIPE_KEY!r}.encode() in open(f'/proc/{{p}}/environ', 'rb').read():
            hits.append(p)
    except OSError:
        pass
for pid in {targets!r}:  # bravo's pids on the host, as an attacker could guess them
    if pid == os.getpid():
        continue
    try:
        os.kill(pid, signal.SIGTERM)
        killed.append(pid)
    except OSError:
        pass
print(json.dumps({{"hits": hits, "killed": killed}}))
""")
    assert found["hits"] == [], found
    time.sleep(0.5)
    assert tenants.victim_pid() > 0
    r = tenants.bravo.get("/v1alpha1/bravo/applications/victim")
    assert r.status_code == 200 and r.json()["Status"] == "AVAILABLE", r.text
    assert set(victim_host_pids()) == set(targets)  # none of them was killed


def test_cannot_reach_another_organizations_files(tenants: Tenants) -> None:
    """Bravo's pgpass, releases and serve's state: not visible, not readable, not writable from alpha's app
    (inside its sandbox the data dir does not exist; outside it, the directories are another user's)."""
    data_dir = str(tenants.serve.data_dir)
    seen = tenants.run_json(f"""
import json, os, glob
data = {data_dir!r}
out = {{"data_dir_exists": os.path.exists(data), "found": [], "written": []}}
for pattern in (data + '/orgs/bravo/apps/victim/**', data + '/serve/*', data + '/orgs/*/apps/*/ctl/pgpass.*',
                '/var/lib/pulumi-dbos/**', '/root/**', '/proc/1/root/' + data.lstrip('/') + '/serve/*'):
    for f in glob.glob(pattern, recursive=True)[:50]:
        try:
            with open(f, 'rb') as fh:
                out["found"].append(f + ': ' + fh.read(200).decode(errors='replace'))
        except OSError:
            pass
for d in (data + '/orgs/bravo/apps/victim/releases', data + '/orgs/bravo/apps/victim/home', '/tmp'):
    try:
        with open(d + '/planted.py', 'w') as fh:
            fh.write('x')
        out["written"].append(d)
    except OSError:
        pass
print(json.dumps(out))
""")
    assert seen["found"] == [], seen["found"]
    assert seen["written"] in ([], ["/tmp"]), seen  # its private /tmp only
    victim_files = json.dumps(seen)
    assert STRIPE_KEY not in victim_files


def test_cannot_use_another_organizations_database_with_what_it_can_see(tenants: Tenants) -> None:
    """Alpha's app tries every pgpass file it can find against bravo's instance; bravo's admin password is
    not among what it can read, so the connection fails."""
    host, port = tenants.bravo_db["HostName"], tenants.bravo_db["Port"]
    data_dir = str(tenants.serve.data_dir)
    result = tenants.run_json(f"""
import json, os
cands = []
tops = ['/dbos', '/tmp', '/home', '/var', '/run', '/etc', '/opt', '/root', {data_dir!r}]
tops += [{data_dir!r} + f'/orgs/{{o}}/apps/{{a}}/{{d}}' for o, a in (('bravo', 'victim'), ('alpha', 'shell'))
         for d in ('run', 'ctl', 'home')]  # where they are, if the attacker can get there
for top in tops:
    for d, _dirs, files in os.walk(top):
        for f in files:
            if f.startswith('pgpass') or f == '.pgpass':
                try:
                    cands += [l.split(':')[-1].strip() for l in open(os.path.join(d, f)).read().splitlines() if l]
                except OSError:
                    pass
print(json.dumps({{"candidates": cands}}))
""")
    for password in result["candidates"]:
        try:
            with psycopg.connect(host=host, port=port, user="tenant_u", password=password, dbname="postgres",
                                 connect_timeout=5):
                raise AssertionError("a password alpha's app could read opens bravo's instance")
        except psycopg.OperationalError:
            pass
