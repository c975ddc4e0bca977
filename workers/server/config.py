"""What `promptq serve` is configured with, read once at its entry point.

API keys are promptq's own (never a provider's): `PROMPTQ_API_KEYS`
(comma-separated) and/or a file of one key per line (`--api-keys-file`,
`PROMPTQ_API_KEYS_FILE`; blank lines and `#` comments skipped). They are
held only as SHA-256 digests and never logged. Without keys the server
binds loopback only: anyone who can reach it could spend the providers'
budgets.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import FrozenSet, Mapping, Optional


class ServerConfigError(ValueError):
    """A serve option promptq cannot use; the message names it."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    #: SHA-256 hex digests of the accepted bearer keys; empty = no auth (loopback only).
    key_digests: FrozenSet[str] = field(default_factory=frozenset, repr=False)
    #: Where uploaded files, batch descriptions and batch output files live.
    files_dir: Path = Path(".promptq/files")
    #: Largest upload accepted (`POST /v1/files`).
    max_file_bytes: int = 200 * 1024 * 1024
    #: Requests waiting on a job at once; past this, 429 with Retry-After.
    max_open_requests: int = 10_000
    #: A non-streamed request waits this long for its job, then answers 504 (the job goes on).
    request_timeout_s: float = 600.0
    #: A streamed response silent this long gets a keep-alive (comment / `ping`).
    keepalive_s: float = 15.0

    @property
    def auth_required(self) -> bool:
        return bool(self.key_digests)

    def check_bind(self) -> None:
        if not self.auth_required and not is_loopback(self.host):
            raise ServerConfigError(
                f"refusing to bind {self.host} without API keys: set PROMPTQ_API_KEYS or --api-keys-file "
                "(or bind 127.0.0.1)"
            )


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def load_keys(environ: Mapping[str, str], keys_file: Optional[str]) -> FrozenSet[str]:
    keys = [k.strip() for k in (environ.get("PROMPTQ_API_KEYS") or "").split(",") if k.strip()]
    path = keys_file or environ.get("PROMPTQ_API_KEYS_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ServerConfigError(f"--api-keys-file {path}: {exc.strerror}") from None
        keys += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ServerConfigError(f"{len(short)} API key(s) shorter than 16 characters; use long random keys")
    return frozenset(digest(k) for k in keys)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def from_environ(environ: Optional[Mapping[str, str]] = None, *, keys_file: Optional[str] = None,
                 **options: object) -> ServerConfig:
    environ = os.environ if environ is None else environ
    values = {k: v for k, v in options.items() if v is not None}
    if "files_dir" not in values and environ.get("PROMPTQ_FILES_DIR"):
        values["files_dir"] = environ["PROMPTQ_FILES_DIR"]
    if "files_dir" in values:
        values["files_dir"] = Path(str(values["files_dir"]))
    return ServerConfig(key_digests=load_keys(environ, keys_file), **values)  # type: ignore[arg-type]
