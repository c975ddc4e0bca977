"""Priority lanes: interactive jobs never wait behind a batch.

A job's `lane` ("interactive", the default, or "batch"; `promptq batch`
submits into "batch") travels in its spec and becomes the Celery message
priority. On Redis, kombu keeps one list per priority step of a queue
(`promptq.openai` for step 0, `promptq.openai\\x06\\x169` for step 9) and a
worker's BRPOP names *every* step-0 list of its queues before any step-9
list (`Channel._brpop_start`: `for pri in priority_steps for queue in
queues`). Redis pops from the first non-empty key it is given, so an
interactive message is taken at the next free slot whatever the batch
backlog, while the round-robin between providers' queues is kept (that is
why this is not `queue_order_strategy: priority` over separate queues:
that one orders whole queues, so one provider's batch would beat another
provider's interactive job).

Every publisher of a job message goes through `route()` (or `list_key()`
when it writes the Redis list itself, as the bulk batch submitter does), so
retries, failovers and recoveries keep their lane. Redis semantics are
kombu's: the lower number is served first.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from kombu.transport.redis import Channel as _RedisChannel

from .keys import Keys

INTERACTIVE = "interactive"
BATCH = "batch"
DEFAULT_LANE = INTERACTIVE
#: Lane -> kombu message priority (Redis: lower is served first).
PRIORITIES: Dict[str, int] = {INTERACTIVE: 0, BATCH: 9}
LANES = tuple(PRIORITIES)
#: The transport's `priority_steps`: one Redis list per lane, no more (each
#: step is one more key in every BRPOP). Producers and workers must agree.
PRIORITY_STEPS = sorted(set(PRIORITIES.values()))
#: kombu's separator between a queue's name and its priority step.
_SEP = _RedisChannel.sep


class LaneError(ValueError):
    """Not a lane; `field` names where the value came from."""

    def __init__(self, field_name: str, value: Any):
        self.field = field_name
        super().__init__(f"{field_name}: {value!r} is not a lane (use {' or '.join(LANES)})")


def parse_lane(value: Any, field_name: str = "lane") -> str:
    """'interactive' / 'batch' (any case); None gives the default lane."""
    if value is None:
        return DEFAULT_LANE
    if isinstance(value, str) and value.strip().lower() in PRIORITIES:
        return value.strip().lower()
    raise LaneError(field_name, value)


def lane_of(spec: Mapping[str, Any]) -> str:
    """The lane of a job spec; records written before lanes existed are interactive."""
    lane = spec.get("lane")
    return lane if lane in PRIORITIES else DEFAULT_LANE


def priority_of(spec: Mapping[str, Any]) -> int:
    return PRIORITIES[lane_of(spec)]


def provider_of(spec: Mapping[str, Any], target_index: int) -> str:
    targets = spec.get("targets") or []
    if not targets:
        return "mock"
    return targets[min(target_index, len(targets) - 1)].split(":", 1)[0]


def route(keys: Keys, spec: Mapping[str, Any], target_index: int) -> Dict[str, Any]:
    """`send_task` options putting a job on its target's queue, in its lane."""
    return {"queue": keys.queue(provider_of(spec, target_index)), "priority": priority_of(spec)}


def list_key(queue: str, lane: str) -> str:
    """The Redis list kombu keeps a lane's messages of `queue` in (`Channel._q_for_pri`)."""
    priority = PRIORITIES[lane]
    return f"{queue}{_SEP}{priority}" if priority else queue


def queue_lists(queue: str) -> Dict[str, str]:
    """Lane -> Redis list of one queue: what to LLEN for its depth per lane."""
    return {lane: list_key(queue, lane) for lane in LANES}
