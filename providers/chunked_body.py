"""A streamed HTTP body read straight off the socket: one yield per read.

urllib3's `read_chunked` (what `requests.iter_content` uses) reads a chunked
body one HTTP chunk at a time: a `readline` for the size, a read for the
data, a read for the CRLF, and its generator and error-catcher layers around
each. A provider streaming 100 small SSE events sends 100 chunks, so that was
about a fifth of promptq's CPU per relayed chunk (bench/, streaming case).
Here the bytes come from one `read1` of the response's buffered socket file
(whatever has arrived, one syscall at most), the chunk framing is taken off
in a loop over that buffer, and everything the read completed is yielded as
one piece. So chunks that arrived together stay together: the relay turns
them into one event (tasks.chunk_relay).

Only for what it can read exactly: a `requests` response whose urllib3 body
is chunked, not content-encoded, and not yet read. Anything else keeps the
library path (`body_chunks` returns None). When the terminating chunk has
been read, the connection goes back to the pool as urllib3 would put it;
a body abandoned early is closed with the response, as before.

Transport failures are raised as the `requests` exceptions the library path
raises (ReadTimeout, ConnectionError, ChunkedEncodingError), so
`map_request_errors` classifies both paths the same way.
"""

from __future__ import annotations

import socket
from typing import Any, Callable, Iterator, Optional

import requests

READ_SIZE = 64 * 1024


def body_chunks(response: requests.Response) -> Optional[Iterator[bytes]]:
    """The body of a chunked response, one bytes object per socket read; None
    when this reader does not apply (the caller uses `iter_content`)."""
    raw = response.raw
    fp = getattr(getattr(raw, "_fp", None), "fp", None)
    if (
        fp is None
        or not hasattr(fp, "read1")
        or not getattr(raw, "chunked", False)
        or getattr(raw, "_fp_bytes_read", 0)
        or response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity")
        or getattr(response, "_content_consumed", False)
    ):
        return None
    return _read(fp.read1, lambda: _release(raw))


def _release(raw: Any) -> None:
    """The body was read to its end: hand the connection back to the pool."""
    original = getattr(raw, "_original_response", None) or raw._fp
    original.close()  # closes the socket *file*, not the socket (as urllib3 does)
    raw.release_conn()


def _read(read1: Callable[[int], bytes], on_end: Callable[[], None]) -> Iterator[bytes]:
    for data in dechunk(_reads(read1)):
        if data is None:
            on_end()
            return
        yield data


def _reads(read1: Callable[[int], bytes]) -> Iterator[bytes]:
    while True:
        try:
            data = read1(READ_SIZE)
        except socket.timeout as exc:  # TimeoutError: the read timeout passed
            raise requests.exceptions.ReadTimeout(f"read timed out: {exc}") from None
        except OSError as exc:
            raise requests.exceptions.ConnectionError(f"connection broken: {exc!r}") from None
        if not data:
            raise requests.exceptions.ChunkedEncodingError("connection closed before the last chunk")
        yield data


def dechunk(reads: Iterator[bytes]) -> Iterator[Optional[bytes]]:
    """Take the chunked framing off a sequence of reads (RFC 9112 section 7.1).

    Yields the data each read completed (nothing for a read that held only
    framing), then None once the last chunk and its trailer section are in.
    Pure: `reads` may split the framing at any byte.
    """
    pending = b""  # an unfinished size or trailer line
    left = 0       # data bytes of the current chunk still to come
    skip = 0       # bytes of the CRLF after a chunk's data still to come
    last = False   # the zero-size chunk was seen: trailer lines until a blank one
    for data in reads:
        if pending:
            data, pending = pending + data, b""
        out = []
        pos, n = 0, len(data)
        while pos < n:
            if left:
                end = pos + left
                if end >= n:
                    out.append(data[pos:] if pos else data)
                    left = end - n
                    if not left:
                        skip = 2
                    break
                out.append(data[pos:end])
                pos, left, skip = end, 0, 2
                continue
            if skip:
                take = min(skip, n - pos)
                if data[pos:pos + take] != b"\r\n"[2 - skip:2 - skip + take]:
                    raise requests.exceptions.ChunkedEncodingError("chunk data not followed by CRLF")
                pos += take
                skip -= take
                continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                pending = data[pos:]
                if len(pending) > 4096:
                    raise requests.exceptions.ChunkedEncodingError("chunk size line too long")
                break
            line = data[pos:eol].rstrip(b"\r")
            pos = eol + 1
            if last:
                if not line:  # the blank line after the trailers: the body is over
                    if out:
                        yield b"".join(out)
                    yield None
                    return
                continue  # a trailer field: nothing promptq reads
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise requests.exceptions.ChunkedEncodingError(f"bad chunk size line {line[:40]!r}") from None
            if size < 0:
                raise requests.exceptions.ChunkedEncodingError(f"bad chunk size line {line[:40]!r}")
            if size == 0:
                last = True
            else:
                left = size
        if out:
            yield out[0] if len(out) == 1 else b"".join(out)
    raise requests.exceptions.ChunkedEncodingError("body ended before the last chunk")
