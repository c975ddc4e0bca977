"""Every HTTP-status fault, on every vendor: status, body shape, retry headers."""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from tests.fakes import HTTP_ERROR_FAULTS
from tests.fakes_selftest.vendors import VENDORS, Vendor

# fault -> (status, a type/code string the vendor puts in its error body)
EXPECTED = {
    "openai": {
        "auth": (401, "invalid_api_key"), "forbidden": (403, "unsupported_country_region_territory"),
        "not_found": (404, "model_not_found"), "invalid": (400, "missing_required_parameter"),
        "context_length": (400, "context_length_exceeded"), "content_filter": (400, "invalid_prompt"),
        "quota": (429, "insufficient_quota"), "rate_limit": (429, "rate_limit_exceeded"),
        "rate_limit_date": (429, "rate_limit_exceeded"), "rate_limit_ms": (429, "rate_limit_exceeded"),
        "server": (500, "server_error"), "overloaded": (503, "server_error"),
    },
    "anthropic": {
        "auth": (401, "authentication_error"), "forbidden": (403, "permission_error"),
        "not_found": (404, "not_found_error"), "invalid": (400, "invalid_request_error"),
        "context_length": (400, "prompt is too long"), "content_filter": (400, "content filtering policy"),
        "quota": (400, "credit balance is too low"), "rate_limit": (429, "rate_limit_error"),
        "rate_limit_date": (429, "rate_limit_error"), "rate_limit_ms": (429, "rate_limit_error"),
        "server": (500, "api_error"), "overloaded": (529, "overloaded_error"),
    },
    "openrouter": {
        "auth": (401, "User not found."), "forbidden": (403, "Key limit exceeded"),
        "not_found": (404, "No endpoints found for"), "invalid": (400, "Input required"),
        "context_length": (400, "maximum context length"), "content_filter": (403, "requires moderation"),
        "quota": (402, "requires more credits"), "rate_limit": (429, "Rate limit exceeded"),
        "rate_limit_date": (429, "Rate limit exceeded"), "rate_limit_ms": (429, "Rate limit exceeded"),
        "server": (500, "Internal Server Error"), "overloaded": (503, "Provider returned error"),
    },
    "ollama": {
        "auth": (401, "unauthorized"), "forbidden": (403, "forbidden"),
        "not_found": (404, "not found, try pulling it first"), "invalid": (400, "model is required"),
        "context_length": (400, "exceeds the context length"), "content_filter": (400, "content filter"),
        "quota": (429, "usage limit"), "rate_limit": (429, "too many requests"),
        "rate_limit_date": (429, "too many requests"), "rate_limit_ms": (429, "too many requests"),
        "server": (500, "llama runner process has terminated"), "overloaded": (503, "server busy"),
    },
    "llamacpp": {
        "auth": (401, "authentication_error"), "forbidden": (403, "permission_error"),
        "not_found": (404, "not_found_error"), "invalid": (400, "invalid_request_error"),
        "context_length": (400, "exceed_context_size_error"), "content_filter": (400, "invalid_request_error"),
        "quota": (429, "rate_limit_error"), "rate_limit": (429, "rate_limit_error"),
        "rate_limit_date": (429, "rate_limit_error"), "rate_limit_ms": (429, "rate_limit_error"),
        "server": (500, "server_error"), "overloaded": (503, "unavailable_error"),
    },
}


def assert_vendor_shape(vendor: Vendor, status: int, body: dict) -> None:
    if vendor.name == "openai":
        assert set(body) == {"error"}
        assert set(body["error"]) == {"message", "type", "param", "code"}
    elif vendor.name == "anthropic":
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
        assert body["request_id"].startswith("req_")
    elif vendor.name == "openrouter":
        assert body["error"]["code"] == status and isinstance(body["error"]["message"], str)
    elif vendor.name == "ollama":
        assert set(body) == {"error"} and isinstance(body["error"], str)
    else:
        assert set(body) == {"error"}
        assert body["error"]["code"] == status and set(body["error"]) >= {"code", "message", "type"}


@pytest.mark.parametrize("fault", HTTP_ERROR_FAULTS)
def test_http_fault_status_and_body(vendor: Vendor, server, fault: str) -> None:
    server.push(fault)
    resp = vendor.post(server, "hello", stream=True)   # errors come before any stream starts
    status, needle = EXPECTED[vendor.name][fault]
    assert resp.status_code == status
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert_vendor_shape(vendor, status, body)
    assert needle in json.dumps(body)
    assert server.requests[-1].fault == fault


def test_expected_table_covers_every_fault() -> None:
    for table in EXPECTED.values():
        assert set(table) == set(HTTP_ERROR_FAULTS)


def test_rate_limit_sends_retry_after_seconds(vendor: Vendor, server) -> None:
    server.push("rate_limit:3")
    resp = vendor.post(server, "hello", stream=False)
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "3"
    assert "retry-after-ms" not in resp.headers


def test_rate_limit_date_sends_an_http_date(vendor: Vendor, server) -> None:
    server.push("rate_limit_date:5")
    before = time.time()
    resp = vendor.post(server, "hello", stream=False)
    assert resp.status_code == 429
    when = email.utils.parsedate_to_datetime(resp.headers["Retry-After"]).timestamp()
    assert before + 4 <= when <= time.time() + 6


def test_rate_limit_ms_sends_retry_after_ms_only(vendor: Vendor, server) -> None:
    server.push("rate_limit_ms:250")
    resp = vendor.post(server, "hello", stream=False)
    assert resp.status_code == 429
    assert resp.headers["retry-after-ms"] == "250"
    assert "Retry-After" not in resp.headers


@pytest.mark.parametrize("name,header", [
    ("openai", "x-ratelimit-remaining-requests"),
    ("anthropic", "anthropic-ratelimit-requests-remaining"),
    ("openrouter", "X-RateLimit-Remaining"),
])
def test_rate_limit_carries_vendor_rate_limit_headers(name: str, header: str) -> None:
    vendor = VENDORS[name]
    with vendor.factory() as server:
        server.push("rate_limit")
        resp = vendor.post(server, "hello", stream=False)
    assert resp.status_code == 429
    assert resp.headers[header] == "0"


def test_quota_is_not_retryable_by_header(vendor: Vendor, server) -> None:
    server.push("quota")
    resp = vendor.post(server, "hello", stream=False)
    assert "Retry-After" not in resp.headers and "retry-after-ms" not in resp.headers
