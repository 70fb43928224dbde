"""The pulumi-dbos command without servers: engine settings from a stack, data-dir checks, error output,
and the connection `db connect` writes into a dbos-config.yaml (every password character the rules allow)."""

from __future__ import annotations

import json
import os
import re
import shutil
import string
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from pulumi_dbos import cli, dbos_config
from pulumi_dbos.engine import proc
from tests.conftest import _short_tmpdir

STACK_PW = "Stack-Passw0rd-unit"
ENV_PW = "Env-Passw0rd-unit"


class FakePulumi:
    """Stands in for the `pulumi` CLI behind proc.run (the one subprocess door); records every argv."""

    def __init__(self, config: dict[str, Any] | None = None, resources: list[dict[str, Any]] | None = None) -> None:
        self.config = config or {}
        self.resources = resources or []
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        assert isinstance(argv, list) and "shell" not in kw
        self.calls.append(list(argv))
        if argv[:3] == ["pulumi", "config", "--json"]:
            out = json.dumps(self.config)
        elif argv[:3] == ["pulumi", "stack", "export"]:
            out = json.dumps({"version": 3, "deployment": {"resources": self.resources}})
        else:
            raise AssertionError(f"unexpected command {argv}")
        return subprocess.CompletedProcess(argv, 0, out, "")


class FakeEngine:
    def __init__(self, port: int = 54999) -> None:
        self.port = port

    def info(self, name: str) -> Any:
        return SimpleNamespace(name=name, username="app_user", hostname="127.0.0.1", port=self.port)


def secret(value: Any) -> dict[str, str]:
    """A secret as `pulumi stack export --show-secrets` prints it."""
    return {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "plaintext": json.dumps(value)}


def instance_resource(name: str, password: str) -> dict[str, Any]:
    return {"urn": f"urn:pulumi:s::p::pulumi-python:dynamic/dbos:DatabaseInstance::{name}",
            "type": "pulumi-python:dynamic/dbos:DatabaseInstance",
            "outputs": {"instance_name": name, "username": "app_user", "password": secret(password)}}


def stack_data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "stack-data"
    d.mkdir()
    (d / "catalog.db").write_bytes(b"")
    return d


@pytest.fixture
def engines(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None, str | None]]:
    """Records the (engine, data_dir, run_as) the CLI asks for and hands out a FakeEngine."""
    seen: list[tuple[str, str | None, str | None]] = []

    def get_engine(name: str = "local", data_dir: str | None = None, run_as: str | None = None) -> FakeEngine:
        seen.append((name, data_dir, run_as))
        return FakeEngine()

    monkeypatch.setattr(cli.common, "get_engine", get_engine)
    return seen


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("PGPASSWORD", "PULUMI_DBOS_DATA_DIR", "PULUMI_DBOS_RUN_AS", "PULUMI_DBOS_ENGINE", "PULUMI_DBOS_DEBUG"):
        monkeypatch.delenv(key, raising=False)


# ------------------------------------------------------------------------- db url --stack: engine settings
def test_url_with_stack_uses_the_stacks_engine_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engines: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    data = stack_data_dir(tmp_path)
    fake = FakePulumi(config={
        "dbos:dataDir": {"value": str(data), "secret": False},
        "dbos:runAs": {"value": "pgrunner", "secret": False},
        "dbos:engine": {"value": "local", "secret": False},
        "dbos:instances": {"value": "{}", "objectValue": {}, "secret": False},
    })
    monkeypatch.setattr(proc, "run", fake)
    assert cli.main(["db", "url", "inst_db", "--stack", "s1"]) == 0
    assert engines == [("local", str(data), "pgrunner")]
    assert ["pulumi", "config", "--json", "--stack", "s1"] in fake.calls
    assert capsys.readouterr().out.strip() == "postgresql://app_user@127.0.0.1:54999/postgres"


