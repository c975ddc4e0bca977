"""`python -m bench` / `./scripts/bench`: promptq's benchmark, one command.

    ./scripts/bench                        # every case, about 5-8 minutes on 2 cores
    ./scripts/bench --quick                # smaller counts, about a minute
    ./scripts/bench --only overhead,batch  # some cases (names below)
    ./scripts/bench --out my.json

Starts a private redis-server, the fake OpenAI server (`bench.fake`) and
worker processes itself, runs each case, prints one table and writes JSON to
`bench-results/latest.json`. Every figure sits beside its baseline measured
in the same run, with the target and whether it was met: a report, never an
assertion (the exit status is non-zero only when a case could not run).

Cases: overhead (1), concurrency (2), streaming (3), batch (4), memory (5),
peer (6: litellm, when installed), batch_e2e (7: a 10,000-line batch submitted
and finished on the mock provider), redis_cost (8: Redis commands, round trips, CPU
and bytes per job), and the capacity cases against a fake that enforces
OpenAI's rate limits: ratelimit (9: 1,200 jobs at 600 rpm, both burst models,
goodput), backlog (10: 100,000 queued jobs at 60 rpm, memory over time),
spill (11: two targets at 600 + 300 rpm), interactive (12: time to start an
interactive job behind a 20,000-line batch), cancel (13: cancel -> cancelled
latency of running jobs, streamed and not), heartbeat_cost (14: Redis
commands/s of dead-worker detection and reliable fetch at 50 workers), gateway
(15: what `promptq serve` adds over the queue path: latency, time to first
token, requests/s). The default run (no --only) includes them: about 20 more
minutes; --quick about 10.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

CASES = ["overhead", "concurrency", "streaming", "batch", "memory", "peer", "batch_e2e", "redis_cost",
         "ratelimit", "backlog", "spill", "interactive", "cancel", "heartbeat_cost", "gateway"]


@dataclass
class Ctx:
    quick: bool
    rounds: int
    jobs: Any = None
    redis: Any = None
    results: Dict[str, Any] = field(default_factory=dict)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (about a minute); figures are noisier")
    parser.add_argument("--only", action="append", default=[], metavar="CASE",
                        help=f"run only these cases (repeat or comma-separate): {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the overhead case, alternating promptq and bare, median kept (default 2)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="jobs per run in the overhead and concurrency cases (default 1000; --quick 150)")
    parser.add_argument("--profile", action="store_true",
                        help="record a py-spy flame graph of every promptq worker into bench-results/profiles/")
    parser.add_argument("--out", default="bench-results/latest.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    only = [c.strip() for item in args.only for c in item.split(",") if c.strip()]
    unknown = [c for c in only if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; cases: {', '.join(CASES)}")
    selected = [c for c in CASES if not only or c in only]

    import warnings

    warnings.filterwarnings("ignore", message=".*setex.*", category=DeprecationWarning)
    # The driver builds several promptq apps (one per Client); each registers run_job.
    warnings.filterwarnings("ignore", message=".*already registered.*")
    from .harness import log, private_redis
    from .report import environment, table, write_json

    ctx = Ctx(quick=args.quick, rounds=args.rounds and max(1, args.rounds), jobs=args.jobs)
    if args.profile:
        from . import harness

        harness.PROFILE_DIR = Path(__file__).resolve().parent.parent / "bench-results" / "profiles"
    rows: List[Dict[str, Any]] = []
    details: Dict[str, Any] = {}
    failed = []
    started = time.monotonic()
    meta = {"command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
            "quick": args.quick, "cases_run": selected, "environment": environment()}
    with private_redis() as server:
        ctx.redis = server
        for name in selected:
            t0 = time.monotonic()
            log(f"case {name} ...")
            try:
                module = importlib.import_module(f"bench.{name}")
                case_rows, case_details = module.run(ctx)
            except Exception as exc:
                traceback.print_exc()
                failed.append(name)
                from .report import row

                case_rows = [row(f"{CASES.index(name) + 1} {name}", "error", f"error: {type(exc).__name__}: {exc}"[:200])]
                case_details = {"error": traceback.format_exc()}
            case_details = dict(case_details, seconds=round(time.monotonic() - t0, 1))
            rows += case_rows
            details[name] = case_details
            log(f"case {name} done in {time.monotonic() - t0:.0f}s")
    meta["seconds"] = round(time.monotonic() - started, 1)
    out = Path(args.out)
    if not out.is_absolute():
        out = Path(__file__).resolve().parent.parent / out
    write_json(out, rows, details, meta)
    print(table(rows))
    print(f"\nredis-server: {meta['environment']['redis_server']}")
    print(f"\n{meta['seconds']:.0f} s in all; JSON: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
