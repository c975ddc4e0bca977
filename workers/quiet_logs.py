"""One line per failed retry while Redis is away, not a traceback each time.

A worker whose Redis goes down keeps trying (Celery's consumer, the lease
keeper's heartbeat, the cancel listener); each attempt that logs its
exception with a traceback wrote ~45 lines every few seconds, burying
everything else. A connection error's traceback says nothing its message
does not, so this filter folds it into the log line: "...; ConnectionError:
Error 111 connecting to ...". Any other exception keeps its traceback.

Installed on the root logger's handlers when Celery has set them up (a
logger filter would not see records propagated from child loggers).
"""

from __future__ import annotations

import logging
from typing import Any, Tuple, Type


def _connection_errors() -> Tuple[Type[BaseException], ...]:
    import redis
    from kombu.exceptions import OperationalError

    return (redis.ConnectionError, redis.TimeoutError, OperationalError, ConnectionError, TimeoutError)


class OneLineConnectionErrors(logging.Filter):
    """Drop the traceback of records whose exception is a lost connection."""

    def __init__(self) -> None:
        super().__init__()
        self._kinds = _connection_errors()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and isinstance(exc, self._kinds):
            record.msg = f"{record.getMessage()}; {type(exc).__name__}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def install(logger: Any = None, **_: Any) -> None:
    """Add the filter to every handler of `logger` (default: root), once."""
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, OneLineConnectionErrors) for f in handler.filters):
            handler.addFilter(OneLineConnectionErrors())
