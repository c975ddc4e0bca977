"""Spill (real Redis, the real limiter): a `spill=True` job moves to a later
target only when that target can start it sooner, so a batch spreads over its
targets in proportion to their rates; and the probe it asks books nothing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from promptq.tasks.capacity import CapacityGate
from promptq.tasks.limiter import Limiter
from promptq.tasks.limits import Limit

FAST, SLOW, THIRD = "openai:fast", "openai:slow", "openai:third"


def setup(redis_client, spill_after_s=2.0, **limits):
    for endpoint in (FAST, SLOW, THIRD):  # past slow start
        redis_client.hset(f"t:pace:{endpoint}", "seen", "1")
    lim = Limiter(redis_client, "t", limits, interactive_reserve=0.2, burst_s=1.0, horizon_s=2.0)
    rt = SimpleNamespace(limiter=lim, redis=redis_client,
                         settings=SimpleNamespace(spill_after_s=spill_after_s, capacity_horizon_s=2.0))
    return lim, rt


def gate(rt, target=FAST, spill=True):
    provider, _, model = target.partition(":")
    return CapacityGate(rt, {"prompt": "p", "batch_id": "b", "spill": spill}, provider, model)


def book(lim, target, n=1):
    provider, _, model = target.partition(":")
    return [lim.acquire(provider, model, lane="batch") for _ in range(n)]


def test_the_probe_books_nothing(redis_client):
    lim, _ = setup(redis_client, **{FAST: Limit(rpm=600)})
    book(lim, FAST, 40)  # burst, reserved turns, then tickets
    first = lim.wait_estimate("openai", "fast", lane="batch")
    again = lim.wait_estimate("openai", "fast", lane="batch")
    ticket = book(lim, FAST)[0]
    assert first > 1.0 and again == pytest.approx(first, abs=0.05)
    assert not ticket.granted and ticket.reason == "budget"
    assert ticket.wait_s == pytest.approx(first, abs=0.05)  # the next booking got the turn the probe saw
    assert lim.wait_estimate("openai", "fast", lane="batch") == pytest.approx(first + 0.1, abs=0.05)


def test_a_batch_spreads_over_its_targets_in_proportion_to_their_rates(redis_client):
    lim, rt = setup(redis_client, **{FAST: Limit(rpm=600), SLOW: Limit(rpm=300)})
    targets = [FAST, SLOW]
    placed = {FAST: [], SLOW: []}
    for _ in range(300):  # every job arrives on its first target, as a batch does
        index = gate(rt).spill_target(targets, 0)
        target = targets[0 if index is None else index]
        placed[target].append(book(lim, target)[0])
    fast, slow = len(placed[FAST]), len(placed[SLOW])
    # 2:1 rates: about 200 / 100. Before, almost every job past the threshold spilled (fast ~10%).
    assert 0.6 <= fast / 300 <= 0.75, (fast, slow)
    # Both lines end at about the same time: neither target is the bottleneck.
    ends = {t: max(a.wait_s for a in answers) for t, answers in placed.items()}
    assert abs(ends[FAST] - ends[SLOW]) <= 2.5, ends
    assert ends[FAST] == pytest.approx(300 / 15, abs=3.0), ends  # 15 calls a second between them


def test_no_spill_when_the_next_target_has_no_budget_either(redis_client):
    lim, rt = setup(redis_client, **{FAST: Limit(rpm=60), SLOW: Limit(rpm=60), THIRD: Limit(rpm=60)})
    targets = [FAST, SLOW]
    book(lim, FAST, 20)  # ~17 s ahead here
    assert gate(rt).spill_target(targets, 0) == 1  # the next one is idle: go
    book(lim, SLOW, 30)  # ... now it is further behind than this one
    assert lim.wait_estimate("openai", "slow", lane="batch") > lim.wait_estimate("openai", "fast", lane="batch")
    assert gate(rt).spill_target(targets, 0) is None
    before = lim.wait_estimate("openai", "slow", lane="batch")
    assert gate(rt).spill_target(targets, 0) is None
    assert lim.wait_estimate("openai", "slow", lane="batch") == pytest.approx(before, abs=0.05)  # asking booked nothing


def test_a_near_tie_stays_and_a_short_wait_never_spills(redis_client):
    lim, rt = setup(redis_client, spill_after_s=5.0, **{FAST: Limit(rpm=60), SLOW: Limit(rpm=60)})
    targets = [FAST, SLOW]
    book(lim, FAST, 4)  # a wait below spill_after_s: stay, however idle the next target is
    assert gate(rt).spill_target(targets, 0) is None
    book(lim, FAST, 16)
    book(lim, SLOW, 20)  # as long a line as here: nothing to gain
    assert gate(rt).spill_target(targets, 0) is None
    assert gate(rt, spill=False).spill_target(targets, 0) is None  # opt-in only
    assert gate(rt).spill_target([FAST], 0) is None  # nowhere to go


def test_a_job_spills_forward_to_the_target_that_starts_it_soonest(redis_client):
    lim, rt = setup(redis_client, **{FAST: Limit(rpm=60), SLOW: Limit(rpm=60), THIRD: Limit(rpm=60)})
    targets = [FAST, SLOW, THIRD]
    book(lim, FAST, 30)
    book(lim, SLOW, 20)
    assert gate(rt).spill_target(targets, 0) == 2  # the idle third, past the busy second
    # Spilled to the second, which became the slower one: it may move on, forward only.
    assert gate(rt, target=SLOW).spill_target(targets, 1) == 2
    book(lim, THIRD, 40)
    assert gate(rt, target=SLOW).spill_target(targets, 1) is None  # never back to the first
    # A wait the caller already knows (a 429's pause) is judged the same way.
    assert gate(rt, target=SLOW).spill_target([FAST, SLOW, THIRD], 1, wait_s=120.0) == 2