def test_url_options_on_the_command_line_win_over_the_stack(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engines: list[Any]) -> None:
    data = stack_data_dir(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "catalog.db").write_bytes(b"")
    fake = FakePulumi(config={"dbos:dataDir": {"value": str(data), "secret": False},
                              "dbos:runAs": {"value": "pgrunner", "secret": False}})
    monkeypatch.setattr(proc, "run", fake)
    assert cli.main(["--data-dir", str(mine), "db", "url", "inst_db", "--stack", "s1"]) == 0
    assert engines == [("local", str(mine), "pgrunner")]


def test_url_without_stack_does_not_ask_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               engines: list[Any]) -> None:
    fake = FakePulumi()
    monkeypatch.setattr(proc, "run", fake)
    assert cli.main(["--data-dir", str(stack_data_dir(tmp_path)), "db", "url", "inst_db"]) == 0
    assert fake.calls == []


# ------------------------------------------------------------------------- db url -S: whose password
def test_explicit_stack_password_wins_over_pgpassword(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engines: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    data = stack_data_dir(tmp_path)
    monkeypatch.setenv("PGPASSWORD", ENV_PW)
    fake = FakePulumi(config={"dbos:dataDir": {"value": str(data), "secret": False}},
                      resources=[instance_resource("other_db", "Other-Passw0rd"), instance_resource("inst_db", STACK_PW)])
    monkeypatch.setattr(proc, "run", fake)
    assert cli.main(["db", "url", "inst_db", "-S", "--stack", "s1"]) == 0
    assert capsys.readouterr().out.strip() == f"postgresql://app_user:{STACK_PW}@127.0.0.1:54999/postgres"
    assert any(c[:3] == ["pulumi", "stack", "export"] and c[-2:] == ["--stack", "s1"] for c in fake.calls)


def test_without_stack_pgpassword_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engines: list[Any],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PGPASSWORD", ENV_PW)
    fake = FakePulumi()
    monkeypatch.setattr(proc, "run", fake)
    assert cli.main(["--data-dir", str(stack_data_dir(tmp_path)), "db", "url", "inst_db", "-S"]) == 0
    assert capsys.readouterr().out.strip() == f"postgresql://app_user:{ENV_PW}@127.0.0.1:54999/postgres"
    assert fake.calls == []


# ------------------------------------------------------------------------- read commands never create a data dir
@pytest.fixture
def short_tmp() -> Any:
    """Short and reachable by the cluster user, like a real data dir's parent (so only the CLI can refuse it)."""
    d = _short_tmpdir("pu")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


READ_COMMANDS = [["db", "list"], ["db", "list", "--json"], ["db", "status", "x_db"], ["db", "url", "x_db"],
                 ["db", "backup", "x_db"]]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c))
