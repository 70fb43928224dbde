"""One CLI convention (issue 20, reproductions 2-5): every command takes --stack and the engine options, a
project's selected stack is the default (said on stderr), environment defaults for the domain and the CA
certificate, hints naming the flag and the config key, a closed stdout, `db connect` of a deployed App,
`serve token`'s footguns, the systemd unit, help without internal notes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from pulumi_dbos import cli
from pulumi_dbos.engine import proc
from pulumi_dbos.engine.dbos_cloud import DbosCloudEngine
from pulumi_dbos.errors import DbosError
from tests.unit.test_cli import FakeEngine, FakePulumi, secret

pytestmark = pytest.mark.unit
BACKEND = "file:///tmp/cli-convention-backend"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("PGPASSWORD", "PULUMI_DBOS_DATA_DIR", "PULUMI_DBOS_RUN_AS", "PULUMI_DBOS_ENGINE", "PULUMI_DBOS_DEBUG",
                "DBOS_CLOUD_TOKEN", "DBOS_DOMAIN", "PULUMI_DBOS_CLOUD_CA_CERT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "pulumi-home"))
    monkeypatch.setenv("PULUMI_BACKEND_URL", BACKEND)


class Pulumi(FakePulumi):
    """FakePulumi that also answers `pulumi config get KEY` (the token) and records the cwd of each call."""

    def __init__(self, config: dict[str, Any], **kw: Any) -> None:
        super().__init__(config, **kw)
        self.cwds: list[Any] = []

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.cwds.append(kw.get("cwd"))
        if argv[:3] == ["pulumi", "config", "get"]:
            entry = self.config.get(argv[3]) or {}
            self.calls.append(list(argv))
            return subprocess.CompletedProcess(argv, 0, str(entry.get("value", "")), "")
        return super().__call__(argv, **kw)


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def get_engine(name: str = "local", data_dir: str | None = None, run_as: str | None = None,
                   **kw: Any) -> FakeEngine:
        seen.append({"name": name, "data_dir": data_dir, "run_as": run_as, **kw})
        eng: Any = FakeEngine()
        eng.list = lambda: []
        return eng  # type: ignore[no-any-return]

    monkeypatch.setattr(cli.common, "get_engine", get_engine)
    return seen


def data_dir(tmp_path: Path, name: str = "stack-data") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "catalog.db").write_bytes(b"")
    return d


def project(tmp_path: Path, stack: str | None) -> Path:
    """A Pulumi project dir whose selected stack (in Pulumi's workspace file) is ``stack``."""
    work = tmp_path / "proj"
    (work / "sub").mkdir(parents=True)
    (work / "Pulumi.yaml").write_text("name: myproj\nruntime: python\n")
    if stack:
        digest = hashlib.sha1(str(work / "Pulumi.yaml").encode()).hexdigest()  # noqa: S324
        ws = Path(os.environ["PULUMI_HOME"]) / "workspaces"
        ws.mkdir(parents=True)
        (ws / f"myproj-{digest}-workspace.json").write_text(
            json.dumps({"stacks": {BACKEND: f"organization/myproj/{stack}"}}))
    return work


# ------------------------------------------------------------------------- --stack on every command
@pytest.mark.parametrize("argv", [["db", "list"], ["db", "status", "x"], ["db", "backup", "x"], ["db", "url", "x"],
                                  ["db", "connect", "x"], ["app", "list"], ["app", "status", "x"],
                                  ["app", "versions", "x"], ["app", "logs", "x"], ["app", "rollback", "x"]])
def test_every_engine_command_takes_stack_and_the_engine_options_after_its_name(argv: list[str]) -> None:
    args = cli.build_parser().parse_args([*argv, "--stack", "ux", "--data-dir", "/d", "--cloud-ca-cert", "c.pem"])
    assert (args.stack, args.data_dir, args.cloud_ca_cert) == ("ux", "/d", "c.pem")
    args = cli.build_parser().parse_args(["--stack", "ux", "--engine", "local", *argv])  # before it still works
    assert (args.stack, args.engine, args.data_dir) == ("ux", "local", None)


def test_db_list_with_stack_reads_that_stacks_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     engines: list[dict[str, Any]]) -> None:
    d = data_dir(tmp_path)
    fake = Pulumi({"dbos:dataDir": {"value": str(d)}, "dbos:runAs": {"value": "pgrunner"}})
    monkeypatch.setattr(proc, "run", fake)
    assert cli.main(["db", "list", "--stack", "ux"]) == 0
    assert engines == [{"name": "local", "data_dir": str(d), "run_as": "pgrunner"}]
    assert ["pulumi", "config", "--json", "--stack", "ux"] in fake.calls


