"""`promptq poison`: messages workers could not read, set aside with the reason."""

from __future__ import annotations

import json
import time

import click

from .context import State, pass_state, redis_errors


@click.command()
@click.option("--limit", type=int, default=20, help="At most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON entry per line, the message included.")
@pass_state
@redis_errors
def poison(state: State, limit: int, as_json: bool) -> None:
    """List poison messages: what a worker moved aside instead of running (tasks/poison.py)."""
    from promptq.tasks.poison import read_poison

    client = state.client
    for entry in read_poison(client.redis, client.keys.prefix, limit):
        if as_json:
            click.echo(json.dumps(entry))
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["at"]))
            click.echo(f"{when}Z\t{entry.get('queue') or '-'}\t{entry['reason']}")


COMMANDS = [poison]
