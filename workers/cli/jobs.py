"""Commands for single jobs: submit, result, status, stream, cancel.

Unix manners: `submit` prints the job id alone on stdout; `result` prints
the text (or `--json` the whole record); diagnostics go to stderr; the exit
code says succeeded, failed, timed out or not found.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, Optional, Tuple

import click

from promptq.tasks.json_check import JSONValueError, loads_strict

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


#: What `stream` writes to stdout when an attempt that sent text failed.
RESET_MARKER = "[promptq: attempt {attempt} on {provider} failed; discard the text above, the next attempt starts below]"


def _parse_json(value: Optional[str], what: str) -> Any:
    if value is None:
        return None
    try:
        return loads_strict(value, what)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint=what) from None


def _utf8(raw: bytes, what: str) -> str:
    """Bytes as text, refused (as a batch line is) when they are not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"not UTF-8 ({exc.reason} at byte {exc.start})", param_hint=what) from None


def _argument(value: Optional[str], what: str) -> Optional[str]:
    # Python decodes argv with surrogateescape: get the bytes back and
    # decode them strictly, so a bad byte is named here, not in a traceback.
    return None if value is None else _utf8(os.fsencode(value), what)


def _read_messages(value: Optional[str]) -> Any:
    """--messages JSON, @FILE or '-' (stdin): a big list cannot fit in argv."""
    if value is None:
        return None
    if value == "-":
        return _parse_json(_utf8(sys.stdin.buffer.read(), "--messages (stdin)"), "--messages")
    if value.startswith("@"):
        path = value[1:]
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--messages") from None
        return _parse_json(_utf8(raw, f"--messages {path}"), f"--messages {path}")
    return _parse_json(_argument(value, "--messages"), "--messages")


def _parse_params(params: Tuple[str, ...]) -> Dict[str, Any]:
    parameters: Dict[str, Any] = {}
    for item in params:
        key, sep, raw = _argument(item, "--param").partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--param")
        try:
            parameters[key] = loads_strict(raw, f"--param {key}")
        except JSONValueError as exc:  # JSON, but not JSON promptq can carry (NaN, too deep, ...)
            raise click.BadParameter(str(exc), param_hint="--param") from None
        except ValueError:
            parameters[key] = raw  # a bare word is a string; the job's validation judges its type
    return parameters


@click.command()
@click.argument("prompt", required=False)
@click.option("--to", "targets", multiple=True, required=True, metavar="PROVIDER:MODEL",
              help="A target; repeat for failover order.")
@click.option("--system", "system_prompt", help="System prompt.")
@click.option("--messages", help="Chat messages as a JSON list (instead of PROMPT); @FILE reads a file, - stdin.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A parameter (JSON value), e.g. temperature=0.2.")
@click.option("--stream", is_flag=True, help="Publish chunks live (follow with `promptq stream ID`).")
@click.option("--custom-id", help="Your own id for this job, kept in its record.")
@click.option("--metadata", help="JSON object kept with the job.")
@click.option("--max-retries", type=int, help="Retries per target before failover.")
@click.option("--id", "job_id", help="Job id to use (the same job again does nothing; another job under it is refused).")
@click.option("--priority", type=click.Choice(["interactive", "batch"], case_sensitive=False), default="interactive",
              show_default=True, help="Lane: workers take interactive jobs before batch ones.")
@click.option("--spill", is_flag=True,
              help="If its target has had no capacity for a while, move to a later --to target (not a failure).")
