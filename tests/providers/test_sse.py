"""Tests for providers.sse: spec conformance and chunk-boundary independence."""

from __future__ import annotations

import json
import random
import time

import pytest

from promptq.providers.sse import SSEDecoder, SSEEvent, iter_sse

from .support import decode_all

# --- realistic payloads -----------------------------------------------------


def _openai_chunk(delta: dict, finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-9xK2",
            "object": "chat.completion.chunk",
            "created": 1732500000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        },
        separators=(",", ":"),
    )


OPENAI_DATA = [
    _openai_chunk({"role": "assistant", "content": ""}),
    _openai_chunk({"content": "Hello"}),
    _openai_chunk({"content": " wörld"}),
    _openai_chunk({}, finish="stop"),
    "[DONE]",
]
OPENAI_STREAM = "".join(f"data: {d}\n\n" for d in OPENAI_DATA).encode()
OPENAI_EVENTS = [SSEEvent(event=None, data=d) for d in OPENAI_DATA]

TEXT = "héllo 世界 🎉"
ANTHROPIC_BLOCKS = [
    ("message_start", {"type": "message_start", "message": {"id": "msg_01", "role": "assistant"}}),
    ("content_block_start", {"type": "content_block_start", "index": 0,
                             "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": TEXT}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                       "usage": {"output_tokens": 7}}),
    ("message_stop", {"type": "message_stop"}),
]
ANTHROPIC_STREAM = "".join(
    f"event: {name}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"
    for name, body in ANTHROPIC_BLOCKS
).encode("utf-8")
ANTHROPIC_EVENTS = [
    SSEEvent(event=name, data=json.dumps(body, ensure_ascii=False))
    for name, body in ANTHROPIC_BLOCKS
]

OPENROUTER_STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b": OPENROUTER PROCESSING\n\n"
    + b"".join(f"data: {d}\n\n".encode() for d in OPENAI_DATA[:2])
    + b": OPENROUTER PROCESSING\n\n"
    + b"".join(f"data: {d}\n\n".encode() for d in OPENAI_DATA[2:])
)
OPENROUTER_COMMENTS = ["OPENROUTER PROCESSING"] * 3

# Multi-line data, id/retry fields, a comment and an empty-data block in one stream.
MIXED_STREAM = (
    "retry: 2500\n"
    "id: evt-1\n"
    "event: update\n"
    "data: first line\n"
    "data: 世界 second line\n"
    "\n"
    ":keepalive\n"
    "event: ignored-no-data\n"
    "\n"
    "data: {\"n\": 2}\n"
    "\n"
).encode("utf-8")
MIXED_EVENTS = [
    SSEEvent(event="update", data="first line\n世界 second line", id="evt-1", retry=2500),
    SSEEvent(event=None, data='{"n": 2}', id="evt-1"),
]


def _eol(stream: bytes, eol: bytes) -> bytes:
    return stream.replace(b"\n", eol)


PAYLOADS = {
    "openai": (OPENAI_STREAM, OPENAI_EVENTS, []),
    "anthropic": (ANTHROPIC_STREAM, ANTHROPIC_EVENTS, []),
    "anthropic-crlf": (_eol(ANTHROPIC_STREAM, b"\r\n"), ANTHROPIC_EVENTS, []),
    "anthropic-cr": (_eol(ANTHROPIC_STREAM, b"\r"), ANTHROPIC_EVENTS, []),
    "openrouter": (OPENROUTER_STREAM, OPENAI_EVENTS, OPENROUTER_COMMENTS),
    "openrouter-crlf": (_eol(OPENROUTER_STREAM, b"\r\n"), OPENAI_EVENTS, OPENROUTER_COMMENTS),
    "openai-cr": (_eol(OPENAI_STREAM, b"\r"), OPENAI_EVENTS, []),
    "mixed": (MIXED_STREAM, MIXED_EVENTS, ["keepalive"]),
    "mixed-crlf": (_eol(MIXED_STREAM, b"\r\n"), MIXED_EVENTS, ["keepalive"]),
    "mixed-cr": (_eol(MIXED_STREAM, b"\r"), MIXED_EVENTS, ["keepalive"]),
    "bom": (b"\xef\xbb\xbf" + OPENAI_STREAM, OPENAI_EVENTS, []),
}


def decode(chunks: list[bytes]) -> tuple[list[SSEEvent], SSEDecoder]:
    return decode_all(SSEDecoder(), chunks)


