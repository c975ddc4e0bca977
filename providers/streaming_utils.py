"""One stream loop for every provider; per-vendor parsers on top of it.

The seed guide's API is kept (`StreamParser.parse_line`, `OpenAIStreamParser`,
`ClaudeStreamParser`, `OllamaStreamParser`, `generic_stream`); its defects
are not:

- Bytes are framed by the shared decoders (`sse.SSEDecoder`,
  `ndjson.NDJSONDecoder`), so a line split across network chunks at any byte,
  `: OPENROUTER PROCESSING` comments, `event:` lines and pings all work.
- An error inside a 200 stream is raised as a classified `ProviderError`,
  never logged and skipped.
- A line we cannot parse is MALFORMED_RESPONSE (not retryable: the same bytes
  would come back); a stream that ends before its terminator ([DONE],
  message_stop, done:true) is a retryable NETWORK_ERROR. Only `requests`
  exceptions become network errors; any other exception, a bug in a parser
  included, propagates as itself.

A parser is stateful for one stream: besides text it gathers the model that
answered, the finish reason and token usage, which `stream_result` turns
into the `ProviderResult` a provider's stream returns.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generator, Iterable, Iterator, Optional

from .base import ProviderResult, Usage
from .finish_reasons import ANTHROPIC_REFUSAL
from .error_handling import ErrorCategory, ProviderError, error_from_payload, map_request_errors, truncated
from .ndjson import NDJSONDecoder, NDJSONLineError
from .sse import SSEDecoder, SSEEvent

_SSE_FIELDS = ("event:", "id:", "retry:")


class StreamParseError(ProviderError, ValueError):
    """A stream line we cannot parse: MALFORMED_RESPONSE, never retryable.

    Also a `ValueError`, as the seed's `parse_line` contract promises.
    """

    def __init__(self, provider: Optional[str], what: str):
        super().__init__(
            f"{provider or 'provider'} malformed response: {what}",
            category=ErrorCategory.MALFORMED_RESPONSE,
            provider=provider,
            retryable=False,
        )


@dataclass
class StreamDelta:
    """What one stream item contributed: text, and whether the stream is over."""

    content: str = ""
    done: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return {"content": self.content, "done": self.done}


class StreamParser(ABC):
    """Turns one decoded stream item into a `StreamDelta`, keeping metadata."""

    #: "sse" items are `SSEEvent`s; "ndjson" items are parsed JSON values.
    framing = "sse"

    def __init__(self, provider: Optional[str] = None):
        self.provider = provider
        self.model: Optional[str] = None
        self.finish_reason: Optional[str] = None
        self.input_tokens: Optional[int] = None
        self.output_tokens: Optional[int] = None
        #: Pieces of a refusal (OpenAI `delta.refusal`), kept apart from the text.
        self.refusal_parts: list[str] = []

    @abstractmethod
    def parse_event(self, item: Any) -> StreamDelta:
        """Parse one decoded item; raise `ProviderError` for an in-band error."""

    def new_decoder(self) -> Any:
        return SSEDecoder() if self.framing == "sse" else NDJSONDecoder()

    def parse_line(self, line: str) -> Dict[str, Any]:
        """The seed's per-line API: `{'content': str, 'done': bool}`.

        Prefer `iter_stream`, which also copes with events spanning lines.
        """
        if isinstance(line, bytes):
            line = line.decode("utf-8")
        line = line.rstrip("\r\n")
        if self.framing == "ndjson":
            if not line.strip():
                return StreamDelta().to_dict()
            return self.parse_event(self.loads(line)).to_dict()
        if line.startswith("data:"):
            data = line[5:][1:] if line[5:6] == " " else line[5:]
            return self.parse_event(SSEEvent(event=None, data=data)).to_dict()
        if not line or line.startswith(":") or line.startswith(_SSE_FIELDS):
            return StreamDelta().to_dict()  # framing, comments: nothing to say
        raise StreamParseError(self.provider, f"not an SSE line: {line[:120]!r}")

    # --- helpers for subclasses --------------------------------------------

    def loads(self, text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            raise StreamParseError(self.provider, f"invalid JSON in stream: {text[:120]!r}") from None

    def json_object(self, text: str) -> Dict[str, Any]:
        data = self.loads(text)
        if not isinstance(data, dict):
            raise StreamParseError(self.provider, f"stream item is {type(data).__name__}, not an object")
        return data

    def in_band_error(self, payload: Dict[str, Any]) -> ProviderError:
        """An error object inside a 200 stream, classified like its HTTP twin."""
        return in_band_error(payload, self.provider or "provider")

    def result(self, text: str, provider: str, requested_model: str, latency_s: float) -> ProviderResult:
        refusal = "".join(self.refusal_parts) or None
        return ProviderResult(
            text=text,
            provider=provider,
            model=self.model or requested_model,
            usage=Usage(self.input_tokens, self.output_tokens),
            finish_reason="refusal" if refusal else self.finish_reason,
            latency_s=latency_s,
            refusal=refusal,
        )


def error_status(payload: Any) -> Optional[int]:
    """The HTTP status an error object names in `error.code` (OpenRouter, llama-server)."""
    err = payload.get("error") if isinstance(payload, dict) else None
    code = err.get("code") if isinstance(err, dict) else None
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
        return code
    return None


def in_band_error(payload: Dict[str, Any], provider: str) -> ProviderError:
    """Classify an error that arrived inside a 200 response.

    The provider accepted the request and then failed while generating, so
    an error nothing else explains is the server's: SERVER_ERROR, retryable
    (Ollama's in-band errors, for one, carry no status or type at all).
    """
    err = error_from_payload(payload, provider, status_code=error_status(payload))
    if err.category is ErrorCategory.UNKNOWN:
        err = ProviderError(
            f"{provider} server error during generation",
            category=ErrorCategory.SERVER_ERROR,
            status_code=err.status_code,
            provider=provider,
            provider_message=err.provider_message,
            error_type=err.error_type,
        )
    return err


def int_or_none(value: Any) -> Optional[int]:
    """A token count as reported, or None for anything that is not an int."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class OpenAIStreamParser(StreamParser):
    """OpenAI chat-completion chunks; also OpenRouter and llama-server."""

    def parse_event(self, item: SSEEvent) -> StreamDelta:
        if item.data.strip() == "[DONE]":
            return StreamDelta(done=True)
        data = self.json_object(item.data)
        if item.event == "error" or data.get("error") is not None:
            raise self.in_band_error(data)
        if isinstance(data.get("model"), str) and data["model"]:
            self.model = data["model"]
        usage = data.get("usage")
        if isinstance(usage, dict):
            # Sent on the final chunk (include_usage); llama-server may send
            # it with the finish_reason chunk instead.
            self.input_tokens = int_or_none(usage.get("prompt_tokens"))
            self.output_tokens = int_or_none(usage.get("completion_tokens"))
        choices = data.get("choices") or []
        if not isinstance(choices, list):
            raise StreamParseError(self.provider, "'choices' is not a list")
        text = ""
        for choice in choices[:1]:  # promptq asks for one completion (n=1)
            if not isinstance(choice, dict):
                raise StreamParseError(self.provider, "a choice is not an object")
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                text = content
            refusal = delta.get("refusal") if isinstance(delta, dict) else None
            if isinstance(refusal, str) and refusal:
                self.refusal_parts.append(refusal)
            reason = choice.get("finish_reason")
            if reason == "error":
                # OpenRouter ends a failed generation this way; the error
                # object, when present, was raised above.
                raise self.in_band_error({"error": {"message": "generation ended with finish_reason 'error'"}})
            if isinstance(reason, str):
                self.finish_reason = reason
        return StreamDelta(content=text)


class ClaudeStreamParser(StreamParser):
    """Anthropic Messages events; unknown event types are ignored, as the API asks."""

    def parse_event(self, item: SSEEvent) -> StreamDelta:
        data = self.json_object(item.data)
        kind = data.get("type") or item.event
        if kind == "error" or item.event == "error":
            raise self.in_band_error(data)
        if kind == "message_start":
            message = data.get("message") or {}
            if isinstance(message.get("model"), str):
                self.model = message["model"]
            self._usage(message.get("usage"))
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                return StreamDelta(content=delta["text"])
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            if isinstance(delta.get("stop_reason"), str):
                self.finish_reason = delta["stop_reason"]
                if self.finish_reason == "refusal":
                    self.refusal_parts = [ANTHROPIC_REFUSAL]
            self._usage(data.get("usage"))
        elif kind == "message_stop":
            return StreamDelta(done=True)
        return StreamDelta()

    def _usage(self, usage: Any) -> None:
        # message_delta's counts are cumulative: the latest value wins.
        if isinstance(usage, dict):
            if int_or_none(usage.get("input_tokens")) is not None:
                self.input_tokens = usage["input_tokens"]
            if int_or_none(usage.get("output_tokens")) is not None:
                self.output_tokens = usage["output_tokens"]


class OllamaStreamParser(StreamParser):
    """Ollama's JSON lines: /api/chat (`message.content`) or /api/generate (`response`)."""

    framing = "ndjson"

    def parse_event(self, item: Any) -> StreamDelta:
        if not isinstance(item, dict):
            raise StreamParseError(self.provider, f"stream line is {type(item).__name__}, not an object")
        if item.get("error") is not None:
            raise self.in_band_error(item)
        if isinstance(item.get("model"), str) and item["model"]:
            self.model = item["model"]
        message = item.get("message")
        content = message.get("content") if isinstance(message, dict) else item.get("response")
        text = content if isinstance(content, str) else ""
        if item.get("done") is True:
            self.finish_reason = item.get("done_reason") or "stop"
            self.input_tokens = int_or_none(item.get("prompt_eval_count"))
            self.output_tokens = int_or_none(item.get("eval_count"))
            return StreamDelta(content=text, done=True)
        return StreamDelta(content=text)


def _decode(decoder: Any, chunk: Optional[bytes], provider: str) -> tuple[list, Optional[ProviderError]]:
    """Decoded items of a chunk (None: end of stream), and the parse error after them."""
    try:
        return (decoder.feed(chunk) if chunk is not None else decoder.flush()), None
    except NDJSONLineError as exc:
        # Items before the bad line still count (one may even end the stream).
        return exc.preceding, StreamParseError(provider, f"line {exc.line_number}: {exc.reason}")


def _batches(source: Iterator[bytes], decoder: Any, provider: str) -> Iterator[tuple]:
    """((items, parse error), at end of stream) per chunk, then once for the flush."""
    for chunk in source:
        yield _decode(decoder, chunk, provider), False
    yield _decode(decoder, None, provider), True


_DRAIN_LIMIT_BYTES = 64 * 1024


def _drain(source: Iterator[bytes]) -> None:
    """Read what follows the terminator (usually just the end of the body).

    A body read to its end lets the connection go back to the pool; one
    closed early is reset and the next request pays for a new connection
    (and TLS handshake). Bounded, and failures here cannot spoil an answer
    that is already complete.
    """
    seen = 0
    try:
        for chunk in source:
            seen += len(chunk)
            if seen > _DRAIN_LIMIT_BYTES:
                break
    except ProviderError:
        pass


def iter_stream_batches(
    chunks: Iterable[bytes], parser: StreamParser, provider: str
) -> Generator[list, None, StreamParser]:
    """Yield the texts each byte chunk completed, as one list per chunk; return
    the parser (model, usage, finish reason).

    A chunk is what the transport read at once (`HTTPProvider.iter_bytes`
    yields one per socket read), so a list holds the pieces that arrived
    together: a relay can send them as one event. Texts completed before an
    error in the same chunk are yielded before it is raised. `chunks` should
    already map transport failures; nothing here catches more than the
    decoders' own parse errors.
    """
    if parser.provider is None:
        parser.provider = provider
    decoder = parser.new_decoder()
    source: Iterator[bytes] = iter(chunks)
    parse = parser.parse_event
    try:
        for (items, failure), at_eof in _batches(source, decoder, provider):
            texts: list[str] = []
            done, error = False, None
            try:
                for item in items:
                    delta = parse(item)
                    if delta.content:
                        texts.append(delta.content)
                    if delta.done:
                        done = True
                        break
            except Exception as exc:  # after the texts that came before it
                error = exc
            if texts:
                yield texts
            if error is not None:
                raise error
            if done:
                _drain(source)
                return parser
            if failure is not None:
                # An unparseable last line at EOF is a line cut short: the
                # stream, not the provider's output, is what broke.
                raise truncated(provider, "stream ended mid-line") if at_eof else failure
        raise truncated(provider)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()  # releases the HTTP response behind the chunks


def iter_stream(
    chunks: Iterable[bytes], parser: StreamParser, provider: str
) -> Generator[str, None, StreamParser]:
    """Yield the text of a byte stream piece by piece; return the parser."""
    batches = iter_stream_batches(chunks, parser, provider)
    try:
        while True:
            try:
                texts = next(batches)
            except StopIteration as stop:
                return stop.value
            yield from texts
    finally:
        batches.close()


def stream_result_batches(
    chunks: Iterable[bytes],
    parser: StreamParser,
    provider: str,
    requested_model: str,
    elapsed_s: Callable[[], float],
) -> Generator[list, None, ProviderResult]:
    """`iter_stream_batches`, returning the `ProviderResult` a provider's stream ends with."""
    parts: list[str] = []
    batches = iter_stream_batches(chunks, parser, provider)
    try:
        while True:
            try:
                texts = next(batches)
            except StopIteration:
                break
            parts.extend(texts)
            yield texts
    finally:
        batches.close()
    return parser.result("".join(parts), provider, requested_model, elapsed_s())


def stream_result(
    chunks: Iterable[bytes],
    parser: StreamParser,
    provider: str,
    requested_model: str,
    elapsed_s: Callable[[], float],
) -> Generator[str, None, ProviderResult]:
    """`iter_stream`, returning the `ProviderResult` a provider's stream ends with."""
    parts: list[str] = []
    for piece in iter_stream(chunks, parser, provider):
        parts.append(piece)
        yield piece
    return parser.result("".join(parts), provider, requested_model, elapsed_s())


def response_bytes(response: Any, provider: str) -> Iterator[bytes]:
    """Raw chunks of a `requests` response (or any object with iter_lines)."""
    with map_request_errors(provider):
        try:
            if hasattr(response, "iter_content"):
                for chunk in response.iter_content(chunk_size=None):
                    if chunk:
                        yield chunk
            else:
                for line in response.iter_lines():
                    yield (line if isinstance(line, bytes) else str(line).encode("utf-8")) + b"\n"
        finally:
            close = getattr(response, "close", None)
            if close is not None:
                close()


def generic_stream(
    response: Any, parser: StreamParser, provider: str = "unknown"
) -> Generator[str, None, StreamParser]:
    """The seed's entry point: stream the text of an HTTP response.

    Usage::

        yield from generic_stream(response, OpenAIStreamParser(), "openai")
    """
    return (yield from iter_stream(response_bytes(response, provider), parser, provider))


__all__ = [
    "ClaudeStreamParser",
    "OllamaStreamParser",
    "OpenAIStreamParser",
    "StreamDelta",
    "StreamParseError",
    "StreamParser",
    "generic_stream",
    "in_band_error",
    "int_or_none",
    "iter_stream",
    "iter_stream_batches",
    "response_bytes",
    "stream_result",
    "stream_result_batches",
]
