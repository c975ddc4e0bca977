"""FakeServer: a real HTTP server on 127.0.0.1 that plays an LLM vendor.

The base class owns everything vendor-neutral: the listening socket and its
threads, request recording, the fault queue, the ``/__fake__`` control
endpoints, and the order in which a generation request is answered (auth,
validation, fault, delay, then a JSON body or a stream).  Subclasses supply
the vendor's routes and byte-exact payloads through the hook methods at the
bottom of the class.

Shutdown must be prompt even while handlers sleep, hang or stream: every wait
goes through ``Wire.wait`` (which wakes on the stop event) and ``stop`` shuts
down every open client socket, so no thread stays blocked in I/O.
"""

from __future__ import annotations

import collections
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional
from urllib.parse import urlsplit

from .directives import ReplyPlan, plan_reply
from .faults import BODY_FAULTS, Fault, FaultLike, parse_fault, retry_after_headers
from .listener import Listener
from .wire import Wire, dumps


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]      # keys lower-cased
    body: Any                    # parsed JSON, or None if absent / not JSON
    raw: bytes = b""
    fault: Optional[str] = None  # spec ("name" / "name:arg") of the fault applied

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "path": self.path, "query": self.query,
            "headers": self.headers, "body": self.body, "fault": self.fault,
        }


class Reply(NamedTuple):
    status: int
    body: Any                    # JSON-able object
    headers: dict[str, str]


@dataclass
class Exchange:
    """One generation request as the vendor hooks see it."""

    request: RecordedRequest
    body: dict
    plan: ReplyPlan
    fault: Optional[Fault]
    stream: bool
    model: str
    id: str
    created: int


Route = Callable[[Wire, RecordedRequest], None]


