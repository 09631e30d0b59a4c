"""Hands the finished image from the graph (ComfyUI's worker thread) to the request waiting for it (the
server's event loop), in memory: nothing is written to the output folder."""
from __future__ import annotations

import asyncio
import threading


class Mailbox:
    def __init__(self):
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._lock = threading.Lock()

    def open(self, request_id: str) -> asyncio.Future:
        """Call on the event loop; the future gets the image bytes."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._waiting[request_id] = (loop, future)
        return future

    def close(self, request_id: str) -> None:
        with self._lock:
            self._waiting.pop(request_id, None)

    def deliver(self, request_id: str, image: bytes) -> bool:
        """Thread-safe; False when no request waits for this id (a template run by hand, a request gone)."""
        with self._lock:
            waiting = self._waiting.get(request_id)
        if waiting is None:
            return False
        loop, future = waiting
        loop.call_soon_threadsafe(_set_result, future, image)
        return True


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)
