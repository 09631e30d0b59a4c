"""A stand-in for the Hugging Face Hub and a file server on loopback, for the `download` tests (no network).

A Hub file, /{repo}/resolve/{revision}/{path}, is answered as the Hub answers a large (LFS) file: 302 to a
content server on another host name (localhost/cdn/<sha256>) with X-Repo-Commit, X-Linked-Etag and
X-Linked-Size, or 401 / 403 with X-Error-Code: GatedRepo for a gated file asked without a token / another.
Any other path is a plain file
(a GitHub release asset). Both serve byte ranges and honour If-Range. A file can be cut off half-way once
or every time (the connection closes early), or held half-way until the test lets it go (to interrupt the
client); the bytes of each file actually sent are counted, so a test can tell what a rerun fetched again."""
from __future__ import annotations

import hashlib
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_stand_in_token"
CDN = "/cdn/"


class FakeHub:
    def __init__(self):
        self.files: dict[str, bytes] = {}  # URL path -> content
        self.commits: dict[str, str] = {}  # Hub file path -> the commit it is served at
        self.gated: set[str] = set()
        self.cut_once: set[str] = set()  # paths whose next full GET stops half-way
        self.cut_always: set[str] = set()  # paths whose every GET stops half-way through what it asked for
        self.hold: set[str] = set()  # paths whose GET stops half-way until `release` is set
        self.holding, self.release = threading.Event(), threading.Event()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path as requested, Range header)
        self.transfers: list[tuple[str, str | None]] = []  # (file path, Range header) of each GET sending bytes
        self.served: Counter[str] = Counter()  # file path -> bytes sent
        self.cdn_authorizations = 0  # requests to the content server that carried a token (must stay 0)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        """The content server: another host name, as the Hub's CDN is (a client must not send it the token)."""
        return f"http://localhost:{self.server.server_address[1]}"

    def add(self, path: str, data: bytes, gated: bool = False, commit: str = COMMIT) -> None:
        """A file at that path (replacing what was there: a new revision when its commit differs)."""
        path = "/" + path.lstrip("/")
        self.files[path], self.commits[path] = data, commit
        if gated:
            self.gated.add(path)

    def gets(self, path: str) -> list[str | None]:
        """The Range header of each GET that sent a file's bytes (None for a whole-file request)."""
        return [r for p, r in self.transfers if p == "/" + path.lstrip("/")]

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _etag(data: bytes) -> str:
    return f'"{_sha(data)}"'


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def do_HEAD(self):
            self._answer(body=False)

        def do_GET(self):
            self._answer(body=True)

        def _answer(self, body: bool):
            path = self.path.split("?", 1)[0]
            hub.requests.append((self.command, path, self.headers.get("Range")))
            if path.startswith(CDN):
                hub.cdn_authorizations += bool(self.headers.get("Authorization"))
                key = next((p for p, d in hub.files.items() if _sha(d) == path[len(CDN):]), None)
                return self._send(key, body) if key else self._error(404, "EntryNotFound", f"{path} expired")
            if path not in hub.files:
                return self._error(404, "EntryNotFound", f"{path} does not exist")
            token = self.headers.get("Authorization")
            if path in hub.gated and token != f"Bearer {TOKEN}":  # 401 without a token, 403 for one without access
                return self._error(403 if token else 401, "GatedRepo", "Access to this model is restricted")
            if "/resolve/" not in path:
                return self._send(path, body)
            data = hub.files[path]
            self.send_response(302)
            self.send_header("Location", f"{hub.cdn_url}{CDN}{_sha(data)}?signed=1")
            self.send_header("X-Repo-Commit", hub.commits[path])
            self.send_header("X-Linked-Etag", _etag(data))
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", _etag(data))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send(self, key: str, body: bool):
            data = hub.files[key]
            asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "bytes=0-")
            start = int(asked[1])
            if self.headers.get("If-Range") not in (None, _etag(data)):  # changed since: the whole file
                start = 0
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", _etag(data))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if not body:
                return
            hub.transfers.append((key, self.headers.get("Range")))
            rest = data[start:]
            if key in hub.cut_always or (start == 0 and (key in hub.cut_once or key in hub.hold)):
                self._write(key, rest[:len(rest) // 2])
                if key in hub.hold and start == 0:
                    hub.holding.set()
                    hub.release.wait(10)
                hub.cut_once.discard(key)
                self.close_connection = True
                return
            self._write(key, rest)

        def _write(self, key: str, data: bytes):
            self.wfile.write(data)
            self.wfile.flush()
            hub.served[key] += len(data)

        def _error(self, status: int, code: str, message: str):
            payload = f'{{"error": "{message}"}}'.encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

    return Handler
