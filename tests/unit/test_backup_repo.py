"""`dbos:backupRepo` (issue 29): every mistake fails the preview naming its key; what the engine writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulumi_dbos.config.backup_repo import parse
from pulumi_dbos.config.settings import settings_problems
from pulumi_dbos.engine import proc
from pulumi_dbos.engine.local.paths import Layout
from pulumi_dbos.engine.local.repo import RepoSettings, Repository


@pytest.mark.parametrize(("value", "expected"), [
    ({"path": "relative/dir"}, "dbos:backupRepo.path: must be an absolute path"),
    ({"s3": {"endpoint": "https://s3.example.com", "bucket": "bkt", "accessKey": "a", "secretKey": "s"}},
     "dbos:backupRepo.s3.endpoint: is host[:port] without a scheme"),
    ({"s3": {"endpoint": "s3.example.com", "bucket": "bkt"}}, "dbos:backupRepo.s3.accessKey: Field required"),
    ({"cipherPassphrase": "short"}, "dbos:backupRepo.cipherPassphrase"),
    ({"archiveTimeout": 0}, "dbos:backupRepo.archiveTimeout"),
    ({"pth": "/x"}, "dbos:backupRepo.pth: unknown key"),
    ("not a map", "dbos:backupRepo: must be a map"),
])
def test_bad_settings_name_their_key(value: object, expected: str) -> None:
    problems = settings_problems({"backupRepo": value})
    assert problems and expected in problems[0], problems


def test_backup_repo_is_a_local_engine_setting() -> None:
    problems = settings_problems({"engine": "dbos-cloud", "backupRepo": {"path": "/mnt/b"}})
    assert any("dbos:backupRepo: not used by the dbos-cloud engine" in p for p in problems)


def test_render_and_read_back(tmp_path: Path) -> None:
    settings = RepoSettings.from_mapping(parse({
        "path": "/mnt/backups", "cipherPassphrase": "a-long-cipher-passphrase",
        "s3": {"endpoint": "127.0.0.1:9000", "bucket": "bkt", "accessKey": "ak", "secretKey": "sk-secret",
               "caFile": "/etc/ca.pem", "path": "/p"},
        "deletedRetentionHours": 48, "archiveTimeout": 15}))
    repo = Repository(Layout(tmp_path, proc.RunAs(None)), settings)
    text = repo.render()
    assert "repo1-path=/mnt/backups" in text and "repo2-type=s3" in text and "repo2-s3-key-secret=sk-secret" in text
    assert "repo1-cipher-pass=a-long-cipher-passphrase" in text and "repo2-cipher-type=aes-256-cbc" in text
    back = RepoSettings.from_conf(text)
    assert back == settings
    # the commands PostgreSQL runs name the configuration file, never a secret
    cmd = repo.archive_command("x_db-20260101T0000001234", tmp_path / "data")
    assert "sk-secret" not in cmd and "cipher" not in cmd and "archive-push %p" in cmd
    # S3 alone: the only repository
    only = Repository(Layout(tmp_path, proc.RunAs(None)), RepoSettings(s3=settings.s3))
    assert "repo1-type=s3" in only.render() and "repo2" not in only.render()
