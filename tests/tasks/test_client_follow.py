"""Client and AsyncClient: submit puts a JSON Celery message on the provider's
list; events() / stream() / result() follow a job whose worker side is played
by calling JobStore and EventPublisher directly (no Celery worker). Every
test runs twice: against `Client`, and against `AsyncClient` (through
tests/async_facade.py, which only drives its event loop)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from promptq.tasks.client import Client, JobFailedError, JobIdConflict, JobNotFound, Reset
from promptq.tasks.job import JobValidationError
from promptq.tasks.keys import TASK_NAME
from promptq.tasks.store import JobStatus
from tests.async_facade import BlockingAsyncClient
from tests.worker_process import wait_for


@pytest.fixture(params=["sync", "async"])
def client(request, settings):
    from promptq.tasks.client import Client

    producer = Client(settings) if request.param == "sync" else BlockingAsyncClient(settings)
    yield producer
    producer.close()
    producer.app.close()


class Follower(threading.Thread):
    """client.events(job_id) in a thread, keeping what it yields and how it ended."""

    def __init__(self, client, job_id, timeout=10.0):
        super().__init__(daemon=True)
        self.client, self.job_id, self.timeout = client, job_id, timeout
        self.events, self.error = [], None

    def run(self):
        try:
            for event in self.client.events(self.job_id, timeout=self.timeout):
                self.events.append(event)
        except BaseException as exc:  # handed to the test
            self.error = exc


def token_of(redis_client, keys, job_id):
    return redis_client.hget(keys.job(job_id), "token").decode()


def start(store, redis_client, keys, job_id, batch_id=None):
    token = token_of(redis_client, keys, job_id)
    assert store.start(job_id, token, "w1", 30, batch_id) == "run"
    return token


def subscribers(redis_client, keys, job_id):
    return redis_client.pubsub_numsub(keys.channel(job_id))[0][1]


def chunk(publisher, job_id, text, attempt=1, store=True):
    return publisher.publish(job_id, "chunk", attempt=attempt, store=store, provider="mock", text=text)


def succeed(store, publisher, job_id, text, stream):
    payload = {"text": text, "provider": "mock", "model": "m", "usage": {"input_tokens": 3, "output_tokens": 2}}
    assert store.finish(job_id, status=JobStatus.SUCCEEDED, payload=payload, batch_id=None,
                        usage=payload["usage"]) == 1
    publisher.publish(job_id, "done", attempt=1, store=stream, usage=payload["usage"], provider="mock", model="m")


# --- submit ------------------------------------------------------------------------


def test_submit_sends_a_json_message_to_the_first_targets_queue(client, queue_messages, redis_client, keys):
    handle = client.submit("hi", to=["ollama:llama3.2:1b", "openai:gpt-4o"], job_id="j1", stream=True)
    assert handle.id == "j1" and handle.created is True
    (message,) = queue_messages("promptq.ollama")
    assert redis_client.llen("promptq.openai") == 0
    assert message["headers"]["task"] == TASK_NAME and message["headers"]["id"] == "j1"
    job_id, spec = message["args"]
    assert job_id == "j1" and spec["targets"] == ["ollama:llama3.2:1b", "openai:gpt-4o"] and spec["stream"] is True
    assert message["kwargs"] == {"target_index": 0, "attempt": 1, "token": token_of(redis_client, keys, "j1")}
    assert client.status("j1").status is JobStatus.QUEUED
    # Same job, same id again: no second record, no second message.
    again = client.submit("hi", to=["ollama:llama3.2:1b", "openai:gpt-4o"], job_id="j1", stream=True)
    assert again.created is False
    # Another job under that id is refused, not silently dropped.
    with pytest.raises(JobIdConflict, match="different job"):
        client.submit("other", to=["openai:gpt-4o"], job_id="j1")
    assert redis_client.llen("promptq.ollama") == 1 and redis_client.llen("promptq.openai") == 0
    assert client.status("j1").spec["prompt"] == "hi"


def test_a_job_cannot_claim_a_batch_from_outside(client, settings, redis_client, keys):
    """Issue 10 item 7: ten single jobs with a real batch's id made it report
    finished while its own jobs waited; an unknown id made a phantom batch."""
    from promptq.tasks.batch import submit_batch
    from promptq.tasks.job import JobSpec, JobValidationError

    batcher = Client(settings)  # the batch API is a blocking one; the client under test is either
    try:
        real = submit_batch(batcher, ['{"custom_id": "c0", "prompt": "mine"}'], targets=["mock:m"]).batch_id
    finally:
        batcher.close()
    before = redis_client.hgetall(keys.batch(real))
    for batch_id in (real, "phantom"):
        with pytest.raises(JobValidationError, match="batch API"):
            client.submit("intruder", to=["mock:m"], batch_id=batch_id)
        spec = JobSpec.create(targets=["mock:m"], prompt="intruder", batch_id=batch_id)
        with pytest.raises(JobValidationError, match="batch API"):
            client.submit_spec(spec)
    assert redis_client.hgetall(keys.batch(real)) == before  # its counters did not move
    assert not redis_client.exists(keys.batch("phantom"))
    from promptq.tasks.lanes import queue_lists

    # The batch's own job alone, in whichever lane's list it went.
    assert sum(redis_client.llen(key) for key in queue_lists("promptq.mock").values()) == 1


def test_job_whose_send_crashed_is_not_lost(client, redis_client, keys, monkeypatch):
    def crash(*args, **kwargs):
        raise ConnectionError("producer died before its submit reached Redis")

    # Both clients create the record and send the message in one round trip of their own.
    target, name = (client.aclient, "_send") if isinstance(client, BlockingAsyncClient) else (client, "_send")
    monkeypatch.setattr(target, name, crash)
    with pytest.raises(ConnectionError):
        client.submit("hi", to=["mock:m"], job_id="j1")
    monkeypatch.undo()
    client.submit("hi", to=["mock:m"], job_id="j1")  # the producer retries after its crash
    # Record and message are written by one script: the crash left neither,
    # and the retry wrote both, once.
    assert redis_client.llen("promptq.mock") == 1 and redis_client.hget(keys.job("j1"), "status") == b"queued"


def test_invalid_submit_leaves_nothing_behind(client, redis_client):
    with pytest.raises(JobValidationError) as info:
        client.submit("hi", to=["mock:m"], parameters={"api_key": "sk-1"}, job_id="j1")
    assert info.value.field == "parameters.api_key"
    assert redis_client.keys("promptq*") == []


# --- following -----------------------------------------------------------------------


def test_late_follower_gets_every_chunk_in_order(client, store, publisher, redis_client, keys):
    client.submit("hi", to=["mock:m"], job_id="j1", stream=True)
    start(store, redis_client, keys, "j1")
    for text in ("a", "b", "c", "d", "e"):
        chunk(publisher, "j1", text)
    succeed(store, publisher, "j1", "abcde", stream=True)
    events = list(client.events("j1", timeout=5))
    assert [(e["seq"], e["type"]) for e in events] == [(i, "chunk") for i in range(1, 6)] + [(6, "done")]
    assert "from_record" not in events[-1]
    assert list(client.stream("j1", timeout=5)) == ["a", "b", "c", "d", "e"]
    assert client.result("j1", timeout=5).text == "abcde"


def test_follower_joining_midway_gets_replay_then_live_without_duplicates(client, store, publisher,
                                                                          redis_client, keys):
    client.submit("hi", to=["mock:m"], job_id="j1", stream=True)
    start(store, redis_client, keys, "j1")
    for text in ("a", "b", "c"):
        chunk(publisher, "j1", text)
    follower = Follower(client, "j1")
    follower.start()
    wait_for(lambda: len(follower.events) == 3 and subscribers(redis_client, keys, "j1") == 1, 10,
             message="follower to replay and subscribe")
    chunk(publisher, "j1", "d")
    # A duplicate on the channel is dropped by sequence number.
    redis_client.publish(keys.channel("j1"), json.dumps(follower.events[1]))
    # A pub/sub message lost on the way: numbered and stored, never published. The next
    # live event shows the gap, which is filled from the replay stream.
    lost = int(redis_client.incr(keys.seq("j1")))
    redis_client.xadd(keys.events("j1"), {"e": json.dumps({"seq": lost, "type": "chunk", "job_id": "j1",
                                                            "attempt": 1, "text": "e"})})
    chunk(publisher, "j1", "f")
    succeed(store, publisher, "j1", "abcdef", stream=True)
    follower.join(10)
    assert not follower.is_alive() and follower.error is None
    assert [e["seq"] for e in follower.events] == list(range(1, 8))
    assert [e.get("text") for e in follower.events] == ["a", "b", "c", "d", "e", "f", None]
    assert follower.events[-1]["type"] == "done"


def test_finished_non_stream_job_is_read_from_its_record(client, store, publisher, redis_client, keys):
    client.submit("hi", to=["mock:m"], job_id="j1")
    start(store, redis_client, keys, "j1")
    succeed(store, publisher, "j1", "hello", stream=False)  # nobody was listening
    (event,) = list(client.events("j1", timeout=5))
    assert event["type"] == "done" and event["from_record"] is True
    assert (event["job_id"], event["provider"], event["model"]) == ("j1", "mock", "m")
    assert event["usage"] == {"input_tokens": 3, "output_tokens": 2}
    record = client.result("j1", timeout=5)
    assert record.status is JobStatus.SUCCEEDED and record.text == "hello"


def test_failed_non_stream_job_raises_from_stream(client, store, redis_client, keys):
    client.submit("hi", to=["mock:m"], job_id="j1")
    token = start(store, redis_client, keys, "j1")
    store.finish("j1", status=JobStatus.FAILED, payload={"message": "all 1 target(s) failed"}, batch_id=None,
                 token=token)
    (event,) = list(client.events("j1", timeout=5))
    assert (event["type"], event["from_record"], event["error"]) == ("error", True, {"message": "all 1 target(s) failed"})
    with pytest.raises(JobFailedError, match="all 1 target"):
        list(client.stream("j1", timeout=5))


def test_result_times_out_on_a_job_that_never_finishes(client):
    client.submit("hi", to=["mock:m"], job_id="j1")
    began = time.monotonic()
    with pytest.raises(TimeoutError, match="j1"):
        client.result("j1", timeout=1.5)
    assert 1.5 <= time.monotonic() - began < 4.0


def test_result_times_out_while_chunks_keep_arriving(client, publisher):
    client.submit("hi", to=["mock:m"], job_id="j1", stream=True)
    stop = threading.Event()

    def trickle():
        for i in range(40):  # about 4 s of chunks, then silence
            if stop.wait(0.1):
                return
            chunk(publisher, "j1", str(i))

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    began = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            client.result("j1", timeout=1.0)
        elapsed = time.monotonic() - began
    finally:
        stop.set()
        feeder.join(5)
    assert elapsed < 2.5, f"result(timeout=1.0) took {elapsed:.1f}s"


def test_unknown_job_id(client):
    with pytest.raises(JobNotFound):
        client.result("nope", timeout=5)
    with pytest.raises(JobNotFound):
        list(client.events("nope"))
    with pytest.raises(JobNotFound):
        client.cancel("nope")
    assert client.status("nope") is None


def test_stream_yields_resets_and_raises_on_error(client, store, publisher, redis_client, keys):
    client.submit("hi", to=["openai:gpt-4o", "claude:haiku"], job_id="j1", stream=True)
    start(store, redis_client, keys, "j1")
    chunk(publisher, "j1", "half an ans")
    publisher.publish("j1", "reset", attempt=1, store=True, provider="openai", reason="stream cut")
    publisher.publish("j1", "failover", attempt=1, store=True, provider="openai", to="claude:haiku", error={})
    chunk(publisher, "j1", "other", attempt=1)
    publisher.publish("j1", "error", attempt=1, store=True, error={"message": "all 2 target(s) failed"})
    pieces = []
    with pytest.raises(JobFailedError) as info:
        for piece in client.stream("j1", timeout=5):
            pieces.append(piece)
    assert pieces == ["half an ans", Reset(1, "openai", "stream cut"), "other"]
    assert info.value.job_id == "j1" and "all 2 target(s) failed" in str(info.value)


# --- cancel --------------------------------------------------------------------------


def test_cancel_queued_stream_job_ends_a_live_follower(client, store, redis_client, keys):
    handle = client.submit("hi", to=["mock:m"], job_id="j1", stream=True)
    token = token_of(redis_client, keys, "j1")
    follower = Follower(client, "j1")
    follower.start()
    wait_for(lambda: subscribers(redis_client, keys, "j1") == 1, 10, message="follower to subscribe")
    assert handle.cancel() == "cancelled"
    follower.join(10)
    assert not follower.is_alive() and follower.error is None
    assert [(e["seq"], e["type"]) for e in follower.events] == [(1, "cancelled")]
    assert "from_record" not in follower.events[0]
    # A late follower replays it; the queued message would now be dropped.
    assert [e["type"] for e in client.events("j1", timeout=5)] == ["cancelled"]
    assert store.start("j1", token, "w1", 30, None) == "terminal"
    assert client.result("j1", timeout=5).status is JobStatus.CANCELLED


def test_cancel_queued_non_stream_job_then_follow(client):
    client.submit("hi", to=["mock:m"], job_id="j1")
    assert client.cancel("j1") == "cancelled"
    (event,) = list(client.events("j1", timeout=5))
    assert (event["type"], event["from_record"]) == ("cancelled", True)


def test_cancel_running_job_is_requested(client, store, redis_client, keys):
    client.submit("hi", to=["mock:m"], job_id="j1")
    start(store, redis_client, keys, "j1")
    assert client.cancel("j1") == "requested"
    assert store.cancel_requested("j1") is True


def test_requeued_stream_job_is_followed_afresh(client, store, publisher, redis_client, keys):
    client.submit("hi", to=["mock:m"], job_id="j1", stream=True)
    token = start(store, redis_client, keys, "j1")
    chunk(publisher, "j1", "partial")
    store.finish("j1", status=JobStatus.FAILED, payload={"message": "boom"}, batch_id=None, token=token)
    publisher.publish("j1", "error", attempt=1, store=True, error={"message": "boom"})
    redis_client.lpush(keys.dead_letter, "j1")
    assert store.requeue_failed("j1", "fresh-token", None) is True
    # The job is queued again: result() must wait for its new outcome, not report the old one.
    with pytest.raises(TimeoutError):
        client.result("j1", timeout=1.5)


def test_a_submit_is_one_round_trip_creating_record_and_message_together(client, redis_client, keys):
    from promptq.tasks.lanes import queue_lists

    client.submit("warm", to=["mock:m"], job_id="warm")  # scripts loaded, queue declared
    redis_client.config_resetstat()
    client.submit("hi", to=["mock:m"], job_id="j1")
    calls = {name[len("cmdstat_"):]: v["calls"] for name, v in redis_client.info("commandstats").items()}
    round_trips = redis_client.info("stats")["total_reads_processed"] - 2  # the two INFO calls
    # One EVALSHA that writes the record and LPUSHes the message; no inflight
    # entry to release, no Celery task-sent PUBLISH. (Commands a script runs
    # are counted too.)
    assert calls["evalsha"] == 1 and calls["lpush"] == 1 and "publish" not in calls and "zadd" not in calls
    assert round_trips == 1
    assert redis_client.hget(keys.job("j1"), "status") == b"queued"
    assert redis_client.zscore(keys.inflight, "j1") is None
    assert sum(redis_client.llen(key) for key in queue_lists("promptq.mock").values()) == 2


def test_a_submit_after_redis_lost_its_scripts_loads_them_and_sends_once(client, redis_client):
    from promptq.tasks.lanes import queue_lists

    client.submit("warm", to=["mock:m"], job_id="warm")
    redis_client.script_flush()  # as after a Redis restart
    assert client.submit("hi", to=["mock:m"], job_id="j1").created
    assert not client.submit("hi", to=["mock:m"], job_id="j1").created  # same job again: nothing sent
    assert sum(redis_client.llen(key) for key in queue_lists("promptq.mock").values()) == 2