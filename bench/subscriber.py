"""A lean pub/sub subscriber process for the streaming case.

    python -m bench.subscriber REDIS_HOST REDIS_PORT PATTERN OUT.json

PSUBSCRIBEs to PATTERN on a raw socket, prints `ready`, and only receives:
each recv() is kept with the wall-clock time it returned, and RESP parsing
is done after stdin is closed. A message's receive time is that of the
recv() that completed it. Keeping parsing out of the receive loop makes this
subscriber's own cost as small as it can be, so the latency measured is the
relay's (fake server -> worker -> Redis -> subscriber socket), not a slow
client's; a real follower (`Client.stream`, redis-py) adds its own parsing.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time


def _resp_messages(buf: bytes, ends: list, times: list):
    """Yield (receive time, payload bytes) of every pmessage in the buffer."""
    pos, n = 0, len(buf)
    k = 0
    while pos < n:
        if buf[pos:pos + 1] != b"*":
            raise ValueError(f"unexpected RESP at {pos}: {buf[pos:pos + 20]!r}")
        eol = buf.index(b"\r\n", pos)
        count = int(buf[pos + 1:eol])
        pos = eol + 2
        items = []
        for _ in range(count):
            kind = buf[pos:pos + 1]
            eol = buf.index(b"\r\n", pos)
            if kind == b"$":
                size = int(buf[pos + 1:eol])
                items.append(buf[eol + 2:eol + 2 + size])
                pos = eol + 2 + size + 2
            else:  # ':' integer (subscribe confirmations)
                items.append(buf[pos + 1:eol])
                pos = eol + 2
        while k < len(ends) and ends[k] < pos:
            k += 1
        if items and items[0] == b"pmessage":
            yield times[min(k, len(times) - 1)], items[3]


def main(argv=None) -> int:
    host, port, pattern, out = (argv or sys.argv[1:])[:4]
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pat = pattern.encode()
    sock.sendall(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$%d\r\n%s\r\n" % (len(pat), pat))
    chunks, times = [], []
    first = sock.recv(65536)  # the subscribe confirmation
    chunks.append(first)
    times.append(time.time())
    print("ready", flush=True)
    sock.setblocking(False)
    stdin = sys.stdin.fileno()
    recv = sock.recv
    now = time.time
    while True:
        readable, _, _ = select.select([sock, stdin], [], [], 1.0)
        if sock in readable:
            while True:
                try:
                    data = recv(1 << 20)
                except BlockingIOError:
                    break
                if not data:
                    break
                times.append(now())
                chunks.append(data)
        if stdin in readable and sock not in readable:
            break
    ends, total = [], 0
    for c in chunks:
        total += len(c)
        ends.append(total)
    events = []
    for t, payload in _resp_messages(b"".join(chunks), ends, times):
        event = json.loads(payload)
        row = {"recv": t, "ts": event.get("ts"), "type": event.get("type"), "job": event.get("job_id"),
               "seq": event.get("seq")}
        if event.get("type") == "chunk":
            row["text"] = event.get("text")
        events.append(row)
    with open(out, "w") as fh:
        json.dump(events, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
