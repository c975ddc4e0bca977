"""Incremental, I/O-free newline-delimited JSON decoder (Ollama ``/api/chat``).

Ollama streams one JSON object per line, e.g.::

    {"model":"llama3.2","message":{"role":"assistant","content":"Hi"},"done":false}
    {"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,...}

Lines are split on the LF byte *before* UTF-8 decoding: in UTF-8 the byte 0x0A
never occurs inside a multibyte character, and JSON forbids raw newlines in
strings, so a chunk boundary anywhere (even mid-character) is harmless.

A line that is not valid JSON raises :class:`NDJSONLineError`; it is never
skipped, because a silently dropped line would be a silently dropped token.
The error is final: the decoder refuses further input.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["NDJSONDecoder", "NDJSONLineError", "iter_ndjson"]

_MAX_LINE_IN_ERROR = 200


class NDJSONLineError(ValueError):
    """A line of the stream is not valid UTF-8 JSON.

    ``line_number`` is 1-based and counts every line, blank ones included, so
    it matches what an editor shows for a captured stream.  ``line`` is the raw
    text, truncated to 200 characters.  ``preceding`` holds the objects decoded
    earlier in the same ``feed``/``flush`` call, which the raise would
    otherwise lose.
    """

    def __init__(self, line_number: int, line: str, reason: str) -> None:
        self.line_number = line_number
        self.line = line[:_MAX_LINE_IN_ERROR]
        self.reason = reason
        self.preceding: list[Any] = []
        shown = self.line + ("..." if len(line) > _MAX_LINE_IN_ERROR else "")
        super().__init__(f"NDJSON line {line_number}: {reason}: {shown!r}")


class NDJSONDecoder:
    """Feed raw bytes, get parsed JSON values of every complete line back."""

    def __init__(self) -> None:
        # Unterminated tail of the current line.  bytearray += is amortised
        # O(1), so a long line delivered a byte at a time stays linear.
        self._buf = bytearray()
        self._line_number = 0
        self._error: NDJSONLineError | None = None
        self._closed = False

    @property
    def pending(self) -> bool:
        """True if a non-blank partial line is buffered (not yet returned)."""
        return bool(self._buf.strip())

    def feed(self, chunk: bytes) -> list[Any]:
        """Decode one chunk; return the values of the lines it completed."""
        self._check_usable()
        if type(chunk) is not bytes:
            chunk = bytes(chunk)  # `in`/split on a memoryview would not work
        if b"\n" not in chunk:
            self._buf += chunk
            return []
        pieces = chunk.split(b"\n")
        self._buf += pieces[0]
        pieces[0] = bytes(self._buf)
        self._buf = bytearray(pieces.pop())
        return self._parse_lines(pieces)

    def flush(self) -> list[Any]:
        """End of stream: parse a final line that lacks its trailing newline."""
        self._check_usable()
        self._closed = True
        lines = [bytes(self._buf)]
        self._buf = bytearray()
        return self._parse_lines(lines)

    def _check_usable(self) -> None:
        if self._error is not None:
            # A fresh error, so the first one's ``preceding`` is left intact.
            first = self._error
            raise NDJSONLineError(first.line_number, first.line, first.reason) from first
        if self._closed:
            raise RuntimeError("NDJSONDecoder used after flush()")

    def _parse_lines(self, lines: list[bytes]) -> list[Any]:
        out: list[Any] = []
        for raw in lines:
            self._line_number += 1
            if self._line_number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[3:]  # json.loads(str) would reject a BOM
            # strip() tolerates CRLF and stray whitespace around the value.
            raw = raw.strip()
            if not raw:
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                shown = raw.decode("utf-8", "replace")
                raise self._fail(shown, f"invalid UTF-8 ({exc.reason})", out) from exc
            try:
                out.append(json.loads(text))
            except json.JSONDecodeError as exc:
                reason = f"invalid JSON ({exc.msg} at column {exc.colno})"
                raise self._fail(text, reason, out) from exc
        return out

    def _fail(self, text: str, reason: str, preceding: list[Any]) -> NDJSONLineError:
        # Remember the error so any later feed()/flush() re-raises it: the
        # stream is unusable once a line is lost.
        err = NDJSONLineError(self._line_number, text, reason)
        err.preceding = preceding
        self._error = err
        self._buf = bytearray()
        return err


def iter_ndjson(
    byte_chunks: Iterable[bytes], *, decoder: NDJSONDecoder | None = None
) -> Iterator[Any]:
    """Yield parsed values from an iterable of raw chunks, then flush.

    On a malformed line, values that preceded it are yielded before the
    :class:`NDJSONLineError` propagates.
    """
    dec = decoder if decoder is not None else NDJSONDecoder()
    try:
        for chunk in byte_chunks:
            if chunk:
                yield from dec.feed(chunk)
        yield from dec.flush()
    except NDJSONLineError as err:
        yield from err.preceding
        err.preceding = []  # already delivered; don't hand them out twice
        raise
