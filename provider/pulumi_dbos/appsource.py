"""An app's source directory as DBOS Cloud sees it: its deploy archive, version id and config checks.

The archive is what ``dbos-cloud app deploy`` uploads: a zip of the directory without ``.dbos/``,
``.git/``, ``venv/``, ``.venv/``, ``node_modules/``, ``dist/``, ``.python-version``, nested
``dbos-config.yaml`` files and the patterns of ``.dbosignore``; the config file sits at the root.
It is built deterministically (sorted entries, fixed timestamps), so the **version id** — a digest
of the archive — changes exactly when the deployed content does: an unchanged directory never
shows a diff. Nothing here imports pulumi.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from .dbos_config import CONFIG, edit
from .errors import ValidationError

EXCLUDED_DIRS = frozenset({".dbos", ".git", "venv", ".venv", "node_modules", "dist", "__pycache__"})
EXCLUDED_FILES = frozenset({".python-version"})
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_APP_NAME = re.compile(r"^[a-z0-9_]{3,16}$")


def _ignore_patterns(root: Path) -> list[str]:
    f = root / ".dbosignore"
    if not f.is_file():
        return []
    return [line.strip() for line in f.read_text().splitlines() if line.strip() and not line.strip().startswith("#")]


def _ignored(rel: PurePosixPath, is_dir: bool, patterns: list[str]) -> bool:
    text = str(rel)
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        pat = pattern.rstrip("/").lstrip("/")
        if dir_only and not is_dir:
            # a file inside an ignored directory is ignored with it (its parents are checked on the walk)
            continue
        if fnmatch.fnmatch(text, pat) or fnmatch.fnmatch(rel.name, pat):
            return True
    return False


def files(root: Path) -> list[PurePosixPath]:
    """The relative paths the archive holds (config included), sorted."""
    patterns = _ignore_patterns(root)
    out: list[PurePosixPath] = []

    def walk(d: Path) -> None:
        for p in sorted(d.iterdir()):
            rel = PurePosixPath(p.relative_to(root).as_posix())
            if p.is_dir() and not p.is_symlink():
                if p.name not in EXCLUDED_DIRS and not _ignored(rel, True, patterns):
                    walk(p)
            elif p.is_file():
                nested_config = p.name == CONFIG and p.parent != root
                if p.name not in EXCLUDED_FILES and not nested_config and not _ignored(rel, False, patterns):
                    out.append(rel)

    walk(root)
    return out


def pack(root: Path) -> tuple[str, bytes]:
    """(version id, zip bytes) of the app directory ``root``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in files(root):
            p = root / rel
            info = zipfile.ZipInfo(str(rel), date_time=_ZIP_TIME)
            info.external_attr = ((0o100755 if p.stat().st_mode & 0o111 else 0o100644) & 0xFFFF) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, p.read_bytes())
    data = buf.getvalue()
    return hashlib.sha256(data).hexdigest()[:12], data


def with_app_db_name(archive: bytes, app_db_name: str) -> bytes:
    """``archive`` with ``database.app_db_name: <app_db_name>`` in its root dbos-config.yaml (comments and the
    other keys kept): DBOS Cloud learns an app's database only from the uploaded config, so this is how a
    deploy there asks for one the app's directory does not name. Unchanged when the config says it already."""
    try:
        src = zipfile.ZipFile(io.BytesIO(archive))
        text_in = src.read(CONFIG).decode()
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError):
        return archive  # not an app archive: the server says so
    with src:
        text = edit(text_in, app_db_name=app_db_name)
        if text is None:
            return archive
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
            for info in src.infolist():
                out.writestr(info, text.encode() if info.filename == CONFIG else src.read(info))
    return buf.getvalue()


def staged_copy(root: Path, dest: Path, *, name: str, app_db_name: str) -> Path:
    """``dest`` made a copy of app directory ``root`` as deployed (the archive's files), its config naming the
    app ``name`` and its database ``app_db_name``: the same code deployed under another name (DBOS deploys by
    the config's name), e.g. a pull request's preview beside the app it copies. Files are rewritten only when
    their content differs, so an unchanged ``root`` keeps its copy's version id."""
    wanted = {rel: (root / rel).read_bytes() for rel in files(root)}
    config = wanted.get(PurePosixPath(CONFIG))
    if config is not None:
        edited = edit(config.decode(), name=name, app_db_name=app_db_name)
        if edited is not None:
            wanted[PurePosixPath(CONFIG)] = edited.encode()
    dest.mkdir(parents=True, exist_ok=True)
    for rel in files(dest):
        if rel not in wanted:
            (dest / rel).unlink()
    for rel, data in wanted.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.is_file() or target.read_bytes() != data:
            target.write_bytes(data)
        target.chmod(0o755 if (root / rel).stat().st_mode & 0o111 else 0o644)
    return dest


