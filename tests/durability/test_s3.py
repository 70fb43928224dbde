"""The backup repository in a real S3-compatible object store (SeaweedFS over TLS on 127.0.0.1): the whole data
dir lost, the instance comes back from the object store alone with every acknowledged commit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pulumi_dbos.engine import LocalEngine
from pulumi_dbos.engine.local.repo import RepoSettings
from tests.durability.test_repository import PW, first_repo_backup, insert, lose_host, rows
from tests.support.s3 import S3Server, seaweedfs, weed_binary


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    if weed_binary() is None:  # make test builds it (scripts/setup.sh): a missing one is a failure, not a skip
        pytest.fail("SeaweedFS is not built: run the tests through `make test` (scripts/ensure-seaweedfs.sh)")
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="s3"))
    os.chmod(root, 0o755)  # the CA file is read by the cluster user
    with seaweedfs(root / "weed") as server:
        yield server


def test_whole_data_dir_lost_restores_from_s3_alone(s3: S3Server, tmp_root: Path) -> None:
    settings = RepoSettings.from_mapping({"s3": s3.settings("/t-" + tmp_root.name), "cipherPassphrase": "Cipher-pw-9876"})
    first = LocalEngine(tmp_root / "d1", repo=settings)
    info = first.provision("s3_db", "app_user", PW)
    first_repo_backup(first, "s3_db")
    insert(info.port, 1, 250)
    first.pitr.archive_now("s3_db", info.port)
    assert "Cipher-pw-9876" not in (first.inst_dir("s3_db") / "data" / "instance.conf").read_text()
    lose_host(first, "s3_db")  # the host is gone: its server, its disk, its local cache
    second = LocalEngine(tmp_root / "d2", repo=settings)
    assert {i.name: i.status for i in second.list()} == {"s3_db": "lost"}
    back = second.recover("s3_db")
    assert rows(back.port) == list(range(1, 251))
    # it goes on archiving into the same stanza: a later loss comes back too
    insert(back.port, 251, 260)
    second.pitr.archive_now("s3_db", back.port)
    restored = second.restore_to_new("s3_db", "s3_again", "latest", password=PW)
    assert rows(restored.port) == list(range(1, 261))
