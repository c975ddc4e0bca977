"""FetchRecovery: a dead process's processing list is emptied; a message whose
job never started is re-published under a fresh token (and leaves kombu's
unacked hash, so the visibility timeout never brings it back), a stale one is
dropped, an unreadable one goes to the poison list; a live owner's list and
a message its own open channel still tracks are left alone."""

from __future__ import annotations

import json
import time

from promptq.tasks.batch_submit import MessageBuilder
from promptq.tasks.leases import LeaseKeeper
from promptq.tasks.poison import read_poison
from promptq.tasks.reliable_fetch import fetchers_key, processing_key
from promptq.tasks.store import JobStatus, new_token

from .test_leases import runtime, spec  # noqa: F401 - the fixture, shared

DEAD = "promptq:processing:deadhost:7:0badc0de"


def put_in_processing(rt, redis_client, job_id, token, key=DEAD):
    raw = MessageBuilder(rt.app).envelope(job_id, spec(job_id, targets=("mock:m",)), token, "promptq.mock")
    tag = json.loads(raw)["properties"]["delivery_tag"]
    redis_client.lpush(key, raw)
    redis_client.hset("unacked", tag, json.dumps([json.loads(raw), "", "promptq.mock"]))
    redis_client.zadd("unacked_index", {tag: time.time()})
    return tag


def test_dead_process_list_is_recovered(runtime, queue_messages, redis_client, keys):  # noqa: F811
    rt = runtime(lease_ttl_s=3, heartbeat_s=1)
    fresh, stale = new_token(), new_token()
    rt.store.create(spec("never-started", targets=("mock:m",)), fresh)
    rt.store.release("never-started", fresh)
    rt.store.create(spec("moved-on", targets=("mock:m",)), new_token())  # its token is no longer `stale`
    put_in_processing(rt, redis_client, "never-started", fresh)
    put_in_processing(rt, redis_client, "moved-on", stale)
    redis_client.lpush(DEAD, b"\x80 not a message")
    redis_client.hset(fetchers_key("promptq"), DEAD, time.time() - 60)

    assert LeaseKeeper(rt).reap() == 1
    (message,) = queue_messages("promptq.mock")
    assert message["args"][0] == "never-started"
    new = redis_client.hget(keys.job("never-started"), "token").decode()
    assert message["kwargs"]["token"] == new != fresh
    assert rt.store.start("never-started", fresh, "w", 30, None) == "stale"  # the old copy, were it ever restored
    assert redis_client.llen(DEAD) == 0 and redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0
    assert not redis_client.hexists(fetchers_key("promptq"), DEAD)
    (entry,) = read_poison(redis_client)
    assert "not a message" in entry["message"]


def test_live_owner_and_tracked_messages_are_left_alone(runtime, redis_client, keys):  # noqa: F811
    rt = runtime(lease_ttl_s=3, heartbeat_s=1)
    token = new_token()
    rt.store.create(spec("j1", targets=("mock:m",)), token)
    put_in_processing(rt, redis_client, "j1", token)
    redis_client.hset(fetchers_key("promptq"), DEAD, time.time())  # beat just now
    keeper = LeaseKeeper(rt)
    assert keeper.reap() == 0 and redis_client.llen(DEAD) == 1

    # This process's own list: an untracked message is settled only when seen twice.
    own = processing_key("promptq")
    put_in_processing(rt, redis_client, "j1", token, key=own)
    assert keeper.fetch_recovery.recover_own(own, 3) == []
    (job,) = keeper.fetch_recovery.recover_own(own, 3)
    assert job["id"] == "j1" and redis_client.llen(own) == 0
    assert rt.store.status("j1") is JobStatus.QUEUED


def test_reliable_fetch_keeps_what_the_url_scheme_means():
    import ssl

    from kombu.transport.redis import SentinelTransport

    from promptq.tasks.app import create_app
    from promptq.tasks.reliable_fetch import Transport
    from promptq.tasks.settings import Settings

    def connection(url):
        app = create_app(Settings(redis_url=url))
        conn = app.connection_for_write()
        return conn, conn.transport_cls

    conn, cls = connection("rediss://:pw@redis.example:6380/0")
    assert cls == "promptq.tasks.reliable_fetch:Transport" and conn.transport.__class__ is Transport
    assert conn.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}  # TLS, verified
    conn, _ = connection("rediss://:pw@redis.example:6380/0?ssl_cert_reqs=none")
    assert conn.ssl == {"ssl_cert_reqs": ssl.CERT_NONE}  # the URL's own choice wins
    conn, _ = connection("redis://127.0.0.1:6379/0")
    assert conn.transport.__class__ is Transport and not conn.ssl
    conn, _ = connection("sentinel://127.0.0.1:26379/0")
    assert isinstance(conn.transport, SentinelTransport)


def test_a_control_reply_caught_in_a_dead_list_is_dropped_not_poison(runtime, redis_client):  # noqa: F811
    rt = runtime(lease_ttl_s=3, heartbeat_s=1)
    reply = {"body": "e30=", "headers": {}, "content-type": "application/json",
             "properties": {"delivery_tag": "t1", "body_encoding": "base64",
                            "delivery_info": {"exchange": "reply.celery.pidbox", "routing_key": "abc.reply.celery.pidbox"}}}
    redis_client.lpush(DEAD, json.dumps(reply))
    redis_client.hset(fetchers_key("promptq"), DEAD, time.time() - 60)
    assert LeaseKeeper(rt).reap() == 0
    assert redis_client.llen(DEAD) == 0 and read_poison(redis_client) == []
