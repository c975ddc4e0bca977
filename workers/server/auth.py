"""Bearer-key authentication for every `/v1` route.

Accepts `Authorization: Bearer KEY` (the openai SDK, and the anthropic SDK
2.x) and `x-api-key: KEY` (older anthropic SDKs, curl habits). Keys are
compared as SHA-256 digests, so neither timing nor a memory dump of the
server reveals a key, and no key is ever logged.
"""

from __future__ import annotations

import hmac
from typing import Optional

from starlette.requests import Request

from .config import ServerConfig, digest


def presented_key(request: Request) -> Optional[str]:
    header = request.headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("x-api-key")


def authorised(config: ServerConfig, request: Request) -> bool:
    if not config.auth_required:
        return True
    key = presented_key(request)
    if not key:
        return False
    seen = digest(key)
    # Every digest is compared (no early exit): the answer takes as long for any key.
    return any([hmac.compare_digest(seen, d) for d in config.key_digests])
