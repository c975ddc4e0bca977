"""What every case needs: a private Redis, the fake server, workers, clocks.

Everything is started here and stopped by PID: a private `redis-server`
(`workers.embedded_redis.RedisServer`), the fake OpenAI server in its own
process (`bench.fake`), promptq workers (`workers.local_stack.WorkerProcess`,
i.e. real `promptq worker` processes) and bare Celery workers
(`bench.bare_app`). Rates are computed from the completion times the
workers themselves store, never from how fast this driver polls.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import psutil
import redis

from promptq.workers.embedded_redis import RedisServer
from promptq.workers.local_stack import ROOT, WorkerProcess, wait_for

from .bare_app import QUEUE as BARE_QUEUE, READY_KEY as BARE_READY_KEY, TASK as BARE_TASK
from .fake import KEY

MODEL = "gpt-4o-mini"
TARGET = f"openai:{MODEL}"

#: Set by `--profile`: py-spy records every promptq worker into this folder.
PROFILE_DIR: Optional[Path] = None

#: Worker settings for every promptq worker the bench starts: a heartbeat
#: fast enough that `WorkerProcess.start` sees the worker within a second.
WORKER_ENV = {"PROMPTQ_HEARTBEAT_S": "1", "PROMPTQ_LEASE_TTL_S": "60"}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the fake provider ----------------------------------------------------------


class FakeProcess:
    """`python -m bench.fake ...` in its own process."""

    def __init__(self, *, latency_s: float = 0.0, chunk_count: Optional[int] = None,
                 chunk_delay_s: float = 0.0, stamp: bool = False, use_gevent: bool = True,
                 rpm: Optional[float] = None, tpm: Optional[float] = None, burst: str = "second"):
        self.args = ["--latency", str(latency_s), "--chunk-delay", str(chunk_delay_s)]
        if rpm is not None:  # behind OpenAI's rate limiter (tests.fakes.ratelimited_server)
            self.args += ["--rpm", str(rpm), "--burst", burst] + (["--tpm", str(tpm)] if tpm else [])
        if chunk_count:
            self.args += ["--chunk-count", str(chunk_count)]
        if stamp:
            self.args.append("--stamp")
        if use_gevent:
            self.args.append("--gevent")
        self.proc: Optional[subprocess.Popen] = None
        self.base_url = ""

    def start(self) -> "FakeProcess":
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.fake", *self.args], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.base_url = line
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stats(self) -> Dict[str, Any]:
        """The rate-limited fake's counts (requests, admitted, rate_limited, ...)."""
        import requests

        return requests.get(self.base_url.rsplit("/v1", 1)[0] + "/__fake__/stats", timeout=10).json()

    def reset(self) -> None:
        """Zero the counts and refill the buckets, between two runs on one fake."""
        import requests

        requests.post(self.base_url.rsplit("/v1", 1)[0] + "/__fake__/reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except (subprocess.TimeoutExpired, OSError):
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "FakeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --- workers -----------------------------------------------------------------------


class BareWorker:
    """`celery -A bench.bare_app worker` on its own queue."""

    def __init__(self, redis_url: str, base_url: str, *, pool: str, concurrency: int, loglevel: str = "INFO"):
        self.redis_url = redis_url
        self.pool = pool
        self.concurrency = concurrency
        self.env = {**os.environ, "BENCH_REDIS_URL": redis_url, "BENCH_BASE_URL": base_url, "BENCH_API_KEY": KEY,
                    "BENCH_CONCURRENCY": str(concurrency),
                    "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.loglevel = loglevel
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = Path(tempfile.mkstemp(prefix="bench-bare-", suffix=".log")[1])

    def start(self, timeout_s: float = 60.0) -> "BareWorker":
        cmd = [sys.executable, "-m", "celery", "-A", "bench.bare_app", "worker", "-Q", BARE_QUEUE,
               "-P", self.pool, "-c", str(self.concurrency), "-E", "-n", f"bare-{os.getpid()}@%h",
               "--loglevel", self.loglevel, "--without-mingle", "--without-gossip"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.redis_url)
        try:
            def ready():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"bare worker exited: {self.log_path.read_text()[-3000:]}")
                return client.hexists(BARE_READY_KEY, str(self.proc.pid))
            wait_for(ready, timeout_s, 0.05, "bare worker")
        finally:
            client.close()
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()

    def __enter__(self) -> "BareWorker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_process(proc: Optional[subprocess.Popen], timeout_s: float = 15.0) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGKILL; this process's own child only."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def kill_worker(worker: WorkerProcess) -> None:
    """Stop a promptq worker without waiting for its jobs (they are bench jobs)."""
    worker.kill()
    worker._close_log()


def promptq_worker(redis_url: str, base_url: str, *, pool: str, concurrency: int,
                   env: Optional[Dict[str, str]] = None, name: str = "bench") -> WorkerProcess:
    """A real `promptq worker --providers openai` process (not yet started).

    PROMPTQ_CONCURRENCY / PROMPTQ_POOL repeat `--concurrency` / `--pool`;
    `promptq worker` now sets them itself, so this only makes the bench
    independent of that.
    """
    cls = ProfiledWorker if PROFILE_DIR is not None else WorkerProcess
    return cls(redis_url, ["openai"], pool=pool, concurrency=concurrency, name=name, env={
        **WORKER_ENV, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": base_url,
        "PROMPTQ_CONCURRENCY": str(concurrency), "PROMPTQ_POOL": pool, **(env or {}),
    })


class ProfiledWorker(WorkerProcess):
    """A worker with `py-spy record` attached from ready to exit (`--profile`)."""

    def start(self, timeout_s: float = 60.0) -> "ProfiledWorker":
        super().start(timeout_s)
        import shutil

        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        PROFILE_DIR.mkdir(parents=True, exist_ok=True)
        # BENCH_PROFILE_FORMAT=raw: collapsed stacks (text), to sum by function.
        fmt = os.environ.get("BENCH_PROFILE_FORMAT", "flamegraph")
        out = PROFILE_DIR / f"{self.name}-{time.strftime('%H%M%S')}-{self.proc.pid}.{'svg' if fmt == 'flamegraph' else 'txt'}"
        self._spy = subprocess.Popen([spy, "record", "--pid", str(self.proc.pid), "--rate", "200", "--nonblocking",
                                      "--format", fmt, "--output", str(out)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log(f"profiling {self.name} into {out}")
        return self

    def _stop_spy(self) -> None:
        spy = getattr(self, "_spy", None)
        if spy is not None:
            try:
                spy.wait(15)  # py-spy writes its file once the worker has exited
            except subprocess.TimeoutExpired:
                spy.send_signal(signal.SIGINT)
                spy.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        super().stop(timeout_s)
        self._stop_spy()

    def kill(self) -> None:
        super().kill()
        self._stop_spy()


# --- measuring -------------------------------------------------------------------


class CPU:
    """CPU seconds used by named processes (and their children) between two points."""

    def __init__(self, pids: Dict[str, int]):
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self.start = self._sample()
        self.wall0 = time.monotonic()

    def _sample(self) -> Dict[str, float]:
        out = {}
        for name, proc in self.procs.items():
            try:
                total = sum(proc.cpu_times()[:2])
                for child in proc.children(recursive=True):
                    try:
                        total += sum(child.cpu_times()[:2])
                    except psutil.Error:
                        pass
                out[name] = total
            except psutil.Error:
                out[name] = 0.0
        return out

    def stop(self) -> Dict[str, float]:
        end = self._sample()
        self.wall = time.monotonic() - self.wall0
        self.used = {name: round(end[name] - self.start.get(name, 0.0), 3) for name in end}
        return self.used

    def shares(self) -> Dict[str, float]:
        """Cores used on average by each process over the window."""
        return {name: round(used / self.wall, 2) for name, used in self.used.items()} if self.wall else {}


def window_rate(times: Sequence[float], lo: float = 0.1, hi: float = 0.9) -> float:
    """Completions per second in the steady part of a run: between the 10th and
    90th percentile completion, so worker start-up and the drain are left out."""
    ts = sorted(times)
    n = len(ts)
    if n < 2:
        return 0.0
    i, j = int(lo * (n - 1)), int(hi * (n - 1))
    if ts[j] <= ts[i]:
        return float("inf")
    return (j - i) / (ts[j] - ts[i])


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ts = sorted(values)
    k = (len(ts) - 1) * q
    f = int(k)
    c = min(f + 1, len(ts) - 1)
    return ts[f] + (ts[c] - ts[f]) * (k - f)


def wait_all_exist(client: redis.Redis, keys: Sequence[str], timeout_s: float, what: str) -> None:
    """Poll until every key exists (EXISTS counts many keys in one call)."""
    deadline = time.monotonic() + timeout_s
    step = 2000
    remaining = list(keys)
    while remaining:
        missing: List[str] = []
        for start in range(0, len(remaining), step):
            part = remaining[start:start + step]
            if client.exists(*part) == len(part):
                continue
            pipe = client.pipeline(transaction=False)
            for key in part:
                pipe.exists(key)
            missing += [k for k, ok in zip(part, pipe.execute()) if not ok]
        remaining = missing
        if not remaining:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {len(remaining)} of {len(keys)} not finished after {timeout_s:.0f}s")
        time.sleep(0.05)


def promptq_finish_times(client: redis.Redis, prefix: str, job_ids: Sequence[str]) -> Dict[str, List[float]]:
    """`finished_at` and first-attempt start of each job, from the records the workers wrote."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(f"{prefix}:job:{job_id}", "status", "finished_at", "started_at")
    finished, started, statuses = [], [], {}
    for status, fin, sta in pipe.execute():
        s = (status or b"?").decode()
        statuses[s] = statuses.get(s, 0) + 1
        if fin:
            finished.append(float(fin))
        if sta:
            started.append(float(sta))
    return {"finished": finished, "started": started, "statuses": statuses}


def bare_finish_times(client: redis.Redis, task_ids: Sequence[str]) -> Dict[str, List[float]]:
    pipe = client.pipeline(transaction=False)
    for task_id in task_ids:
        pipe.get(f"celery-task-meta-{task_id}")
    finished, statuses = [], {}
    for raw in pipe.execute():
        meta = json.loads(raw) if raw else {}
        s = meta.get("status", "?")
        statuses[s] = statuses.get(s, 0) + 1
        if meta.get("date_done"):
            done = datetime.fromisoformat(meta["date_done"])
            if done.tzinfo is None:
                done = done.replace(tzinfo=timezone.utc)
            finished.append(done.timestamp())
    return {"finished": finished, "statuses": statuses}


@contextmanager
def private_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def promptq_client(redis_url: str):
    from promptq.tasks.client import Client
    from promptq.tasks.settings import Settings

    return Client(Settings.load(environ={"PROMPTQ_REDIS_URL": redis_url}))


def bare_client(redis_url: str):
    """A producer-side Celery app for the bare queue (sends by task name)."""
    from celery import Celery

    app = Celery("bench_bare_producer", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                    task_default_queue=BARE_QUEUE)
    return app


def send_bare(app, prompts: Iterable[str]) -> List[str]:
    ids = []
    with app.producer_or_acquire() as producer:
        for prompt in prompts:
            ids.append(app.send_task(BARE_TASK, args=(prompt,), queue=BARE_QUEUE, producer=producer).id)
    return ids
