"""A stand-in for the Hugging Face Hub on loopback, for the `download` tests (no network).

It speaks the part of the Hub's protocol that huggingface_hub's hf_hub_download uses: HEAD and GET on
/{repo}/resolve/{revision}/{path}, answered with X-Repo-Commit, ETag, Content-Length and byte ranges, and
401 with X-Error-Code: GatedRepo for a gated file requested without the right token. Any other path it
serves as a plain file server (a GitHub release asset). A file can be cut off once half-way (the
connection closes early) or held half-way until the test lets it go (to interrupt the client)."""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_stand_in_token"


class FakeHub:
    def __init__(self):
        self.files: dict[str, bytes] = {}  # URL path -> content
        self.gated: set[str] = set()
        self.cut_once: set[str] = set()  # paths whose next full GET stops half-way
        self.hold: set[str] = set()  # paths whose GET stops half-way until `release` is set
        self.holding, self.release = threading.Event(), threading.Event()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, path: str, data: bytes, gated: bool = False) -> None:
        self.files["/" + path.lstrip("/")] = data
        if gated:
            self.gated.add("/" + path.lstrip("/"))

    def gets(self, path: str) -> list[str | None]:
        """The Range header of each GET of a path (None for a whole-file request)."""
        return [r for method, p, r in self.requests if method == "GET" and p == "/" + path.lstrip("/")]

    def __enter__(self) -> "FakeHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


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
            data = hub.files.get(path)
            if data is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist")
            if path in hub.gated and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._error(401, "GatedRepo", "Access to this model is restricted: accept the conditions")
            start = int(re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "bytes=0-")[1])
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if not body:
                return
            if start == 0 and (path in hub.cut_once or path in hub.hold):
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                if path in hub.cut_once:
                    hub.cut_once.discard(path)
                else:
                    hub.holding.set()
                    hub.release.wait(10)
                self.close_connection = True
                return
            self.wfile.write(data[start:])

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
