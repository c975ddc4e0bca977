"""`promptq batch`: submit a JSONL file as one batch, follow it, write its results.

    promptq batch submit prompts.jsonl --to openai:gpt-4o-mini --to ollama:llama3.2   # prints the batch id
    promptq batch wait BATCH_ID --timeout 3600        # progress bar; exit 0 when every job is done
    promptq batch results BATCH_ID -o results.jsonl   # OpenAI Batch output lines, input order
    promptq batch status BATCH_ID [--json]
    promptq batch cancel BATCH_ID                     # what has not started never will

Data on stdout (the batch id; results without -o; status and cancel
counts), everything else -- progress, bad lines as `FILE:LINE: reason`,
hints -- on stderr. Exit codes as for single jobs: 2 a refused file or bad
option, 3 not finished in time, 4 no such batch.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from typing import Any, Dict, Iterator, Optional, Tuple

import click

from .context import EXIT_JOB_FAILED, EXIT_NOT_FOUND, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE, State, fail, pass_state, redis_errors

#: `batch status` rows: (counter, label).
ROWS = (("total", "total"), ("queued", "queued"), ("running", "running"), ("waiting", "waiting (retry)"),
        ("capacity", "waiting for capacity"), ("succeeded", "succeeded"), ("failed", "failed"),
        ("cancelled", "cancelled"), ("retried", "retried"), ("rate_limited", "rate-limited (waited)"),
        ("failed_over", "failed over"), ("spilled", "spilled"), ("recovered", "recovered"))


@click.group()
def batch() -> None:
    """Batches: a JSONL file of prompts in, a JSONL file of results out."""


@batch.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--to", "targets", multiple=True, metavar="PROVIDER:MODEL",
              help="Target for every line (repeat for failover order); overrides the model of OpenAI- and "
                   "Anthropic-format lines. "
                   "A plain line's own `targets` still wins.")
@click.option("--default-provider", default=None,
              help="Without --to, an OpenAI-format line goes to PROVIDER:<body.model> and an Anthropic-format "
                   "line to PROVIDER:<params.model> (default: openai and claude respectively).")
@click.option("--batch-id", help="Use this id; give an earlier one to resume an interrupted submission.")
@click.option("--skip-invalid", is_flag=True, help="Submit the valid lines even if some are bad (they are still listed).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--priority", type=click.Choice(["batch", "interactive"], case_sensitive=False), default="batch",
              show_default=True, help="Lane of every job: workers take interactive jobs first.")
@click.option("--spill", is_flag=True,
              help="A line whose target has had no capacity for a while moves to its next target (not a failure).")
@click.option("--rate-limit-deadline", "rate_limit_deadline_s", type=float, metavar="SECONDS",
              help="How long a line may wait for a rate limit before it fails as rate_limited (default 24 h).")
@click.option("--max-cost-usd", type=float, metavar="USD",
              help="Spend limit: once the batch's jobs cost this much, the ones not started are cancelled "
                   "(see `promptq batch limit`).")
@pass_state
@redis_errors
def submit(state: State, file: str, targets: Tuple[str, ...], default_provider: Optional[str], batch_id: Optional[str],
           skip_invalid: bool, quiet: bool, priority: str = "batch", spill: bool = False,
           rate_limit_deadline_s: Optional[float] = None, max_cost_usd: Optional[float] = None) -> None:
    """Validate FILE (JSONL; '-' = stdin) and enqueue one job per line; print the batch id."""
    from promptq.tasks.batch import BatchBusyError, BatchInputError, submit_batch
    from promptq.tasks.job import JobValidationError

    source: Any = file
    name = file
    if file == "-":
        source, name = sys.stdin.buffer.readlines(), "<stdin>"
    elif not os.path.isfile(file):
        fail(f"{file}: no such file", EXIT_USAGE)
    progress = None if quiet else _progress()
    task_id = None

    def validated(bid: str, lines: int) -> None:
        nonlocal task_id
        _echo(f"batch {bid}: submitting {lines} line(s) from {name}")
        resume = _resume_command(file, targets, default_provider, bid, skip_invalid, spill, rate_limit_deadline_s,
                                 priority)
        _echo(f"  if interrupted, resume with: {resume}")
        if progress is not None:
            progress.start()
            task_id = progress.add_task("submitting", total=lines)

    def advanced(done: int, lines: int, sent: int) -> None:
        if progress is not None and task_id is not None:
            progress.update(task_id, completed=done)

    submission = None
    try:
        submission = submit_batch(
            state.client, source, targets=list(targets), batch_id=batch_id, skip_invalid=skip_invalid,
            default_provider=default_provider, source=name, on_progress=advanced, on_validated=validated,
            priority=priority,
            spill=spill, rate_limit_deadline_s=rate_limit_deadline_s, max_cost_usd=max_cost_usd,
        )
    except BatchInputError as exc:
        for line in exc.invalid:
            _echo(line.format(name))
        hint = "" if skip_invalid or not exc.invalid else " (fix them, or pass --skip-invalid)"
        fail(f"{exc}{hint}", EXIT_USAGE)
    except JobValidationError as exc:
        fail(str(exc), EXIT_USAGE)
    except BatchBusyError as exc:
        fail(str(exc), EXIT_JOB_FAILED)
    except KeyboardInterrupt:
        bid = batch_id or "<the id printed above>"
        resume = _resume_command(file, targets, default_provider, bid, skip_invalid, spill, rate_limit_deadline_s,
                                 priority)
        fail(f"interrupted; resume with: {resume}", 130)
    finally:
        if progress is not None:
            progress.stop()
    for line in submission.invalid:
        _echo(f"{line.format(name)} (skipped)")
    _echo(f"batch {submission.batch_id}: {submission.submitted} job(s) sent, {submission.skipped_existing} already "
          f"queued earlier, {len(submission.invalid)} invalid line(s) skipped")
    _echo(f"  follow: promptq batch wait {submission.batch_id}")
    click.echo(submission.batch_id)


@batch.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON.")
@pass_state
@redis_errors
def status(state: State, batch_id: str, as_json: bool) -> None:
    """Show a batch's counters: queued, running, waiting, done, retries, failovers, tokens, cost."""
    info = _status_or_exit(state, batch_id)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"batch {batch_id}  input: {info['input']}  targets: {', '.join(info['targets'])}")
    if info["submit_state"] != "complete":
        click.echo(f"  submission not complete: {info['total']} of {info['lines']} line(s) listed")
    for key, label in ROWS:
        click.echo(f"  {label:<16}{info[key]:>10}")
    click.echo(f"  {'tokens':<16}{info['total_tokens']:>10}  (in {info['input_tokens']}, out {info['output_tokens']})")
    click.echo(f"  {'cost (USD)':<16}{info['cost_usd']:>10.4f}  (list or configured prices; unpriced models count 0)")
    if info["max_cost_usd"] is not None:
        reached = "  reached: jobs not started are cancelled" if info["spend_limit_reached"] else ""
        click.echo(f"  {'limit (USD)':<16}{info['max_cost_usd']:>10.4f}{reached}")
    click.echo(f"  {'finished':<16}{'yes' if info['finished'] else 'no':>10}")


