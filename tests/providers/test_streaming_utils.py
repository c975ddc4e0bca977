"""The shared stream loop and the per-vendor parsers, without a network.

Every wire sample is fed split at every byte position (and one byte at a
time), since the decoders must not care where TCP cut the stream.
"""

from __future__ import annotations

import json

import pytest
import requests

from promptq.providers.error_handling import ErrorCategory, ProviderError
from promptq.providers.sse import SSEEvent
from promptq.providers.streaming_utils import (
    ClaudeStreamParser,
    OllamaStreamParser,
    OpenAIStreamParser,
    StreamDelta,
    StreamParseError,
    StreamParser,
    generic_stream,
    iter_stream,
)


def sse(obj, event=None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj)}\n\n".encode()


def openai_chunk(content=None, finish=None, usage=None, choices=True) -> dict:
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-x-2024"}
    body["choices"] = [{"index": 0, "delta": {} if content is None else {"content": content},
                        "finish_reason": finish}] if choices else []
    if usage is not None:
        body["usage"] = usage
    return body


OPENAI_WIRE = (
    sse(openai_chunk("Hé"))
    + b": OPENROUTER PROCESSING\n\n"
    + sse(openai_chunk("llo ✓"))
    + sse(openai_chunk(finish="stop"))
    + sse(openai_chunk(usage={"prompt_tokens": 7, "completion_tokens": 2}, choices=False))
    + b"data: [DONE]\n\n"
)

CLAUDE_WIRE = (
    sse({"type": "message_start", "message": {"model": "claude-x", "usage": {"input_tokens": 11, "output_tokens": 1}}},
        "message_start")
    + sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
          "content_block_start")
    + sse({"type": "ping"}, "ping")
    + sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Bon"}},
          "content_block_delta")
    + sse({"type": "brand_new_event", "stuff": 1}, "brand_new_event")
    + sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "jour"}},
          "content_block_delta")
    + sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    + sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}},
          "message_delta")
    + sse({"type": "message_stop"}, "message_stop")
)

OLLAMA_WIRE = (
    b'{"model":"llama3.2","message":{"role":"assistant","content":"Hal"},"done":false}\n'
    b'{"model":"llama3.2","message":{"role":"assistant","content":"lo \xc3\xa9"},"done":false}\n'
    b'{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,'
    b'"done_reason":"length","prompt_eval_count":9,"eval_count":3}\n'
)

CASES = {
    "openai": (OpenAIStreamParser, OPENAI_WIRE, "Héllo ✓", "gpt-x-2024", "stop", (7, 2)),
    "claude": (ClaudeStreamParser, CLAUDE_WIRE, "Bonjour", "claude-x", "end_turn", (11, 5)),
    "ollama": (OllamaStreamParser, OLLAMA_WIRE, "Hallo é", "llama3.2", "length", (9, 3)),
}


def run(parser: StreamParser, chunks) -> tuple[list[str], StreamParser]:
    gen = iter_stream(chunks, parser, "test")
    out = []
    while True:
        try:
            out.append(next(gen))
        except StopIteration as stop:
            return out, stop.value


def splits(wire: bytes):
    for i in range(len(wire) + 1):
        yield [wire[:i], wire[i:]]
    yield [wire[i:i + 1] for i in range(len(wire))]


@pytest.mark.parametrize("name", CASES)
def test_stream_decodes_identically_whatever_the_chunking(name):
    parser_cls, wire, text, model, finish, usage = CASES[name]
    for chunks in splits(wire):
        pieces, parser = run(parser_cls(), chunks)
        assert "".join(pieces) == text, chunks
        assert parser.model == model
        assert parser.finish_reason == finish
        assert (parser.input_tokens, parser.output_tokens) == usage


@pytest.mark.parametrize("name", CASES)
def test_stream_without_terminator_is_retryable_network_error(name):
    parser_cls, wire, *_ = CASES[name]
    terminator = {"openai": b"data: [DONE]", "claude": b"event: message_stop",
                  "ollama": b'{"model":"llama3.2","message":{"role":"assistant","content":""}'}[name]
    cut = wire[: wire.rindex(terminator)]
    for at in (len(cut), len(cut) - 3):  # on an event boundary, and mid-line
        with pytest.raises(ProviderError) as info:
            run(parser_cls(), [cut[:at]])
        assert info.value.category is ErrorCategory.NETWORK_ERROR
        assert info.value.retryable is True


@pytest.mark.parametrize(
    "parser_cls, wire",
    [
        (OpenAIStreamParser, sse(openai_chunk("ok")) + b'data: {"choices": [\n\n'),
        (ClaudeStreamParser, CLAUDE_WIRE[:CLAUDE_WIRE.index(b"event: brand_new")]
         + b"event: content_block_delta\ndata: {not json\n\n"),
        (OllamaStreamParser, b'{"message":{"content":"ok"},"done":false}\n{"message": oops}\n'),
    ],
)
def test_bad_json_line_is_malformed_not_retryable(parser_cls, wire):
    got = []
    with pytest.raises(ProviderError) as info:
        for piece in iter_stream([wire], parser_cls(), "test"):
            got.append(piece)
    assert got in (["ok"], ["Bon"])  # what came before the bad line was delivered
    assert info.value.category is ErrorCategory.MALFORMED_RESPONSE
    assert info.value.retryable is False
    assert isinstance(info.value, ValueError)  # the seed's parse contract


def test_openai_in_band_error_raises_after_text_was_yielded():
    wire = sse(openai_chunk("partial")) + sse({"error": {"message": "The server had an error", "type": "server_error"}})
    gen = iter_stream([wire], OpenAIStreamParser(), "openai")
    assert next(gen) == "partial"
    with pytest.raises(ProviderError) as info:
        next(gen)
    err = info.value
    assert err.category is ErrorCategory.SERVER_ERROR and err.retryable
    assert err.provider_message == "The server had an error"


