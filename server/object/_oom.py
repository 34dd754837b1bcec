"""The OOM killer: when a fault's commit cannot be met, pick a victim, kill it, and let the
commit be retried (Linux's oom_kill.c and memcg OOM, with Zircon's KILL_ON_OOM jobs).

- The domain: the processes in the subtree of the job whose RX_PROP_JOB_COMMIT_MAX was hit, or
  every process for the budget (rxd itself is never a candidate: it is not a process here).
- Candidates: never a process with RX_PROP_PROCESS_OOM_SCORE_ADJ -1000, nor one already killed.
  If any candidate is in a job with RX_PROP_JOB_KILL_ON_OOM (or below one), only those are.
- Badness, as Linux's oom_badness: the committed memory the process shows (its private pages and
  its share of shared ones, TASK_STATS' private + scaled shared) plus adj x budget / 1000. The
  highest goes (ties: the youngest, the highest koid).
- An RX_PROP_JOB_OOM_GROUP job on the victim's path inside the domain goes whole: every process
  in that job's subtree (memory.oom.group), the outermost such job.
- If the victim is the faulting process itself, it is not SIGKILLed: its fault fails, and it ends
  with the one-line `rx: out of memory` diagnostic (SIGBUS), as when nothing can be freed.
- `rxd --oom fail` never kills: the commit fails at once and the faulting client ends with its
  diagnostic.
Each kill is logged (pid, job, charge, badness) and counted in KMEM oom_kills and in the events of
the job whose limit was hit (oom, oom_kill).
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
import trio

from rxkernel.proto import PAGE_SIZE

from ..vm import ChargeGroup, Mapper, PhysicalMemory, mapped_pages
from ._job import Job
from ._process import Process

log = structlog.get_logger("rxd.oom")


class OomKiller:
    def __init__(self, memory: PhysicalMemory, processes: dict[int, Process], job_of_group: Callable[[ChargeGroup], Job | None],
                 root: Job, enabled: bool = True) -> None:
        self.memory = memory
        self.processes = processes
        self.job_of_group = job_of_group
        self.root = root
        self.enabled = enabled

    def domain(self, group: ChargeGroup | None) -> Job:
        job = self.job_of_group(group) if group is not None else None
        return job if job is not None else self.root

    @staticmethod
    def usage_pages(process: Process) -> float:
        total = 0.0
        for m in process.aspace:
            private, _, scaled = mapped_pages(m)
            total += private + scaled
        return total

    def badness(self, process: Process) -> float:
        return self.usage_pages(process) + process.oom_score_adj * self.memory.total_pages / 1000

    def candidates(self, domain: Job) -> list[Process]:
        inside = [p for p in self.processes.values()
                  if p.alive and p.oom_score_adj > -1000 and (p.job is domain or p.job.is_below(domain))]
        marked = [p for p in inside if any(j.kill_on_oom for j in _path(p.job, domain))]
        return marked or inside

    async def __call__(self, group: ChargeGroup | None, faulting: Mapper) -> bool:
        """Free memory for `group`'s limit (None: the budget) by killing; True if something was
        killed (retry the commit), False if nothing can be (fail it)."""
        domain = self.domain(group)
        events = group.events if group is not None else None
        if events is not None:
            events.count("oom")
        if not self.enabled:
            return False
        candidates = self.candidates(domain)
        if not candidates:
            log.warning("out of memory and nothing to kill", job=domain.koid, faulting_pid=faulting.pid)
            return False
        victim = max(candidates, key=lambda p: (self.badness(p), p.koid))
        group_job = next((j for j in reversed(_path(victim.job, domain)) if j.oom_group), None)
        victims = [victim] if group_job is None else [
            p for p in self.processes.values() if p.alive and p.oom_score_adj > -1000 and (p.job is group_job or p.job.is_below(group_job))]
        faulter_chosen = any(p is faulting for p in victims)
        for p in victims:
            if p is faulting:
                continue  # the faulting process itself: its fault fails and it ends with the diagnostic
            log.warning("out of memory: killing a process", pid=p.pid, koid=p.koid, job=p.job.koid, domain_job=domain.koid,
                        limit="budget" if group is None else "RX_PROP_JOB_COMMIT_MAX",
                        charge_bytes=int(self.usage_pages(p) * PAGE_SIZE), badness=round(self.badness(p) * PAGE_SIZE),
                        oom_group=group_job.koid if group_job is not None else None, faulting_pid=faulting.pid)
            p.kill()
            self.memory.counters.oom_kills += 1
            if events is not None:
                events.count("oom_kill")
        if faulter_chosen:
            log.warning("out of memory: the faulting process is the one to go", pid=faulting.pid, koid=faulting.koid,
                        domain_job=domain.koid, badness=round(self.badness(victim) * PAGE_SIZE) if victim is faulting else None)
            self.memory.counters.oom_kills += 1
            if events is not None:
                events.count("oom_kill")
            return False
        # Their pages went with their teardown (what other processes still map stays); let the
        # chains they leave collapse before the commit is retried.
        await trio.sleep(0)
        return True


def _path(job: Job, top: Job) -> list[Job]:
    """`job` and its ancestors up to and including `top` (innermost first)."""
    out: list[Job] = []
    j: Job | None = job
    while j is not None:
        out.append(j)
        if j is top:
            break
        j = j.parent
    return out

