"""Which providers a worker cannot serve for want of an API key.

A worker without, say, `OPENAI_API_KEY` that consumed `promptq.openai`
would take each job off the queue only to fail it over (or fail it). So
`promptq worker` leaves that queue out and says so loudly, naming the
variable to set, and refuses to start when no provider is left; a worker
started through plain Celery (`celery -A promptq.workers.celery_app worker
-Q ...`) drops the queue at startup the same way (workers.celery_app).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, List, Tuple


def missing_keys(settings: Any, providers: Iterable[str]) -> List[Tuple[str, str]]:
    """(provider, variable) for each provider that needs a key this process lacks."""
    from promptq.providers.registry import provider_class

    out = []
    for provider in providers:
        try:
            cls = provider_class(provider)
        except (ValueError, ImportError):
            continue  # not a provider promptq knows: not ours to judge
        if not getattr(cls, "needs_key", False):
            continue
        configured = settings.provider_config(provider).get("api_key")
        env_var = getattr(cls, "key_env_var", None)
        if not configured and not (env_var and os.environ.get(env_var)):
            out.append((provider, env_var or "api_key"))
    return out


def advice(provider: str, variable: str) -> str:
    return (f"{provider} needs an API key: set {variable} (or api_key in [providers.{provider}] of the "
            f"config file), or leave {provider} out of --providers")
