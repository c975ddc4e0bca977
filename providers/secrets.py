"""API keys must never leave a worker: a registry of known keys, and `redact`.

Keys are registered by the providers that hold them, so any message that
would carry one (an echoed header, a URL with ?key=) is scrubbed before it
becomes an exception, a log line or a job record. Key-shaped strings are
masked too, for keys this process never saw.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Optional

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_KEY_PATTERNS = [
    re.compile(r"sk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.=]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|x-api-key|authorization)[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]{6,}"),
]


def register_secret(secret: Optional[str]) -> None:
    """Remember a key so `redact` removes it wherever it appears."""
    if secret and len(secret) >= 4:
        with _secrets_lock:
            _secrets.add(secret)


def redact(text: Any) -> str:
    """Return `text` as a string with every known or key-shaped secret masked."""
    out = str(text)
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in out:
            out = out.replace(secret, "[REDACTED]")
    for pattern in _KEY_PATTERNS:
        if pattern.groups:
            out = pattern.sub(lambda m: m.group(1) + "[REDACTED]", out)
        else:
            out = pattern.sub("[REDACTED]", out)
    return out


