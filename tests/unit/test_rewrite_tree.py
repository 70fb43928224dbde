"""``pool.rewrite_tree``: how a restore turns a warm-pool entry into a copy of a base backup, in place.

What must hold whatever the entry held: the result is the source, name for name and byte for byte,
with its permission bits; nothing outside the destination is written or removed, even through a
symlink planted in the destination; a source with anything but directories and files is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pulumi_dbos.engine.local.pool import NotPlainTree, rewrite_tree
from tests.support.trees import snapshot


def write(p: Path, data: bytes, mode: int = 0o600) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    p.chmod(mode)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "base"
    write(s / "PG_VERSION", b"15\n")
    write(s / "base" / "5" / "1259", os.urandom(3 * 8192))  # same name in the entry, other bytes
    write(s / "base" / "5" / "16384", os.urandom(8192))  # a user table: not in the entry
    write(s / "base" / "5" / "shrunk", b"x" * 10)  # the entry's is longer
    write(s / "global" / "pg_control", os.urandom(8192), 0o640)
    write(s / "was_a_dir", b"now a file")
    (s / "pg_tblspc").mkdir(mode=0o700)  # empty dir
    (s / "now_a_dir").mkdir(mode=0o750)
    write(s / "now_a_dir" / "f", b"inside")
    return s


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    d = tmp_path / "entry"
    write(d / "PG_VERSION", b"15\n")
    write(d / "base" / "5" / "1259", os.urandom(8192))
    write(d / "base" / "5" / "shrunk", b"y" * 100000)
    write(d / "base" / "1" / "112", os.urandom(8192))  # a whole database the base does not have
    write(d / "global" / "pg_control", os.urandom(8192))
    write(d / "only_in_entry", b"stale")
    (d / "was_a_dir").mkdir()
    write(d / "was_a_dir" / "inner", b"z")
    write(d / "now_a_dir", b"a file here")
    return d


def test_the_entry_becomes_the_source_exactly(src: Path, entry: Path) -> None:
    before_inode = os.stat(entry / "base" / "5" / "1259").st_ino
    rewrite_tree(src, entry, None, 0)
    assert snapshot(entry) == snapshot(src)
    assert os.stat(entry / "base" / "5" / "1259").st_ino == before_inode  # written in place, not made anew


def test_files_made_get_the_given_owner(src: Path, entry: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    rewrite_tree(src, entry, 65534, 65534)
    made = os.stat(entry / "base" / "5" / "16384")
    assert (made.st_uid, made.st_gid) == (65534, 65534)
    assert os.stat(entry / "now_a_dir").st_uid == 65534
    assert os.stat(entry / "PG_VERSION").st_uid == os.geteuid()  # an existing file keeps its owner


def test_a_symlink_in_the_entry_is_replaced_never_followed(src: Path, entry: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write(outside / "victim", b"keep me")
    write(outside / "d" / "keep", b"keep me too")
    (outside / "d").chmod(0o755)
    (entry / "PG_VERSION").unlink()
    (entry / "PG_VERSION").symlink_to(outside / "victim")  # a file the base has
    (entry / "global").rename(tmp_path / "old_global")
    (entry / "global").symlink_to(outside / "d")  # a directory the base has
    (entry / "planted").symlink_to(outside / "d")  # a name the base lacks: removed
    rewrite_tree(src, entry, None, 0)
    assert snapshot(entry) == snapshot(src)
    assert (outside / "victim").read_bytes() == b"keep me"
    assert snapshot(outside, owners=False) == {"victim": ("f", 0o600, -1, b"keep me"), "d": ("d", 0o755, -1, b""),
                                               "d/keep": ("f", 0o600, -1, b"keep me too")}


def test_a_source_with_a_symlink_is_refused(src: Path, entry: Path, tmp_path: Path) -> None:
    (src / "pg_tblspc" / "16400").symlink_to(tmp_path)  # a tablespace
    with pytest.raises(NotPlainTree, match="16400"):
        rewrite_tree(src, entry, None, 0)
