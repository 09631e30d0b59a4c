"""Synchronous client for `POST {base}/v1/images/face-migration`.

Each HTTP request runs in a worker thread while the caller's thread waits in short steps, so a cancel
(`should_cancel()`) is noticed within `poll_interval` seconds and `on_progress(elapsed_s, attempt)` can
show the wait.

Every request is paid, so one is sent again only when the server cannot have started the work: no
connection was made (refused, connect timeout, name not found), or the answer was 408, 429 or 503
(unless its JSON says "retryable": false, as the self-hosted route's permanent 503s do). Tries are spaced
by exponential backoff with jitter, at least the server's Retry-After, and bounded in number and in total
time. A read timeout, a broken answer after the request went out, or a gateway's 502 or 504 (the server
behind it may have started) is sent again only with `RetryPolicy(retry_timeouts=True)`. An error of a call
that may have been billed says so (and has `maybe_billed`). Errors never carry the key: server text is
redacted and exceptions are raised without chaining."""
from __future__ import annotations

import base64
import binascii
import dataclasses
import email.utils
import json
import logging
import math
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urljoin, urlsplit

import numpy as np
import requests
import urllib3
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .errors import (ApiKeyError, BadResponseError, InvalidParameterError, RateLimitError, RemoteCancelled,
                     RemoteConnectionError, RemoteError, RemoteTimeoutError, RequestRejectedError, ServerError)
from .images import DEFAULT_MAX_UPLOAD_SIDE, decode_image, encode_upload, stack_images
from .keys import KEY_HELP, ApiKey
from .params import ENDPOINTS, MAX_SEED, FaceMigrationParams, api_url

logger = logging.getLogger(__name__)

USER_AGENT = "comfyui-face-migration"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
CONNECT_TIMEOUT = 15.0
QUOTE_LIMIT = 300  # characters of server text in a message
QUOTE_SCAN = 4096  # characters of server text read for it (redacting megabytes would take seconds)
# The server did not take the request on: safe to send again.
RETRY_STATUSES = frozenset({408, 429, 503})
# A gateway's answer (bad gateway, gateway timeout): the server behind it may have received the request and
# started the work (a proxy in front of several servers answers 502 when one stops mid-request), so like a read
# timeout it is sent again only with retry_timeouts.
GATEWAY_STATUSES = frozenset({502, 504})
# Refusals of the request itself (key, payment, access, route, upload size): nothing ran, nothing billed.
REFUSED_STATUSES = frozenset({401, 402, 403, 404, 413})
BILLED_NOTE = ("The server may have started the work, so the request may have been billed; check the usage "
               "log of your account before running it again.")
RETRY_TIMEOUTS_HINT = ("It was not sent again because the server may still be working on it. To send it again "
                       "automatically (each try may be billed), use --retry-timeouts on the command line or "
                       "the node's retry_timeouts option.")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4  # the first try and three retries
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_total_time: float = 600.0  # seconds for the whole call, all tries and waits included
    retry_timeouts: bool = False  # also send again after a read timeout or a broken answer (may bill twice)

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Delay before retry number `retry` (1-based): doubling, capped, the upper half jittered."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class _Response:
    status: int
    headers: dict = field(repr=False)
    body: bytes = field(repr=False)


@dataclass
class _Call:
    """One generate() call: when it started and whether any of its requests may have been billed."""
    started: float
    maybe_billed: bool = False


class _Exchange:
    """One try, seen by the worker thread and the waiting thread: whether the request began to go out
    (from then on the server may have started the paid work), and its sockets, so that the waiting
    thread can cut them on cancel or timeout and the worker ends at once instead of waiting for the
    server."""

    def __init__(self):
        self.sending_started = False
        self.untracked = False  # a SOCKS proxy: its connections cannot be watched, so assume sent
        self._sockets: list[socket.socket] = []
        self._closed = False
        self._lock = threading.Lock()

    @property
    def may_have_reached_server(self) -> bool:
        return self.sending_started or self.untracked

    def connected(self, sock: socket.socket) -> None:
        with self._lock:
            self.sending_started = True
            self._sockets.append(sock)
            closed = self._closed
        if closed:  # cut while this connection was being made
            _hang_up(sock)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
        for sock in sockets:
            _hang_up(sock)


