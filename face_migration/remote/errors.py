"""Errors of the remote face-migration client. Every message says what happened and what to do; none
ever contains the API key (messages from the server are redacted before they are stored)."""
from __future__ import annotations

from ..errors import FaceMigrationError


class RemoteError(FaceMigrationError):
    """Base class. `status` is the HTTP status when there was a response, `server_message` the
    server's own explanation (redacted), `retryable` whether another try could succeed,
    `maybe_billed` whether a request of this call may have been billed (the message then says so)."""

    def __init__(self, message: str, *, status: int | None = None, server_message: str | None = None,
                 retryable: bool = False, maybe_billed: bool = False):
        super().__init__(message)
        self.status = status
        self.server_message = server_message
        self.retryable = retryable
        self.maybe_billed = maybe_billed


class InvalidParameterError(RemoteError):
    """An input is missing or out of range; found before anything is sent."""


class ApiKeyError(RemoteError):
    """No key, an unusable key, or a key the server rejected (401/403)."""


class RequestRejectedError(RemoteError):
    """The server refused the request as invalid (400, 404, 413, 422, other 4xx)."""


class RateLimitError(RemoteError):
    """429 until the tries or the time ran out."""


class ServerError(RemoteError):
    """5xx until the tries or the time ran out."""


class RemoteTimeoutError(RemoteError):
    """No answer within the timeout."""


class RemoteConnectionError(RemoteError):
    """The server could not be reached (DNS, refused, TLS, connection reset)."""


class BadResponseError(RemoteError):
    """The server answered, but not with an image: not JSON, no `data`, bad base64, not an image."""


class RemoteCancelled(RemoteError):
    """The caller cancelled while waiting."""
