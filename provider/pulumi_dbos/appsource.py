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
import shlex
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import ValidationError

EXCLUDED_DIRS = frozenset({".dbos", ".git", "venv", ".venv", "node_modules", "dist", "__pycache__"})
EXCLUDED_FILES = frozenset({".python-version"})
CONFIG = "dbos-config.yaml"
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


def unpack(data: bytes, dest: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not str(target).startswith(str(dest.resolve()) + "/"):
                raise ValidationError([("source", f"archive entry {info.filename!r} escapes the app directory")])
            if info.is_dir():  # zips made by other tools (the official CLI's JSZip) list directories too
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            target.chmod(0o755 if (info.external_attr >> 16) & 0o111 else 0o644)


@dataclass
class AppConfig:
    """What a deploy needs from dbos-config.yaml (DBOS Transact 3.x's keys)."""

    name: str
    language: str
    start: list[str]
    migrate: list[str] = field(default_factory=list)
    app_db_name: str | None = None


def read_config(root: Path, app_name: str | None = None) -> AppConfig:
    """Read and check ``root``'s dbos-config.yaml; every problem is reported with the file named."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    path = root / CONFIG
    if not root.is_dir():
        raise ValidationError([("source", f"source {root} is not a directory")])
    if not path.is_file():
        raise ValidationError([("source", f"source {root} has no {CONFIG} (an app directory needs one)")])
    try:
        doc: Any = YAML(typ="safe").load(path.read_text()) or {}
    except YAMLError:
        raise ValidationError([("source", f"{path}: YAML syntax error")]) from None
    if not isinstance(doc, dict):
        raise ValidationError([("source", f"{path}: the top level must be a mapping")])
    problems: list[tuple[str, str]] = []
    name = doc.get("name")
    if not isinstance(name, str) or not _APP_NAME.match(name):
        problems.append(("source", f"{path}: `name` must be an app name ([a-z0-9_]{{3,16}}), got {name!r}"))
    elif app_name is not None and name != app_name:
        problems.append(("app_name", f"app_name {app_name!r} differs from `name: {name}` in {path}; "
                         "they must match (DBOS Cloud deploys by the config's name)"))
    language = doc.get("language") or "python"
    runtime = doc.get("runtimeConfig") or {}
    start = runtime.get("start") if isinstance(runtime, dict) else None
    if not isinstance(start, list) or len(start) != 1 or not isinstance(start[0], str) or not shlex.split(start[0]):
        problems.append(("source", f"{path}: `runtimeConfig.start` must be a list of one command, got {start!r}"))
        start = []
    db = doc.get("database") or {}
    migrate = db.get("migrate") if isinstance(db, dict) else None
    if migrate is not None and (not isinstance(migrate, list) or not all(isinstance(m, str) for m in migrate)):
        problems.append(("source", f"{path}: `database.migrate` must be a list of commands"))
        migrate = None
    app_db_name = db.get("app_db_name") if isinstance(db, dict) else None
    if language == "python":
        req = root / "requirements.txt"
        pkgs = [re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
                for line in (req.read_text().splitlines() if req.is_file() else [])
                if line.strip() and not line.strip().startswith("#")]
        if "dbos" not in pkgs:
            problems.append(("source", f"{root}/requirements.txt must list `dbos` (DBOS Cloud refuses a Python "
                             "app without it)"))
    if problems:
        raise ValidationError(problems)
    return AppConfig(name=str(name), language=str(language), start=list(start), migrate=list(migrate or []),
                     app_db_name=app_db_name if isinstance(app_db_name, str) else None)
