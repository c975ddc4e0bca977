"""Cap leases kept alive by a worker's heartbeat (real Redis): short-lived
unless refreshed, refreshed in one command, never brought back once given
back, let go when their job is gone."""

from __future__ import annotations

from promptq.tasks.limiter import LEASE_TTL_S, SLOW_START_LEASE_TTL_S, Limiter
from promptq.tasks.limits import Limit
from tests.worker_process import wait_for

CAP = "t:cap:openai:conc"


def capped(redis_client, concurrency=1, seen=True):
    if seen:  # past slow start
        redis_client.hset("t:pace:openai:m", "seen", "1")
    return Limiter(redis_client, "t", {"openai": Limit(concurrency=concurrency)})


def expiry_in(redis_client, lease_id, key=CAP):
    seconds, micros = redis_client.time()
    score = redis_client.zscore(key, lease_id)
    return None if score is None else score - (seconds + micros / 1e6)


def commands(redis_client):
    stats = redis_client.info("commandstats")
    return {name: stats[name]["calls"] for name in stats}


def test_a_kept_alive_lease_is_short_lived_and_each_beat_pushes_it_on(redis_client):
    lim = capped(redis_client)
    held = lim.keep_leases_alive(3.0)
    first = lim.acquire("openai", "m", job_key="t:job:a")
    assert first.granted
    left = expiry_in(redis_client, first.lease_id)
    assert 2.0 < left <= 3.0, left  # not LEASE_TTL_S: a dead worker's slot comes back in seconds
    assert not lim.acquire("openai", "m", job_key="t:job:b").granted  # the cap of one holds
    assert held.refresh(lambda: {"t:job:a"}) == 1
    assert expiry_in(redis_client, first.lease_id) > left - 0.5
    assert held.held() == [first.lease_id]


def test_one_command_refreshes_every_lease_of_the_process(redis_client):
    lim = capped(redis_client, concurrency=50)
    redis_client.hset("t:pace:openai:other", "seen", "1")
    held = lim.keep_leases_alive(3.0)
    jobs = {f"t:job:{i}" for i in range(20)}
    leases = [lim.acquire("openai", "m" if i % 2 else "other", job_key=f"t:job:{i}") for i in range(20)]
    assert all(a.granted for a in leases)
    assert held.refresh(lambda: jobs) == 20  # the first also loads the script
    before = commands(redis_client)
    assert held.refresh(lambda: jobs) == 20
    after = commands(redis_client)
    spent = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    # One script call for twenty leases (plus the INFO that measured it); the
    # ZADDs run inside the script.
    assert set(spent) - {"cmdstat_info"} <= {"cmdstat_evalsha", "cmdstat_zadd", "cmdstat_pexpire", "cmdstat_time"}
    assert spent.get("cmdstat_evalsha", 0) == 1, spent


def test_a_dead_workers_lease_lapses_and_the_slot_comes_back(redis_client):
    lim = capped(redis_client)
    lim.keep_leases_alive(0.5)
    assert lim.acquire("openai", "m", job_key="t:job:dead").granted  # its worker never beats again
    assert not lim.acquire("openai", "m", job_key="t:job:next").granted
    wait_for(lambda: lim.acquire("openai", "m", job_key="t:job:next").granted, 5, 0.05,
             "the dead worker's slot to come back")


def test_a_given_back_lease_is_never_brought_back(redis_client):
    lim = capped(redis_client)
    held = lim.keep_leases_alive(3.0)
    admission = lim.acquire("openai", "m", job_key="t:job:a")
    lim.settle(admission, None, "openai:m")
    assert held.held() == [] and redis_client.zcard(CAP) == 0
    # A beat that listed the lease just before it was given back must not resurrect it.
    held.hold(admission.lease_id, "t:job:a", [CAP])
    assert held.refresh(lambda: {"t:job:a"}) == 0
    assert redis_client.zcard(CAP) == 0


def test_a_lease_whose_job_left_without_settling_is_let_go(redis_client):
    lim = capped(redis_client)
    held = lim.keep_leases_alive(3.0)
    admission = lim.acquire("openai", "m", job_key="t:job:a")
    assert held.refresh(lambda: set()) == 0  # the job is not running any more
    assert held.held() == []
    assert 0 < expiry_in(redis_client, admission.lease_id) <= 3.0  # lapses on its own


def test_without_a_heartbeat_leases_keep_their_long_ttls(redis_client):
    lim = capped(redis_client, seen=False)
    admission = lim.acquire("openai", "m", job_key="t:job:a")
    assert expiry_in(redis_client, admission.lease_id) > LEASE_TTL_S - 5
    # Slow-start leases are not kept alive: theirs stays SLOW_START_LEASE_TTL_S either way.
    lim.keep_leases_alive(3.0)
    redis_client.delete(CAP)
    other = lim.acquire("openai", "m", job_key="t:job:b")
    assert expiry_in(redis_client, other.lease_id, "t:cap:openai:m:slowstart") > SLOW_START_LEASE_TTL_S - 2
    assert lim.held.held() == [other.lease_id]
    # A lease taken with no job to tie it to (nothing marks it running) keeps the long TTL.
    redis_client.delete(CAP)
    loose = lim.acquire("openai", "m")
    assert expiry_in(redis_client, loose.lease_id) > LEASE_TTL_S - 5 and loose.lease_id not in lim.held.held()
