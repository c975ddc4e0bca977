"""Reliable fetch: a message is always in Redis until its task is acknowledged.

kombu's Redis transport takes a message with BRPOP, and only then writes it
to its `unacked` hash: a worker killed between the two (or a Redis that goes
down between them) loses the message for good, and one that dies after
holds it for the hour-long visibility timeout. Here the fetch is an atomic
move (LMOVE / BLMOVE, as Sidekiq Pro's super_fetch does) from the queue into
a *processing list* of this worker process; the message leaves that list
only when it is acknowledged, rejected or restored. A process that stops
heart-beating leaves a processing list behind, and `tasks.recovery` hands
its jobs back to the queue within the lease time (under a fresh token, so a
copy still held somewhere is dropped as stale by `JobStore.start`).

How a fetch goes: with one list to watch, BLMOVE blocks on it. With several
(several queues, or kombu's priority steps), a Lua script moves the first
message found, in kombu's order (priority first); when all are empty the next
fetch blocks for `MULTI_LIST_WAIT_S` on the list the last message came from
(or the queues' plain lists in turn), which wakes at once for the usual
traffic, then scans again: a message on any other list waits at most that
long while the worker is idle.

Messages that cannot even be read as a kombu envelope (not JSON, not an
object, a body that is not base64...) and anything else that raises while
being handed to Celery are moved to the poison list (`tasks.poison`) and
acknowledged, instead of killing the consumer.

The channel is tasks.broker's (kombu's, keeping one Redis client per
channel). Everything here overrides kombu 5.x internals (`_brpop_start`,
`_brpop_read`, `QoS._remove_from_indices`); tests/faults pin the behaviour.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
import uuid
from typing import Any, Dict, List, Optional

from kombu.transport import redis as kredis
from redis import exceptions as redis_exceptions
from kombu.utils.json import loads

from . import broker, test_hooks
from .poison import move_to_poison
from .redis_wait import is_transient

logger = logging.getLogger(__name__)

#: Pause of the consumer when Redis refuses a fetch (OOM, LOADING).
FETCH_PAUSE_S = 0.5
#: While idle with several lists to watch, block on one for this long, then scan all.
MULTI_LIST_WAIT_S = 0.5

# KEYS: the lists in priority order, then the processing list.
_SCAN = """
local dest = KEYS[#KEYS]
for i = 1, #KEYS - 1 do
  local item = redis.call('LMOVE', KEYS[i], dest, 'RIGHT', 'LEFT')
  if item then return {KEYS[i], item} end
end
return false
"""
# Sent as EVALSHA: an EVAL makes Redis hash the whole body again on every
# fetch. Loaded when Redis first answers NOSCRIPT (a restart, SCRIPT FLUSH).
_SCAN_SHA = hashlib.sha1(_SCAN.encode()).hexdigest()

_process_key: Dict[int, str] = {}

#: Errors that mean the Redis connection itself is gone (kombu reconnects).
#: Narrower than kombu's `connection_errors`, which counts any KeyError as
#: one: a message that makes Celery raise KeyError is poison, not an outage.
REDIS_DOWN = (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError)


def _redis_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, REDIS_DOWN) or is_transient(exc)

#: delivery tag -> raw message, for every message this process fetched and
#: still holds on an open channel. A message in this process's list but not
#: here was lost track of (its channel closed on a connection loss): its own
#: keeper recovers it (tasks.recovery).
LIVE: Dict[str, bytes] = {}

#: delivery tags whose message left the processing list in its task's own
#: final write (`ack_in`): the ack that follows has nothing left to do in Redis.
ACKED_IN_WRITE: set = set()


def process_id() -> str:
    """This process's identity for its processing list: host, pid and a random boot id.

    The boot id matters where pids repeat (pid 1 in every container): a
    restarted worker must not adopt, and so never recover, its previous
    life's list.
    """
    pid = os.getpid()
    ident = _process_key.get(pid)
    if ident is None:
        ident = _process_key[pid] = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    return ident


def processing_key(prefix: str) -> str:
    return f"{prefix}:processing:{process_id()}"


def ack_in(pipe: Any, prefix: str, delivery_tag: Optional[str]) -> bool:
    """Queue this delivery's ack (its LREM from the processing list) on `pipe`.

    For a task's final write (a job's result): the ack rides in that round
    trip instead of one of its own. Once the pipe has executed, the caller
    says so with `acked_in_write`; until then a later ack still does it.
    False when this process holds no such message (kombu's own transport).
    """
    raw = LIVE.get(delivery_tag) if delivery_tag else None
    if raw is None:
        return False
    pipe.lrem(processing_key(prefix), 1, raw)
    return True


def acked_in_write(delivery_tag: str) -> None:
    ACKED_IN_WRITE.add(delivery_tag)


def fetchers_key(prefix: str) -> str:
    """Hash: processing list -> last heartbeat of the process that owns it."""
    return f"{prefix}:fetchers"


# KEYS: processing list, the list the message came from ; ARGV: message, '1' for the line's end
_RESTORE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
if ARGV[2] == '1' then redis.call('LPUSH', KEYS[2], ARGV[1]) else redis.call('RPUSH', KEYS[2], ARGV[1]) end
return 1
"""


class QoS(kredis.QoS):
    """kombu's ack emulation on the processing list alone.

    kombu keeps every delivered message a second time, in its `unacked` hash
    and index (a MULTI/EXEC writing the whole message on delivery, another
    on ack), for its visibility-timeout restore. The processing list holds
    the same message already and `tasks.recovery` hands back a dead
    process's list within the lease time, so that copy only cost a round
    trip and the message's size in Redis CPU per job (bench/redis_cost.py).
    Here a delivery writes nothing, an ack is one LREM, and a requeue or a
    restore at shutdown moves the message from the processing list back to
    the list it came from in one script.
    """

    def append(self, message, delivery_tag):
        kredis.virtual.QoS.append(self, message, delivery_tag)  # in memory only: prefetch accounting

    def restore_visible(self, *args, **kwargs):
        # Nothing is in the unacked hash to restore: recovery, not the
        # visibility timeout, brings back what a dead process held.
        return None

    def restore_unacked(self, client=None):
        try:
            for tag in list(self._delivered):
                self._restore(tag, leftmost=False)  # back to the head of its line
        except Exception as exc:  # noqa: BLE001 - Redis away at shutdown: never a crash
            logger.warning("could not restore %d unacknowledged message(s) (%s: %s); they stay in the "
                           "processing list for recovery", len(self._delivered), type(exc).__name__, exc)
        self._delivered.clear()

    def _restore(self, delivery_tag, leftmost: bool) -> None:
        raw, origin = LIVE.get(delivery_tag), self.channel._origin.get(delivery_tag)
        if raw is not None and origin is not None:
            with self.channel.conn_or_acquire() as client:
                client.eval(_RESTORE, 2, self.channel.processing_key, origin, raw, "1" if leftmost else "0")
        self.channel._forget(delivery_tag)

    def _channel_gone(self) -> bool:
        # A task that finishes after its channel was closed (a connection
        # loss) cannot ack through it; its message stays in the processing
        # list, untracked, and this process's keeper settles it.
        connection = getattr(self.channel, "connection", None)
        return connection is None or getattr(connection, "client", None) is None

    def ack(self, delivery_tag):
        if self._channel_gone():
            return
        # Out of the processing list already if it rode in its task's write (ack_in).
        raw = None if delivery_tag in ACKED_IN_WRITE else LIVE.get(delivery_tag)
        try:
            if raw is not None:
                with self.channel.conn_or_acquire() as client:
                    client.lrem(self.channel.processing_key, 1, raw)
        except Exception as exc:
            self._settle_later(delivery_tag, exc)
        else:
            kredis.virtual.QoS.ack(self, delivery_tag)
        self.channel._forget(delivery_tag)

    def reject(self, delivery_tag, requeue=False):
        if not requeue:
            return self.ack(delivery_tag)
        if self._channel_gone():
            return
        try:
            self._restore(delivery_tag, leftmost=True)  # kombu's order: to the end of the line
        except Exception as exc:
            self._settle_later(delivery_tag, exc)
        else:
            kredis.virtual.QoS.ack(self, delivery_tag)
        self.channel._forget(delivery_tag)

    def _settle_later(self, delivery_tag, exc: Exception) -> None:
        """Redis refused the ack (down, or OOM under `noeviction`): never a crash.

        Acknowledged in memory (the prefetch slot is free again); in Redis
        the message stays in the processing list, untracked, and this
        process's keeper settles it once Redis takes writes again: dropped
        if its job is finished or running, re-queued if it never started.
        """
        if not _redis_unavailable(exc):
            raise exc
        logger.warning("could not acknowledge a message (%s: %s); settled from the processing list later",
                       type(exc).__name__, str(exc)[:200])
        kredis.virtual.QoS.ack(self, delivery_tag)


class Channel(broker.Channel):
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        options = self.connection.client.transport_options
        self.key_prefix = options.get("promptq_key_prefix", "promptq")
        self.processing_key = processing_key(self.key_prefix)
        self._tags: set = set()
        self._origin: Dict[str, str] = {}  # delivery tag -> the list it was fetched from
        self._no_ack_queues: set = set()
        self._fetch_mode: Optional[str] = None
        self._wait_index = 0
        self._wait_key: Optional[str] = None
        self._scan_next = True
        self._registered = False

    def basic_consume(self, queue, no_ack, *args, **kwargs):
        # A no-ack consumer (Celery's inspect/control replies, read by Flower
        # or the CLI) never acknowledges: its messages must not linger in the
        # processing list.
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    # --- fetching ---------------------------------------------------------

    def _brpop_start(self, timeout=None):
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        lists = list(dict.fromkeys(self._q_for_pri(q, pri) for pri in self.priority_steps for q in queues))
        if not lists:
            return
        if not self._registered and not set(queues) <= self._no_ack_queues:
            # Known to recovery before the first message lands in the list,
            # even if this process dies before its first heartbeat. A process
            # that only reads control replies (Flower, the CLI) never beats
            # and keeps nothing: it is not registered at all.
            with self.conn_or_acquire() as client:
                client.hsetnx(fetchers_key(self.key_prefix), self.processing_key, time.time())
            self._registered = True
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        if len(lists) > 1 and self._scan_next:
            self._fetch_mode = None
            args: List[Any] = ["EVALSHA", _SCAN_SHA, len(lists) + 1, *lists, self.processing_key]
            self._scan_next = False
        else:
            # Block where the last message came from (most traffic sits on one
            # list: a queue's plain, priority-0 list), else on the queues'
            # plain lists in turn; the next scan finds anything elsewhere.
            key = self._wait_key if self._wait_key in lists else queues[self._wait_index % len(queues)]
            self._fetch_mode = key
            wait = (timeout or 1) if len(lists) == 1 else min(timeout or 1, MULTI_LIST_WAIT_S)
            args = ["BLMOVE", key, self.processing_key, "RIGHT", "LEFT", wait]
            self._scan_next = True
        self.client.connection.send_command(*args)

    def _brpop_read(self, **options):
        try:
            try:
                # The real command's name: redis-py would turn a BLMOVE reply
                # into a tuple of ints under BRPOP's response callback.
                command = "EVALSHA" if self._fetch_mode is None else "BLMOVE"
                reply = self.client.parse_response(self.client.connection, command, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            except redis_exceptions.NoScriptError:
                # Redis restarted or its scripts were flushed: nothing moved.
                # Load the scan; the next fetch scans again at once.
                self._load_scan()
                raise kredis.Empty()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                # OOM (maxmemory with noeviction refuses LMOVE too) or LOADING:
                # nothing can be fetched; pause this consumer a moment rather
                # than spin on Redis or exit.
                logger.warning("cannot fetch from Redis now (%s); retry in %.1fs", str(exc)[:200], FETCH_PAUSE_S)
                time.sleep(FETCH_PAUSE_S)
                raise kredis.Empty()
            if not reply:
                if self._fetch_mode is not None:  # a wait timed out: wait on the next queue
                    self._wait_key = None
                    self._wait_index += 1
                raise kredis.Empty()
            if self._fetch_mode is None:
                source, item = reply
            else:
                source, item = self._fetch_mode, reply
            self._scan_next = True  # after a hit, look everywhere (priority order) again
            source = source.decode() if isinstance(source, bytes) else source
            self._wait_key = source
            queue = source.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            self._deliver_fetched(item, queue, source)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _load_scan(self) -> None:
        self._scan_next = True
        try:
            with self.conn_or_acquire() as client:
                client.script_load(_SCAN)
        except Exception as exc:
            if not _redis_unavailable(exc) or isinstance(exc, REDIS_DOWN):
                raise  # kombu reconnects on a lost connection
            logger.warning("cannot load the fetch script now (%s); retry in %.1fs", str(exc)[:200], FETCH_PAUSE_S)
            time.sleep(FETCH_PAUSE_S)

    def _deliver_fetched(self, item: bytes, queue: str, source: str) -> None:
        test_hooks.pause("after_fetch")
        tag = None
        try:
            payload = loads(item.decode("utf-8") if isinstance(item, bytes) else item)
            if not isinstance(payload, dict):
                raise ValueError(f"a message must be a JSON object, not {type(payload).__name__}")
            properties = payload.get("properties")
            if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
                raise ValueError("the message has no properties.delivery_tag")
            tag = properties["delivery_tag"]
            if queue in self._no_ack_queues:
                with self.conn_or_acquire() as client:
                    client.lrem(self.processing_key, 1, item)
                tag = None
            else:
                LIVE[tag] = item
                self._origin[tag] = source
                self._tags.add(tag)
            self.connection._deliver(payload, queue)
        except Exception as exc:  # noqa: BLE001 - anything else would stop the consumer
            if _redis_unavailable(exc):
                # Not the message's fault (e.g. OOM publishing Celery's
                # task-received event): it stays in the processing list,
                # untracked, and is re-queued from there (tasks.recovery)
                # once Redis is back.
                if tag is not None:
                    self._forget(tag)
                if isinstance(exc, REDIS_DOWN):
                    raise  # kombu reconnects
                logger.warning("could not take a message in now (%s); re-queued later", str(exc)[:200])
                return
            try:
                self._poison(item, queue, tag, exc)
            except Exception as again:
                if not _redis_unavailable(again):
                    raise
                # Left in the processing list, untracked: the keeper moves it
                # to the poison list once Redis takes writes again.
                logger.warning("could not set a bad message aside now (%s); later", str(again)[:200])
                if tag is not None:
                    self._forget(tag)

    def _poison(self, item: bytes, queue: str, tag: Optional[str], exc: BaseException) -> None:
        if not isinstance(item, (bytes, str)):
            raise TypeError(f"fetched a {type(item).__name__}, not a message") from exc  # a bug of ours: be loud
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=True)
            move_to_poison(pipe, self.key_prefix, item, queue=queue, reason=exc)
            pipe.lrem(self.processing_key, 1, item)
            pipe.execute()
        if tag is not None:
            self._forget(tag)
            if tag in self.qos._delivered:
                self.qos._quick_ack(tag)  # kombu's in-memory ack: frees the prefetch slot
        logger.error("a message on %s could not be read and was moved to the poison list: %s", queue, exc)


    def _forget(self, tag: str) -> None:
        LIVE.pop(tag, None)
        ACKED_IN_WRITE.discard(tag)
        self._origin.pop(tag, None)
        self._tags.discard(tag)

    def close(self):
        if getattr(self.connection, "client", None) is None:
            # The broker connection is already gone (Celery closes the channel
            # after a connection loss): kombu would try to restore unacked
            # messages through a pool it can no longer build and die with
            # "'NoneType' object has no attribute 'hostname'". The messages
            # are safe in the processing list; recovery takes them from there.
            self.do_restore = False
        try:
            super().close()
        finally:
            # What this channel still holds will never be acknowledged
            # through it: left in the list, untracked, for this process's keeper.
            for tag in list(self._tags):
                self._forget(tag)


class Transport(broker.Transport):
    Channel = Channel
