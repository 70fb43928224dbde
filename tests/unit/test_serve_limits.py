"""Serve's limits without a server: archive checks (central directory, real sizes, lying headers), bounded
unpacking, link allow-lists, and the flags/environment that set them."""

from __future__ import annotations

import argparse
import io
import ipaddress
import struct
import zipfile
from pathlib import Path

import pytest

from pulumi_dbos.appsource import ArchiveLimitError, check_archive, unpack
from pulumi_dbos.cli.serve import add_parsers, limits_of
from pulumi_dbos.errors import DbosError
from pulumi_dbos.serve.limits import MIB, Limits, link_allowed, parse_network


def make_zip(files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for d in dirs:
            zf.writestr(zipfile.ZipInfo(d), b"")
        for path, data in files.items():
            zf.writestr(path, data)
    return buf.getvalue()


def claim_size(archive: bytes, claimed: int) -> bytes:
    """Every central directory record's uncompressed size rewritten to ``claimed``."""
    data = bytearray(archive)
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        struct.pack_into("<I", data, pos + 24, claimed)
        pos = data.find(b"PK\x01\x02", pos + 4)
    return bytes(data)


def test_check_archive_limits_by_directory() -> None:
    archive = make_zip({"a.txt": b"a" * 1000, "b.txt": b"b" * 1000})
    assert check_archive(archive, max_total=2000, max_entries=2, max_entry=1000) == archive
    with pytest.raises(ArchiveLimitError, match="2 entries, more than the limit of 1") as e:
        check_archive(archive, max_entries=1)
    assert e.value.limit == "entries"
    with pytest.raises(ArchiveLimitError, match="'a.txt' unpacks to 1000 bytes") as e:
        check_archive(archive, max_entry=999)
    assert e.value.limit == "entry"
    with pytest.raises(ArchiveLimitError, match="unpacks to 2000 bytes, more than the limit of 1999 bytes") as e:
        check_archive(archive, max_total=1999)
    assert e.value.limit == "total"


def test_lying_sizes_are_caught_while_reading(tmp_path: Path) -> None:
    """A central directory claiming less than the data holds passes the directory check, but reading never
    yields more than it claims: zipfile stops there and the checksum disagrees (the running count is the
    backstop should a reader ever trust the data over the directory)."""
    archive = claim_size(make_zip({"a.txt": b"a" * 5000}), 100)
    with pytest.raises(zipfile.BadZipFile):  # zipfile reads no more than claimed, then the CRC disagrees
        check_archive(archive, max_entry=200)
    with pytest.raises(zipfile.BadZipFile):
        unpack(archive, tmp_path, max_entry=200)


def test_drop_directories_keeps_the_files() -> None:
    archive = make_zip({"sub/a.py": b"print(1)\n", "dbos-config.yaml": b"name: x\n"}, dirs=("sub/",))
    out = check_archive(archive, drop_directories=True)
    with zipfile.ZipFile(io.BytesIO(out)) as zf:
        assert sorted(zf.namelist()) == ["dbos-config.yaml", "sub/a.py"]
        assert zf.read("sub/a.py") == b"print(1)\n"
    plain = make_zip({"a": b"1"})
    assert check_archive(plain, drop_directories=True) is plain


def test_unpack_streams_within_limits(tmp_path: Path) -> None:
    archive = make_zip({"x/a.bin": bytes(3 * MIB), "b.txt": b"hi"})
    unpack(archive, tmp_path / "ok")
    assert (tmp_path / "ok" / "x" / "a.bin").stat().st_size == 3 * MIB
    with pytest.raises(ArchiveLimitError, match="for one file"):
        unpack(archive, tmp_path / "no", max_entry=2 * MIB)


def test_link_allowed() -> None:
    nets = (ipaddress.ip_network("127.0.0.0/8"),)
    assert link_allowed("anything.invalid", 5432, ())  # no list: no restriction (and no lookup)
    assert link_allowed("127.0.0.1", 5432, nets)
    assert not link_allowed("10.0.0.1", 5432, nets)
    assert not link_allowed("::1", 5432, nets)
    assert not link_allowed("0.0.0.0", 5432, nets)
    assert not link_allowed("no-such-host.invalid", 5432, nets)
    assert link_allowed("::ffff:127.0.0.1", 5432, nets)  # an IPv4-mapped address is its IPv4 one
    with pytest.raises(DbosError, match="not a network"):
        parse_network("10.0.0.0/33")


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_parsers(p.add_subparsers())
    return p.parse_args(["serve", *argv])


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert limits_of(parse([])) == Limits()
    monkeypatch.setenv("PULUMI_DBOS_SERVE_MAX_INSTANCES", "3")
    monkeypatch.setenv("PULUMI_DBOS_SERVE_MAX_BODY_MIB", "2")
    monkeypatch.setenv("PULUMI_DBOS_SERVE_LINK_ALLOW", "10.0.0.0/8, 192.168.0.0/16")
    lim = limits_of(parse(["--max-instances", "5", "--org-concurrency", "2"]))
    assert (lim.max_instances, lim.max_body, lim.org_concurrency, lim.org_reads) == (5, 2 * MIB, 2, 4)
    assert [str(n) for n in lim.link_allow] == ["10.0.0.0/8", "192.168.0.0/16"]
    lim = limits_of(parse(["--link-allow", "127.0.0.1"]))
    assert [str(n) for n in lim.link_allow] == ["127.0.0.1/32"]
    monkeypatch.setenv("PULUMI_DBOS_SERVE_MAX_APPS", "many")
    with pytest.raises(DbosError, match="PULUMI_DBOS_SERVE_MAX_APPS must be an integer"):
        limits_of(parse([]))
    with pytest.raises(DbosError, match="--max-instances must be at least 1"):
        Limits(max_instances=0)


@pytest.mark.parametrize("names", [["x", "x/inner.txt"], ["x/inner.txt", "x"], ["d/", "d"]])
def test_clashing_entry_names_are_refused_naming_the_entry(tmp_path: Path, names: list[str]) -> None:
    """Issue 31: one name both a file and a directory (`x` then `x/inner.txt`) was a FileExistsError, so a 500
    from serve; it is a validation error naming the entry (serve answers 400)."""
    from pulumi_dbos.errors import ValidationError

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n in names:
            zf.writestr(n, b"" if n.endswith("/") else b"data")
    with pytest.raises(ValidationError, match="clashes with another entry"):
        unpack(buf.getvalue(), tmp_path / "out")
