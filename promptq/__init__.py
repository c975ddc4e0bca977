"""promptq: a durable job queue for LLM prompts.

    from promptq import Client, Settings

    client = Client(Settings.load())
    job = client.submit("Explain idempotency", to=["openai:gpt-4o-mini", "claude:claude-3-5-haiku-latest"])
    print(client.result(job.id, timeout=60).text)

`__all__` is the public surface; everything else is importable from its
module (`promptq.providers`, `promptq.tasks`, `promptq.workers`) but not
needed. Names are imported on first use (PEP 562), so `import promptq` stays
cheap and the provider layer never drags in Celery.
"""

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "AsyncClient": "promptq.tasks.async_client",
    "AsyncJobHandle": "promptq.tasks.async_client",
    "Client": "promptq.tasks.client",
    "JobHandle": "promptq.tasks.client",
    "Reset": "promptq.tasks.client",
    "JobNotFound": "promptq.tasks.client",
    "JobFailedError": "promptq.tasks.client",
    "JobRecord": "promptq.tasks.store",
    "JobSpec": "promptq.tasks.job",
    "JobValidationError": "promptq.tasks.job",
    "Settings": "promptq.tasks.settings",
    "SettingsError": "promptq.tasks.settings",
    "submit_batch": "promptq.tasks.batch",
    "cancel_batch": "promptq.tasks.batch",
    "set_spend_limit": "promptq.tasks.batch",
    "BatchInputError": "promptq.tasks.batch",
    "batch_status": "promptq.tasks.batch_results",
    "iter_results": "promptq.tasks.batch_results",
    "ProviderError": "promptq.providers.error_handling",
    "ErrorCategory": "promptq.providers.error_handling",
    "FallbackChain": "promptq.providers.fallback_manager",
    "ProviderManager": "promptq.providers.manager",
    "create_provider": "promptq.providers.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'promptq' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
