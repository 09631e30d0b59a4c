"""Parameters of the hosted face-migration endpoint, their documented ranges, and the form fields they
become. Ranges are the platform's own schema for `v1/images/face-migration` (see docs/remote-api.md); the
node, the command and the client all validate with this one table."""
from __future__ import annotations

import decimal
import ipaddress
import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import InvalidParameterError

API_PATH = "/v1/images/face-migration"
ENDPOINTS = ("https://moark.ai", "https://ai.gitee.com")
CUSTOM_ENDPOINT = "custom"  # the node's choice meaning "use custom_base_url"
DEFAULT_MODEL = "flux-1-schnell"
SIZES = ("1024x1024", "256x256", "512x512", "1024x768", "768x1024", "1024x576", "576x1024", "1024x683",
         "683x1024")
DEFAULT_SIZE = "1024x1024"
NO_SEED = -1
MAX_SEED = 2**31 - 1  # the schema only says "integer"; int32 is safe on any backend

# name -> (min, max, default, integer?)
RANGES = {
    "guidance_scale": (1.0, 10.0, 4.0, False),
    "num_inference_steps": (1, 8, 4, True),
    "id_weight": (0.0, 3.0, 1.0, False),
    "id_timestep_start": (0, 8, 0, True),
}
# Decimals sent: the schema's step for guidance_scale is 0.1. id_weight's slider steps by 1 but its type
# is number, so its fractions are sent as given (up to 6 decimals), their effect there unverified.
SENT_DECIMALS = {"guidance_scale": 1}
ID_WEIGHT_FRACTIONS_NOTE = ("the hosted service's handling of fractions is unverified (its own slider steps "
                            "by 1; the field is a number)")


@dataclass(frozen=True)
class FaceMigrationParams:
    prompt: str
    size: str = DEFAULT_SIZE
    guidance_scale: float = RANGES["guidance_scale"][2]
    num_inference_steps: int = RANGES["num_inference_steps"][2]
    id_weight: float = RANGES["id_weight"][2]
    id_timestep_start: int = RANGES["id_timestep_start"][2]
    seed: int | None = None  # None: not sent, the server picks
    model: str = DEFAULT_MODEL

    def problems(self) -> list[str]:
        """Every invalid input, each as 'name: what is wrong; the fix'. Empty when all is well."""
        found = []
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            found.append("prompt: empty; describe the image to generate (the face comes from the image input)")
        if self.size not in SIZES:
            found.append(f"size: '{self.size}' is not offered by the API; use one of {', '.join(SIZES)}")
        for name, (low, high, _, integer) in RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                found.append(f"{name}: {value!r} is not a number; use {low}..{high}")
            elif integer and value != int(value):
                found.append(f"{name}: {value} must be a whole number in {low}..{high}")
            elif not low <= value <= high:
                found.append(f"{name}: {value} is outside {low}..{high}")
        steps, start = self.num_inference_steps, self.id_timestep_start
        if not found and start >= steps:
            found.append(f"id_timestep_start: {start} is not below num_inference_steps ({steps}), so the face "
                         f"would never be used; lower id_timestep_start or raise num_inference_steps")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or not 0 <= self.seed <= MAX_SEED):
            found.append(f"seed: {self.seed!r} must be a whole number in 0..{MAX_SEED}, or left unset")
        if not isinstance(self.model, str) or not self.model.strip() or any(c.isspace() for c in self.model.strip()):
            found.append(f"model: {self.model!r} is not a model name; the API documents '{DEFAULT_MODEL}'")
        return found

    def validated(self) -> FaceMigrationParams:
        found = self.problems()
        if found:
            raise InvalidParameterError("Face migration inputs are invalid:\n  " + "\n  ".join(found))
        return self

    def form_fields(self) -> list[tuple[str, str]]:
        """The multipart form fields besides the image, in the documented example's order."""
        fields = [("model", self.model.strip()), ("size", self.size)]
        for name in RANGES:
            fields.append((name, format_number(getattr(self, name), SENT_DECIMALS.get(name, 6))))
        if self.seed is not None:
            fields.append(("seed", str(self.seed)))
        fields.append(("prompt", self.prompt.strip()))
        return fields

    @property
    def width_height(self) -> tuple[int, int]:
        width, height = self.size.split("x")
        return int(width), int(height)


