"""Redis's own count of what a run cost it: commands, reads, CPU, bytes.

`CONFIG RESETSTAT` at the start, `INFO commandstats` / `INFO stats` at the
end. `total_reads_processed` counts the read events Redis handled: each is
one request batch from one client, i.e. one round trip (a pipeline is one).
`MEMORY USAGE` sizes the keys one job leaves behind.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable

import psutil


class RedisStats:
    """Commands (by name), round trips and Redis CPU between start and `stop`."""

    def __init__(self, client: Any, pid: int = 0):
        self.client = client
        self.proc = psutil.Process(pid) if pid else None
        client.config_resetstat()
        self.cpu0 = sum(self.proc.cpu_times()[:2]) if self.proc else 0.0

    def stop(self) -> Dict[str, Any]:
        stats = self.client.info("commandstats")
        general = self.client.info("stats")
        calls = {name[len("cmdstat_"):]: int(v["calls"]) for name, v in stats.items()}
        usec = sum(int(v["usec"]) for v in stats.values())
        # The INFO calls themselves and CONFIG RESETSTAT are the harness's.
        for own in ("info", "config"):
            calls.pop(own, None)
        usec_by = {name[len("cmdstat_"):]: int(v["usec"]) for name, v in stats.items()}
        for own in ("info", "config"):
            usec_by.pop(own, None)
        out = {"commands": sum(calls.values()), "by_command": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
               "usec_by_command": dict(sorted(usec_by.items(), key=lambda kv: -kv[1])),
               "round_trips": int(general.get("total_reads_processed", 0)) - 2, "command_usec": usec}
        if self.proc is not None:
            out["redis_cpu_s"] = round(sum(self.proc.cpu_times()[:2]) - self.cpu0, 4)
        return out


def per(stats: Dict[str, Any], n: int) -> Dict[str, Any]:
    """Commands, round trips and Redis CPU divided by n (jobs or chunks)."""
    if not n:
        return {}
    out = {"commands": round(stats["commands"] / n, 2), "round_trips": round(stats["round_trips"] / n, 2),
           "command_us": round(stats["command_usec"] / n, 1)}
    if "redis_cpu_s" in stats:
        out["redis_cpu_us"] = round(1e6 * stats["redis_cpu_s"] / n, 1)
    return out


def memory_usage(client: Any, keys: Iterable[str]) -> Dict[str, int]:
    """`MEMORY USAGE` of each key that exists (bytes, Redis's estimate)."""
    out = {}
    for key in keys:
        size = client.memory_usage(key, samples=0)
        if size:
            out[key] = int(size)
    return out
