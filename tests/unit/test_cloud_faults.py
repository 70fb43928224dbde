"""Faults of the dbos-cloud engine's mutations (issue 19). A create whose POST got no answer (5xx, dropped connection) removes only what is provably its own
(issue 19): the name may have been made meanwhile by another stack. On serve the instance's ``Owner``
proves it; DBOS Cloud records no owner, so there it is left alone and the error says so. A token refused
after an accepted deploy: the error says the deploy went through and how the state converges."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from pulumi_dbos.errors import DbosError
from tests.unit.test_cloud_client import PW, FakeCloud, api_error, db, deploy_req, engine_for

MINE = "proj/stack/aaa#111111111111"
THEIRS = "other/stack/aaa#222222222222"


def made_then_500(cloud: FakeCloud, owner: str | None) -> Callable[[httpx.Request], httpx.Response | None]:
    """The POST makes the instance (``owner``'s), then the answer is lost: a 500."""
    def hook(request: httpx.Request) -> httpx.Response | None:
        if request.method == "POST" and request.url.path.endswith("/databases/userdb") and "aaa" not in cloud.dbs:
            cloud.dbs["aaa"] = db("aaa", Owner=owner)
            return api_error(500, "upstream connection reset")
        return None
    return hook


@pytest.mark.parametrize("serve", [True, False])
def test_someone_elses_instance_of_that_name_is_left_alone(serve: bool) -> None:
    cloud = FakeCloud(serve=serve)
    cloud.hooks.append(made_then_500(cloud, THEIRS if serve else None))
    eng = engine_for(cloud)
    with pytest.raises(DbosError) as exc:
        eng.provision("aaa", "dbuser", PW, owner=MINE)
    assert cloud.count("DELETE", "/aaa") == 0 and "aaa" in cloud.dbs
    assert "left alone" in exc.value.message
    assert ("other/stack/aaa" in exc.value.message) if serve else ("records no owner" in exc.value.message)


def test_an_instance_provably_ours_is_rolled_back_on_serve() -> None:
    cloud = FakeCloud(serve=True)
    cloud.hooks.append(made_then_500(cloud, MINE))
    eng = engine_for(cloud)
    with pytest.raises(DbosError, match="rolled back"):
        eng.provision("aaa", "dbuser", PW, owner=MINE)
    assert cloud.count("DELETE", "/aaa") == 1 and "aaa" not in cloud.dbs


def test_a_token_refused_after_an_accepted_deploy_says_what_was_done_and_how_to_converge() -> None:
    """The deploy POST was accepted; the token expires before the wait's next read: the error says the
    version was deployed and that `pulumi refresh` with a fresh token brings the state up to date."""
    cloud = FakeCloud(serve=True)
    cloud.dbs["mydb"] = db("mydb")
    expired: list[bool] = []

    def expire_after_deploy(request: httpx.Request) -> httpx.Response | None:
        if expired:
            return api_error(401, "token expired")
        if request.method == "POST" and request.url.path.endswith("/applications/myapp"):
            expired.append(True)
            return cloud.route("POST", request.url.path.split("/")[2:], json.loads(request.content or b"null"))
        return None

    cloud.hooks.append(expire_after_deploy)
    eng = engine_for(cloud)
    with pytest.raises(DbosError) as exc:
        eng.apps.deploy(deploy_req("v1", b"zip-1"))
    assert "was deployed" in exc.value.message and "token expired" in exc.value.message.lower()
    assert exc.value.hint is not None and "pulumi refresh" in exc.value.hint and "fresh token" in exc.value.hint