def test_in_a_project_dir_the_selected_stack_is_the_default_and_said(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engines: list[dict[str, Any]],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Reproduction 2: plain `db list` in a project dir listed the default data dir, not the stack's engine."""
    d = data_dir(tmp_path)
    work = project(tmp_path, "ux")
    fake = Pulumi({"dbos:dataDir": {"value": str(d)}})
    monkeypatch.setattr(proc, "run", fake)
    monkeypatch.chdir(work / "sub")
    assert cli.main(["db", "list"]) == 0
    assert engines[-1]["data_dir"] == str(d)
    assert fake.calls[-1] == ["pulumi", "config", "--json", "--stack", "ux"] and fake.cwds[-1] == str(work)
    assert f"using stack 'ux', selected in {work}" in capsys.readouterr().err

    # the options, or $PULUMI_DBOS_DATA_DIR, say where the engine is: no stack is consulted
    other = data_dir(tmp_path, "other")
    fake.calls.clear()
    assert cli.main(["db", "list", "--data-dir", str(other)]) == 0
    monkeypatch.setenv("PULUMI_DBOS_DATA_DIR", str(other))
    assert cli.main(["db", "list"]) == 0
    assert fake.calls == [] and engines[-1]["data_dir"] == str(other) and engines[-2]["data_dir"] == str(other)


def test_without_a_selected_stack_nothing_is_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   engines: list[dict[str, Any]]) -> None:
    monkeypatch.chdir(project(tmp_path, None))
    monkeypatch.setattr(proc, "run", FakePulumi())
    monkeypatch.setenv("PULUMI_DBOS_DATA_DIR", str(data_dir(tmp_path)))
    assert cli.main(["db", "list"]) == 0


def test_a_cloud_stack_gives_domain_token_and_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 engines: list[dict[str, Any]]) -> None:
    """Reproduction 2: in a project whose stack sets dbos:cloudToken, `db status` said there was no token."""
    work = project(tmp_path, "ux")
    fake = Pulumi({"dbos:engine": {"value": "dbos-cloud"}, "dbos:cloudDomain": {"value": "h.test:8443"},
                   "dbos:cloudCaCert": {"value": "certs/ca.pem"},
                   "dbos:cloudToken": {"value": "tok-123", "secret": True}})
    monkeypatch.setattr(proc, "run", fake)
    monkeypatch.chdir(work)
    assert cli.main(["db", "list"]) == 0
    assert engines[-1] == {"name": "dbos-cloud", "data_dir": None, "run_as": None, "domain": "h.test:8443",
                           "token": "tok-123", "ca_cert": str(work / "certs" / "ca.pem")}


def test_ca_certificate_environment_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            engines: list[dict[str, Any]]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PULUMI_DBOS_CLOUD_CA_CERT", "/etc/serve.pem")
    assert cli.main(["--engine", "dbos-cloud", "db", "list"]) == 0
    assert engines[-1]["ca_cert"] == "/etc/serve.pem"
    assert cli.main(["db", "list", "--engine", "dbos-cloud", "--cloud-ca-cert", "/x.pem"]) == 0
    assert engines[-1]["ca_cert"] == "/x.pem"


def test_untrusted_certificate_hint_names_the_flag_and_the_config_key() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate")

    eng = DbosCloudEngine("serve.test:8443", "tok", transport=httpx.MockTransport(refuse), sleep=lambda s: None,
                          backoff=0.0)
    with pytest.raises(DbosError) as err:
        eng.list()
    assert "--cloud-ca-cert" in (err.value.hint or "") and "dbos:cloudCaCert" in (err.value.hint or "")


# ------------------------------------------------------------------------- a closed stdout
def test_a_closed_stdout_is_not_an_error(tmp_path: Path) -> None:
    """Reproduction 5: `db status --json | head` printed 'error: cannot access: Broken pipe'."""
    report = tmp_path / "preview.json"
    report.write_text(json.dumps({"steps": [], "diagnostics": [], "changeSummary": {"same": 1}}))
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(0.5); "  # noqa: S603
                              "from pulumi_dbos.cli import main; sys.exit(main(sys.argv[1:]))",
                              "preview-report", str(report)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader is gone before anything is written
    err = child.stderr.read().decode()
    assert child.wait(timeout=60) == 0, err
    assert "error" not in err.lower() and "Broken pipe" not in err


