"""Shared budgets (real Redis): rates, reservations, tickets, lanes, tokens,
concurrency, pauses; and the configuration they come from."""

from __future__ import annotations

import time

import pytest

from promptq.tasks.limiter import Limiter, estimate_tokens
from promptq.tasks.limits import Limit, LimitConfigError, configured_limits, env_limits
from promptq.tasks.pacing import Pacer
from promptq.tasks.settings import Settings, SettingsError


def limiter(redis_client, reserve=0.2, seen=True, **limits):
    if seen:  # past slow start: the endpoint has answered before
        for endpoint in ("openai:m", "openai:x", "openai:other-model"):
            redis_client.hset(f"t:pace:{endpoint}", "seen", "1")
    return Limiter(redis_client, "t", limits, interactive_reserve=reserve, burst_s=1.0, horizon_s=2.0)


def grants(lim, n, lane="interactive", **kw):
    return [lim.acquire("openai", "m", lane=lane, **kw) for _ in range(n)]


def test_a_burst_then_reserved_turns_then_spread_out_tickets(redis_client):
    lim = limiter(redis_client, **{"openai": Limit(rpm=600)})  # 10 a second, a burst of one second
    answers = grants(lim, 40)
    now = [a for a in answers if a.granted]
    reserved = [a for a in answers if a.reserved]
    tickets = [a for a in answers if not a.granted and not a.reserved]
    assert len(now) == 10
    assert len(reserved) == 20  # turns within the 2 s horizon, 0.1 s apart
    assert reserved[0].wait_s == pytest.approx(0.1, abs=0.02) and reserved[-1].wait_s == pytest.approx(2.0, abs=0.05)
    assert len(tickets) == 10 and all(t.reason == "budget" for t in tickets)
    # Tickets are spread at the budget's rate, so the backlog does not return as a herd.
    gaps = [b.wait_s - a.wait_s for a, b in zip(tickets, tickets[1:])]
    assert all(g == pytest.approx(0.1, abs=0.02) for g in gaps)


def test_the_batch_lane_leaves_the_interactive_reserve(redis_client):
    lim = limiter(redis_client, reserve=0.2, **{"openai": Limit(rpm=600)})
    batch = grants(lim, 40, lane="batch")
    assert sum(a.granted for a in batch) == 8  # 80% of the burst
    assert not batch[-1].granted and not batch[-1].reserved  # the batch lane is out of turns
    interactive = lim.acquire("openai", "m", lane="interactive")
    assert interactive.granted or interactive.reserved  # ... but interactive work still finds room
    assert interactive.wait_s <= 2.0


def test_provider_and_model_budgets_both_apply(redis_client):
    lim = limiter(redis_client, **{"openai": Limit(rpm=6000), "openai:m": Limit(rpm=60)})
    first, second = grants(lim, 2)
    assert first.granted and not second.granted  # the model's 1/s, not the provider's 100/s
    other = lim.acquire("openai", "other-model")
    assert other.granted


def test_tokens_are_estimated_then_corrected_by_real_usage(redis_client):
    lim = limiter(redis_client, **{"openai:m": Limit(tpm=6000), "openai:x": Limit(tpm=6000)})  # 100 tokens/s
    first = lim.acquire("openai", "m", tokens=150)  # 1.5 s of budget: a call may take that much alone
    assert first.granted
    assert lim.acquire("openai", "m", tokens=50).reserved  # estimated: no room now
    # Same on another model, but the call really cost 10 tokens: the budget gets the difference back.
    first = lim.acquire("openai", "x", tokens=150)
    lim.settle(first, actual_tokens=10, endpoint="openai:x")
    assert lim.acquire("openai", "x", tokens=50).granted


def test_concurrency_leases_are_given_back(redis_client):
    lim = limiter(redis_client, **{"openai": Limit(concurrency=2)})
    a, b, c = grants(lim, 3)
    assert a.granted and b.granted and not c.granted and c.reason == "concurrency"
    lim.settle(a, endpoint="openai:m")
    assert lim.acquire("openai", "m").granted