def test_read_commands_refuse_a_missing_data_dir_and_create_nothing(
        short_tmp: Path, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    missing = short_tmp / "typo"
    assert cli.main(["--data-dir", str(missing), *command]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err and "does not exist" in err
    assert not missing.exists()


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c))
def test_read_commands_refuse_a_data_dir_without_catalog(
        short_tmp: Path, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    empty = short_tmp / "empty"
    empty.mkdir()
    assert cli.main(["--data-dir", str(empty), *command]) == 1
    err = capsys.readouterr().err
    assert str(empty) in err and "catalog.db" in err
    assert list(empty.iterdir()) == []


def test_default_data_dir_is_checked_too(short_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PULUMI_DBOS_DATA_DIR", str(short_tmp / "nope"))
    assert cli.main(["db", "list"]) == 1
    assert str(short_tmp / "nope") in capsys.readouterr().err
    assert not (short_tmp / "nope").exists()


# ------------------------------------------------------------------------- errors: one line, no traceback
def test_preview_report_of_a_missing_file_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["preview-report", "/missing/preview.json"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("error: ") and "/missing/preview.json" in err and "hint: " in err
    assert len(err.strip().splitlines()) == 2


def test_preview_report_of_bad_json_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "p.json"
    f.write_text("{not json")
    assert cli.main(["preview-report", str(f)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: preview-report") and "Traceback" not in err


def test_connect_to_a_missing_config_is_one_error_line(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(proc, "run", FakePulumi(resources=[app_resource("shop", STACK_PW)]))
    assert cli.main(["db", "connect", "shop", "--config", "/no/dir/x.yaml"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: ") and "/no/dir/x.yaml" in err and "hint: " in err


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    def boom(_args: Any) -> int:
        raise OSError(13, "Permission denied", "/some/file")

    monkeypatch.setattr(cli, "cmd_report", boom)
    assert cli.main(["preview-report", "x"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "error: cannot access /some/file: Permission denied"
    assert "PULUMI_DBOS_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("PULUMI_DBOS_DEBUG", "1")
    with pytest.raises(OSError):
        cli.main(["preview-report", "x"])


def test_error_messages_mask_url_passwords(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def boom(_args: Any) -> int:
        raise ValueError(f"bad url postgresql://app_user:{STACK_PW}@127.0.0.1:5432/x")

    monkeypatch.setattr(cli, "cmd_report", boom)
    assert cli.main(["preview-report", "x"]) == 1
    err = capsys.readouterr().err
    assert STACK_PW not in err and "postgresql://app_user:[secret]@127.0.0.1" in err


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PULUMI_DBOS_DEBUG"}
    cp = subprocess.run([sys.executable, "-m", "pulumi_dbos.cli", "preview-report", str(tmp_path / "missing")],  # noqa: S603
                        capture_output=True, text=True, env=env, timeout=60)
    assert cp.returncode == 1 and cp.stdout == ""
    assert cp.stderr.startswith("error: ") and "Traceback" not in cp.stderr


# ------------------------------------------------------------------------- db connect / write_connection
# every character the password rules allow that is not a letter or digit (none of @ / \ " ', no whitespace)
SPECIALS = [c for c in string.punctuation if c not in "@/\\\"'"]
URL_SAFE = set("-._~")  # RFC 3986 unreserved: never percent-escaped


def dbos_expand(text: str, env: dict[str, str]) -> Any:
    """What DBOS Transact does with dbos-config.yaml: substitute ${VAR} in the text, then parse the YAML."""
    return yaml.safe_load(re.sub(r"\$\{(?!DOCKER_SECRET:)([^}]+)\}", lambda m: env.get(m.group(1), ""), text))


def password_with(ch: str) -> str:
    return f"{ch}Pa{ch}ss-w0rd{ch}"


LAYOUT_3X = "# 2.x layout\nname: shop\ndatabase_url: postgresql://u:p@localhost:5432/old   # the app's db\n"
LAYOUT_NO_CONN = "name: shop\ndatabase:\n  # migrations only\n  migrate:\n    - alembic upgrade head\n"
LAYOUT_SYS_ONLY = "name: shop\nsystem_database_url: postgresql://u@localhost:5432/x_dbos_sys\n"
LAYOUT_OLD = "name: shop\ndatabase:\n  hostname: localhost  # keep me\n  port: 5432\n  username: postgres\n"


@pytest.mark.parametrize("layout", [LAYOUT_3X, LAYOUT_NO_CONN, LAYOUT_SYS_ONLY], ids=["database_url", "no-conn",
                                                                                   "system-only"])
@pytest.mark.parametrize("ch", SPECIALS)
def test_3x_layout_urls_parse_for_every_allowed_password_character(tmp_path: Path, layout: str, ch: str) -> None:
    pw = password_with(ch)
    f = tmp_path / "dbos-config.yaml"
    f.write_text(layout)
    in_file = dbos_config.point_at(f, "127.0.0.1", 54401, "app_user", "shop_db", password=pw)
    text = f.read_text()
    assert pw not in text
    doc = dbos_expand(text, {"PGPASSWORD": pw})
    # DBOS 3.x rejects a top-level database_url: it is only kept up to date where it already is (2.x)
    assert ("database_url" in doc) is (layout == LAYOUT_3X)
    for key, dbname in (("database_url", "shop_db"), ("system_database_url", "shop_db_dbos_sys")):
        if key not in doc:
            continue
        parsed = conninfo_to_dict(doc[key])
        assert {k: parsed[k] for k in ("user", "host", "port", "dbname")} == {
            "user": "app_user", "host": "127.0.0.1", "port": "54401", "dbname": dbname}
        if ch in URL_SAFE:
            assert parsed["password"] == pw
        else:  # libpq reads PGPASSWORD from the environment
            assert "password" not in parsed
    assert in_file is (ch in URL_SAFE)
    assert ("${PGPASSWORD}" in text) is (ch in URL_SAFE)


@pytest.mark.parametrize("ch", SPECIALS)
def test_old_layout_password_survives_expansion(tmp_path: Path, ch: str) -> None:
    pw = password_with(ch)
    f = tmp_path / "dbos-config.yaml"
    f.write_text(LAYOUT_OLD)
    assert dbos_config.point_at(f, "127.0.0.1", 54401, "app_user", "shop_db", password=pw) is True
    text = f.read_text()
    assert pw not in text and "# keep me" in text and "database_url" not in text
    db = dbos_expand(text, {"PGPASSWORD": pw})["database"]
    assert db == {"hostname": "127.0.0.1", "port": 54401, "username": "app_user", "password": pw,
                  "app_db_name": "shop_db"}


def test_3x_layout_gets_no_database_url(tmp_path: Path) -> None:
    """DBOS Transact 3.x rejects a top-level database_url: db connect never adds one."""
    f = tmp_path / "dbos-config.yaml"
    f.write_text(LAYOUT_NO_CONN)
    dbos_config.point_at(f, "127.0.0.1", 54401, "app_user", "shop_db", password="Plain-passw0rd")
    doc = yaml.safe_load(f.read_text())
    assert "database_url" not in doc and doc["system_database_url"].endswith("/shop_db_dbos_sys")
    assert list(doc) == ["name", "system_database_url", "database"]


def test_3x_layout_keeps_comments_and_places_system_url(tmp_path: Path) -> None:
    f = tmp_path / "dbos-config.yaml"
    f.write_text(LAYOUT_3X + "database:\n  migrate: [x]\n")
    dbos_config.point_at(f, "127.0.0.1", 54401, "app_user", "shop_db", password="Plain-passw0rd")
    text = f.read_text()
    assert "# 2.x layout" in text and "# the app's db" in text
    keys = list(yaml.safe_load(text))
    assert keys == ["name", "database_url", "system_database_url", "database"]
    assert "postgresql://app_user:${PGPASSWORD}@127.0.0.1:54401/shop_db_dbos_sys" in text


def app_resource(app: str, password: str, dbos_config: str | None = None) -> dict[str, Any]:
    from urllib.parse import quote

    url = f"postgresql://app_user:{quote(password, safe='')}@127.0.0.1:54401/{app}"
    return {"urn": f"urn:pulumi:s::p::pulumi-python:dynamic/dbos:AppDatabase::{app}",
            "type": "pulumi-python:dynamic/dbos:AppDatabase",
            "outputs": {"app_name": app, "app_db_name": app, "hostname": "127.0.0.1", "port": 54401,
                        "username": "app_user", "dbos_config": dbos_config, "database_url": secret(url)}}


@pytest.mark.parametrize("pw", ["Plain-passw0rd", "Hash#passw0rd", "Pct%41passw0rd"])
def test_connect_uses_the_state_password_to_choose_the_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pw: str) -> None:
    f = tmp_path / "dbos-config.yaml"
    f.write_text(LAYOUT_3X)
    monkeypatch.setattr(proc, "run", FakePulumi(resources=[app_resource("shop", pw, str(f))]))
    assert cli.main(["db", "connect", "shop", "--stack", "s1"]) == 0
    out = capsys.readouterr().out
    text = f.read_text()
    assert pw not in text and pw not in out
    doc = dbos_expand(text, {"PGPASSWORD": pw})
    parsed = conninfo_to_dict(doc["database_url"])
    if pw == "Plain-passw0rd":
        assert parsed["password"] == pw and "note:" not in out
    else:
        assert "password" not in parsed and "note:" in out and "PGPASSWORD" in out
