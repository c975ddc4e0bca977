"""`promptq dlq`: inspect and requeue jobs that failed on every target."""

from __future__ import annotations

import json
import sys
from typing import Tuple

import click

from .context import EXIT_NOT_FOUND, EXIT_USAGE, State, pass_state, redis_errors


@click.group()
def dlq() -> None:
    """The dead-letter list: jobs that failed on every target."""


@dlq.command("list")
@click.option("--limit", type=int, default=100, help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@pass_state
@redis_errors
def list_(state: State, limit: int, as_json: bool) -> None:
    """List dead-lettered jobs with their last error."""
    client = state.client
    for job_id in client.store.dead_letters(limit):
        record = client.store.get(job_id)
        if record is None:  # expired after result_ttl_s
            continue
        if as_json:
            click.echo(json.dumps(record.to_dict()))
        else:
            message = (record.error or {}).get("message", "")
            click.echo(f"{job_id}\t{len(record.attempts)} attempts\t{message}")


@dlq.command()
@click.argument("job_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Requeue every dead-lettered job.")
@pass_state
@redis_errors
def requeue(state: State, job_ids: Tuple[str, ...], all_: bool) -> None:
    """Run dead-lettered jobs again from their first target (same ids)."""
    from promptq.tasks.store import new_token

    client = state.client
    ids = client.store.dead_letters(1_000_000) if all_ else list(job_ids)
    if not ids:
        raise click.UsageError("name job ids or give --all")
    requeued = missing = refused = 0
    for job_id in ids:
        record = client.store.get(job_id)
        if record is None:
            click.echo(f"promptq: no job {job_id}; skipped", err=True)
            missing += 1
            continue
        token = new_token()
        if not client.store.requeue_failed(job_id, token, record.spec.get("batch_id")):
            click.echo(f"promptq: job {job_id} is {record.status.value}, not failed; skipped", err=True)
            refused += 1
            continue
        client.send(job_id, record.spec, target_index=0, attempt=1, token=token)
        requeued += 1
        click.echo(job_id)
    click.echo(f"requeued {requeued} job(s)", err=True)
    # Like `result`: an id that names no job is exit 4, one that is not failed exit 2.
    if missing:
        sys.exit(EXIT_NOT_FOUND)
    if refused:
        sys.exit(EXIT_USAGE)


COMMANDS = [dlq]
