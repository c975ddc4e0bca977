"""The threaded HTTP listener under every FakeServer.

A stock ThreadingHTTPServer, plus bookkeeping of the live client sockets and
handler threads so ``FakeServer.stop`` can shut those sockets down (waking
any thread blocked reading an idle keep-alive connection) and join the
threads, instead of leaking them or blocking on a hung one.
"""

from __future__ import annotations

import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .wire import Wire


class Listener(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # FakeServer.stop joins the handler threads itself
    # socketserver's default backlog is 5: a burst of connections (a 200-slot
    # pool starting at once) then has its SYNs dropped and retried seconds
    # later, which no real API does at that size (nginx listens with 511).
    request_queue_size = 1024

    def __init__(self, fake: Any) -> None:
        self.fake = fake
        self.stop_event = threading.Event()
        self.live_lock = threading.Lock()
        self.live_sockets: set = set()
        self.live_threads: set = set()
        super().__init__(("127.0.0.1", 0), Handler)

    def handle_error(self, request, client_address) -> None:
        # A client resetting a keep-alive connection (after closing a stream
        # early, or on its own error) is normal; anything else is printed.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)

    def process_request_thread(self, request, client_address):  # runs in the handler thread
        with self.live_lock:
            self.live_sockets.add(request)
            self.live_threads.add(threading.current_thread())
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.live_lock:
                self.live_sockets.discard(request)
                self.live_threads.discard(threading.current_thread())


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked responses

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output clean
        pass

    def _dispatch(self) -> None:
        server: Listener = self.server  # type: ignore[assignment]
        raw = self._read_body()
        wire = Wire(self, server.stop_event)
        try:
            server.fake._dispatch(wire, self.command, self.path, dict(self.headers.items()), raw)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client went away; nothing to tell it
        except Exception:  # a bug in the fake itself: make it loud, not a hang
            self.close_connection = True
            if not wire.started:
                wire.send_bytes(599, traceback.format_exc().encode(), "text/plain")
            else:
                wire.cut()

    def _read_body(self) -> bytes:
        # Some clients (httpx with a streaming body, aiohttp) upload with
        # chunked transfer encoding instead of Content-Length.
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # skip trailers
                    return bytes(body)
                body.extend(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch
