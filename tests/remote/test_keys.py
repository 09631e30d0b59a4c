"""Key lookup order, file format, and that the key shows in no message or repr."""
import logging
import os

import pytest

from face_migration.remote import KEY_FILENAME, ApiKeyError, find_api_key
from tests.remote.conftest import SECRET


def test_moark_variable_wins_over_gitee_variable_and_the_file(tmp_path):
    (tmp_path / KEY_FILENAME).write_text("FROMFILE")
    env = {"MOARK_API_KEY": "AAA", "GITEE_AI_API_KEY": "BBB"}
    assert find_api_key(tmp_path, environ=env).value == "AAA"
    assert find_api_key(tmp_path, environ={"GITEE_AI_API_KEY": " BBB\n"}).value == "BBB"
    key = find_api_key(tmp_path, environ={"MOARK_API_KEY": "  "})
    assert (key.value, key.source) == ("FROMFILE", f"key file {tmp_path / KEY_FILENAME}")


def test_an_explicit_key_file_wins_over_the_environment(tmp_path):
    path = tmp_path / "my.key"
    path.write_text("# MoArk token\n\nEXPLICIT\n")
    assert find_api_key(environ={"MOARK_API_KEY": "AAA"}, key_file=path).value == "EXPLICIT"


def test_no_key_names_every_place_looked_and_how_to_fix(tmp_path):
    with pytest.raises(ApiKeyError) as caught:
        find_api_key(tmp_path, environ={})
    text = str(caught.value)
    assert "MOARK_API_KEY" in text and "GITEE_AI_API_KEY" in text and str(tmp_path / KEY_FILENAME) in text
    assert "https://moark.ai" in text


def test_a_missing_explicit_key_file_is_an_error(tmp_path):
    with pytest.raises(ApiKeyError, match="does not exist"):
        find_api_key(environ={"MOARK_API_KEY": "AAA"}, key_file=tmp_path / "nope")


@pytest.mark.parametrize("content, problem", [
    (f"{SECRET}\nSECOND\n", "exactly one line"),
    ("", "exactly one line"),
    (f"Bearer {SECRET}", "without 'Bearer '"),
    (f"{SECRET[:10]} {SECRET[10:]}", "spaces, line breaks or non-ASCII"),
    (f"{SECRET}é", "spaces, line breaks or non-ASCII"),
])
def test_bad_key_files_are_explained_without_showing_the_key(tmp_path, content, problem):
    path = tmp_path / KEY_FILENAME
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ApiKeyError) as caught:
        find_api_key(tmp_path, environ={})
    assert problem in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET[10:] not in str(caught.value)


def test_a_binary_key_file_leaves_no_trace_of_its_bytes(tmp_path):
    path = tmp_path / KEY_FILENAME
    path.write_bytes(SECRET.encode() + b"\xff\xfe")
    with pytest.raises(ApiKeyError, match="is not UTF-8 text") as caught:
        find_api_key(tmp_path, environ={})
    assert caught.value.__context__ is None and caught.value.__cause__ is None


def test_the_key_is_hidden_in_repr_and_str(tmp_path):
    key = find_api_key(environ={"MOARK_API_KEY": SECRET})
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert SECRET not in text and "MOARK_API_KEY" in text
    assert key.redact(f"bad token {SECRET}.") == "bad token <API key>."


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_key_file_readable_by_others_gets_a_warning_without_the_key(tmp_path, caplog):
    path = tmp_path / KEY_FILENAME
    path.write_text(SECRET)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert find_api_key(tmp_path, environ={}).value == SECRET
    assert "chmod 600" in caplog.text and SECRET not in caplog.text
    caplog.clear()
    path.chmod(0o600)
    find_api_key(tmp_path, environ={})
    assert caplog.text == ""
