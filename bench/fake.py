"""The fake OpenAI server the benchmark talks to, run in its own process.

    python -m bench.fake --latency 0.2 --chunk-count 100 [--chunk-delay S] [--stamp] [--gevent]
    python -m bench.fake --rpm 600 [--tpm 1000000] [--burst second|minute] ...

prints its base URL on the first line of stdout and serves until stdin is
closed (or SIGTERM). It is `tests.fakes.FakeOpenAI` (the wire format the
tests trust), with two bench-only changes:

* `--stamp` replaces the text of each streamed piece with the wall-clock
  time it was written to the socket, `[<time.time()>]`, so a subscriber can
  measure send -> receive latency of every chunk across processes (one host,
  one clock).
* `--rpm` (and `--tpm`, `--burst`) puts it behind OpenAI's rate limiter
  (`tests.fakes.ratelimited_server.RateLimitedOpenAI`); its counts are at
  `GET <url>/__fake__/stats`.
* a listen backlog of 1024 instead of socketserver's 5, so 500 connections
  opened at once are not dropped and retried by TCP (a harness artefact that
  would otherwise show up as a 1 s or 3 s stall in the worker's numbers).

Running it in its own process keeps its CPU and GIL apart from the driver's.
`--gevent` serves each connection on a greenlet instead of an OS thread
(cheaper at hundreds of connections); the protocol is unchanged.
"""

from __future__ import annotations

import argparse
import select
import sys
import time

KEY = "sk-bench-0123456789abcdef"


def build(stamp: bool, rate_limited: bool = False):
    from tests.fakes.listener import Listener
    from tests.fakes.openai_server import FakeOpenAI
    from tests.fakes.ratelimited_server import RateLimitedOpenAI
    from tests.fakes.wire import sse

    Listener.request_queue_size = 1024
    base = RateLimitedOpenAI if rate_limited else FakeOpenAI

    class BenchOpenAI(base):
        def __init__(self, *, stamp: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.stamp = stamp

        def stream_piece(self, ex, index, text):
            if self.stamp:
                text = "[%.6f]" % time.time()
            return sse(self.chunk(ex, [self.choice({"content": text})]))

        def _dispatch(self, *args, **kwargs):
            super()._dispatch(*args, **kwargs)
            # Keep memory flat over 100,000 requests: the bench never reads them.
            with self._lock:
                if len(self._requests) > 1000:
                    del self._requests[:-100]

    return BenchOpenAI


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fake")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--chunk-count", type=int, default=None)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--stamp", action="store_true")
    parser.add_argument("--gevent", action="store_true")
    parser.add_argument("--rpm", type=float, default=None, help="enforce requests per minute (OpenAI's way)")
    parser.add_argument("--tpm", type=float, default=10_000_000, help="tokens per minute (with --rpm)")
    parser.add_argument("--burst", choices=["second", "minute"], default="second",
                        help="bucket capacity: one second of quota, or the whole minute (with --rpm)")
    args = parser.parse_args(argv)
    if args.gevent:
        from gevent import monkey

        monkey.patch_all()
    cls = build(args.stamp, rate_limited=args.rpm is not None)
    limits = dict(rpm=args.rpm, tpm=args.tpm, burst=args.burst) if args.rpm is not None else {}
    server = cls(api_key=KEY, latency_s=args.latency, chunk_count=args.chunk_count,
                 chunk_delay_s=args.chunk_delay, stamp=args.stamp, **limits).start()
    print(server.base_url, flush=True)
    # select (patched under gevent) so the hub keeps serving while we wait.
    select.select([sys.stdin], [], [])
    server.stop(timeout=2.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
