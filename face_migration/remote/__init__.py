"""Client for the hosted MoArk / Gitee AI face-migration API (PuLID-FLUX as a service), its command
line (`python -m face_migration generate`), and the pieces the ComfyUI node uses."""
from .client import FaceMigrationClient, RetryPolicy
from .errors import (ApiKeyError, BadResponseError, InvalidParameterError, RateLimitError, RemoteCancelled,
                     RemoteConnectionError, RemoteError, RemoteTimeoutError, RequestRejectedError, ServerError)
from .images import DEFAULT_MAX_UPLOAD_SIDE, to_uint8_rgb
from .keys import ENV_VARS, KEY_FILENAME, ApiKey, find_api_key
from .params import (API_PATH, CUSTOM_ENDPOINT, DEFAULT_MODEL, DEFAULT_SIZE, ENDPOINTS, MAX_SEED, NO_SEED,
                     RANGES, SIZES, FaceMigrationParams, api_url, endpoint_url)

__all__ = [
    "FaceMigrationClient", "RetryPolicy",
    "ApiKeyError", "BadResponseError", "InvalidParameterError", "RateLimitError", "RemoteCancelled",
    "RemoteConnectionError", "RemoteError", "RemoteTimeoutError", "RequestRejectedError", "ServerError",
    "DEFAULT_MAX_UPLOAD_SIDE", "to_uint8_rgb",
    "ENV_VARS", "KEY_FILENAME", "ApiKey", "find_api_key",
    "API_PATH", "CUSTOM_ENDPOINT", "DEFAULT_MODEL", "DEFAULT_SIZE", "ENDPOINTS", "MAX_SEED", "NO_SEED", "RANGES",
    "SIZES", "FaceMigrationParams", "api_url", "endpoint_url",
]
