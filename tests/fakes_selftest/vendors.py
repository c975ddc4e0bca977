"""Client-side knowledge of each vendor, written independently of the fakes.

Each ``Vendor`` knows how a client calls that API with plain ``requests`` and
how to read the answer back (SSE events or NDJSON lines), so the same test
can run against all five servers.  The parsing here is deliberately naive
and byte-level: it must see comments, broken lines and missing terminators
that a forgiving SDK would hide.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

import requests

from tests.fakes import FakeAnthropic, FakeLlamaServer, FakeOllama, FakeOpenAI, FakeOpenRouter, FakeServer


@dataclass
class Frame:
    kind: str                 # "data", "comment" or "line" (NDJSON)
    event: Optional[str]      # SSE event name, if any
    raw: str                  # the data payload / comment text / line
    json: Any = None          # parsed payload, None if not JSON
    valid: bool = True        # False when the payload is not valid JSON


def parse_sse(blob: bytes) -> list[Frame]:
    frames = []
    for block in blob.decode("utf-8").split("\n\n"):
        if not block.strip():
            continue
        event, data, comment = None, [], None
        for line in block.split("\n"):
            if line.startswith(":"):
                comment = line[1:].strip()
            elif line.startswith("event:"):
                event = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].lstrip(" "))
        if comment is not None and not data:
            frames.append(Frame("comment", None, comment))
            continue
        raw = "\n".join(data)
        frames.append(_with_json(Frame("data", event, raw)))
    return frames


def parse_ndjson(blob: bytes) -> list[Frame]:
    return [_with_json(Frame("line", None, line)) for line in blob.decode("utf-8").split("\n") if line.strip()]


def _with_json(frame: Frame) -> Frame:
    if frame.raw == "[DONE]":
        return frame
    try:
        frame.json = json.loads(frame.raw)
    except ValueError:
        frame.valid = False
    return frame


def read_all(resp: requests.Response) -> tuple[bytes, Optional[Exception]]:
    """Read a streamed body as it arrives; return what came and any failure."""
    got = bytearray()
    try:
        for part in resp.iter_content(chunk_size=None):
            got.extend(part)
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError) as exc:
        return bytes(got), exc
    return bytes(got), None


@dataclass
class Vendor:
    name: str
    factory: Callable[..., FakeServer]
    path: str
    headers: dict
    ndjson: bool = False
    stream_default: bool = False

    def body(self, prompt: str, stream: Optional[bool] = None, **extra: Any) -> dict:
        body: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": prompt}]}
        if self.name == "anthropic":
            body["max_tokens"] = 64
        if stream is not None:
            body["stream"] = stream
        body.update(extra)
        return body

    @property
    def model(self) -> str:
        return {"openai": "gpt-4o-mini", "anthropic": "claude-sonnet-4-5", "openrouter": "openai/gpt-4o-mini",
                "ollama": "llama3.2", "llamacpp": "local-model"}[self.name]

    def post(self, server: FakeServer, prompt: str, stream: Optional[bool] = None,
             timeout: float = 10, **extra: Any) -> requests.Response:
        return requests.post(server.url + self.path, json=self.body(prompt, stream, **extra),
                             headers=self.headers, stream=bool(stream) or (stream is None and self.stream_default),
                             timeout=timeout)

    def frames(self, blob: bytes) -> list[Frame]:
        return parse_ndjson(blob) if self.ndjson else parse_sse(blob)

    def piece(self, frame: Frame) -> str:
        """Text a content frame contributes ("" for other frames)."""
        data = frame.json
        if not isinstance(data, dict):
            return ""
        if self.name == "anthropic":
            return data.get("delta", {}).get("text", "") if data.get("type") == "content_block_delta" else ""
        if self.name == "ollama":
            return (data.get("message") or {}).get("content", "")
        choices = data.get("choices") or []
        return (choices[0].get("delta") or {}).get("content") or "" if choices else ""

    def content_pieces(self, frames: list[Frame]) -> list[str]:
        return [p for p in (self.piece(f) for f in frames) if p]

    def body_text(self, data: dict) -> str:
        if self.name == "anthropic":
            return data["content"][0]["text"]
        if self.name == "ollama":
            return data["message"]["content"]
        return data["choices"][0]["message"]["content"]

    def terminated(self, frames: list[Frame]) -> bool:
        """Did the stream end with the vendor's normal terminator?"""
        if not frames:
            return False
        last = frames[-1]
        if self.name == "anthropic":
            return last.event == "message_stop"
        if self.name == "ollama":
            return isinstance(last.json, dict) and last.json.get("done") is True
        return last.raw == "[DONE]"


VENDORS = {
    "openai": Vendor("openai", FakeOpenAI, "/v1/chat/completions", {"Authorization": "Bearer sk-test"}),
    "anthropic": Vendor("anthropic", FakeAnthropic, "/v1/messages",
                        {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}),
    "openrouter": Vendor("openrouter", FakeOpenRouter, "/api/v1/chat/completions",
                         {"Authorization": "Bearer sk-or-v1-test"}),
    "ollama": Vendor("ollama", FakeOllama, "/api/chat", {}, ndjson=True, stream_default=True),
    "llamacpp": Vendor("llamacpp", FakeLlamaServer, "/v1/chat/completions", {}),
}
