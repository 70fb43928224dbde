"""A directory tree as data, to compare two trees (names, kinds, permission bits, owners, bytes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: relative path -> (kind ``d``/``f``/``l``, permission bits, uid, bytes of a file)
Snapshot = dict[str, tuple[str, int, int, bytes]]


def snapshot(root: Path, *, owners: bool = True) -> Snapshot:
    out: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = os.lstat(p)
            kind = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "f"
            out[str(p.relative_to(root))] = (kind, stat.S_IMODE(st.st_mode), st.st_uid if owners else -1,
                                             p.read_bytes() if kind == "f" else b"")
    return out
