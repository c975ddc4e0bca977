"""Abandoning a provider call from another thread: close its connection.

A blocking HTTP call cannot be interrupted from outside, but the socket it
waits on can be shut down: `recv` then returns at once, `requests` raises,
and the provider reports a network error. So a caller that may want to give
up runs the call inside `abortable()`; every HTTP connection the call uses
(through `AbortableAdapter`), every wait of the mock and every llama.cpp
subprocess joins that scope, and `scope.abort()`, from any thread, cuts them.

    with abortable() as scope:       # in the thread that calls
        provider.complete(...)
    scope.abort()                    # in another thread: the call fails now

Nothing here knows about queues or jobs (tasks.cancel decides *when*).
"""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Optional, Set

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


class CallAborted(ConnectionAbortedError):
    """Raised into a call whose scope was aborted before it reached the network."""


class CallScope:
    """The connections and waits of one call, which `abort()` cuts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: Set[Any] = set()
        self._closers: List[Callable[[], Any]] = []
        self._event = threading.Event()
        self.active = True

    @property
    def aborted(self) -> bool:
        return self._event.is_set()

    def join(self, connection: Any) -> None:
        with self._lock:
            if self._event.is_set():
                raise CallAborted("the call was abandoned")
            self._connections.add(connection)

    def on_abort(self, close: Callable[[], Any]) -> None:
        """Also call `close()` on abort (a subprocess's kill); at once if already aborted."""
        with self._lock:
            if not self._event.is_set():
                self._closers.append(close)
                return
        close()

    def abort(self) -> None:
        with self._lock:
            self._event.set()
            if not self.active:
                return  # finished: its connections are back in the pool, someone else's now
            for close in self._closers:
                try:
                    close()
                except Exception:  # already gone
                    pass
            for connection in self._connections:
                sock = getattr(connection, "sock", None)
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # already closed

    def sleep(self, seconds: float) -> None:
        """A wait the scope can cut short (the mock's latency)."""
        if self._event.wait(seconds):
            raise CallAborted("the call was abandoned")

    def close(self) -> None:
        with self._lock:
            self.active = False
            self._connections.clear()
            self._closers.clear()


def current_scope() -> Optional[CallScope]:
    return getattr(_local, "scope", None)


@contextmanager
def abortable() -> Iterator[CallScope]:
    """Run the body's provider calls so another thread can abandon them."""
    scope = CallScope()
    previous = current_scope()
    _local.scope = scope
    try:
        yield scope
    finally:
        _local.scope = previous
        scope.close()


def abortable_sleep(seconds: float) -> None:
    """`time.sleep`, cut short (raising CallAborted) when the current scope is aborted."""
    scope = current_scope()
    if scope is None:
        threading.Event().wait(seconds)
    else:
        scope.sleep(seconds)


class _Joining:
    def request(self, *args: Any, **kwargs: Any) -> Any:
        scope = current_scope()
        if scope is not None:
            scope.join(self)
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Joining, HTTPConnection):
    pass


class _HTTPSConnection(_Joining, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class AbortableAdapter(HTTPAdapter):
    """`requests` adapter whose connections join the calling thread's scope."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
