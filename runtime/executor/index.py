"""The run index: for each job id, the fingerprint and config it last completed with.

The store alone answers "is this exact job done?"; the index answers "what did this job
look like last time?", which is what a dry run needs to say *what* changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from compiler.plan import Job, Plan
from herdlang.version import HERD_VERSION
from runtime.executor.store import write_json_atomic

INDEX_FORMAT = "herd.index/1"


class RunIndex:
    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "index.json"

    def load(self) -> dict[str, dict[str, Any]]:
        """Job id -> record; an unreadable index (damaged, nested too deeply to parse, not
        one herd wrote) is treated as empty: it is only advisory, and the next run rewrites it."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            return {}
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            return {}
        jobs = data.get("jobs")
        return jobs if isinstance(jobs, dict) else {}

    def record(self, plan: Plan, job_ids: list[str]) -> None:
        """Remember these jobs as they are in `plan` (after they completed or were cached)."""
        if not job_ids:
            return
        jobs = self.load()
        for job_id in job_ids:
            jobs[job_id] = entry_for(plan, plan.jobs[job_id])
        write_json_atomic(self.path, {"format": INDEX_FORMAT, "jobs": jobs})


def entry_for(plan: Plan, job: Job) -> dict[str, Any]:
    return {
        "fingerprint": job.fingerprint,
        "kind": job.kind,
        "config": job.config,
        "inputs": {
            role: {"job": dep, "fingerprint": plan.jobs[dep].fingerprint}
            for role, dep in sorted(job.inputs.items())
        },
        "herd_version": plan.herd_version or HERD_VERSION,
        "time": time.time(),
    }
