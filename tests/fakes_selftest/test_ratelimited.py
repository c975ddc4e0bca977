"""RateLimitedOpenAI: OpenAI's token buckets, headers and 429s, checked with
the official `openai` SDK (and plain requests for the control endpoint).
Time is the test's own clock, moved by hand: no sleeping."""

from __future__ import annotations

import pytest
import requests

from tests.fakes.ratelimited_server import RateLimitedOpenAI, TokenBucket, go_duration

openai = pytest.importorskip("openai")

KEY = "sk-test-ratelimit-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def sdk(server, retries: int = 0):
    return openai.OpenAI(api_key=KEY, base_url=server.base_url, max_retries=retries)


def ask(client, text: str = "hi", **kw):
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **kw)


def refused_after(client, admitted: int):
    """The 429 that follows `admitted` requests, which must all get through."""
    for _ in range(admitted):
        ask(client)
    with pytest.raises(openai.RateLimitError) as caught:
        ask(client)
    return caught.value


@pytest.mark.parametrize("seconds, text", [
    (0.02, "20ms"), (0.0004, "1ms"), (0.12, "120ms"), (1, "1s"), (1.5, "1.5s"), (59.25, "59.25s"),
    (360, "6m0s"), (90.5, "1m30.5s"), (3723, "1h2m3s"), (0, "0s"),
])
def test_go_durations(seconds, text):
    assert go_duration(seconds) == text


def test_bucket_refills_continuously_up_to_capacity():
    bucket = TokenBucket(600, 10, now=0.0)
    bucket.level = 0
    bucket.refill(0.05)
    assert bucket.level == pytest.approx(0.5) and bucket.wait_s(1) == pytest.approx(0.05)
    bucket.refill(100.0)
    assert bucket.level == 10 and bucket.reset_s() == 0


def test_every_success_carries_the_ratelimit_headers(clock):
    with RateLimitedOpenAI(api_key=KEY, rpm=600, tpm=100_000, burst="second", clock=clock) as server:
        raw = ask(sdk(server), "x" * 400)  # about 100 prompt tokens
        assert raw.parse().choices[0].message.content.startswith("echo:")
        h = raw.headers
        # The minute's budget, as OpenAI reports it, though a second's is enforced.
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("600", "599")
        assert h["x-ratelimit-reset-requests"] == "100ms"  # one request at 10/s
        assert h["x-ratelimit-limit-tokens"] == "100000"
        assert 100_000 - 110 <= int(h["x-ratelimit-remaining-tokens"]) <= 100_000 - 100
        assert h["x-ratelimit-reset-tokens"].endswith("ms")


def test_second_burst_admits_one_second_of_quota_then_429s_like_openai(clock):
    with RateLimitedOpenAI(api_key=KEY, rpm=600, burst="second", clock=clock) as server:
        client = sdk(server)
        error = refused_after(client, 10)
        assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
        assert "on requests per min (RPM): Limit 600, Used 10, Requested 1. Please try again in 100ms." \
            in error.message
        assert error.response.headers["retry-after-ms"] == "100"
        assert error.response.headers["retry-after"] == "1"
        # The trap of a quantized limit: the minute looks far from spent.
        assert error.response.headers["x-ratelimit-remaining-requests"] == "590"
        assert error.response.headers["x-ratelimit-reset-requests"] == "1s"
        clock.now += 0.1  # one request's worth refilled
        ask(client)
        assert server.stats()["rate_limited"] == 1 and server.stats()["admitted"] == 11


def test_bucket_headers_report_the_enforced_bucket(clock):
    with RateLimitedOpenAI(api_key=KEY, rpm=600, burst="second", headers="bucket", clock=clock) as server:
        client = sdk(server)
        h = ask(client).headers
        # Limit per minute, remaining and reset those of the one-second bucket.
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("600", "9")
        assert h["x-ratelimit-reset-requests"] == "100ms"
        error = refused_after(client, 9)
        headers = error.response.headers
        assert headers["x-ratelimit-remaining-requests"] == "0" and headers["retry-after-ms"] == "100"
        assert headers["x-ratelimit-reset-requests"] == "1s"
        assert "Limit 600, Used 600, Requested 1." in error.message
        clock.now += 0.5
        assert ask(client).headers["x-ratelimit-remaining-requests"] == "4"
        assert server.stats()["rate_limited"] == 1
        assert server.arrivals == [1000.0] * 11 + [1000.5]


def test_minute_burst_admits_the_whole_minute_at_once(clock):
    with RateLimitedOpenAI(api_key=KEY, rpm=60, burst="minute", clock=clock) as server:
        client = sdk(server)
        error = refused_after(client, 60)
        headers = error.response.headers
        assert headers["retry-after-ms"] == "1000" and headers["x-ratelimit-reset-requests"] == "1m0s"
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert "Limit 60, Used 60, Requested 1. Please try again in 1s." in error.message
        clock.now += 30
        assert ask(client).headers["x-ratelimit-remaining-requests"] == "29"


def test_tokens_per_minute_is_its_own_budget(clock):
    with RateLimitedOpenAI(api_key=KEY, rpm=10_000, tpm=6000, burst="second", clock=clock) as server:
        client = sdk(server)
        ask(client, "y" * 40, max_tokens=50)  # 10 + 50 of the 100-token second
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client, "y" * 40, max_tokens=50)
        assert caught.value.type == "tokens" and caught.value.code == "rate_limit_exceeded"
        assert "on tokens per min (TPM): Limit 6000" in caught.value.message
        assert "Requested 60." in caught.value.message
        assert server.stats()["rate_limited_tokens"] == 1 and server.stats()["rate_limited_requests"] == 0


def test_the_sdk_waits_as_told_and_gets_through(clock):
    # With real time: two requests a second at most; the SDK sleeps
    # retry-after-ms (up to 500 ms) and retries.
    with RateLimitedOpenAI(api_key=KEY, rpm=120, burst="second") as server:
        client = sdk(server, retries=3)
        for _ in range(4):
            assert ask(client).parse().choices[0].finish_reason == "stop"
        stats = server.stats()
        assert stats["admitted"] == 4 and stats["rate_limited"] >= 1
        assert stats["requests"] == stats["admitted"] + stats["rate_limited"]


def test_stats_and_reset_over_http(clock):
    with RateLimitedOpenAI(api_key=KEY, rpm=60, burst="second", clock=clock) as server:
        client = sdk(server)
        ask(client)
        with pytest.raises(openai.RateLimitError):
            ask(client)
        stats = requests.get(server.url + "/__fake__/stats", timeout=5).json()
        assert {k: stats[k] for k in ("requests", "admitted", "rate_limited", "rpm", "burst")} == \
            {"requests": 2, "admitted": 1, "rate_limited": 1, "rpm": 60, "burst": "second"}
        requests.post(server.url + "/__fake__/reset", timeout=5)
        assert server.stats()["requests"] == 0
        ask(client)  # the buckets are full again


def test_refused_and_unauthenticated_requests_draw_nothing(clock):
    with RateLimitedOpenAI(api_key=KEY, rpm=60, burst="second", clock=clock) as server:
        with pytest.raises(openai.AuthenticationError):
            ask(openai.OpenAI(api_key="sk-wrong", base_url=server.base_url, max_retries=0))
        ask(sdk(server))  # the one request of this second is still there
        for _ in range(3):
            with pytest.raises(openai.RateLimitError):
                ask(sdk(server))
        clock.now += 1.0
        ask(sdk(server))


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="burst"):
        RateLimitedOpenAI(burst="hour")
    with pytest.raises(ValueError, match="positive"):
        RateLimitedOpenAI(rpm=0)
