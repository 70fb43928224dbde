"""dbos-config.yaml has one reader with one set of checks (issue 30: a deploy's and an AppDatabase's readers
once checked different things: `database.app_db_name: Bad-Name` passed a deploy's and failed the other's)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from pulumi_dbos import dbos_config
from pulumi_dbos.errors import ValidationError

pytestmark = pytest.mark.unit
START = "name: shop\nlanguage: python\nruntimeConfig:\n  start:\n    - python3 main.py\n"


def _app(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "dbos-config.yaml").write_text(START + extra)
    (tmp_path / "requirements.txt").write_text("dbos==3.4.0\n")
    return tmp_path


@pytest.mark.parametrize(("extra", "words"), [
    ("database:\n  app_db_name: Bad-Name\n", "key 'database.app_db_name' must be a database name"),
    ("database:\n  migrate: alembic upgrade head\n", "key 'database.migrate' must be a list of commands"),
    ("database: [1]\n", "key 'database' must be a mapping"),
])
def test_both_readers_refuse_the_same_sections_with_the_same_words(tmp_path: Path, extra: str, words: str) -> None:
    root = _app(tmp_path, extra)
    with pytest.raises(ValidationError) as deploy:
        dbos_config.read_app(root)
    with pytest.raises(ValidationError) as binding:
        dbos_config.read_binding(root / "dbos-config.yaml")
    assert any(words in m for _f, m in deploy.value.problems), deploy.value.problems
    assert any(words in m for _f, m in binding.value.problems), binding.value.problems
    assert {f for f, _m in deploy.value.problems} == {"source"}
    assert {f for f, _m in binding.value.problems} == {"dbos_config"}


def test_a_yaml_error_names_the_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "dbos-config.yaml").write_text("name: shop\n  bad: [\n")
    with pytest.raises(ValidationError) as exc:
        dbos_config.read_binding(tmp_path / "dbos-config.yaml")
    assert "dbos-config.yaml: YAML syntax error at line" in exc.value.problems[0][1]


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.mark.parametrize(("archive", "words"), [
    (b"not a zip", "is not a zip archive"),
    (_zip({"main.py": b""}), "has no dbos-config.yaml at its root"),
    (_zip({"dbos-config.yaml": b"- a list\n"}), "the top level must be a mapping"),
    (_zip({"dbos-config.yaml": b"name: [\n"}), "YAML syntax error"),
])
def test_an_uploaded_archive_s_config_problems(archive: bytes, words: str) -> None:
    with pytest.raises(ValidationError) as exc:
        dbos_config.from_archive(archive)
    assert words in exc.value.problems[0][1]


def test_edit_and_read_agree(tmp_path: Path) -> None:
    text = dbos_config.edit("# keep\n" + START, name="shop_pr3", app_db_name="shop")
    assert text is not None and text.startswith("# keep")
    root = _app(tmp_path, "")
    (root / "dbos-config.yaml").write_text(text)
    cfg = dbos_config.read_app(root, "shop_pr3")
    assert cfg.app_db_name == "shop" and cfg.start == ["python3 main.py"]
    assert dbos_config.edit(text, name="shop_pr3", app_db_name="shop") is None
