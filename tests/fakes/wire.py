"""Byte-level HTTP/1.1 response writing for the fake servers.

Everything that touches the socket lives here so the vendor modules only
build payloads.  Streams use chunked transfer encoding with one ``write`` per
chunk (the handler's ``wfile`` is unbuffered), so a client really sees each
event arrive on its own.  ``cut`` ends a response the way a crashed upstream
or a reset proxy does: the TCP connection goes away with no chunked
terminator and no complete body.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any, Mapping, Optional


def dumps(obj: Any) -> bytes:
    # Compact separators, as the real APIs send (and as llama-server's
    # safe_json_to_str does); keeps every event on a single line.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sse(obj: Any, event: Optional[str] = None) -> bytes:
    """One Server-Sent Event; a blank line terminates it (WHATWG SSE spec)."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + dumps(obj) + b"\n\n"


def sse_data(text: str, event: Optional[str] = None) -> bytes:
    """An SSE event with a raw (possibly non-JSON) data payload."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode("utf-8")


def sse_comment(text: str) -> bytes:
    """An SSE comment line (starts with ':'), ignored by compliant parsers."""
    return f": {text}\n\n".encode("utf-8")


def ndjson(obj: Any) -> bytes:
    """One newline-delimited JSON line (Ollama's application/x-ndjson)."""
    return dumps(obj) + b"\n"


class Wire:
    """Writes one response on a handler's connection."""

    def __init__(self, handler: BaseHTTPRequestHandler, stop_event: threading.Event) -> None:
        self._h = handler
        self._stop = stop_event
        self.started = False   # status line sent: no second response possible
        self.chunked = False

    # -- waiting -------------------------------------------------------------

    def wait(self, seconds: Optional[float]) -> bool:
        """Sleep, but wake at once when the server stops.

        Returns True if the full time passed, False if the server is
        stopping (the caller should then abandon the response).
        ``None`` waits until the server stops.
        """
        if seconds is not None and seconds <= 0:
            return not self._stop.is_set()
        return not self._stop.wait(seconds)

    # -- whole responses -----------------------------------------------------

    def _head(self, status: int, headers: Mapping[str, str]) -> None:
        self.started = True
        self._h.send_response(status)
        for key, value in headers.items():
            self._h.send_header(key, value)
        self._h.end_headers()

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        all_headers.update(headers or {})
        self._head(status, all_headers)
        self._h.wfile.write(body)
        self._h.wfile.flush()

    def send_json(self, status: int, obj: Any, headers: Optional[Mapping[str, str]] = None,
                  content_type: str = "application/json") -> None:
        self.send_bytes(status, dumps(obj), content_type, headers)

    def send_truncated(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Promise the whole body in Content-Length, send half, then cut.

        The client sees an incomplete read rather than a clean error.
        """
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        all_headers.update(headers or {})
        self._head(status, all_headers)
        self._h.wfile.write(body[: max(1, len(body) // 2)])
        self._h.wfile.flush()
        self.cut()

    # -- streams -------------------------------------------------------------

    def start_stream(self, content_type: str, headers: Optional[Mapping[str, str]] = None) -> None:
        all_headers = {
            "Content-Type": content_type,
            "Transfer-Encoding": "chunked",
            "Cache-Control": "no-cache",
        }
        all_headers.update(headers or {})
        self._head(200, all_headers)
        self.chunked = True

    def chunk(self, data: bytes) -> None:
        """Send one chunk as a single write so it leaves the host at once."""
        if not data:
            return  # a zero-length chunk would be the terminator
        self._h.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        self._h.wfile.flush()

    def end_stream(self) -> None:
        self._h.wfile.write(b"0\r\n\r\n")
        self._h.wfile.flush()

    def cut(self) -> None:
        """Drop the TCP connection now, mid-body, without a terminator."""
        self._h.close_connection = True
        try:
            self._h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
