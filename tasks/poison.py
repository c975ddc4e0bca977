"""The poison list: messages promptq could not read, moved aside with the reason.

A message on a promptq queue that is not a kombu envelope, has a body that
is not JSON or not base64, is pickled, or makes Celery raise while taking it
in, would stop the consumer (and, restored at shutdown, stop every worker
after it). It is pushed here instead, as JSON
`{"at", "queue", "reason", "message"}`, and acknowledged; the worker goes on.
`promptq:poison` keeps the newest `POISON_MAXLEN` entries for an operator to
read (`LRANGE promptq:poison 0 9`).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, List, Optional

#: Entries kept; older ones are trimmed as new ones arrive.
POISON_MAXLEN = 10_000
#: A message's text is cut to this many characters in its entry.
POISON_BODY_CHARS = 64 * 1024


def poison_key(prefix: str) -> str:
    return f"{prefix}:poison"


def poison_entry(message: Any, *, queue: Optional[str], reason: Any) -> str:
    if isinstance(message, (bytes, bytearray)):
        text = bytes(message).decode("utf-8", errors="replace")
    else:
        text = message if isinstance(message, str) else repr(message)
    why = reason if isinstance(reason, str) else f"{type(reason).__name__}: {reason}"
    return json.dumps({"at": time.time(), "queue": queue, "reason": why[:2000], "message": text[:POISON_BODY_CHARS]})


def move_to_poison(pipe: Any, prefix: str, message: Any, *, queue: Optional[str], reason: Any) -> None:
    """Queue the LPUSH (and trim) of one entry on `pipe`."""
    key = poison_key(prefix)
    pipe.lpush(key, poison_entry(message, queue=queue, reason=reason))
    pipe.ltrim(key, 0, POISON_MAXLEN - 1)


def read_poison(client: Any, prefix: str = "promptq", limit: int = 100) -> List[dict]:
    return [json.loads(e) for e in client.lrange(poison_key(prefix), 0, limit - 1)]


def _consumer_class() -> Any:
    """Celery's worker Consumer, with every "cannot take this message" hook
    also setting the message aside in the poison list (built lazily: nothing
    here imports the worker machinery until a worker starts)."""
    from celery.worker.consumer.consumer import Consumer as CeleryConsumer

    class PoisonConsumer(CeleryConsumer):
        def _set_aside(self, message: Any, reason: Any) -> None:
            channel = getattr(message, "channel", None)
            prefix = getattr(channel, "key_prefix", None)
            if channel is None or prefix is None:
                return
            try:
                raw = json.dumps({"headers": message.headers, "properties": message.properties,
                                  "content_type": message.content_type, "body": _text(message.body)})
                with channel.conn_or_acquire() as client:
                    pipe = client.pipeline(transaction=False)
                    queue = (message.delivery_info or {}).get("routing_key")
                    move_to_poison(pipe, prefix, raw, queue=queue, reason=reason)
                    pipe.execute()
            except Exception as exc:  # noqa: BLE001 - setting aside must never stop the consumer
                import logging

                logging.getLogger(__name__).warning("could not record a poison message (%s)", exc)

        def on_decode_error(self, message: Any, exc: Any) -> None:
            self._set_aside(message, exc)
            super().on_decode_error(message, exc)

        def on_unknown_message(self, body: Any, message: Any) -> None:
            self._set_aside(message, "not a task message")
            super().on_unknown_message(body, message)

        def on_unknown_task(self, body: Any, message: Any, exc: Any) -> None:
            self._set_aside(message, f"unknown task: {exc}")
            super().on_unknown_task(body, message, exc)

        def on_invalid_task(self, body: Any, message: Any, exc: Any) -> None:
            self._set_aside(message, exc)
            super().on_invalid_task(body, message, exc)

    return PoisonConsumer


def _text(body: Any) -> str:
    if isinstance(body, (bytes, bytearray)):
        return base64.b64encode(bytes(body)).decode("ascii")
    return body if isinstance(body, str) else repr(body)


def __getattr__(name: str) -> Any:
    # `worker_consumer = "promptq.tasks.poison:PoisonConsumer"` resolves here.
    if name == "PoisonConsumer":
        return _consumer_class()
    raise AttributeError(name)
