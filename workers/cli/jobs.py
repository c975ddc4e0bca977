"""Commands for single jobs: submit, result, status, stream, cancel.

Unix manners: `submit` prints the job id alone on stdout; `result` prints
the text (or `--json` the whole record); diagnostics go to stderr; the exit
code says succeeded, failed, timed out or not found.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Optional, Tuple

import click

from .context import (
    EXIT_CANCELLED,
    EXIT_JOB_FAILED,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    State,
    fail,
    pass_state,
    redis_errors,
)


def _parse_json(value: Optional[str], what: str) -> Any:
    if value is None:
        return None
    from promptq.tasks.json_check import loads_strict

    try:
        return loads_strict(value, what)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint=what) from None


@click.command()
@click.argument("prompt", required=False)
@click.option("--to", "targets", multiple=True, required=True, metavar="PROVIDER:MODEL",
              help="A target; repeat for failover order.")
@click.option("--system", "system_prompt", help="System prompt.")
@click.option("--messages", help="Chat messages as a JSON list (instead of PROMPT).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter (JSON value), e.g. temperature=0.2.")
@click.option("--stream", is_flag=True, help="Publish chunks live (follow with `promptq stream ID`).")
@click.option("--custom-id", help="Your own id for this job, kept in its record.")
@click.option("--metadata", help="JSON object kept with the job.")
@click.option("--max-retries", type=int, help="Retries per target before failover.")
@click.option("--id", "job_id", help="Job id to use (submitting an existing id does nothing).")
@click.option("--priority", type=click.Choice(["interactive", "batch"], case_sensitive=False), default="interactive",
              show_default=True, help="Lane: workers take interactive jobs before batch ones.")
@pass_state
@redis_errors
def submit(state: State, prompt: Optional[str], targets: Tuple[str, ...], system_prompt: Optional[str],
           messages: Optional[str], params: Tuple[str, ...], stream: bool, custom_id: Optional[str],
           metadata: Optional[str], max_retries: Optional[int], job_id: Optional[str], priority: str) -> None:
    """Enqueue a job; print its id. PROMPT '-' reads the prompt from stdin."""
    from promptq.tasks.job import JobValidationError
    from promptq.tasks.json_check import JSONValueError, loads_strict

    if prompt == "-":
        prompt = sys.stdin.read()
    parameters = {}
    for item in params:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        try:
            parameters[key] = loads_strict(raw, f"--param {key}")
        except JSONValueError as exc:  # JSON, but not one promptq can carry
            raise click.BadParameter(str(exc), param_hint="--param") from None
        except ValueError:
            parameters[key] = raw
    try:
        handle = state.client.submit(
            prompt, to=list(targets), messages=_parse_json(messages, "--messages"), system_prompt=system_prompt,
            parameters=parameters, stream=stream, custom_id=custom_id,
            metadata=_parse_json(metadata, "--metadata"), max_retries=max_retries, job_id=job_id,
            priority=priority.lower(),
        )
    except JobValidationError as exc:
        fail(f"job refused: {exc}", EXIT_USAGE)
    click.echo(handle.id)


@click.command()
@click.argument("job_id")
@click.option("--wait/--no-wait", default=False, help="Wait until the job finishes.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait (with --wait).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@pass_state
@redis_errors
def result(state: State, job_id: str, wait: bool, timeout: Optional[float], as_json: bool) -> None:
    """Print a job's answer (exit 1 if it failed, 3 if not finished in time)."""
    from promptq.tasks.client import JobNotFound

    client = state.client
    try:
        record = client.result(job_id, timeout=timeout) if wait else client.status(job_id)
    except JobNotFound:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    except TimeoutError as exc:
        fail(str(exc), EXIT_TIMEOUT)
    if record is None:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2))
    elif record.status.value == "succeeded":
        click.echo(record.text)
    elif record.status.value == "failed":
        click.echo(f"promptq: job {job_id} failed: {(record.error or {}).get('message')}", err=True)
    elif record.status.value != "cancelled":
        click.echo(f"promptq: job {job_id} is {record.status.value}", err=True)
    sys.exit(_exit_code(record.status.value, finished_required=True))


@click.command()
@click.argument("job_id")
@pass_state
@redis_errors
def status(state: State, job_id: str) -> None:
    """Print a job's status word (queued, running, retrying, succeeded, failed, cancelled)."""
    record = state.client.status(job_id)
    if record is None:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    click.echo(record.status.value)


@click.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@click.option("--events", is_flag=True, help="Print every event as a JSON line instead of text.")
@pass_state
@redis_errors
def stream(state: State, job_id: str, timeout: Optional[float], events: bool) -> None:
    """Print a job's text live; a failed attempt's text is marked as discarded."""
    from promptq.tasks.client import JobNotFound

    status_word = "succeeded"
    try:
        for event in state.client.events(job_id, timeout=timeout):
            kind = event["type"]
            if events:
                click.echo(json.dumps(event))
            elif kind == "chunk":
                click.echo(event["text"], nl=False)
            elif kind == "reset":
                click.echo(f"\n[attempt on {event.get('provider')} failed: {event.get('reason')}; text above discarded]",
                           err=True)
            elif kind in ("retry", "failover"):
                where = f" -> {event['to']}" if kind == "failover" else f" in {event.get('delay_s')}s"
                click.echo(f"[{kind}{where}: {(event.get('error') or {}).get('message')}]", err=True)
            if kind == "error":
                status_word = "failed"
                if not events:
                    click.echo(f"\npromptq: job failed: {(event.get('error') or {}).get('message')}", err=True)
            elif kind == "cancelled":
                status_word = "cancelled"
        if not events:
            click.echo()
    except JobNotFound:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    except TimeoutError as exc:
        fail(str(exc), EXIT_TIMEOUT)
    sys.exit(_exit_code(status_word))


@click.command()
@click.argument("job_id")
@pass_state
@redis_errors
def cancel(state: State, job_id: str) -> None:
    """Cancel a job that has not finished; print what happened."""
    from promptq.tasks.client import JobNotFound

    try:
        outcome = state.client.cancel(job_id)
    except JobNotFound:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    click.echo(outcome)


def _exit_code(status_word: str, finished_required: bool = False) -> int:
    if status_word == "succeeded":
        return 0
    if status_word == "failed":
        return EXIT_JOB_FAILED
    if status_word == "cancelled":
        return EXIT_CANCELLED
    return EXIT_TIMEOUT if finished_required else 0


COMMANDS = [submit, result, status, stream, cancel]
