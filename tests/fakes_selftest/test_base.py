"""FakeServer mechanics: lifecycle, scripting, recording, directives, streaming."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from tests.fakes import Fault, FakeOpenAI, parse_directives, parse_fault
from tests.fakes_selftest.vendors import VENDORS, parse_sse

OPENAI = VENDORS["openai"]


def test_url_base_url_and_context_manager() -> None:
    with FakeOpenAI() as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.base_url == server.url + "/v1"
        port = server.port
        assert requests.get(server.base_url + "/models", headers=OPENAI.headers, timeout=5).status_code == 200
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)


def test_every_server_gets_its_own_free_port() -> None:
    servers = [vendor.factory().start() for vendor in VENDORS.values()]
    try:
        assert len({s.port for s in servers}) == len(servers)
    finally:
        for s in servers:
            s.stop()


def test_push_is_fifo_and_honours_times(fake_openai) -> None:
    fake_openai.push("server", times=2)
    fake_openai.push(Fault("not_found"))
    statuses = [OPENAI.post(fake_openai, "x", stream=False).status_code for _ in range(4)]
    assert statuses == [500, 500, 404, 200]
    assert [r.fault for r in fake_openai.requests] == ["server", "server", "not_found", None]


def test_a_directive_wins_and_leaves_the_queue_alone(fake_openai) -> None:
    fake_openai.push("server")
    assert OPENAI.post(fake_openai, "x [[fault:overloaded]]", stream=False).status_code == 503
    assert fake_openai.pending_faults == [Fault("server")]
    assert OPENAI.post(fake_openai, "x", stream=False).status_code == 500


def test_reset_clears_faults_and_requests(fake_openai) -> None:
    fake_openai.push("server")
    OPENAI.post(fake_openai, "x", stream=False)
    fake_openai.push("server")
    fake_openai.reset()
    assert fake_openai.requests == []
    assert OPENAI.post(fake_openai, "x", stream=False).status_code == 200


def test_hold_keeps_replies_back_until_release(fake_openai) -> None:
    fake_openai.hold()
    codes: list[int] = []
    calls = [threading.Thread(target=lambda: codes.append(OPENAI.post(fake_openai, "x", stream=False).status_code))
             for _ in range(3)]
    for call in calls:
        call.start()
    assert fake_openai.wait_for_held(3, timeout=5) == 3
    assert codes == []                      # all three wait, none answered
    with pytest.raises(TimeoutError, match="got 3"):
        fake_openai.wait_for_held(4, timeout=0.2)
    fake_openai.release()
    for call in calls:
        call.join(5)
    assert codes == [200, 200, 200]
    assert fake_openai.wait_for_held(0) == 0


def test_requests_record_method_path_headers_and_json(fake_openai) -> None:
    OPENAI.post(fake_openai, "record me", stream=False, temperature=0.25)
    [req] = fake_openai.requests
    assert (req.method, req.path) == ("POST", "/v1/chat/completions")
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.body["temperature"] == 0.25
    assert req.body["messages"][0]["content"] == "record me"


def test_control_endpoints_script_and_report_over_http(fake_openai) -> None:
    resp = requests.post(fake_openai.url + "/__fake__/script", timeout=5,
                         json={"faults": ["rate_limit:2", {"name": "server", "times": 2}]})
    assert resp.json() == {"queued": ["rate_limit:2", "server", "server"]}
    assert OPENAI.post(fake_openai, "one", stream=False).headers["Retry-After"] == "2"
    report = requests.get(fake_openai.url + "/__fake__/requests", timeout=5).json()
    assert [r["fault"] for r in report["requests"]] == ["rate_limit:2"]
    assert report["requests"][0]["body"]["messages"][0]["content"] == "one"
    assert requests.post(fake_openai.url + "/__fake__/reset", timeout=5).json() == {"reset": True}
    assert OPENAI.post(fake_openai, "two", stream=False).status_code == 200


def test_control_script_rejects_unknown_faults(fake_openai) -> None:
    resp = requests.post(fake_openai.url + "/__fake__/script", json={"faults": ["nope"]}, timeout=5)
    assert resp.status_code == 400
    assert fake_openai.pending_faults == []


def test_another_process_can_script_the_server(fake_openai) -> None:
    code = ("import json, sys, urllib.request;"
            "req = urllib.request.Request(sys.argv[1] + '/__fake__/script', method='POST',"
            " data=json.dumps({'faults': ['overloaded']}).encode(), headers={'Content-Type': 'application/json'});"
            "print(urllib.request.urlopen(req).read().decode())")
    out = subprocess.run([sys.executable, "-c", code, fake_openai.url], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"queued": ["overloaded"]}
    assert OPENAI.post(fake_openai, "x", stream=False).status_code == 503


def test_parse_fault_and_directives() -> None:
    assert parse_fault("slow:0.5") == Fault("slow", "0.5")
    assert parse_fault({"name": "drop", "arg": 3}).count() == 3
    assert Fault("rate_limit").number() == 1
    with pytest.raises(ValueError):
        parse_fault("explode")
    found = parse_directives("hello [[fault:drop:2]] world [[reply:a:b]] [[chunks:4]]")
    assert found.fault == Fault("drop", "2")
    assert (found.reply, found.chunks, found.clean_prompt) == ("a:b", 4, "hello world")


def test_only_the_last_user_message_is_read(fake_openai) -> None:
    body = {"model": "m", "messages": [
        {"role": "user", "content": "old [[fault:server]]"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": [{"type": "text", "text": "new "}, {"type": "text", "text": "parts"}]},
    ]}
    resp = requests.post(fake_openai.base_url + "/chat/completions", json=body, headers=OPENAI.headers, timeout=5)
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == "echo: new parts"


def test_chunk_count_and_chunk_size_settings() -> None:
    with FakeOpenAI(chunk_count=2) as server:
        frames = parse_sse(OPENAI.post(server, "abcd", stream=True).content)
        assert OPENAI.content_pieces(frames) == ["echo:", " abcd"]
    with FakeOpenAI(chunk_size=4) as server:
        frames = parse_sse(OPENAI.post(server, "abcd", stream=True).content)
        assert OPENAI.content_pieces(frames) == ["echo", ": ab", "cd"]


def test_latency_delays_the_first_byte() -> None:
    with FakeOpenAI(latency_s=0.3) as server:
        start = time.monotonic()
        OPENAI.post(server, "x", stream=False)
        assert time.monotonic() - start >= 0.3


def test_stream_chunks_arrive_incrementally_and_stop_is_prompt() -> None:
    server = FakeOpenAI().start()
    try:
        # 30 s between chunks: the first content chunk can only be seen early if
        # the server really flushes each chunk as it is written.
        resp = OPENAI.post(server, "one two [[fault:slow_stream:30]]", stream=True, timeout=10)
        parts = resp.iter_content(chunk_size=None)
        seen = b""
        start = time.monotonic()
        while b'"content":"echo:"' not in seen:
            seen += next(parts)
        assert time.monotonic() - start < 5
    finally:
        start = time.monotonic()
        server.stop()
        assert time.monotonic() - start < 2


def test_stop_closes_idle_keep_alive_connections_and_leaves_no_threads() -> None:
    before = threading.active_count()
    server = FakeOpenAI().start()
    session = requests.Session()
    assert session.post(server.base_url + "/chat/completions", json=OPENAI.body("x", False),
                        headers=OPENAI.headers, timeout=5).status_code == 200
    raw = socket.create_connection(("127.0.0.1", server.port))  # connected, never sends a request
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 2
    assert threading.active_count() <= before
    raw.close()
    session.close()


def test_wait_for_requests_blocks_until_they_arrive(fake_openai) -> None:
    thread = threading.Thread(target=OPENAI.post, args=(fake_openai, "x"), kwargs={"stream": False})
    thread.start()
    assert fake_openai.wait_for_requests(1, timeout=5)[0].path == "/v1/chat/completions"
    thread.join()
    with pytest.raises(TimeoutError):
        fake_openai.wait_for_requests(2, timeout=0.1)


def test_concurrent_requests_each_get_their_own_fault(fake_openai) -> None:
    prompts = {"a [[fault:server]]": 500, "b": 200, "c [[fault:quota]]": 429, "d [[fault:slow:0.2]]": 200}
    results: dict[str, int] = {}

    def call(prompt: str) -> None:
        results[prompt] = OPENAI.post(fake_openai, prompt, stream=False).status_code

    threads = [threading.Thread(target=call, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == prompts


def test_unknown_route_is_404(fake_openai) -> None:
    assert requests.get(fake_openai.url + "/nope", timeout=5).status_code == 404


def test_chunked_request_bodies_are_read(fake_openai) -> None:
    payload = json.dumps(OPENAI.body("sent in chunks", False)).encode()
    resp = requests.post(fake_openai.base_url + "/chat/completions", headers=OPENAI.headers, timeout=5,
                         data=iter([payload[:10], payload[10:]]))   # a generator body goes out chunked
    assert resp.status_code == 200
    assert fake_openai.requests[-1].headers["transfer-encoding"] == "chunked"
    assert resp.json()["choices"][0]["message"]["content"] == "echo: sent in chunks"
