"""The producer core without any I/O: each operation is driven by hand,
step by step, with the replies Redis would give (the sans-I/O test style:
what a submit or a follower *asks for* is checked, not what a socket did)."""

from __future__ import annotations

import json

import pytest

from promptq.tasks.client_core import ClientCore, Commands, Deliver, JobNotFound, Listen, Send, Subscribe
from promptq.tasks.settings import Settings
from promptq.tasks.store_calls import ScriptCall


@pytest.fixture
def core():
    return ClientCore(Settings())


def first(protocol):
    return protocol.send(None)


def finish(protocol, reply):
    with pytest.raises(StopIteration) as stop:
        protocol.send(reply)
    return stop.value.value


def record_reply(status, spec=None):
    return [{b"status": status.encode(), b"spec": json.dumps(spec or {"stream": False}).encode()}, []]


def test_submit_creates_and_sends_in_one_step(core):
    spec = core.validate(targets=["mock:m"], prompt="hi", job_id="j1")
    steps = core.submit(spec)
    send = first(steps)
    assert isinstance(send, Send) and (send.queue, send.target_index, send.attempt) == ("promptq.mock", 0, 1)
    # One script: the record (holding the token the message carries) and the message together.
    assert send.create.keys[0] == "promptq:job:j1" and send.create.args[1] == send.token
    assert "inflight" not in " ".join(send.create.keys)  # nothing left for a reaper to finish
    assert finish(steps, 1) is True


def test_submit_of_an_existing_id_sends_nothing(core):
    spec = core.validate(targets=["mock:m"], prompt="hi", job_id="j1")
    steps = core.submit(spec)
    assert isinstance(first(steps), Send)
    read = steps.send(0)  # the record exists (nothing was sent): is it the same job?
    assert read.commands[0] == ("HGETALL", "promptq:job:j1")
    assert finish(steps, [{b"status": b"queued", b"spec": json.dumps(spec.to_dict()).encode()}, []]) is False


def test_follower_of_a_finished_job_reads_its_record_without_waiting(core):
    steps = core.events("j1", timeout=5)
    assert first(steps) == Subscribe("promptq:events:j1")
    assert steps.send(None) == Commands((("XRANGE", "promptq:replay:j1", "-", "+"), ("HGET", "promptq:job:j1", "status")))
    read = steps.send([[], b"succeeded"])
    assert not isinstance(read, Listen), "a finished job must not wait a quiet second first"
    assert read.commands[0] == ("HGETALL", "promptq:job:j1")
    replay = steps.send(record_reply("succeeded"))
    assert replay.commands[0][0] == "XRANGE"
    delivered = steps.send([[]])
    assert isinstance(delivered, Deliver) and delivered.event["type"] == "done" and delivered.event["from_record"]


def test_follower_of_a_missing_job_fails_at_once(core):
    steps = core.events("nope", timeout=5)
    first(steps)
    steps.send(None)
    read = steps.send([[], None])
    with pytest.raises(JobNotFound):
        steps.send([{}, []])
    assert read.commands[0] == ("HGETALL", "promptq:job:nope")


def test_follower_fills_a_gap_from_the_replay(core):
    def event(seq, kind="chunk", **fields):
        return {"seq": seq, "type": kind, "job_id": "j1", "attempt": 1, **fields}

    steps = core.events("j1", timeout=5)
    first(steps)
    steps.send(None)
    delivered = steps.send([[(b"1-0", {b"e": json.dumps(event(1, text="a")).encode()})], b"running"])
    assert delivered.event["seq"] == 1
    assert isinstance(steps.send(None), Listen)
    # seq 3 arrives live: 2 was lost on the way, so the replay is read again.
    refill = steps.send(json.dumps(event(3, text="c")).encode())
    assert refill.commands[0][0] == "XRANGE"
    stored = [(f"{n}-0".encode(), {b"e": json.dumps(event(n, text=t)).encode()}) for n, t in ((1, "a"), (2, "b"), (3, "c"))]
    got = [steps.send([stored]).event]
    got.append(steps.send(None).event)
    assert [e["seq"] for e in got] == [2, 3]


def test_cancel_publishes_only_when_it_cancelled(core):
    steps = core.cancel("j1")
    first(steps)
    cancel = steps.send(record_reply("queued", {"stream": True}))
    assert isinstance(cancel, ScriptCall)
    publish = steps.send(b"cancelled")
    assert isinstance(publish, ScriptCall) and publish.keys[0] == "promptq:seq:j1"
    assert finish(steps, 7) == "cancelled"
    steps = core.cancel("j1")
    first(steps)
    steps.send(record_reply("running"))
    signal = steps.send(b"requested")  # running: its worker hears of it on the cancels channel
    assert signal == Commands((("PUBLISH", "promptq:cancels", "j1"),))
    assert finish(steps, [1]) == "requested"
