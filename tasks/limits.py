"""Configured rate limits: what operators allow per provider and per model.

In the worker's TOML config::

    [providers.openai.limits]                 # the provider as a whole
    rpm = 600                                 # requests per minute
    tpm = 200000                              # tokens per minute (input + max output)
    concurrency = 50                          # requests in flight at once

    [providers.openai.models."gpt-4o-mini".limits]
    rpm = 500                                 # one model, on top of the provider's

or in the environment, for a provider as a whole:
``PROMPTQ_LIMIT_OPENAI_RPM=600``, ``PROMPTQ_LIMIT_OPENAI_TPM``,
``PROMPTQ_LIMIT_OPENAI_CONCURRENCY`` (environment wins over the file).

A call must fit every scope that applies to it (provider and provider+model);
the budgets themselves live in Redis (tasks.limiter), shared by every worker.
Where nothing is configured, tasks.pacing learns the limit from the
provider's own headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

LIMIT_KINDS = ("rpm", "tpm", "concurrency")


class LimitConfigError(ValueError):
    """A limit is malformed; the message names where."""


@dataclass(frozen=True)
class Limit:
    rpm: Optional[float] = None
    tpm: Optional[float] = None
    concurrency: Optional[int] = None

    @property
    def empty(self) -> bool:
        return self.rpm is None and self.tpm is None and self.concurrency is None

    def merged(self, other: "Limit") -> "Limit":
        """`other`'s values where it has them (environment over file)."""
        return Limit(
            rpm=other.rpm if other.rpm is not None else self.rpm,
            tpm=other.tpm if other.tpm is not None else self.tpm,
            concurrency=other.concurrency if other.concurrency is not None else self.concurrency,
        )

    def to_dict(self) -> Dict[str, Any]:
        return {"rpm": self.rpm, "tpm": self.tpm, "concurrency": self.concurrency}

    @classmethod
    def from_table(cls, table: Any, where: str) -> "Limit":
        if not isinstance(table, Mapping):
            raise LimitConfigError(f"{where} must be a table of rpm / tpm / concurrency")
        unknown = set(table) - set(LIMIT_KINDS)
        if unknown:
            raise LimitConfigError(f"{where}: unknown limit {sorted(unknown)[0]!r} (known: {', '.join(LIMIT_KINDS)})")
        values = {kind: _positive(table[kind], f"{where}.{kind}", kind == "concurrency") for kind in table}
        return cls(**values)


def _positive(value: Any, where: str, integer: bool) -> Any:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise LimitConfigError(f"{where} must be a positive number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise LimitConfigError(f"{where} must be a positive number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise LimitConfigError(f"{where} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def scope_key(provider: str, model: Optional[str] = None) -> str:
    """The name of a budget: "openai" or "openai:gpt-4o-mini"."""
    return f"{provider}:{model}" if model else provider


def env_limits(environ: Mapping[str, str]) -> Dict[str, Dict[str, str]]:
    """`PROMPTQ_LIMIT_<PROVIDER>_<RPM|TPM|CONCURRENCY>` as {provider: {kind: text}}."""
    out: Dict[str, Dict[str, str]] = {}
    for name, raw in environ.items():
        if not name.startswith("PROMPTQ_LIMIT_") or raw in (None, ""):
            continue
        provider, _, kind = name[len("PROMPTQ_LIMIT_"):].rpartition("_")
        if kind.lower() in LIMIT_KINDS and provider:
            out.setdefault(provider.lower(), {})[kind.lower()] = raw
    return out


def configured_limits(
    provider_configs: Mapping[str, Mapping[str, Any]], overrides: Optional[Mapping[str, Mapping[str, Any]]] = None
) -> Dict[str, Limit]:
    """Every configured scope's limit, {scope_key: Limit}; raises LimitConfigError naming the bad entry."""
    out: Dict[str, Limit] = {}
    for provider, config in provider_configs.items():
        if "limits" in config:
            out[scope_key(provider)] = Limit.from_table(config["limits"], f"[providers.{provider}.limits]")
        models = config.get("models") or {}
        if not isinstance(models, Mapping):
            raise LimitConfigError(f"[providers.{provider}.models] must be a table of models")
        for model, table in models.items():
            if isinstance(table, Mapping) and "limits" in table:
                where = f'[providers.{provider}.models."{model}".limits]'
                out[scope_key(provider, model)] = Limit.from_table(table["limits"], where)
    for provider, table in (overrides or {}).items():
        where = f"PROMPTQ_LIMIT_{provider.upper()}_*"
        out[scope_key(provider)] = out.get(scope_key(provider), Limit()).merged(Limit.from_table(table, where))
    return {k: v for k, v in out.items() if not v.empty}


def scopes_for(limits: Mapping[str, Limit], provider: str, model: str) -> List[tuple]:
    """[(scope_key, Limit)] a call to provider:model must fit, provider first."""
    return [(key, limits[key]) for key in (scope_key(provider), scope_key(provider, model)) if key in limits]


__all__ = ["Limit", "LimitConfigError", "configured_limits", "env_limits", "scope_key", "scopes_for"]
