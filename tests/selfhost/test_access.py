"""Token rules of the self-hosted route."""
import os
import sys

import pytest

from face_migration.errors import ApiNotConfiguredError, ApiTokenError, ApiTokenFileError
from face_migration.selfhost.access import (CORE_TOKEN_ENV, TOKEN_ENV, TOKEN_FILENAME, authorize,
                                            configured_token, core_token, listens_beyond_loopback, route_token)

TOKEN = "selfhost-test-token-3k9q-7m2x-5v8c"


def test_token_from_the_environment_first_then_the_user_file(tmp_path):
    assert configured_token(tmp_path, environ={}) is None
    (tmp_path / TOKEN_FILENAME).write_text(f"  {TOKEN}\n")
    assert configured_token(tmp_path, environ={}) == TOKEN
    assert configured_token(tmp_path, environ={TOKEN_ENV: " other "}) == "other"


@pytest.mark.parametrize("listen, beyond", [
    ("127.0.0.1", False), ("localhost", False), ("::1", False), ("127.0.0.1,::1", False), ("[::1]", False),
    ("0.0.0.0", True), ("0.0.0.0,::", True), ("192.168.1.20", True), ("127.0.0.1,10.0.0.5", True),
    ("myhost.lan", True),
])
def test_what_counts_as_beyond_loopback(listen, beyond):
    assert listens_beyond_loopback(listen) is beyond


def test_no_token_on_loopback_lets_everyone_in(tmp_path):
    authorize(None, None, False, tmp_path)
    authorize("Bearer anything", None, False, tmp_path)


def test_no_token_beyond_loopback_refuses_and_says_how_to_set_one(tmp_path):
    with pytest.raises(ApiNotConfiguredError) as caught:
        authorize("Bearer anything", None, True, tmp_path)
    assert caught.value.status == 403
    assert TOKEN_ENV in str(caught.value) and TOKEN_FILENAME in str(caught.value)
    assert str(tmp_path) not in str(caught.value), "a server path in a body sent to anyone"
    assert str(tmp_path / TOKEN_FILENAME) in caught.value.detail  # the log says where


@pytest.mark.parametrize("header", [None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ",
                                    f"Bearer {TOKEN[:-1]}"])
def test_a_missing_or_wrong_token_is_a_401_that_never_shows_the_token(tmp_path, header):
    for beyond in (False, True):
        with pytest.raises(ApiTokenError) as caught:
            authorize(header, TOKEN, beyond, tmp_path)
        assert caught.value.status == 401
        assert TOKEN[:-1] not in str(caught.value)  # neither the token nor what was sent
        assert TOKEN[:-1] not in caught.value.detail  # nor in the log
        assert str(tmp_path) not in str(caught.value) and str(tmp_path) in caught.value.detail


def empty(path):
    path.write_text("")


def white_space(path):
    path.write_text(" \n\t\n")


def not_utf8(path):
    path.write_bytes(b"\xff\xfe token in UTF-16 \x00")


def a_folder(path):
    path.mkdir()


def unreadable(path):
    path.write_text(TOKEN)
    path.chmod(0)


@pytest.mark.parametrize("make", [empty, white_space, not_utf8, a_folder, pytest.param(unreadable, marks=pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root reads any file; POSIX modes"))])
def test_a_token_file_that_cannot_be_read_or_is_blank_refuses_every_request_naming_the_fix(tmp_path, make):
    make(tmp_path / TOKEN_FILENAME)
    with pytest.raises(ApiTokenFileError) as caught:
        configured_token(tmp_path, environ={})
    assert caught.value.status == 403
    message = str(caught.value)
    assert TOKEN_FILENAME in message and "UTF-8" in message and TOKEN_ENV in message
    assert str(tmp_path) not in message and str(tmp_path / TOKEN_FILENAME) in caught.value.detail
    assert configured_token(tmp_path, environ={TOKEN_ENV: TOKEN}) == TOKEN  # the environment still wins


def test_the_right_token_passes(tmp_path):
    for header in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"  Bearer   {TOKEN} "):
        authorize(header, TOKEN, True, tmp_path)


def test_the_cores_bearer_token_is_the_routes_when_the_route_has_none(tmp_path):
    core = {CORE_TOKEN_ENV: TOKEN}
    assert core_token({}) is None and core_token({CORE_TOKEN_ENV: ""}) is None and core_token(core) == TOKEN
    assert route_token(tmp_path, environ={}) is None
    assert route_token(tmp_path, environ=core) == TOKEN
    assert route_token(tmp_path, environ={**core, TOKEN_ENV: TOKEN}) == TOKEN  # the same token twice is fine
    (tmp_path / TOKEN_FILENAME).write_text(TOKEN)
    assert route_token(tmp_path, environ=core) == TOKEN


def test_a_route_token_other_than_the_cores_refuses_every_request_naming_the_fix(tmp_path):
    """One Authorization header cannot carry two tokens: with both set and different, no request could pass."""
    with pytest.raises(ApiNotConfiguredError) as caught:
        route_token(tmp_path, environ={CORE_TOKEN_ENV: TOKEN, TOKEN_ENV: "other-token"})
    message = str(caught.value)
    assert caught.value.status == 403 and CORE_TOKEN_ENV in message and TOKEN_ENV in message
    assert TOKEN not in message and "other-token" not in message and TOKEN not in caught.value.detail
    (tmp_path / TOKEN_FILENAME).write_text("file-token")
    with pytest.raises(ApiNotConfiguredError):
        route_token(tmp_path, environ={CORE_TOKEN_ENV: TOKEN})
