"""A local stand-in for the MoArk face-migration API: records every request and answers from a script.

Used by the tests (in a thread, random port), and by hand to try the node in a real ComfyUI without a
key or network:  python tests/remote/fake_moark.py --port 8199   then set the node's endpoint to
custom, http://127.0.0.1:8199, and MOARK_API_KEY to anything."""
from __future__ import annotations

import argparse
import base64
import email.parser
import email.policy
import io
import json
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

API_PATH = "/v1/images/face-migration"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def b64_png(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode()


def gradient_image(width: int = 48, height: int = 32) -> np.ndarray:
    """A small deterministic RGB image that survives PNG exactly."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 5 % 256, y * 7 % 256, (x + y) * 3 % 256], axis=-1).astype(np.uint8)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    cut_after: int | None = None  # send the headers and this many body bytes, then close (a broken answer)
    hang_up: bool = False  # close without answering, after the request was read
    trickle: float = 0.0  # seconds between the body's bytes (each read is quick, the whole answer is slow)

    @classmethod
    def json(cls, document, status: int = 200, **kw) -> "Reply":
        return cls(status, json.dumps(document).encode(), {"Content-Type": "application/json", **kw.pop("headers", {})},
                   **kw)

    @classmethod
    def image_b64(cls, array: np.ndarray) -> "Reply":
        return cls.json({"created": int(time.time()), "data": [{"b64_json": b64_png(array)}]})


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict  # lower-cased names
    body: bytes
    fields: list = field(default_factory=list)  # [(name, value)] in order
    files: dict = field(default_factory=dict)  # name -> (filename, content type, bytes)
    client_closed_at: float | None = None  # time.monotonic() when the client hung up before the answer was out


class FakeMoArk:
    """Replies are taken from `script` in order; when it is empty, `default` answers."""

    def __init__(self, default: Reply | None = None, port: int = 0):
        self.script: deque[Reply] = deque()
        self.default = default or Reply.image_b64(gradient_image())
        self.files: dict[str, tuple[bytes, str]] = {}  # path -> (body, content type), served on GET
        self.requests: list[Recorded] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeMoArk":
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() would wait forever for a loop that never ran
            self._server.shutdown()
        self._server.server_close()

    def queue(self, *replies: Reply) -> None:
        self.script.extend(replies)

    def api_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == API_PATH]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                self._record(b"")
                if self.path in fake.files:
                    body, kind = fake.files[self.path]
                    self._send(Reply(200, body, {"Content-Type": kind}))
                else:
                    self._send(Reply.json({"message": "not found"}, status=404))

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                record = self._record(self.rfile.read(length))
                if self.path != API_PATH:
                    return self._send(Reply.json({"message": f"no route {self.path}"}, status=404))
                _parse_multipart(record)
                self._send(fake.script.popleft() if fake.script else fake.default, record)

            def _record(self, body: bytes) -> Recorded:
                record = Recorded(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                fake.requests.append(record)
                return record

            def _send(self, reply: Reply, record: Recorded | None = None):
                if not self._wait(reply.delay, record):
                    return
                if reply.hang_up:
                    self.close_connection = True
                    return
                body = reply.body if reply.cut_after is None else reply.body[:reply.cut_after]
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    if reply.trickle:
                        for index in range(len(body)):
                            self.wfile.write(body[index:index + 1])
                            self.wfile.flush()
                            if not self._wait(reply.trickle, record):
                                return
                    else:
                        self.wfile.write(body)
                except OSError:  # the client gave up (timeout, cancel)
                    pass
                if reply.cut_after is not None:
                    self.close_connection = True

            def _wait(self, seconds: float, record: Recorded | None) -> bool:
                """Sleep, watching the connection: False (and noted in `record`) when the client hung up."""
                end = time.monotonic() + seconds
                while (left := end - time.monotonic()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], min(left, 0.02))
                    if readable and not self.connection.recv(1, socket.MSG_PEEK):
                        if record is not None:
                            record.client_closed_at = time.monotonic()
                        self.close_connection = True
                        return False
                return True

        return Handler


def _parse_multipart(record: Recorded) -> None:
    kind = record.headers.get("content-type", "")
    if not kind.startswith("multipart/form-data"):
        return
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode() + record.body)
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if part.get_filename() is not None:
            record.files[name] = (part.get_filename(), part.get_content_type(), payload)
        else:
            record.fields.append((name, payload.decode("utf-8")))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve a fake face-migration API that returns a gradient image.")
    parser.add_argument("--port", type=int, default=8199)
    port = parser.parse_args().port
    fake = FakeMoArk(port=port)
    print(f"fake face-migration API on {fake.base_url}{API_PATH} (Ctrl-C to stop)")
    try:
        fake.serve_forever()
    except KeyboardInterrupt:
        pass