@pytest.mark.parametrize(
    "code, category, retryable",
    [(502, ErrorCategory.SERVER_ERROR, True), (429, ErrorCategory.RATE_LIMIT, True),
     (402, ErrorCategory.QUOTA_EXHAUSTED, False), (403, ErrorCategory.AUTH_ERROR, False)],
)
def test_openrouter_error_chunk_is_classified_by_its_code(code, category, retryable):
    chunk = openai_chunk("", finish="error")
    chunk["error"] = {"code": code, "message": "Provider returned error"}
    with pytest.raises(ProviderError) as info:
        run(OpenAIStreamParser(), [b": OPENROUTER PROCESSING\n\n" + sse(openai_chunk("a")) + sse(chunk)])
    assert (info.value.category, info.value.retryable, info.value.status_code) == (category, retryable, code)
    assert info.value.provider_message == "Provider returned error"


def test_finish_reason_error_without_error_object_still_raises():
    with pytest.raises(ProviderError):
        run(OpenAIStreamParser(), [sse(openai_chunk("a", finish="error")) + b"data: [DONE]\n\n"])


def test_claude_error_event_is_raised_with_its_type():
    wire = CLAUDE_WIRE.split(b"event: content_block_stop")[0] + sse(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error")
    gen = iter_stream([wire], ClaudeStreamParser(), "claude")
    assert "".join([next(gen), next(gen)]) == "Bonjour"
    with pytest.raises(ProviderError) as info:
        next(gen)
    assert info.value.category is ErrorCategory.OVERLOADED and info.value.retryable
    assert info.value.error_type == "overloaded_error"


def test_ollama_error_line_is_raised():
    wire = b'{"message":{"content":"x"},"done":false}\n{"error":"an error was encountered while running the model"}\n'
    gen = iter_stream([wire], OllamaStreamParser(), "ollama")
    assert next(gen) == "x"
    with pytest.raises(ProviderError) as info:
        next(gen)
    assert info.value.provider_message == "an error was encountered while running the model"


def test_ollama_final_line_without_newline_still_ends_the_stream():
    pieces, parser = run(OllamaStreamParser(), [OLLAMA_WIRE.rstrip(b"\n")])
    assert "".join(pieces) == "Hallo é" and parser.finish_reason == "length"


def test_a_parser_bug_propagates_as_itself():
    class Buggy(StreamParser):
        def parse_event(self, item):
            raise KeyError("choices")

    with pytest.raises(KeyError):
        run(Buggy(), [OPENAI_WIRE])


def test_a_non_requests_error_in_the_source_propagates_as_itself():
    def source():
        yield sse(openai_chunk("a"))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom") as info:
        run(OpenAIStreamParser(), source())
    assert not isinstance(info.value, ProviderError)


def test_stopping_at_the_terminator_and_closing_early_both_close_the_source():
    closed = []

    def source():
        try:
            yield OPENAI_WIRE
            yield sse(openai_chunk("after done"))
        finally:
            closed.append(True)

    pieces, _ = run(OpenAIStreamParser(), source())
    assert "".join(pieces) == "Héllo ✓" and closed == [True]
    gen = iter_stream(source(), OpenAIStreamParser(), "x")
    next(gen)
    gen.close()
    assert closed == [True, True]


# --- the seed's per-line API ---------------------------------------------------


def test_parse_line_seed_api():
    openai = OpenAIStreamParser()
    assert openai.parse_line('data: {"choices":[{"delta":{"content":"Hi"}}]}') == {"content": "Hi", "done": False}
    assert openai.parse_line("data: [DONE]") == {"content": "", "done": True}
    assert openai.parse_line(": OPENROUTER PROCESSING") == {"content": "", "done": False}
    claude = ClaudeStreamParser()
    delta = 'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"Yo"}}'
    assert claude.parse_line(delta)["content"] == "Yo"
    assert claude.parse_line('data: {"type":"message_stop"}')["done"] is True
    ollama = OllamaStreamParser()
    assert ollama.parse_line('{"response":"gen","done":false}') == {"content": "gen", "done": False}
    assert ollama.parse_line(b'{"message":{"content":"chat"},"done":true}')["done"] is True
    with pytest.raises(ValueError):
        openai.parse_line("garbage")
    with pytest.raises(StreamParseError):
        ollama.parse_line("{nope")


def test_stream_delta_dict_shape():
    assert StreamDelta("a").to_dict() == {"content": "a", "done": False}
    assert isinstance(OpenAIStreamParser().parse_event(SSEEvent(None, "[DONE]")), StreamDelta)


# --- generic_stream over a real HTTP response ----------------------------------


def post_stream(fake_openai, content):
    """A raw streamed chat-completions response from the fake, not yet read."""
    return requests.post(
        fake_openai.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": content}], "stream": True},
        headers={"Authorization": f"Bearer {fake_openai.api_key}"},
        stream=True,
        timeout=10,
    )


def test_generic_stream_over_real_http(fake_openai):
    response = post_stream(fake_openai, "one two three")
    gen = generic_stream(response, OpenAIStreamParser(), "openai")
    assert "".join(gen) == "echo: one two three"


def test_generic_stream_maps_a_cut_connection_to_network_error(fake_openai):
    response = post_stream(fake_openai, "a b c d [[fault:drop:2]]")
    got = []
    with pytest.raises(ProviderError) as info:
        for piece in generic_stream(response, OpenAIStreamParser(), "openai"):
            got.append(piece)
    assert got, "the drop comes after some text"
    assert info.value.category is ErrorCategory.NETWORK_ERROR and info.value.retryable
