"""Celery's worker Consumer, with every "cannot take this message" hook also
setting the message aside in the poison list (tasks.poison).

Celery acknowledges (or rejects) such a message and logs it; the operator
would have nothing left to look at. Here the message and the reason are kept
first. Messages that fail even earlier (not a kombu envelope at all) are
caught by the reliable-fetch channel (tasks.reliable_fetch).
Set by `worker_consumer` in tasks.app.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from celery.worker.consumer.consumer import Consumer

from .poison import move_to_poison

logger = logging.getLogger(__name__)


class PoisonConsumer(Consumer):
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
            logger.warning("could not record a poison message (%s)", exc)

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


def _text(body: Any) -> str:
    if isinstance(body, (bytes, bytearray)):
        return base64.b64encode(bytes(body)).decode("ascii")
    return body if isinstance(body, str) else repr(body)
