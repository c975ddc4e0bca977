"""chunked_body: a chunked body read straight off the socket, one piece per read.

`dechunk` is pure and tested with its input split at every byte; the reader
is tested against a raw-socket HTTP server whose writes we control exactly
(the fake servers write one chunk per event, so whether two arrive in one
read would be up to timing)."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import requests

from promptq.providers.chunked_body import dechunk
from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.openai_provider import OpenAIProvider

BODY = b"data one\n\n" + b"x" * 300 + b"\n"
FRAMED = (b"A;ext=1\r\n" + BODY[:10] + b"\r\n" + b"%X\r\n" % (len(BODY) - 10) + BODY[10:] + b"\r\n"
          + b"0\r\nX-Trailer: 1\r\n\r\n")


def run(reads):
    out = list(dechunk(iter(reads)))
    assert out[-1] is None and None not in out[:-1]
    return b"".join(out[:-1])


@pytest.mark.parametrize("cut", range(len(FRAMED) + 1))
def test_dechunk_split_at_every_byte(cut):
    parts = [FRAMED[:cut], FRAMED[cut:]]
    assert run([p for p in parts if p]) == BODY


def test_dechunk_byte_by_byte():
    assert run([FRAMED[i:i + 1] for i in range(len(FRAMED))]) == BODY


def test_dechunk_yields_what_each_read_completed():
    chunks = b"3\r\nabc\r\n2\r\nde\r\n"
    assert list(dechunk(iter([chunks, b"1\r\nf\r\n0\r\n\r\n"]))) == [b"abcde", b"f", None]


@pytest.mark.parametrize("framed, what", [
    (b"zz\r\nabc\r\n", "bad chunk size"),
    (b"3\r\nabcXY", "not followed by CRLF"),
    (b"3\r\nabc\r\n", "before the last chunk"),
])
def test_dechunk_rejects_broken_framing(framed, what):
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match=what):
        list(dechunk(iter([framed])))


# --- against a real socket ----------------------------------------------------------


def sse(content):
    return b"data: " + json.dumps({"model": "m", "choices": [{"index": 0, "delta": {"content": content}}]}).encode() + b"\n\n"


def chunked(*events):
    return b"".join(b"%X\r\n%s\r\n" % (len(e), e) for e in events)


class RawServer:
    """Answers every request on a connection with `reply(n)` in ONE sendall."""

    def __init__(self, reply):
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                length = int([h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0])
                while len(buf) < length:
                    buf += conn.recv(65536)
                buf = buf[length:]
                self.requests += 1
                out = self.reply(self.requests)
                if out is None:
                    return
                conn.sendall(out)
                if getattr(self.reply, "then_close", False):
                    conn.shutdown(socket.SHUT_RDWR)  # mid-body: the client must not wait for more
                    return

    def close(self):
        self.sock.close()


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.fixture
def server(request):
    srv = RawServer(request.param)
    yield srv
    srv.close()


def whole(n):
    return HEAD + chunked(sse("Hel"), sse("lo"), sse(" world"), b"data: [DONE]\n\n") + b"0\r\n\r\n"


@pytest.mark.parametrize("server", [whole], indirect=True)
def test_pieces_that_arrive_together_come_as_one_batch(server):
    provider = OpenAIProvider({"api_key": "sk-test", "base_url": server.base_url})
    stream = provider.stream("m", "hi")
    assert list(stream.batches()) == [["Hel", "lo", " world"]]
    assert stream.result.text == "Hello world"
    # Iterating piece by piece is unchanged.
    assert list(provider.stream("m", "hi")) == ["Hel", "lo", " world"]


@pytest.mark.parametrize("server", [whole], indirect=True)
def test_a_stream_read_to_its_end_gives_its_connection_back(server):
    provider = OpenAIProvider({"api_key": "sk-test", "base_url": server.base_url})
    for _ in range(3):
        stream = provider.stream("m", "hi")
        list(stream)
        assert stream.result.text == "Hello world"
    assert server.requests == 3 and server.connections == 1


def cut(n):
    return HEAD + chunked(sse("Hel")) + b"40\r\ndata: {\"partial"


cut.then_close = True


@pytest.mark.parametrize("server", [cut], indirect=True)
def test_a_body_cut_mid_chunk_is_a_retryable_network_error(server):
    provider = OpenAIProvider({"api_key": "sk-test", "base_url": server.base_url})
    got = []
    with pytest.raises(ProviderError) as info:
        for piece in provider.stream("m", "hi"):
            got.append(piece)

    assert got == ["Hel"]
    assert info.value.category is ErrorCategory.NETWORK_ERROR and info.value.retryable


def plain(n):
    body = sse("Hel") + sse("lo") + b"data: [DONE]\n\n"
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.mark.parametrize("server", [plain], indirect=True)
def test_a_body_that_is_not_chunked_takes_the_library_path(server):
    provider = OpenAIProvider({"api_key": "sk-test", "base_url": server.base_url})
    assert list(provider.stream("m", "hi")) == ["Hel", "lo"]
