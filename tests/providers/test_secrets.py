"""API keys never leave a provider: not in errors, reprs, records or logs.

The hostile case is a server that echoes the request's credentials back in
its error body (proxies and debug endpoints do). The keys used here are not
key-shaped (no `sk-` prefix), so only the provider's registration of its key
can be what removes them.
"""

from __future__ import annotations

import json
import logging
import threading
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from promptq.providers.claude_provider import ClaudeProvider
from promptq.providers.error_handling import ProviderError
from promptq.providers.llamacpp_provider import LlamaCppProvider
from promptq.providers.ollama_provider import OllamaProvider
from promptq.providers.openai_provider import OpenAIProvider
from promptq.providers.openrouter_provider import OpenRouterProvider

from .support import closed_port_url, drain_until_error

PROVIDERS = {
    "openai": (OpenAIProvider, "/v1"),
    "claude": (ClaudeProvider, ""),
    "openrouter": (OpenRouterProvider, "/api/v1"),
    "ollama": (OllamaProvider, ""),
    "llamacpp": (LlamaCppProvider, "/v1"),
}


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every POST by echoing the request's headers back; the mode is in the path query."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        dump = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
        key = self.headers.get("x-api-key") or self.headers.get("authorization", "").replace("Bearer ", "")
        # Both the headers as sent and the bare key value, which no pattern can spot.
        message = f"bad credentials {key} (request headers: {dump})"
        mode = self.server.mode
        if mode == "json":
            self._send(401, "application/json", json.dumps({"error": {"message": message, "type": "auth"}}))
        elif mode == "text":
            self._send(500, "text/plain", message)
        else:  # an error inside a 200 stream, in the vendor's own framing
            if self.path.endswith("/api/chat"):
                body = json.dumps({"error": message}) + "\n"
                ctype = "application/x-ndjson"
            elif self.path.endswith("/messages"):
                payload = {"type": "error", "error": {"type": "api_error", "message": message}}
                body = f"event: error\ndata: {json.dumps(payload)}\n\n"
                ctype = "text/event-stream"
            else:
                body = f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"
                ctype = "text/event-stream"
            self._send(200, ctype, body)

    def _send(self, status, ctype, text):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def echo_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    server.daemon_threads = True
    server.mode = "json"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def fresh_key(name: str) -> str:
    return f"{name}-K3y-{uuid.uuid4().hex}"


def assert_nowhere(key: str, err: ProviderError, caplog) -> None:
    places = {
        "str": str(err),
        "repr": repr(err),
        "to_dict": json.dumps(err.to_dict()),
        "traceback": "".join(traceback.format_exception(err)),
        "logs": caplog.text,
    }
    for where, text in places.items():
        assert key not in text, f"key leaked via {where}: {text[:300]}"


@pytest.fixture(autouse=True)
def capture_everything(caplog):
    caplog.set_level(logging.DEBUG)  # urllib3's and ours, every level


@pytest.mark.parametrize("mode", ["json", "text", "stream"])
@pytest.mark.parametrize("name", list(PROVIDERS))
def test_key_echoed_by_the_server_is_redacted(name, mode, echo_server, caplog):
    cls, prefix = PROVIDERS[name]
    key = fresh_key(name)
    echo_server.mode = mode
    provider = cls({"api_key": key, "base_url": f"http://127.0.0.1:{echo_server.server_port}{prefix}"})
    if mode == "stream":
        _, err = drain_until_error(provider.stream("m", "hi"))
    else:
        with pytest.raises(ProviderError) as info:
            provider.complete("m", "hi")
        err = info.value
    # The server did echo it; the error still explains what happened.
    assert err.provider_message and "bad credentials [REDACTED]" in err.provider_message
    logging.getLogger("promptq.worker").error("job failed: %s (%r)", err, err)
    assert_nowhere(key, err, caplog)


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_key_absent_from_connection_errors_reprs_and_config(name, caplog):
    cls, prefix = PROVIDERS[name]
    key = fresh_key(name)
    provider = cls({"api_key": key, "base_url": closed_port_url(prefix)})
    assert key not in repr(provider) and key not in json.dumps(provider.config, default=str)
    with pytest.raises(ProviderError) as info:
        provider.complete("m", "hi")
    assert_nowhere(key, info.value, caplog)


@pytest.mark.parametrize(
    "name, fixture", [("openai", "fake_openai"), ("claude", "fake_anthropic"), ("openrouter", "fake_openrouter")]
)
def test_wrong_key_auth_error_does_not_carry_the_key(name, fixture, request, caplog):
    fake = request.getfixturevalue(fixture)
    key = fresh_key(name)
    provider = PROVIDERS[name][0]({"api_key": key, "base_url": fake.base_url})
    for call in (lambda: provider.complete("m", "hi"), lambda: list(provider.stream("m", "hi"))):
        with pytest.raises(ProviderError) as info:
            call()
        assert info.value.category.value == "auth"
        assert_nowhere(key, info.value, caplog)


def test_key_from_the_environment_is_redacted_too(echo_server, monkeypatch, caplog):
    key = fresh_key("env")
    monkeypatch.setenv("OPENAI_API_KEY", key)
    provider = OpenAIProvider({"base_url": f"http://127.0.0.1:{echo_server.server_port}/v1"})
    with pytest.raises(ProviderError) as info:
        provider.complete("m", "hi")
    assert_nowhere(key, info.value, caplog)
