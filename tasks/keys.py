"""Every Redis key and queue name promptq uses, in one place.

Job state is keyed by job id, so the id the producer holds resolves to the
final record whichever provider and worker answered.
"""

from __future__ import annotations

from dataclasses import dataclass

TASK_NAME = "promptq.run_job"


@dataclass(frozen=True)
class Keys:
    prefix: str = "promptq"

    def queue(self, provider: str) -> str:
        """The Celery queue (a Redis list) of one provider."""
        return f"{self.prefix}.{provider}"

    def job(self, job_id: str) -> str:
        """Hash: status, spec, target, token, result, error, timestamps."""
        return f"{self.prefix}:job:{job_id}"

    def attempts(self, job_id: str) -> str:
        """List of JSON attempt records, appended, never rewritten."""
        return f"{self.prefix}:attempts:{job_id}"

    def channel(self, job_id: str) -> str:
        """Pub/sub channel of a job's live events."""
        return f"{self.prefix}:events:{job_id}"

    def events(self, job_id: str) -> str:
        """Redis stream replaying a job's events to late subscribers."""
        return f"{self.prefix}:replay:{job_id}"

    def seq(self, job_id: str) -> str:
        """Counter giving each event of a job its sequence number."""
        return f"{self.prefix}:seq:{job_id}"

    @property
    def cancels(self) -> str:
        """Pub/sub channel: ids of running jobs just cancelled (tasks.cancel)."""
        return f"{self.prefix}:cancels"

    @property
    def inflight(self) -> str:
        """Sorted set: job id -> deadline by which its worker must check in."""
        return f"{self.prefix}:inflight"

    @property
    def dead_letter(self) -> str:
        """List of job ids that failed on every target."""
        return f"{self.prefix}:dead"

    def batch(self, batch_id: str) -> str:
        """Hash of a batch's counters and description."""
        return f"{self.prefix}:batch:{batch_id}"

    def batch_jobs(self, batch_id: str) -> str:
        """List of a batch's job ids in input order."""
        return f"{self.prefix}:batch:{batch_id}:jobs"

    def batch_refused(self, batch_id: str) -> str:
        """List of JSON lines refused at submission (`--skip-invalid`): line, custom_id, reason."""
        return f"{self.prefix}:batch:{batch_id}:refused"

    @property
    def health_prefix(self) -> str:
        return f"{self.prefix}:health"

    @property
    def workers(self) -> str:
        """Hash: worker name -> last heartbeat time."""
        return f"{self.prefix}:workers"
