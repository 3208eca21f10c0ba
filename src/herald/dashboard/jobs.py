"""Long operations (replaying a group of dead letters) run in the background and
report their progress, which the page follows over server-sent events.

>>> import asyncio
>>> async def main() -> tuple[int, int, bool, str]:
...     jobs = Jobs()
...     async def work(progress):
...         for done in range(1, 4):
...             progress(done, 3)
...         return 3
...     job = jobs.start("replay", work)
...     await job.task
...     return job.done, job.total, job.finished, job.outcome
>>> asyncio.run(main())
(3, 3, True, 'replay: 3 done')
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..broker import ProgressCallback

__all__ = ["Job", "Jobs"]

log = logging.getLogger("herald.dashboard")
_KEEP = 50


@dataclass
class Job:
    """One operation: how far it got and how it ended."""

    id: int
    label: str
    done: int = 0
    total: int = 0
    finished: bool = False
    outcome: str = ""
    refresh_groups: bool = False
    """Whether the page listing the groups should reload them when the job ends."""
    task: asyncio.Task[None] = field(init=False, repr=False)

    @property
    def percent(self) -> int:
        if self.finished:
            return 100
        return 100 * self.done // self.total if self.total else 0

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total


class Jobs:
    """The jobs of one dashboard (the last few are kept to be looked at)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.jobs: dict[int, Job] = {}

    def start(
        self,
        label: str,
        work: Callable[[ProgressCallback], Awaitable[int]],
        *,
        refresh_groups: bool = False,
    ) -> Job:
        """Run ``work(progress)`` (returning how many it handled) in the background."""
        job = Job(next(self._ids), label, refresh_groups=refresh_groups)

        async def run() -> None:
            try:
                count = await work(job.progress)
                job.outcome = f"{label}: {count} done"
            except Exception as exc:
                log.warning("%s failed: %s", label, exc)
                job.outcome = f"{label} failed: {str(exc) or type(exc).__name__}"
            finally:
                job.finished = True

        job.task = asyncio.create_task(run(), name=f"dashboard-job-{job.id}")
        self.jobs[job.id] = job
        for old in sorted(self.jobs)[:-_KEEP]:
            if self.jobs[old].finished:
                del self.jobs[old]
        return job

    def get(self, job_id: int) -> Job | None:
        return self.jobs.get(job_id)
