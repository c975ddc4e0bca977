"""Helpers shared by the provider tests (not fixtures: plain functions)."""

from __future__ import annotations

import socket
from typing import Any, Iterable, List, Optional, Tuple

from promptq.providers.base import ProviderResult, ProviderStream
from promptq.providers.error_handling import ProviderError


def drain(stream: ProviderStream) -> Tuple[List[str], ProviderResult]:
    """Every chunk of a stream, and the result it returned."""
    chunks = list(stream)
    assert stream.result is not None, "a finished stream must carry its result"
    return chunks, stream.result


def drain_until_error(stream: ProviderStream) -> Tuple[List[str], ProviderError]:
    """The chunks a stream yielded before it raised, and the error it raised."""
    chunks: List[str] = []
    try:
        for chunk in stream:
            chunks.append(chunk)
    except ProviderError as err:
        return chunks, err
    raise AssertionError(f"the stream ended without an error after {chunks!r}")


def decode_all(decoder: Any, chunks: Iterable[bytes]) -> Tuple[list, Any]:
    """Feed every chunk to an SSE or NDJSON decoder, then flush: all it decoded, and the decoder."""
    out: list = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    out.extend(decoder.flush())
    return out, decoder


def closed_port_url(path: str = "") -> str:
    """A loopback URL nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Closed without listen(): the port is free and refuses connections.
    return f"http://127.0.0.1:{port}{path}"


def request_body(fake, index: int = -1) -> Optional[dict]:
    return fake.requests[index].body
