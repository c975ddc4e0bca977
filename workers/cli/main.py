"""`promptq`: submit and follow jobs, run workers, Flower, batches and the demo.

Exit codes: 0 ok, 1 the job failed, 2 bad usage or a refused job, 3 timed
out, 4 no such job, 5 cancelled, 6 Redis unreachable.
"""

from __future__ import annotations

import click

from . import batch, demo, dlq, jobs, poison, serve, service
from .context import State


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--redis-url", envvar="PROMPTQ_REDIS_URL", help="Redis for broker, records and pub/sub.")
@click.option("--config", envvar="PROMPTQ_CONFIG", type=click.Path(dir_okay=False), help="TOML config file.")
@click.version_option(package_name="promptq")
@click.pass_context
def cli(ctx: click.Context, redis_url: str, config: str) -> None:
    """promptq: a durable job queue for LLM prompts."""
    ctx.obj = State(redis_url, config)


for module in (jobs, service, dlq, poison, batch, demo, serve):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli(prog_name="promptq")


if __name__ == "__main__":
    main()
