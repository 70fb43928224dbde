"""serve's tokens: a token signed with another data dir's key says what to do (issue 20, reproduction 4)."""

from __future__ import annotations

import pytest

from pulumi_dbos.serve import auth


def test_a_token_of_another_data_dirs_key_names_the_data_dir() -> None:
    token = auth.issue(b"a" * 32, "acme", "alice", ttl_hours=1)
    with pytest.raises(auth.AuthError) as err:
        auth.verify(b"b" * 32, token)
    assert "--data-dir" in err.value.message and "InvalidSignatureError" in err.value.message
    assert token not in str(err.value)


def test_a_token_of_this_key_is_accepted() -> None:
    claims = auth.verify(b"a" * 32, auth.issue(b"a" * 32, "acme", "alice", ttl_hours=1))
    assert (claims.org, claims.user) == ("acme", "alice")
