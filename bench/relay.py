"""The "limit" baseline of the streaming case: a minimal single-threaded relay.

    python -m bench.relay REDIS_HOST REDIS_PORT BASE_URL PREFIX JOBS [--merge]

What the least a Python relay can do costs on this machine: raw sockets and
one `selectors` loop, no threads, no HTTP library, no Celery. It opens JOBS
streamed chat-completion requests to the fake server at once, and for every
SSE piece it reads runs the same Lua event script as `tasks.events` (numbered,
published, kept in the replay stream) with a `chunk` body of the same shape,
so the subscriber and the latency arithmetic are the same as promptq's.
Everything the loop read in one pass over the ready sockets goes to Redis
as one pipelined write. With `--merge` the pieces of one stream that came in
one recv() become one event (as promptq merges them).

Prints `ready` once its connections are open, waits for a line on stdin,
sends the requests, and prints a JSON summary when every stream ended.
It parses only what the fake server sends (chunked, SSE `data:` lines): it
is a yardstick, not a client.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time
from urllib.parse import urlsplit

from promptq.tasks.events import _PUBLISH

from .fake import KEY
from .harness import MODEL


def _resp(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Redis:
    """Just enough RESP: write a pipeline, count its replies."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def call(self, payload: bytes, replies: int) -> list:
        self.sock.sendall(payload)
        out = []
        while len(out) < replies:
            line_end = self.buf.find(b"\r\n")
            if line_end < 0:
                self.buf += self.sock.recv(1 << 20)
                continue
            kind, line = self.buf[:1], self.buf[1:line_end]
            if kind == b"$":
                size = int(line)
                if size < 0:
                    out.append(None)
                    self.buf = self.buf[line_end + 2:]
                    continue
                need = line_end + 2 + size + 2
                while len(self.buf) < need:
                    self.buf += self.sock.recv(1 << 20)
                out.append(self.buf[line_end + 2:line_end + 2 + size])
                self.buf = self.buf[need:]
            else:
                if kind == b"-":
                    raise RuntimeError(line.decode())
                out.append(line)
                self.buf = self.buf[line_end + 2:]
        return out


class _Stream:
    """One streamed response: HTTP head, chunked framing, SSE data lines."""

    __slots__ = ("job_id", "sock", "buf", "body", "head_done", "done", "prefix", "seq_key", "stream_key", "channel", "job_key")

    def __init__(self, job_id: str, sock: socket.socket, prefix: str):
        self.job_id = job_id
        self.sock = sock
        self.buf = b""       # raw bytes not yet de-chunked
        self.body = b""      # de-chunked bytes not yet split into SSE lines
        self.head_done = False
        self.done = False
        # The constant part of the event, encoded once per stream.
        self.prefix = ('"type":"chunk","job_id":%s,"attempt":1,"provider":"openai","target_index":0,'
                       % json.dumps(job_id)).encode()
        self.seq_key = f"{prefix}:seq:{job_id}".encode()
        self.stream_key = f"{prefix}:replay:{job_id}".encode()
        self.channel = f"{prefix}:events:{job_id}".encode()
        self.job_key = f"{prefix}:job:{job_id}".encode()

    def feed(self, data: bytes) -> list:
        """Texts of the pieces completed by `data`."""
        buf = self.buf + data
        if not self.head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return []
            buf = buf[end + 4:]
            self.head_done = True
        body = [self.body]
        pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(buf[pos:eol], 16)
            if size == 0:
                self.done = True
                pos = len(buf)
                break
            if len(buf) < eol + 2 + size + 2:
                break
            body.append(buf[eol + 2:eol + 2 + size])
            pos = eol + 2 + size + 2
        self.buf = buf[pos:]
        text = b"".join(body)
        cut = text.rfind(b"\n\n")
        if cut < 0:
            self.body = text
            return []
        self.body = text[cut + 2:]
        pieces = []
        for line in text[:cut].split(b"\n"):
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                self.done = True
                continue
            choices = json.loads(data).get("choices") or []
            content = choices and (choices[0].get("delta") or {}).get("content")
            if content:
                pieces.append(content)
        return pieces


def main(argv=None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    merge = "--merge" in args
    args = [a for a in args if a != "--merge"]
    host, port, base_url, prefix, jobs = args[0], int(args[1]), args[2], args[3], int(args[4])
    prompt = args[5] if len(args) > 5 else "stream"
    url = urlsplit(base_url)
    path = url.path.rstrip("/") + "/chat/completions"
    redis = _Redis(host, port)
    sha = redis.call(_resp("SCRIPT", "LOAD", _PUBLISH), 1)[0]
    sel = selectors.DefaultSelector()
    streams = []
    for i in range(jobs):
        sock = socket.create_connection((url.hostname, url.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        streams.append(_Stream(f"relay-{i}", sock, prefix))
    print("ready", flush=True)
    sys.stdin.readline()
    cpu0 = time.process_time()
    for i, s in enumerate(streams):
        body = json.dumps({"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
                           "messages": [{"role": "user", "content": f"{prompt} r{i}"}]}).encode()
        s.sock.sendall(b"POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (path.encode(), url.netloc.encode(), KEY.encode(), len(body), body))
        s.sock.setblocking(False)
        sel.register(s.sock, selectors.EVENT_READ, s)
    open_streams, events, pieces, round_trips = jobs, 0, 0, 0
    maxlen, ttl = b"10000", b"86400"
    while open_streams:
        out, count = [], 0
        for key, _ in sel.select():
            s = key.data
            try:
                data = s.sock.recv(1 << 16)
            except BlockingIOError:
                continue
            texts = s.feed(data) if data else []
            if texts:
                now = b"%.6f" % time.time()
                for text in (["".join(texts)] if merge else texts):
                    body = s.prefix + b'"ts":' + now + b',"text":' + json.dumps(text).encode() + b"}"
                    out.append(_resp(b"EVALSHA", sha, b"3", s.seq_key, s.stream_key, s.job_key, body, maxlen, ttl, s.channel, b"1"))
                    count += 1
                pieces += len(texts)
            if s.done or not data:
                sel.unregister(s.sock)
                s.sock.close()
                open_streams -= 1
        if out:
            redis.call(b"".join(out), count)
            events += count
            round_trips += 1
    print(json.dumps({"events": events, "pieces": pieces, "redis_round_trips": round_trips,
                      "cpu_s": round(time.process_time() - cpu0, 3)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