def format_number(value: float, decimals: int = 6) -> str:
    """4.0 -> '4' (as the documented example sends), 4.5 -> '4.5'; never '4.500000001' from a float widget.
    Halves round up as written (7.25 -> '7.3' with one decimal), not to the float's binary neighbour."""
    rounded = decimal.Decimal(repr(float(value))).quantize(decimal.Decimal(1).scaleb(-decimals),
                                                           rounding=decimal.ROUND_HALF_UP)
    return format(rounded.normalize(), "f")


def api_url(base_url: str) -> str:
    """The full endpoint URL from a base such as https://moark.ai (a trailing /v1 or the full path is
    accepted too). Plain http is refused except for this machine or a private network, so the key
    never crosses the internet unencrypted."""
    base = (base_url or "").strip().rstrip("/")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParameterError(
            f"endpoint: '{base_url}' is not a URL; use https://moark.ai, https://ai.gitee.com or the "
            f"https:// base URL of a compatible server")
    if parts.username or parts.password:
        raise InvalidParameterError("endpoint: the URL holds a user name or password; give only "
                                    "scheme://host[:port][/path] (the API key is the only credential sent)")
    if parts.query or parts.fragment:
        raise InvalidParameterError(f"endpoint: '{base_url}' has a query or fragment; give only the base URL")
    if parts.scheme == "http" and not _is_local(parts.hostname):
        raise InvalidParameterError(
            f"endpoint: '{base_url}' uses plain http, which would send your API key unencrypted over the "
            f"internet; use https:// (plain http is accepted only for localhost and private networks)")
    if base.endswith(API_PATH):
        return base
    if base.endswith("/v1"):
        base = base[:-3]
    return base + API_PATH


def endpoint_url(choice: str, custom_base_url: str = "") -> str:
    """The API URL for the node's endpoint choice: one of ENDPOINTS, or CUSTOM_ENDPOINT with a base URL."""
    if choice == CUSTOM_ENDPOINT:
        if not (custom_base_url or "").strip():
            raise InvalidParameterError("custom_base_url: empty while endpoint is 'custom'; enter the base URL of "
                                        "the compatible server (e.g. http://127.0.0.1:8000) or pick a listed endpoint")
        return api_url(custom_base_url)
    if choice not in ENDPOINTS:
        raise InvalidParameterError(f"endpoint: '{choice}' is not one of {', '.join(ENDPOINTS)} or "
                                    f"'{CUSTOM_ENDPOINT}'")
    return api_url(choice)


def widget_seed(value: int) -> int | None:
    """The node's seed widget: NO_SEED (-1) means "do not send a seed"."""
    return None if value is None or value == NO_SEED else int(value)


def early_problems(prompt=None, num_inference_steps=None, id_timestep_start=None, endpoint=None,
                   custom_base_url=None) -> list[str]:
    """What ComfyUI can refuse before queueing. None means not known yet (a linked input) and is skipped;
    the full check runs again before the request."""
    values = {"prompt": "-" if prompt is None else prompt}
    if num_inference_steps is not None and id_timestep_start is not None:
        values.update(num_inference_steps=num_inference_steps, id_timestep_start=id_timestep_start)
    found = FaceMigrationParams(**values).problems()
    if endpoint is not None:
        try:
            endpoint_url(endpoint, custom_base_url or "")
        except InvalidParameterError as exc:
            found.append(str(exc))
    return found


def _is_local(host: str) -> bool:
    """A literal loopback or private address, or exactly 'localhost' (this machine by convention).
    Other names, '*.localhost' included, may be looked up in DNS, which could point them anywhere."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private