@pytest.fixture(params=sorted(PAYLOADS), ids=sorted(PAYLOADS))
def payload(request):
    return PAYLOADS[request.param]


# --- chunk-boundary independence -------------------------------------------


def test_whole_stream_decodes_to_expected_events(payload):
    stream, expected, comments = payload
    events, dec = decode([stream])
    assert events == expected
    assert dec.comments == comments
    assert not dec.pending


def test_split_at_every_byte_position_matches_whole(payload):
    stream, expected, comments = payload
    for i in range(len(stream) + 1):
        events, dec = decode([stream[:i], stream[i:]])
        assert events == expected, f"split at byte {i}"
        assert dec.comments == comments, f"split at byte {i}"
        assert not dec.pending, f"split at byte {i}"


def test_one_byte_at_a_time_matches_whole(payload):
    stream, expected, comments = payload
    events, dec = decode([stream[i : i + 1] for i in range(len(stream))])
    assert events == expected
    assert dec.comments == comments


def test_random_chunkings_match_whole():
    rng = random.Random(20241125)  # fixed seed: deterministic
    for stream, expected, _ in PAYLOADS.values():
        for _ in range(30):
            cuts = sorted(rng.sample(range(1, len(stream)), 8))
            pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
            assert decode(pieces)[0] == expected, f"cuts {cuts}"


def test_events_are_returned_as_soon_as_complete():
    dec = SSEDecoder()
    assert dec.feed(b"data: a\n") == []
    assert dec.feed(b"\n") == [SSEEvent(event=None, data="a")]
    # A CR terminator is acted on immediately, without waiting for a possible LF.
    assert dec.feed(b"data: b\r\r") == [SSEEvent(event=None, data="b")]


def test_cr_at_chunk_end_then_lf_is_one_line_ending():
    dec = SSEDecoder()
    assert dec.feed(b"data: a\r") == []
    # If this LF were a second line ending it would dispatch the event here.
    assert dec.feed(b"\n") == []
    assert dec.feed(b"\r") == [SSEEvent(event=None, data="a")]
    assert dec.feed(b"\ndata: b\n\n") == [SSEEvent(event=None, data="b")]


def test_multibyte_char_split_across_chunks():
    raw = "data: 🎉\n\n".encode()
    cut = raw.index(b"\xf0") + 2  # inside the 4-byte emoji
    dec = SSEDecoder()
    assert dec.feed(raw[:cut]) == []
    assert dec.pending
    assert dec.feed(raw[cut:]) == [SSEEvent(event=None, data="🎉")]


# --- truncation and end of stream --------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [b"data: b\n", b"data: b", b"event: x\n", b"da", b"data: \xe4\xb8"],
    ids=["fields-no-blank-line", "unterminated-line", "event-only", "partial-name", "partial-utf8"],
)
def test_truncated_final_event_is_pending_and_not_dispatched(tail):
    dec = SSEDecoder()
    assert dec.feed(b"data: a\n\n" + tail) == [SSEEvent(event=None, data="a")]
    assert dec.pending
    assert dec.flush() == []
    assert dec.pending  # still tells the caller, after the fact, that the stream was cut


def test_clean_end_is_not_pending():
    dec = SSEDecoder()
    dec.feed(b"data: a\n\n: trailing comment\n")
    assert dec.flush() == []
    assert not dec.pending


def test_feed_after_flush_raises():
    dec = SSEDecoder()
    dec.flush()
    with pytest.raises(RuntimeError):
        dec.feed(b"data: a\n\n")


def test_iter_sse_over_chunks_and_exposes_pending():
    dec = SSEDecoder()
    chunks = iter([OPENROUTER_STREAM[:7], b"", OPENROUTER_STREAM[7:], b"data: cut"])
    assert list(iter_sse(chunks, decoder=dec)) == OPENAI_EVENTS
    assert dec.pending
    assert dec.comments == OPENROUTER_COMMENTS
    assert list(iter_sse([ANTHROPIC_STREAM])) == ANTHROPIC_EVENTS


# --- field parsing ------------------------------------------------------------


