"""Issue 31, item 1: root through the environment.

Secrets named ``LD_PRELOAD``, ``LD_AUDIT``, ``GCONV_PATH``, ``BASH_ENV``... were accepted, and the sandbox's
trampoline (serve's python) and ``bwrap`` started as root with the app's environment: a library shipped in
the tenant's archive and named by ``LD_PRELOAD`` ran as uid 0 in ``dbos migrate`` and in the app's start.
Now names follow DBOS Cloud's rule (letters, digits, underscore) minus the loader's and interpreters'
variables, checked when a secret is set and again at every deploy (a secret stored before the rule), and the
environment reaches the app only through a descriptor its launcher reads after the switch to its user: no
root process (nor another organization's) ever has it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import psutil
import pytest

from pulumi_dbos.appsource import pack
from tests.security.conftest import STRIPE_KEY, Tenants, copy_app, deploy_archive, name

#: every variable of ld.so(8) (glibc 2.36's manual page, ENVIRONMENT)
LD_SO = ("LD_ASSUME_KERNEL", "LD_AUDIT", "LD_BIND_NOT", "LD_BIND_NOW", "LD_DEBUG", "LD_DEBUG_OUTPUT",
         "LD_DYNAMIC_WEAK", "LD_HWCAP_MASK", "LD_LIBRARY_PATH", "LD_ORIGIN_PATH", "LD_POINTER_GUARD",
         "LD_PREFER_MAP_32BIT_EXEC", "LD_PRELOAD", "LD_PROFILE", "LD_PROFILE_OUTPUT", "LD_SHOW_AUXV",
         "LD_TRACE_LOADED_OBJECTS", "LD_USE_LOAD_BIAS", "LD_VERBOSE", "LD_WARN")
#: what glibc removes from a setuid program's environment besides LD_* (``unsecvars.h``), and shells' start-up
OTHER_LOADER = ("GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
                "MALLOC_TRACE", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TMPDIR", "TZDIR",
                "BASH_ENV", "ENV", "NODE_OPTIONS", "PERL5OPT")
#: every start-up variable of Python 3.11's ``python --help-env`` / "Environment variables" section
PYTHON = ("PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONPLATLIBDIR", "PYTHONOPTIMIZE",
          "PYTHONBREAKPOINT", "PYTHONDEBUG", "PYTHONINSPECT", "PYTHONUNBUFFERED", "PYTHONVERBOSE", "PYTHONCASEOK",
          "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONHASHSEED", "PYTHONINTMAXSTRDIGITS",
          "PYTHONIOENCODING", "PYTHONNOUSERSITE", "PYTHONUSERBASE", "PYTHONEXECUTABLE", "PYTHONWARNINGS",
          "PYTHONFAULTHANDLER", "PYTHONTRACEMALLOC", "PYTHONPROFILEIMPORTTIME", "PYTHONASYNCIODEBUG",
          "PYTHONMALLOC", "PYTHONMALLOCSTATS", "PYTHONLEGACYWINDOWSFSENCODING", "PYTHONLEGACYWINDOWSSTDIO",
          "PYTHONCOERCECLOCALE", "PYTHONDEVMODE", "PYTHONUTF8", "PYTHONWARNDEFAULTENCODING",
          "PYTHONNODEBUGRANGES", "PYTHONPERFSUPPORT")


def _set_secret(tenants: Tenants, key: str, value: str) -> int:
    r = tenants.alpha.post("/v1alpha1/alpha/applications/secrets",
                           json={"ApplicationName": "shell", "SecretName": key, "ClearSecretValue": value})
    return r.status_code


@pytest.mark.parametrize("key", LD_SO + OTHER_LOADER + PYTHON)
def test_loader_and_interpreter_variables_are_refused_as_secrets(tenants: Tenants, key: str) -> None:
    status = _set_secret(tenants, key, "/dbos/app/evil.so")
    assert status == 400, f"secret {key} accepted ({status})"
    stored = tenants.alpha.get("/v1alpha1/alpha/applications/shell")
    assert stored.status_code == 200


@pytest.mark.parametrize("key", ["my-key", "1ABC", "A B", "KEY=X", "é"])
def test_secret_names_follow_dbos_clouds_rule(tenants: Tenants, key: str) -> None:
    assert _set_secret(tenants, key, "x") == 400


def test_an_ordinary_secret_is_still_accepted(tenants: Tenants) -> None:
    assert _set_secret(tenants, "FEATURE_FLAG_2", "on") == 200


def test_a_loader_secret_stored_before_the_rule_is_refused_at_deploy(tenants: Tenants) -> None:
    """serve's secrets.json may hold a secret set by an older serve: the engine checks names at every deploy."""
    app = name("envold")
    api = tenants.alpha
    r = api.put("/v1alpha1/alpha/applications", json={"name": app, "database": "alpha_db", "language": "python"})
    assert r.status_code == 200, r.text
    store = tenants.serve.data_dir / "serve" / "secrets.json"
    data = json.loads(store.read_text())
    data.setdefault("alpha", {})[app] = {"LD_PRELOAD": "/dbos/app/evil.so"}
    store.write_text(json.dumps(data))
    try:
        src = copy_app("shell", tenants.work / app, app)
        r = deploy_archive(api, "alpha", app, pack(src)[1])
        assert r.status_code == 400, r.text
        assert "LD_PRELOAD" in r.text
    finally:
        api.delete(f"/v1alpha1/alpha/applications/{app}")
        data = json.loads(store.read_text())
        data.get("alpha", {}).pop(app, None)
        store.write_text(json.dumps(data))


def _ours(p: psutil.Process, data_dir: Path) -> bool:
    """Whether ``p`` belongs to this session's serve: it or an ancestor works in its data dir (other test runs on
    the machine deploy the same victim with the same secret)."""
    base = str(data_dir.resolve())
    for q in (p, *p.parents()):
        with contextlib.suppress(psutil.Error):
            if q.cwd() == base or q.cwd().startswith(base + "/"):
                return True
    return False


def _holders(secret: str, data_dir: Path) -> list[tuple[int, int, str]]:
    """(pid, real uid, command) of every process of serve at ``data_dir`` whose environment holds ``secret``."""
    out = []
    for p in psutil.process_iter(["uids", "cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            with open(f"/proc/{p.pid}/environ", "rb") as fh:
                if secret.encode() in fh.read() and _ours(p, data_dir):
                    out.append((p.pid, p.info["uids"].real, " ".join(p.info["cmdline"] or [])[:120]))
    return out


def test_the_environment_reaches_only_the_app_never_a_root_process(tenants: Tenants) -> None:
    """bravo's secret is in bravo's app process and in no process of root (the trampoline, ``bwrap``) or of
    another user."""
    holders = _holders(STRIPE_KEY, tenants.serve.data_dir)
    assert holders, "bravo's app runs with STRIPE_KEY in its environment"
    uids = {uid for _, uid, _ in holders}
    assert 0 not in uids, f"root processes hold bravo's secret in their environment: {holders}"
    assert len(uids) == 1, holders
    assert os.getuid() == 0