def test_a_429_pauses_every_caller_and_learns_the_limit(redis_client):
    lim, pacer = limiter(redis_client), Pacer(redis_client, "t")
    headers = {"x-ratelimit-limit-requests": "120", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-requests": "500ms", "retry-after-ms": "1500"}
    paused = pacer.observe("openai:m", headers, rate_limited=True)
    assert paused == pytest.approx(1.5, abs=0.05)
    answer = lim.acquire("openai", "m")
    assert not answer.granted and answer.reason == "paused" and 1.3 < answer.wait_s <= 1.5
    pace = pacer.snapshot("openai:m")
    assert pace["learned_rpm"] == 120 and pace["factor"] == 0.5 and pace["rpm_eff"] == 60 and pace["n429"] == 1
    # Successes climb back (AIMD): additive increase up to the provider's limit.
    redis_client.hset(pacer.pace_key("openai:m"), "paused_until", 0)
    for _ in range(30):
        pacer.observe("openai:m", {"x-ratelimit-limit-requests": "120", "x-ratelimit-remaining-requests": "100"},
                      rate_limited=False)
    assert pacer.snapshot("openai:m")["factor"] == 1.0


def test_nothing_left_pauses_before_the_429(redis_client):
    lim, pacer = limiter(redis_client), Pacer(redis_client, "t")
    pacer.observe("openai:m", {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0",
                               "x-ratelimit-reset-requests": "0.5s"}, rate_limited=False)
    answer = lim.acquire("openai", "m")
    assert answer.reason == "paused" and 0.3 < answer.wait_s <= 0.5
    # OpenAI's reset is until the whole budget is back (a minute here); one more
    # request is due after 60/limit seconds, so the pause is no longer than that.
    pacer.observe("openai:x", {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "0",
                               "x-ratelimit-reset-requests": "1m0s"}, rate_limited=False)
    answer = lim.acquire("openai", "x")
    assert answer.reason == "paused" and 0.0 < answer.wait_s <= 0.1


def test_slow_start_until_the_first_answer(redis_client):
    lim, pacer = limiter(redis_client, seen=False), Pacer(redis_client, "t")
    answers = grants(lim, 10)
    assert sum(a.granted for a in answers) == 8 and answers[-1].reason == "concurrency"
    pacer.observe("openai:m", {}, rate_limited=False)
    assert lim.acquire("openai", "m").granted


def test_estimate_counts_prompt_and_output_cap():
    assert estimate_tokens({"prompt": "x" * 400, "parameters": {"max_tokens": 50}}) == 150
    assert estimate_tokens({"messages": [{"role": "user", "content": "y" * 40}]}) == 10


def test_limits_from_toml_and_environment(tmp_path):
    path = tmp_path / "promptq.toml"
    path.write_text('[providers.openai]\nbase_url = "http://x"\n[providers.openai.limits]\nrpm = 600\ntpm = 200000\n'
                    'concurrency = 50\n[providers.openai.models."gpt-4o-mini".limits]\nrpm = 500\n')
    settings = Settings.load(environ={"PROMPTQ_LIMIT_OPENAI_RPM": "300", "PROMPTQ_LIMIT_CLAUDE_TPM": "1000"},
                             config_path=str(path))
    limits = configured_limits(settings.provider_configs, settings.limit_overrides)
    assert limits["openai"] == Limit(rpm=300, tpm=200000, concurrency=50)  # the environment wins
    assert limits["openai:gpt-4o-mini"] == Limit(rpm=500) and limits["claude"] == Limit(tpm=1000)
    assert "limits" not in settings.provider_config("openai")  # not handed to the provider
    assert env_limits({"PROMPTQ_LIMIT_BURST_S": "1"}) == {}


@pytest.mark.parametrize("table, message", [
    ('[providers.openai.limits]\nrpm = -1\n', r"\[providers.openai.limits\].rpm must be a positive number"),
    ('[providers.openai.limits]\nrps = 5\n', r"unknown limit 'rps'"),
    ('[providers.openai.models."m".limits]\nconcurrency = 1.5\n', r'models."m".limits\].concurrency must be a whole'),
])
def test_bad_limits_are_refused_naming_where(tmp_path, table, message):
    path = tmp_path / "promptq.toml"
    path.write_text(table)
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ={}, config_path=str(path))
    with pytest.raises(LimitConfigError):
        configured_limits({}, {"openai": {"rpm": "lots"}})


