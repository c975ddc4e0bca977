"""Tests for providers.ndjson: Ollama-style streams, boundaries and errors."""

from __future__ import annotations

import json
import time

import pytest

from promptq.providers.ndjson import NDJSONDecoder, NDJSONLineError, iter_ndjson

from .support import decode_all

TOKENS = ["Bonjour", ", ", "héllo", " 世界", " 🎉", ""]
OLLAMA_OBJECTS = [
    {
        "model": "llama3.2",
        "created_at": f"2024-11-25T08:00:0{i}.000000Z",
        "message": {"role": "assistant", "content": tok},
        "done": False,
    }
    for i, tok in enumerate(TOKENS[:-1])
] + [
    {
        "model": "llama3.2",
        "created_at": "2024-11-25T08:00:05.000000Z",
        "message": {"role": "assistant", "content": ""},
        "done_reason": "stop",
        "done": True,
        "total_duration": 512345678,
        "eval_count": 5,
    }
]
OLLAMA_STREAM = b"".join(
    json.dumps(o, ensure_ascii=False).encode("utf-8") + b"\n" for o in OLLAMA_OBJECTS
)

PAYLOADS = {
    "ollama": OLLAMA_STREAM,
    "ollama-crlf": OLLAMA_STREAM.replace(b"\n", b"\r\n"),
    "ollama-blank-lines": b"\n" + OLLAMA_STREAM.replace(b"\n", b"\n\n  \n"),
    "ollama-no-final-newline": OLLAMA_STREAM.rstrip(b"\n"),
    "ollama-bom": b"\xef\xbb\xbf" + OLLAMA_STREAM,
}


def decode(chunks: list[bytes]) -> tuple[list, NDJSONDecoder]:
    return decode_all(NDJSONDecoder(), chunks)


@pytest.fixture(params=sorted(PAYLOADS), ids=sorted(PAYLOADS))
def stream(request):
    return PAYLOADS[request.param]


def test_whole_stream_decodes_to_expected_objects(stream):
    objects, dec = decode([stream])
    assert objects == OLLAMA_OBJECTS
    assert not dec.pending


def test_split_at_every_byte_position_matches_whole(stream):
    for i in range(len(stream) + 1):
        assert decode([stream[:i], stream[i:]])[0] == OLLAMA_OBJECTS, f"split at byte {i}"


def test_one_byte_at_a_time_matches_whole(stream):
    assert decode([stream[i : i + 1] for i in range(len(stream))])[0] == OLLAMA_OBJECTS


def test_objects_are_returned_per_complete_line():
    dec = NDJSONDecoder()
    assert dec.feed(b'{"a": 1}\n{"b"') == [{"a": 1}]
    assert dec.pending
    assert dec.feed(b": 2}") == []  # no newline yet: still buffered
    assert dec.feed(b"\r\n") == [{"b": 2}]
    assert not dec.pending


def test_final_line_without_newline_is_parsed_by_flush():
    dec = NDJSONDecoder()
    assert dec.feed(b'{"a": 1}\n{"done": true}') == [{"a": 1}]
    assert dec.pending
    assert dec.flush() == [{"done": True}]
    assert not dec.pending


def test_whitespace_only_tail_is_not_pending():
    dec = NDJSONDecoder()
    dec.feed(b'{"a": 1}\n  \r')
    assert not dec.pending
    assert dec.flush() == []


def test_non_object_json_values_are_returned():
    assert decode([b'1\n"s"\nnull\n[1, 2]\n'])[0] == [1, "s", None, [1, 2]]


def test_malformed_line_raises_with_line_number():
    dec = NDJSONDecoder()
    with pytest.raises(NDJSONLineError) as info:
        dec.feed(b'{"a": 1}\n\n{"b":\n{"c": 3}\n')
    err = info.value
    assert isinstance(err, ValueError)
    assert err.line_number == 3  # blank line 2 still counts
    assert err.line == '{"b":'
    assert "line 3" in str(err)
    assert err.preceding == [{"a": 1}]  # parsed before the bad line, not lost
    # Raising is final: the decoder refuses further input.
    with pytest.raises(NDJSONLineError, match="line 3"):
        dec.feed(b'{"d": 4}\n')
    with pytest.raises(NDJSONLineError):
        dec.flush()
    assert err.preceding == [{"a": 1}]  # the re-raise did not clobber the original


def test_malformed_line_across_chunks_reports_line_number():
    dec = NDJSONDecoder()
    assert dec.feed(b'{"a": 1}\n{"b": 2}\nnot js') == [{"a": 1}, {"b": 2}]
    with pytest.raises(NDJSONLineError) as info:
        dec.feed(b"on\n")
    assert info.value.line_number == 3
    assert info.value.line == "not json"
    assert info.value.preceding == []


def test_malformed_final_line_raises_on_flush():
    dec = NDJSONDecoder()
    dec.feed(b'{"a": 1}\n{"b": tru')
    with pytest.raises(NDJSONLineError) as info:
        dec.flush()
    assert info.value.line_number == 2


def test_error_line_is_truncated_to_200_chars():
    bad = b"x" * 1000
    with pytest.raises(NDJSONLineError) as info:
        decode([bad + b"\n"])
    assert info.value.line == "x" * 200
    assert len(str(info.value)) < 400


def test_invalid_utf8_line_raises():
    with pytest.raises(NDJSONLineError, match="line 2.*UTF-8") as info:
        decode([b'{"a": 1}\n{"b": "\xff"}\n'])
    assert info.value.line_number == 2


def test_iter_ndjson_yields_preceding_objects_then_raises():
    got: list = []
    with pytest.raises(NDJSONLineError) as info:
        for obj in iter_ndjson([b'{"a": 1}\n{"b": 2}\n{oops}\n{"c": 3}\n']):
            got.append(obj)
    assert got == [{"a": 1}, {"b": 2}]
    assert info.value.line_number == 3


def test_iter_ndjson_over_chunks():
    chunks = iter([OLLAMA_STREAM[:10], b"", OLLAMA_STREAM[10:]])
    assert list(iter_ndjson(chunks)) == OLLAMA_OBJECTS


def test_feed_after_flush_raises():
    dec = NDJSONDecoder()
    dec.flush()
    with pytest.raises(RuntimeError):
        dec.feed(b"{}\n")


def test_accepts_bytearray_and_memoryview():
    dec = NDJSONDecoder()
    assert dec.feed(bytearray(b'{"a": 1}')) == []
    assert dec.feed(memoryview(b"\n{}\n")) == [{"a": 1}, {}]


def test_one_megabyte_fed_one_byte_at_a_time_is_linear():
    line = json.dumps(OLLAMA_OBJECTS[2], ensure_ascii=False).encode() + b"\n"
    n = (1 << 20) // len(line)
    stream = line * n + b'{"big": "' + b"y" * (1 << 20) + b'"}\n'
    dec = NDJSONDecoder()
    start = time.perf_counter()
    out: list = []
    for i in range(len(stream)):
        out += dec.feed(stream[i : i + 1])
    elapsed = time.perf_counter() - start
    assert len(out) == n + 1 and len(out[-1]["big"]) == 1 << 20
    assert elapsed < 15, f"2 MB in 1-byte chunks took {elapsed:.1f}s"