class FaceMigrationClient:
    def __init__(self, api_key: ApiKey, base_url: str = ENDPOINTS[0], *, timeout: float = 180.0,
                 retry: RetryPolicy = RetryPolicy(), max_upload_side: int = DEFAULT_MAX_UPLOAD_SIDE,
                 should_cancel: Callable[[], bool] | None = None,
                 on_progress: Callable[[float, int], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None,
                 poll_interval: float = 0.1, progress_interval: float = 1.0):
        for name, seconds in (("timeout", timeout), ("max_total_time", retry.max_total_time)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
                raise InvalidParameterError(f"{name}: {seconds!r} must be a positive, finite number of seconds")
        if retry.max_attempts < 1:
            raise InvalidParameterError(f"max_attempts: {retry.max_attempts!r} must be at least 1")
        self.api_key = api_key
        self.url = api_url(base_url)
        self.timeout = float(timeout)
        self.retry = retry
        self.max_upload_side = max_upload_side
        self.should_cancel = should_cancel or (lambda: False)
        self.on_progress = on_progress or (lambda elapsed, attempt: None)
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.poll_interval = poll_interval
        self.progress_interval = progress_interval
        self._last_report = 0.0

    def __repr__(self):
        return f"FaceMigrationClient({self.url!r}, key from {self.api_key.source})"

    # ---- public -------------------------------------------------------------------------------------

    def generate(self, image, params: FaceMigrationParams) -> list[np.ndarray]:
        """One request for one face image; the generated images (usually one) as uint8 HxWx3."""
        params.validated()
        png, (width, height) = encode_upload(image, self.max_upload_side)
        logger.info("face migration: %dx%d PNG upload (%d KB) to %s, size %s", width, height, len(png) // 1024,
                    self.url, params.size)
        call = _Call(time.monotonic())
        try:
            images = self._request(png, params, call)
        except RemoteError as error:
            if not call.maybe_billed:
                raise
            failure = _amended(error, BILLED_NOTE, maybe_billed=True)
        else:
            logger.info("face migration: %d image(s) in %.1f s", len(images), time.monotonic() - call.started)
            return images
        raise failure  # outside the except block, so no exception is chained to it

    def generate_batch(self, images, params: FaceMigrationParams,
                       on_image: Callable[[int], None] | None = None) -> np.ndarray:
        """One request per image of `images` (a sequence or an NxHxWxC array), `on_image(index)` before
        each; every result in one uint8 NxHxWx3 batch. With a seed, image i is sent seed + i so a batch
        of one face still gives different pictures."""
        params.validated()
        if len(images) == 0:
            raise InvalidParameterError("image: the batch is empty; connect at least one face image")
        results = []
        for index, image in enumerate(images):
            sent = params if params.seed is None else dataclasses.replace(
                params, seed=(params.seed + index) % (MAX_SEED + 1))
            if on_image:
                on_image(index)
            results.extend(self.generate(image, sent))
        return stack_images(results)

    # ---- one call with retries ------------------------------------------------------------------------

    def _auth_header(self) -> dict:
        # Never a Content-Type: requests writes multipart/form-data with its boundary.
        return {"Authorization": f"Bearer {self.api_key.value}"}

    def _request(self, png: bytes, params: FaceMigrationParams, call: _Call) -> list[np.ndarray]:
        headers = {**self._auth_header(), "User-Agent": USER_AGENT, "Accept": "application/json"}
        request = dict(method="POST", url=self.url, headers=headers,
                       files=[("image", ("face.png", png, "image/png"))], data=params.form_fields())
        response = self._call(request, call)
        items = self._items(response)
        return [self._image(item, index, call) for index, item in enumerate(items)]

    def _call(self, request: dict, call: _Call, download: str | None = None) -> _Response:
        """The 2xx response of the API request, or of downloading the result `download` names (a GET
        that bills nothing, so it is always safe to repeat)."""
        deadline = call.started + self.retry.max_total_time
        attempt = 0
        while True:
            attempt += 1
            per_try = min(self.timeout, deadline - time.monotonic())
            if per_try <= 0:
                raise RemoteTimeoutError(f"The {self.retry.max_total_time:.0f} s limit for the whole call was "
                                         f"reached. Raise it if the service is slow.")
            outcome = self._one_try(request, per_try, attempt, call, download)
            if isinstance(outcome, _Response):
                if download is None and outcome.status not in RETRY_STATUSES | REFUSED_STATUSES:
                    call.maybe_billed = True
                if 200 <= outcome.status < 300:
                    return outcome
            error = outcome if isinstance(outcome, RemoteError) else self._http_error(outcome, download)
            if not error.retryable:
                raise error
            elapsed = time.monotonic() - call.started
            if attempt >= self.retry.max_attempts:
                raise _amended(error, f"Gave up after {attempt} tries in {elapsed:.0f} s.")
            delay = self.retry.backoff(attempt, self.rng)
            retry_after = _retry_after(outcome.headers) if isinstance(outcome, _Response) else None
            if retry_after is not None:
                delay = max(delay, retry_after)
            if time.monotonic() + delay >= deadline - 0.05:
                raise _amended(error, f"Gave up after {attempt} tries in {elapsed:.0f} s: the next try "
                                      f"(in {delay:.0f} s) would pass the {self.retry.max_total_time:.0f} s limit.")
            billed_note = " It may have been billed." if error.maybe_billed else ""
            logger.warning("Try %d of %d failed: %s%s Trying again in %.3g s.", attempt, self.retry.max_attempts,
                           error, billed_note, delay)
            self._wait(delay, call, attempt)

    def _one_try(self, request: dict, per_try: float, attempt: int, call: _Call,
                 download: str | None) -> _Response | RemoteError:
        """The response (any status) or the error of one try; never raises except on cancel."""
        box: dict = {}
        exchange = _Exchange()
        worker = threading.Thread(target=_perform, args=(request, per_try, exchange, box), daemon=True,
                                  name="face-migration-http")
        try_start = time.monotonic()
        timed_out = False
        worker.start()
        try:
            self._report(call.started, attempt, force=True)
            while worker.is_alive() and not timed_out:
                worker.join(self.poll_interval)
                self._check_cancel(call, attempt, exchange)
                self._report(call.started, attempt)
                # requests' read timeout is per socket read; this bounds the whole try
                timed_out = worker.is_alive() and time.monotonic() - try_start > per_try + 1.0
        except BaseException:  # cancelled (also by an exception from should_cancel) or interrupted
            exchange.close()
            raise
        if not timed_out and "response" in box:
            return box["response"]
        started_work = download is None and exchange.may_have_reached_server
        call.maybe_billed |= started_work
        if timed_out:
            exchange.close()
            return self._timeout_error(per_try, request["url"], started_work)
        return self._transport_error(box.get("error"), per_try, request["url"], started_work)

    def _wait(self, delay: float, call: _Call, attempt: int) -> None:
        remaining = delay
        while remaining > 0:
            step = min(self.poll_interval, remaining)
            self.sleep(step)
            remaining -= step
            self._check_cancel(call, attempt)
            self._report(call.started, attempt)

    def _check_cancel(self, call: _Call, attempt: int, exchange: _Exchange | None = None) -> None:
        if self.should_cancel():
            # A request on its way may still be finished, and billed, by the server.
            call.maybe_billed |= exchange is not None and exchange.may_have_reached_server
            raise RemoteCancelled(f"Cancelled after {time.monotonic() - call.started:.1f} s (try {attempt}).")

    def _report(self, started: float, attempt: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_report >= self.progress_interval:
            self._last_report = now
            self.on_progress(now - started, attempt)

    # ---- errors -----------------------------------------------------------------------------------------

    def _timeout_error(self, per_try: float, url: str, started_work: bool) -> RemoteTimeoutError:
        """No (whole) answer in time. `started_work`: the request went out, so the server may be busy
        with it, and a second try could be billed again."""
        hint = f" {RETRY_TIMEOUTS_HINT}" if started_work and not self.retry.retry_timeouts else ""
        return RemoteTimeoutError(
            f"No answer from {_origin(url)} within {per_try:g} s. Raise the timeout if the service is "
            f"busy, or check your network.{hint}", retryable=not started_work or self.retry.retry_timeouts,
            maybe_billed=started_work)

    def _transport_error(self, exc: BaseException | None, per_try: float, url: str,
                         started_work: bool) -> RemoteError:
        if isinstance(exc, requests.ReadTimeout):
            return self._timeout_error(per_try, url, started_work)
        detail = self._quote(str(exc))
        if isinstance(exc, requests.exceptions.SSLError):
            return RemoteConnectionError(
                f"Secure connection to {_origin(url)} failed ({detail}). Check the endpoint URL and your "
                f"system's certificates (a proxy may be intercepting TLS).", maybe_billed=started_work)
        if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            if not started_work:  # refused, connect timeout, name not found: nothing reached the server
                return RemoteConnectionError(
                    f"Could not reach {_origin(url)} ({detail}). Check your internet connection, proxy "
                    f"settings and the endpoint URL.", retryable=True)
            hint = "" if self.retry.retry_timeouts else f" {RETRY_TIMEOUTS_HINT}"
            return RemoteConnectionError(
                f"The connection to {_origin(url)} broke after the request was sent ({detail}).{hint}",
                retryable=self.retry.retry_timeouts, maybe_billed=True)
        if isinstance(exc, _TooLarge):
            return BadResponseError(f"The answer from {_origin(url)} is larger than "
                                    f"{MAX_RESPONSE_BYTES // 2**20} MB; this is not a face-migration response.",
                                    maybe_billed=started_work)
        return RemoteError(f"Request to {_origin(url)} failed: {type(exc).__name__}: {detail}",
                           maybe_billed=started_work)

    def _http_error(self, response: _Response, download: str | None) -> RemoteError:
        status = response.status
        message = self._quote(_server_message(response.body))
        said = f"HTTP {status}" + (f": {message}" if message else "")
        common = dict(status=status, server_message=message)
        if download:  # a result URL: our key is not involved
            retryable = status in (408, 429) or status >= 500
            return (ServerError if retryable else BadResponseError)(
                f"Downloading {download} failed ({said}).", retryable=retryable, **common)
        if status == 401:
            return ApiKeyError(f"The server rejected the API key ({said}). The key was read from "
                               f"{self.api_key.source}; check it is complete and still valid, or replace it. "
                               f"{KEY_HELP}", **common)
        if status == 403:
            return ApiKeyError(f"The server refused the request ({said}). The key from {self.api_key.source} "
                               f"may lack access to this endpoint or model, or the account has no balance "
                               f"or resource package for it.", **common)
        if status == 402:
            return RequestRejectedError(f"Payment required ({said}). Top up the account the key belongs to, "
                                        f"or buy a resource package for face migration.", **common)
        if status == 404:
            return RequestRejectedError(f"{self.url} does not exist ({said}). Check the endpoint (custom base "
                                        f"URL) and the model name.", **common)
        if status == 413:
            return RequestRejectedError(f"The upload is too large for the server ({said}). Use a smaller "
                                        f"face image.", **common)
        if status == 429:
            return RateLimitError(f"Rate limit or quota exceeded ({said}). Wait a minute and try again, and "
                                  f"check the quota or resource package of your account.", retryable=True,
                                  **common)
        if status in RETRY_STATUSES and _says_not_retryable(response.body):
            return ServerError(f"The server cannot serve this request ({said}) and says that sending it again "
                               f"will not help until its operator fixes the server.", retryable=False, **common)
        if status in GATEWAY_STATUSES:
            hint = "" if self.retry.retry_timeouts else f" {RETRY_TIMEOUTS_HINT}"
            return ServerError(f"A gateway in front of the face-migration service failed ({said}); the service "
                               f"behind it may have started the work.{hint}", retryable=self.retry.retry_timeouts,
                               maybe_billed=True, **common)
        if status == 408 or status >= 500:
            return ServerError(f"The face-migration service failed ({said}). It may be overloaded or down; "
                               f"try again later.", retryable=status in RETRY_STATUSES, **common)
        if 400 <= status < 500:
            return RequestRejectedError(f"The server rejected the request ({said}). Fix the input it "
                                        f"names and run again.", **common)
        return BadResponseError(f"Unexpected answer from {_origin(self.url)} ({said}).", **common)

    # ---- response ---------------------------------------------------------------------------------------

    def _items(self, response: _Response) -> list[dict]:
        document = _json_or_none(response.body)
        if document is None:  # raised outside the except: the decoder's error quotes the body, key and all
            raise BadResponseError(f"The server answered HTTP {response.status} but not with JSON "
                                   f"({self._quote(_text(response.body))!r}). Check the endpoint URL.")
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, list) or not data:
            message = self._quote(_message_in(document) or "")
            if message:
                raise RequestRejectedError(f"The server returned no image: {message}", server_message=message)
            raise BadResponseError(f"The server's JSON has no non-empty 'data' list (keys: "
                                   f"{self._keys(document)}).")
        for index, item in enumerate(data):
            if not isinstance(item, dict) or not (isinstance(item.get("b64_json"), str)
                                                  or isinstance(item.get("url"), str)):
                raise BadResponseError(f"data[{index}] has neither 'b64_json' nor 'url' (has {self._keys(item)}).")
        return data

    def _quote(self, server_text: str) -> str:
        """Server text fit for a one-line message. The key is redacted before the text is cut to length,
        so no half echo is left that redaction would no longer recognise."""
        words = server_text[:QUOTE_SCAN].split()
        if len(server_text) > QUOTE_SCAN:
            words = words[:-1]  # maybe cut at the scan limit; an echo of the key never holds a space
        text = self.api_key.redact(" ".join(words))
        return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT] + "..."

    def _keys(self, document) -> str:
        """The object keys a server sent, for a message; they are server text too (a key may be echoed)."""
        return self._quote(str(sorted(document))) if isinstance(document, dict) else type(document).__name__

    def _image(self, item: dict, index: int, call: _Call) -> np.ndarray:
        what = f"data[{index}]"
        if isinstance(item.get("b64_json"), str):
            return decode_image(_b64decode(item["b64_json"], f"{what}.b64_json"), f"{what}.b64_json")
        url = item["url"].strip()
        if url.startswith("data:"):
            return decode_image(_b64decode(url, f"{what}.url"), f"{what}.url")
        url = urljoin(self.url, url)
        if self.api_key.redact(url) != url:  # fetching it would hand the key on, and urllib3 logs the URL
            raise BadResponseError(f"{what}.url holds the API key ({self._quote(url)!r}); it was not fetched. "
                                   f"The server is not behaving like the face-migration API; check the endpoint.")
        if urlsplit(url).scheme not in ("http", "https"):
            raise BadResponseError(f"{what}.url is not an http(s) URL ({self._quote(url)!r}).")
        # Signed storage links live on other hosts: the key goes only to the API's own origin.
        headers = {"User-Agent": USER_AGENT}
        if _origin(url) == _origin(self.url):
            headers.update(self._auth_header())
        where = f"the result image from {_origin(url)}{urlsplit(url).path}"  # no query: it may hold a signature
        response = self._call(dict(method="GET", url=url, headers=headers), call, download=where)
        return decode_image(response.body, f"{what}.url ({where})")


class _TooLarge(Exception):
    pass


class _TrackedConnection:
    """Mixed into urllib3's connection classes: hands the socket to the exchange once connected (TLS
    included), as the request goes out right after."""
    exchange: _Exchange

    def connect(self):
        super().connect()
        self.exchange.connected(self.sock)


def _hang_up(sock: socket.socket) -> None:
    """Wake a thread blocked on `sock` and tell the server we are gone; the worker then closes it."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: below TLS, from any thread
    except OSError:  # already closed
        pass


class _TrackingAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with connections that report to one try's exchange (also through an HTTP(S)
    proxy; a SOCKS proxy has its own connection classes, so the exchange counts as sent there)."""

    def __init__(self, exchange: _Exchange):
        self.exchange = exchange
        self.pool_classes = {scheme: _tracked_pool(pool, exchange) for scheme, pool in
                             (("http", HTTPConnectionPool), ("https", HTTPSConnectionPool))}
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self.pool_classes

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.ProxyManager):
            manager.pool_classes_by_scheme = self.pool_classes
        else:
            self.exchange.untracked = True
        return manager


