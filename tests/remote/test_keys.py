"""Key lookup order, file format, and that the key shows in no message or repr."""
import base64
import logging
import os
import urllib.parse

import pytest

from face_migration.remote import KEY_FILENAME, ApiKey, ApiKeyError, find_api_key
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


MIXED_CASE_KEY = "Fake-Test-Key+7Q2wx9ZK4m1P/8r3T6v0Y5b2N="  # '+', '/' and '=' change under percent-encoding


def echoes(secret: str) -> dict:
    """The key as a careless server might echo it back."""
    raw = secret.encode()
    return {
        "lower-cased": secret.lower(), "upper-cased": secret.upper(),
        "percent-encoded": urllib.parse.quote(secret, safe=""),
        "percent-encoded, lower-case hex": urllib.parse.quote(secret, safe="").lower(),
        "every byte percent-encoded": "".join(f"%{b:02X}" for b in raw),
        "form-encoded": urllib.parse.quote_plus(secret),
        "base64": base64.b64encode(raw).decode(),
        "base64 of the header": base64.b64encode(b"Authorization: Bearer " + raw).decode(),
        "base64 after one byte": base64.b64encode(b"k=" + raw + b"&x").decode(),
        "url-safe base64": base64.urlsafe_b64encode(b"!" + raw).decode().rstrip("="),
        "hex": raw.hex(), "upper-case hex": raw.hex().upper(),
    }


@pytest.mark.parametrize("secret", [SECRET, MIXED_CASE_KEY])
def test_redact_catches_the_key_in_every_obvious_encoding(secret):
    key = ApiKey(secret, "test")
    for form, echo in echoes(secret).items():
        text = key.redact(f'{{"detail": "{echo}"}}')
        assert echo not in text and "<API key>" in text, form
        assert text.startswith('{"detail": "') and text.endswith('"}'), form  # only the echo is replaced


def test_redact_leaves_ordinary_text_and_a_short_key_alone():
    assert ApiKey(SECRET, "test").redact("HTTP 500: internal error") == "HTTP 500: internal error"
    assert ApiKey("K1", "test").redact("OK K1 done, k1") == "OK <API key> done, <API key>"
