"""Issue 31, item 1: an app's environment names follow DBOS Cloud's rule, minus the loader's and interpreters'
variables, in the App resource (at preview) as in serve's secrets (``tests/security/test_environment.py``)."""

from __future__ import annotations

import pytest

from pulumi_dbos.config import AppSpec, input_model, validate
from pulumi_dbos.config.rules import check_env, env_name_problem

AppArgs = input_model(AppSpec)


@pytest.mark.parametrize("key", ["LD_PRELOAD", "LD_AUDIT", "LD_LIBRARY_PATH", "GCONV_PATH", "GLIBC_TUNABLES",
                                 "BASH_ENV", "ENV", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PATH", "HOME",
                                 "PORT", "DBOS_DATABASE_URL", "PGPASSFILE", "LC_CTYPE", "NODE_OPTIONS"])
def test_reserved_names_are_refused(key: str) -> None:
    assert env_name_problem(key) is not None
    with pytest.raises(ValueError, match="reserved"):
        check_env({key: "x"})


@pytest.mark.parametrize("key", ["a-b", "1X", "A B", "K=V", "", "é", "X" * 129])
def test_names_outside_the_rule_are_refused(key: str) -> None:
    assert env_name_problem(key) is not None


def test_ordinary_names_and_values() -> None:
    assert check_env({"STRIPE_KEY": "sk", "_private": "1", "Feature2": ""}) == {"STRIPE_KEY": "sk", "_private": "1",
                                                                                "Feature2": ""}
    with pytest.raises(ValueError, match="NUL"):
        check_env({"OK": "a\x00b"})


def test_the_app_resource_refuses_them_at_preview_without_echoing_the_value() -> None:
    problems = validate(AppArgs, {"instance_name": "prod_db", "app_name": "shop", "source": ".",
                                  "env": {"LD_PRELOAD": "/tmp/evil-value.so"}})
    env = [msg for path, msg in problems if path.startswith("env")]
    assert env and "LD_PRELOAD" in env[0] and "evil-value" not in " ".join(env)