def test_bom_is_stripped_once_only():
    assert decode([b"\xef\xbb\xbfdata: x\n\n"])[0] == [SSEEvent(event=None, data="x")]
    # A second BOM is part of the field name "\ufeffdata", which is unknown.
    assert decode([b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n"])[0] == []
    # A BOM that is not at the start of the stream is ordinary text.
    assert decode([b"data: \xef\xbb\xbfx\n\n"])[0] == [SSEEvent(event=None, data="\ufeffx")]


def test_field_without_colon_has_empty_value():
    events, _ = decode([b"data\n\n", b"data\ndata\ndata: x\n\n", b"event\ndata: y\n\n"])
    assert events == [
        SSEEvent(event=None, data=""),
        SSEEvent(event=None, data="\n\nx"),
        SSEEvent(event=None, data="y"),
    ]


def test_only_one_leading_space_is_stripped():
    events, _ = decode([b"data:nospace\n\n", b"data:  two\n\n", b"data: a: b\n\n"])
    assert [e.data for e in events] == ["nospace", " two", "a: b"]


def test_blocks_without_data_are_not_dispatched_and_reset_event_type():
    events, _ = decode([b"event: ping\n\n", b"data: x\n\n"])
    assert events == [SSEEvent(event=None, data="x")]


def test_empty_event_name_means_default_type():
    assert decode([b"event:\ndata: x\n\n"])[0] == [SSEEvent(event=None, data="x")]


def test_last_event_field_wins():
    assert decode([b"event: a\nevent: b\ndata: x\n\n"])[0][0].event == "b"


def test_unknown_fields_and_near_misses_are_ignored():
    events, dec = decode([b"foo: bar\nData: no\ndata : no\ndata: yes\n\n"])
    assert events == [SSEEvent(event=None, data="yes")]
    assert decode([b"foo: bar\n"])[1].pending is False  # ignored field is not a pending event


def test_retry_field():
    events, dec = decode([
        b"retry: 3000\ndata: a\n\n",
        b"data: b\n\n",  # retry is reported once, on the event that carried it
        b"retry: 3s\ndata: c\n\n",  # not all ASCII digits: ignored
        b"retry: \xc2\xb2\ndata: d\n\n",  # "²" is a digit to str.isdigit but not ASCII
        b"retry: 10\n\n",  # retry-only block: nothing dispatched, value kept
        b"data: e\n\n",
    ])
    assert [(e.data, e.retry) for e in events] == [
        ("a", 3000), ("b", None), ("c", None), ("d", None), ("e", 10)
    ]
    assert dec.retry == 10


def test_id_field_persists_and_resets():
    events, dec = decode([
        b"data: a\n\n",
        b"id: 7\ndata: b\n\n",
        b"data: c\n\n",  # last event ID persists across events (spec)
        b"id: bad\x00id\ndata: d\n\n",  # ids containing NUL are ignored
        b"id\ndata: e\n\n",  # empty id resets it to ""
    ])
    assert [(e.data, e.id) for e in events] == [
        ("a", None), ("b", "7"), ("c", "7"), ("d", "7"), ("e", "")
    ]
    assert dec.last_event_id == ""


def test_comments_are_recorded_and_reported_not_dispatched():
    seen: list[str] = []
    dec = SSEDecoder(on_comment=seen.append)
    assert dec.feed(b": OPENROUTER PROCESSING\n\n:raw\n:\n") == []
    assert dec.comments == ["OPENROUTER PROCESSING", "raw", ""]
    assert seen == dec.comments


def test_invalid_utf8_becomes_replacement_char():
    assert decode([b"data: a\xffb\n\n"])[0] == [SSEEvent(event=None, data="a\ufffdb")]


def test_accepts_bytearray_and_memoryview():
    dec = SSEDecoder()
    assert dec.feed(bytearray(b"data: a\n")) == []
    assert dec.feed(memoryview(b"\n")) == [SSEEvent(event=None, data="a")]


# --- performance ---------------------------------------------------------------


def test_one_megabyte_fed_one_byte_at_a_time_is_linear():
    # Quadratic buffering would take minutes here; linear takes ~1-2 s.
    event = b"data: " + _openai_chunk({"content": "tök"}).encode() + b"\r\n\r\n"
    n = (1 << 20) // len(event)
    stream = event * n
    big_line = b"data: " + b"x" * (1 << 20) + b"\n\n"
    dec = SSEDecoder()
    start = time.perf_counter()
    count = 0
    for i in range(len(stream)):
        count += len(dec.feed(stream[i : i + 1]))
    long_events = []
    for i in range(len(big_line)):
        long_events += dec.feed(big_line[i : i + 1])
    elapsed = time.perf_counter() - start
    assert count == n
    assert len(long_events) == 1 and len(long_events[0].data) == 1 << 20
    assert elapsed < 15, f"2 MB in 1-byte chunks took {elapsed:.1f}s"