def test_a_dead_workers_slow_start_leases_expire_soon(redis_client):
    # Workers killed during a cold endpoint's first calls never settle their
    # leases. Slow-start leases must expire within SLOW_START_LEASE_TTL_S, not
    # LEASE_TTL_S, or the endpoint stalls for ten minutes (seen in the kill storm).
    from promptq.tasks.limiter import LEASE_TTL_S, SLOW_START_LEASE_TTL_S

    lim = limiter(redis_client, seen=False, **{"openai": Limit(concurrency=50)})
    assert all(a.granted for a in grants(lim, 8))  # the dead worker's eight, never settled
    now = float(redis_client.time()[0])
    slow = [k for k in redis_client.keys("t:*") if k.endswith(b"slowstart")]
    assert slow, redis_client.keys("t:*")
    expiries = [score for _, score in redis_client.zrange(slow[0], 0, -1, withscores=True)]
    assert len(expiries) == 8 and max(expiries) <= now + SLOW_START_LEASE_TTL_S + 1
    # A configured concurrency cap keeps the long lease (a real cap must hold under long calls).
    capped = [k for k in redis_client.keys("t:*") if k.endswith(b"conc")]
    assert capped and min(s for _, s in redis_client.zrange(capped[0], 0, -1, withscores=True)) >= now + LEASE_TTL_S - 5


def test_pacing_counts_the_minute_and_rolls_it_over(redis_client):
    pacer = Pacer(redis_client, "t")
    pacer.observe("openai:c", {}, rate_limited=False, tokens=30)
    pacer.observe("openai:c", {}, rate_limited=False, tokens=12)
    pacer.observe("openai:c", {"x-ratelimit-limit-requests": "90"}, rate_limited=True, retry_after_s=0.01)
    pace = pacer.snapshot("openai:c")
    assert (pace["m_req"], pace["m_tok"], pace["m_429"], pace["n_ok"], pace["n429"]) == (2, 42, 1, 2, 1)
    assert pace["learned_rpm"] == 90 and "rpm_eff" in pace  # a fresh 429: the backed-off rate applies
    # A minute later this minute's counts become the previous minute's.
    redis_client.hset(pacer.pace_key("openai:c"), "m_start", time.time() - 61)
    pacer.observe("openai:c", {}, rate_limited=False, tokens=5)
    pace = pacer.snapshot("openai:c")
    assert (pace["p_req"], pace["p_tok"], pace["p_429"]) == (2, 42, 1)
    assert (pace["m_req"], pace["m_tok"], pace["m_429"]) == (1, 5, 0)


def test_the_pace_hash_lives_a_day_from_its_last_minute_and_a_cooled_endpoint_loses_its_rates(redis_client):
    pacer = Pacer(redis_client, "t")
    key, headers = pacer.pace_key("openai:t"), {"x-ratelimit-limit-requests": "90",
                                                "x-ratelimit-remaining-requests": "80"}
    pacer.observe("openai:t", headers, rate_limited=True, retry_after_s=0.01)
    assert redis_client.hexists(key, "rpm_eff") and 86_390 < redis_client.ttl(key) <= 86_400
    # Within the same minute the TTL is not written again (one EXPIRE per minute, not per answer).
    redis_client.expire(key, 1000)
    pacer.observe("openai:t", headers, rate_limited=False)
    assert redis_client.ttl(key) <= 1000 and redis_client.hexists(key, "rpm_eff")  # the 429 is recent: still hot
    # A minute on, the 429 long past and plenty left: a new minute renews the TTL, the rates go.
    redis_client.hset(key, mapping={"m_start": time.time() - 61, "last_429_at": time.time() - 61})
    pacer.observe("openai:t", headers, rate_limited=False)
    assert 86_390 < redis_client.ttl(key) <= 86_400
    assert not redis_client.hexists(key, "rpm_eff") and not redis_client.hexists(key, "tpm_eff")
