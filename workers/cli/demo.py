"""`promptq demo`: the main job end to end on one machine, with nothing installed.

It runs what a user runs, as the same commands: a private Redis (unless
PROMPTQ_REDIS_URL is set), one worker, `promptq batch submit` of the shipped
sample through the deterministic mock provider (scripted so a retry and a
failover happen), `batch wait` with its progress bar, `batch results`, and
one streamed job followed live. Everything it started is stopped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

import click
import requests

from .context import State, pass_state

# Shipped inside the package, so `pip install promptq && promptq demo` works anywhere.
SAMPLE = Path(__file__).resolve().with_name("demo_batch.jsonl")
# Slow enough to watch the bar move and the stream arrive, fast enough to finish in seconds.
MOCK_CONFIG = """
[providers.mock]
latency_s = 0.4
chunk_delay_s = 0.06
reply = "[{model}] {prompt} -- answered by promptq's mock provider."
"""


def _say(text: str) -> None:
    click.secho(f"\n==> {text}", fg="cyan", bold=True, err=True)


def _ollama_models() -> Optional[List[str]]:
    host = os.environ.get("OLLAMA_HOST") or "http://127.0.0.1:11434"
    if "://" not in host:
        host = "http://" + host
    try:
        reply = requests.get(f"{host.rstrip('/')}/api/tags", timeout=0.5)
        return [m["name"] for m in reply.json().get("models", [])] if reply.ok else None
    except (requests.RequestException, ValueError):
        return None


class _Runner:
    """Runs `promptq ...` as the user would, against the demo's Redis."""

    def __init__(self, env: Dict[str, str]):
        self.env = env

    def __call__(self, *args: str, capture: bool = False) -> str:
        proc = subprocess.run(
            # -P: the current directory (perhaps a Celery project with its own
            # tasks.py) never comes before the installed package.
            [sys.executable, "-P", "-m", "promptq.workers.cli.main", *args], env=self.env,
            stdout=subprocess.PIPE if capture else None, text=True,
        )
        if proc.returncode not in (0,):
            raise click.ClickException(f"`promptq {' '.join(args)}` exited with {proc.returncode}")
        return (proc.stdout or "").strip()


@click.command()
@click.option("--ollama", "ollama_model", metavar="MODEL", help="Ask a local Ollama model first (mock as fallback).")
@click.option("--out", type=click.Path(dir_okay=False), default=str(Path(".promptq") / "demo-results.jsonl"),
              show_default=True, help="Where to write the batch results.")
@pass_state
def demo(state: State, ollama_model: Optional[str], out: str) -> None:
    """Run a sample batch and a live stream on a private Redis and worker."""
    from promptq.workers.local_stack import LocalStack

    models = _ollama_models()
    if models is not None and not ollama_model:
        click.echo(f"A local Ollama answers (models: {', '.join(models) or 'none pulled'}). "
                   f"Run `promptq demo --ollama MODEL` to send the batch to it first.", err=True)
    first = f"ollama:{ollama_model}" if ollama_model else "mock:flaky"
    targets = [first, "mock:steady"]

    config = Path(tempfile.mkstemp(prefix="promptq-demo-", suffix=".toml")[1])
    config.write_text(MOCK_CONFIG)
    worker_env = {"PROMPTQ_CONFIG": str(config), "PROMPTQ_HEARTBEAT_S": "1", "PROMPTQ_LEASE_TTL_S": "10",
                  "PROMPTQ_HEALTH_FAILURE_THRESHOLD": "10"}
    with LocalStack(redis_url=state.redis_url or os.environ.get("PROMPTQ_REDIS_URL")) as stack:
        if stack.private_redis:
            _say(f"Started a private Redis at {stack.redis_url} (PROMPTQ_REDIS_URL was not set)")
        else:
            _say(f"Using the Redis at {stack.redis_url}")
        providers = ["mock"] + (["ollama"] if ollama_model else [])
        worker = stack.add_worker(providers, env=worker_env, concurrency=8, name="demo")
        _say(f"Started a worker (pid {worker.proc.pid}) on queues {', '.join('promptq.' + p for p in providers)}")
        run = _Runner({**os.environ, "PROMPTQ_REDIS_URL": stack.redis_url})

        _say(f"Submitting the sample batch {SAMPLE.name}: targets {' then '.join(targets)}; "
             "some lines are rate-limited once (they wait, no retry spent), some are refused by the first target (failover)")
        to_args = [a for t in targets for a in ("--to", t)]
        batch_id = run("batch", "submit", str(SAMPLE), *to_args, "--quiet", capture=True)
        click.echo(f"batch id: {batch_id}", err=True)

        _say("Waiting for the batch (workers update its counters as jobs finish)")
        run("batch", "wait", batch_id, "--timeout", "300")
        status = json.loads(run("batch", "status", batch_id, "--json", capture=True))
        click.echo(f"succeeded {status['succeeded']}/{status['total']}, rate-limited {status['rate_limited']} "
                   f"(waited, not retried), retried {status['retried']}, "
                   f"failed over {status['failed_over']}, tokens {status['total_tokens']}", err=True)

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        run("batch", "results", batch_id, "-o", out)

        _say("Streaming one job live; its first target drops the connection mid-answer")
        job_id = run("submit", "--stream", "--max-retries", "0", *to_args,
                     "[[fault@flaky:drop:5]] Explain in a few words how promptq streams answers without splicing them",
                     capture=True)
        run("stream", job_id, "--timeout", "60")

        _say(f"Results of every batch line: {out}")
        click.echo(f"Inspect them with: head -3 {out}", err=True)
        _say("Stopping the worker" + (" and the private Redis" if stack.private_redis else ""))
    config.unlink(missing_ok=True)


COMMANDS = [demo]
