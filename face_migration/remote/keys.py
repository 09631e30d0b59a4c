"""Where the API key comes from. It is never a node input (workflows and PNG metadata would carry it)
and never printed: `ApiKey` hides its value from repr/str, and `redact` scrubs it from any text that
reaches a message."""
from __future__ import annotations

import base64
import functools
import logging
import os
import re
import stat
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ApiKeyError

logger = logging.getLogger(__name__)

ENV_VARS = ("MOARK_API_KEY", "GITEE_AI_API_KEY")
KEY_FILENAME = "moark_api_key.txt"  # in ComfyUI's user directory (ComfyUI/user/), outside every per-user folder
REDACTED = "<API key>"
MIN_BASE64_FRAGMENT = 8
KEY_HELP = (f"Create a token at https://moark.ai (or https://ai.gitee.com/serverless-api), then set the "
            f"environment variable {ENV_VARS[0]} before starting ComfyUI, or save the token alone in "
            f"ComfyUI/user/{KEY_FILENAME}.")


@dataclass(frozen=True)
class ApiKey:
    value: str = field(repr=False)
    source: str  # e.g. "environment variable MOARK_API_KEY", for messages

    def __repr__(self):
        return f"ApiKey(from {self.source}, value hidden)"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """`text` with the key replaced by '<API key>', also where a server echoed it back changed in
        letter case, percent-encoded, base64- or hex-encoded."""
        return _echo_pattern(self.value).sub(REDACTED, text) if text else text


@functools.lru_cache(maxsize=8)
def _echo_pattern(value: str) -> re.Pattern:
    raw = value.encode()
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value), raw.hex(),
             "".join(f"%{byte:02x}" for byte in raw)}
    # In base64 the key's characters depend on where it starts in the encoded text (3 byte phases);
    # keep, for each phase, only the characters made of the key's own bits.
    for phase in range(3):
        encoded = base64.b64encode(bytes(phase) + raw).decode()
        start, end = -(-8 * phase // 6), 8 * (phase + len(raw)) // 6
        fragment = encoded[start:end]
        if len(fragment) >= MIN_BASE64_FRAGMENT:  # shorter runs would match innocent text
            forms.update({fragment, fragment.translate(str.maketrans("+/", "-_"))})
    # Longest first, so a form that contains another is replaced whole.
    alternatives = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
    return re.compile(alternatives, re.IGNORECASE)


def find_api_key(user_dir: str | os.PathLike | None = None, key_file: str | os.PathLike | None = None,
                 environ=None) -> ApiKey:
    """The key from `key_file` if given, else MOARK_API_KEY, else GITEE_AI_API_KEY, else
    `<user_dir>/moark_api_key.txt`. Raises ApiKeyError naming every place it looked."""
    environ = os.environ if environ is None else environ
    if key_file is not None:
        return _read_key_file(Path(key_file), required=True)
    for name in ENV_VARS:
        value = environ.get(name, "").strip()
        if value:
            return _checked(value, f"environment variable {name}")
    looked = [f"environment variables {' and '.join(ENV_VARS)}"]
    if user_dir is not None:
        path = Path(user_dir) / KEY_FILENAME
        key = _read_key_file(path, required=False)
        if key is not None:
            return key
        looked.append(str(path))
    raise ApiKeyError(f"No MoArk / Gitee AI API key found (looked in {'; '.join(looked)}). {KEY_HELP}")


def _read_key_file(path: Path, required: bool) -> ApiKey | None:
    source = f"key file {path}"
    text = failure = None
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        if not required:
            return None
        failure = "does not exist"
    except UnicodeDecodeError:  # its exception holds the file's bytes, key included: never chain it
        failure = "is not UTF-8 text"
    except OSError as exc:
        failure = f"cannot be read ({exc.strerror or type(exc).__name__})"
    if failure:
        raise ApiKeyError(f"The {source} {failure}. It should be a UTF-8 text file holding only the API token.")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(lines) != 1:
        raise ApiKeyError(f"The {source} should hold exactly one line, the API token (lines starting with # "
                          f"are ignored); it holds {len(lines)}.")
    _warn_if_readable_by_others(path)
    return _checked(lines[0], source)


def _checked(value: str, source: str) -> ApiKey:
    # The key goes into an HTTP header: anything outside visible ASCII would break or inject headers.
    if not all(33 <= ord(c) <= 126 for c in value):
        raise ApiKeyError(f"The API key from {source} contains spaces, line breaks or non-ASCII characters. "
                          f"It should be the token exactly as the website shows it, without 'Bearer '.")
    return ApiKey(value, source)


def _warn_if_readable_by_others(path: Path) -> None:
    if os.name != "posix":
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning("The API key file %s is readable by other users; run: chmod 600 '%s'", path, path)
