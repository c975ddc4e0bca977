"""Incremental, I/O-free Server-Sent Events decoder.

Implements the WHATWG "Interpreting an event stream" algorithm
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation)
over raw byte chunks split at arbitrary positions, so it can sit directly
behind ``requests``' ``iter_content(chunk_size=None)`` or any other transport.

Spec behaviour worth knowing:

* One leading U+FEFF BOM is dropped; bytes are decoded as UTF-8 with
  replacement characters for invalid sequences.
* Lines end with CRLF, LF or CR.  A CR is acted on immediately (so an event
  terminated by ``\\r\\r`` is dispatched without waiting for more input) and a
  LF that directly follows it - even in the next chunk - is swallowed.
* A blank line dispatches the event, but only if at least one ``data`` field
  was seen (``data:`` with an empty value does count, giving ``data == ""``).
* ``id`` is the stream's *last event ID*: it persists across events until a
  new ``id`` field changes it (``None`` until the stream sends one).
* End of stream discards an unterminated event; ``pending`` tells the caller
  that happened, so a truncated provider stream can be told from a clean end.

Deliberate choices beyond the spec: an empty ``event:`` value is reported as
``None`` (the spec treats it as the default type "message"), and ``retry`` is
reported on the first event dispatched at or after the ``retry`` field, so a
retry-only block is not lost (``SSEDecoder.retry`` holds the latest value).
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEDecoder", "iter_sse"]


@dataclass(frozen=True)
class SSEEvent:
    event: str | None  # value of the last `event:` field; None if absent or empty
    data: str  # `data:` values joined with "\n"
    id: str | None = None  # last event ID at dispatch time
    retry: int | None = None  # reconnection time (ms) received since the previous event


class SSEDecoder:
    """Feed raw bytes, get complete :class:`SSEEvent` objects back.

    ``comments`` collects the text of comment lines (``": OPENROUTER PROCESSING"``
    is recorded as ``"OPENROUTER PROCESSING"``); ``on_comment``, if given, is
    also called with each one, e.g. to refresh a liveness timer.
    """

    def __init__(self, on_comment: Callable[[str], None] | None = None) -> None:
        # utf-8-sig strips exactly one leading BOM, even if split across chunks.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._decode = self._decoder.decode
        # The unterminated tail of the current line, kept as pieces and joined
        # once the line ends: appending to a str would be O(n^2) when a long
        # line arrives a byte at a time.
        self._partial: list[str] = []
        self._skip_lf = False  # the last line ended with CR; a following LF belongs to it
        self._data: list[str] = []
        self._has_data = False
        self._event_type = ""
        self._dirty = False  # fields seen since the last blank line
        self._closed = False
        self.last_event_id: str | None = None
        self.retry: int | None = None  # latest valid `retry` value on this stream
        self._retry_unreported: int | None = None
        self.comments: list[str] = []
        self._on_comment = on_comment

    @property
    def pending(self) -> bool:
        """True if input was received that did not complete an event.

        Covers an unterminated line, fields not yet followed by a blank line and
        an incomplete UTF-8 sequence.  It stays meaningful after :meth:`flush`,
        where True means the stream was truncated mid-event.
        """
        return bool(self._partial) or self._dirty or bool(self._decoder.getstate()[0])

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode one chunk; return the events it completed (often none)."""
        if self._closed:
            raise RuntimeError("SSEDecoder.feed() called after flush()")
        text = self._decode(chunk)
        if not text:
            return []
        # Inline fast path for a mid-line chunk: with tiny chunks the per-call
        # overhead dominates, so skip the extra method call.
        if "\n" not in text and "\r" not in text and not self._skip_lf:
            self._partial.append(text)
            return []
        return self._feed_text(text)

    def flush(self) -> list[SSEEvent]:
        """Signal end of stream.

        Per spec an unterminated event is discarded, never dispatched, so this
        returns an empty list; check :attr:`pending` to detect truncation.
        Trailing undecodable bytes become U+FFFD in the (discarded) tail.
        """
        if not self._closed:
            self._closed = True
            tail = self._decoder.decode(b"", True)
            if tail:
                self._partial.append(tail)
        return []

    def _feed_text(self, text: str) -> list[SSEEvent]:
        if self._skip_lf:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return []
        if "\r" in text:
            # Normalise to LF.  A CR at the very end still ends its line now; the
            # flag drops the LF if the next chunk starts with one.
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        elif "\n" not in text:
            self._partial.append(text)
            return []
        lines = text.split("\n")
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = "".join(self._partial)
            self._partial = []
        tail = lines.pop()
        if tail:
            self._partial.append(tail)
        events: list[SSEEvent] = []
        for line in lines:
            if line:
                self._process_field(line)
            else:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
        return events

    def _process_field(self, line: str) -> None:
        if line[0] == ":":
            comment = line[2:] if line.startswith(": ") else line[1:]
            self.comments.append(comment)
            if self._on_comment is not None:
                self._on_comment(comment)
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        # Without a colon the whole line is the field name and the value is "".
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:  # spec: ids containing NUL are ignored
                self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():  # str.isdigit alone admits "²"
                self.retry = self._retry_unreported = int(value)
        else:
            return  # unknown field: ignored, and not evidence of a pending event
        self._dirty = True

    def _dispatch(self) -> SSEEvent | None:
        self._dirty = False
        if not self._has_data:
            # Spec: no data -> reset the data and event type buffers, dispatch nothing.
            self._event_type = ""
            return None
        event = SSEEvent(
            event=self._event_type or None,
            data="\n".join(self._data),
            id=self.last_event_id,
            retry=self._retry_unreported,
        )
        self._data = []
        self._has_data = False
        self._event_type = ""
        self._retry_unreported = None
        return event


def iter_sse(
    byte_chunks: Iterable[bytes], *, decoder: SSEDecoder | None = None
) -> Iterator[SSEEvent]:
    """Yield events from an iterable of raw chunks, then flush.

    Pass your own ``decoder`` to inspect ``pending``/``comments`` afterwards.
    """
    dec = decoder if decoder is not None else SSEDecoder()
    for chunk in byte_chunks:
        if chunk:
            yield from dec.feed(chunk)
    yield from dec.flush()
