"""The engines the contract suite runs against, by name: each factory yields a fresh, empty engine and
removes everything it made afterwards, also when tests fail.

``local`` is the embedded engine in a throwaway data dir; ``local-ha`` the same with every instance it provisions
or restores highly available (the engine's ``ha_members`` setting, ``PULUMI_DBOS_HA_MEMBERS``: 2 members under
Patroni on simulated hosts; skipped, saying why, where HA cannot run: not root, no etcd). ``dbos-cloud`` runs
against a real ``pulumi-dbos serve`` (its own process, data dir and TLS certificate) with a token of an
organization of its own per run; ``dbos-cloud-exact`` the same against ``serve --cloud-exact`` (DBOS Cloud's API as
DBOS Cloud answers it). To add an engine, add its factory here.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from psycopg import sql

from pulumi_dbos.engine import LocalEngine, get_engine
from pulumi_dbos.engine.contract import Engine, InstanceInfo
from pulumi_dbos.engine.ha.hosts import Fabric
from pulumi_dbos.engine.settings import EngineSettings
from tests.conftest import _short_tmpdir, cleanup_data_dir
from tests.support.serve import running_serve

#: engines over a serve (by id): where their organization's local engine lives on this machine
SERVED: dict[int, Path] = {}
LINKED_USER = "dbosadmin"  # the user DBOS Cloud links a server as


def without_extensions(engine: Engine) -> bool:
    """Whether ``engine`` speaks to DBOS Cloud's API without pulumi-dbos's extensions (as to DBOS Cloud)."""
    return getattr(engine, "serve", True) is False


def link_user(engine: Engine, target: InstanceInfo, password: str) -> str:
    """The user a link to ``target`` (an instance of ``engine``) logs in as: the target's own, except where the
    engine speaks to DBOS Cloud without extensions, which links as ``dbosadmin`` only: that role is made on
    the target here (as its superuser: the instance's user has no CREATEROLE on PostgreSQL < 16), with
    ``password`` and read access to the target's tables."""
    if not without_extensions(engine):
        return target.username
    org_dir = SERVED[id(engine)]
    with LocalEngine(org_dir).server.admin(target.name, target.port) as su:
        exists = su.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (LINKED_USER,)).fetchone()
        verifier = su.pgconn.encrypt_password(password.encode(), LINKED_USER.encode(), b"scram-sha-256").decode()
        su.execute(sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
            sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(LINKED_USER), sql.Literal(verifier)))
        su.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(LINKED_USER)))
    return LINKED_USER


@contextlib.contextmanager
def local_engine() -> Iterator[Engine]:
    """The embedded engine in a throwaway data dir (like tests/conftest.py's ``tmp_root``/``data_dir``)."""
    root = _short_tmpdir("pc")
    data_dir = root / "d"
    try:
        yield get_engine("local", str(data_dir), None)
    finally:
        cleanup_data_dir(data_dir)
        shutil.rmtree(root, ignore_errors=True)


#: members of each instance of ``local-ha`` (a primary and a synchronous standby: failover-aware paths, half the clones)
HA_MEMBERS = 2


@contextlib.contextmanager
def local_ha_engine() -> Iterator[Engine]:
    """The embedded engine in a throwaway data dir whose every new instance is high-availability (the engine's
    ``ha_members`` setting, ``PULUMI_DBOS_HA_MEMBERS``: provisions and restores get members under Patroni on
    simulated hosts). Skipped where HA cannot run (not root, no etcd); the hosts (network namespaces) are
    removed afterwards, also when tests fail."""
    from tests.ha.conftest import _skip_reason
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    root = _short_tmpdir("pa")
    data_dir = root / "d"
    try:
        yield get_engine("local", str(data_dir), None,
                         settings=EngineSettings.from_env().replace(ha_members=HA_MEMBERS))
    finally:
        cleanup_data_dir(data_dir)
        Fabric(data_dir).teardown()  # whatever a failure left: namespaces, bridge, blackhole route
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def dbos_cloud_engine(*serve_args: str) -> Iterator[Engine]:
    """The dbos-cloud engine against a local ``pulumi-dbos serve``, in a fresh organization; the serve and
    everything it made are removed afterwards."""
    with running_serve(extra_args=serve_args) as serve:
        org = f"ct{secrets.token_hex(3)}"
        token = serve.token(org=org, user="contract")
        engine = get_engine("dbos-cloud", domain=serve.domain, token=token, ca_cert=str(serve.ca_cert))
        SERVED[id(engine)] = serve.data_dir / "orgs" / org
        try:
            yield engine
            # the engine sent DBOS Cloud nothing it does not read (--cloud-exact logs every ignored field)
            ignored = [line for line in serve.log().splitlines() if "cloud-exact: ignored" in line]
            assert not ignored, "the engine sent pulumi-dbos extension fields to DBOS Cloud:\n" + "\n".join(ignored)
        finally:
            SERVED.pop(id(engine), None)
            close = getattr(engine, "close", None)
            if close is not None:
                close()


def dbos_cloud_exact_engine() -> AbstractContextManager[Engine]:
    """The dbos-cloud engine against ``pulumi-dbos serve --cloud-exact``: DBOS Cloud's API without
    pulumi-dbos's extensions, i.e. the engine's path against DBOS Cloud itself. Tests marked
    ``extension`` are skipped here (conftest.py)."""
    return dbos_cloud_engine("--cloud-exact")


ENGINE_FACTORIES: dict[str, Callable[[], AbstractContextManager[Engine]]] = {
    "local": local_engine,
    "local-ha": local_ha_engine,
    "dbos-cloud": dbos_cloud_engine,
    "dbos-cloud-exact": dbos_cloud_exact_engine,
}
#: the engines without pulumi-dbos's extensions of DBOS Cloud's API
EXACT = frozenset({"dbos-cloud-exact"})
#: the engines whose every instance is highly available (tests marked ``same_on_ha`` are not repeated there)
HA = frozenset({"local-ha"})