@batch.command()
@click.argument("batch_id")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds (exit 3).")
@click.option("--interval", type=float, default=0.5, show_default=True, help="Seconds between polls of the counters.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar, only the summary.")
@pass_state
@redis_errors
def wait(state: State, batch_id: str, timeout: Optional[float], interval: float, quiet: bool) -> None:
    """Wait until every job of the batch has finished (exit 0 even if some failed)."""
    from promptq.tasks.batch import submission_stalled

    info = _status_or_exit(state, batch_id)
    deadline = None if timeout is None else time.monotonic() + timeout
    progress = None if quiet else _progress()
    task_id = progress.add_task(_describe(info), total=info["total"], completed=info["done"]) if progress else None
    if progress is not None:
        progress.start()
    try:
        while True:
            if progress is not None:
                progress.update(task_id, total=info["total"], completed=info["done"], description=_describe(info))
            if info["finished"]:
                break
            if info["done"] >= info["total"] and submission_stalled(info):
                # Everything listed is done, and nobody is adding the rest.
                fail(f"batch {batch_id}: its submission stopped after {info['total']} of {info['lines']} line(s); "
                     f"resume it with `promptq batch submit {info['input']} --batch-id {batch_id}` (same options)",
                     EXIT_JOB_FAILED)
            if deadline is not None and time.monotonic() >= deadline:
                fail(f"batch {batch_id}: {info['total'] - info['done']} of {info['total']} job(s) not finished "
                     f"after {timeout}s", EXIT_TIMEOUT)
            time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic())))
            info = _status_or_exit(state, batch_id)
    finally:
        if progress is not None:
            progress.stop()
    _echo(f"batch {batch_id} finished: {_summary(info)}")
    sys.exit(EXIT_OK)


@batch.command()
@click.argument("batch_id")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write here (default: stdout).")
@click.option("--partial", is_flag=True,
              help="Write now even if jobs are not finished; those lines get error code `not_finished`.")
@pass_state
@redis_errors
def results(state: State, batch_id: str, output: Optional[str], partial: bool) -> None:
    """Write one OpenAI Batch output line per job, in input order."""
    from promptq.tasks.batch import BatchNotFinished, iter_results

    counts: Dict[str, int] = {}

    def lines() -> Iterator[str]:
        for line in iter_results(state.client, batch_id, partial=partial):
            word = line["promptq"]["status"]
            counts[word] = counts.get(word, 0) + 1
            yield json.dumps(line, ensure_ascii=False) + "\n"

    _status_or_exit(state, batch_id)
    try:
        if output:
            # Written aside and renamed: a half-written file never looks finished.
            tmp = f"{output}.partial-{os.getpid()}"
            try:
                with open(tmp, "w", encoding="utf-8") as fh:
                    fh.writelines(lines())
                os.replace(tmp, output)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            for text in lines():
                sys.stdout.write(text)
    except BatchNotFinished as exc:
        fail(f"{exc}; wait with `promptq batch wait {batch_id}`, or write what there is with --partial",
             EXIT_TIMEOUT)
    written = sum(counts.values())
    where = f" to {output}" if output else ""
    _echo(f"wrote {written} line(s){where}: " + ", ".join(f"{n} {w}" for w, n in sorted(counts.items())))