def _tracked_pool(pool: type, exchange: _Exchange) -> type:
    connection = type(f"Tracked{pool.ConnectionCls.__name__}", (_TrackedConnection, pool.ConnectionCls),
                      {"exchange": exchange})
    return type(f"Tracked{pool.__name__}", (pool,), {"ConnectionCls": connection})


def _perform(request: dict, per_try: float, exchange: _Exchange, box: dict) -> None:
    """Worker thread: one HTTP request, the body read to the end (bounded), into `box`."""
    try:
        with requests.Session() as session:
            adapter = _TrackingAdapter(exchange)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            with session.request(**request, timeout=(min(CONNECT_TIMEOUT, per_try), per_try), stream=True) as r:
                chunks, size = [], 0
                for chunk in r.iter_content(1 << 16):
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise _TooLarge()
                    chunks.append(chunk)
                box["response"] = _Response(r.status_code, dict(r.headers), b"".join(chunks))
    except Exception as exc:  # handed to the waiting thread, which turns it into a RemoteError
        box["error"] = exc


def _amended(error: RemoteError, note: str, **changes) -> RemoteError:
    """The same error with `note` added to its message (and attributes in `changes` replaced)."""
    fields = dict(status=error.status, server_message=error.server_message, retryable=error.retryable,
                  maybe_billed=error.maybe_billed)
    return type(error)(f"{error} {note}", **{**fields, **changes})


