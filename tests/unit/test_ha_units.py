"""High availability's pieces that need no server: the preview's request, the simulated hosts' names and
subnet, the Patroni configuration (issue 33; the real thing is tested in tests/ha)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any

import pytest

from pulumi_dbos.config.fields import UNKNOWN
from pulumi_dbos.engine.contract import Kind, Preflight
from pulumi_dbos.engine.dbos_cloud.checks import preflight as cloud_preflight
from pulumi_dbos.engine.ha import patroni
from pulumi_dbos.engine.ha.hosts import Fabric
from pulumi_dbos.engine.settings import EngineSettings


def test_the_preview_asks_for_high_availability_only_where_it_is_new() -> None:
    from pulumi_dbos.resources.instance import DatabaseInstanceProvider

    provider = DatabaseInstanceProvider()

    def asked(olds: dict[str, Any], **news: Any) -> bool:
        req = provider.preflight_request(olds, {"instance_name": "aaa", **news})
        assert req is not None
        return req.high_availability

    assert asked({}, high_availability=True)  # a create with it
    assert not asked({}, high_availability=False) and not asked({})
    assert asked({"instance_name": "aaa", "high_availability": False}, high_availability=True)  # turned on
    assert not asked({"instance_name": "aaa", "high_availability": True}, high_availability=True)  # has it
    assert not asked({}, high_availability=UNKNOWN)


class DbosCloudSession:
    """What dbos-cloud's preflight asks of its session, as DBOS Cloud (not a serve) answers with no instance."""

    serve = False

    def list(self) -> list[Any]:
        return []

    def describe(self) -> str:
        return "DBOS Cloud"


def test_dbos_cloud_refuses_high_availability_at_preview() -> None:
    problems = cloud_preflight(DbosCloudSession(), Preflight(kind=Kind.PROVISIONED, name="aaa", high_availability=True))  # type: ignore[arg-type]
    assert [p.field for p in problems] == ["high_availability"]


def test_a_restore_takes_high_availability_as_an_update_and_dbos_cloud_refuses_it() -> None:
    """RestoredInstance(high_availability=...): an input of its own (stack key `dbos:restores.<name>.highAvailability`),
    asked of the engine at preview when new, a change of it an update (not a replace); DBOS Cloud refuses it at
    preview, naming the field."""
    from pulumi_dbos.config import validate_stack_config
    from pulumi_dbos.config.derive import input_model, validate
    from pulumi_dbos.config.fields import fields_of
    from pulumi_dbos.resources.restored import RestoredInstanceProvider

    provider = RestoredInstanceProvider()
    assert "high_availability" in provider.fields.inputs and "members" in provider.fields.outputs
    stack = {"instances": {"prod_db": {"username": "dbos_admin", "password": "Sup3r-secret"}},
             "restores": {"prod_r1": {"source": "prod_db", "restoreTime": "latest", "highAvailability": True}}}
    cfg, problems = validate_stack_config(stack)
    assert problems == [] and cfg is not None
    stack["restores"]["prod_r1"]["highAvailability"] = "often"
    assert validate_stack_config(stack)[1] == ["dbos:restores.prod_r1.highAvailability: " +
                                               validate_stack_config(stack)[1][0].split(": ", 1)[1]]
    news = {"instance_name": "rrr", "source": "aaa", "restore_time": "latest", "password": "Pw-123456789",
            "high_availability": True}
    assert validate(input_model(fields_of("RestoredInstance").model()), news) == []
    assert validate(input_model(fields_of("RestoredInstance").model()), {**news, "high_availability": "often"})
    req = provider.preflight_request({}, news)
    assert req is not None and req.kind is Kind.RESTORED and req.high_availability
    olds = {**news, "high_availability": False, "status": "available"}
    diff = provider.diff("rrr", olds, news)
    assert diff.changes and not diff.replaces  # standbys added in place
    assert provider.preflight_request(olds, news).high_availability  # type: ignore[union-attr]
    assert not provider.preflight_request(news, news).high_availability  # type: ignore[union-attr]

    problems = cloud_preflight(DbosCloudSession(), req)  # type: ignore[arg-type]
    assert [p.field for p in problems] == ["high_availability"] and "local engine" in problems[0].message


