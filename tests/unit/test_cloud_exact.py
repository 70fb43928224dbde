"""The pieces of the DBOS Cloud path without extensions that need no server: the app database asked for
through the uploaded config, and the version numbers of ``serve --cloud-exact``."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from pulumi_dbos.appsource import pack, with_app_db_name
from pulumi_dbos.dbos_config import CONFIG
from pulumi_dbos.serve.exact import next_version


def config_of(archive: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        return zf.read(CONFIG).decode()


def test_the_app_database_is_asked_for_in_the_uploaded_config(tmp_path: Path) -> None:
    (tmp_path / CONFIG).write_text("# keep me\nname: shop\nlanguage: python\ndatabase:\n  migrate:\n"
                                   "    - alembic upgrade head\n")
    (tmp_path / "main.py").write_text("print('hi')\n")
    _, archive = pack(tmp_path)
    changed = with_app_db_name(archive, "shop_db")
    text = config_of(changed)
    assert "# keep me" in text and "app_db_name: shop_db" in text and "alembic upgrade head" in text
    with zipfile.ZipFile(io.BytesIO(changed)) as zf, zipfile.ZipFile(io.BytesIO(archive)) as orig:
        assert zf.namelist() == orig.namelist() and zf.read("main.py") == orig.read("main.py")
    assert with_app_db_name(changed, "shop_db") == changed  # said already: unchanged


def test_numbers_are_never_given_twice() -> None:
    assert next_version(None, []) == "1"
    assert next_version({"LastVersion": 2}, ["1", "2"]) == "3"
    assert next_version({"LastVersion": 12}, ["11", "12"]) == "13"
    assert next_version({"LastVersion": 12}, []) == "13"  # the stored ones pruned
    assert next_version(None, ["abc123", "4"]) == "5"