def _retry_after(headers: dict) -> float | None:
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _b64decode(text: str, what: str) -> bytes:
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    payload = "".join(payload.split())
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        data = None
    if data is None:
        raise BadResponseError(f"{what} is not valid base64 ({len(payload)} characters).")
    if not data:
        raise BadResponseError(f"{what} is empty.")
    return data


def _json_or_none(body: bytes):
    try:
        return json.loads(body.decode("utf-8"))
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        return None


def _message_in(document) -> str | None:
    """The server's explanation in the shapes seen on this platform and OpenAI-style APIs."""
    if not isinstance(document, dict):
        return None
    for key in ("message", "error_message", "error", "detail", "msg"):
        value = document.get(key)
        if isinstance(value, dict):
            value = _message_in(value)
        elif isinstance(value, list):
            value = "; ".join(str(v.get("msg", v)) if isinstance(v, dict) else str(v) for v in value)
        if value:
            return str(value)
    return None


def _says_not_retryable(body: bytes) -> bool:
    """A JSON answer with "retryable": false: the server will refuse the same request again (the
    self-hosted route's 503 for models or a template it lacks)."""
    document = _json_or_none(body)
    return isinstance(document, dict) and document.get("retryable") is False


def _server_message(body: bytes) -> str:
    document = _json_or_none(body)
    message = _message_in(document)
    if message:
        return message
    text = _text(body).strip()
    if text.startswith("<") or document in ({}, []):
        return ""  # an HTML error page or an empty document says nothing useful in one line
    return text


def _text(body: bytes) -> str:
    return body.decode("utf-8", errors="replace")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