def test_fabric_names_fit_linux_and_differ_per_data_dir(tmp_path: Path) -> None:
    a, b = Fabric(tmp_path / "a"), Fabric(tmp_path / "b")
    assert a.tag != b.tag and a.subnet.startswith("10.") and a.subnet.endswith(".0/24")
    for f in (a, b):
        names = [f.bridge, *(h.netns or "" for h in f.hosts), *(f"{f.tag}v{i}p" for i in range(1, f.count + 1))]
        assert all(0 < len(n) <= 15 for n in names), names  # IFNAMSIZ
        assert [h.address for h in f.hosts] == [f"{f.prefix}.{i}" for i in (2, 3, 4)]
    assert Fabric(tmp_path / "a").subnet == a.subnet  # stable: the same data dir finds its hosts again


def test_patroni_configuration_keeps_each_members_archive_command_local(tmp_path: Path) -> None:
    fab = Fabric(tmp_path)
    m = patroni.Member("db1", fab.host(2), tmp_path / "m" / "h2", 15432, 8008)
    conf = patroni.render(m, etcd=["10.0.0.2:2379"], networks=fab.networks, secrets=patroni.Secrets("r" * 8, "w" * 8),
                          archive_command="push %p", restore_command="get %f %p", archive_timeout=60)
    dcs = conf["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True and dcs["postgresql"]["use_pg_rewind"] is True
    assert dcs["postgresql"]["use_slots"] is True and dcs["postgresql"]["parameters"]["wal_log_hints"] == "on"
    assert "archive_command" not in dcs["postgresql"]["parameters"]  # per member: pg1-path differs
    assert conf["postgresql"]["parameters"]["archive_command"] == "push %p"
    hba = "\n".join(conf["postgresql"]["pg_hba"])
    assert f"replication  {patroni.REPLICATOR}  127.0.0.1/32" in hba  # Patroni's own timeline check
    assert "host    all          postgres  all  reject" in hba
    assert dcs["ttl"] >= 20  # Patroni 4 raises a lower ttl to 20


def test_no_question_goes_to_the_subnet_without_its_bridge(tmp_path: Path, monkeypatch: Any) -> None:
    """After a reboot the bridge and the blackhole route are gone: the default route would carry a request for the
    subnet off the machine, so a look at an HA instance then asks no member (status `stopped`)."""
    from pulumi_dbos.engine.ha import cluster

    asked: list[Any] = []
    monkeypatch.setattr(patroni, "cluster", lambda ms: asked.append(ms))

    class Ctx:
        data_dir = tmp_path
        settings = EngineSettings()

        def inst_dir(self, name: str) -> Path:
            return tmp_path / name

    assert not Fabric(tmp_path).present()
    top = cluster.topology(Ctx(), "x")  # type: ignore[arg-type]
    assert top.leader is None and not asked


def test_real_hosts_setting_names_hosts_and_refuses_what_ssh_would_misread(tmp_path: Path) -> None:
    """PULUMI_DBOS_HA_HOSTS: h1.. in order, root by default; an entry ssh could take for an option, or a shell word,
    is refused, as are a host named twice and fewer than two."""
    from pulumi_dbos.engine.ha import remote
    from pulumi_dbos.errors import EngineError

    hosts = remote.parse(" deploy@db1.example, 10.0.0.12 ,root@10.0.0.13", tmp_path / "cfg", "postgres")
    assert [(h.name, h.address, h.ssh) for h in hosts] == [
        ("h1", "db1.example", "deploy@db1.example"), ("h2", "10.0.0.12", "root@10.0.0.12"),
        ("h3", "10.0.0.13", "root@10.0.0.13")]
    for bad in ("-oProxyCommand=x@h,a,b", "a;b,c,d", "a b,c,d", "h1,h1,h2", "only-one"):
        with pytest.raises(EngineError):
            remote.parse(bad)


def test_a_real_hosts_command_is_one_quoted_ssh_word_switching_user_the_way_the_login_allows(tmp_path: Path) -> None:
    """``ssh -F cfg -o BatchMode=yes -- user@host 'quoted argv'``: as root ``runuser`` (no sudo needed), else
    ``sudo -n`` (never a password prompt); a word with spaces or ``$`` stays one word on the host."""
    import shlex

    from pulumi_dbos.engine import proc
    from pulumi_dbos.engine.ha import remote

    me = proc.RunAs(pwd.getpwuid(os.getuid()).pw_name)
    root, deploy = remote.parse("root@10.0.0.2,deploy@10.0.0.3,10.0.0.4", tmp_path / "cfg")[:2]
    argv = root.wrap(["echo", "a b", "$HOME"], me)
    assert argv[:6] == ["ssh", "-F", str(tmp_path / "cfg"), "-o", "BatchMode=yes", "-o"]
    assert argv[-3:-1] == ["--", "root@10.0.0.2"]
    assert shlex.split(argv[-1]) == ["runuser", "-u", me.name, "--", "echo", "a b", "$HOME"]
    assert shlex.split(deploy.wrap(["true"], me)[-1])[:4] == ["sudo", "-n", "-u", me.name]


def test_a_stacks_instances_ignore_the_engines_default_of_high_availability(tmp_path: Path, monkeypatch: Any) -> None:
    """``PULUMI_DBOS_HA_MEMBERS`` makes the engine's new instances HA (the CLI's, serve's, the contract suite's
    ``local-ha``); a stack's instances have ``highAvailability`` of their own (default false): the resources'
    engine must not turn HA on for them, only for it to be turned off again by the resource."""
    from pulumi_dbos.engine import LocalEngine
    from pulumi_dbos.engine.settings import EngineSettings
    from pulumi_dbos.resources import _engine

    monkeypatch.setenv("PULUMI_DBOS_HA_MEMBERS", "3")
    assert EngineSettings.from_env().ha_members == 3
    monkeypatch.setattr(_engine, "_engines", {})
    eng = _engine.engine_for({"engine": "local", "data_dir": str(tmp_path / "d"), "run_as": "root"})
    assert isinstance(eng, LocalEngine) and eng.settings.ha_members == 0


def test_the_local_engine_names_what_ha_lacks_here_at_preview(monkeypatch: pytest.MonkeyPatch) -> None:
    """highAvailability on a machine without etcd (or not as root) fails at preview, naming the field and what to
    install, and creates nothing (``checks.preflight`` asks ``cluster.require_hosts``)."""
    import shutil

    from pulumi_dbos.engine import LocalEngine
    from pulumi_dbos.engine.contract import Kind, Preflight
    from pulumi_dbos.engine.ha import cluster
    from tests.conftest import _short_tmpdir

    real = shutil.which
    monkeypatch.setattr(cluster.shutil, "which", lambda cmd, *a, **k: None if cmd == "etcd" else real(cmd, *a, **k))
    root = _short_tmpdir("pu")  # a data dir's path must be short (Unix sockets) and reachable by the cluster user
    try:
        eng = LocalEngine(root / "d", pool=0)
        problems = eng.preflight(Preflight(kind=Kind.PROVISIONED, name="hacheck", high_availability=True))
        assert [p.field for p in problems] == ["high_availability"], problems
        assert "etcd is not installed" in problems[0].message and "etcd-server" in problems[0].message
        assert eng.preflight(Preflight(kind=Kind.PROVISIONED, name="hacheck")) == []
        assert not (root / "d" / "ha").exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
