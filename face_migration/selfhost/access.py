"""Who may use the self-hosted route. The token comes from the environment or a file in ComfyUI's user
folder, never from a workflow. Without a token the route answers only when ComfyUI listens on this
machine alone; a ComfyUI reachable from other machines refuses every request until a token is set. Where the
core itself demands a Bearer token (WRAPPER_AUTH_TOKEN), that token is the route's too. Refusals tell the
client how the owner sets a token but never this server's paths (those go to the log)."""
from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from ..errors import ApiNotConfiguredError, ApiTokenError, ApiTokenFileError

TOKEN_ENV = "FACE_MIGRATION_API_TOKEN"
TOKEN_FILENAME = "face_migration_api_token.txt"
# Newer ComfyUI cores (middleware/wrapper_auth.py) demand 'Authorization: Bearer <this>' on every route when set.
CORE_TOKEN_ENV = "WRAPPER_AUTH_TOKEN"
# How the owner sets a token, without this server's paths: the same words as docs/self-hosting.md.
HOW_TO_SET_TOKEN = (f"its owner sets the environment variable {TOKEN_ENV} before starting ComfyUI, or writes the "
                    f"token alone into {TOKEN_FILENAME} in ComfyUI's user folder; clients send it as "
                    f"'Authorization: Bearer <token>'")


def configured_token(user_directory: str | os.PathLike, environ=os.environ) -> str | None:
    """The token from FACE_MIGRATION_API_TOKEN, else from ComfyUI/user/face_migration_api_token.txt
    (read on each request, so a new token applies without a restart); None when neither is set.
    A token file that cannot be read, or holds nothing but white space, refuses every request
    (ApiTokenFileError, 403): the owner meant to set a token, so the route must not fall back to none."""
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    path = Path(user_directory) / TOKEN_FILENAME
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        cause = "a folder" if path.is_dir() else f"unreadable ({type(exc).__name__}: {exc})"
        raise token_file_error(path, cause) from None
    if not token:
        raise token_file_error(path, "empty (white space at most)")
    return token


def token_file_error(path: Path, cause: str) -> ApiTokenFileError:
    return ApiTokenFileError(
        f"the API token file of this server cannot be used, so the face-migration route refuses every "
        f"request: its owner rewrites {TOKEN_FILENAME} in ComfyUI's user folder as a plain UTF-8 text file "
        f"holding the token alone, or sets {TOKEN_ENV} instead",
        detail=f"{path} is {cause}; write the token alone into it as UTF-8 text")


def core_token(environ=os.environ) -> str | None:
    """The token the core's own Bearer auth (WRAPPER_AUTH_TOKEN, newer cores) demands on every route, None when
    unset; the route's calls to its own server carry it."""
    return environ.get(CORE_TOKEN_ENV) or None


def route_token(user_directory: str | os.PathLike, environ=os.environ) -> str | None:
    """The token the route checks. A client sends one Authorization header, which the core's Bearer auth
    checks first when WRAPPER_AUTH_TOKEN is set: the route then takes that token as its own, and a different
    FACE_MIGRATION_API_TOKEN (or file) would refuse everyone, so it refuses with the fix instead (403)."""
    token, core = configured_token(user_directory, environ), core_token(environ)
    if core is not None and token is not None and not hmac.compare_digest(token.encode(), core.strip().encode()):
        raise ApiNotConfiguredError(
            f"this server's core asks every client for its {CORE_TOKEN_ENV} token and the face-migration route for a "
            f"different token, and a request carries one: its owner gives {TOKEN_ENV} (or {TOKEN_FILENAME}) the "
            f"value of {CORE_TOKEN_ENV}, or removes it",
            detail=f"{TOKEN_ENV} or {Path(user_directory) / TOKEN_FILENAME} differs from {CORE_TOKEN_ENV}")
    return token or (core.strip() if core else None)


def listens_beyond_loopback(listen: str) -> bool:
    """Whether ComfyUI's --listen value (comma-separated addresses) reaches past this machine.
    0.0.0.0, ::, a LAN address or a host name all do; only loopback addresses and 'localhost' do not."""
    for address in (listen or "").split(","):
        address = address.strip().strip("[]")
        if address == "localhost":
            continue
        try:
            if not ipaddress.ip_address(address).is_loopback:
                return True
        except ValueError:
            return True
    return False


def authorize(authorization: str | None, token: str | None, beyond_loopback: bool, user_directory) -> None:
    """Raise ApiTokenError (401) or ApiNotConfiguredError (403); return when the request may go on.
    The token and the received header are never part of a message or of the log's detail."""
    token_file = Path(user_directory) / TOKEN_FILENAME
    if token is None:
        if beyond_loopback:
            raise ApiNotConfiguredError(
                "this ComfyUI listens beyond this machine and has no API token, so the face-migration route "
                f"refuses every request: {HOW_TO_SET_TOKEN}",
                detail=f"no token set: set {TOKEN_ENV} or write the token into {token_file}")
        return
    scheme, _, sent = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
        sent_what = ("no Authorization header" if not (authorization or "").strip() else
                     "not a Bearer token" if scheme.lower() != "bearer" else "a wrong Bearer token")
        raise ApiTokenError("Authorization: missing or wrong Bearer token; send 'Authorization: Bearer <token>' "
                            "with the token this server's owner gave you",
                            detail=f"{sent_what} (the token comes from {TOKEN_ENV} or {token_file})")
