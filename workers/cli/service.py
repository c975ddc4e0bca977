"""Commands that run or inspect the service: worker, flower, health, ping."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Optional

import click

from .context import EXIT_UNAVAILABLE, State, fail, pass_state, redis_errors

CELERY_APP = "promptq.workers.celery_app"


def _exec_celery(state: State, args: list) -> None:
    # Celery patches gevent/eventlet only when the pool is named on its own
    # command line, so every worker starts through Celery's CLI, in this
    # process (exec), with settings passed by environment.
    if state.redis_url:
        os.environ["PROMPTQ_REDIS_URL"] = state.redis_url
    if state.config:
        os.environ["PROMPTQ_CONFIG"] = state.config
    # -P: `python -m` would put the current directory first on sys.path, and a
    # user's own tasks.py or celery.py there would shadow what Celery imports.
    argv = [sys.executable, "-P", "-m", "celery", "-A", CELERY_APP, *args]
    sys.stdout.flush()
    os.execv(sys.executable, argv)


@click.command()
@click.option("--providers", "providers_csv", envvar="PROMPTQ_PROVIDERS", default=None,
              help="Providers whose queues to consume, e.g. openai,claude (default: PROMPTQ_PROVIDERS or mock).")
@click.option("--pool", type=click.Choice(["threads", "gevent", "prefork", "solo"]), default=None,
              help="Execution pool (default: threads; LLM calls wait on I/O).")
@click.option("--concurrency", "-c", type=int, default=None, help="Jobs run at once (default 200: LLM calls mostly wait).")
@click.option("--name", default="promptq", help="Worker group name; the node is NAME@host.")
@click.option("--loglevel", "-l", default="INFO", help="Celery log level.")
@click.option("--dry-run", is_flag=True, help="Print the celery command instead of running it.")
@pass_state
def worker(state: State, providers_csv: Optional[str], pool: Optional[str], concurrency: Optional[int],
           name: str, loglevel: str, dry_run: bool) -> None:
    """Run a worker consuming the given providers' queues."""
    from promptq.tasks.job import KNOWN_PROVIDERS
    from promptq.tasks.keys import Keys

    settings = state.settings
    names = [p.strip() for p in (providers_csv or settings.providers).split(",") if p.strip()]
    unknown = [p for p in names if p not in KNOWN_PROVIDERS]
    if unknown or not names:
        raise click.BadParameter(f"unknown provider(s) {unknown or names}; known: {', '.join(KNOWN_PROVIDERS)}",
                                 param_hint="--providers")
    pool = pool or settings.pool
    concurrency = concurrency or settings.concurrency
    keys = Keys(settings.key_prefix)
    # The worker process sizes its connection pools from Settings, which it
    # reads from the environment: the flags must reach it there too.
    os.environ["PROMPTQ_CONCURRENCY"] = str(concurrency)
    os.environ["PROMPTQ_POOL"] = pool
    args = ["worker", "-Q", ",".join(keys.queue(p) for p in names), "-P", pool, "-c", str(concurrency),
            "-E", "-n", f"{name}@%h", "--loglevel", loglevel, "--without-mingle", "--without-gossip"]
    if dry_run:
        click.echo(" ".join(["celery", "-A", CELERY_APP, *args]))
        return
    _exec_celery(state, args)


@click.command()
@click.option("--port", type=int, default=5555, help="Port for Flower's web UI.")
@click.option("--address", default="127.0.0.1", help="Address to bind (0.0.0.0 in a container).")
@pass_state
def flower(state: State, port: int, address: str) -> None:
    """Run Flower against promptq's app (basic auth from FLOWER_BASIC_AUTH)."""
    # Flower reads FLOWER_BASIC_AUTH itself; passing it as an argument would
    # show the password in every process listing.
    _exec_celery(state, ["flower", f"--port={port}", f"--address={address}"])


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
@redis_errors
def health(state: State, as_json: bool) -> None:
    """Show each provider:model's health, circuit, limits, rate and waiting jobs as all workers see them."""
    from promptq.tasks.capacity_view import capacity_report

    report = capacity_report(state.client.redis, state.settings)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    if not report:
        click.echo("no provider has been called yet")
        return
    click.echo(f"{'provider:model':<32} {'state':<10} {'circuit':<10} {'ok':>7} {'errors':>7} {'429s':>6} "
               f"{'rpm now':>8} {'tok/min':>8} {'limit rpm':>14} {'waiting':>8}  last error")
    now = time.time()
    for name, snap in report.items():
        cap = snap["capacity"]
        last = snap.get("last_error") or {}
        last_text = f"{last.get('category')}: {last.get('message')} ({now - last.get('at', now):.0f}s ago)" if last else "-"
        click.echo(f"{name:<32} {snap['state']:<10} {snap['circuit']:<10} {snap['successes']:>7} {snap['failures']:>7} "
                   f"{cap['rate_limited_429s']:>6} {cap['rate_rpm']:>8} {cap['tokens_this_minute']:>8} "
                   f"{_limit_text(cap):>14} {cap['waiting']:>8}  {last_text}")


def _limit_text(cap: dict) -> str:
    """'600' configured, 'learned 500' from headers, 'x0.5' while pacing is backed off, '-' if none."""
    configured = [v["rpm"] for v in cap["configured"].values() if v.get("rpm")]
    if configured:
        return f"{min(configured):g}"
    learned = cap["learned"]
    if learned.get("rpm"):
        text = f"learned {learned['rpm']:g}"
        factor = learned.get("factor")
        return text + (f" x{factor:.2f}" if factor is not None and factor < 1 else "")
    return "-"


@click.command()
@pass_state
def ping(state: State) -> None:
    """Exit 0 if Redis answers (for health checks)."""
    import redis

    try:
        redis.Redis.from_url(state.settings.redis_url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        fail(f"Redis did not answer: {exc}", EXIT_UNAVAILABLE)
    click.echo("ok")


COMMANDS = [worker, flower, health, ping]