# ------------------------------------------------------------------------- db connect of a deployed App
def app_resource(source: Path) -> dict[str, Any]:
    return {"urn": "urn:pulumi:s::p::pulumi-python:dynamic/dbos:App::greet",
            "type": "pulumi-python:dynamic/dbos:App",
            "outputs": {"app_name": "greet", "source": str(source), "app_db_name": "greet",
                        "instance_host": "127.0.0.1", "instance_port": 54999, "instance_user": "app_user",
                        "database_url": secret("postgresql://app_user:pw-123456@127.0.0.1:54999/greet")}}


def test_db_connect_never_rewrites_a_deployed_apps_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Reproduction 3: `system_database_url: ${DBOS_SYSTEM_DATABASE_URL}` became one instance's literal URL."""
    src = tmp_path / "greet"
    src.mkdir()
    text = "name: greet\nlanguage: python\nsystem_database_url: ${DBOS_SYSTEM_DATABASE_URL}\n"
    (src / "dbos-config.yaml").write_text(text)
    monkeypatch.setattr(proc, "run", FakePulumi(resources=[app_resource(src)]))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["db", "connect", "greet"]) == 1
    err = capsys.readouterr().err
    assert "deployed App" in err and "${DBOS_SYSTEM_DATABASE_URL}" in err and "--config" in err
    assert (src / "dbos-config.yaml").read_text() == text

    # a copy outside the source is the app's local development config: written
    local = tmp_path / "local-dbos-config.yaml"
    local.write_text(text)
    assert cli.main(["db", "connect", "greet", "--config", str(local)]) == 0
    assert "127.0.0.1:54999" in local.read_text() and (src / "dbos-config.yaml").read_text() == text


# ------------------------------------------------------------------------- serve token, the systemd unit
def test_serve_token_refuses_a_ttl_under_one_hour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for ttl in ("0", "-3", "0.5"):
        assert cli.main(["serve", "token", "--org", "acme", "--user", "u", "--data-dir", str(tmp_path),
                         "--ttl-hours", ttl]) == 1
        out = capsys.readouterr()
        assert out.out == "" and "--ttl-hours must be at least 1" in out.err
    assert not (tmp_path / "serve").exists()


def test_serve_token_warns_of_a_new_key_and_a_mistyped_org(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    base = ["serve", "token", "--user", "alice", "--data-dir", str(tmp_path)]
    assert cli.main([*base, "--org", "acme"]) == 0
    out = capsys.readouterr()
    assert out.out.count(".") == 2  # a JWT
    assert "has no serve signing key yet" in out.err and f"--data-dir {tmp_path}" in out.err
    assert cli.main([*base, "--org", "acme"]) == 0
    assert "signing key" not in capsys.readouterr().err  # the key exists now
    (tmp_path / "orgs" / "acme").mkdir(parents=True)
    assert cli.main([*base, "--org", "acmee"]) == 0
    assert "did you mean 'acme'?" in capsys.readouterr().err
    assert cli.main([*base, "--org", "acme"]) == 0
    assert capsys.readouterr().err == ""


def test_serve_prints_a_systemd_unit(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--print-systemd-unit", "--listen", "10.0.0.5:8443", "--data-dir", "/srv/d"]) == 0
    unit = capsys.readouterr().out
    assert "serve --listen 10.0.0.5:8443 --data-dir /srv/d" in unit
    assert "KillMode=process" in unit and "keep running" in unit and "[Install]" in unit


# ------------------------------------------------------------------------- help, messages
def test_help_has_no_internal_notes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "DESIGN" not in out and "One module per command group" not in out
    assert "--stack" in out and "PULUMI_DBOS_CLOUD_CA_CERT" in out


def test_window_messages_quote_names_once() -> None:
    from pulumi_dbos.engine.contract import InstanceInfo
    from pulumi_dbos.engine.dbos_cloud.checks import window_problem
    from pulumi_dbos.timeutil import parse_rfc3339

    src = InstanceInfo(name="uxmain", status="stopped", hostname="h", port=1, username="u",
                       earliest_restorable_time="2026-01-01T00:00:00Z", latest_restorable_time="2026-01-02T00:00:00Z")
    why = window_problem(src, parse_rfc3339("2025-01-01T00:00:00Z"), "2025-01-01T00:00:00Z")
    assert why is not None and "'uxmain''s" not in why and "restorable window of 'uxmain'" in why