@pass_state
@redis_errors
def submit(state: State, prompt: Optional[str], targets: Tuple[str, ...], system_prompt: Optional[str],
           messages: Optional[str], params: Tuple[str, ...], stream: bool, custom_id: Optional[str],
           metadata: Optional[str], max_retries: Optional[int], job_id: Optional[str], priority: str,
           spill: bool = False) -> None:
    """Enqueue a job; print its id. PROMPT '-' reads the prompt from stdin."""
    from promptq.tasks.job import JobValidationError

    if prompt == "-":
        if messages == "-":
            raise click.UsageError("stdin can feed PROMPT or --messages, not both")
        prompt = _utf8(sys.stdin.buffer.read(), "PROMPT (stdin)")
    else:
        prompt = _argument(prompt, "PROMPT")
    try:
        handle = state.client.submit(
            prompt, to=list(targets), messages=_read_messages(messages),
            system_prompt=_argument(system_prompt, "--system"), parameters=_parse_params(params), stream=stream,
            custom_id=_argument(custom_id, "--custom-id"), metadata=_parse_json(_argument(metadata, "--metadata"), "--metadata"),
            max_retries=max_retries, job_id=job_id,
            priority=priority.lower(), spill=spill,
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
    else:  # cancelled, or not finished yet
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
@click.option("--hold", is_flag=True,
              help="Print an attempt's text only once it succeeded (no reset marker ever reaches stdout).")
@pass_state
@redis_errors
def stream(state: State, job_id: str, timeout: Optional[float], events: bool, hold: bool) -> None:
    """Print a job's text live. If an attempt fails after sending text, a marker line
    `[promptq: ... discard the text above]` goes to stdout before the next attempt's text
    (or, with --hold, only the successful attempt's text is printed). A job submitted
    without --stream prints its whole text when it finishes."""
    from promptq.tasks.client import JobNotFound

    status_word = "succeeded"
    held: list = []  # this attempt's text, with --hold
    printed_any = False  # text of the current attempt already written
    try:
        for event in state.client.events(job_id, timeout=timeout):
            kind = event["type"]
            if events:
                click.echo(json.dumps(event))
            elif kind == "chunk":
                if hold:
                    held.append(event["text"])
                else:
                    click.echo(event["text"], nl=False)
                printed_any = True
            elif kind == "reset":
                if hold:
                    held.clear()
                elif printed_any:
                    # On stdout, on a line of its own: a file written from
                    # stdout shows where one attempt ends and the next begins.
                    click.echo(f"\n{RESET_MARKER.format(attempt=event.get('attempt'), provider=event.get('provider'))}")
                click.echo(f"[attempt on {event.get('provider')} failed: {event.get('reason')}; text above discarded]",
                           err=True)
                printed_any = False
            elif kind in ("retry", "failover"):
                where = f" -> {event['to']}" if kind == "failover" else f" in {event.get('delay_s')}s"
                click.echo(f"[{kind}{where}: {(event.get('error') or {}).get('message')}]", err=True)
            elif kind == "done":
                if not printed_any:
                    # Not streamed (or nothing was kept): the record has the text.
                    record = state.client.status(job_id)
                    held = [record.text or ""] if record is not None else held
                if held:
                    click.echo("".join(held), nl=False)
            elif kind == "error":
                click.echo(f"\npromptq: job {job_id} failed: {(event.get('error') or {}).get('message')}", err=True)
            elif kind == "cancelled":
                click.echo(f"\npromptq: job {job_id} was cancelled", err=True)
            # The exit code, with or without --events.
            status_word = {"error": "failed", "cancelled": "cancelled"}.get(kind, status_word)
        if not events:
            click.echo()
    except JobNotFound:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    except TimeoutError as exc:
        fail(str(exc), EXIT_TIMEOUT)
    sys.exit(_exit_code(status_word))


@click.command()
@click.argument("job_id")
@click.option("--wait", "wait_s", type=float, default=5.0, show_default=True,
              help="Seconds to wait for a running job to stop before reporting `requested`.")
@pass_state
@redis_errors
def cancel(state: State, job_id: str, wait_s: float) -> None:
    """Cancel a job that has not finished: print `cancelled` (or `requested` if it has
    not stopped within --wait). A job that already finished is not changed: exit 2."""
    from promptq.tasks.client import JobNotFound

    client = state.client
    before = client.status(job_id)
    if before is None:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    if before.status.terminal:
        fail(f"job {job_id} already {before.status.value}; nothing to cancel", EXIT_USAGE)
    try:
        outcome = client.cancel(job_id)
    except JobNotFound:
        fail(f"no job {job_id}", EXIT_NOT_FOUND)
    if outcome == "requested":
        # The worker hears it at once (pub/sub) and stops within a second;
        # follow the job's events until its record says how it ended.
        try:
            outcome = client.result(job_id, timeout=wait_s).status.value
        except TimeoutError:
            pass  # still running: say `requested`
        except JobNotFound:
            outcome = "cancelled"  # expired meanwhile
    if outcome in ("succeeded", "failed"):
        fail(f"job {job_id} {outcome} before the cancel reached it", EXIT_USAGE)
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
