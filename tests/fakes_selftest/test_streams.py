"""Success paths and body-breaking faults, run against every vendor fake."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.fakes_selftest.vendors import Vendor, read_all

PROMPT = "tell me about queues"
REPLY = "echo: tell me about queues"
WORDS = ["echo:", " tell", " me", " about", " queues"]


def test_non_stream_reply_is_the_echo(vendor: Vendor, server) -> None:
    resp = vendor.post(server, PROMPT, stream=False)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    assert vendor.body_text(resp.json()) == REPLY


def test_stream_arrives_as_word_chunks_and_terminates(vendor: Vendor, server) -> None:
    resp = vendor.post(server, PROMPT, stream=True)
    assert resp.status_code == 200
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    expected_type = "application/x-ndjson" if vendor.ndjson else "text/event-stream"
    assert resp.headers["Content-Type"].startswith(expected_type)
    blob, error = read_all(resp)
    assert error is None
    frames = vendor.frames(blob)
    assert all(f.valid for f in frames if f.kind != "comment")
    assert vendor.content_pieces(frames) == WORDS
    assert vendor.terminated(frames)


def test_drop_cuts_the_connection_after_n_chunks(vendor: Vendor, server) -> None:
    resp = vendor.post(server, PROMPT + " [[fault:drop:2]]", stream=True)
    assert resp.status_code == 200
    blob, error = read_all(resp)
    assert isinstance(error, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError))
    frames = vendor.frames(blob)
    assert vendor.content_pieces(frames) == WORDS[:2]
    assert not vendor.terminated(frames)


def test_drop_on_non_stream_gives_an_incomplete_body(vendor: Vendor, server) -> None:
    server.push("drop")
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError)):
        vendor.post(server, PROMPT, stream=False)


def test_malformed_inserts_one_broken_json_line(vendor: Vendor, server) -> None:
    resp = vendor.post(server, PROMPT + " [[fault:malformed:1]]", stream=True)
    blob, error = read_all(resp)
    assert error is None
    frames = vendor.frames(blob)
    broken = [i for i, f in enumerate(frames) if f.kind != "comment" and not f.valid]
    assert len(broken) == 1
    assert vendor.content_pieces(frames[:broken[0]]) == WORDS[:1]  # it follows exactly one content chunk
    assert vendor.content_pieces(frames) == WORDS                  # and the stream then carries on
    assert vendor.terminated(frames)


def test_malformed_on_non_stream_is_a_200_that_is_not_json(vendor: Vendor, server) -> None:
    server.push("malformed")
    resp = vendor.post(server, PROMPT, stream=False)
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        json.loads(resp.content)


def test_stream_error_ends_the_stream_with_an_in_band_error(vendor: Vendor, server) -> None:
    resp = vendor.post(server, PROMPT + " [[fault:stream_error:2]]", stream=True)
    assert resp.status_code == 200
    blob, error = read_all(resp)
    assert error is None                     # a clean end, not a cut connection
    frames = vendor.frames(blob)
    assert vendor.content_pieces(frames) == WORDS[:2]
    assert not vendor.terminated(frames)
    last = frames[-1].json
    if vendor.name == "anthropic":
        assert frames[-1].event == "error"
        assert last == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    elif vendor.name == "ollama":
        assert set(last) == {"error"} and isinstance(last["error"], str)
    elif vendor.name == "openrouter":
        assert last["error"]["code"] == "server_error"
        assert last["choices"][0]["finish_reason"] == "error"
        assert last["object"] == "chat.completion.chunk"
    elif vendor.name == "llamacpp":
        assert last == {"error": {"code": 500, "message": "Internal Server Error", "type": "server_error"}}
    else:
        assert set(last) == {"error"} and last["error"]["type"] == "server_error"


def test_stream_error_on_non_stream_is_the_matching_failure(vendor: Vendor, server) -> None:
    server.push("stream_error")
    resp = vendor.post(server, PROMPT, stream=False)
    expected = {"openai": 500, "anthropic": 529, "openrouter": 200, "ollama": 500, "llamacpp": 500}
    assert resp.status_code == expected[vendor.name]
    if vendor.name == "openrouter":  # OpenRouter reports it inside a 200 choice
        choice = resp.json()["choices"][0]
        assert choice["finish_reason"] == "error" and choice["error"]["code"] == 502


def test_slow_delays_the_response(vendor: Vendor, server) -> None:
    start = time.monotonic()
    resp = vendor.post(server, PROMPT + " [[fault:slow:0.3]]", stream=False)
    assert resp.status_code == 200
    assert time.monotonic() - start >= 0.3


def test_slow_stream_spaces_out_the_chunks(vendor: Vendor, server) -> None:
    start = time.monotonic()   # before the request: the gaps are timed from the server's side
    resp = vendor.post(server, "a b [[fault:slow_stream:0.2]]", stream=True)
    blob, error = read_all(resp)
    assert error is None
    assert vendor.content_pieces(vendor.frames(blob)) == ["echo:", " a", " b"]
    assert time.monotonic() - start >= 0.4   # two gaps between three chunks


def test_hang_times_out_the_client_and_does_not_block_stop(vendor: Vendor) -> None:
    server = vendor.factory().start()
    try:
        start = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            vendor.post(server, PROMPT + " [[fault:hang]]", stream=False, timeout=0.5)
        assert time.monotonic() - start < 5
        assert server.requests[-1].fault == "hang"
    finally:
        start = time.monotonic()
        server.stop()
        assert time.monotonic() - start < 2


def test_chunks_directive_and_reply_directive(vendor: Vendor, server) -> None:
    resp = vendor.post(server, "ignored [[reply:abcdef]] [[chunks:3]]", stream=True)
    blob, _ = read_all(resp)
    assert vendor.content_pieces(vendor.frames(blob)) == ["ab", "cd", "ef"]
