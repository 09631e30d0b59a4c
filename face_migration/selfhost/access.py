"""Who may use the self-hosted route. The token comes from the environment or a file in ComfyUI's user
folder, never from a workflow. Without a token the route answers only when ComfyUI listens on this
machine alone; a ComfyUI reachable from other machines refuses every request until a token is set."""
from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from ..errors import ApiNotConfiguredError, ApiTokenError

TOKEN_ENV = "FACE_MIGRATION_API_TOKEN"
TOKEN_FILENAME = "face_migration_api_token.txt"


def configured_token(user_directory: str | os.PathLike, environ=os.environ) -> str | None:
    """The token from FACE_MIGRATION_API_TOKEN, else from ComfyUI/user/face_migration_api_token.txt
    (read on each request, so a new token applies without a restart); None when neither is set."""
    token = environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    try:
        token = (Path(user_directory) / TOKEN_FILENAME).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return token or None


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


def how_to_set_token(user_directory) -> str:
    return (f"set the environment variable {TOKEN_ENV} before starting ComfyUI, or write the token into "
            f"{Path(user_directory) / TOKEN_FILENAME}; clients send it as 'Authorization: Bearer <token>'")


def authorize(authorization: str | None, token: str | None, beyond_loopback: bool, user_directory) -> None:
    """Raise ApiTokenError (401) or ApiNotConfiguredError (403); return when the request may go on.
    The token and the received header are never part of a message."""
    if token is None:
        if beyond_loopback:
            raise ApiNotConfiguredError(
                "this ComfyUI listens beyond this machine and has no API token, so the face-migration route "
                f"refuses every request: {how_to_set_token(user_directory)}")
        return
    scheme, _, sent = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
        raise ApiTokenError("Authorization: missing or wrong Bearer token; send 'Authorization: Bearer <token>' "
                            "with the token set on this server (" + how_to_set_token(user_directory) + ")")