class FakeServer:
    """Base for the vendor fakes; use a subclass such as ``FakeOpenAI``."""

    base_path = ""            # appended to ``url`` to form ``base_url``
    default_model = "fake-model"
    stream_content_type = "text/event-stream"
    id_prefix = "fake-"

    def __init__(
        self,
        *,
        api_key: Optional[str] = None,
        model: Optional[str] = None,
        models: Optional[list[str]] = None,
        chunk_count: Optional[int] = None,
        chunk_size: Optional[int] = None,
        latency_s: float = 0.0,
        chunk_delay_s: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.model = model or self.default_model
        self.models = list(models) if models is not None else None  # None: accept any model
        self.chunk_count = chunk_count
        self.chunk_size = chunk_size
        self.latency_s = latency_s
        self.chunk_delay_s = chunk_delay_s
        self._httpd: Optional[Listener] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Condition()
        self._faults: collections.deque[Fault] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        # hold(): generation replies wait here until release(), so a test can
        # see how many requests are in flight at once without timing anything.
        self._gate = threading.Event()
        self._gate.set()
        self._held = 0

    # -- lifecycle -------------------------------------------------------

    def start(self) -> "FakeServer":
        if self._httpd is not None:
            return self
        self._httpd = Listener(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stop_event.set()       # wakes every Wire.wait (slow, hang, delays)
        self._gate.set()             # and every held request, which then sees the stop
        httpd.shutdown()             # serve_forever returns; no new connections
        httpd.server_close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Re-read each round: a connection accepted just before shutdown()
            # may register its thread after the first look.
            with httpd.live_lock:
                sockets, threads = list(httpd.live_sockets), list(httpd.live_threads)
            if not threads:
                break
            for sock in sockets:     # unblocks reads on idle keep-alive connections
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What the provider client should be configured with."""
        return self.url + self.base_path

    # -- scripting and inspection ----------------------------------------

    def push(self, fault: FaultLike, times: int = 1) -> None:
        """Make the next ``times`` generation requests fail with ``fault``.

        Faults queue FIFO.  A request carrying its own ``[[fault:...]]``
        directive uses that instead and leaves the queue untouched.
        """
        parsed = parse_fault(fault)
        with self._lock:
            self._faults.extend([parsed] * times)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._requests.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received (control calls excluded)."""
        with self._lock:
            return list(self._requests)

    @property
    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until ``count`` requests arrived (e.g. a hung one); no polling."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(f"expected {count} requests, got {len(self._requests)}")
            return list(self._requests)

    def hold(self) -> None:
        """Keep every generation request waiting, unanswered, until ``release()``."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def wait_for_held(self, count: int, timeout: float = 5.0) -> int:
        """Block until ``count`` requests wait at the gate at the same moment."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._held >= count, timeout):
                raise TimeoutError(f"expected {count} requests held at once, got {self._held}")
            return self._held

    def _pass_gate(self, wire: Wire) -> bool:
        """Wait while held; False if the server stops meanwhile."""
        if self._gate.is_set():
            return True
        with self._lock:
            self._held += 1
            self._lock.notify_all()
        try:
            self._gate.wait()     # stop() opens the gate too, so no held thread outlives the server
            return wire.wait(0)
        finally:
            with self._lock:
                self._held -= 1

    def _next_fault(self) -> Optional[Fault]:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    def new_id(self) -> str:
        return f"{self.id_prefix}{next(self._ids):06d}"

    # -- dispatch ----------------------------------------------------------

    def _dispatch(self, wire: Wire, method: str, target: str, headers: dict, raw: bytes) -> None:
        parts = urlsplit(target)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(method, parts.path, parts.query,
                                  {k.lower(): v for k, v in headers.items()}, body, raw)
        if parts.path.startswith("/__fake__/"):
            self._control(wire, method, parts.path, body)
            return
        self._record(request)
        handler = self.routes().get((method, parts.path))
        if handler is None:
            wire.send_json(404, {"error": f"fake server has no route {method} {parts.path}"})
            return
        handler(wire, request)

    def _control(self, wire: Wire, method: str, path: str, body: Any) -> None:
        if (method, path) == ("POST", "/__fake__/script"):
            try:
                items = [(parse_fault(item), int(item.get("times", 1)) if isinstance(item, dict) else 1)
                         for item in (body or {}).get("faults", [])]
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                wire.send_json(400, {"error": f"bad fault script: {exc}"})
                return
            for fault, times in items:
                self.push(fault, times=times)
            wire.send_json(200, {"queued": [f.spec() for f in self.pending_faults]})
        elif (method, path) == ("GET", "/__fake__/requests"):
            wire.send_json(200, {"requests": [r.to_dict() for r in self.requests]})
        elif (method, path) == ("POST", "/__fake__/reset"):
            self.reset()
            wire.send_json(200, {"reset": True})
        else:
            wire.send_json(404, {"error": f"unknown control call {method} {path}"})

    # -- the generation pipeline ---------------------------------------------

    def handle_generation(self, wire: Wire, request: RecordedRequest) -> None:
        denied = self.auth_error(request)
        if denied is not None:
            self._send_reply(wire, denied)
            return
        body = request.body if isinstance(request.body, dict) else {}
        plan = plan_reply(self.messages_of(body), chunk_count=self.chunk_count,
                          chunk_size=self.chunk_size, extra_prompt=self.system_text(body))
        ex = Exchange(request=request, body=body, plan=plan, fault=plan.directives.fault,
                      stream=self.wants_stream(body), model=str(body.get("model") or self.model),
                      id=self.new_id(), created=int(time.time()))
        invalid = self.request_error(ex)
        if invalid is not None:       # rejected as the real API would; the queue is left alone
            self._send_reply(wire, invalid)
            return
        fault = ex.fault = ex.fault or self._next_fault()
        request.fault = fault.spec() if fault else None
        name = fault.name if fault else None
        if name == "hang":
            wire.wait(None)           # until stop(); stop() then closes the socket
            wire.cut()
            return
        delay = self.latency_s + (fault.number() if name == "slow" else 0.0)
        if not self._pass_gate(wire) or not wire.wait(delay):
            wire.cut()
            return
        if name == "json_body" and fault.arg:
            # A gateway's 200 whose JSON body is the upstream's error.
            self._send_reply(wire, self.error_reply(Fault(str(fault.arg)), ex)._replace(status=200))
        elif name == "json_body":
            self._complete(wire, ex)  # the whole answer, stream requested or not
        elif fault is not None and fault.is_http_error:
            reply = self.error_reply(fault, ex)
            # Every rate-limit fault carries its standard retry hint; the vendor
            # reply adds its own rate-limit headers on top.
            headers = {**retry_after_headers(fault), **reply.headers}
            self._send_reply(wire, reply._replace(headers=headers))
        elif ex.stream:
            self._stream(wire, ex)
        else:
            self._complete(wire, ex)

    def _send_reply(self, wire: Wire, reply: Reply) -> None:
        wire.send_json(reply.status, reply.body, reply.headers, content_type=self.error_content_type)

    def _complete(self, wire: Wire, ex: Exchange) -> None:
        name = ex.fault.name if ex.fault else None
        if name == "stream_error":
            self._send_reply(wire, self.in_band_error_reply(ex))
            return
        if name == "slow_stream" and not wire.wait(ex.fault.number()):
            wire.cut()
            return
        body = dumps(self.completion_body(ex))
        headers = self.success_headers(ex)
        if name == "drop":
            wire.send_truncated(200, body, self.json_content_type, headers)
        elif name == "malformed":  # a 200 whose body is not JSON (truncated mid-object)
            wire.send_bytes(200, body[: len(body) // 2], self.json_content_type, headers)
        else:
            wire.send_bytes(200, body, self.json_content_type, headers)

    def _stream(self, wire: Wire, ex: Exchange) -> None:
        fault, pieces = ex.fault, ex.plan.pieces
        strike = min(fault.count(), len(pieces)) if fault and fault.name in BODY_FAULTS else None
        delay = fault.number() if fault and fault.name == "slow_stream" else self.chunk_delay_s
        wire.start_stream(self.stream_content_type, self.success_headers(ex))
        for frame in self.stream_head(ex):
            wire.chunk(frame)
        for i in range(len(pieces) + 1):
            if i == strike:
                if fault.name == "drop":
                    wire.cut()
                    return
                if fault.name == "stream_error":
                    wire.chunk(self.stream_error_frame(ex))
                    wire.end_stream()
                    return
                wire.chunk(self.stream_malformed_frame(ex))  # malformed: then carry on
            if i == len(pieces):
                break
            if i > 0 and not wire.wait(delay):
                wire.cut()
                return
            for frame in self.stream_between(ex, i):
                wire.chunk(frame)
            wire.chunk(self.stream_piece(ex, i, pieces[i]))
        for frame in self.stream_tail(ex):
            wire.chunk(frame)
        wire.end_stream()

    # -- vendor hooks --------------------------------------------------------

    @staticmethod
    def refuses(ex: Exchange) -> bool:
        """The ``refusal`` fault: the model declines this request."""
        return ex.fault is not None and ex.fault.name == "refusal"

    refusal_text = "I'm sorry, I can't help with that."

    json_content_type = "application/json"
    error_content_type = "application/json"

    def routes(self) -> dict[tuple[str, str], Route]:
        raise NotImplementedError

    def messages_of(self, body: dict) -> Any:
        return body.get("messages")

    def system_text(self, body: dict) -> str:
        return ""

    def wants_stream(self, body: dict) -> bool:
        return bool(body.get("stream"))

    def auth_error(self, request: RecordedRequest) -> Optional[Reply]:
        return None

    def request_error(self, ex: Exchange) -> Optional[Reply]:
        """Validation the real API does before generating (bad model etc.)."""
        return None

    def error_reply(self, fault: Fault, ex: Exchange) -> Reply:
        raise NotImplementedError

    def in_band_error_reply(self, ex: Exchange) -> Reply:
        """``stream_error`` on a non-stream request: the failure it stands for."""
        return self.error_reply(Fault("server"), ex)

    def success_headers(self, ex: Exchange) -> dict[str, str]:
        return {}

    def completion_body(self, ex: Exchange) -> Any:
        raise NotImplementedError

    def stream_head(self, ex: Exchange) -> list[bytes]:
        return []

    def stream_between(self, ex: Exchange, index: int) -> list[bytes]:
        return []

    def stream_piece(self, ex: Exchange, index: int, text: str) -> bytes:
        raise NotImplementedError

    def stream_tail(self, ex: Exchange) -> list[bytes]:
        return []

    def stream_error_frame(self, ex: Exchange) -> bytes:
        raise NotImplementedError

    def stream_malformed_frame(self, ex: Exchange) -> bytes:
        raise NotImplementedError