MIB = 1024 * 1024
#: :func:`unpack`'s limits unless told otherwise (``pulumi-dbos serve`` checks its own first, usually lower)
MAX_UNPACKED = 1024 * MIB
MAX_ENTRIES = 50_000
MAX_ENTRY = 512 * MIB
_CHUNK = 1024 * 1024


class ArchiveLimitError(ValidationError):
    """An archive over one of the limits; ``limit`` says which: ``total``, ``entries`` or ``entry``."""

    def __init__(self, limit: str, message: str) -> None:
        self.limit = limit
        super().__init__([("application_archive", message)])


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB and n % MIB == 0 else f"{n} bytes"


class _Budget:
    """The bytes and entries an archive may still unpack to; the counts are of what is really decompressed
    (a zip's declared sizes can lie)."""

    def __init__(self, max_total: int, max_entries: int, max_entry: int) -> None:
        self.max_total, self.max_entries, self.max_entry = max_total, max_entries, max_entry
        self.total = 0

    def check_directory(self, infos: list[zipfile.ZipInfo]) -> None:
        """The central directory's word, before anything is decompressed."""
        if len(infos) > self.max_entries:
            raise ArchiveLimitError("entries", f"the archive holds {len(infos)} entries, more than the limit of "
                                    f"{self.max_entries}")
        for info in infos:
            if info.file_size > self.max_entry:
                raise ArchiveLimitError("entry", f"archive entry {info.filename!r} unpacks to {_size(info.file_size)}, "
                                        f"more than the limit of {_size(self.max_entry)} for one file")
        declared = sum(i.file_size for i in infos)
        if declared > self.max_total:
            raise ArchiveLimitError("total", f"the archive unpacks to {_size(declared)}, more than the limit of "
                                    f"{_size(self.max_total)}")

    def copy(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: IO[bytes] | None) -> None:
        """Decompress ``info`` into ``out`` (or nowhere), counting; stop at the first byte over a limit."""
        entry = 0
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                entry += len(chunk)
                self.total += len(chunk)
                if entry > self.max_entry:
                    raise ArchiveLimitError("entry", f"archive entry {info.filename!r} unpacks to more than the "
                                            f"limit of {_size(self.max_entry)} for one file")
                if self.total > self.max_total:
                    raise ArchiveLimitError("total", f"the archive unpacks to more than the limit of "
                                            f"{_size(self.max_total)}")
                if out is not None:
                    out.write(chunk)


def check_archive(data: bytes, *, max_total: int = MAX_UNPACKED, max_entries: int = MAX_ENTRIES,
                  max_entry: int = MAX_ENTRY, drop_directories: bool = False) -> bytes:
    """Check that the zip ``data`` stays within the limits, by its central directory and by decompressing every
    entry (nothing is written anywhere; memory stays at one chunk). Returns ``data``, or with
    ``drop_directories`` and directory entries present, the same archive without them (rebuilt in memory,
    compressed). Raises :class:`ArchiveLimitError` naming the limit, ``zipfile.BadZipFile`` when unreadable."""
    budget = _Budget(max_total, max_entries, max_entry)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        budget.check_directory(infos)
        if not (drop_directories and any(i.is_dir() for i in infos)):
            for info in infos:
                budget.copy(zf, info, None)
            return data
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
            for info in infos:
                if info.is_dir():
                    continue
                entry = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                entry.external_attr = info.external_attr
                entry.compress_type = zipfile.ZIP_DEFLATED
                entry.file_size = info.file_size  # a hint for zip64 only: the real size is what is written
                with out.open(entry, "w") as dst:
                    budget.copy(zf, info, dst)
        return buf.getvalue()


def unpack(data: bytes, dest: Path, *, max_total: int = MAX_UNPACKED, max_entries: int = MAX_ENTRIES,
           max_entry: int = MAX_ENTRY) -> None:
    """Unpack the zip ``data`` into ``dest``, streamed (one chunk in memory), within the limits (raises
    :class:`ArchiveLimitError`; what was written so far stays, ``dest`` is the caller's to remove)."""
    budget = _Budget(max_total, max_entries, max_entry)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        budget.check_directory(infos)
        for info in infos:
            target = (dest / info.filename).resolve()
            if not str(target).startswith(str(dest.resolve()) + "/"):
                raise ValidationError([("source", f"archive entry {info.filename!r} escapes the app directory")])
            try:
                if info.is_dir():  # zips made by other tools (the official CLI's JSZip) list directories too
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as out:
                    budget.copy(zf, info, out)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                # `x` and `x/inner.txt`, or `x/` and `x`: one name both a file and a directory
                raise ValidationError([("source", f"archive entry {info.filename!r} clashes with another entry of "
                                        "the archive (one name used for a file and a directory)")]) from None
            target.chmod(0o755 if (info.external_attr >> 16) & 0o111 else 0o644)
