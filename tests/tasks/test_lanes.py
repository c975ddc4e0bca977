"""Priority lanes (tasks.lanes): the lane travels in the spec, decides the
Redis list kombu keeps the message in, and survives every re-publish."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from kombu.transport.redis import Channel

from promptq.tasks.app import create_app
from promptq.tasks.batch import batch_status, submit_batch
from promptq.tasks.job import JobSpec, JobValidationError
from promptq.tasks.lanes import PRIORITY_STEPS, list_key, parse_lane, route
from promptq.tasks.leases import LeaseKeeper
from promptq.tasks.store import JobStore, new_token

BATCH_LIST = "promptq.mock\x06\x169"


def test_lane_names_and_the_default():
    assert parse_lane(None) == "interactive" and parse_lane(" Batch ") == "batch"
    with pytest.raises(ValueError, match="'urgent' is not a lane"):
        parse_lane("urgent", "priority")
    assert JobSpec.create(targets=["mock:m"], prompt="p").to_dict()["lane"] == "interactive"
    assert JobSpec.create(targets=["mock:m"], prompt="p", lane="batch").to_dict()["lane"] == "batch"
    # A record written before lanes existed has none: it is interactive.
    legacy = JobSpec.create(targets=["mock:m"], prompt="p").to_dict()
    del legacy["lane"]
    assert JobSpec.from_dict(legacy).lane == "interactive"


def test_bad_lane_is_refused_naming_the_field():
    with pytest.raises(JobValidationError) as caught:
        JobSpec.create(targets=["mock:m"], prompt="p", lane="urgent")
    assert caught.value.field == "priority" and "interactive or batch" in str(caught.value)
    good = JobSpec.create(targets=["mock:m"], prompt="p").to_dict()
    with pytest.raises(JobValidationError) as caught:
        JobSpec.from_dict({**good, "lane": 3})
    assert caught.value.field == "lane"


def test_list_keys_are_kombus_own_names(settings):
    # The bulk submitter LPUSHes itself: its key must be the one kombu's
    # channel would use for that priority, or no worker would ever see it.
    app = create_app(settings)
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            assert channel.priority_steps == PRIORITY_STEPS == [0, 9]
            assert channel.sep == Channel.sep
            for lane, priority in (("interactive", 0), ("batch", 9)):
                assert list_key("promptq.mock", lane) == channel._q_for_pri("promptq.mock", priority)
    finally:
        app.close()
    assert list_key("promptq.mock", "batch") == BATCH_LIST


def test_submit_puts_each_lane_in_its_own_list(client, redis_client, queue_messages):
    interactive = client.submit("now", to=["mock:m"])
    batch = client.submit("later", to=["mock:m"], priority="batch")
    (first,) = queue_messages("promptq.mock")
    (second,) = queue_messages(BATCH_LIST)
    assert first["args"][0] == interactive.id and first["envelope"]["properties"]["priority"] == 0
    assert second["args"][0] == batch.id and second["envelope"]["properties"]["priority"] == 9
    assert second["args"][1]["lane"] == "batch"
    with pytest.raises(JobValidationError, match="priority"):
        client.submit("x", to=["mock:m"], priority="urgent")


def test_batches_default_to_the_batch_lane_and_can_choose(client, redis_client, queue_messages):
    lines = [json.dumps({"custom_id": f"c{i}", "prompt": f"p{i}"}) for i in range(3)]
    submit_batch(client, lines, targets=["mock:m"], batch_id="b-lane")
    assert redis_client.llen(BATCH_LIST) == 3 and redis_client.llen("promptq.mock") == 0
    assert {m["args"][1]["lane"] for m in queue_messages(BATCH_LIST)} == {"batch"}
    assert batch_status(client, "b-lane")["lane"] == "batch"
    submit_batch(client, lines, targets=["mock:m"], batch_id="b-urgent", priority="interactive")
    assert redis_client.llen("promptq.mock") == 3
    with pytest.raises(JobValidationError, match="priority"):
        submit_batch(client, lines, targets=["mock:m"], batch_id="b-bad", priority="bulk")


def test_route_keeps_the_lane_on_every_target():
    from promptq.tasks.keys import Keys

    spec = {"targets": ["openai:a", "ollama:b"], "lane": "batch"}
    assert route(Keys(), spec, 1) == {"queue": "promptq.ollama", "priority": 9}
    assert route(Keys(), {"targets": ["openai:a"]}, 0) == {"queue": "promptq.openai", "priority": 0}


def test_reaper_republishes_into_the_jobs_own_lane(settings, redis_client, keys, queue_messages):
    app = create_app(settings)
    store = JobStore(redis_client, keys, settings.result_ttl_s)
    rt = SimpleNamespace(settings=settings, store=store, keys=keys, app=app, worker_name="host:1", leases=None)
    try:
        spec = JobSpec.create(targets=["mock:m"], prompt="p", lane="batch", job_id="j-dead").to_dict()
        token = new_token()
        assert store.create(spec, token)
        assert store.start("j-dead", token, "gone:1", -1, None) == "run"  # its worker died at once
        assert LeaseKeeper(rt).reap() == 1
        assert redis_client.llen("promptq.mock") == 0
        (message,) = queue_messages(BATCH_LIST)
        assert message["args"][0] == "j-dead" and message["envelope"]["properties"]["priority"] == 9
    finally:
        app.close()


def test_cli_priority_options(settings, redis_client, tmp_path):
    from click.testing import CliRunner

    from promptq.workers.cli.main import cli

    base = ["--redis-url", settings.redis_url]
    out = CliRunner().invoke(cli, base + ["submit", "hi", "--to", "mock:m", "--priority", "batch"])
    assert out.exit_code == 0, out.stderr
    assert redis_client.llen(BATCH_LIST) == 1 and redis_client.llen("promptq.mock") == 0
    out = CliRunner().invoke(cli, base + ["submit", "hi", "--to", "mock:m", "--priority", "urgent"])
    assert out.exit_code == 2 and "interactive" in out.stderr

    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"custom_id": "a", "prompt": "p"}) + "\n")
    out = CliRunner().invoke(cli, base + ["batch", "submit", str(path), "--to", "mock:m", "-q",
                                          "--priority", "interactive"])
    assert out.exit_code == 0, out.stderr
    assert redis_client.llen("promptq.mock") == 1
