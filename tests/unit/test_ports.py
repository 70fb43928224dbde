"""Port claims (no server): only files the engine's own OS user wrote count; the directory is the engine's."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from pulumi_dbos.engine.local import ports
from pulumi_dbos.errors import EngineError

PORT = 61234
NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="making a file owned by another user needs root")


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "claims"
    monkeypatch.setenv("PULUMI_DBOS_PORTS_DIR", str(d))
    return d


def _junk_catalog(tmp_path: Path) -> Path:
    """A "data dir" whose catalog.db cannot be read (the liveness check then leaves a claim alone)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "catalog.db").write_bytes(b"not a database " * 100)
    return fake


def _plant(path: Path, text: str, uid: int, age: float) -> None:
    path.write_text(text)
    os.chown(path, uid, uid)
    then = time.time() - age
    os.utime(path, (then, then))


@root_only
def test_a_claim_not_owned_by_the_engine_user_is_not_honoured(claims: Path, tmp_path: Path) -> None:
    assert ports.claim(PORT + 1, tmp_path / "d", "mine")  # makes the directory
    fake = _junk_catalog(tmp_path)
    for age in (0, 7 * 86400):  # fresh (inside the grace period) or backdated: never honoured
        _plant(claims / str(PORT), f"{fake}\nvictim\n", NOBODY, age)
        assert ports.claim(PORT, tmp_path / "d", "inst")
        st = os.lstat(claims / str(PORT))
        assert st.st_uid == os.geteuid() and (claims / str(PORT)).read_text() == f"{tmp_path / 'd'}\ninst\n"
        ports.release(PORT, tmp_path / "d", "inst")
        assert not (claims / str(PORT)).exists()


def test_the_engine_users_own_claims_are_honoured(claims: Path, tmp_path: Path) -> None:
    """The existing liveness logic: a fresh claim holds; a backdated one whose catalog cannot be read holds; a
    backdated one whose data dir has no catalog is stale."""
    fake = _junk_catalog(tmp_path)
    assert ports.claim(PORT, fake, "other")
    assert not ports.claim(PORT, tmp_path / "d", "inst")  # fresh
    old = time.time() - 7 * 86400
    os.utime(claims / str(PORT), (old, old))
    assert not ports.claim(PORT, tmp_path / "d", "inst")  # its catalog cannot be read: left alone
    (fake / "catalog.db").unlink()
    assert ports.claim(PORT, tmp_path / "d", "inst")  # no catalog: stale


def test_a_symlink_where_a_claim_should_be_is_not_followed(claims: Path, tmp_path: Path) -> None:
    assert ports.claim(PORT + 1, tmp_path / "d", "mine")
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (claims / str(PORT)).symlink_to(target)
    assert ports.claim(PORT, tmp_path / "d", "inst")
    assert target.read_text() == "keep me\n"
    assert not (claims / str(PORT)).is_symlink()
    (claims / str(PORT + 2)).symlink_to(target)
    ports.release(PORT + 2, tmp_path / "d", "inst")
    assert target.read_text() == "keep me\n"


@root_only
def test_a_world_writable_directory_is_repaired_and_swept(claims: Path, tmp_path: Path) -> None:
    claims.mkdir()
    os.chmod(claims, 0o1777)  # what older versions made
    _plant(claims / str(PORT), f"{tmp_path}\nvictim\n", NOBODY, 7 * 86400)
    _plant(claims / "junk", "x", NOBODY, 0)
    _plant(claims / str(PORT + 5), f"{tmp_path / 'd'}\nkept\n", os.geteuid(), 0)
    assert ports.claim(PORT + 1, tmp_path / "d", "mine")
    st = os.lstat(claims)
    assert stat.S_IMODE(st.st_mode) & 0o022 == 0 and st.st_uid == os.geteuid()
    assert sorted(p.name for p in claims.iterdir()) == sorted([str(PORT + 1), str(PORT + 5)])


def test_a_configured_directory_that_is_a_symlink_is_refused(claims: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    claims.symlink_to(elsewhere)
    with pytest.raises(EngineError, match="symlink"):
        ports.claim(PORT, tmp_path / "d", "inst")
    assert list(elsewhere.iterdir()) == []


@root_only
def test_the_default_directory_of_someone_else_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULUMI_DBOS_PORTS_DIR", raising=False)
    default = tmp_path / "pulumi-dbos-ports"
    monkeypatch.setattr(ports, "DEFAULT_PORTS_DIR", str(default))
    default.mkdir(mode=0o777)
    os.chown(default, NOBODY, NOBODY)
    _plant(default / str(PORT), f"{tmp_path}\nvictim\n", NOBODY, 7 * 86400)
    assert ports.claim(PORT, tmp_path / "d", "inst")
    st = os.lstat(default)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755
    assert [p.name for p in default.iterdir()] == [str(PORT)]


def test_the_default_directory_is_per_user_unless_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULUMI_DBOS_PORTS_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert ports.ports_dir() == Path("/var/tmp/pulumi-dbos-ports")
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    assert ports.ports_dir() == Path("/var/tmp/pulumi-dbos-ports-1234")
    monkeypatch.setenv("PULUMI_DBOS_PORTS_DIR", "/somewhere/else")
    assert ports.ports_dir() == Path("/somewhere/else")
