"""The table and the JSON: one row per figure, each with its baseline and target.

A row is a dict:
    case      "1 overhead", ...
    measure   what the figure is ("promptq jobs/s, threads/32")
    value     the figure (number) or a word ("skipped")
    unit      "jobs/s", "ms", "MB", ...
    baseline  the figure it is compared with, measured in the same run (or None)
    baseline_is  what the baseline is ("bare Celery + requests, same pool")
    ratio     value / baseline (or None)
    target    the issue's target in words ("ratio >= 0.85")
    met       True / False / None (no target for this row)
    note      anything a reader needs to trust the figure
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Dict, List, Optional


def row(case: str, measure: str, value: Any, unit: str = "", *, baseline: Any = None, baseline_is: str = "",
        ratio: Optional[float] = None, target: str = "", met: Optional[bool] = None, note: str = "",
        **extra: Any) -> Dict[str, Any]:
    if ratio is None and isinstance(value, (int, float)) and isinstance(baseline, (int, float)) and baseline:
        ratio = value / baseline
    return {"case": case, "measure": measure, "value": value, "unit": unit, "baseline": baseline,
            "baseline_is": baseline_is, "ratio": None if ratio is None else round(ratio, 3), "target": target,
            "met": met, "note": note, **extra}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "met" if value else "NOT MET"
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: List[Dict[str, Any]]) -> str:
    headers = ["case", "measure", "value", "baseline (same run)", "ratio", "target", "met"]
    body = []
    for r in rows:
        value = _fmt(r["value"]) + (f" {r['unit']}" if r.get("unit") and isinstance(r["value"], (int, float)) else "")
        base = _fmt(r["baseline"])
        if r.get("baseline_is") and r["baseline"] is not None:
            base += f" ({r['baseline_is']})"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        met = "-" if r["met"] is None else ("met" if r["met"] else "NOT MET")
        body.append([r["case"], r["measure"], value, base, ratio, r["target"] or "-", met])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(b) for b in body]
    notes = [f"- {r['case']} / {r['measure']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        out += ["", "notes:"] + notes
    return "\n".join(out)


def environment() -> Dict[str, Any]:
    import psutil

    return {
        "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "redis_server": _redis_version(),
    }


def _redis_version() -> str:
    """Which redis-server the run used (its version and allocator move Redis CPU per command)."""
    import subprocess

    from promptq.workers.embedded_redis import find_redis_server

    path = find_redis_server()
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    fields = dict(part.split("=", 1) for part in out.split() if "=" in part)
    return f"{path}: v{fields.get('v', '?')} malloc={fields.get('malloc', '?')}"


def write_json(path: Path, rows: List[Dict[str, Any]], details: Dict[str, Any], meta: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta, "rows": rows, "cases": details}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    tmp.replace(path)