@batch.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_state
@redis_errors
def cancel(state: State, batch_id: str, as_json: bool) -> None:
    """Cancel every job of the batch: what has not started never will, running ones stop within a second."""
    from promptq.tasks.batch import BatchNotFound, cancel_batch

    try:
        counts = cancel_batch(state.client, batch_id)
    except BatchNotFound:
        fail(f"no batch {batch_id}", EXIT_NOT_FOUND)
    if as_json:
        click.echo(json.dumps(counts))
        return
    click.echo(f"cancelled {counts.get('cancelled', 0)} job(s) of batch {batch_id}")
    for word, label in (("running", "were running (told to stop)"), ("succeeded", "had succeeded"),
                        ("failed", "had failed"), ("missing", "had no record")):
        if counts.get(word):
            click.echo(f"  {counts[word]} {label}")


@batch.command()
@click.argument("batch_id")
@click.option("--max-cost-usd", type=float, metavar="USD", help="The batch's spend limit in US dollars.")
@click.option("--remove", is_flag=True, help="Remove the spend limit.")
@pass_state
@redis_errors
def limit(state: State, batch_id: str, max_cost_usd: Optional[float], remove: bool) -> None:
    """Set, change or remove a batch's spend limit, even while it runs.

    Once its jobs cost that much, each job not started yet is cancelled when a
    worker takes it, calling no provider; running jobs finish, so the batch
    may end above the limit by what they cost."""
    from promptq.tasks.batch import BatchNotFound, set_spend_limit
    from promptq.tasks.job import JobValidationError

    if remove == (max_cost_usd is not None):
        fail("give either --max-cost-usd USD or --remove", EXIT_USAGE)
    try:
        info = set_spend_limit(state.client, batch_id, None if remove else max_cost_usd)
    except BatchNotFound:
        fail(f"no batch {batch_id}", EXIT_NOT_FOUND)
    except JobValidationError as exc:
        fail(str(exc), EXIT_USAGE)
    if info["max_cost_usd"] is None:
        click.echo(f"batch {batch_id}: no spend limit (spent {info['cost_usd']:.4f} USD)")
    else:
        click.echo(f"batch {batch_id}: spend limit {info['max_cost_usd']:.4f} USD, spent {info['cost_usd']:.4f}"
                   + (" (reached)" if info["spend_limit_reached"] else ""))


# --- helpers -------------------------------------------------------------------


def _status_or_exit(state: State, batch_id: str) -> Dict[str, Any]:
    from promptq.tasks.batch import BatchNotFound, batch_status

    try:
        return batch_status(state.client, batch_id)
    except BatchNotFound:
        fail(f"no batch {batch_id}", EXIT_NOT_FOUND)
        raise  # unreachable: fail exits


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskProgressColumn,
                               TextColumn, TimeElapsedColumn, TimeRemainingColumn)
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second (rich's own speed column counts bytes)."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.1f}/s" if speed else "-/s", style="progress.data.speed")

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(), RateColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    )


def _describe(info: Dict[str, Any]) -> str:
    return f"ok {info['succeeded']} failed {info['failed']} running {info['running']}"


def _summary(info: Dict[str, Any]) -> str:
    return (f"{info['succeeded']} succeeded, {info['failed']} failed, {info['cancelled']} cancelled of {info['total']}; "
            f"{info['retried']} retried, {info['failed_over']} failed over, {info['recovered']} recovered; "
            f"tokens in {info['input_tokens']} out {info['output_tokens']}, ${info['cost_usd']:.4f}")


def _resume_command(file: str, targets: Tuple[str, ...], default_provider: str, batch_id: str,
                    skip_invalid: bool, spill: bool = False, rate_limit_deadline_s: Optional[float] = None,
                    priority: str = "batch") -> str:
    args = ["promptq", "batch", "submit", file, *[a for t in targets for a in ("--to", t)]]
    if default_provider:
        args += ["--default-provider", default_provider]
    if skip_invalid:
        args.append("--skip-invalid")
    if priority.lower() != "batch":
        args += ["--priority", priority.lower()]
    # The lines still to send must get the same capacity options as the ones sent.
    if spill:
        args.append("--spill")
    if rate_limit_deadline_s is not None:
        args += ["--rate-limit-deadline", f"{rate_limit_deadline_s:g}"]
    return shlex.join(args + ["--batch-id", batch_id])


def _echo(text: str) -> None:
    click.echo(text, err=True)


COMMANDS = [batch]
