"""Spill (real Redis, the real limiter): a `spill=True` job moves to a later
target only when that target can start it sooner, so a batch spreads over its
targets in proportion to their rates; the probe it asks books nothing; and the
jobs on their way to a target count in its wait until they reach its line."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from promptq.tasks.capacity import CapacityGate
from promptq.tasks.limiter import SLOW_START, SLOW_START_LEASE_TTL_S, Limiter
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


def spills(rt, targets, n):
    """n jobs judging spill at once, none of them reaching the target's line yet (on their way)."""
    return sum(gate(rt).spill_target(targets, 0) is not None for _ in range(n))


def wait_until(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_jobs_on_their_way_to_a_cold_target_raise_its_wait(redis_client):
    lim, rt = setup(redis_client, **{FAST: Limit(rpm=60)})
    redis_client.delete(f"t:pace:{SLOW}")
    redis_client.hset(f"t:pace:{SLOW}", mapping={"seen": "1", "learned_rpm": "60"})  # answered once, not paced
    targets = [FAST, SLOW]
    book(lim, FAST, 20)  # ~17 s to wait here
    assert lim.wait_estimate("openai", "slow", lane="batch") == 0.0
    # Before, every one was told "no wait there" and went: 100 jobs for a 1/s target.
    went = spills(rt, targets, 100)
    assert 8 <= went <= 20, went  # about its 1/s over the wait here, no more
    assert lim.wait_estimate("openai", "slow", lane="batch") >= 10.0
    assert spills(rt, targets, 10) == 0  # full until their turns pass
    shadow = lim.bucket_key(SLOW, "spill:batch")
    assert 0 < redis_client.pttl(shadow) <= 25_000  # a worker that died on the way leaves nothing for good


def test_spills_to_a_target_never_seen_stop_at_its_slow_start_width(redis_client):
    lim, rt = setup(redis_client, **{FAST: Limit(rpm=60)})
    redis_client.delete(f"t:pace:{SLOW}")  # no answer yet, no rate known
    book(lim, FAST, 20)
    assert spills(rt, [FAST, SLOW], 50) == SLOW_START  # before: all 50
    assert lim.wait_estimate("openai", "slow", lane="batch") < 1.0  # a job on its way is not told "full"
    assert 0 < redis_client.pttl(lim.bucket_key(SLOW, "spill:cold")) <= SLOW_START_LEASE_TTL_S * 1000
    # Its first answer tells its limits: spills are then spaced by its rate.
    redis_client.hset(f"t:pace:{SLOW}", mapping={"seen": "1", "learned_rpm": "600"})
    assert lim.wait_estimate("openai", "slow", lane="batch") < 1.0
    assert spills(rt, [FAST, SLOW], 5) == 5


def test_the_spill_shadow_drains_by_itself(redis_client):
    lim, rt = setup(redis_client, spill_after_s=1.0, **{FAST: Limit(rpm=60), SLOW: Limit(rpm=300)})
    book(lim, FAST, 6)  # ~4 s here
    went = spills(rt, [FAST, SLOW], 50)
    assert 0 < went < 50
    on_the_way = lim.wait_estimate("openai", "slow", lane="batch")
    assert on_the_way > 1.0
    # Arriving, they take their turns there: counted once, not twice.
    arrived = book(lim, SLOW, went)
    assert lim.wait_estimate("openai", "slow", lane="batch") <= on_the_way + 0.5
    assert max(a.wait_s for a in arrived) <= on_the_way + 0.5
    wait_until(lambda: lim.wait_estimate("openai", "slow", lane="batch") == 0.0)
    wait_until(lambda: not redis_client.exists(lim.bucket_key(SLOW, "spill:batch")))  # and the key is gone


def test_the_probe_sees_a_line_behind_a_pause_and_a_free_cell(redis_client):
    lim, _ = setup(redis_client, **{FAST: Limit(rpm=600)})
    seconds, micros = redis_client.time()
    now = seconds + micros / 1e6
    # Ticket holders out to +30 s, none back yet: the cell has room, the line does not.
    redis_client.set(lim.bucket_key(FAST, "line:batch"), now + 30, px=40_000)
    assert lim.wait_estimate("openai", "fast", lane="batch") == pytest.approx(30.1, abs=0.5)
    # A job back from its ticket holds its place: the free cell is its wait.
    redis_client.hset("t:job:j", "wait_reason", "budget")
    assert lim.wait_estimate("openai", "fast", lane="batch", job_key="t:job:j") < 1.0
    # A short pause does not hide the line.
    redis_client.hset(f"t:pace:{FAST}", "paused_until", now + 2)
    assert lim.wait_estimate("openai", "fast", lane="batch") == pytest.approx(30.1, abs=0.5)


def test_a_ticket_as_promised_stays_and_a_stale_one_is_judged_again(redis_client):
    lim, rt = setup(redis_client, **{FAST: Limit(rpm=60), SLOW: Limit(rpm=60)})
    targets = [FAST, SLOW]

    def free_slow():
        redis_client.delete(lim.bucket_key(SLOW, "req"), lim.bucket_key(SLOW, "line:batch"))

    book(lim, FAST, 20)
    book(lim, SLOW, 30)  # longer there: stay
    kept = gate(rt)
    assert kept.spill_target(targets, 0) is None
    ticket = book(lim, FAST)[0]  # the turn its probe promised
    free_slow()
    # Leaving now would leave a hole in this line: it chose on a true view, it keeps its turn.
    assert kept.spill_target(targets, 0, ticket.wait_s, ticket=True) is None
    book(lim, SLOW, 30)
    stale = gate(rt)
    assert stale.spill_target(targets, 0) is None
    book(lim, FAST, 20)  # others booked between its probe and its ticket
    ticket = book(lim, FAST)[0]
    free_slow()
    assert stale.spill_target(targets, 0, ticket.wait_s, ticket=True) == 1
