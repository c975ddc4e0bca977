"""The producer API for asyncio applications: `Client`'s twin on redis.asyncio.

    async with AsyncClient(Settings.load()) as client:
        handle = await client.submit("Summarise ...", to=["openai:gpt-4o-mini"], stream=True)
        async for piece in client.stream(handle.id): ...
        record = await client.result(handle.id, timeout=60)

Every decision (which script a submit runs, how a follower orders, fills and
ends a job's events) is `tasks.client_core`'s; this module only performs the
I/O it asks for. The one difference from `Client` is how a message reaches
the queue: `Client` calls Celery's blocking `send_task`, this builds the same
protocol-2 message (`tasks.batch_submit.MessageBuilder`, the batch path's)
and LPUSHes it, so no event-loop thread blocks on kombu.

Batches are bulk, CPU-bound work (validating every line, building messages
by the thousand) on redis-py pipelines: `submit_batch`, `batch_status`,
`iter_results` and `cancel_batch` run `tasks.batch`'s functions in a worker
thread with a blocking `Client`, so the event loop stays free and the batch
rules stay written once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional, Sequence

import redis.asyncio as aredis

from .client_core import (ClientCore, Commands, Deliver, JobFailedError, JobNotFound, Listen, Protocol, Reset,
                          Send, Sleep, Subscribe, stream_item)
from .job import JobSpec
from .message_send import JobSender
from .pubsub_hub import PubSubHub
from .settings import Settings
from .store import JobRecord
from .store_calls import ScriptCall

__all__ = ["AsyncClient", "AsyncJobHandle", "JobFailedError", "JobNotFound", "Reset"]


@dataclass
class AsyncJobHandle:
    """What `AsyncClient.submit` returns at once."""

    id: str
    client: "AsyncClient"
    created: bool = True

    async def result(self, timeout: Optional[float] = None) -> JobRecord:
        return await self.client.result(self.id, timeout=timeout)

    async def status(self) -> Optional[JobRecord]:
        return await self.client.status(self.id)

    def stream(self, timeout: Optional[float] = None) -> AsyncIterator[Any]:
        return self.client.stream(self.id, timeout=timeout)

    async def cancel(self) -> str:
        return await self.client.cancel(self.id)


class AsyncClient:
    """Producer-side access to promptq from asyncio. One per event loop; share it between tasks."""

    def __init__(self, settings: Optional[Settings] = None, *, app: Any = None, max_connections: Optional[int] = None):
        self.settings = settings or Settings.load()
        self.core = ClientCore(self.settings)
        self.keys = self.core.keys
        self._app = app
        self.redis = aredis.Redis.from_url(self.settings.redis_url, socket_keepalive=True,
                                           max_connections=max_connections)
        self._scripts: Dict[str, Any] = {}
        self._hub = PubSubHub(self.redis)
        self._sender: Any = None
        self._sync: Any = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    @property
    def app(self) -> Any:
        """The Celery app (built on first send: only its message format is used here)."""
        if self._app is None:
            from .app import create_app

            self._app = create_app(self.settings)
        return self._app

    # --- jobs -------------------------------------------------------------------------

    async def submit(
        self,
        prompt: Optional[str] = None,
        *,
        to: Sequence[str],
        messages: Optional[Sequence[Mapping[str, Any]]] = None,
        system_prompt: Optional[str] = None,
        parameters: Optional[Mapping[str, Any]] = None,
        stream: bool = False,
        custom_id: Optional[str] = None,
        batch_id: Optional[str] = None,
        metadata: Optional[Mapping[str, Any]] = None,
        max_retries: Optional[int] = None,
        job_id: Optional[str] = None,
        rate_limit_deadline_s: Optional[float] = None,
        spill: bool = False,
        priority: Optional[str] = None,
    ) -> AsyncJobHandle:
        """Validate and enqueue a job; raises `JobValidationError` naming the bad field (see `Client.submit`)."""
        spec = self.core.validate(
            targets=to, prompt=prompt, messages=messages, system_prompt=system_prompt,
            parameters=parameters, stream=stream, custom_id=custom_id, batch_id=batch_id,
            metadata=metadata, max_retries=max_retries, job_id=job_id,
            rate_limit_deadline_s=rate_limit_deadline_s, spill=spill, lane=priority,
        )
        return await self.submit_spec(spec)

    async def submit_spec(self, spec: JobSpec) -> AsyncJobHandle:
        """Enqueue an already validated job. Submitting the same id twice runs it once."""
        return AsyncJobHandle(spec.id, self, created=await self._run(self.core.submit(spec)))

    async def status(self, job_id: str) -> Optional[JobRecord]:
        return await self._run(self.core.status(job_id))

    async def result(self, job_id: str, timeout: Optional[float] = None) -> JobRecord:
        """Wait until the job succeeded, failed or was cancelled; TimeoutError after `timeout`."""
        return await self._run(self.core.result(job_id, timeout=timeout))

    async def cancel(self, job_id: str) -> str:
        """'cancelled' (it will not run), 'requested' (it stops at its next chunk), or its final status."""
        return await self._run(self.core.cancel(job_id))

    def events(self, job_id: str, timeout: Optional[float] = None) -> AsyncIterator[Dict[str, Any]]:
        """Every event of the job in order, live, ending with the terminal one (see `ClientCore.events`)."""
        return self._steps(self.core.events(job_id, timeout=timeout))

    async def stream(self, job_id: str, timeout: Optional[float] = None) -> AsyncIterator[Any]:
        """The job's text as it arrives: `str` chunks, and a `Reset` where an attempt's text must be discarded."""
        events = self.events(job_id, timeout=timeout)
        try:
            async for event in events:
                item = stream_item(job_id, event)
                if item is not None:
                    yield item
        finally:
            await events.aclose()

    # --- batches (a blocking Client in a worker thread; see the module docstring) --------

    def _blocking(self) -> Any:
        if self._sync is None:
            from .client import Client

            self._sync = Client(self.settings, app=self._app)
        return self._sync

    async def submit_batch(self, lines_or_path: Any, targets: Optional[Sequence[str]] = None, **kwargs: Any) -> Any:
        """`tasks.batch.submit_batch`, off the event loop; returns its `BatchSubmission`."""
        from .batch import submit_batch

        client = self._blocking()
        return await asyncio.to_thread(submit_batch, client, lines_or_path, targets, **kwargs)

    async def batch_status(self, batch_id: str) -> Dict[str, Any]:
        from .batch_results import batch_status

        return await asyncio.to_thread(batch_status, self._blocking(), batch_id)

    async def set_spend_limit(self, batch_id: str, max_cost_usd: Optional[float]) -> Dict[str, Any]:
        from .batch import set_spend_limit

        return await asyncio.to_thread(set_spend_limit, self._blocking(), batch_id, max_cost_usd)

    async def cancel_batch(self, batch_id: str) -> Dict[str, int]:
        from .batch import cancel_batch

        return await asyncio.to_thread(cancel_batch, self._blocking(), batch_id)

    async def iter_results(self, batch_id: str, *, partial: bool = False, chunk: int = 1000) -> AsyncIterator[Dict[str, Any]]:
        """One OpenAI Batch output line per job, in input order, `chunk` lines per thread hop."""
        from .batch_results import iter_results

        lines = iter_results(self._blocking(), batch_id, partial=partial, chunk=chunk)

        def take() -> List[Dict[str, Any]]:
            out: List[Dict[str, Any]] = []
            for line in lines:
                out.append(line)
                if len(out) >= chunk:
                    break
            return out

        while True:
            block = await asyncio.to_thread(take)
            for line in block:
                yield line
            if len(block) < chunk:
                return

    async def aclose(self) -> None:
        await self._hub.aclose()
        await self.redis.aclose()
        if self._sync is not None:
            self._sync.close()

    # --- the shell: asyncio I/O for the core's steps -------------------------------------

    async def _run(self, protocol: Protocol) -> Any:
        """Drive an operation to its return value, dropping any events it delivers."""
        box: List[Any] = []
        steps = self._steps(protocol, box)
        try:
            async for _ in steps:
                pass
        finally:
            await steps.aclose()
        return box[0] if box else None

    async def _steps(self, protocol: Protocol, box: Optional[List[Any]] = None) -> AsyncIterator[Dict[str, Any]]:
        """Drive an operation, yielding the events it delivers; its return value goes into `box`."""
        channel: Optional[str] = None
        inbox: Optional[asyncio.Queue] = None
        reply: Any = None
        error: Optional[BaseException] = None
        try:
            while True:
                try:
                    step = protocol.throw(error) if error is not None else protocol.send(reply)
                except StopIteration as stop:
                    if box is not None:
                        box.append(stop.value)
                    return
                reply, error = None, None
                if isinstance(step, Deliver):
                    yield step.event
                    continue
                try:
                    if isinstance(step, Subscribe):
                        if inbox is not None:
                            await self._hub.unsubscribe(channel, inbox)
                        channel, inbox = step.channel, None
                        inbox = await self._hub.subscribe(channel)
                    elif isinstance(step, Listen):
                        try:
                            reply = await asyncio.wait_for(inbox.get(), step.timeout_s) if inbox.empty() \
                                else inbox.get_nowait()
                        except asyncio.TimeoutError:
                            reply = None
                    else:
                        reply = await self._io(step)
                except Exception as exc:  # the operation decides what a failed step means
                    error = exc
        finally:
            protocol.close()
            if inbox is not None:
                # Shielded: a cancelled follower still leaves the channel.
                await asyncio.shield(self._hub.unsubscribe(channel, inbox))

    async def _io(self, step: Any) -> Any:
        if isinstance(step, ScriptCall):
            script = self._scripts.get(step.source)
            if script is None:
                script = self._scripts[step.source] = self.redis.register_script(step.source)
            return await script(keys=step.keys, args=step.args)
        if isinstance(step, Commands):
            pipe = self.redis.pipeline(transaction=False)
            for command in step.commands:
                pipe.execute_command(*command)
            return await pipe.execute()
        if isinstance(step, Send):
            return await self._send(step)
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        raise TypeError(f"unknown step {step!r}")

    @property
    def sender(self) -> JobSender:
        if self._sender is None:
            self._sender = JobSender(self.app)
        return self._sender

    async def _send(self, step: Send) -> int:
        """Record and message in one round trip (tasks.message_send); 1 if created."""
        if self.sender.needs_declare(step.queue):
            # kombu's connection is blocking: off the loop.
            await asyncio.to_thread(self.sender.declare, step.queue)
        return await self._io(self.sender.call(step))
