"""While Redis is down a worker keeps retrying, and says so in one line per
retry: no traceback every heartbeat (issue 9)."""

from __future__ import annotations

from tests.redis_server import RedisServer
from tests.worker_process import WorkerProcess, wait_for


def test_worker_logs_one_line_per_retry_while_redis_is_down():
    server = RedisServer().start()
    try:
        worker = WorkerProcess(server.url, ["mock"], name="orphan").start()
    except BaseException:
        server.stop()
        raise
    try:
        full_log = lambda: worker.log_path.read_text(errors="replace")  # noqa: E731
        before = len(full_log())
        server.stop()
        wait_for(lambda: full_log()[before:].count("lease heartbeat failed") >= 3, 30, 0.2,
                 "three failed heartbeats")
        after = full_log()[before:]
        assert "Traceback" not in after, after[-3000:]
        failed = [line for line in after.splitlines() if "lease heartbeat failed" in line]
        assert all("ConnectionError" in line for line in failed)
    finally:
        worker.stop()
        server.stop()
