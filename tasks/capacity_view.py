"""One read of every endpoint's capacity, for `promptq health` and Prometheus.

Per provider:model: its health and circuit (providers.health_redis), the
limits configured for it (tasks.limits), what pacing learned from its
headers (tasks.pacing), its current rate, tokens used this minute, 429s,
whether it is paused, and how many jobs wait for it (tasks.deferral).
"""

from __future__ import annotations

from typing import Any, Dict

from promptq.providers.health_redis import RedisHealthStore

from .deferral import Deferrer
from .keys import Keys
from .limits import configured_limits, scopes_for
from .pacing import Pacer
from .settings import Settings


def _rate(pace: Dict[str, Any], field: str) -> float:
    """Events in the last 60 s: this minute's count plus the overlapping part of the last one."""
    now, start = pace.get("now", 0.0), pace.get("m_start", 0.0)
    elapsed = min(60.0, max(0.0, now - start))
    if now - start >= 120:
        return 0.0
    if now - start >= 60:
        return float(pace.get(f"m_{field}", 0)) * max(0.0, 1 - (now - start - 60) / 60)
    return float(pace.get(f"m_{field}", 0)) + float(pace.get(f"p_{field}", 0)) * (1 - elapsed / 60)


def capacity_report(client: Any, settings: Settings) -> Dict[str, Dict[str, Any]]:
    keys = Keys(settings.key_prefix)
    health = RedisHealthStore(client, keys.health_prefix).all_snapshots()
    limits = configured_limits(settings.provider_configs, settings.limit_overrides)
    waiting = Deferrer(client, keys).waiting_by_endpoint()
    pacer = Pacer(client, settings.key_prefix)
    prefix = pacer.pace_key("")
    paced = {(k.decode() if isinstance(k, bytes) else k)[len(prefix):]
             for k in client.scan_iter(match=prefix + "*", count=1000)}
    endpoints = sorted(set(health) | set(waiting) | paced)
    report: Dict[str, Dict[str, Any]] = {}
    for endpoint in endpoints:
        provider, _, model = endpoint.partition(":")
        pace = pacer.snapshot(endpoint)
        snap = health.get(endpoint)
        row: Dict[str, Any] = snap.to_dict() if snap is not None else RedisHealthStore(
            client, keys.health_prefix).snapshot(endpoint).to_dict()
        row["capacity"] = {
            "configured": {scope: limit.to_dict() for scope, limit in scopes_for(limits, provider, model)},
            "learned": {
                "rpm": pace.get("learned_rpm"),
                "tpm": pace.get("learned_tpm"),
                "factor": pace.get("factor"),
                "rpm_effective": pace.get("rpm_eff"),
                "tpm_effective": pace.get("tpm_eff"),
            },
            "paused_s": round(max(0.0, pace.get("paused_until", 0.0) - pace["now"]), 3),
            "rate_rpm": round(_rate(pace, "req"), 1),
            "tokens_this_minute": int(pace.get("m_tok", 0)) if pace["now"] - pace.get("m_start", 0) < 60 else 0,
            "rate_limited_429s": int(pace.get("n429", 0)),
            "rate_limited_429s_last_minute": round(_rate(pace, "429"), 1),
            "waiting": int(waiting.get(endpoint, 0)),
        }
        report[endpoint] = row
    return report


__all__ = ["capacity_report"]
